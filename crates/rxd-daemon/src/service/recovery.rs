//! Start-up recovery: what a daemon killed at any moment left half-made is finished or undone
//! before the first request is served, so the API never lists an instance, snapshot or image
//! it cannot use, and nothing on disk is left that no row owns.
//!
//! Order: unfinished creates are undone; running containers are adopted; each recorded
//! [`Intent`] is finished or undone by its rule; then whatever remains on disk without a row
//! (directories moved aside, staging copies, files of images whose rows went) is removed. What
//! was done is logged and recorded as one `/1.0/warnings` entry.

use crate::service::instances::{self, Keyed};
use crate::service::intent::Intent;
use crate::service::{images, layout, snapshots};
use crate::state::Daemon;
use rxd_core::name::InstanceKey;
use rxd_store::InstanceRow;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// What recovery did, for the log and the warning.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn note(&mut self, line: String) {
        tracing::warn!("start-up recovery: {line}");
        self.0.push(line);
    }
}

pub async fn recover(d: &Arc<Daemon>) {
    let mut report = Report::default();
    undo_creates(d, &mut report).await;
    let rows = match d.db(|s| s.all_instances()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "could not list instances to recover");
            return;
        }
    };
    let names: Vec<String> = rows.iter().map(|r| r.key().to_string()).collect();
    d.runtime.recover(&names).await;
    match d.db(|s| s.intents()).await {
        Ok(intents) => {
            for row in intents {
                match serde_json::from_str::<Intent>(&row.detail) {
                    Ok(intent) => match resolve(d, &intent).await {
                        Ok(line) => report.note(line),
                        Err(e) => {
                            // Left recorded: the next start tries again.
                            tracing::error!(kind = %row.kind, error = %e, "could not recover an interrupted operation");
                            continue;
                        }
                    },
                    Err(e) => {
                        tracing::error!(kind = %row.kind, detail = %row.detail, error = %e, "an intent this rxd cannot read; dropped");
                    }
                }
                let id = row.id;
                if let Err(e) = d.db(move |s| s.end_intent(id)).await {
                    tracing::error!(error = %e, "could not end a recovered intent");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "could not list intents"),
    }
    sweep(d, &mut report).await;
    crate::service::volumes::sweep(d).await;
    crate::service::backups::sweep(d).await;
    if !report.0.is_empty() {
        let message = format!(
            "rxd was stopped in the middle of work and, at start-up: {}",
            report.0.join("; ")
        );
        crate::sync::lock(&d.warnings).record(rxd_core::warnings::WarningKind::Recovered, message);
    }
}

/// Rows of creates a kill interrupted: removed with their files (see
/// `instances::create_unfinished`).
async fn undo_creates(d: &Arc<Daemon>, report: &mut Report) {
    let rows = match d.db(|s| s.all_instances()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "could not list instances to recover");
            return;
        }
    };
    for row in rows.into_iter().filter(instances::create_unfinished) {
        // Its snapshots' directory too: a copy places the snapshots it brings before it is
        // finished.
        let mut removed = Ok(());
        for dir in layout::instance_dirs(d, &row.pool, &row.key()) {
            if removed.is_ok() {
                removed = remove(dir).await;
            }
        }
        if let Err(e) = removed {
            tracing::error!(instance = %row.name, project = %row.project, error = %e, "cannot remove an unfinished instance's files; its record stays");
            continue;
        }
        let (p, n) = (row.project.clone(), row.name.clone());
        match d.db(move |s| s.delete_instance(&p, &n)).await {
            Ok(()) => report.note(format!(
                "undid the unfinished create of instance {}/{}; create it again",
                row.project, row.name
            )),
            Err(e) => {
                tracing::error!(instance = %row.name, project = %row.project, error = %e, "cannot remove an unfinished instance's record")
            }
        }
    }
}

/// Remove a tree (or a file) that may be absent.
async fn remove(path: std::path::PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || match crate::service::layout::remove_tree(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The pool an instance lives in, if its row is there (under either name, for a rename); else
/// every pool (a finished delete took the row).
async fn pools_of(d: &Daemon, project: &str, names: &[&str]) -> Vec<String> {
    for name in names {
        if let Some(row) = instance_row(d, project, name).await {
            return vec![row.pool];
        }
    }
    d.pools.all().iter().map(|p| p.name().to_owned()).collect()
}

async fn instance_row(d: &Daemon, project: &str, name: &str) -> Option<InstanceRow> {
    let (p, n) = (project.to_owned(), name.to_owned());
    d.db(move |s| s.instance(&p, &n)).await.ok()
}

async fn snapshot_exists(d: &Daemon, project: &str, instance: &str, snap: &str) -> bool {
    let (p, i, n) = (project.to_owned(), instance.to_owned(), snap.to_owned());
    d.db(move |s| s.snapshot(&p, &i, &n)).await.is_ok()
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Finish or undo one interrupted operation; says which.
async fn resolve(d: &Arc<Daemon>, intent: &Intent) -> std::io::Result<String> {
    Ok(match intent {
        Intent::InstanceDelete { project, name } => {
            let key = InstanceKey::new(project, name);
            for pool in pools_of(d, project, &[name]).await {
                for dir in layout::instance_dirs(d, &pool, &key) {
                    remove(dir).await?;
                }
            }
            if instance_row(d, project, name).await.is_some() {
                let (p, n) = (project.clone(), name.clone());
                d.db(move |s| s.delete_instance(&p, &n)).await.map_err(io)?;
            }
            d.runtime.remove_logs(&key);
            format!("finished deleting instance {project}/{name}")
        }
        Intent::InstanceRename { project, from, to } => {
            let (old, new) = (
                InstanceKey::new(project, from),
                InstanceKey::new(project, to),
            );
            let pool = pools_of(d, project, &[to, from])
                .await
                .into_iter()
                .next()
                .unwrap_or_default();
            if instance_row(d, project, to).await.is_some() {
                layout::move_instance(d, &pool, &old, &new)?;
                d.runtime.rename_logs(&old, &new);
                format!("finished renaming instance {project}/{from} to {to}")
            } else {
                layout::move_instance(d, &pool, &new, &old)?;
                format!("undid renaming instance {project}/{from} to {to}; rename it again")
            }
        }
        Intent::SnapshotCreate {
            project,
            instance,
            snapshot,
            froze,
        } => {
            let key = InstanceKey::new(project, instance);
            let mut line = if snapshot_exists(d, project, instance, snapshot).await {
                format!("kept snapshot {project}/{instance}/{snapshot}, taken in full")
            } else {
                for pool in pools_of(d, project, &[instance]).await {
                    remove(layout::snapshots_dir(d, &pool, &key).join(snapshot)).await?;
                }
                format!(
                    "undid the unfinished snapshot {project}/{instance}/{snapshot}; take it again"
                )
            };
            if *froze && d.runtime.init(&key).is_some() && d.runtime.frozen(&key) {
                d.runtime.freeze(&key, false).await.map_err(io)?;
                line.push_str(" (the instance, frozen for it, was thawed)");
            }
            line
        }
        Intent::InstanceProjectMove {
            from_project,
            to_project,
            from,
            to,
        } => {
            let (old, new) = (
                InstanceKey::new(from_project, from),
                InstanceKey::new(to_project, to),
            );
            // Moved iff the source row is gone (a row of that name in the target may be
            // another instance).
            let moved = instance_row(d, from_project, from).await.is_none()
                && instance_row(d, to_project, to).await.is_some();
            let pool = if moved {
                pools_of(d, to_project, &[to]).await
            } else {
                pools_of(d, from_project, &[from]).await
            }
            .into_iter()
            .next()
            .unwrap_or_default();
            if moved {
                layout::move_instance(d, &pool, &old, &new)?;
                d.runtime.rename_logs(&old, &new);
                format!("finished moving instance {from_project}/{from} to {to_project}/{to}")
            } else {
                layout::move_instance(d, &pool, &new, &old)?;
                format!("undid moving instance {from_project}/{from} to {to_project}/{to}; move it again")
            }
        }
        Intent::VolumeRename {
            pool,
            project,
            volume,
            from,
            to,
        } => {
            let Some(p) = d.pools.get(pool) else {
                return Err(std::io::Error::other(format!(
                    "storage pool {pool} is not mounted"
                )));
            };
            let key = |n: &str| rxd_core::name::instance_key(project, n);
            let (pool2, project2) = (pool.clone(), project.clone());
            let (volume2, to2) = (volume.clone(), to.clone());
            let renamed = d
                .db(move |s| match &volume2 {
                    Some(v) => s
                        .storage_volume_snapshot(&pool2, &project2, v, &to2)
                        .map(drop),
                    None => s.storage_volume(&pool2, &project2, &to2).map(drop),
                })
                .await
                .is_ok();
            let moves: Vec<(std::path::PathBuf, std::path::PathBuf)> = match volume {
                Some(v) => {
                    let dir = p.mount_point().join("custom-snapshots").join(key(v));
                    vec![(dir.join(from), dir.join(to))]
                }
                None => ["custom", "custom-snapshots"]
                    .iter()
                    .map(|top| {
                        let dir = p.mount_point().join(top);
                        (dir.join(key(from)), dir.join(key(to)))
                    })
                    .collect(),
            };
            let what = match volume {
                Some(v) => format!("snapshot {v}/{from} of storage volume"),
                None => format!("storage volume {from}"),
            };
            if renamed {
                for (a, b) in &moves {
                    layout::move_once(a, b)?;
                }
                format!("finished renaming {what} to {to} in pool {pool}")
            } else {
                for (a, b) in &moves {
                    layout::move_once(b, a)?;
                }
                format!("undid renaming {what} to {to} in pool {pool}; rename it again")
            }
        }
        Intent::SnapshotRename {
            project,
            instance,
            from,
            to,
        } => {
            let pool = pools_of(d, project, &[instance])
                .await
                .into_iter()
                .next()
                .unwrap_or_default();
            let dir = layout::snapshots_dir(d, &pool, &InstanceKey::new(project, instance));
            if snapshot_exists(d, project, instance, to).await {
                layout::move_once(&dir.join(from), &dir.join(to))?;
                format!("finished renaming snapshot {project}/{instance}/{from} to {to}")
            } else {
                layout::move_once(&dir.join(to), &dir.join(from))?;
                format!(
                    "undid renaming snapshot {project}/{instance}/{from} to {to}; rename it again"
                )
            }
        }
        Intent::SnapshotDelete {
            project,
            instance,
            snapshot,
        } => {
            let key = InstanceKey::new(project, instance);
            for pool in pools_of(d, project, &[instance]).await {
                remove(layout::snapshots_dir(d, &pool, &key).join(snapshot)).await?;
            }
            if snapshot_exists(d, project, instance, snapshot).await {
                let (p, i, n) = (project.clone(), instance.clone(), snapshot.clone());
                d.db(move |s| s.delete_snapshot(&p, &i, &n))
                    .await
                    .map_err(io)?;
            }
            format!("finished deleting snapshot {project}/{instance}/{snapshot}")
        }
        Intent::SnapshotRestore {
            project,
            instance,
            snapshot,
            staged,
            inode,
            marker,
            idmap,
        } => {
            let key = InstanceKey::new(project, instance);
            let pool = pools_of(d, project, &[instance])
                .await
                .into_iter()
                .next()
                .unwrap_or_default();
            let dir = layout::instance_dir(d, &pool, &key);
            let rootfs = dir.join("rootfs");
            let swapped = if marker.is_empty() {
                std::fs::symlink_metadata(&rootfs)
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?
                    == *inode
            } else {
                snapshots::has_restore_mark(&rootfs, marker)
            };
            let _ = rustix::fs::lremovexattr(&rootfs, snapshots::RESTORE_MARK);
            let line = if swapped {
                snapshots::record_idmap(d, &key, idmap).await.map_err(io)?;
                format!("finished restoring instance {project}/{instance} from snapshot {snapshot}")
            } else {
                format!("undid restoring instance {project}/{instance} from snapshot {snapshot}; restore it again")
            };
            remove(dir.join(staged)).await?;
            if d.runtime.init(&key).is_none() {
                format!("{line} (the instance is stopped)")
            } else {
                line
            }
        }
    })
}

/// Pools a killed create or delete left without a row: unmounted (their loop files freed)
/// and removed.
async fn sweep_pools(d: &Arc<Daemon>, removed: &mut Vec<std::path::PathBuf>) {
    let rows: BTreeSet<String> = match d.db(|s| s.storage_pools()).await {
        Ok(rows) => rows.into_iter().map(|r| r.name).collect(),
        Err(_) => return,
    };
    let pools_dir = layout::pools_dir(d);
    let disks = d.dir.join("disks");
    let mut orphans: BTreeSet<String> = entries(&pools_dir)
        .into_iter()
        .filter(|n| !rows.contains(n))
        .collect();
    orphans.extend(
        entries(&disks)
            .into_iter()
            .filter_map(|f| f.strip_suffix(".img").map(str::to_owned))
            .filter(|n| !rows.contains(n)),
    );
    for name in orphans {
        let (state, disk) = (d.dir.clone(), disks.join(format!("{name}.img")));
        let gone = tokio::task::spawn_blocking(move || {
            let mount_point = state.join("storage-pools").join(&name);
            let (kind, source) = if disk.exists() {
                (rxd_storage::DriverKind::Btrfs, disk)
            } else {
                // A pool on a host directory is a bind mount there: taken off first (its
                // source is not known any more, and is never touched).
                if is_mount_point(&mount_point) {
                    let _ = std::process::Command::new("/usr/bin/umount")
                        .arg(&mount_point)
                        .env_clear()
                        .status();
                }
                (
                    rxd_storage::DriverKind::Dir,
                    state.join("storage-pools").join(&name),
                )
            };
            let config = [("source".to_owned(), source.display().to_string())].into();
            rxd_storage::Pool::open(&state, &name, kind, config)
                .and_then(|pool| remove_pool_files(&pool))
                .map(|()| name)
        })
        .await;
        match gone {
            Ok(Ok(name)) => removed.push(layout::pool_dir(d, &name)),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot remove a storage pool no row owns"),
            Err(e) => tracing::error!(error = %e, "cannot remove a storage pool no row owns"),
        }
    }
}

/// Whether something is mounted on `path` (a bind mount of the same filesystem included).
fn is_mount_point(path: &Path) -> bool {
    let Some(path) = path.to_str() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|info| {
        info.lines()
            .any(|l| l.split_whitespace().nth(4) == Some(path))
    })
}

/// A pool's volumes and the pool (mounted first, so its image volumes are seen and go).
fn remove_pool_files(pool: &rxd_storage::Pool) -> Result<(), rxd_storage::StorageError> {
    let _ = pool.mount();
    crate::service::pools::remove_pool(pool)
}

/// Names in `dir` (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Remove what is on disk without a row: work in progress a kill interrupted (hidden names),
/// and anything an instance, snapshot or image row does not own.
async fn sweep(d: &Arc<Daemon>, report: &mut Report) {
    let (rows, snaps, fingerprints) = match d
        .db(|s| {
            let rows = s.all_instances()?;
            let mut snaps = BTreeSet::new();
            for r in &rows {
                for snap in s.snapshots(&r.project, &r.name)? {
                    snaps.insert((r.key().to_string(), snap.name));
                }
            }
            Ok((rows, snaps, s.image_fingerprints()?))
        })
        .await
    {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "could not list what exists; nothing swept");
            return;
        }
    };
    let mut removed = Vec::new();
    for pool in d.pools.all() {
        let keys: BTreeSet<String> = rows
            .iter()
            .filter(|r| r.pool == pool.name())
            .map(|r| r.key().to_string())
            .collect();
        let containers = pool.mount_point().join("containers");
        for name in entries(&containers) {
            if !keys.contains(&name) {
                removed.push(containers.join(name));
            } else {
                for inner in entries(&containers.join(&name)) {
                    if layout::in_progress(&inner) {
                        removed.push(containers.join(&name).join(inner));
                    }
                }
            }
        }
        let snapshots = pool.mount_point().join("containers-snapshots");
        for name in entries(&snapshots) {
            if !keys.contains(&name) {
                removed.push(snapshots.join(name));
                continue;
            }
            for snap in entries(&snapshots.join(&name)) {
                if !snaps.contains(&(name.clone(), snap.clone())) {
                    removed.push(snapshots.join(&name).join(snap));
                }
            }
        }
        // Image volumes of images no project holds, and half-made ones.
        let images = pool.mount_point().join("images");
        for name in entries(&images) {
            if !fingerprints.contains(&name) {
                removed.push(images.join(name));
            }
        }
    }
    sweep_pools(d, &mut removed).await;
    let images_dir = images::images_dir(d);
    let owned: BTreeSet<String> = fingerprints
        .iter()
        .flat_map(|fp| {
            let unpacked = images::unpacked_dir(d, fp);
            let unpacked = unpacked
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let rootfs = images::rootfs_path(d, fp)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            [Some(fp.clone()), unpacked, rootfs].into_iter().flatten()
        })
        .collect();
    for name in entries(&images_dir) {
        if !owned.contains(&name) {
            removed.push(images_dir.join(name));
        }
    }
    let mut gone = Vec::new();
    for path in removed {
        let shown = path
            .strip_prefix(&d.dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        match remove(path).await {
            Ok(()) => {
                tracing::info!(path = %shown, "removed what no instance, snapshot or image owns");
                gone.push(shown);
            }
            Err(e) => {
                tracing::error!(path = %shown, error = %e, "cannot remove what no row owns")
            }
        }
    }
    if !gone.is_empty() {
        const SHOWN: usize = 8;
        let more = gone.len().saturating_sub(SHOWN);
        gone.truncate(SHOWN);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        report.note(format!(
            "removed what no instance, snapshot or image owns: {}{more}",
            gone.join(", ")
        ));
    }
    let keys: BTreeSet<String> = rows.iter().map(|r| r.key().to_string()).collect();
    for name in d.runtime.on_disk() {
        if keys.contains(&name) {
            continue;
        }
        d.runtime.recover(std::slice::from_ref(&name)).await;
        if d.runtime.init(&name).is_some() {
            tracing::error!(instance = %name, "a container runs that no instance owns; left running");
            report.note(format!("found container {name} running with no instance; it was left running, stop it by hand"));
            continue;
        }
        d.runtime.remove_logs(&name);
        report.note(format!(
            "removed runtime state of {name}, which no instance owns"
        ));
    }
}

/// Proxy forwarders outlive the daemon; start again those of running containers that ended
/// while it was away (each container's in turn, none holding up the others' or the API).
pub async fn restart_proxies(d: std::sync::Arc<Daemon>) {
    let rows = match d.db(|s| s.all_instances()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "could not list instances to restart their proxies");
            return;
        }
    };
    let starts = rows.into_iter().map(|row| {
        let d = d.clone();
        async move {
            let key = row.key().to_string();
            if d.runtime.init(&key).is_none() {
                return;
            }
            let lock = d.runtime.action_lock(&key);
            let _guard = lock.lock().await;
            let Ok(e) = crate::service::expand::expanded(&d, &row).await else {
                return;
            };
            let idmap = crate::service::instances::running_idmap(
                &crate::service::instances::config_of(&row),
            );
            if let Err(e) = crate::service::devices::start_proxies(&d, &key, idmap, &e.devices).await {
                tracing::error!(instance = %row.name, project = %row.project, error = %e, "could not restart a proxy forwarder");
            }
        }
    });
    futures_util::future::join_all(starts).await;
}
