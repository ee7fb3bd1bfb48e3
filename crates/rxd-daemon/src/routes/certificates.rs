//! `/1.0/certificates`: the trust store. Who may do what is decided by `rxd_auth::certificates`;
//! this module resolves the request, applies certificate checks, stores, and keeps the trust
//! cache and open connections in step. Every trust change is logged (who, what, from where).

use crate::audit::{Record, SecurityEvent};
use crate::body::Json;
use crate::caller::{Admin, Caller, Trusted};
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response::{self, check_if_match};
use crate::service::access;
use crate::state::Daemon;
use crate::sync::{lock, now_unix, read};
use crate::tlsstate::ca_check;
use crate::tlsstate::PkiState;
use crate::tokens;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use base64::Engine;
use http::HeaderMap;
use rxd_api::certificate::{Certificate, CertificatePut, CertificatesPost};
use rxd_auth::certificates::{
    decide_add, decide_update, AddPath, AddRequest, CertFields, CertRuleError, CertificateField,
};
use rxd_auth::rbac::Item;
use rxd_auth::CaCheck;
use rxd_auth::{AdminProof, EnrolProof};
use rxd_core::config::{REMOTE_TOKEN_EXPIRY, TRUST_PASSWORD};
use rxd_store::{CertificateRow, StoreError, TokenRow};
use std::sync::Arc;

const NOT_FOUND: &str = "Certificate not found";

impl From<CertRuleError> for ApiError {
    fn from(e: CertRuleError) -> Self {
        match e {
            CertRuleError::NotAuthorized => ApiError::NotAuthorized,
            CertRuleError::OnlyCertificate => ApiError::Forbidden(e.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

fn to_wire(row: &CertificateRow) -> Certificate {
    Certificate {
        name: row.name.clone(),
        kind: row.kind.clone(),
        restricted: row.restricted,
        projects: row.projects.clone(),
        certificate: row.certificate_pem.clone(),
        fingerprint: row.fingerprint.clone(),
    }
}

/// The one visibility rule for every form of every certificate listing and lookup: admins (and
/// holders of a server-wide role) see all entries, everyone else only their own.
fn visible(caller: &Caller, row: &CertificateRow) -> bool {
    let identity = &caller.identity;
    let own = identity.is_trusted() && identity.fingerprint() == Some(row.fingerprint.as_str());
    caller.rights.may_see(Item::Certificate { own })
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let rows: Vec<CertificateRow> = d
        .db(|s| s.certificates())
        .await?
        .into_iter()
        .filter(|r| visible(&caller, r))
        .collect();
    // `?filter=` applies to the objects as they are answered, as for every other listing.
    let objects = rows
        .iter()
        .map(|r| serde_json::to_value(to_wire(r)).map_err(ApiError::internal))
        .collect::<ApiResult<Vec<_>>>()?;
    let selected = q.select(objects, |o| {
        format!(
            "/1.0/certificates/{}",
            o["fingerprint"].as_str().unwrap_or_default()
        )
    })?;
    Ok(response::sync(selected))
}

/// Find the one entry `prefix` names and the caller may see. Missing and invisible entries get
/// the same answer (invisible ones are not even counted as matches), so the API is no existence
/// oracle.
async fn resolve(d: &Daemon, caller: &Caller, prefix: &str) -> ApiResult<CertificateRow> {
    let valid = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return Err(ApiError::BadRequest(
            "Invalid fingerprint: expected 1 to 64 lowercase hexadecimal characters".into(),
        ));
    }
    // Those who may see only their own entry look only at theirs.
    let own = caller
        .identity
        .fingerprint()
        .filter(|_| caller.identity.is_trusted());
    let p = match own {
        _ if caller.rights.may_view_server() => prefix.to_owned(),
        Some(fp) if fp.starts_with(prefix) => fp.to_owned(),
        _ => return Err(ApiError::NotFound(NOT_FOUND.into())),
    };
    let mut rows = d.db(move |s| s.certificates_by_prefix(&p, 2)).await?;
    rows.retain(|r| visible(caller, r));
    let row = match rows.len() {
        0 => return Err(ApiError::NotFound(NOT_FOUND.into())),
        1 => rows.remove(0),
        _ => {
            return Err(ApiError::BadRequest(
                "More than one certificate matches".into(),
            ))
        }
    };
    Ok(row)
}

fn etag_fields(row: &CertificateRow) -> CertificatePut {
    CertificatePut {
        name: Some(row.name.clone()),
        kind: Some(row.kind.clone()),
        restricted: Some(row.restricted),
        projects: Some(row.projects.clone()),
        certificate: Some(row.certificate_pem.clone()),
    }
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Path(fp): Path<String>,
) -> ApiResult<Response> {
    let row = resolve(&d, &caller, &fp).await?;
    Ok(response::sync_with_etag(to_wire(&row), &etag_fields(&row)))
}

/// Check a DER certificate for the trust store: parse, validity, signature and key strength, and
/// in PKI mode that the CA issued it and has not revoked it (an entry that could never be trusted
/// is refused up front).
fn checked(d: &Daemon, der: &[u8]) -> ApiResult<rxd_tls::CertInfo> {
    let info =
        rxd_tls::cert::check(der, now_unix()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let signed = match &d.tls_state().pki {
        None => true,
        Some(PkiState::Ready(pki)) => matches!(ca_check(pki, der), CaCheck::Signed { .. }),
        Some(PkiState::Broken) => false,
    };
    if !signed {
        return Err(ApiError::BadRequest(
            "The certificate is not trusted by the CA or has been revoked".into(),
        ));
    }
    Ok(info)
}

fn valid_name(name: &str) -> ApiResult<()> {
    if rxd_core::name::valid_certificate_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "Invalid certificate name: 1 to 255 characters, no control characters".into(),
        ))
    }
}

fn new_row(
    der: &[u8],
    info: &rxd_tls::CertInfo,
    name: String,
    restricted: bool,
    projects: Vec<String>,
) -> CertificateRow {
    CertificateRow {
        fingerprint: info.fingerprint.clone(),
        name,
        kind: "client".into(),
        restricted,
        projects,
        certificate_pem: rxd_tls::cert::to_pem(der),
        not_before: info.not_before,
        not_after: info.not_after,
        created_at: now_unix(),
    }
}

/// Every project a certificate is restricted to must exist (LXD accepts any name, which then
/// silently grants a project created later under that name).
fn known_projects(d: &Daemon, projects: &[String]) -> ApiResult<()> {
    let known = read(&d.projects);
    match projects.iter().find(|p| !known.contains_key(p.as_str())) {
        Some(p) => Err(ApiError::BadRequest(format!("Project {p:?} not found"))),
        None => Ok(()),
    }
}

/// LXD's text for a certificate that is already in the trust store.
fn duplicate(e: ApiError) -> ApiError {
    match e {
        ApiError::Conflict(_) => ApiError::Conflict("Certificate already in trust store".into()),
        other => other,
    }
}

pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Json(body): Json<CertificatesPost>,
) -> ApiResult<Response> {
    let certificate = match (
        decode_certificate(&body.certificate),
        &caller.conn.peer_cert,
    ) {
        _ if body.certificate.is_empty() => CertificateField::Absent,
        (Ok(der), Some(peer)) if der[..] == peer[..] => CertificateField::ThisConnection,
        _ => CertificateField::Other,
    };
    let request = AddRequest {
        kind: &body.kind,
        token: body.token,
        certificate,
        restricted: body.restricted,
        has_projects: !body.projects.is_empty(),
    };
    match decide_add(&caller.identity, &caller.rights, &request)? {
        AddPath::IssueToken(proof) => issue_token(&d, &proof, &caller, body).await,
        AddPath::Admin(proof) => add_as_admin(&d, &proof, &caller, body).await,
        AddPath::Enrol(proof) => enrol(&d, &proof, &caller, body).await,
    }
}

/// The DER in a request's `certificate`: standard base64, where line breaks are ignored as Go's
/// decoder ignores them (pylxd sends the body of a PEM block, in 64-character lines).
fn decode_certificate(text: &str) -> ApiResult<Vec<u8>> {
    let joined: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(joined)
        .map_err(|e| ApiError::BadRequest(format!("Invalid certificate material: {e}")))
}

async fn add_as_admin(
    d: &Daemon,
    proof: &AdminProof,
    caller: &Caller,
    body: CertificatesPost,
) -> ApiResult<Response> {
    let der = decode_certificate(&body.certificate)?;
    let info = checked(d, &der)?;
    let name = if body.name.is_empty() {
        info.common_name
            .clone()
            .unwrap_or_else(|| caller.conn.peer())
    } else {
        body.name
    };
    valid_name(&name)?;
    known_projects(d, &body.projects)?;
    let row = new_row(&der, &info, name, body.restricted, body.projects);
    access::add_certificate(d, proof, row.clone())
        .await
        .map_err(duplicate)?;
    d.trust_insert(&row);
    created(d, "certificate-added", &row, caller);
    Ok(response::created(&format!(
        "/1.0/certificates/{}",
        row.fingerprint
    )))
}

async fn issue_token(
    d: &Daemon,
    proof: &AdminProof,
    caller: &Caller,
    body: CertificatesPost,
) -> ApiResult<Response> {
    let addresses = d.addresses();
    if addresses.is_empty() {
        return Err(ApiError::BadRequest(
            "Can't issue token when server isn't listening on network".into(),
        ));
    }
    valid_name(&body.name).map_err(|_| {
        ApiError::BadRequest(
            "A token needs a client name (1 to 255 characters, no control characters)".into(),
        )
    })?;
    let expiry = match read(&d.config).get(REMOTE_TOKEN_EXPIRY) {
        Some(text) => rxd_core::expiry::parse_expiry(text).map_err(ApiError::internal)?,
        None => tokens::DEFAULT_EXPIRY,
    };
    known_projects(d, &body.projects)?;
    let secret = rxd_auth::password::new_secret();
    let now = now_unix();
    let token = TokenRow {
        id: uuid::Uuid::new_v4().to_string(),
        secret_sha256: rxd_auth::password::secret_hash(&secret),
        name: body.name.clone(),
        restricted: body.restricted,
        projects: body.projects.clone(),
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(expiry.as_secs()).unwrap_or(i64::MAX)),
    };
    let stored = token.clone();
    access::issue_token(d, proof, stored).await?;
    d.audit.record(
        Record::new(
            SecurityEvent::AuthnTokenCreated,
            caller,
            "POST",
            "/1.0/certificates",
            "enrolment token issued",
        )
        .detail("token", token.id.as_str())
        .detail("client_name", token.name.as_str())
        .detail("restricted", token.restricted)
        .detail("projects", token.projects.clone())
        .detail("expires_at", tokens::rfc3339(token.expires_at)),
    );
    tracing::info!(
        action = "token-issued",
        token = %token.id,
        client_name = %token.name,
        expires_at = %tokens::rfc3339(token.expires_at),
        by = %caller.identity.user_name(),
        peer = %caller.conn.peer(),
        "trust change"
    );
    let fingerprint = d.tls_state().keypair.fingerprint.clone();
    d.events.server_operation(
        tokens::operation(&token, &fingerprint, &addresses, None),
        "default",
    );
    let op = tokens::operation(
        &token,
        &d.tls_state().keypair.fingerprint,
        &addresses,
        Some(&secret),
    );
    Ok(response::operation(tokens::operation_url(&token.id), op))
}

/// A non-admin adds the certificate of its own TLS connection, proving it knows the trust
/// password or holds a token. Failures count towards the per-address back-off.
async fn enrol(
    d: &Daemon,
    proof: &EnrolProof,
    caller: &Caller,
    body: CertificatesPost,
) -> ApiResult<Response> {
    let Some(ip) = caller.conn.remote.map(|a| a.ip()) else {
        return Err(ApiError::BadRequest(
            "Can't use TLS data on non-TLS link".into(),
        ));
    };
    if let Err(retry_after) = lock(&d.throttle).check(ip, std::time::Instant::now()) {
        d.audit.record(
            Record::new(
                SecurityEvent::AuthnLoginLock,
                caller,
                "POST",
                "/1.0/certificates",
                "enrolment refused: too many failures from this address",
            )
            .detail("retry_after_secs", retry_after.as_secs()),
        );
        return Err(ApiError::TooManyRequests { retry_after });
    }
    if body.password.is_empty() {
        return Err(ApiError::NotAuthorized);
    }
    let der = caller
        .conn
        .peer_cert
        .clone()
        .ok_or_else(|| ApiError::BadRequest("No client certificate provided".into()))?;
    let info = checked(d, &der)?;

    let token = rxd_api::certificate::CertificateAddToken::decode(&body.password);
    let by_token = token.is_some();
    let outcome = match token {
        Some(token) => redeem(d, proof, &der, &info, &token).await,
        None => match check_password(d, &body.password).await {
            Ok(()) => add_enrolled(d, proof, &der, &info, &body, ip).await,
            Err(e) => Err(e),
        },
    };
    let row = match outcome {
        Ok(row) => row,
        Err(e @ (ApiError::NotAuthorized | ApiError::Forbidden(_))) => {
            let delay = lock(&d.throttle).failure(ip, std::time::Instant::now());
            tracing::warn!(peer = %ip, fingerprint = %info.fingerprint, reason = %e, backoff_secs = delay.as_secs(), "failed enrolment attempt");
            let (event, what) = if by_token {
                (SecurityEvent::AuthnTokenFail, "enrolment token refused")
            } else {
                (SecurityEvent::AuthnLoginFail, "trust password refused")
            };
            d.audit.record(
                Record::new(
                    event,
                    caller,
                    "POST",
                    "/1.0/certificates",
                    format!("{what}: {e}"),
                )
                .identity(&info.fingerprint)
                .detail("backoff_secs", delay.as_secs()),
            );
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    lock(&d.throttle).success(ip);
    d.trust_insert(&row);
    created(d, "certificate-enrolled", &row, caller);
    Ok(response::created(&format!(
        "/1.0/certificates/{}",
        row.fingerprint
    )))
}

/// Store the certificate of a client that proved the trust password.
async fn add_enrolled(
    d: &Daemon,
    proof: &EnrolProof,
    der: &[u8],
    info: &rxd_tls::CertInfo,
    body: &CertificatesPost,
    ip: std::net::IpAddr,
) -> ApiResult<CertificateRow> {
    let name = if body.name.is_empty() {
        info.common_name.clone().unwrap_or_else(|| ip.to_string())
    } else {
        body.name.clone()
    };
    valid_name(&name)?;
    let row = new_row(der, info, name, body.restricted, body.projects.clone());
    access::enrol_certificate(d, proof, row.clone())
        .await
        .map_err(duplicate)?;
    Ok(row)
}

async fn check_password(d: &Daemon, password: &str) -> ApiResult<()> {
    let Some(hash) = read(&d.config).get(TRUST_PASSWORD).cloned() else {
        return Err(ApiError::NotAuthorized);
    };
    let password = password.to_owned();
    let ok =
        tokio::task::spawn_blocking(move || rxd_auth::password::verify_password(&password, &hash))
            .await?;
    if ok {
        Ok(())
    } else {
        Err(ApiError::NotAuthorized)
    }
}

/// Redeem a token and store the certificate in the same transaction (single use, even under a race).
async fn redeem(
    d: &Daemon,
    proof: &EnrolProof,
    der: &[u8],
    info: &rxd_tls::CertInfo,
    token: &rxd_api::certificate::CertificateAddToken,
) -> ApiResult<CertificateRow> {
    let hash = rxd_auth::password::secret_hash(&token.secret);
    let (der, info) = (der.to_vec(), info.clone());
    let result = access::redeem_token(d, proof, hash, now_unix(), move |t| {
        new_row(
            &der,
            &info,
            t.name.clone(),
            t.restricted,
            t.projects.clone(),
        )
    })
    .await?;
    match result {
        Ok((t, row)) => {
            tracing::info!(action = "token-redeemed", token = %t.id, fingerprint = %row.fingerprint, "trust change");
            Ok(row)
        }
        Err(StoreError::NotFound { .. }) => Err(ApiError::Forbidden(
            "No matching certificate add operation found".into(),
        )),
        Err(StoreError::Expired { .. }) => Err(ApiError::Forbidden("Token has expired".into())),
        Err(e) => Err(duplicate(e.into())),
    }
}

/// Log a trust change and announce it as LXD's `certificate-created` lifecycle event.
fn created(d: &Daemon, action: &str, row: &CertificateRow, caller: &Caller) {
    d.audit.record(
        Record::new(
            SecurityEvent::UserCreated,
            caller,
            "POST",
            "/1.0/certificates",
            format!("certificate added to the trust store ({action})"),
        )
        .detail("fingerprint", row.fingerprint.as_str())
        .detail("name", row.name.as_str())
        .detail("restricted", row.restricted)
        .detail("projects", row.projects.clone()),
    );
    d.events.lifecycle(
        "certificate-created",
        &format!("/1.0/certificates/{}", row.fingerprint),
        "",
        caller,
    );
    tracing::info!(
        action,
        fingerprint = %row.fingerprint,
        name = ?row.name,
        restricted = row.restricted,
        projects = ?row.projects,
        by = %caller.identity.user_name(),
        peer = %caller.conn.peer(),
        "trust change"
    );
}

pub async fn put(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Path(fp): Path<String>,
    headers: HeaderMap,
    Json(body): Json<CertificatePut>,
) -> ApiResult<Response> {
    update(&d, &caller, &fp, &headers, body, true).await
}

pub async fn patch(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Path(fp): Path<String>,
    headers: HeaderMap,
    Json(body): Json<CertificatePut>,
) -> ApiResult<Response> {
    update(&d, &caller, &fp, &headers, body, false).await
}

/// PUT replaces name, restricted and projects (absent means empty, as in LXD); PATCH changes
/// only what it names. An absent `type` or `certificate` means unchanged in both.
async fn update(
    d: &Daemon,
    caller: &Caller,
    fp: &str,
    headers: &HeaderMap,
    body: CertificatePut,
    replace: bool,
) -> ApiResult<Response> {
    let current = resolve(d, caller, fp).await?;
    check_if_match(headers, &etag_fields(&current))?;
    let pick = |given: Option<String>, now: &String| {
        given.unwrap_or_else(|| if replace { String::new() } else { now.clone() })
    };
    let name = pick(body.name, &current.name);
    let restricted = body
        .restricted
        .unwrap_or(if replace { false } else { current.restricted });
    let projects = body.projects.unwrap_or_else(|| {
        if replace {
            Vec::new()
        } else {
            current.projects.clone()
        }
    });
    let kind = body.kind.unwrap_or_else(|| current.kind.clone());

    let (der, info) = match body
        .certificate
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        Some(pem) => {
            let der = rxd_tls::cert::from_pem(pem).ok_or_else(|| {
                ApiError::BadRequest("Invalid certificate material: no PEM certificate".into())
            })?;
            let info = checked(d, &der)?;
            (Some(der), Some(info))
        }
        None => (None, None),
    };
    let new_fp = info
        .as_ref()
        .map(|i| i.fingerprint.clone())
        .unwrap_or_else(|| current.fingerprint.clone());
    let fields = |r: &CertificateRow| CertFields {
        name: r.name.clone(),
        kind: r.kind.clone(),
        restricted: r.restricted,
        projects: r.projects.clone(),
        fingerprint: r.fingerprint.clone(),
    };
    let proposed = CertFields {
        name: name.clone(),
        kind,
        restricted,
        projects: projects.clone(),
        fingerprint: new_fp.clone(),
    };
    let proof = decide_update(
        &caller.identity,
        &caller.rights,
        &fields(&current),
        &proposed,
    )?;
    // After the rules: only an administrator gets this far with a changed list.
    if proposed.projects != current.projects {
        known_projects(d, &proposed.projects)?;
    }
    valid_name(&name)?;

    let mut row = current.clone();
    row.name = name;
    row.restricted = restricted;
    row.projects = projects;
    if let (Some(der), Some(info)) = (der, info) {
        row.fingerprint = info.fingerprint;
        row.certificate_pem = rxd_tls::cert::to_pem(&der);
        row.not_before = info.not_before;
        row.not_after = info.not_after;
    }
    access::replace_certificate(d, &proof, row.clone())
        .await
        .map_err(duplicate)?;
    // Connections opened under the old terms close; the next request is judged on the new ones.
    let closed = d.trust_remove(&current.fingerprint);
    d.trust_insert(&row);
    // Grants follow a renewed certificate (the store moved them).
    d.reload_access().await?;
    d.audit.record(
        Record::new(
            SecurityEvent::UserUpdated,
            caller,
            if replace { "PUT" } else { "PATCH" },
            &format!("/1.0/certificates/{}", current.fingerprint),
            "trust store entry updated",
        )
        .detail("old_fingerprint", current.fingerprint.as_str())
        .detail("fingerprint", row.fingerprint.as_str())
        .detail("name", row.name.as_str())
        .detail("restricted", row.restricted)
        .detail("projects", row.projects.clone()),
    );
    tracing::info!(
        action = "certificate-updated",
        old_fingerprint = %current.fingerprint,
        fingerprint = %row.fingerprint,
        name = ?row.name,
        restricted = row.restricted,
        projects = ?row.projects,
        closed_connections = closed,
        by = %caller.identity.user_name(),
        peer = %caller.conn.peer(),
        "trust change"
    );
    d.events.lifecycle(
        "certificate-updated",
        &format!("/1.0/certificates/{}", row.fingerprint),
        "",
        caller,
    );
    Ok(response::empty())
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Admin(caller, proof): Admin,
    Path(fp): Path<String>,
) -> ApiResult<Response> {
    let row = resolve(&d, &caller, &fp).await?;
    access::delete_certificate(&d, &proof, &row.fingerprint).await?;
    let closed = d.trust_remove(&row.fingerprint);
    // Its grants went with it.
    d.reload_access().await?;
    d.audit.record(
        Record::new(
            SecurityEvent::UserDeleted,
            &caller,
            "DELETE",
            &format!("/1.0/certificates/{}", row.fingerprint),
            "certificate removed from the trust store",
        )
        .detail("fingerprint", row.fingerprint.as_str())
        .detail("name", row.name.as_str()),
    );
    tracing::info!(
        action = "certificate-deleted",
        fingerprint = %row.fingerprint,
        name = ?row.name,
        closed_connections = closed,
        by = %caller.identity.user_name(),
        peer = %caller.conn.peer(),
        "trust change"
    );
    d.events.lifecycle(
        "certificate-deleted",
        &format!("/1.0/certificates/{}", row.fingerprint),
        "",
        &caller,
    );
    Ok(response::empty())
}
