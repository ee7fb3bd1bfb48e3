//! `/1.0/operations`: task operations from the registry (visible by project) and pending
//! certificate add tokens (admins only, never with their secret), listed by status as LXD does.

use crate::caller::{Caller, Trusted};
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::operations::project_selected;
use crate::response;
use crate::service::access;
use crate::state::Daemon;
use crate::sync::now_unix;
use crate::tokens;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use rxd_auth::rbac::{Item, Permission, Rights};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

const NOT_FOUND: &str = "Operation not found";

/// Every operation the caller may see and asked for (`?project=`, `all-projects`), as JSON.
async fn visible_operations(
    d: &Daemon,
    caller: &Caller,
    all_projects: bool,
) -> ApiResult<Vec<Value>> {
    let mut out: Vec<Value> = d
        .operations
        .list()
        .iter()
        .filter(|op| caller.rights.may_see(Item::Project(&op.project)))
        .filter(|op| project_selected(&caller.project, all_projects, &op.project))
        .map(|op| op.to_json())
        .collect();
    if caller.rights.may_see(Item::ServerOnly) {
        let toks = d.db(|s| s.tokens(now_unix())).await?;
        let addresses = d.addresses();
        let fingerprint = d.tls_state().keypair.fingerprint.clone();
        out.extend(
            toks.iter()
                .map(|t| tokens::operation(t, &fingerprint, &addresses, None)),
        );
    }
    Ok(out)
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let mut by_status: Map<String, Value> = Map::new();
    for op in visible_operations(&d, &caller, q.all_projects).await? {
        let status = op["status"].as_str().unwrap_or("unknown").to_lowercase();
        let item = if q.recursion > 0 {
            op.clone()
        } else {
            json!(format!(
                "/1.0/operations/{}",
                op["id"].as_str().unwrap_or("")
            ))
        };
        if let Value::Array(items) = by_status
            .entry(status)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            items.push(item);
        }
    }
    Ok(response::sync(by_status))
}

/// A token operation by id, for admins.
async fn find_token(d: &Daemon, id: &str) -> ApiResult<rxd_store::TokenRow> {
    d.db(|s| s.tokens(now_unix()))
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::NotFound(NOT_FOUND.into()))
}

/// A registry operation the caller may see. Invisible and missing answer the same.
fn find_task(d: &Daemon, rights: &Rights, id: &str) -> Option<Arc<crate::operations::Op>> {
    d.operations
        .get(id)
        .filter(|op| rights.may_see(Item::Project(&op.project)))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if let Some(op) = find_task(&d, &caller.rights, &id) {
        return Ok(response::sync(op.to_json()));
    }
    if !caller.rights.may_see(Item::ServerOnly) {
        return Err(ApiError::NotFound(NOT_FOUND.into()));
    }
    let t = find_token(&d, &id).await?;
    Ok(response::sync(tokens::operation(
        &t,
        &d.tls_state().keypair.fingerprint,
        &d.addresses(),
        None,
    )))
}

#[derive(Deserialize)]
pub struct WaitQuery {
    /// Seconds; absent or negative means no limit.
    #[serde(default)]
    timeout: Option<i64>,
}

/// `GET /1.0/operations/<id>/wait`: the operation once it has finished, or when `timeout` passed.
pub async fn wait(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    let Some(op) = find_task(&d, &caller.rights, &id) else {
        if caller.rights.may_see(Item::ServerOnly) {
            // A token finishes when it is used; waiting returns its current state.
            let t = find_token(&d, &id).await?;
            return Ok(response::sync(tokens::operation(
                &t,
                &d.tls_state().keypair.fingerprint,
                &d.addresses(),
                None,
            )));
        }
        return Err(ApiError::NotFound(NOT_FOUND.into()));
    };
    let timeout = q
        .timeout
        .filter(|t| *t >= 0)
        .map(|t| Duration::from_secs(t.unsigned_abs()));
    op.wait(timeout).await;
    Ok(response::sync(op.to_json()))
}

/// Cancelling a task asks it to stop; cancelling a token operation revokes the token.
pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if let Some(op) = find_task(&d, &caller.rights, &id) {
        if !caller
            .rights
            .has(&op.project, Permission::OperateContainers)
        {
            return Err(ApiError::NotAuthorized);
        }
        if !op.request_cancel() {
            return Err(ApiError::BadRequest(
                "This operation can't be cancelled".into(),
            ));
        }
        tracing::info!(operation = %op.id, by = %caller.identity.user_name(), peer = %caller.conn.peer(), "operation cancel requested");
        return Ok(response::empty());
    }
    // Tokens are the administrator's; to anyone else they do not exist.
    let Ok(proof) = caller.rights.require_admin() else {
        return Err(ApiError::NotFound(NOT_FOUND.into()));
    };
    let t = find_token(&d, &id).await?;
    access::revoke_token(&d, &proof, &t.id).await?;
    d.audit.record(
        crate::audit::Record::new(
            crate::audit::SecurityEvent::AuthnTokenRevoked,
            &caller,
            "DELETE",
            &format!("/1.0/operations/{}", t.id),
            "enrolment token revoked",
        )
        .detail("token", t.id.as_str())
        .detail("client_name", t.name.as_str()),
    );
    tracing::info!(
        action = "token-revoked",
        token = %t.id,
        client_name = %t.name,
        by = %caller.identity.user_name(),
        peer = %caller.conn.peer(),
        "trust change"
    );
    Ok(response::empty())
}
