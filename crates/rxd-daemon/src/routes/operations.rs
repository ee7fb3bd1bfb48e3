//! `/1.0/operations` for what rxd runs as operations so far: pending certificate add tokens.
//! Token operations are visible only to admins, and never show their secret.

use super::ListQuery;
use crate::caller::{Admin, Trusted};
use crate::error::{ApiError, ApiResult};
use crate::response;
use crate::state::{now_unix, Daemon};
use crate::tokens;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let mut by_status = Map::new();
    if caller.identity.is_admin() {
        let toks = d.db(|s| s.tokens(now_unix())).await?;
        if !toks.is_empty() {
            let addresses = d.addresses();
            let fingerprint = d.tls_state().keypair.fingerprint.clone();
            let items: Vec<Value> = toks
                .iter()
                .map(|t| {
                    if q.recursion > 0 {
                        tokens::operation(t, &fingerprint, &addresses, None)
                    } else {
                        json!(tokens::operation_url(&t.id))
                    }
                })
                .collect();
            by_status.insert("running".into(), Value::Array(items));
        }
    }
    Ok(response::sync(by_status))
}

async fn find(d: &Daemon, id: &str) -> ApiResult<rxd_store::TokenRow> {
    d.db(|s| s.tokens(now_unix()))
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::NotFound("Operation not found".into()))
}

/// Non-admins get the same 404 as for a missing operation.
pub async fn get(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if !caller.identity.is_admin() {
        return Err(ApiError::NotFound("Operation not found".into()));
    }
    let t = find(&d, &id).await?;
    Ok(response::sync(tokens::operation(
        &t,
        &d.tls_state().keypair.fingerprint,
        &d.addresses(),
        None,
    )))
}

/// Cancelling a token operation revokes the token.
pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Admin(caller, _proof): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = find(&d, &id).await?;
    let token_id = t.id.clone();
    d.db(move |s| s.delete_token(&token_id)).await?;
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
