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
use crate::service::intent::{self, Intent};
use crate::service::layout;
pub use crate::service::snapshot_names::{default_expiry, next_name_among, valid_name};
use crate::state::Daemon;
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

/// The name a new snapshot gets when none is asked for, as LXD's `NextSnapshotName`: the
/// instance's `snapshots.pattern` (default `snap%d`) rendered at `now` (see
/// `rxd_core::schedule::render_pattern`), its `%d` one more than the highest index an existing
/// snapshot's name has there (so an expired `snap0` is not named again); without `%d`, a name
/// already taken gets `-0`, `-1`... the same way.
pub fn next_name(
    config: &BTreeMap<String, String>,
    taken: &[SnapshotRow],
    now: i64,
) -> ApiResult<String> {
    let names: Vec<&str> = taken.iter().map(|r| r.name.as_str()).collect();
    next_name_among(config, &names, now)
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
/// Publishes `temp`, a snapshot's tree as `filled` says it was filled, durably as
/// `<snaps_dir>/<row.name>`, then records `row`; on a failure `temp` is removed and nothing is
/// recorded. How copies, imports and migrations bring an instance's snapshots.
pub async fn publish_brought(
    d: &Daemon,
    filled: ApiResult<()>,
    temp: &std::path::Path,
    snaps_dir: &std::path::Path,
    row: SnapshotRow,
) -> ApiResult<()> {
    let placed = filled.and_then(|()| {
        rxd_image::durable::publish(temp, &snaps_dir.join(&row.name)).map_err(ApiError::internal)
    });
    if let Err(e) = placed {
        let _ = layout::remove_tree(temp);
        return Err(e);
    }
    d.db(move |s| s.create_snapshot(&row)).await
}

pub async fn copy(
    pool: Arc<rxd_storage::Pool>,
    from: PathBuf,
    to: PathBuf,
    readonly: bool,
) -> ApiResult<u64> {
    tokio::task::spawn_blocking(move || {
        crate::service::pools::clone_tree(&pool, &from, &to, readonly)
    })
    .await?
}

/// Take a snapshot of the instance with runtime key `instance`.
///
/// Steps: intent recorded; container frozen (if running); root filesystem copied into a hidden
/// directory; thawed; copy renamed into place; row recorded; intent ended. Recovery thaws the
/// container if the snapshot froze it and removes a snapshot directory without a row.
pub async fn take(
    d: &Arc<Daemon>,
    instance: &InstanceKey,
    snap: &str,
    created_at: i64,
    expires_at: i64,
) -> ApiResult<()> {
    let row = by_key(d, instance).await?;
    let pool = crate::service::pools::get(d, &row.pool)?;
    let dir = layout::snapshots_dir(d, &row.pool, instance);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(ApiError::internal)?;
    // One moment of a running container: its processes stay frozen while the copy is made.
    let freeze = d.runtime.init(instance).is_some() && !d.runtime.frozen(instance);
    let pending = intent::begin(
        d,
        &Intent::SnapshotCreate {
            project: row.project.clone(),
            instance: row.name.clone(),
            snapshot: snap.to_owned(),
            froze: freeze,
        },
    )
    .await?;
    let taken = copy_into_place(d, &row, pool, &dir, snap, freeze).await;
    crate::failpoint::hit("snapshot-create:placed");
    let recorded = match taken {
        Ok(()) => {
            let snap_row = SnapshotRow {
                project: row.project.clone(),
                instance: row.name.clone(),
                name: snap.into(),
                config: row.config.clone(),
                created_at,
                expires_at,
                profiles: row.profiles.clone(),
                devices: row.devices.clone(),
            };
            let recorded = d.db(move |s| s.create_snapshot(&snap_row)).await;
            if recorded.is_err() {
                let _ = crate::service::layout::remove_tree(dir.join(snap));
            }
            recorded
        }
        Err(e) => Err(e),
    };
    crate::failpoint::hit("snapshot-create:row-recorded");
    pending.end(d).await?;
    recorded
}

/// Copy the instance's root filesystem (frozen if `freeze`) to `dir/snap`, by way of a hidden
/// directory renamed into place once complete; nothing is left if it fails.
async fn copy_into_place(
    d: &Arc<Daemon>,
    row: &rxd_store::InstanceRow,
    pool: Arc<rxd_storage::Pool>,
    dir: &std::path::Path,
    snap: &str,
    freeze: bool,
) -> ApiResult<()> {
    let key = row.key();
    let instance = &key;
    let temp = dir.join(format!(".new-{}", uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&temp)
        .map_err(ApiError::internal)?;
    if freeze {
        if let Err(e) = d.runtime.freeze(instance, true).await {
            let _ = crate::service::layout::remove_tree(&temp);
            return Err(e.into());
        }
        crate::failpoint::hit("snapshot-create:frozen");
    }
    // On btrfs a read-only snapshot of the root filesystem's subvolume: instant at any size.
    let copied = copy(
        pool,
        layout::instance_dir(d, &row.pool, instance).join("rootfs"),
        temp.join("rootfs"),
        true,
    )
    .await;
    if freeze {
        if let Err(e) = d.runtime.freeze(instance, false).await {
            tracing::error!(instance = %instance, error = %e, "could not thaw after a snapshot");
        }
    }
    let placed = copied.and_then(|entries| {
        rxd_image::durable::publish(&temp, &dir.join(snap)).map_err(ApiError::internal)?;
        tracing::info!(instance = %instance, snapshot = %snap, entries, "snapshot taken");
        Ok(())
    });
    if placed.is_err() {
        let _ = crate::service::layout::remove_tree(&temp);
    }
    placed
}

/// Rename a snapshot (the instance's action lock held by the caller).
///
/// Steps: intent recorded; directory renamed; row renamed; intent ended. Recovery finishes it
/// if the row moved, else undoes it.
pub async fn rename(
    d: &Arc<Daemon>,
    row: &rxd_store::InstanceRow,
    snap: &str,
    new: &str,
) -> ApiResult<()> {
    // Files of a pool that is not mounted are not there to move.
    crate::service::pools::get(d, &row.pool)?;
    let dir = layout::snapshots_dir(d, &row.pool, &row.key());
    let (from, to) = (dir.join(snap), dir.join(new));
    let exists = || ApiError::Conflict(format!("Snapshot {new:?} already exists"));
    if to.exists() {
        return Err(exists());
    }
    let pending = intent::begin(
        d,
        &Intent::SnapshotRename {
            project: row.project.clone(),
            instance: row.name.clone(),
            from: snap.to_owned(),
            to: new.to_owned(),
        },
    )
    .await?;
    if let Err(e) = layout::move_once(&from, &to) {
        pending.end(d).await?;
        return Err(ApiError::internal(e));
    }
    crate::failpoint::hit("snapshot-rename:moved");
    let (p, i, old, n) = (
        row.project.clone(),
        row.name.clone(),
        snap.to_owned(),
        new.to_owned(),
    );
    if let Err(e) = d.db(move |s| s.rename_snapshot(&p, &i, &old, &n)).await {
        layout::move_once(&to, &from).map_err(ApiError::internal)?;
        pending.end(d).await?;
        return Err(match e {
            ApiError::Conflict(_) => exists(),
            other => other,
        });
    }
    crate::failpoint::hit("snapshot-rename:row-renamed");
    pending.end(d).await
}

/// Delete a snapshot (the instance's action lock held by the caller).
///
/// Steps: intent recorded; directory moved aside; row deleted; intent ended; directory removed.
/// Recovery finishes the delete.
pub async fn remove(d: &Arc<Daemon>, row: &rxd_store::InstanceRow, snap: &str) -> ApiResult<()> {
    let pending = intent::begin(
        d,
        &Intent::SnapshotDelete {
            project: row.project.clone(),
            instance: row.name.clone(),
            snapshot: snap.to_owned(),
        },
    )
    .await?;
    crate::service::pools::get(d, &row.pool)?;
    let path = layout::snapshots_dir(d, &row.pool, &row.key()).join(snap);
    let aside = match layout::move_aside(&[path]) {
        Ok(aside) => aside,
        Err(e) => {
            pending.end(d).await?;
            return Err(ApiError::internal(e));
        }
    };
    crate::failpoint::hit("snapshot-delete:moved-aside");
    let (p, i, n) = (row.project.clone(), row.name.clone(), snap.to_owned());
    if let Err(e) = d.db(move |s| s.delete_snapshot(&p, &i, &n)).await {
        aside.restore().map_err(ApiError::internal)?;
        pending.end(d).await?;
        return Err(e);
    }
    crate::failpoint::hit("snapshot-delete:row-deleted");
    pending.end(d).await?;
    let removed = tokio::task::spawn_blocking(move || aside.remove()).await?;
    if let Err(e) = removed {
        tracing::error!(instance = %row.name, snapshot = %snap, error = %e, "could not remove a deleted snapshot's files");
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
    let expanded = crate::service::expand::expanded(d, &row).await?;
    confine(
        d,
        caller,
        &row.project,
        &row.name,
        &expanded.config,
        &expanded.devices,
    )
    .await?;
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

/// Put the snapshot's files in place of the instance's root filesystem.
///
/// Steps: snapshot copied into a hidden directory; intent recorded (with that copy's inode);
/// the copy and the root filesystem exchanged in one `renameat2(RENAME_EXCHANGE)`; the map the
/// files now carry recorded; intent ended; the old tree removed. Recovery tells whether the
/// exchange happened from the root filesystem's inode, and finishes or undoes it.
async fn swap_in(d: &Arc<Daemon>, instance: &InstanceKey, snap: &SnapshotRow) -> ApiResult<()> {
    // No host-side write into the tree while it is replaced.
    let _exclusive = d.runtime.rootfs_lock(instance).write_owned().await;
    let row = by_key(d, instance).await?;
    let pool = crate::service::pools::get(d, &row.pool)?;
    let dir = layout::instance_dir(d, &row.pool, instance);
    let staged_name = format!(".rootfs-restore-{}", uuid::Uuid::new_v4().simple());
    let staged = dir.join(&staged_name);
    // On btrfs a writable snapshot of the snapshot: instant at any size.
    copy(
        pool,
        layout::snapshots_dir(d, &row.pool, instance)
            .join(&snap.name)
            .join("rootfs"),
        staged.clone(),
        false,
    )
    .await?;
    crate::failpoint::hit("snapshot-restore:copied");
    let drop_staged = |staged: PathBuf| async move {
        let _ =
            tokio::task::spawn_blocking(move || crate::service::layout::remove_tree(staged)).await;
    };
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let marked = std::fs::symlink_metadata(&staged).and_then(|m| {
        rustix::fs::lsetxattr(
            &staged,
            RESTORE_MARK,
            marker.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )?;
        Ok(m)
    });
    let inode = match marked {
        Ok(m) => std::os::unix::fs::MetadataExt::ino(&m),
        Err(e) => {
            drop_staged(staged).await;
            return Err(ApiError::internal(e));
        }
    };
    // The files now carry the snapshot's ids: that map is recorded with them, so the next
    // start re-shifts them to the instance's map if it differs.
    let snap_config: BTreeMap<String, String> =
        serde_json::from_str(&snap.config).unwrap_or_default();
    let idmap = snap_config
        .get("volatile.last_state.idmap")
        .cloned()
        .unwrap_or_else(|| "[]".into());
    let pending = match intent::begin(
        d,
        &Intent::SnapshotRestore {
            project: snap.project.clone(),
            instance: snap.instance.clone(),
            snapshot: snap.name.clone(),
            staged: staged_name,
            inode,
            marker,
            idmap: idmap.clone(),
        },
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            drop_staged(staged).await;
            return Err(e);
        }
    };
    let rootfs = dir.join("rootfs");
    if let Err(e) =
        rxd_image::durable::sync_tree(&staged).and_then(|()| layout::exchange(&staged, &rootfs))
    {
        drop_staged(staged).await;
        pending.end(d).await?;
        return Err(ApiError::internal(e));
    }
    crate::failpoint::hit("snapshot-restore:swapped");
    if let Err(e) = record_idmap(d, instance, &idmap).await {
        // Put the old tree back: its map is the one still recorded.
        layout::exchange(&staged, &rootfs).map_err(ApiError::internal)?;
        drop_staged(staged).await;
        pending.end(d).await?;
        return Err(e);
    }
    crate::failpoint::hit("snapshot-restore:recorded");
    pending.end(d).await?;
    let _ = rustix::fs::lremovexattr(&rootfs, RESTORE_MARK);
    drop_staged(staged).await;
    tracing::info!(instance = %instance, snapshot = %snap.name, "snapshot restored");
    Ok(())
}

/// The extended attribute a restore's copy carries until the restore is recorded: recovery
/// knows the exchange happened if the root filesystem has it.
pub const RESTORE_MARK: &str = "trusted.rxd.restore";

/// Whether `rootfs` carries `marker` (a restore's copy exchanged into place).
pub fn has_restore_mark(rootfs: &std::path::Path, marker: &str) -> bool {
    let mut buf = [0u8; 64];
    rustix::fs::lgetxattr(rootfs, RESTORE_MARK, &mut buf[..])
        .is_ok_and(|n| &buf[..n] == marker.as_bytes())
}

/// Record what the instance's restored files carry: the map (`volatile.last_state.idmap`), and
/// a quota that may be the snapshot's (a btrfs snapshot keeps its source's), set again at the
/// next start.
pub async fn record_idmap(d: &Daemon, instance: &InstanceKey, idmap: &str) -> ApiResult<()> {
    let row = by_key(d, instance).await?;
    let mut config = config_of(&row);
    config.insert("volatile.last_state.idmap".into(), idmap.to_owned());
    config.insert("volatile.rootfs.quota".into(), "reapply".into());
    save_config(d, instance, &config).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(names: &[&str]) -> Vec<SnapshotRow> {
        names
            .iter()
            .map(|n| SnapshotRow {
                project: "default".into(),
                instance: "c1".into(),
                name: (*n).into(),
                config: "{}".into(),
                created_at: 1,
                expires_at: 0,
                profiles: Vec::new(),
                devices: "{}".into(),
            })
            .collect()
    }

    #[test]
    fn names_follow_the_pattern() {
        let check = |pattern: Option<&str>, names: &[&str], want: &str| {
            let config: BTreeMap<String, String> = pattern
                .map(|p| ("snapshots.pattern".to_owned(), p.to_owned()))
                .into_iter()
                .collect();
            let got = next_name(&config, &taken(names), 1_796_415_425).unwrap();
            assert_eq!(got, want, "{pattern:?} {names:?}");
        };
        check(None, &[], "snap0");
        check(None, &["snap0", "snap1"], "snap2");
        // The highest index plus one, as LXD: an expired snap0 is not reused.
        check(None, &["snap3"], "snap4");
        check(None, &["snapx", "snap", "other7"], "snap0");
        // An index too large to count past is ignored (LXD's int scan fails on it).
        check(
            None,
            &[
                "snap9223372036854775807",
                "snap18446744073709551615",
                "snap2",
            ],
            "snap3",
        );
        check(Some("daily-%d"), &["snap5", "daily-1"], "daily-2");
        check(Some("backup"), &[], "backup");
        check(Some("backup"), &["backup"], "backup-0");
        check(Some("backup"), &["backup", "backup-0"], "backup-1");
        check(
            Some("{{ creation_date|date:'2006-01-02_15-04-05' }}"),
            &[],
            "2026-12-04_20-17-05",
        );
    }

    #[test]
    fn expiry_from_config() {
        let config = |v: &str| -> BTreeMap<String, String> {
            [("snapshots.expiry".to_owned(), v.to_owned())].into()
        };
        assert_eq!(default_expiry(&BTreeMap::new(), 1000), 0);
        assert_eq!(default_expiry(&config("2M"), 1000), 1120);
        assert_eq!(default_expiry(&config("1d 1H"), 0), 90_000);
    }
}
