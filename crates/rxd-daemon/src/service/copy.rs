//! `POST /1.0/instances` with a `copy` source (`lxc copy c1 c2`, `lxc copy c1/snap0 c2`), on
//! this server: the source's root filesystem (frozen while it is read, if it runs) and, unless
//! the copy is of a snapshot or `instance_only`, its snapshots, with their configs.
//!
//! The new instance and every snapshot it brings pass [`instances::confine`] for the target
//! project (a snapshot's config is live again once restored). The copy keeps the source's
//! owners on disk and records them as its last map; its own map, allocated here as for a new
//! instance, is applied at its first start, as after an `security.idmap.isolated` change.
//! Until then its directory is host root's alone (0700), so the source container cannot reach
//! the copy through its own ids.
//!
//! The row is recorded first with an empty config and the config stored last, as a create is:
//! a daemon killed in between leaves an unfinished create, which recovery removes with its
//! files and snapshots.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::expand;
use crate::service::images::UnpackBudget;
use crate::service::instances::{self, confine, idmap_want, set_next_idmap, Keyed};
use crate::service::layout;
use crate::service::snapshots;
use crate::state::Daemon;
use rxd_store::{InstanceRow, SnapshotRow};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

/// What is copied: an instance, or one of its snapshots, in `project`.
pub struct Source {
    pub project: String,
    pub instance: String,
    pub snapshot: Option<String>,
    /// Leave the snapshots behind.
    pub instance_only: bool,
}

/// LXD's filter on a copied config: no `volatile.*` key but the base image (MACs, the id maps
/// and the last power state are the source's own); the source's map on disk is recorded
/// separately.
pub fn copied_config(source: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    source
        .iter()
        .filter(|(k, _)| !k.starts_with("volatile.") || *k == "volatile.base_image")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A snapshot's config as the copy keeps it: as taken (its map on disk is what a restore
/// undoes), less the source's MAC addresses, which the copy must not share.
fn snapshot_config(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    config
        .iter()
        .filter(|(k, _)| !(k.starts_with("volatile.") && k.ends_with(".hwaddr")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn parse(config: &str) -> BTreeMap<String, String> {
    serde_json::from_str(config).unwrap_or_default()
}

/// The source instance row, found where the caller may see it and read its files.
pub async fn source_row(d: &Daemon, caller: &Caller, source: &Source) -> ApiResult<InstanceRow> {
    if !caller.can_view(&source.project) {
        return Err(ApiError::NotFound("Instance not found".into()));
    }
    // Reading a whole root filesystem is what `operate-containers` allows (files, exec).
    if !caller.rights.has(
        &source.project,
        rxd_auth::permission::Permission::OperateContainers,
    ) {
        return Err(ApiError::NotAuthorized);
    }
    instances::find(d, &source.project, &source.instance).await
}

/// Copy `source` as the new instance `row` (its profiles and own devices filled in), with
/// `config` its own config (already filtered and overridden by the request).
pub async fn copy(
    d: &Arc<Daemon>,
    mut row: InstanceRow,
    mut config: BTreeMap<String, String>,
    source: Source,
    hostids: crate::hostids::HostIds,
    caller: &Caller,
) -> ApiResult<()> {
    let src = source_row(d, caller, &source).await?;
    // The source stays as it is (no start, stop, rename, delete or restore) while it is read.
    let lock = d.runtime.action_lock(&src.key());
    let _source_guard = lock.lock().await;
    let (disk_map, from_snapshot) = match &source.snapshot {
        Some(snap) => {
            let s = snapshots::find_snapshot(d, &src, snap).await?;
            (
                parse(&s.config).get("volatile.last_state.idmap").cloned(),
                true,
            )
        }
        None => (
            instances::config_of(&src)
                .get("volatile.last_state.idmap")
                .cloned(),
            false,
        ),
    };
    let brought: Vec<SnapshotRow> = if from_snapshot || source.instance_only {
        Vec::new()
    } else {
        let (p, n) = (src.project.clone(), src.name.clone());
        d.db(move |s| s.snapshots(&p, &n)).await?
    };

    // The new instance and each snapshot it brings, as the target project allows them.
    let profiles_guard = d.profiles_lock.read().await;
    let known = expand::known(d, &row.project).await?;
    expand::check_list(&known, &row.profiles)?;
    let expanded = expand::expand_with(
        &known,
        &row.profiles,
        &config,
        &expand::devices_of(&row.devices),
    );
    expand::check_devices(&expanded.devices)?;
    confine(
        d,
        caller,
        &row.project,
        &row.name,
        &expanded.config,
        &expanded.devices,
    )
    .await?;
    if !brought.is_empty() {
        if let Some(p) = d.project(&row.project) {
            rxd_auth::confinement::check_snapshot(&row.project, &p.config)?;
        }
    }
    for snap in &brought {
        expand::check_list(&known, &snap.profiles)
            .map_err(|e| ApiError::BadRequest(format!("Snapshot {:?}: {e}", snap.name)))?;
        let e = expand::expand_with(
            &known,
            &snap.profiles,
            &parse(&snap.config),
            &expand::devices_of(&snap.devices),
        );
        confine(d, caller, &row.project, &row.name, &e.config, &e.devices)
            .await
            .map_err(|e| prefix_snapshot(&snap.name, e))?;
    }
    let project = row.project.clone();
    let existing = d.db(move |s| s.instances(&project)).await?.len() as u64;
    if let Some(p) = d.project(&row.project) {
        rxd_auth::confinement::check_count(&row.project, &p.config, existing)?;
    }
    let want = idmap_want(&expanded.config)?;
    let budget = UnpackBudget::of(d, &row.project).await?;
    let size = {
        let (p, n) = (src.project.clone(), src.name.clone());
        d.db(move |s| s.rootfs_size(&p, &n)).await?
    };
    budget.check_known(u64::try_from(size).unwrap_or(0))?;

    row.architecture = src.architecture.clone();
    // The pool the copy's root disk names (else `default`); it stays until the row is
    // recorded.
    let pool_guard = d.pools.lifecycle.read().await;
    let pool = crate::service::pools::pool_for(d, &expanded.devices)?;
    crate::service::pools::check_size(&pool, crate::service::pools::root_size(&expanded.devices))?;
    row.pool = pool.name().to_owned();
    let map = instances::record_unfinished(d, caller, &row, want, &hostids).await?;
    drop(pool_guard);
    drop(profiles_guard);
    crate::failpoint::hit("instance-copy:row-recorded");
    set_next_idmap(&mut config, map);
    // The files keep the source's owners until the first start applies the new map.
    config.insert(
        "volatile.last_state.idmap".into(),
        disk_map.unwrap_or_else(|| "[]".into()),
    );
    config.insert("volatile.apply_template".into(), "copy".into());
    crate::service::nics::fill_macs(&expanded.devices, &mut config);
    // A btrfs snapshot brings its source's quota along: the copy's own is set at its start.
    config.insert("volatile.rootfs.quota".into(), "reapply".into());

    // Its size becomes a quota at its first start.
    let placed = place(d, &src, &source, &row, &brought).await;
    let saved = match placed {
        Ok(()) => {
            crate::failpoint::hit("instance-copy:placed");
            let stored = serde_json::to_string(&config).unwrap_or_else(|_| "{}".into());
            let (p, n) = (row.project.clone(), row.name.clone());
            let base = config
                .get("volatile.base_image")
                .cloned()
                .unwrap_or_default();
            let now = crate::sync::now_unix();
            d.db(move |s| s.finish_create(&p, &n, &stored, size, &base, now))
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = saved {
        instances::undo_unfinished(d, &row).await;
        return Err(e);
    }
    tracing::info!(
        instance = %row.name,
        project = %row.project,
        from = %format!("{}/{}", src.project, src.name),
        snapshot = source.snapshot.as_deref().unwrap_or(""),
        snapshots = brought.len(),
        by = %caller.identity.user_name(),
        "instance copied"
    );
    d.events.lifecycle(
        "instance-created",
        &format!("/1.0/instances/{}", row.name),
        &row.project,
        caller,
    );
    Ok(())
}

fn prefix_snapshot(name: &str, e: ApiError) -> ApiError {
    match e {
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("Snapshot {name:?}: {m}")),
        ApiError::Forbidden(m) => ApiError::Forbidden(format!("Snapshot {name:?}: {m}")),
        other => other,
    }
}

/// The copy's files: its root filesystem (the source's, frozen while read if it runs, or a
/// snapshot's) and the snapshots it brings, each by way of a hidden directory renamed into
/// place, and their rows.
async fn place(
    d: &Arc<Daemon>,
    src: &InstanceRow,
    source: &Source,
    row: &InstanceRow,
    brought: &[SnapshotRow],
) -> ApiResult<()> {
    let src_key = src.key();
    let pool = crate::service::pools::get(d, &row.pool)?;
    let dest = layout::instance_dir(d, &row.pool, &row.key());
    let containers = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    let temp = containers.join(format!(".copy-{}", uuid::Uuid::new_v4().simple()));
    private_dir(&temp)?;
    let from = match &source.snapshot {
        Some(snap) => layout::snapshots_dir(d, &src.pool, &src_key)
            .join(snap)
            .join("rootfs"),
        None => layout::instance_dir(d, &src.pool, &src_key).join("rootfs"),
    };
    // No re-shift of the source's files while they are read.
    let read = d.runtime.rootfs_lock(&src_key);
    let _reading = read.read().await;
    let freeze = source.snapshot.is_none()
        && d.runtime.init(&src_key).is_some()
        && !d.runtime.frozen(&src_key);
    if freeze {
        if let Err(e) = d.runtime.freeze(&src_key, true).await {
            let _ = crate::service::layout::remove_tree(&temp);
            return Err(e.into());
        }
    }
    // Within one btrfs pool, a writable snapshot: instant at any size.
    let copied = snapshots::copy(pool.clone(), from, temp.join("rootfs"), false).await;
    if freeze {
        if let Err(e) = d.runtime.freeze(&src_key, false).await {
            tracing::error!(instance = %src.name, error = %e, "could not thaw after a copy");
        }
    }
    // The image's metadata and templates, which the first start's `copy` templates use.
    let src_dir = layout::instance_dir(d, &src.pool, &src_key);
    let copied = match copied {
        Ok(_) => {
            let (from, to) = (src_dir.clone(), temp.clone());
            tokio::task::spawn_blocking(move || layout::copy_image_extras(&from, &to))
                .await?
                .map_err(ApiError::internal)
        }
        Err(e) => Err(e),
    };
    let published =
        copied.and_then(|_| rxd_image::durable::publish(&temp, &dest).map_err(ApiError::internal));
    if let Err(e) = published {
        let _ = crate::service::layout::remove_tree(&temp);
        return Err(e);
    }
    if brought.is_empty() {
        return Ok(());
    }
    let snaps = layout::snapshots_dir(d, &row.pool, &row.key());
    private_dir(&snaps)?;
    for snap in brought {
        let temp = snaps.join(format!(".new-{}", uuid::Uuid::new_v4().simple()));
        private_dir(&temp)?;
        let from = layout::snapshots_dir(d, &src.pool, &src_key)
            .join(&snap.name)
            .join("rootfs");
        let filled = snapshots::copy(pool.clone(), from, temp.join("rootfs"), true)
            .await
            .map(drop);
        let copy = SnapshotRow {
            project: row.project.clone(),
            instance: row.name.clone(),
            config: serde_json::to_string(&snapshot_config(&parse(&snap.config)))
                .unwrap_or_else(|_| "{}".into()),
            ..snap.clone()
        };
        snapshots::publish_brought(d, filled, &temp, &snaps, copy).await?;
    }
    Ok(())
}

/// A directory only host root may enter (the copy's, until its first start sets its owner).
pub fn private_dir(path: &Path) -> ApiResult<()> {
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ApiError::internal(e)),
    }
    std::os::unix::fs::chown(path, Some(0), Some(0)).map_err(ApiError::internal)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_no_volatile_key_but_the_base_image() {
        let source: BTreeMap<String, String> = [
            ("limits.cpu", "1"),
            ("volatile.base_image", "abc"),
            ("volatile.eth0.hwaddr", "00:16:3e:00:00:01"),
            ("volatile.idmap.next", "[]"),
            ("volatile.last_state.power", "RUNNING"),
            ("volatile.uuid", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let copied = copied_config(&source);
        assert_eq!(
            copied.keys().collect::<Vec<_>>(),
            ["limits.cpu", "volatile.base_image"]
        );
        let snap = snapshot_config(&source);
        assert!(!snap.contains_key("volatile.eth0.hwaddr"));
        assert!(snap.contains_key("volatile.idmap.next"));
    }
}
