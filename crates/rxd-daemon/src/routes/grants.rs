//! `/1.0/auth/grants` (rxd's extension `rxd_auth_grants`, in the spirit of LXD's later
//! `/1.0/auth`): server administrators grant roles to identities on a project, on all projects
//! or on the whole server. The grant list is reloaded after every change, so a grant or a
//! revocation applies to the caller's next request, on any connection.

use crate::audit::{Record, SecurityEvent};
use crate::body::Json;
use crate::caller::{Admin, Caller};
use crate::error::{ApiError, ApiResult, PROJECT_NOT_FOUND};
use crate::listing::ListQuery;
use crate::response;
use crate::service::access;
use crate::state::Daemon;
use crate::sync::read;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use rxd_auth::rbac::{Grant, Role, Scope, Subject};
use rxd_store::GrantRow;
use serde_json::{json, Value};
use std::sync::Arc;

fn to_json(g: &Grant) -> Value {
    let project = match &g.scope {
        Scope::Project(p) => p.as_str(),
        _ => "",
    };
    json!({
        "id": g.id,
        "identity_type": g.subject.kind(),
        "identity": g.subject.name(),
        "role": g.role.name(),
        "scope": g.scope.kind(),
        "project": project,
    })
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    _: Admin,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let objects = read(&d.grants).iter().map(to_json).collect();
    let selected = q.select(objects, |o| format!("/1.0/auth/grants/{}", o["id"]))?;
    Ok(response::sync(selected))
}

fn find(d: &Daemon, id: &str) -> ApiResult<Grant> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound("Grant not found".into()))?;
    read(&d.grants)
        .iter()
        .find(|g| g.id == id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound("Grant not found".into()))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(response::sync(to_json(&find(&d, &id)?)))
}

pub use rxd_api::grant::GrantsPost as GrantPost;

pub async fn post(
    State(d): State<Arc<Daemon>>,
    Admin(caller, proof): Admin,
    Json(body): Json<GrantPost>,
) -> ApiResult<Response> {
    let subject =
        Subject::parse(&body.identity_type, &body.identity).map_err(ApiError::BadRequest)?;
    let role: Role = body.role.parse().map_err(ApiError::BadRequest)?;
    let scope = Scope::parse(&body.scope, &body.project).map_err(ApiError::BadRequest)?;
    if let Subject::Certificate(fp) = &subject {
        let fp = fp.clone();
        let row = d
            .db(move |s| s.certificate(&fp))
            .await
            .map_err(|e| match e {
                ApiError::NotFound(_) => ApiError::NotFound("Certificate not found".into()),
                other => other,
            })?;
        if row.kind != "client" {
            return Err(ApiError::BadRequest(
                "Roles are granted to client certificates only".into(),
            ));
        }
    }
    let row = GrantRow {
        id: 0,
        identity_type: subject.kind().into(),
        identity: subject.name().into(),
        role: role.name().into(),
        scope: scope.kind().into(),
        project: match &scope {
            Scope::Project(p) => p.clone(),
            _ => String::new(),
        },
    };
    let stored = access::grant(&d, &proof, row).await.map_err(|e| match e {
        ApiError::NotFound(_) => ApiError::NotFound(PROJECT_NOT_FOUND.into()),
        ApiError::Conflict(_) => ApiError::Conflict("This grant already exists".into()),
        other => other,
    })?;
    d.reload_access().await?;
    let grant = Grant {
        id: stored.id,
        subject,
        role,
        scope,
    };
    tracing::info!(grant = grant.id, identity = %grant.subject.name(), kind = grant.subject.kind(), role = %grant.role, scope = ?grant.scope, by = %caller.identity.user_name(), "role granted");
    let url = format!("/1.0/auth/grants/{}", grant.id);
    grant_change(
        &d,
        &caller,
        "POST",
        "/1.0/auth/grants",
        "role granted",
        &grant,
    );
    d.events.lifecycle("grant-created", &url, "", &caller);
    Ok(response::created_with(&url, to_json(&grant)))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Admin(caller, proof): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let grant = find(&d, &id)?;
    let gid = grant.id;
    access::revoke_grant(&d, &proof, gid).await?;
    d.reload_access().await?;
    tracing::info!(grant = grant.id, identity = %grant.subject.name(), role = %grant.role, scope = ?grant.scope, by = %caller.identity.user_name(), "role revoked");
    let path = format!("/1.0/auth/grants/{}", grant.id);
    grant_change(&d, &caller, "DELETE", &path, "role revoked", &grant);
    d.events.lifecycle(
        "grant-deleted",
        &format!("/1.0/auth/grants/{}", grant.id),
        "",
        &caller,
    );
    Ok(response::empty())
}

/// A grant or revocation in the security log.
fn grant_change(d: &Daemon, caller: &Caller, method: &str, path: &str, what: &str, g: &Grant) {
    let project = match &g.scope {
        Scope::Project(p) => p.as_str(),
        _ => "",
    };
    d.audit.record(
        Record::new(SecurityEvent::AuthzChange, caller, method, path, what)
            .project(project)
            .detail("grant", g.id)
            .detail("identity_type", g.subject.kind())
            .detail("identity", g.subject.name())
            .detail("role", g.role.name())
            .detail("scope", g.scope.kind()),
    );
}
