//! Storage pools: the `default` `dir` pool made at start-up (holding what rxd kept before pools
//! existed), every pool mounted at start-up, creation, edits and deletion (server
//! administrators only), what uses a pool, which pool an instance lives in, and image volumes
//! (an image unpacked once per btrfs pool, read-only, that instances are snapshots of).

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::layout;
use crate::state::Daemon;
use rxd_api::storage::{StoragePool, StoragePoolsPost};
use rxd_auth::proof::AdminProof;
use rxd_storage::{DriverKind, Pool, StorageError, VolumeType};

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

/// The pool every instance without a root disk naming one lives in.
pub const DEFAULT: &str = "default";

fn parse(config: &str) -> BTreeMap<String, String> {
    serde_json::from_str(config).unwrap_or_default()
}

/// A refusal of rxd-storage's as LXD words it: bad input is the client's, the rest is ours.
pub fn refusal(e: StorageError) -> ApiError {
    match e {
        StorageError::Io { .. }
        | StorageError::Spawn { .. }
        | StorageError::Tool { .. }
        | StorageError::ToolOutput { .. }
        | StorageError::Copy { .. } => ApiError::internal(e),
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// Mount every pool (making `default` first if missing, and moving the directories of rxd
/// before pools into it), before recovery looks at any instance's files. A pool that cannot
/// be mounted is left out (logged, and a warning): its instances cannot start until it can.
pub async fn start(d: &Arc<Daemon>) -> Result<(), crate::DaemonError> {
    let rows = d
        .db(|s| s.storage_pools())
        .await
        .map_err(|e| crate::DaemonError::Storage(e.to_string()))?;
    // The `default` rxd made (or none yet): its layout, and what rxd kept before pools. A
    // `default` the administrator made again (another driver or source) is left alone.
    let own = layout::pool_dir(d, DEFAULT).display().to_string();
    let ours = rows.iter().find(|r| r.name == DEFAULT).is_none_or(|r| {
        r.driver == "dir" && parse(&r.config).get("source").map(String::as_str) == Some(&own)
    });
    if !ours {
        return mount_all(d, rows).await;
    }
    let dir = d.dir.clone();
    let made = tokio::task::spawn_blocking(move || make_default(&dir))
        .await
        .map_err(|e| crate::DaemonError::Storage(e.to_string()))?
        .map_err(|e| crate::DaemonError::Storage(format!("the default storage pool: {e}")))?;
    if !rows.iter().any(|r| r.name == DEFAULT) {
        let row = rxd_store::StoragePoolRow {
            name: DEFAULT.into(),
            driver: "dir".into(),
            description: String::new(),
            config: serde_json::json!({ "source": made.display().to_string() }).to_string(),
        };
        let insert = row.clone();
        d.db(move |s| s.create_storage_pool(&insert))
            .await
            .map_err(|e| crate::DaemonError::Storage(e.to_string()))?;
        tracing::info!(path = %made.display(), "made the default storage pool (dir)");
        return mount_all(d, vec![row]).await;
    }
    mount_all(d, rows).await
}

async fn mount_all(
    d: &Arc<Daemon>,
    rows: Vec<rxd_store::StoragePoolRow>,
) -> Result<(), crate::DaemonError> {
    for row in rows {
        let dir = d.dir.clone();
        let name = row.name.clone();
        let mounted = tokio::task::spawn_blocking(move || {
            let kind: DriverKind = row
                .driver
                .parse()
                .map_err(|e: StorageError| e.to_string())?;
            let pool =
                Pool::open(&dir, &row.name, kind, parse(&row.config)).map_err(|e| e.to_string())?;
            // The source may have changed hands since the pool was made.
            if !pool.source().starts_with(&dir) {
                root_only(pool.source())?;
            }
            pool.mount().map_err(|e| e.to_string())?;
            pool.secure_layout().map_err(|e| e.to_string())?;
            Ok::<_, String>(pool)
        })
        .await
        .map_err(|e| crate::DaemonError::Storage(e.to_string()))?;
        match mounted {
            Ok(pool) => d.pools.insert(pool),
            Err(e) => {
                tracing::error!(pool = %name, error = %e, "storage pool not mounted: its instances cannot start");
                crate::sync::lock(&d.warnings).record(
                    rxd_core::warnings::WarningKind::StoragePoolUnavailable,
                    format!("Storage pool {name:?} could not be mounted: {e}"),
                );
            }
        }
    }
    Ok(())
}

/// Make `<state>/storage-pools/default` with the layout (repeatable), and move what rxd kept
/// before pools (`<state>/containers`, `<state>/snapshots`) into it: each one rename on the
/// same filesystem, repeatable after a kill. Returns the pool's directory.
fn make_default(state: &Path) -> std::io::Result<std::path::PathBuf> {
    let pools = state.join("storage-pools");
    let dir = pools.join(DEFAULT);
    for d in [&pools, &dir] {
        match std::fs::DirBuilder::new().mode(0o711).create(d) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))?;
    }
    for (old, new) in [
        ("containers", "containers"),
        ("snapshots", "containers-snapshots"),
    ] {
        let (old, new) = (state.join(old), dir.join(new));
        let meta = match std::fs::symlink_metadata(&old) {
            Ok(m) => m,
            Err(_) => continue,
        };
        // A link or a mount of its own cannot be moved by a rename: the administrator decides.
        use std::os::unix::fs::MetadataExt;
        let state_dev = std::fs::metadata(state)?.dev();
        if !meta.is_dir() || meta.dev() != state_dev {
            return Err(std::io::Error::other(format!(
                "{} is a link or a mount of its own: rxd keeps instances in storage pools now; move its contents into {} (or make it a pool: rxc storage create NAME dir source=...) and start rxd again",
                old.display(),
                new.display()
            )));
        }
        // The empty directory a start made before the move; a full one is a conflict.
        match std::fs::remove_dir(&new) {
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                return Err(std::io::Error::other(format!(
                    "both {} and {} hold instances: move one aside by hand",
                    old.display(),
                    new.display()
                )))
            }
            _ => {}
        }
        std::fs::rename(&old, &new)?;
        rxd_image::durable::sync_dir(&dir)?;
        tracing::info!(from = %old.display(), to = %new.display(), "moved into the default storage pool");
    }
    for (name, mode) in rxd_storage::LAYOUT {
        let path = dir.join(name);
        match std::fs::DirBuilder::new().mode(mode).create(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(dir)
}

/// Refuse a pool source a host user could change under rxd: it and every directory above it
/// must be root's and writable by no one else (sticky directories, like `/tmp`, excepted),
/// with no symlink on the way.
pub fn root_only(source: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut here = std::path::PathBuf::new();
    for part in source.components() {
        here.push(part);
        let meta = std::fs::symlink_metadata(&here)
            .map_err(|e| format!("pool source {}: {e}", here.display()))?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "pool source {}: {} is a symlink; name the real path",
                source.display(),
                here.display()
            ));
        }
        let sticky = meta.mode() & 0o1000 != 0 && meta.is_dir() && here != source;
        if meta.uid() != 0 || (meta.mode() & 0o022 != 0 && !sticky) {
            return Err(format!(
                "pool source {}: {} must be root's and writable by root alone",
                source.display(),
                here.display()
            ));
        }
    }
    Ok(())
}

/// Directories of pools outside the state directory (a pool on a host directory): no
/// host-path disk may reach them, as none may reach the state directory.
pub fn outside_sources(d: &Daemon) -> Vec<std::path::PathBuf> {
    d.pools
        .all()
        .iter()
        .map(|p| p.source().to_path_buf())
        .filter(|s| !s.starts_with(&d.dir) && s.is_dir())
        .collect()
}

/// The caller as the server administrator sees things (a delete's check of what uses a pool
/// must count what the caller cannot see).
fn admin_view(d: &Daemon, caller: &Caller) -> Caller {
    Caller::daemon(|id| d.rights(id), &caller.project)
}

/// The mounted pool `name`.
pub fn get(d: &Daemon, name: &str) -> ApiResult<Arc<Pool>> {
    d.pools.get(name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Storage pool {name:?} is not available on this server"
        ))
    })
}

/// The pool an instance with these expanded devices lives in: its root disk's, else `default`.
pub fn pool_for(
    d: &Daemon,
    devices: &BTreeMap<String, BTreeMap<String, String>>,
) -> ApiResult<Arc<Pool>> {
    let named = devices
        .values()
        .find(|dev| rxd_core::devices::is_root_disk(dev))
        .and_then(|dev| dev.get("pool").cloned());
    let name = named.unwrap_or_else(|| DEFAULT.to_owned());
    d.pools
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("Storage pool {name:?} not found")))
}

/// The root disk's `size` in bytes, if it has one.
pub fn root_size(devices: &BTreeMap<String, BTreeMap<String, String>>) -> Option<u64> {
    devices
        .values()
        .find(|dev| rxd_core::devices::is_root_disk(dev))
        .and_then(|dev| dev.get("size"))
        .and_then(|s| rxd_core::instance_config::parse_bytes(s))
        .filter(|n| *n > 0)
}

/// `GET /1.0/storage-pools/<name>` as LXD shows it.
pub async fn view(d: &Daemon, caller: &Caller, row: rxd_store::StoragePoolRow) -> StoragePool {
    let used_by = used_by(d, caller, &row.name).await.unwrap_or_default();
    // As LXD: a pool's config (host paths, user keys) is the server administrator's to see.
    let config = if caller.rights.is_admin() {
        parse(&row.config)
    } else {
        BTreeMap::new()
    };
    let status = if d.pools.get(&row.name).is_some() {
        "Created"
    } else {
        "Unavailable"
    };
    StoragePool {
        config,
        description: row.description,
        name: row.name,
        driver: row.driver,
        used_by,
        status: status.into(),
        locations: vec!["none".into()],
    }
}

/// What uses a pool, as URLs (those the caller may see): instances in it, profiles whose root
/// disk names it, images with a volume in it.
pub async fn used_by(d: &Daemon, caller: &Caller, pool: &str) -> ApiResult<Vec<String>> {
    let name = pool.to_owned();
    let (instances, profiles) = d
        .db(move |s| {
            let instances: Vec<_> = s
                .all_instances()?
                .into_iter()
                .filter(|r| r.pool == name)
                .collect();
            let mut profiles = Vec::new();
            for project in s.projects()? {
                profiles.extend(s.profiles(&project.name)?);
            }
            Ok((instances, profiles))
        })
        .await?;
    let suffix = rxd_core::profile::project_suffix;
    let mut urls = Vec::new();
    for r in instances.iter().filter(|r| caller.can_view(&r.project)) {
        urls.push(format!(
            "/1.0/instances/{}{}",
            rxd_core::profile::url_segment(&r.name),
            suffix(&r.project)
        ));
    }
    for p in profiles.iter().filter(|p| caller.can_view(&p.project)) {
        let devices: BTreeMap<String, BTreeMap<String, String>> =
            serde_json::from_str(&p.devices).unwrap_or_default();
        if devices.values().any(|dev| {
            rxd_core::devices::is_root_disk(dev)
                && dev.get("pool").map(String::as_str) == Some(pool)
        }) {
            urls.push(format!(
                "/1.0/profiles/{}{}",
                rxd_core::profile::url_segment(&p.name),
                suffix(&p.project)
            ));
        }
    }
    // Image volumes name images of every project: the server administrator's to see.
    if let Some(p) = d.pools.get(pool).filter(|_| caller.rights.is_admin()) {
        let images = p.mount_point().join(VolumeType::Image.dir());
        for fp in entries(&images) {
            urls.push(format!("/1.0/images/{fp}"));
        }
    }
    Ok(urls)
}

/// Visible names in a directory (hidden work in progress left out), sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !layout::in_progress(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `POST /1.0/storage-pools` (the caller has proven it is the server administrator).
///
/// Steps: pool made (loop file, filesystem, mount, layout); row recorded. A kill between the
/// two leaves a pool directory (and loop file) without a row, which recovery removes.
pub async fn create(d: &Arc<Daemon>, _admin: &AdminProof, req: StoragePoolsPost) -> ApiResult<()> {
    let kind: DriverKind = req.driver.parse().map_err(refusal)?;
    if req.name.is_empty() {
        return Err(ApiError::BadRequest("No name provided".into()));
    }
    let exists = {
        let n = req.name.clone();
        d.db(move |s| s.storage_pool(&n)).await.is_ok()
    };
    if exists || d.pools.get(&req.name).is_some() {
        return Err(ApiError::Conflict(format!(
            "Storage pool {:?} already exists",
            req.name
        )));
    }
    // One pool create or delete at a time, and none while an instance is being placed.
    let _exclusive = d.pools.lifecycle.write().await;
    if d.pools.get(&req.name).is_some() {
        return Err(ApiError::Conflict(format!(
            "Storage pool {:?} already exists",
            req.name
        )));
    }
    let config =
        rxd_storage::prepare_config(kind, &req.name, &d.dir, &req.config).map_err(refusal)?;
    if let Some(source) = req.config.get("source").filter(|s| !s.is_empty()) {
        root_only(Path::new(source)).map_err(ApiError::BadRequest)?;
    }
    let (dir, name, made_config) = (d.dir.clone(), req.name.clone(), config.clone());
    let pool = tokio::task::spawn_blocking(move || Pool::create(&dir, &name, kind, made_config))
        .await?
        .map_err(refusal)?;
    crate::failpoint::hit("storage-pool-create:made");
    let row = rxd_store::StoragePoolRow {
        name: req.name.clone(),
        driver: kind.to_string(),
        description: req.description,
        config: serde_json::to_string(&config).unwrap_or_else(|_| "{}".into()),
    };
    if let Err(e) = d.db(move |s| s.create_storage_pool(&row)).await {
        let _ = tokio::task::spawn_blocking(move || pool.delete()).await;
        return Err(e);
    }
    tracing::info!(pool = %req.name, driver = %kind, "storage pool created");
    d.pools.insert(pool);
    // `GET /1.0` names the drivers in use.
    d.environment_cache.invalidate();
    Ok(())
}

/// `PUT`/`PATCH /1.0/storage-pools/<name>` with the merged result: the description, and the
/// config keys LXD lets change on a live pool (`volume.*`, `user.*`, `rsync.*`); the rest must
/// stay as they are.
pub async fn update(
    d: &Arc<Daemon>,
    _admin: &AdminProof,
    name: &str,
    description: String,
    mut config: BTreeMap<String, String>,
) -> ApiResult<()> {
    let n = name.to_owned();
    let row = d.db(move |s| s.storage_pool(&n)).await?;
    let current = parse(&row.config);
    config.retain(|_, v| !v.is_empty());
    let changeable =
        |k: &str| k.starts_with("volume.") || k.starts_with("user.") || k.starts_with("rsync.");
    for key in current.keys().chain(config.keys()) {
        if !changeable(key) && current.get(key) != config.get(key) {
            return Err(ApiError::BadRequest(format!(
                "Storage pool property {key:?} cannot be changed"
            )));
        }
    }
    // The changeable keys pass the same checks as at creation (on a `dir` pool's rules,
    // which every driver shares for them).
    let probe: BTreeMap<String, String> = config
        .iter()
        .filter(|(k, _)| changeable(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    rxd_storage::prepare_config(DriverKind::Dir, name, &d.dir, &probe).map_err(refusal)?;
    let text = serde_json::to_string(&config).unwrap_or_else(|_| "{}".into());
    let n = name.to_owned();
    d.db(move |s| s.update_storage_pool(&n, &description, &text))
        .await
}

/// `DELETE /1.0/storage-pools/<name>`: refused while an instance lives in it or a profile's
/// root disk names it; its image volumes go with it.
///
/// Steps: row deleted (in the transaction that checks no instance lives in it); files
/// removed (image volumes, mount, loop file). A kill between leaves files without a row, which
/// recovery removes.
pub async fn delete(
    d: &Arc<Daemon>,
    _admin: &AdminProof,
    caller: &Caller,
    name: &str,
) -> ApiResult<()> {
    let _exclusive = d.pools.lifecycle.write().await;
    let n = name.to_owned();
    d.db(move |s| s.storage_pool(&n)).await?;
    let users = used_by(d, &admin_view(d, caller), name).await?;
    if users
        .iter()
        .any(|u| u.starts_with("/1.0/instances/") || u.starts_with("/1.0/profiles/"))
    {
        return Err(ApiError::BadRequest(
            "The storage pool is currently in use".into(),
        ));
    }
    let n = name.to_owned();
    d.db(move |s| s.delete_storage_pool(&n))
        .await
        .map_err(|e| match e {
            ApiError::Conflict(_) => {
                ApiError::BadRequest("The storage pool is currently in use".into())
            }
            other => other,
        })?;
    crate::failpoint::hit("storage-pool-delete:row-deleted");
    let pool = d.pools.remove(name);
    d.environment_cache.invalidate();
    if let Some(pool) = pool {
        tokio::task::spawn_blocking(move || remove_pool(&pool))
            .await?
            .map_err(ApiError::internal)?;
    }
    tracing::info!(pool = %name, "storage pool deleted");
    Ok(())
}

/// A pool's files, gone: its image volumes, then the pool (mount, loop file, directory).
pub fn remove_pool(pool: &Pool) -> Result<(), StorageError> {
    let images = pool.mount_point().join(VolumeType::Image.dir());
    if let Ok(rd) = std::fs::read_dir(&images) {
        for e in rd.flatten() {
            layout::remove_tree(e.path()).map_err(|source| StorageError::Io {
                action: "removing image volume",
                path: e.path(),
                source,
            })?;
        }
    }
    pool.clone().delete()
}

/// The image volume of `fingerprint` in `pool`, made on first use: the image's unpacked tree
/// (container ids: instances see it through idmapped mounts) copied once into a subvolume
/// that is then made read-only; instances are snapshots of it. `None` on a `dir` pool (each
/// instance is a copy of the image's tree there).
///
/// Made in a hidden directory and renamed into place, so a kill leaves no half volume (only a
/// hidden name recovery removes).
pub async fn image_volume(
    d: &Daemon,
    pool: &Arc<Pool>,
    fingerprint: &str,
    unpacked: std::path::PathBuf,
) -> ApiResult<Option<std::path::PathBuf>> {
    if pool.kind() != DriverKind::Btrfs {
        return Ok(None);
    }
    let dest = pool
        .volume_path(VolumeType::Image, fingerprint)
        .map_err(refusal)?;
    let _one = d.pools.image_volumes.lock().await;
    if dest.is_dir() {
        return Ok(Some(dest));
    }
    let pool = pool.clone();
    let made = dest.clone();
    tokio::task::spawn_blocking(move || -> ApiResult<()> {
        let images = made.parent().map(Path::to_path_buf).unwrap_or_default();
        let temp = images.join(format!(".new-{}", uuid::Uuid::new_v4().simple()));
        let result = (|| -> ApiResult<()> {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&temp)
                .map_err(ApiError::internal)?;
            let rootfs = temp.join("rootfs");
            pool.create_volume(&rootfs, 0o755).map_err(refusal)?;
            rxd_image::copy::copy_tree_into(&unpacked.join("rootfs"), &rootfs, None)
                .map_err(ApiError::internal)?;
            layout::copy_image_extras(&unpacked, &temp).map_err(ApiError::internal)?;
            pool.set_readonly(&rootfs, true).map_err(refusal)?;
            rxd_image::durable::publish(&temp, &made).map_err(ApiError::internal)
        })();
        if result.is_err() {
            let _ = layout::remove_tree(&temp);
        }
        result
    })
    .await??;
    tracing::info!(pool = %dest.display(), "image volume made");
    Ok(Some(dest))
}

/// Remove an image's volumes from every pool (the image is gone).
pub fn remove_image_volumes(d: &Daemon, fingerprint: &str) {
    for pool in d.pools.all() {
        if let Ok(path) = pool.volume_path(VolumeType::Image, fingerprint) {
            if path.exists() {
                if let Err(e) = layout::remove_tree(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "image volume not removed");
                }
            }
        }
    }
}

/// Copy (or, on btrfs, snapshot: instant, sharing every block) the tree `from` to `to` (which
/// must not exist) in `pool`. A btrfs snapshot is read-only if `readonly`; copies never are.
/// Returns the entries copied (0 for a snapshot).
pub fn clone_tree(pool: &Pool, from: &Path, to: &Path, readonly: bool) -> ApiResult<u64> {
    // A snapshot holds empty directories where the source holds subvolumes of its own (a
    // container's Docker or machined storage): such a tree is copied instead.
    if pool.kind() == DriverKind::Btrfs
        && from.starts_with(pool.mount_point())
        && rxd_storage::is_subvolume(from).unwrap_or(false)
        && !rxd_storage::has_nested_subvolumes(from).unwrap_or(true)
    {
        pool.snapshot_volume(from, to, readonly).map_err(refusal)?;
        return Ok(0);
    }
    let copied = if pool.kind() == DriverKind::Btrfs && to.starts_with(pool.mount_point()) {
        // A subvolume of its own even when copied in (from another pool), so it can be
        // snapshotted later.
        match pool.create_volume(to, 0o700) {
            Ok(()) => rxd_image::copy::copy_tree_into(from, to, None).map_err(copy_refusal),
            Err(e) => Err(refusal(e)),
        }
    } else {
        rxd_image::copy::copy_tree(from, to).map_err(copy_refusal)
    };
    if copied.is_err() {
        let _ = layout::remove_tree(to);
    }
    copied
}

fn copy_refusal(e: rxd_image::ImageError) -> ApiError {
    match e {
        // The container's own doing, and said relative to its root: the caller may know.
        rxd_image::ImageError::TooDeep { .. } => {
            ApiError::BadRequest(format!("Cannot copy the root filesystem: {e}"))
        }
        e => ApiError::internal(format!("copying the root filesystem: {e}")),
    }
}

/// Limit the instance root filesystem at `rootfs` to `size` (btrfs; `dir` refuses a size).
pub fn set_root_quota(pool: &Pool, rootfs: &Path, size: Option<u64>) -> ApiResult<()> {
    if size.is_none() && !pool.supports_quota() {
        return Ok(());
    }
    pool.set_quota(rootfs, size).map_err(refusal)
}

/// An instance's expanded devices after an edit: its root disk stays in the pool its files
/// are in (moving it is another operation), and a size only where the pool has quotas.
pub fn check_root(
    d: &Daemon,
    row: &rxd_store::InstanceRow,
    devices: &BTreeMap<String, BTreeMap<String, String>>,
) -> ApiResult<()> {
    let named = devices
        .values()
        .find(|dev| rxd_core::devices::is_root_disk(dev))
        .and_then(|dev| dev.get("pool").cloned())
        .unwrap_or_else(|| DEFAULT.to_owned());
    if named != row.pool {
        return Err(ApiError::BadRequest(
            "Cannot update root disk device pool name".into(),
        ));
    }
    match d.pools.get(&row.pool) {
        Some(pool) => check_size(&pool, root_size(devices)),
        None => Ok(()),
    }
}

/// Refuse a root disk `size` on a pool that has no quotas (LXD's dir pools without project
/// quotas refuse it too).
pub fn check_size(pool: &Pool, size: Option<u64>) -> ApiResult<()> {
    if size.is_some() && pool.supports_quota() && pool.loop_file().is_none() {
        // Quotas are turned on for a whole btrfs filesystem: rxd does it only in one it made.
        return Err(ApiError::BadRequest(format!(
            "Storage pool {:?} is on a btrfs filesystem rxd did not make (source={}): root disk sizes need a loop-file pool",
            pool.name(),
            pool.source().display()
        )));
    }
    if size.is_some() && !pool.supports_quota() {
        return Err(ApiError::BadRequest(format!(
            "Storage pool {:?} ({}) cannot limit a root disk's size",
            pool.name(),
            pool.kind()
        )));
    }
    Ok(())
}
