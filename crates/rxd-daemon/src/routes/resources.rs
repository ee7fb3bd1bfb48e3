//! `GET /1.0/resources`: the host's hardware (`rxd-resources`), for any trusted caller as in
//! LXD; what identifies this machine (DMI UUID, serial numbers, disk WWNs and ids) only for
//! server administrators.

use crate::caller::Trusted;
use crate::error::{ApiError, ApiResult};
use crate::response;
use axum::extract::Query;
use axum::response::Response;
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub struct TargetQuery {
    #[serde(default)]
    target: String,
}

/// This server is no cluster: its member name is `none`, as LXD's is when not clustered.
pub async fn get(Trusted(caller): Trusted, Query(q): Query<TargetQuery>) -> ApiResult<Response> {
    if !q.target.is_empty() && q.target != "none" {
        return Err(ApiError::NotFound("Cluster member not found".into()));
    }
    let all = tokio::task::spawn_blocking(|| rxd_resources::Host::default().resources())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(if caller.rights.is_admin() {
        response::sync(all)
    } else {
        response::sync(all.without_identifiers())
    })
}
