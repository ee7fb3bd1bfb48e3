//! Snapshots: `/1.0/instances/<name>/snapshots[/<snap>]` (create, list, show, rename, delete)
//! and restore (`PUT /1.0/instances/<name>` with `restore`), as LXD 5.0.
//!
//! A snapshot is a copy of the root filesystem in `$RXD_DIR/snapshots/<instance>/<snap>`
//! (root-only, outside anything the container can reach), taken with the container frozen so
//! that it is one moment of it, plus the instance's config at that moment. The copy keeps the
//! host ids the files had (`volatile.last_state.idmap` is recorded), so a restore puts back
//! both the files and the map they are shifted to; the next start re-shifts them if the
//! instance's map has changed since. Stateful snapshots (process state) are refused.

use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response;
use crate::service::instances::{find, Keyed};
use crate::service::snapshots::{default_expiry, find_snapshot, next_name, take, url, valid_name};
use crate::state::Daemon;
use crate::views;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::Value;
use std::sync::Arc;

pub async fn list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let (p, n) = (row.project.clone(), row.name.clone());
    let rows = d.db(move |s| s.snapshots(&p, &n)).await?;
    let known = crate::service::expand::known(&d, &row.project).await?;
    let objects = rows
        .iter()
        .map(|r| serde_json::to_value(views::snapshot(r, &known)))
        .collect::<Result<Vec<Value>, _>>()
        .map_err(ApiError::internal)?;
    let selected = q.select(objects, |o| {
        url(&row.name, o["name"].as_str().unwrap_or_default())
    })?;
    Ok(response::sync(selected))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((name, snap)): Path<(String, String)>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let snap = find_snapshot(&d, &row, &snap).await?;
    let known = crate::service::expand::known(&d, &row.project).await?;
    Ok(response::sync(views::snapshot(&snap, &known)))
}

pub use rxd_api::snapshot::{
    InstanceSnapshotPost as SnapshotPost, InstanceSnapshotsPost as SnapshotsPost,
};

pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<SnapshotsPost>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    if let Some(p) = d.project(&row.project) {
        rxd_auth::confinement::check_snapshot(&row.project, &p.config)?;
    }
    if req.stateful {
        return Err(ApiError::BadRequest(
            "Stateful snapshots are not supported".into(),
        ));
    }
    // `snapshots.*` keys often come from a profile.
    let config = crate::service::expand::expanded(&d, &row).await?.config;
    let now = crate::sync::now_unix();
    // Without one, `snapshots.expiry` decides (as LXD).
    let expires_at = match req.expires_at.as_deref() {
        None => default_expiry(&config, now),
        Some("") | Some("0001-01-01T00:00:00Z") => 0,
        Some(t) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ApiError::BadRequest(format!("Invalid expires_at {t:?}")))?
            .unix_timestamp(),
    };
    let (p, n) = (row.project.clone(), row.name.clone());
    let taken = d.db(move |s| s.snapshots(&p, &n)).await?;
    let snap = if req.name.is_empty() {
        next_name(&config, &taken, now)?
    } else {
        req.name
    };
    valid_name(&snap)?;
    if taken.iter().any(|r| r.name == snap) {
        return Err(ApiError::Conflict(format!(
            "Snapshot {snap:?} already exists"
        )));
    }
    let instance_url = format!("/1.0/instances/{}", row.name);
    let op = d.operations.start(
        &d.events,
        "Snapshotting instance",
        &row.project,
        crate::operations::resources([
            ("instances", vec![instance_url.to_string()]),
            (
                "instances_snapshots",
                vec![url(&row.name, &snap).to_string()],
            ),
        ]),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let lock = d2.runtime.action_lock(&row.key());
        let guard = lock.lock().await;
        // Created at the time its default expiry was counted from.
        let result = take(&d2, &row.key(), &snap, now, expires_at).await;
        drop(guard);
        if result.is_ok() {
            d2.events.lifecycle(
                "instance-snapshot-created",
                &url(&row.name, &snap),
                &row.project,
                &caller,
            );
        }
        op2.finish(
            &d2.events,
            result.map(|()| Value::Null).map_err(|e| e.to_string()),
        );
    });
    Ok(response::operation(op.url(), op.to_json()))
}

pub async fn rename(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((name, snap)): Path<(String, String)>,
    Json(req): Json<SnapshotPost>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    if req.migration {
        // `lxc copy src:c1/snap0 dst:c2`: the snapshot sent as an instance of its own.
        find_snapshot(&d, &row, &snap).await?;
        use crate::service::migration;
        let what = migration::What::Snapshot(snap);
        let (op, secrets) =
            migration::send_operation(&d, &caller, &row, what, req.live, req.target)?;
        let mut shown = op.to_json();
        if let Some(secrets) = secrets {
            shown["metadata"] = Value::Object(secrets);
        }
        return Ok(response::operation(op.url(), shown));
    }
    valid_name(&req.name)?;
    let lock = d.runtime.action_lock(&row.key());
    let _guard = lock.lock().await;
    find_snapshot(&d, &row, &snap).await?;
    crate::service::snapshots::rename(&d, &row, &snap, &req.name).await?;
    let new_url = url(&row.name, &req.name);
    d.events
        .lifecycle("instance-snapshot-renamed", &new_url, &row.project, &caller);
    finished(&d, "Renaming snapshot", &row, &new_url, Ok(()))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((name, snap)): Path<(String, String)>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let lock = d.runtime.action_lock(&row.key());
    let _guard = lock.lock().await;
    find_snapshot(&d, &row, &snap).await?;
    let result = crate::service::snapshots::remove(&d, &row, &snap).await;
    let snap_url = url(&row.name, &snap);
    if result.is_ok() {
        d.events.lifecycle(
            "instance-snapshot-deleted",
            &snap_url,
            &row.project,
            &caller,
        );
    }
    finished(&d, "Deleting snapshot", &row, &snap_url, result)
}

/// An operation that has already ended (these changes are quick), as LXD answers them.
fn finished(
    d: &Daemon,
    description: &str,
    instance: &rxd_store::InstanceRow,
    snap_url: &str,
    result: ApiResult<()>,
) -> ApiResult<Response> {
    let op = d.operations.start(
        &d.events,
        description,
        &instance.project,
        crate::operations::resources([
            (
                "instances",
                vec![format!("/1.0/instances/{}", instance.name)],
            ),
            ("instances_snapshots", vec![snap_url.to_string()]),
        ]),
        false,
    );
    op.finish(
        &d.events,
        result.map(|()| Value::Null).map_err(|e| e.to_string()),
    );
    Ok(response::operation(op.url(), op.to_json()))
}
