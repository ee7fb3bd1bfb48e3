//! Snapshots below HTTP: copies of an instance's root filesystem in
//! `$RXD_DIR/snapshots/<instance>/<snap>` (root-only, outside anything the container can reach),
//! taken with the container frozen so that each is one moment of it, plus its config at that
//! moment; and restoring one, with the id map its files are shifted to.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::operations::Op;
use crate::service::instances::{
    by_key, config_of, confine, find, save_config, start, stop, Keyed,
};
use crate::service::layout;
use crate::state::Daemon;
use crate::sync::now_unix;
use rxd_core::name::InstanceKey;
use rxd_store::SnapshotRow;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

pub const NOT_FOUND: &str = "Snapshot not found";

pub fn url(instance: &str, snap: &str) -> String {
    format!("/1.0/instances/{instance}/snapshots/{snap}")
}

pub fn valid_name(name: &str) -> ApiResult<()> {
    if rxd_core::name::valid_instance_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Invalid snapshot name {name:?}: letters, digits and dashes, starting with a letter"
        )))
    }
}

pub async fn find_snapshot(
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
pub async fn take(
    d: &Arc<Daemon>,
    instance: &InstanceKey,
    snap: &str,
    expires_at: i64,
) -> ApiResult<()> {
    let row = by_key(d, instance).await?;
    let dir = layout::snapshots_dir(d, instance);
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
        layout::instance_dir(d, instance).join("rootfs"),
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

/// `PUT /1.0/instances/<name>` with `restore`: put back the snapshot's files and the id map
/// they are shifted to. A running instance is stopped first and started again after.
pub async fn restore(
    d: &Arc<Daemon>,
    caller: &Caller,
    instance: &str,
    snap: &str,
) -> ApiResult<Arc<Op>> {
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
        crate::operations::resources([
            ("instances", vec![instance_url.to_string()]),
            (
                "instances_snapshots",
                vec![url(&row.name, snap).to_string()],
            ),
        ]),
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
    Ok(op)
}

async fn put_back(d: &Arc<Daemon>, instance: &InstanceKey, snap: &SnapshotRow) -> ApiResult<()> {
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

async fn swap_in(d: &Arc<Daemon>, instance: &InstanceKey, snap: &SnapshotRow) -> ApiResult<()> {
    // No host-side write into the tree while it is replaced.
    let _exclusive = d.runtime.rootfs_lock(instance).write_owned().await;
    let dir = layout::instance_dir(d, instance);
    let id = uuid::Uuid::new_v4().simple();
    let (fresh, old) = (
        dir.join(format!(".rootfs-restore-{id}")),
        dir.join(format!(".rootfs-old-{id}")),
    );
    copy(
        layout::snapshots_dir(d, instance)
            .join(&snap.name)
            .join("rootfs"),
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
