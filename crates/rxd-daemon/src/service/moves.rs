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
use crate::service::instances::{confine, Keyed};
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
