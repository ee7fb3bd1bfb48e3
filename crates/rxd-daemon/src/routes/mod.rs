//! The API's routes. Unknown paths answer 404 to anyone before authentication; known paths with
//! an unsupported method answer 501, as LXD does. Cross-site requests are refused before anything
//! else (`origin`), every refusal is answered in LXD's envelope (the framework's own ones
//! included) and logged once, here.

mod backups;
mod certificates;
pub mod console;
pub mod events;
pub mod exec;
pub mod files;
pub mod grants;
pub mod images;
pub(crate) mod instance_edit;
pub mod instances;
mod networks;
pub(crate) mod operations;
mod profiles;
pub mod projects;
mod resources;
pub mod server;
pub mod snapshots;
mod storage;
mod volumes;
mod warnings;

use crate::error::{ApiError, RejectReason};
use crate::listener::ConnInfo;
use crate::state::Daemon;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/", get(server::get_root))
        .route(
            "/1.0",
            get(server::get).put(server::put).patch(server::patch),
        )
        .route("/1.0/resources", get(resources::get))
        .route("/1.0/warnings", get(warnings::list))
        .route(
            "/1.0/warnings/{uuid}",
            get(warnings::get)
                .put(warnings::put)
                .patch(warnings::put)
                .delete(warnings::delete),
        )
        .route(
            "/1.0/certificates",
            get(certificates::list).post(certificates::post),
        )
        .route(
            "/1.0/certificates/{fingerprint}",
            get(certificates::get)
                .put(certificates::put)
                .patch(certificates::patch)
                .delete(certificates::delete),
        )
        .route("/1.0/images", get(images::list).post(images::post))
        .route(
            "/1.0/images/aliases",
            get(images::aliases).post(images::alias_post),
        )
        .route(
            "/1.0/images/aliases/{name}",
            get(images::alias_get)
                .put(images::alias_put)
                .patch(images::alias_put)
                .post(images::alias_rename)
                .delete(images::alias_delete),
        )
        .route(
            "/1.0/images/{fingerprint}",
            get(images::get)
                .put(images::put)
                .patch(images::patch)
                .delete(images::delete),
        )
        .route("/1.0/images/{fingerprint}/export", get(images::export))
        .route("/1.0/images/{fingerprint}/secret", post(images::secret))
        .route("/1.0/images/{fingerprint}/refresh", post(images::refresh))
        .route("/1.0/instances", get(instances::list).post(instances::post))
        .route(
            "/1.0/instances/{name}",
            get(instance_edit::get)
                .put(instance_edit::put)
                .patch(instance_edit::patch)
                .post(instance_edit::post)
                .delete(instances::delete),
        )
        .route(
            "/1.0/instances/{name}/state",
            get(instances::state).put(instances::put_state),
        )
        .route(
            "/1.0/instances/{name}/backups",
            get(backups::list).post(backups::post),
        )
        .route(
            "/1.0/instances/{name}/backups/{backup}",
            get(backups::get)
                .post(backups::rename)
                .delete(backups::delete),
        )
        .route(
            "/1.0/instances/{name}/backups/{backup}/export",
            get(backups::export),
        )
        .route(
            "/1.0/instances/{name}/snapshots",
            get(snapshots::list).post(snapshots::post),
        )
        .route(
            "/1.0/instances/{name}/snapshots/{snap}",
            get(snapshots::get)
                .post(snapshots::rename)
                .delete(snapshots::delete),
        )
        .route(
            "/1.0/containers",
            get(instances::list).post(instances::post),
        )
        .route(
            "/1.0/containers/{name}",
            get(instance_edit::get)
                .put(instance_edit::put)
                .patch(instance_edit::patch)
                .post(instance_edit::post)
                .delete(instances::delete),
        )
        .route(
            "/1.0/containers/{name}/state",
            get(instances::state).put(instances::put_state),
        )
        .route(
            "/1.0/containers/{name}/backups",
            get(backups::list).post(backups::post),
        )
        .route(
            "/1.0/containers/{name}/backups/{backup}",
            get(backups::get)
                .post(backups::rename)
                .delete(backups::delete),
        )
        .route(
            "/1.0/containers/{name}/backups/{backup}/export",
            get(backups::export),
        )
        .route(
            "/1.0/containers/{name}/snapshots",
            get(snapshots::list).post(snapshots::post),
        )
        .route(
            "/1.0/containers/{name}/snapshots/{snap}",
            get(snapshots::get)
                .post(snapshots::rename)
                .delete(snapshots::delete),
        )
        .route("/1.0/events", get(events::get))
        .route("/1.0/operations", get(operations::list))
        .route(
            "/1.0/operations/{id}",
            get(operations::get).delete(operations::delete),
        )
        .route("/1.0/operations/{id}/wait", get(operations::wait))
        .route("/1.0/operations/{id}/websocket", get(exec::websocket))
        .route("/1.0/instances/{name}/exec", post(exec::post))
        .route("/1.0/containers/{name}/exec", post(exec::post))
        .route(
            "/1.0/instances/{name}/console",
            get(console::get)
                .delete(console::delete)
                .post(console::attach),
        )
        .route("/1.0/instances/{name}/logs", get(console::logs))
        .route(
            "/1.0/instances/{name}/logs/{file}",
            get(console::log_file).delete(console::delete_log_file),
        )
        .route(
            "/1.0/containers/{name}/console",
            get(console::get)
                .delete(console::delete)
                .post(console::attach),
        )
        .route(
            "/1.0/instances/{name}/files",
            get(files::get).post(files::post).delete(files::delete),
        )
        .route(
            "/1.0/containers/{name}/files",
            get(files::get).post(files::post).delete(files::delete),
        )
        .route("/1.0/storage-pools", get(storage::list).post(storage::post))
        .route(
            "/1.0/storage-pools/{name}",
            get(storage::get)
                .put(storage::put)
                .patch(storage::patch)
                .delete(storage::delete),
        )
        .route(
            "/1.0/storage-pools/{name}/resources",
            get(storage::resources),
        )
        .route(
            "/1.0/storage-pools/{name}/volumes",
            get(storage::volume_list).post(volumes::post),
        )
        .route(
            "/1.0/storage-pools/{name}/volumes/{type}",
            get(storage::volume_list_typed).post(volumes::post_typed),
        )
        .route(
            "/1.0/storage-pools/{name}/volumes/{type}/{volume}",
            get(storage::volume_get)
                .put(volumes::put)
                .patch(volumes::patch)
                .post(volumes::rename)
                .delete(volumes::delete),
        )
        .route(
            "/1.0/storage-pools/{name}/volumes/{type}/{volume}/state",
            get(volumes::state),
        )
        .route(
            "/1.0/storage-pools/{name}/volumes/{type}/{volume}/snapshots",
            get(volumes::snapshot_list).post(volumes::snapshot_post),
        )
        .route(
            "/1.0/storage-pools/{name}/volumes/{type}/{volume}/snapshots/{snap}",
            get(volumes::snapshot_get)
                .put(volumes::snapshot_put)
                .patch(volumes::snapshot_patch)
                .post(volumes::snapshot_rename)
                .delete(volumes::snapshot_delete),
        )
        .route("/1.0/networks", get(networks::list).post(networks::post))
        .route(
            "/1.0/networks/{name}",
            get(networks::get)
                .put(networks::put)
                .patch(networks::patch)
                .post(networks::rename)
                .delete(networks::delete),
        )
        .route("/1.0/networks/{name}/state", get(networks::state))
        .route("/1.0/networks/{name}/leases", get(networks::leases))
        .route("/1.0/profiles", get(profiles::list).post(profiles::post))
        .route(
            "/1.0/profiles/{name}",
            get(profiles::get)
                .put(profiles::put)
                .patch(profiles::patch)
                .post(profiles::rename)
                .delete(profiles::delete),
        )
        .route("/1.0/projects", get(projects::list).post(projects::post))
        .route(
            "/1.0/projects/{name}",
            get(projects::get)
                .put(projects::put)
                .patch(projects::patch)
                .post(projects::rename)
                .delete(projects::delete),
        )
        .route("/1.0/projects/{name}/state", get(projects::state))
        .route("/1.0/auth/grants", get(grants::list).post(grants::post))
        .route(
            "/1.0/auth/grants/{id}",
            get(grants::get).delete(grants::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            crate::authorize::authorize,
        ))
        .method_not_allowed_fallback(not_implemented)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(crate::origin::refuse_cross_site))
        .layer(axum::middleware::from_fn(envelope_rejections))
        .layer(axum::middleware::from_fn(crate::body::drain_unread))
        .layer(axum::middleware::from_fn(log_refusals))
        .with_state(daemon)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("not found".into())
}

async fn not_implemented() -> ApiError {
    ApiError::NotImplemented
}

/// The framework's own refusals (a path or query axum could not decode, a websocket request that
/// is not one) come as text; re-answer them in LXD's envelope. Ours carry a [`RejectReason`], and
/// other JSON answers are left alone.
async fn envelope_rejections(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error())
        || json
        || resp.extensions().get::<RejectReason>().is_some()
    {
        return resp;
    }
    // Framework refusals are one short line; more is not a message.
    let text = match axum::body::to_bytes(resp.into_body(), 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_owned()
    } else {
        text
    };
    axum::response::IntoResponse::into_response(ApiError::rejected(status, text))
}

/// One log line per refused request: what, why, from where, and which certificate. Never the
/// query string or body, which may carry secrets.
async fn log_refusals(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        let reason = resp
            .extensions()
            .get::<RejectReason>()
            .map(|r| r.0.as_str())
            .unwrap_or("");
        let peer = conn.as_ref().map(ConnInfo::peer).unwrap_or_default();
        let fingerprint = conn
            .as_ref()
            .and_then(ConnInfo::fingerprint)
            .unwrap_or_default();
        if status == http::StatusCode::FORBIDDEN || status == http::StatusCode::TOO_MANY_REQUESTS {
            tracing::warn!(%method, %path, status = status.as_u16(), reason, %peer, %fingerprint, "request refused");
        } else {
            tracing::info!(%method, %path, status = status.as_u16(), reason, %peer, %fingerprint, "request refused");
        }
    }
    resp
}
