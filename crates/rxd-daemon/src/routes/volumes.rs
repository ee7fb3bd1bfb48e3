//! `/1.0/storage-pools/<pool>/volumes/custom/...`: LXD 5.0's custom storage volume API and
//! its snapshots. Reading needs `view` on the request's project, writing
//! `manage-storage-volumes` (the authorization layer checks both); the rules are
//! `service::volumes`'. As in LXD, a copy, a move to another pool and a snapshot's create,
//! rename and delete are operations; the rest answer at once.

use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response::{self, check_if_match};
use crate::service::volumes;
use crate::state::Daemon;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use rxd_api::storage::{
    StorageVolumePost, StorageVolumePut, StorageVolumeSnapshotPost, StorageVolumeSnapshotPut,
    StorageVolumeSnapshotsPost, StorageVolumeState, StorageVolumesPost,
};
use rxd_store::VolumeRow;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

/// Only custom volumes are written here; the others are the instances' and images'.
fn custom_only(kind: &str) -> ApiResult<()> {
    if kind == "custom" {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Storage volumes of type {kind:?} are managed through their instance or image"
        )))
    }
}

async fn pool_row(d: &Daemon, pool: &str) -> ApiResult<()> {
    let p = pool.to_owned();
    d.db(move |s| s.storage_pool(&p))
        .await
        .map(drop)
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound("Storage pool not found".into()),
            other => other,
        })
}

async fn volume(
    d: &Daemon,
    caller: &Caller,
    pool: &str,
    kind: &str,
    name: &str,
) -> ApiResult<VolumeRow> {
    pool_row(d, pool).await?;
    if kind != "custom" {
        return Err(ApiError::NotFound("Storage volume not found".into()));
    }
    volumes::get(d, caller, pool, name).await
}

/// A volume the caller is about to change: the right to manage volumes where it lives too.
async fn volume_w(
    d: &Daemon,
    caller: &Caller,
    pool: &str,
    kind: &str,
    name: &str,
) -> ApiResult<VolumeRow> {
    let row = volume(d, caller, pool, kind, name).await?;
    volumes::caller_home(d, caller, true)?;
    Ok(row)
}

/// Runs `work` as a task operation and answers with it (LXD's shape for these writes).
fn in_operation<F>(
    d: &Arc<Daemon>,
    project: &str,
    description: &str,
    resources: crate::operations::Resources,
    work: F,
) -> Response
where
    F: Future<Output = ApiResult<()>> + Send + 'static,
{
    let op = crate::service::tasks::spawn(d, description, project, resources, work);
    response::operation(op.url(), op.to_json())
}

fn volume_resources(url: &str) -> crate::operations::Resources {
    crate::operations::resources([("storage_volumes", vec![url.to_owned()])])
}

/// `POST /1.0/storage-pools/<pool>/volumes[/<type>]`.
pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(pool): Path<String>,
    Json(body): Json<StorageVolumesPost>,
) -> ApiResult<Response> {
    create(d, caller, pool, body).await
}

pub async fn post_typed(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind)): Path<(String, String)>,
    Json(mut body): Json<StorageVolumesPost>,
) -> ApiResult<Response> {
    custom_only(&kind)?;
    body.kind = kind;
    create(d, caller, pool, body).await
}

async fn create(
    d: Arc<Daemon>,
    caller: Caller,
    pool: String,
    body: StorageVolumesPost,
) -> ApiResult<Response> {
    pool_row(&d, &pool).await?;
    let home = volumes::home(&d, &caller.project)?;
    let url = volumes::url(&pool, &home, &body.name);
    let copy = body.source.kind == "copy";
    if !copy {
        let made = volumes::create(&d, &caller, &pool, body).await?;
        d.events
            .lifecycle("storage-volume-created", &made, &caller.project, &caller);
        return Ok(response::created(&made));
    }
    volumes::check_copy(&d, &caller, &pool, &body).await?;
    let project = caller.project.clone();
    let d2 = d.clone();
    let work = async move {
        let made = volumes::create(&d2, &caller, &pool, body).await?;
        d2.events
            .lifecycle("storage-volume-created", &made, &caller.project, &caller);
        Ok(())
    };
    Ok(in_operation(
        &d,
        &project,
        "Copying storage volume",
        volume_resources(&url),
        work,
    ))
}

async fn update(
    d: &Arc<Daemon>,
    caller: &Caller,
    (pool, kind, name): (String, String, String),
    headers: &HeaderMap,
    body: StorageVolumePut,
    replace: bool,
) -> ApiResult<Response> {
    custom_only(&kind)?;
    let row = volume_w(d, caller, &pool, &kind, &name).await?;
    if !body.restore.is_empty() {
        volumes::restore(d, &row, &body.restore).await?;
        d.events.lifecycle(
            "storage-volume-restored",
            &volumes::url(&pool, &row.project, &name),
            &caller.project,
            caller,
        );
        return Ok(response::empty());
    }
    check_if_match(headers, &volumes::etag_fields(&row))?;
    let description = match (body.description, replace) {
        (Some(t), _) => t,
        (None, true) => String::new(),
        (None, false) => row.description.clone(),
    };
    let current = serde_json::from_str(&row.config).unwrap_or_default();
    let config = crate::patch::merged(current, body.config, replace);
    volumes::update(d, &row, description, config).await?;
    d.events.lifecycle(
        "storage-volume-updated",
        &volumes::url(&pool, &row.project, &name),
        &caller.project,
        caller,
    );
    Ok(response::empty())
}

pub async fn put(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<StorageVolumePut>,
) -> ApiResult<Response> {
    update(&d, &caller, path, &headers, body, true).await
}

pub async fn patch(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<StorageVolumePut>,
) -> ApiResult<Response> {
    update(&d, &caller, path, &headers, body, false).await
}

/// `POST` of a volume: rename (answered at once) or move to another pool (an operation).
pub async fn rename(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind, name)): Path<(String, String, String)>,
    Json(body): Json<StorageVolumePost>,
) -> ApiResult<Response> {
    custom_only(&kind)?;
    let row = volume_w(&d, &caller, &pool, &kind, &name).await?;
    let moves = !body.pool.is_empty() && body.pool != row.pool;
    if !moves {
        let made = volumes::rename(&d, &caller, &row, body).await?;
        d.events
            .lifecycle("storage-volume-renamed", &made, &caller.project, &caller);
        return Ok(response::created(&made));
    }
    let url = volumes::url(&pool, &row.project, &name);
    let project = caller.project.clone();
    let d2 = d.clone();
    let work = async move {
        let made = volumes::rename(&d2, &caller, &row, body).await?;
        d2.events
            .lifecycle("storage-volume-moved", &made, &caller.project, &caller);
        Ok(())
    };
    Ok(in_operation(
        &d,
        &project,
        "Moving storage volume",
        volume_resources(&url),
        work,
    ))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    custom_only(&kind)?;
    let row = volume_w(&d, &caller, &pool, &kind, &name).await?;
    volumes::delete(&d, &caller, &row).await?;
    d.events.lifecycle(
        "storage-volume-deleted",
        &volumes::url(&pool, &row.project, &name),
        &caller.project,
        &caller,
    );
    Ok(response::empty())
}

pub async fn state(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let row = volume(&d, &caller, &pool, &kind, &name).await?;
    let usage = volumes::state(&d, &row).await?;
    Ok(response::sync(StorageVolumeState { usage }))
}

pub async fn snapshot_list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind, name)): Path<(String, String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let row = volume(&d, &caller, &pool, &kind, &name).await?;
    let snaps = volumes::snapshots(&d, &row).await?;
    let objects: Vec<Value> = snaps
        .iter()
        .map(|s| serde_json::to_value(volumes::snapshot_view(s)).unwrap_or_default())
        .collect();
    let selected = q.select(objects, |o| {
        volumes::snapshot_url(&row, o["name"].as_str().unwrap_or_default())
    })?;
    Ok(response::sync(selected))
}

pub async fn snapshot_post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind, name)): Path<(String, String, String)>,
    Json(body): Json<StorageVolumeSnapshotsPost>,
) -> ApiResult<Response> {
    custom_only(&kind)?;
    let row = volume_w(&d, &caller, &pool, &kind, &name).await?;
    let mut body = body;
    if body.name.is_empty() {
        body.name = volumes::next_snapshot_name(&d, &row).await?;
    }
    let url = volumes::url(&pool, &row.project, &name);
    let resources = crate::operations::resources([
        ("storage_volumes", vec![url]),
        (
            "storage_volume_snapshots",
            vec![volumes::snapshot_url(&row, &body.name)],
        ),
    ]);
    let project = caller.project.clone();
    let d2 = d.clone();
    let work = async move {
        let snap = volumes::snapshot(&d2, &row, body).await?;
        d2.events.lifecycle(
            "storage-volume-snapshot-created",
            &volumes::snapshot_url(&row, &snap),
            &caller.project,
            &caller,
        );
        Ok(())
    };
    Ok(in_operation(
        &d,
        &project,
        "Snapshotting storage volume",
        resources,
        work,
    ))
}

type SnapPath = (String, String, String, String);

pub async fn snapshot_get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind, name, snap)): Path<SnapPath>,
) -> ApiResult<Response> {
    let row = volume(&d, &caller, &pool, &kind, &name).await?;
    let s = volumes::get_snapshot(&d, &row, &snap).await?;
    let view = volumes::snapshot_view(&s);
    let etag = serde_json::json!({ "description": s.description, "expires_at": view.expires_at });
    Ok(response::sync_with_etag(view, &etag))
}

async fn snapshot_update(
    d: &Daemon,
    caller: &Caller,
    (pool, kind, name, snap): SnapPath,
    body: StorageVolumeSnapshotPut,
    replace: bool,
) -> ApiResult<Response> {
    custom_only(&kind)?;
    let row = volume_w(d, caller, &pool, &kind, &name).await?;
    let mut s = volumes::get_snapshot(d, &row, &snap).await?;
    match (body.description, replace) {
        (Some(t), _) => s.description = t,
        (None, true) => s.description = String::new(),
        (None, false) => {}
    }
    match body.expires_at {
        Some(Some(t)) if !t.is_empty() && t != "0001-01-01T00:00:00Z" => {
            s.expires_at = Some(volumes::parse_time(&t)?)
        }
        Some(_) => s.expires_at = None,
        None if replace => s.expires_at = None,
        None => {}
    }
    volumes::update_snapshot(d, s).await?;
    Ok(response::empty())
}

pub async fn snapshot_put(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(path): Path<SnapPath>,
    Json(body): Json<StorageVolumeSnapshotPut>,
) -> ApiResult<Response> {
    snapshot_update(&d, &caller, path, body, true).await
}

pub async fn snapshot_patch(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(path): Path<SnapPath>,
    Json(body): Json<StorageVolumeSnapshotPut>,
) -> ApiResult<Response> {
    snapshot_update(&d, &caller, path, body, false).await
}

pub async fn snapshot_rename(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind, name, snap)): Path<SnapPath>,
    Json(body): Json<StorageVolumeSnapshotPost>,
) -> ApiResult<Response> {
    custom_only(&kind)?;
    if body.migration || body.target.is_some() {
        return Err(ApiError::BadRequest(
            "Storage volume snapshot migration is not supported by rxd yet".into(),
        ));
    }
    let row = volume_w(&d, &caller, &pool, &kind, &name).await?;
    let s = volumes::get_snapshot(&d, &row, &snap).await?;
    let url = volumes::snapshot_url(&row, &snap);
    let project = caller.project.clone();
    let d2 = d.clone();
    let work = async move {
        volumes::rename_snapshot(&d2, &row, &s, &body.name).await?;
        d2.events.lifecycle(
            "storage-volume-snapshot-renamed",
            &volumes::snapshot_url(&row, &body.name),
            &caller.project,
            &caller,
        );
        Ok(())
    };
    Ok(in_operation(
        &d,
        &project,
        "Renaming storage volume snapshot",
        volume_resources(&url),
        work,
    ))
}

pub async fn snapshot_delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind, name, snap)): Path<SnapPath>,
) -> ApiResult<Response> {
    custom_only(&kind)?;
    let row = volume_w(&d, &caller, &pool, &kind, &name).await?;
    let s = volumes::get_snapshot(&d, &row, &snap).await?;
    let url = volumes::snapshot_url(&row, &snap);
    let project = caller.project.clone();
    let d2 = d.clone();
    let work = async move {
        volumes::delete_snapshot(&d2, &row, &s).await?;
        d2.events.lifecycle(
            "storage-volume-snapshot-deleted",
            &volumes::snapshot_url(&row, &s.name),
            &caller.project,
            &caller,
        );
        Ok(())
    };
    Ok(in_operation(
        &d,
        &project,
        "Deleting storage volume snapshot",
        volume_resources(&url),
        work,
    ))
}
