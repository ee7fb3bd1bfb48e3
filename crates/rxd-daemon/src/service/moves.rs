//! Moving a stopped instance to another storage pool (`lxc move c1 -s POOL`, LXD's
//! `instance_pool_move`): its root filesystem and snapshots copied into the pool, the row
//! pointed there (its root disk naming the pool), the old files removed.
//!
//! Steps: files placed in the new pool (hidden names renamed into place); row updated (pool and
//! devices, one statement); old files moved aside and removed. A kill at any point leaves one
//! pool's files owned by the row and the other's owned by nothing, which recovery's sweep
//! removes: nothing is half-moved.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::instances::{confine, confine_moving, Keyed};
use crate::service::{expand, layout, pools};
use crate::state::Daemon;
use rxd_store::InstanceRow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Move the stopped instance `row` (its action lock held by the caller) to `pool`.
pub async fn to_pool(
    d: &Arc<Daemon>,
    caller: &Caller,
    row: &InstanceRow,
    pool: &str,
) -> ApiResult<()> {
    if d.runtime.init(&row.key()).is_some() {
        return Err(ApiError::BadRequest(
            "Instance must be stopped to be moved to another storage pool".into(),
        ));
    }
    let from = pools::get(d, &row.pool)?;
    let to = d
        .pools
        .get(pool)
        .ok_or_else(|| ApiError::NotFound(format!("Storage pool {pool:?} not found")))?;
    if row.pool == pool {
        return Err(ApiError::BadRequest(format!(
            "The instance is in storage pool {pool:?} already"
        )));
    }
    // Its own root disk names the new pool (the profile's, copied in, if it had none).
    let expanded = expand::expanded(d, row).await?;
    let mut devices = expand::devices_of(&row.devices);
    let (root_name, mut root) = expanded
        .devices
        .iter()
        .find(|(_, dev)| rxd_core::devices::is_root_disk(dev))
        .map(|(n, dev)| (n.clone(), dev.clone()))
        .unwrap_or_else(|| {
            (
                "root".to_owned(),
                BTreeMap::from([
                    ("type".to_owned(), "disk".to_owned()),
                    ("path".to_owned(), "/".to_owned()),
                ]),
            )
        });
    root.insert("pool".into(), pool.to_owned());
    devices.insert(root_name.clone(), root.clone());
    let mut after = expanded.devices.clone();
    after.insert(root_name, root);
    expand::check_devices(&after)?;
    confine(d, caller, &row.project, &row.name, &expanded.config, &after).await?;
    pools::check_size(&to, pools::root_size(&after))?;
    // No pool deleted under it while it moves.
    let _pools = d.pools.lifecycle.read().await;

    let key = row.key().to_string();
    let snaps = {
        let (p, n) = (row.project.clone(), row.name.clone());
        d.db(move |s| s.snapshots(&p, &n)).await?
    };
    let (src_dir, dest_dir) = (
        layout::instance_dir(d, &row.pool, &key),
        layout::instance_dir(d, pool, &key),
    );
    let (src_snaps, dest_snaps) = (
        layout::snapshots_dir(d, &row.pool, &key),
        layout::snapshots_dir(d, pool, &key),
    );
    let names: Vec<String> = snaps.iter().map(|s| s.name.clone()).collect();
    let target = to.clone();
    let placed = tokio::task::spawn_blocking(move || -> ApiResult<()> {
        place(&target, &src_dir, &dest_dir, false)?;
        if !names.is_empty() {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&dest_snaps)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .map_err(ApiError::internal)?;
        }
        for snap in &names {
            place(&target, &src_snaps.join(snap), &dest_snaps.join(snap), true)?;
        }
        Ok(())
    })
    .await?;
    if let Err(e) = placed {
        for dir in layout::instance_dirs(d, pool, &key) {
            let _ = layout::remove_tree(&dir);
        }
        return Err(e);
    }
    crate::failpoint::hit("instance-move:placed");
    let text = serde_json::to_string(&devices).map_err(ApiError::internal)?;
    let (p, n, to_name) = (row.project.clone(), row.name.clone(), pool.to_owned());
    if let Err(e) = d
        .db(move |s| s.set_instance_pool(&p, &n, &to_name, &text))
        .await
    {
        for dir in layout::instance_dirs(d, pool, &key) {
            let _ = layout::remove_tree(&dir);
        }
        return Err(e);
    }
    crate::failpoint::hit("instance-move:recorded");
    // The old files; the quota of the new root filesystem is set at the next start.
    let old = layout::instance_dirs(d, &row.pool, &key);
    drop(from);
    let removed = tokio::task::spawn_blocking(move || {
        layout::move_aside(&old).and_then(|aside| aside.remove())
    })
    .await?;
    if let Err(e) = removed {
        tracing::error!(instance = %row.name, error = %e, "the moved instance's old files were not removed; start-up removes them");
    }
    let (p, n) = (row.project.clone(), row.name.clone());
    let moved = crate::service::instances::by_key(d, &row.key()).await?;
    let mut config = crate::service::instances::config_of(&moved);
    config.insert("volatile.rootfs.quota".into(), "reapply".into());
    crate::service::instances::save_config(d, &row.key(), &config).await?;
    tracing::info!(project = %p, instance = %n, pool, "instance moved to another storage pool");
    Ok(())
}

/// One instance or snapshot directory `from` placed at `to` in `pool`: its root filesystem (a
/// snapshot within the pool is impossible here: another pool), metadata and templates, by way
/// of a hidden name renamed into place.
fn place(
    pool: &rxd_storage::Pool,
    from: &std::path::Path,
    to: &std::path::Path,
    readonly: bool,
) -> ApiResult<()> {
    let parent = to
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let temp = parent.join(format!(".new-{}", uuid::Uuid::new_v4().simple()));
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&temp)
        .map_err(ApiError::internal)?;
    let done = pools::clone_tree(pool, &from.join("rootfs"), &temp.join("rootfs"), false)
        .and_then(|_| layout::copy_image_extras(from, &temp).map_err(ApiError::internal))
        .and_then(|_| {
            if readonly {
                let _ = pool.set_readonly(&temp.join("rootfs"), true);
            }
            rxd_image::durable::publish(&temp, to).map_err(ApiError::internal)
        });
    if done.is_err() {
        let _ = layout::remove_tree(&temp);
    }
    done
}

/// Move the stopped instance `row` (its action lock held by the caller) to `project` as
/// `name` (`lxc move c1 --target-project q`, LXD's `instance_project_move`). The caller must
/// manage instances there too; the instance and every snapshot are confined as the target
/// project would confine them (LXD 5.0.2 checked only the permission), its profiles must exist
/// there by name, and an isolated instance gets its id block again within the target
/// project's share (its files are mapped or shifted at the next start). Its files stay in
/// their pool: a root disk the target's profiles would put elsewhere is overridden locally.
///
/// Steps: intent; directories moved to the new key; row moved (project, name, devices, and
/// id block and config in one transaction; snapshots, NIC reservations and backups follow);
/// logs moved; intent ended. Recovery finishes it if the row moved, else moves the files back.
pub async fn to_project(
    d: &Arc<Daemon>,
    caller: &Caller,
    row: &InstanceRow,
    project: &str,
    name: &str,
) -> ApiResult<()> {
    use crate::service::instances::{allocator, idmap_limit, idmap_want, map_for, set_next_idmap};
    use crate::service::intent::{self, Intent};
    caller
        .rights
        .require(project, rxd_auth::permission::Permission::ManageContainers)
        .map_err(|_| {
            if caller.can_view(project) {
                ApiError::Forbidden(format!(
                    "Moving an instance into project {project:?} needs manage-containers there"
                ))
            } else {
                ApiError::NotFound(crate::error::PROJECT_NOT_FOUND.into())
            }
        })?;
    let target = d
        .project(project)
        .ok_or_else(|| ApiError::NotFound(crate::error::PROJECT_NOT_FOUND.into()))?;
    if d.runtime.init(&row.key()).is_some() {
        return Err(ApiError::BadRequest(
            "Instance must be stopped to be moved to another project".into(),
        ));
    }
    if !rxd_core::name::valid_instance_name(name) {
        return Err(ApiError::BadRequest(format!(
            "Invalid instance name {name:?}"
        )));
    }
    if crate::service::instances::find(d, project, name)
        .await
        .is_ok()
    {
        return Err(ApiError::Conflict(format!(
            "An instance named {name:?} already exists in project {project:?}"
        )));
    }
    // What it wants of its ids where it is now: a change re-chooses them there.
    let before = idmap_want(&expand::expanded(d, row).await?.config)?;
    // Profiles, expansion and every check as in the target project.
    let _profiles = d.profiles_lock.read().await;
    let known = expand::known(d, project).await?;
    expand::check_list(&known, &row.profiles)
        .map_err(|e| ApiError::BadRequest(format!("Its profiles in project {project:?}: {e}")))?;
    let config = crate::service::instances::config_of(row);
    let mut devices = expand::devices_of(&row.devices);
    let mut expanded = expand::expand_with(&known, &row.profiles, &config, &devices);
    let root = expanded
        .devices
        .iter()
        .find(|(_, dev)| rxd_core::devices::is_root_disk(dev))
        .map(|(n, dev)| (n.clone(), dev.clone()));
    let (root_name, mut root) = root.unwrap_or_else(|| {
        (
            "root".to_owned(),
            BTreeMap::from([
                ("type".to_owned(), "disk".to_owned()),
                ("path".to_owned(), "/".to_owned()),
            ]),
        )
    });
    if root.get("pool") != Some(&row.pool) {
        root.insert("pool".into(), row.pool.clone());
        devices.insert(root_name, root);
        expanded = expand::expand_with(&known, &row.profiles, &config, &devices);
    }
    expand::check_devices(&expanded.devices)?;
    let from = Some((row.project.as_str(), row.name.as_str()));
    confine_moving(
        d,
        caller,
        project,
        name,
        from,
        &expanded.config,
        &expanded.devices,
    )
    .await?;
    let snaps = {
        let (p, n) = (row.project.clone(), row.name.clone());
        d.db(move |s| s.snapshots(&p, &n)).await?
    };
    if !snaps.is_empty() {
        rxd_auth::confinement::check_snapshot(project, &target.config)?;
    }
    for snap in &snaps {
        let snap_config: BTreeMap<String, String> =
            serde_json::from_str(&snap.config).unwrap_or_default();
        expand::check_list(&known, &snap.profiles)
            .map_err(|e| ApiError::BadRequest(format!("Snapshot {:?}: {e}", snap.name)))?;
        let e = expand::expand_with(
            &known,
            &snap.profiles,
            &snap_config,
            &expand::devices_of(&snap.devices),
        );
        confine_moving(d, caller, project, name, from, &e.config, &e.devices)
            .await
            .map_err(|e| match e {
                ApiError::Forbidden(m) => {
                    ApiError::Forbidden(format!("Snapshot {:?}: {m}", snap.name))
                }
                ApiError::BadRequest(m) => {
                    ApiError::BadRequest(format!("Snapshot {:?}: {m}", snap.name))
                }
                other => other,
            })?;
    }
    let existing = {
        let p = project.to_owned();
        d.db(move |s| s.instances(&p)).await?.len() as u64
    };
    rxd_auth::confinement::check_count(project, &target.config, existing)?;
    // Checked again with the move (a create or another move may race this one).
    let max = rxd_auth::confinement::instance_limit(&target.config);
    // Its files count against the target's limits.disk.
    let size = {
        let (p, n) = (row.project.clone(), row.name.clone());
        d.db(move |s| s.rootfs_size(&p, &n)).await?
    };
    crate::service::images::UnpackBudget::of(d, project)
        .await?
        .check_known(u64::try_from(size).unwrap_or(0))?;
    let want = idmap_want(&expanded.config)?;
    let hostids = d.hostids;

    let old_key = row.key().to_string();
    let new_key = rxd_core::name::instance_key(project, name);
    // Writes in flight through the files API finish before the tree moves.
    let _writes = d.runtime.rootfs_lock(&row.key()).write_owned().await;
    let pending = intent::begin(
        d,
        &Intent::InstanceProjectMove {
            from_project: row.project.clone(),
            to_project: project.to_owned(),
            from: row.name.clone(),
            to: name.to_owned(),
        },
    )
    .await?;
    let pool = row.pool.clone();
    {
        let (d2, pool, from, to) = (d.clone(), pool.clone(), old_key.clone(), new_key.clone());
        let moved =
            tokio::task::spawn_blocking(move || layout::move_instance(&d2, &pool, &from, &to))
                .await?;
        if let Err(e) = moved {
            let _ = pending.end(d).await;
            return Err(ApiError::internal(e));
        }
    }
    crate::failpoint::hit("instance-project-move:moved");
    let text = serde_json::to_string(&devices).map_err(ApiError::internal)?;
    let limit = idmap_limit(d, caller, project);
    let allocate = hostids.map(|h| allocator(want, &h, project, limit));
    let wants_block = want.isolated && !want.privileged;
    // A new map when the target wants one of its own, or wants another kind than the source
    // had (the old block is released then; none is taken unless wanted).
    let remap_wanted = wants_block || want != before;
    let (from_p, from_n, to_p, to_n) = (
        row.project.clone(),
        row.name.clone(),
        project.to_owned(),
        name.to_owned(),
    );
    let stored = d
        .db(move |s| {
            let config_for = |block: Option<(u32, u32)>| {
                let mut config = config.clone();
                set_next_idmap(
                    &mut config,
                    hostids.and_then(|h| map_for(&h, want.privileged, block)),
                );
                serde_json::to_string(&config).unwrap_or_else(|_| "{}".into())
            };
            let allocate: Option<&rxd_store::Allocator<rxd_core::idmap::IdmapError>> =
                match &allocate {
                    Some(f) if wants_block => Some(f),
                    _ => None,
                };
            let remap = remap_wanted.then_some(rxd_store::Remap {
                allocate,
                config: &config_for,
            });
            s.move_instance_project(&from_p, &from_n, &to_p, &to_n, &text, remap, max)
        })
        .await
        .and_then(|r| r.map_err(|e| ApiError::BadRequest(e.to_string())));
    if let Err(e) = stored {
        let (d2, from, to) = (d.clone(), old_key.clone(), new_key.clone());
        let back =
            tokio::task::spawn_blocking(move || layout::move_instance(&d2, &pool, &to, &from))
                .await;
        if matches!(back, Ok(Ok(()))) {
            let _ = pending.end(d).await;
        }
        return Err(e);
    }
    d.runtime.rename_logs(&old_key, &new_key);
    pending.end(d).await?;
    // Reservations on networks its devices no longer name there go.
    let moved_key = rxd_core::name::InstanceKey::new(project, name);
    if let Err(e) = crate::service::nics::prune(d, &moved_key, Some(&expanded.devices)).await {
        tracing::warn!(instance = %name, error = %e, "reservations not pruned after a move");
    }
    tracing::info!(from = %format!("{}/{}", row.project, row.name), to = %format!("{project}/{name}"), by = %caller.identity.user_name(), "instance moved to another project");
    Ok(())
}
