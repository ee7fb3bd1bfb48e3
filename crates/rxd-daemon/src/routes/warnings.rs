//! `/1.0/warnings`: list, show, acknowledge and delete. Admins only: warnings describe the host.

use crate::body::Json;
use crate::caller::Admin;
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response;
use crate::state::Daemon;
use crate::sync::lock;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use rxd_api::warning::WarningPut;
use std::sync::Arc;

pub async fn list(State(d): State<Arc<Daemon>>, _: Admin, Query(q): Query<ListQuery>) -> Response {
    let all = lock(&d.warnings).list();
    if q.recursion > 0 {
        response::sync(all)
    } else {
        response::sync(
            all.iter()
                .map(|w| format!("/1.0/warnings/{}", w.uuid))
                .collect::<Vec<_>>(),
        )
    }
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    _: Admin,
    Path(uuid): Path<String>,
) -> ApiResult<Response> {
    let w = lock(&d.warnings)
        .get(&uuid)
        .ok_or_else(|| ApiError::NotFound("Warning not found".into()))?;
    Ok(response::sync(w))
}

pub async fn put(
    State(d): State<Arc<Daemon>>,
    _: Admin,
    Path(uuid): Path<String>,
    Json(body): Json<WarningPut>,
) -> ApiResult<Response> {
    if !matches!(body.status.as_str(), "new" | "acknowledged" | "resolved") {
        return Err(ApiError::BadRequest(format!(
            "invalid warning status {:?}: expected new, acknowledged or resolved",
            body.status
        )));
    }
    if !lock(&d.warnings).set_status(&uuid, &body.status) {
        return Err(ApiError::NotFound("Warning not found".into()));
    }
    Ok(response::empty())
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    _: Admin,
    Path(uuid): Path<String>,
) -> ApiResult<Response> {
    if !lock(&d.warnings).remove(&uuid) {
        return Err(ApiError::NotFound("Warning not found".into()));
    }
    Ok(response::empty())
}
