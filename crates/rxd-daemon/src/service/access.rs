//! Every write to what decides access: the trust store (certificates and join tokens), role
//! grants, projects. Each function takes the proof rxd-auth makes when its rule allows the
//! change, so a handler that skips the rule does not compile; the layering test checks that
//! these store writes happen nowhere else (server config: `config::update_config`, which takes
//! an `AdminProof` too).

use crate::error::{ApiError, ApiResult};
use crate::state::Daemon;
use rxd_auth::certificates::CertFields;
use rxd_auth::rbac::Permission;
use rxd_auth::{AdminProof, CertChangeProof, EnrolProof, ProjectProof};
use rxd_store::{CertificateRow, GrantRow, ProjectRow, StoreError, TokenRow};

/// An administrator adds a certificate.
pub async fn add_certificate(d: &Daemon, _: &AdminProof, row: CertificateRow) -> ApiResult<()> {
    d.db(move |s| s.insert_certificate(&row)).await
}

/// A client that the rules let enrol, and that proved the trust password, adds its own
/// certificate.
pub async fn enrol_certificate(d: &Daemon, _: &EnrolProof, row: CertificateRow) -> ApiResult<()> {
    d.db(move |s| s.insert_certificate(&row)).await
}

/// A client that the rules let enrol redeems a join token: the token (matched by its secret's
/// hash) is spent and the certificate `make` builds from it stored in one transaction. The
/// store's own error says whether the token was unknown or expired.
pub async fn redeem_token(
    d: &Daemon,
    _: &EnrolProof,
    secret_hash: [u8; 32],
    now: i64,
    make: impl FnOnce(&TokenRow) -> CertificateRow + Send + 'static,
) -> ApiResult<Result<(TokenRow, CertificateRow), StoreError>> {
    let store = d.store.clone();
    Ok(tokio::task::spawn_blocking(move || store.redeem_token(&secret_hash, now, make)).await?)
}

/// Replace the entry the rules decided on (`proof`) with `row`, which must have exactly the
/// fields the rules saw.
pub async fn replace_certificate(
    d: &Daemon,
    proof: &CertChangeProof,
    row: CertificateRow,
) -> ApiResult<()> {
    let fields = CertFields {
        name: row.name.clone(),
        kind: row.kind.clone(),
        restricted: row.restricted,
        projects: row.projects.clone(),
        fingerprint: row.fingerprint.clone(),
    };
    if !proof.covers(&fields) {
        return Err(ApiError::internal(format!(
            "a trust-store change for {} offered with fields its rule did not decide",
            proof.fingerprint()
        )));
    }
    let old = proof.fingerprint().to_owned();
    d.db(move |s| s.replace_certificate(&old, &row)).await
}

pub async fn delete_certificate(d: &Daemon, _: &AdminProof, fingerprint: &str) -> ApiResult<()> {
    let fp = fingerprint.to_owned();
    d.db(move |s| s.delete_certificate(&fp)).await
}

pub async fn issue_token(d: &Daemon, _: &AdminProof, token: TokenRow) -> ApiResult<()> {
    d.db(move |s| s.insert_token(&token)).await
}

pub async fn revoke_token(d: &Daemon, _: &AdminProof, id: &str) -> ApiResult<()> {
    let id = id.to_owned();
    d.db(move |s| s.delete_token(&id)).await
}

pub async fn grant(d: &Daemon, _: &AdminProof, row: GrantRow) -> ApiResult<GrantRow> {
    d.db(move |s| s.insert_grant(&row)).await
}

pub async fn revoke_grant(d: &Daemon, _: &AdminProof, id: i64) -> ApiResult<()> {
    d.db(move |s| s.delete_grant(id)).await
}

/// Create a project; with `features.profiles=true` it starts with its own `default` profile.
pub async fn create_project(d: &Daemon, _: &AdminProof, row: ProjectRow) -> ApiResult<()> {
    let config: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&row.config).map_err(ApiError::internal)?;
    let profiles = rxd_core::project_config::has_profiles(&config);
    d.db(move |s| s.create_project(&row, profiles)).await
}

/// Change a project's description and config: the proof must be `manage-projects` on that very
/// project. `profiles` is `Some` when `features.profiles` changes (the project must be empty):
/// it gains or loses its own `default` profile in the same transaction.
pub async fn update_project(
    d: &Daemon,
    proof: &ProjectProof,
    row: ProjectRow,
    profiles: Option<bool>,
) -> ApiResult<()> {
    if !proof.covers(&row.name, Permission::ManageProjects) {
        return Err(ApiError::internal(format!(
            "a proof for {} ({:?}) offered to change project {}",
            proof.project(),
            proof.permission(),
            row.name
        )));
    }
    d.db(move |s| s.update_project(&row, profiles))
        .await
        .map_err(|e| match e {
            ApiError::BadRequest(_) => {
                ApiError::BadRequest("Features can only be changed on empty projects".into())
            }
            other => other,
        })
}

pub async fn rename_project(d: &Daemon, _: &AdminProof, old: &str, new: &str) -> ApiResult<()> {
    let (old, new) = (old.to_owned(), new.to_owned());
    d.db(move |s| s.rename_project(&old, &new)).await
}

pub async fn delete_project(d: &Daemon, _: &AdminProof, name: &str) -> ApiResult<()> {
    let name = name.to_owned();
    d.db(move |s| s.delete_project(&name)).await
}
