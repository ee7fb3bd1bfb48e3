//! Snapshots: `/1.0/instances/<name>/snapshots[/<snap>]` (create, list, show, rename, delete)
//! and restore (`PUT /1.0/instances/<name>` with `restore`), as LXD 5.0.
//!
//! A snapshot is a copy of the root filesystem in `$RXD_DIR/snapshots/<instance>/<snap>`
//! (root-only, outside anything the container can reach), taken with the container frozen so
//! that it is one moment of it, plus the instance's config at that moment. The copy keeps the
//! host ids the files had (`volatile.last_state.idmap` is recorded), so a restore puts back
//! both the files and the map they are shifted to; the next start re-shifts them if the
//! instance's map has changed since. Stateful snapshots (process state) are refused.

use super::instances::{
    by_key, config_of, confine, find, instance_dir, save_config, start, stop, Keyed,
};
use super::ListQuery;
use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::response;
use crate::state::{now_unix, Daemon};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use rxd_store::SnapshotRow;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

const NOT_FOUND: &str = "Snapshot not found";

/// Where an instance's snapshots live.
pub fn snapshots_dir(d: &Daemon, instance: &str) -> PathBuf {
    d.dir.join("snapshots").join(instance)
}

/// Remove every snapshot of a deleted instance from disk.
pub fn remove_all(d: &Daemon, instance: &str) -> std::io::Result<()> {
    match rxd_image::remove::remove_tree(snapshots_dir(d, instance)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Move a renamed instance's snapshots.
pub fn rename_all(d: &Daemon, old: &str, new: &str) -> std::io::Result<()> {
    match std::fs::rename(snapshots_dir(d, old), snapshots_dir(d, new)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn url(instance: &str, snap: &str) -> String {
    format!("/1.0/instances/{instance}/snapshots/{snap}")
}

fn to_json(row: &SnapshotRow) -> Value {
    let config: BTreeMap<String, String> = serde_json::from_str(&row.config).unwrap_or_default();
    let expires = if row.expires_at == 0 {
        "0001-01-01T00:00:00Z".to_owned()
    } else {
        crate::tokens::rfc3339(row.expires_at)
    };
    json!({
        "name": row.name,
        "architecture": "x86_64",
        "config": config,
        "expanded_config": config,
        "devices": {},
        "expanded_devices": {},
        "profiles": ["default"],
        "ephemeral": false,
        "stateful": false,
        "description": "",
        "created_at": crate::tokens::rfc3339(row.created_at),
        "expires_at": expires,
        "last_used_at": "0001-01-01T00:00:00Z",
        "size": -1,
    })
}

fn valid_name(name: &str) -> ApiResult<()> {
    if rxd_core::name::valid_instance_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Invalid snapshot name {name:?}: letters, digits and dashes, starting with a letter"
        )))
    }
}

async fn find_snapshot(
    d: &Daemon,
    instance: &rxd_store::InstanceRow,
    snap: &str,
) -> ApiResult<SnapshotRow> {
    let (p, i, n) = (
        instance.project.clone(),
        instance.name.clone(),
        snap.to_owned(),
    );
    d.db(move |s| s.snapshot(&p, &i, &n))
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound(NOT_FOUND.into()),
            other => other,
        })
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let (p, n) = (row.project.clone(), row.name.clone());
    let rows = d.db(move |s| s.snapshots(&p, &n)).await?;
    let objects = rows.iter().map(to_json).collect();
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
    Ok(response::sync(to_json(&snap)))
}

#[derive(Deserialize)]
pub struct SnapshotsPost {
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    stateful: bool,
    #[serde(default)]
    expires_at: Option<String>,
}

/// The next free `snapN` name, as LXD's default `snapshots.pattern`.
fn next_name(taken: &[SnapshotRow]) -> String {
    (0..)
        .map(|i| format!("snap{i}"))
        .find(|n| !taken.iter().any(|r| &r.name == n))
        .expect("a free name")
}

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
    let expires_at = match req.expires_at.as_deref() {
        None | Some("") | Some("0001-01-01T00:00:00Z") => 0,
        Some(t) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ApiError::BadRequest(format!("Invalid expires_at {t:?}")))?
            .unix_timestamp(),
    };
    let (p, n) = (row.project.clone(), row.name.clone());
    let taken = d.db(move |s| s.snapshots(&p, &n)).await?;
    let snap = if req.name.is_empty() {
        next_name(&taken)
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
        json!({"instances": [instance_url], "instances_snapshots": [url(&row.name, &snap)]}),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let lock = d2.runtime.action_lock(&row.key());
        let guard = lock.lock().await;
        let result = take(&d2, &row.key(), &snap, expires_at).await;
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

/// Copy `from` to the new directory `to` off the executor; a failed copy leaves nothing.
async fn copy(from: PathBuf, to: PathBuf) -> ApiResult<u64> {
    tokio::task::spawn_blocking(move || {
        let copied = rxd_image::copy::copy_tree(&from, &to);
        if copied.is_err() {
            let _ = rxd_image::remove::remove_tree(&to);
        }
        copied
    })
    .await?
    .map_err(|e| match e {
        // The container's own doing, and said relative to its root: the caller may know.
        rxd_image::ImageError::TooDeep { .. } => {
            ApiError::BadRequest(format!("Cannot copy the root filesystem: {e}"))
        }
        e => ApiError::internal(format!("copying the root filesystem: {e}")),
    })
}

/// Take a snapshot of the instance with runtime key `instance`.
async fn take(d: &Arc<Daemon>, instance: &str, snap: &str, expires_at: i64) -> ApiResult<()> {
    let row = by_key(d, instance).await?;
    let dir = snapshots_dir(d, instance);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(ApiError::internal)?;
    let temp = dir.join(format!(".new-{}", uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&temp)
        .map_err(ApiError::internal)?;
    // One moment of a running container: its processes stay frozen while the copy is made.
    let freeze = d.runtime.init(instance).is_some() && !d.runtime.frozen(instance);
    if freeze {
        if let Err(e) = d.runtime.freeze(instance, true).await {
            let _ = rxd_image::remove::remove_tree(&temp);
            return Err(e.into());
        }
    }
    let copied = copy(
        instance_dir(d, instance).join("rootfs"),
        temp.join("rootfs"),
    )
    .await;
    if freeze {
        if let Err(e) = d.runtime.freeze(instance, false).await {
            tracing::error!(instance = %instance, error = %e, "could not thaw after a snapshot");
        }
    }
    let placed = copied.and_then(|entries| {
        std::fs::rename(&temp, dir.join(snap)).map_err(ApiError::internal)?;
        tracing::info!(instance = %instance, snapshot = %snap, entries, "snapshot taken");
        Ok(())
    });
    if let Err(e) = placed {
        let _ = rxd_image::remove::remove_tree(&temp);
        return Err(e);
    }
    let snap_row = SnapshotRow {
        project: row.project.clone(),
        instance: row.name.clone(),
        name: snap.into(),
        config: row.config.clone(),
        created_at: now_unix(),
        expires_at,
    };
    if let Err(e) = d.db(move |s| s.create_snapshot(&snap_row)).await {
        let _ = rxd_image::remove::remove_tree(dir.join(snap));
        return Err(e);
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct SnapshotPost {
    name: String,
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    migration: bool,
}

pub async fn rename(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((name, snap)): Path<(String, String)>,
    Json(req): Json<SnapshotPost>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    if req.migration {
        return Err(ApiError::BadRequest(
            "Migrating snapshots is not supported".into(),
        ));
    }
    valid_name(&req.name)?;
    let lock = d.runtime.action_lock(&row.key());
    let _guard = lock.lock().await;
    find_snapshot(&d, &row, &snap).await?;
    let dir = snapshots_dir(&d, &row.key());
    let (from, to) = (dir.join(&snap), dir.join(&req.name));
    if to.exists() {
        return Err(ApiError::Conflict(format!(
            "Snapshot {:?} already exists",
            req.name
        )));
    }
    std::fs::rename(&from, &to).map_err(ApiError::internal)?;
    let (p, i, old, new) = (
        row.project.clone(),
        row.name.clone(),
        snap.clone(),
        req.name.clone(),
    );
    if let Err(e) = d.db(move |s| s.rename_snapshot(&p, &i, &old, &new)).await {
        let _ = std::fs::rename(&to, &from);
        return Err(e);
    }
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
    let path = snapshots_dir(&d, &row.key()).join(&snap);
    let removed =
        tokio::task::spawn_blocking(move || match rxd_image::remove::remove_tree(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await?
        .map_err(ApiError::internal);
    let result = match removed {
        Ok(()) => {
            let (p, i, n) = (row.project.clone(), row.name.clone(), snap.clone());
            d.db(move |s| s.delete_snapshot(&p, &i, &n)).await
        }
        Err(e) => Err(e),
    };
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
        json!({"instances": [format!("/1.0/instances/{}", instance.name)], "instances_snapshots": [snap_url]}),
        false,
    );
    op.finish(
        &d.events,
        result.map(|()| Value::Null).map_err(|e| e.to_string()),
    );
    Ok(response::operation(op.url(), op.to_json()))
}

/// `PUT /1.0/instances/<name>` with `restore`: put back the snapshot's files and the id map
/// they are shifted to. A running instance is stopped first and started again after.
pub async fn restore(
    d: &Arc<Daemon>,
    caller: &Caller,
    instance: &str,
    snap: &str,
) -> ApiResult<Response> {
    let row = find(d, &caller.project, instance).await?;
    confine(d, caller, &row.project, &config_of(&row), 0)?;
    // `SNAP` or, as Debian's lxc sends it, `INSTANCE/SNAP`.
    let snap = match snap.split_once('/') {
        Some((owner, s)) if owner == row.name => s,
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "Snapshot {snap:?} is not one of {}",
                row.name
            )))
        }
        None => snap,
    };
    let snap_row = find_snapshot(d, &row, snap).await?;
    let instance_url = format!("/1.0/instances/{}", row.name);
    let op = d.operations.start(
        &d.events,
        "Restoring snapshot",
        &row.project,
        json!({"instances": [instance_url], "instances_snapshots": [url(&row.name, snap)]}),
        false,
    );
    let (d2, op2, caller) = (d.clone(), op.clone(), caller.clone());
    tokio::spawn(async move {
        let lock = d2.runtime.action_lock(&row.key());
        let guard = lock.lock().await;
        let result = put_back(&d2, &row.key(), &snap_row).await;
        drop(guard);
        if result.is_ok() {
            d2.events
                .lifecycle("instance-restored", &instance_url, &row.project, &caller);
        }
        op2.finish(
            &d2.events,
            result.map(|()| Value::Null).map_err(|e| e.to_string()),
        );
    });
    Ok(response::operation(op.url(), op.to_json()))
}

async fn put_back(d: &Arc<Daemon>, instance: &str, snap: &SnapshotRow) -> ApiResult<()> {
    let was_running = d.runtime.init(instance).is_some();
    if was_running {
        stop(d, instance, true, 0, true).await?;
    }
    let result = swap_in(d, instance, snap).await;
    // Running before, running after, whether or not the files could be put back.
    if was_running {
        let started = start(d, instance).await;
        return result.and(started);
    }
    result
}

async fn swap_in(d: &Arc<Daemon>, instance: &str, snap: &SnapshotRow) -> ApiResult<()> {
    // No host-side write into the tree while it is replaced.
    let _exclusive = d.runtime.rootfs_lock(instance).write_owned().await;
    let dir = instance_dir(d, instance);
    let id = uuid::Uuid::new_v4().simple();
    let (fresh, old) = (
        dir.join(format!(".rootfs-restore-{id}")),
        dir.join(format!(".rootfs-old-{id}")),
    );
    copy(
        snapshots_dir(d, instance).join(&snap.name).join("rootfs"),
        fresh.clone(),
    )
    .await?;
    let rootfs = dir.join("rootfs");
    if let Err(e) = std::fs::rename(&rootfs, &old) {
        let _ = rxd_image::remove::remove_tree(&fresh);
        return Err(ApiError::internal(e));
    }
    if let Err(e) = std::fs::rename(&fresh, &rootfs) {
        let _ = std::fs::rename(&old, &rootfs);
        let _ = rxd_image::remove::remove_tree(&fresh);
        return Err(ApiError::internal(e));
    }
    // The files now carry the snapshot's ids: record that map, so the next start re-shifts
    // them to the instance's map if it differs. (If this fails, the old tree is put back.)
    let snap_config: BTreeMap<String, String> =
        serde_json::from_str(&snap.config).unwrap_or_default();
    let row = by_key(d, instance).await?;
    let mut config = config_of(&row);
    config.insert(
        "volatile.last_state.idmap".into(),
        snap_config
            .get("volatile.last_state.idmap")
            .cloned()
            .unwrap_or_else(|| "[]".into()),
    );
    if let Err(e) = save_config(d, instance, &config).await {
        let (rootfs, old) = (rootfs.clone(), old.clone());
        tokio::task::spawn_blocking(move || {
            let _ = rxd_image::remove::remove_tree(&rootfs);
            let _ = std::fs::rename(&old, &rootfs);
        })
        .await?;
        return Err(e);
    }
    tokio::task::spawn_blocking(move || rxd_image::remove::remove_tree(old))
        .await?
        .map_err(ApiError::internal)?;
    tracing::info!(instance = %instance, snapshot = %snap.name, "snapshot restored");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_take_the_first_free_number() {
        let row = |n: &str| SnapshotRow {
            project: "default".into(),
            instance: "c1".into(),
            name: n.into(),
            config: "{}".into(),
            created_at: 0,
            expires_at: 0,
        };
        assert_eq!(next_name(&[]), "snap0");
        assert_eq!(next_name(&[row("snap0"), row("snap2")]), "snap1");
    }
}
