//! Custom storage volumes (LXD's `custom` volumes, filesystem only): made empty or as a copy,
//! edited (`size` is a btrfs quota), renamed, moved to another pool, snapshotted, restored and
//! deleted, and attached to containers as `disk` devices (`pool`, `source: <volume>`).
//!
//! A volume lives in `<pool>/custom/<key>` (`<key>` is its name in the `default` project,
//! `<project>_<name>` elsewhere, as LXD lays it out) and its snapshots in
//! `<pool>/custom-snapshots/<key>/<snap>`. Its files keep container ids on disk: a container
//! mounts it through an idmapped mount made with its own user namespace, so containers with
//! different isolated maps see the same owners, and nothing is ever shifted. Files there may be
//! setuid-root on disk, so the pool's `custom/` and `custom-snapshots/` are root's alone (0700).
//!
//! Where a project's volumes live is `features.storage.volumes` (its own, or `default`'s); a
//! caller reaching `default`'s volumes from another project needs the same right on `default`
//! (LXD asks only the request's project).
//! A volume attached to one instance is refused for another unless the volume has
//! `security.shared=true` (rxd's key: two containers writing one tree is a choice to make).
//!
//! Steps and crashes: a create makes the directory, then records the row; a kill between
//! leaves a directory without a row, which recovery removes. A delete removes the row first
//! (then nothing refers to the files) and the files after; a kill between leaves files without
//! a row, removed the same way. A restore copies the snapshot to a hidden name and exchanges it
//! with the volume atomically; a hidden name is work in progress, removed by recovery.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::{expand, layout, pools};
use crate::state::Daemon;
use rxd_api::storage::{
    StorageVolume, StorageVolumePost, StorageVolumeSnapshot, StorageVolumeSnapshotsPost,
    StorageVolumeStateUsage, StorageVolumesPost,
};
use rxd_core::devices::Devices;
use rxd_core::profile::project_suffix;
use rxd_storage::{Pool, VolumeType};
use rxd_store::{VolumeRow, VolumeSnapshotRow};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

type Config = BTreeMap<String, String>;

const NOT_FOUND: &str = "Storage volume not found";
const SNAPSHOT_NOT_FOUND: &str = "Storage volume snapshot not found";

fn parse(config: &str) -> Config {
    serde_json::from_str(config).unwrap_or_default()
}

fn to_json(config: &Config) -> ApiResult<String> {
    serde_json::to_string(config).map_err(ApiError::internal)
}

/// The project whose volumes `project` uses: itself with `features.storage.volumes=true`,
/// else `default` (LXD's `StorageVolumeProject`).
pub fn home(d: &Daemon, project: &str) -> ApiResult<String> {
    let p = d
        .project(project)
        .ok_or_else(|| ApiError::NotFound(crate::error::PROJECT_NOT_FOUND.into()))?;
    Ok(volumes_project(project, &p.config).to_owned())
}

fn volumes_project<'a>(project: &'a str, config: &Config) -> &'a str {
    if config.get("features.storage.volumes").map(String::as_str) == Some("true") {
        project
    } else {
        "default"
    }
}

/// The project whose volumes the caller's request is about, which the caller must view (and, to
/// `write`, manage volumes in) when it is not the request's own.
pub fn caller_home(d: &Daemon, caller: &Caller, write: bool) -> ApiResult<String> {
    let home = home(d, &caller.project)?;
    if home != caller.project {
        if !caller.can_view(&home) {
            return Err(ApiError::NotFound(NOT_FOUND.into()));
        }
        if write
            && !caller.rights.has(
                &home,
                rxd_auth::permission::Permission::ManageStorageVolumes,
            )
        {
            return Err(ApiError::Forbidden(format!(
                "Project {:?} uses the storage volumes of project {home:?}, where you may not manage them",
                caller.project
            )));
        }
    }
    Ok(home)
}

/// The projects whose instances use `home`'s volumes.
fn user_projects(d: &Daemon, home: &str) -> Vec<String> {
    d.projects()
        .iter()
        .filter(|(name, p)| volumes_project(name, &p.config) == home)
        .map(|(name, _)| name.clone())
        .collect()
}

/// What a volume's PUT replaces and its ETag covers: config and description.
pub fn etag_fields(row: &VolumeRow) -> serde_json::Value {
    serde_json::json!({
        "config": parse(&row.config),
        "description": row.description,
    })
}

/// `/1.0/storage-pools/<pool>/volumes/custom/<name>[?project=]`.
pub fn url(pool: &str, project: &str, name: &str) -> String {
    format!(
        "/1.0/storage-pools/{}/volumes/custom/{}{}",
        rxd_core::profile::url_segment(pool),
        rxd_core::profile::url_segment(name),
        project_suffix(project)
    )
}

fn valid_name(name: &str) -> ApiResult<()> {
    if rxd_core::name::valid_volume_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Invalid storage volume name {name:?}: 1 to 63 letters, digits, '-' and '.', starting with a letter or digit"
        )))
    }
}

/// The volume's directory in `pool`.
pub fn dir(pool: &Pool, project: &str, name: &str) -> ApiResult<PathBuf> {
    pool.volume_path(
        VolumeType::Custom,
        &rxd_core::name::instance_key(project, name),
    )
    .map_err(pools::refusal)
}

fn snapshot_dir(pool: &Pool, project: &str, name: &str, snap: &str) -> ApiResult<PathBuf> {
    pool.snapshot_path(
        VolumeType::Custom,
        &rxd_core::name::instance_key(project, name),
        snap,
    )
    .map_err(pools::refusal)
}

/// A volume's `size` in bytes, if it has one.
fn size_of(config: &Config) -> Option<u64> {
    config
        .get("size")
        .and_then(|s| rxd_core::instance_config::parse_bytes(s))
        .filter(|n| *n > 0)
}

fn flag(config: &Config, key: &str) -> ApiResult<bool> {
    match config.get(key).map(String::as_str) {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(ApiError::BadRequest(format!(
            "Invalid value for {key:?}: {v:?} is not a boolean"
        ))),
    }
}

/// A custom volume's config keys, as LXD 5.0 has them for filesystem volumes, plus rxd's
/// `security.shared`. `security.shifted` is accepted and changes nothing: rxd always mounts a
/// volume idmapped.
pub fn check_config(pool: &Pool, config: &Config) -> ApiResult<()> {
    for (key, value) in config {
        match key.as_str() {
            "size" => {
                if !value.is_empty() && rxd_core::instance_config::parse_bytes(value).is_none() {
                    return Err(ApiError::BadRequest(format!(
                        "Invalid value for \"size\": {value:?}"
                    )));
                }
            }
            "security.shared" | "security.shifted" => {
                flag(config, key)?;
            }
            "snapshots.expiry" => {
                if !value.is_empty() {
                    rxd_core::expiry::parse_expiry(value).map_err(|e| {
                        ApiError::BadRequest(format!("Invalid value for \"snapshots.expiry\": {e}"))
                    })?;
                }
            }
            "snapshots.pattern" => {
                rxd_core::schedule::render_pattern(value, 0).map_err(|e| {
                    ApiError::BadRequest(format!("Invalid value for \"snapshots.pattern\": {e}"))
                })?;
            }
            "snapshots.schedule" => {
                let invalid = |e: String| {
                    ApiError::BadRequest(format!("Invalid value for \"snapshots.schedule\": {e}"))
                };
                if !value.is_empty()
                    && rxd_core::schedule::Schedule::parse(value, "")
                        .map_err(invalid)?
                        .at_startup()
                {
                    // A volume is not started (LXD refuses it for volumes too).
                    return Err(invalid("\"@startup\" is only for instances".to_owned()));
                }
            }
            k if k.starts_with("user.") => {}
            "security.unmapped" => {
                return Err(ApiError::BadRequest(format!(
                    "Storage volume option {key:?} is not supported by rxd"
                )))
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid option for volume {key:?}: Unknown key"
                )))
            }
        }
    }
    if let Some(size) = size_of(config) {
        check_size(pool, size)?;
    }
    Ok(())
}

fn check_size(pool: &Pool, _size: u64) -> ApiResult<()> {
    if !pool.supports_quota() {
        return Err(ApiError::BadRequest(format!(
            "Storage pool {:?} ({}) cannot limit a volume's size",
            pool.name(),
            pool.kind()
        )));
    }
    if pool.loop_file().is_none() {
        return Err(ApiError::BadRequest(format!(
            "Storage pool {:?} is on a btrfs filesystem rxd did not make (source={}): volume sizes need a loop-file pool",
            pool.name(),
            pool.source().display()
        )));
    }
    Ok(())
}

/// Under the project's `limits.disk`, a volume needs a `size`, and the sizes of its volumes,
/// instances and images must fit: `size` is the volume's new size, `had` what it counted
/// before (0 for a new one).
async fn check_disk_limit(d: &Daemon, project: &str, size: Option<u64>, had: u64) -> ApiResult<()> {
    let limited = d
        .project(project)
        .and_then(|p| rxd_core::project_config::disk_limit(&p.config))
        .is_some();
    if !limited {
        return Ok(());
    }
    let Some(size) = size else {
        return Err(ApiError::BadRequest(format!(
            "Project {project:?} has limits.disk: its storage volumes need a size"
        )));
    };
    crate::service::images::UnpackBudget::of(d, project)
        .await?
        .check_known(size.saturating_sub(had))
}

/// What uses a volume: instances whose expanded devices attach it, and profiles whose devices
/// do (project, name).
#[derive(Default, Debug)]
pub struct Users {
    pub instances: Vec<(String, String)>,
    pub profiles: Vec<(String, String)>,
}

impl Users {
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.profiles.is_empty()
    }

    pub fn urls(&self, caller: &Caller) -> Vec<String> {
        let suffix = project_suffix;
        let mut urls: Vec<String> = self
            .instances
            .iter()
            .filter(|(p, _)| caller.can_view(p))
            .map(|(p, n)| {
                format!(
                    "/1.0/instances/{}{}",
                    rxd_core::profile::url_segment(n),
                    suffix(p)
                )
            })
            .collect();
        urls.extend(
            self.profiles
                .iter()
                .filter(|(p, _)| caller.can_view(p))
                .map(|(p, n)| {
                    format!(
                        "/1.0/profiles/{}{}",
                        rxd_core::profile::url_segment(n),
                        suffix(p)
                    )
                }),
        );
        urls
    }
}

fn attaches(devices: &Devices, pool: &str, name: &str) -> bool {
    rxd_core::devices::volume_disks(devices)
        .iter()
        .any(|v| v.pool == pool && v.volume == name)
}

/// Everything that uses the volume `name` of `home`'s in `pool`.
pub async fn users(d: &Daemon, pool: &str, home: &str, name: &str) -> ApiResult<Users> {
    let mut users = Users::default();
    for project in user_projects(d, home) {
        let p = project.clone();
        let rows = d.db(move |s| s.instances(&p)).await?;
        for row in rows {
            let expanded = expand::expanded(d, &row).await?;
            if attaches(&expanded.devices, pool, name) {
                users
                    .instances
                    .push((row.project.clone(), row.name.clone()));
            }
        }
    }
    let profile_homes: std::collections::BTreeSet<String> = user_projects(d, home)
        .iter()
        .filter_map(|p| expand::home(d, p).ok())
        .collect();
    for project in profile_homes {
        let rows = d.db(move |s| s.profiles(&project)).await?;
        for row in rows {
            if attaches(&expand::devices_of(&row.devices), pool, name) {
                users.profiles.push((row.project.clone(), row.name.clone()));
            }
        }
    }
    Ok(users)
}

/// The volume as `GET` shows it.
pub async fn view(d: &Daemon, caller: &Caller, row: &VolumeRow) -> ApiResult<StorageVolume> {
    let used_by = users(d, &row.pool, &row.project, &row.name)
        .await?
        .urls(caller);
    Ok(StorageVolume {
        config: parse(&row.config),
        description: row.description.clone(),
        name: row.name.clone(),
        kind: "custom".into(),
        used_by,
        location: "none".into(),
        content_type: row.content_type.clone(),
        project: row.project.clone(),
        created_at: crate::tokens::rfc3339(row.created_at),
    })
}

pub fn snapshot_view(row: &VolumeSnapshotRow) -> StorageVolumeSnapshot {
    StorageVolumeSnapshot {
        description: row.description.clone(),
        expires_at: row.expires_at.map(crate::tokens::rfc3339),
        name: row.name.clone(),
        config: parse(&row.config),
        content_type: "filesystem".into(),
        created_at: crate::tokens::rfc3339(row.created_at),
    }
}

/// The custom volumes of `pool` the caller's project uses.
pub async fn list(d: &Daemon, caller: &Caller, pool: &str) -> ApiResult<Vec<VolumeRow>> {
    let Ok(home) = caller_home(d, caller, false) else {
        return Ok(Vec::new());
    };
    let pool = pool.to_owned();
    d.db(move |s| s.storage_volumes(Some(&pool), Some(&home)))
        .await
}

/// The volume `name` of the caller's project in `pool`.
pub async fn get(d: &Daemon, caller: &Caller, pool: &str, name: &str) -> ApiResult<VolumeRow> {
    let home = caller_home(d, caller, false)?;
    let (p, n) = (pool.to_owned(), name.to_owned());
    d.db(move |s| s.storage_volume(&p, &home, &n))
        .await
        .map_err(not_found(NOT_FOUND))
}

fn not_found(text: &'static str) -> impl Fn(ApiError) -> ApiError {
    move |e| match e {
        ApiError::NotFound(_) => ApiError::NotFound(text.into()),
        other => other,
    }
}

/// The snapshot `snap` of the volume `row`.
pub async fn get_snapshot(d: &Daemon, row: &VolumeRow, snap: &str) -> ApiResult<VolumeSnapshotRow> {
    let (p, j, n, s) = (
        row.pool.clone(),
        row.project.clone(),
        row.name.clone(),
        snap.to_owned(),
    );
    d.db(move |st| st.storage_volume_snapshot(&p, &j, &n, &s))
        .await
        .map_err(not_found(SNAPSHOT_NOT_FOUND))
}

pub async fn snapshots(d: &Daemon, row: &VolumeRow) -> ApiResult<Vec<VolumeSnapshotRow>> {
    let (p, j, n) = (row.pool.clone(), row.project.clone(), row.name.clone());
    d.db(move |s| s.storage_volume_snapshots(&p, &j, &n)).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Removes what a failed create made.
fn undo(pool: &Pool, made: &[PathBuf]) {
    for path in made.iter().rev() {
        if let Err(e) = pool.delete_volume(path) {
            tracing::warn!(path = %path.display(), error = %e, "removing a half-made volume");
        }
    }
}

/// `POST /1.0/storage-pools/<pool>/volumes[/custom]`: an empty volume, or a copy of another
/// (`source.type=copy`: `name` or `name/snapshot`, in `source.pool` or this pool, with its
/// snapshots unless `volume_only`). Returns the new volume's URL.
pub async fn create(
    d: &Arc<Daemon>,
    caller: &Caller,
    pool_name: &str,
    req: StorageVolumesPost,
) -> ApiResult<String> {
    if !matches!(req.kind.as_str(), "" | "custom") {
        return Err(ApiError::BadRequest(format!(
            "Storage volumes of type {:?} cannot be made this way (only custom)",
            req.kind
        )));
    }
    if !matches!(req.content_type.as_str(), "" | "filesystem") {
        return Err(ApiError::BadRequest(
            "rxd makes filesystem volumes only (block volumes are for virtual machines)".into(),
        ));
    }
    if req.name.is_empty() {
        return Err(ApiError::BadRequest("No name provided".into()));
    }
    valid_name(&req.name)?;
    let home = caller_home(d, caller, true)?;
    let _lifecycle = d.pools.lifecycle.read().await;
    let _volumes = d.pools.volumes.lock().await;
    let pool = pools::get(d, pool_name)?;
    // The pool's `volume.*` keys are defaults a new volume takes (LXD's).
    let mut config = req.config.clone();
    for (k, v) in pool.config() {
        if let Some(key) = k.strip_prefix("volume.") {
            if matches!(
                key,
                "size" | "security.shifted" | "snapshots.expiry" | "snapshots.pattern"
            ) {
                config.entry(key.to_owned()).or_insert_with(|| v.clone());
            }
        }
    }
    // A copy starts from its source's config, under what the request gives.
    let source = match req.source.kind.as_str() {
        "" | "none" => None,
        "copy" => Some(copy_source(d, caller, pool_name, &req).await?),
        "migration" => {
            return Err(ApiError::BadRequest(
                "Storage volume migration between servers is not supported by rxd yet".into(),
            ))
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "Unknown source type {other:?}"
            )))
        }
    };
    if let Some(src) = &source {
        for (k, v) in parse(&src.volume.config) {
            config.entry(k).or_insert(v);
        }
    }
    check_config(&pool, &config)?;
    check_disk_limit(d, &home, size_of(&config), 0).await?;
    let exists = {
        let (p, j, n) = (pool_name.to_owned(), home.clone(), req.name.clone());
        d.db(move |s| s.storage_volume(&p, &j, &n)).await.is_ok()
    };
    if exists {
        return Err(ApiError::Conflict(format!(
            "Volume by that name already exists: {:?}",
            req.name
        )));
    }
    let now = crate::sync::now_unix();
    let target = dir(&pool, &home, &req.name)?;
    let mut snapshot_rows = Vec::new();
    let mut made = Vec::new();
    let made_result: ApiResult<()> = match &source {
        None => {
            let (pool2, target2) = (pool.clone(), target.clone());
            blocking(move || pool2.create_volume(&target2, 0o711).map_err(pools::refusal))
                .await
                .map(|()| made.push(target.clone()))
        }
        Some(src) => {
            // Snapshots first (oldest first), then the volume itself.
            let mut result = Ok(());
            for snap in &src.snapshots {
                let from =
                    snapshot_dir(&src.pool, &src.volume.project, &src.volume.name, &snap.name)?;
                let to = snapshot_dir(&pool, &home, &req.name, &snap.name)?;
                let (pool2, to2) = (pool.clone(), to.clone());
                match blocking(move || {
                    snapshot_parent(&to2)?;
                    pools::clone_tree(&pool2, &from, &to2, true).map(drop)
                })
                .await
                {
                    Ok(()) => {
                        made.push(to);
                        snapshot_rows.push(VolumeSnapshotRow {
                            pool: pool_name.to_owned(),
                            project: home.clone(),
                            volume: req.name.clone(),
                            ..snap.clone()
                        });
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_ok() {
                let from = src.path.clone();
                let (pool2, to2) = (pool.clone(), target.clone());
                result = blocking(move || pools::clone_tree(&pool2, &from, &to2, false).map(drop))
                    .await
                    .map(|()| made.push(target.clone()));
            }
            result
        }
    };
    let finish = async {
        made_result?;
        crate::failpoint::hit("storage-volume-create:made");
        if let Some(size) = size_of(&config) {
            let (pool2, target2) = (pool.clone(), target.clone());
            blocking(move || {
                pool2
                    .set_quota(&target2, Some(size))
                    .map_err(pools::refusal)
            })
            .await?;
        }
        let row = VolumeRow {
            pool: pool_name.to_owned(),
            project: home.clone(),
            name: req.name.clone(),
            description: req.description.clone(),
            config: to_json(&config)?,
            content_type: "filesystem".into(),
            created_at: now,
        };
        let snaps = snapshot_rows.clone();
        d.db(move |s| s.create_storage_volume(&row, &snaps)).await
    };
    if let Err(e) = finish.await {
        let pool2 = pool.clone();
        let _ = tokio::task::spawn_blocking(move || undo(&pool2, &made)).await;
        return Err(e);
    }
    Ok(url(pool_name, &home, &req.name))
}

/// A copy's source: the volume (or snapshot) and the snapshots that come with it.
struct Source {
    pool: Arc<Pool>,
    volume: VolumeRow,
    /// The tree to copy: the volume's directory or the snapshot's.
    path: PathBuf,
    snapshots: Vec<VolumeSnapshotRow>,
}

/// Refuse a copy the caller may not make, before its operation starts.
pub async fn check_copy(
    d: &Daemon,
    caller: &Caller,
    pool_name: &str,
    req: &StorageVolumesPost,
) -> ApiResult<()> {
    caller_home(d, caller, true)?;
    copy_source(d, caller, pool_name, req).await.map(drop)
}

async fn copy_source(
    d: &Daemon,
    caller: &Caller,
    pool_name: &str,
    req: &StorageVolumesPost,
) -> ApiResult<Source> {
    let src_pool_name = if req.source.pool.is_empty() {
        pool_name.to_owned()
    } else {
        req.source.pool.clone()
    };
    // Another project's volume: the caller must see that project.
    let src_project = if req.source.project.is_empty() {
        caller.project.clone()
    } else {
        req.source.project.clone()
    };
    if !caller.can_view(&src_project) {
        return Err(ApiError::NotFound(NOT_FOUND.into()));
    }
    let src_home = home(d, &src_project)?;
    // Reading a volume's files whole: managing volumes where they live, not only viewing.
    for p in [&src_project, &src_home] {
        if !caller.can_view(p) {
            return Err(ApiError::NotFound(NOT_FOUND.into()));
        }
        if !caller
            .rights
            .has(p, rxd_auth::permission::Permission::ManageStorageVolumes)
        {
            return Err(ApiError::Forbidden(format!(
                "Copying a storage volume of project {p:?} needs manage-storage-volumes there"
            )));
        }
    }
    let (name, snap) = match req.source.name.split_once('/') {
        Some((n, s)) => (n.to_owned(), Some(s.to_owned())),
        None => (req.source.name.clone(), None),
    };
    let src_pool = pools::get(d, &src_pool_name)?;
    let volume = {
        let (p, j, n) = (src_pool_name.clone(), src_home.clone(), name.clone());
        d.db(move |s| s.storage_volume(&p, &j, &n))
            .await
            .map_err(not_found(NOT_FOUND))?
    };
    let (path, snapshots) = match snap {
        Some(snap) => {
            let row = get_snapshot(d, &volume, &snap).await?;
            (
                snapshot_dir(&src_pool, &src_home, &name, &row.name)?,
                Vec::new(),
            )
        }
        None => {
            let snapshots = if req.source.volume_only {
                Vec::new()
            } else {
                snapshots(d, &volume).await?
            };
            (dir(&src_pool, &src_home, &name)?, snapshots)
        }
    };
    Ok(Source {
        pool: src_pool,
        volume,
        path,
        snapshots,
    })
}

/// `PUT`/`PATCH` of a volume: its description and config (a `size` is applied now).
pub async fn update(
    d: &Daemon,
    row: &VolumeRow,
    description: String,
    config: Config,
) -> ApiResult<()> {
    let _volumes = d.pools.volumes.lock().await;
    let pool = pools::get(d, &row.pool)?;
    check_config(&pool, &config)?;
    let before = parse(&row.config);
    if flag(&before, "security.shared")? && !flag(&config, "security.shared")? {
        let users = users(d, &row.pool, &row.project, &row.name).await?;
        if users.instances.len() > 1 {
            return Err(ApiError::BadRequest(format!(
                "Storage volume {:?} is attached to {} instances: security.shared stays true until all but one are detached",
                row.name,
                users.instances.len()
            )));
        }
    }
    let size = size_of(&config);
    if size != size_of(&before) {
        check_disk_limit(d, &row.project, size, size_of(&before).unwrap_or(0)).await?;
        let path = dir(&pool, &row.project, &row.name)?;
        let pool2 = pool.clone();
        blocking(move || pool2.set_quota(&path, size).map_err(pools::refusal)).await?;
    }
    let json = to_json(&config)?;
    let (p, j, n) = (row.pool.clone(), row.project.clone(), row.name.clone());
    d.db(move |s| s.update_storage_volume(&p, &j, &n, &description, &json))
        .await
}

/// Refuse while anything uses the volume.
async fn require_unused(d: &Daemon, caller: &Caller, row: &VolumeRow) -> ApiResult<()> {
    let users = users(d, &row.pool, &row.project, &row.name).await?;
    if users.is_empty() {
        return Ok(());
    }
    let mut shown = users.urls(caller);
    if shown.is_empty() {
        shown.push("something you cannot see".into());
    }
    Err(ApiError::BadRequest(format!(
        "The storage volume is still in use ({}): detach it first",
        shown.join(", ")
    )))
}

/// `POST` of a volume: a rename (`name`), or a move to another pool (`pool`). Moves between
/// projects and servers are refused.
pub async fn rename(
    d: &Arc<Daemon>,
    caller: &Caller,
    row: &VolumeRow,
    req: StorageVolumePost,
) -> ApiResult<String> {
    if req.migration || req.target.is_some() {
        return Err(ApiError::BadRequest(
            "Storage volume migration between servers is not supported by rxd yet".into(),
        ));
    }
    if !req.project.is_empty() && req.project != caller.project {
        return move_to_project(d, caller, row, req).await;
    }
    let new_name = if req.name.is_empty() {
        row.name.clone()
    } else {
        req.name.clone()
    };
    valid_name(&new_name)?;
    let new_pool = if req.pool.is_empty() {
        row.pool.clone()
    } else {
        req.pool.clone()
    };
    if new_name == row.name && new_pool == row.pool {
        return Err(ApiError::BadRequest(
            "Nothing to do: the volume already has that name and pool".into(),
        ));
    }
    let _lifecycle = d.pools.lifecycle.read().await;
    let _volumes = d.pools.volumes.lock().await;
    require_unused(d, caller, row).await?;
    let taken = {
        let (p, j, n) = (new_pool.clone(), row.project.clone(), new_name.clone());
        d.db(move |s| s.storage_volume(&p, &j, &n)).await.is_ok()
    };
    if taken {
        return Err(ApiError::Conflict(format!(
            "Volume by that name already exists: {new_name:?}"
        )));
    }
    if new_pool == row.pool {
        let pool = pools::get(d, &row.pool)?;
        let pending = crate::service::intent::begin(
            d,
            &crate::service::intent::Intent::VolumeRename {
                pool: row.pool.clone(),
                project: row.project.clone(),
                volume: None,
                from: row.name.clone(),
                to: new_name.clone(),
            },
        )
        .await?;
        let key = |n: &str| rxd_core::name::instance_key(&row.project, n);
        let moves: Vec<(PathBuf, PathBuf)> = [VolumeType::Custom.dir(), "custom-snapshots"]
            .iter()
            .map(|top| {
                let dir = pool.mount_point().join(top);
                (dir.join(key(&row.name)), dir.join(key(&new_name)))
            })
            .collect();
        let back = moves.clone();
        let moved = blocking(move || {
            for (i, (a, b)) in moves.iter().enumerate() {
                if let Err(e) = layout::move_once(a, b) {
                    for (a, b) in moves[..i].iter() {
                        let _ = layout::move_once(b, a);
                    }
                    return Err(ApiError::internal(e));
                }
            }
            Ok(())
        })
        .await;
        let renamed = match moved {
            Ok(()) => {
                crate::failpoint::hit("storage-volume-rename:moved");
                let (p, j, n, nn) = (
                    row.pool.clone(),
                    row.project.clone(),
                    row.name.clone(),
                    new_name.clone(),
                );
                d.db(move |s| s.rename_storage_volume(&p, &j, &n, &nn))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = renamed {
            let undone = blocking(move || {
                for (a, b) in &back {
                    layout::move_once(b, a).map_err(ApiError::internal)?;
                }
                Ok(())
            })
            .await;
            // Not undone: the intent stays, and the next start puts the files back.
            if undone.is_ok() {
                let _ = pending.end(d).await;
            }
            return Err(e);
        }
        pending.end(d).await?;
        return Ok(url(&row.pool, &row.project, &new_name));
    }
    // Another pool: a copy with every snapshot, then the old one goes.
    drop(_volumes);
    drop(_lifecycle);
    let copy = copy_request(row, new_name.clone(), String::new());
    let made = create(d, caller, &new_pool, copy).await?;
    delete(d, caller, row).await?;
    Ok(made)
}

/// `POST` with another `project` (`lxc storage volume move --target-project`): the volume,
/// with every snapshot, copied into that project's volumes (in `req.pool`, else its own, and
/// as `req.name`, else its own), then the old one deleted; the copy is deleted again if the old
/// one cannot be. The caller needs the right to manage volumes in both projects. Returns the
/// new volume's URL.
async fn move_to_project(
    d: &Arc<Daemon>,
    caller: &Caller,
    row: &VolumeRow,
    req: StorageVolumePost,
) -> ApiResult<String> {
    if !caller.can_view(&req.project) {
        return Err(ApiError::NotFound(format!(
            "Project {:?} not found",
            req.project
        )));
    }
    if !caller.rights.has(
        &req.project,
        rxd_auth::permission::Permission::ManageStorageVolumes,
    ) {
        return Err(ApiError::Forbidden(format!(
            "Moving a storage volume into project {:?} needs manage-storage-volumes there",
            req.project
        )));
    }
    {
        let _volumes = d.pools.volumes.lock().await;
        require_unused(d, caller, row).await?;
    }
    let mut target = caller.clone();
    target.project = req.project.clone();
    let name = if req.name.is_empty() {
        row.name.clone()
    } else {
        req.name.clone()
    };
    let pool = if req.pool.is_empty() {
        row.pool.clone()
    } else {
        req.pool.clone()
    };
    let copy = copy_request(row, name.clone(), caller.project.clone());
    let made = create(d, &target, &pool, copy).await?;
    if let Err(e) = delete(d, caller, row).await {
        let home = home(d, &target.project)?;
        if let Ok(new) = d.db(move |s| s.storage_volume(&pool, &home, &name)).await {
            let _ = delete(d, &target, &new).await;
        }
        return Err(e);
    }
    Ok(made)
}

/// The create request that copies `row`, with every snapshot, as `name` (a move's first half):
/// its config and description kept, the source named in `source_project` (empty: the caller's).
fn copy_request(row: &VolumeRow, name: String, source_project: String) -> StorageVolumesPost {
    StorageVolumesPost {
        config: parse(&row.config),
        description: row.description.clone(),
        name,
        kind: "custom".into(),
        source: rxd_api::storage::StorageVolumeSource {
            name: row.name.clone(),
            kind: "copy".into(),
            pool: row.pool.clone(),
            project: source_project,
            ..Default::default()
        },
        content_type: "filesystem".into(),
    }
}

/// `DELETE` of a volume: refused while anything uses it; its snapshots go with it.
pub async fn delete(d: &Daemon, caller: &Caller, row: &VolumeRow) -> ApiResult<()> {
    let _volumes = d.pools.volumes.lock().await;
    require_unused(d, caller, row).await?;
    let pool = pools::get(d, &row.pool)?;
    let snaps = snapshots(d, row).await?;
    let (p, j, n) = (row.pool.clone(), row.project.clone(), row.name.clone());
    d.db(move |s| s.delete_storage_volume(&p, &j, &n)).await?;
    crate::failpoint::hit("storage-volume-delete:row-deleted");
    let mut paths = Vec::new();
    for s in &snaps {
        paths.push(snapshot_dir(&pool, &row.project, &row.name, &s.name)?);
    }
    paths.push(dir(&pool, &row.project, &row.name)?);
    blocking(move || {
        for path in &paths {
            pool.delete_volume(path).map_err(pools::refusal)?;
        }
        Ok(())
    })
    .await
}

/// `POST .../snapshots`: a read-only snapshot of the volume now. Returns its name.
pub async fn snapshot(
    d: &Daemon,
    row: &VolumeRow,
    req: StorageVolumeSnapshotsPost,
) -> ApiResult<String> {
    snapshot_at(d, row, req, crate::sync::now_unix()).await
}

/// A snapshot as [`snapshot`] takes it, named (when `req` names none) and given its default
/// expiry at `now`, the scheduler's time (a test's shortened minutes); recorded as made at
/// the wall clock's.
pub async fn snapshot_at(
    d: &Daemon,
    row: &VolumeRow,
    req: StorageVolumeSnapshotsPost,
    now: i64,
) -> ApiResult<String> {
    let _volumes = d.pools.volumes.lock().await;
    // Re-read under the lock: the volume may have been changed or deleted meanwhile.
    let (p, j, n) = (row.pool.clone(), row.project.clone(), row.name.clone());
    let row = &d.db(move |s| s.storage_volume(&p, &j, &n)).await?;
    let pool = pools::get(d, &row.pool)?;
    let config = parse(&row.config);
    let taken = snapshots(d, row).await?;
    let name = if req.name.is_empty() {
        let names: Vec<&str> = taken.iter().map(|s| s.name.as_str()).collect();
        crate::service::snapshot_names::next_name_among(&config, &names, now)?
    } else {
        req.name.clone()
    };
    crate::service::snapshot_names::valid_name(&name)?;
    if taken.iter().any(|s| s.name == name) {
        return Err(ApiError::Conflict(format!(
            "Snapshot {name:?} already exists"
        )));
    }
    let expires_at = match req.expires_at.as_deref() {
        None => {
            Some(crate::service::snapshot_names::default_expiry(&config, now)).filter(|t| *t > 0)
        }
        Some("") | Some("0001-01-01T00:00:00Z") => None,
        Some(t) => Some(parse_time(t)?),
    };
    let from = dir(&pool, &row.project, &row.name)?;
    let to = snapshot_dir(&pool, &row.project, &row.name, &name)?;
    {
        let (pool2, to2) = (pool.clone(), to.clone());
        blocking(move || {
            snapshot_parent(&to2)?;
            pools::clone_tree(&pool2, &from, &to2, true).map(drop)
        })
        .await?;
    }
    let snap = VolumeSnapshotRow {
        pool: row.pool.clone(),
        project: row.project.clone(),
        volume: row.name.clone(),
        name: name.clone(),
        description: String::new(),
        config: row.config.clone(),
        created_at: crate::sync::now_unix(),
        expires_at,
    };
    if let Err(e) = d.db(move |s| s.create_storage_volume_snapshot(&snap)).await {
        let _ = tokio::task::spawn_blocking(move || pool.delete_volume(&to)).await;
        return Err(e);
    }
    Ok(name)
}

/// `/1.0/storage-pools/<pool>/volumes/custom/<volume>/snapshots/<snap>[?project=]`.
pub fn snapshot_url(row: &VolumeRow, snap: &str) -> String {
    let base = url(&row.pool, "default", &row.name);
    format!(
        "{base}/snapshots/{}{}",
        rxd_core::profile::url_segment(snap),
        project_suffix(&row.project)
    )
}

/// The seed of a volume's schedule: `@hourly` and the like fall on a minute of its own.
pub fn schedule_seed(row: &VolumeRow) -> String {
    format!("{}/{}/{}", row.pool, row.project, row.name)
}

/// The name the volume's next snapshot gets by its `snapshots.pattern` (default `snap%d`).
pub async fn next_snapshot_name(d: &Daemon, row: &VolumeRow) -> ApiResult<String> {
    let taken = snapshots(d, row).await?;
    let names: Vec<&str> = taken.iter().map(|s| s.name.as_str()).collect();
    crate::service::snapshot_names::next_name_among(
        &parse(&row.config),
        &names,
        crate::sync::now_unix(),
    )
}

pub fn parse_time(t: &str) -> ApiResult<i64> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| ApiError::BadRequest(format!("Invalid expires_at {t:?}")))
}

pub async fn update_snapshot(d: &Daemon, snap: VolumeSnapshotRow) -> ApiResult<()> {
    d.db(move |s| s.update_storage_volume_snapshot(&snap)).await
}

pub async fn rename_snapshot(
    d: &Daemon,
    row: &VolumeRow,
    snap: &VolumeSnapshotRow,
    new: &str,
) -> ApiResult<()> {
    crate::service::snapshot_names::valid_name(new)?;
    let _volumes = d.pools.volumes.lock().await;
    let pool = pools::get(d, &row.pool)?;
    let taken = get_snapshot(d, row, new).await.is_ok();
    if taken {
        return Err(ApiError::Conflict(format!(
            "Snapshot {new:?} already exists"
        )));
    }
    let from = snapshot_dir(&pool, &row.project, &row.name, &snap.name)?;
    let to = snapshot_dir(&pool, &row.project, &row.name, new)?;
    let pending = crate::service::intent::begin(
        d,
        &crate::service::intent::Intent::VolumeRename {
            pool: row.pool.clone(),
            project: row.project.clone(),
            volume: Some(row.name.clone()),
            from: snap.name.clone(),
            to: new.to_owned(),
        },
    )
    .await?;
    {
        let (pool2, from2, to2) = (pool.clone(), from.clone(), to.clone());
        if let Err(e) =
            blocking(move || pool2.rename_volume(&from2, &to2).map_err(pools::refusal)).await
        {
            let _ = pending.end(d).await;
            return Err(e);
        }
    }
    let (p, j, n, s, nn) = (
        row.pool.clone(),
        row.project.clone(),
        row.name.clone(),
        snap.name.clone(),
        new.to_owned(),
    );
    if let Err(e) = d
        .db(move |st| st.rename_storage_volume_snapshot(&p, &j, &n, &s, &nn))
        .await
    {
        let _ = tokio::task::spawn_blocking(move || pool.rename_volume(&to, &from)).await;
        let _ = pending.end(d).await;
        return Err(e);
    }
    pending.end(d).await
}

pub async fn delete_snapshot(
    d: &Daemon,
    row: &VolumeRow,
    snap: &VolumeSnapshotRow,
) -> ApiResult<()> {
    let _volumes = d.pools.volumes.lock().await;
    remove_snapshot(d, row, snap).await
}

/// Deletes the snapshot `name` of `row` if it is still there and still expired at `now`
/// (renamed or given a new expiry meanwhile: left alone). Whether it deleted it.
pub async fn delete_expired_snapshot(
    d: &Daemon,
    row: &VolumeRow,
    name: &str,
    now: i64,
) -> ApiResult<bool> {
    let _volumes = d.pools.volumes.lock().await;
    let (p, j, v, n) = (
        row.pool.clone(),
        row.project.clone(),
        row.name.clone(),
        name.to_owned(),
    );
    let snap = match d
        .db(move |s| s.storage_volume_snapshot(&p, &j, &v, &n))
        .await
    {
        Ok(snap) => snap,
        Err(ApiError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    if !snap.expires_at.is_some_and(|t| t > 0 && t <= now) {
        return Ok(false);
    }
    remove_snapshot(d, row, &snap).await.map(|()| true)
}

/// The row, then the files, of a volume's snapshot (the volumes lock held by the caller).
async fn remove_snapshot(d: &Daemon, row: &VolumeRow, snap: &VolumeSnapshotRow) -> ApiResult<()> {
    let pool = pools::get(d, &row.pool)?;
    let path = snapshot_dir(&pool, &row.project, &row.name, &snap.name)?;
    let (p, j, n, s) = (
        row.pool.clone(),
        row.project.clone(),
        row.name.clone(),
        snap.name.clone(),
    );
    d.db(move |st| st.delete_storage_volume_snapshot(&p, &j, &n, &s))
        .await?;
    blocking(move || pool.delete_volume(&path).map_err(pools::refusal)).await
}

/// The hidden name a restore builds the snapshot's copy under (work in progress: recovery
/// removes it).
fn restore_dir(pool: &Pool, project: &str, name: &str) -> PathBuf {
    pool.mount_point()
        .join(VolumeType::Custom.dir())
        .join(format!(
            ".restore-{}",
            rxd_core::name::instance_key(project, name)
        ))
}

/// `PUT` of a volume with `restore`: the volume becomes a writable copy of the snapshot,
/// exchanged into place at once; refused while a running instance has it mounted.
pub async fn restore(d: &Daemon, row: &VolumeRow, snap: &str) -> ApiResult<()> {
    let _volumes = d.pools.volumes.lock().await;
    let snap = get_snapshot(d, row, snap).await?;
    let users = users(d, &row.pool, &row.project, &row.name).await?;
    let running: Vec<String> = users
        .instances
        .iter()
        .filter(|(p, n)| {
            d.runtime
                .init(&rxd_core::name::instance_key(p, n))
                .is_some()
        })
        .map(|(_, n)| n.clone())
        .collect();
    if !running.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "Cannot restore a storage volume used by running instances ({})",
            running.join(", ")
        )));
    }
    let pool = pools::get(d, &row.pool)?;
    let from = snapshot_dir(&pool, &row.project, &row.name, &snap.name)?;
    let target = dir(&pool, &row.project, &row.name)?;
    let tmp = restore_dir(&pool, &row.project, &row.name);
    let size = size_of(&parse(&row.config));
    blocking(move || {
        // A leftover of a restore killed midway.
        remove_any(&tmp)?;
        pools::clone_tree(&pool, &from, &tmp, false)?;
        if pool.supports_quota() {
            // The snapshot's copy starts with no limit of its own: the volume's applies.
            if let Err(e) = pool.set_quota(&tmp, size) {
                remove_any(&tmp)?;
                return Err(pools::refusal(e));
            }
        }
        crate::failpoint::hit("storage-volume-restore:copied");
        layout::exchange(&tmp, &target).map_err(ApiError::internal)?;
        crate::failpoint::hit("storage-volume-restore:swapped");
        // `tmp` now holds the volume as it was.
        remove_any(&tmp)
    })
    .await
}

/// Removes a subvolume tree or a directory tree at `path`; nothing there is no error.
fn remove_any(path: &std::path::Path) -> ApiResult<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    if rxd_storage::is_subvolume(path).unwrap_or(false) {
        rxd_storage::delete_subvolume_tree(path).map_err(pools::refusal)
    } else {
        layout::remove_tree(path).map_err(ApiError::internal)
    }
}

/// Makes the snapshot directory a volume's snapshot goes in (`custom-snapshots/<key>`, 0700).
fn snapshot_parent(path: &std::path::Path) -> ApiResult<()> {
    use std::os::unix::fs::DirBuilderExt;
    match path.parent() {
        Some(parent) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(ApiError::internal),
        None => Ok(()),
    }
}

/// `GET .../state`: bytes used (btrfs with quotas on) and the size limit.
pub async fn state(d: &Daemon, row: &VolumeRow) -> ApiResult<Option<StorageVolumeStateUsage>> {
    let pool = pools::get(d, &row.pool)?;
    let path = dir(&pool, &row.project, &row.name)?;
    let total = size_of(&parse(&row.config)).map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let used = blocking(move || pool.usage(&path).map_err(pools::refusal)).await?;
    Ok(used.map(|used| StorageVolumeStateUsage { used, total }))
}

/// The volume disks among an instance's expanded `devices`, checked: each names a volume of the
/// instance's project in a pool this server has, and one not attached to another instance
/// unless it is `security.shared`. `instance` is the one being made or changed (`from`, its
/// project and name before a move, is the same one). Part of `instances::confine`'s device
/// check.
pub async fn check_attach(
    d: &Daemon,
    caller: &Caller,
    project: &str,
    instance: &str,
    from: Option<(&str, &str)>,
    devices: &Devices,
) -> ApiResult<()> {
    let disks = rxd_core::devices::volume_disks(devices);
    if disks.is_empty() {
        return Ok(());
    }
    // Volumes are not renamed, deleted or re-shared while this looks.
    let _volumes = d.pools.volumes.lock().await;
    let home = home(d, project)?;
    if home != project
        && !caller.rights.has(
            &home,
            rxd_auth::permission::Permission::ManageStorageVolumes,
        )
    {
        return Err(ApiError::Forbidden(format!(
            "Project {project:?} uses the storage volumes of project {home:?}, where you may not manage them"
        )));
    }
    for disk in disks {
        let refuse = |why: String| {
            ApiError::BadRequest(format!(
                "Invalid devices: Device validation failed for {:?}: {why}",
                disk.device
            ))
        };
        if d.pools.get(&disk.pool).is_none() {
            return Err(refuse(format!("Storage pool {:?} not found", disk.pool)));
        }
        let (p, j, n) = (disk.pool.clone(), home.clone(), disk.volume.clone());
        let row = d
            .db(move |s| s.storage_volume(&p, &j, &n))
            .await
            .map_err(|_| {
                refuse(format!(
                    "Storage volume {:?} not found in pool {:?}",
                    disk.volume, disk.pool
                ))
            })?;
        if flag(&parse(&row.config), "security.shared")? {
            continue;
        }
        let users = users(d, &disk.pool, &home, &disk.volume).await?;
        if let Some((p, other)) = users.instances.iter().find(|(p, n)| {
            !(p == project && n == instance)
                && from.is_none_or(|(fp, fname)| !(p == fp && n == fname))
        }) {
            let other = if caller.can_view(p) {
                format!("instance {other:?}")
            } else {
                "another instance".to_owned()
            };
            return Err(refuse(format!(
                "Storage volume {:?} is already attached to {other}; set security.shared=true on the volume to attach it to more than one",
                disk.volume
            )));
        }
    }
    Ok(())
}

/// Before an instance in `project` starts with `devices`: each volume disk names a volume that
/// exists now (it may have been deleted since it was attached), and one that is not
/// `security.shared` is mounted in no other running instance. The caller holds the volumes lock
/// through the start, so no restore, rename or delete runs under it.
pub async fn check_start(
    d: &Daemon,
    project: &str,
    instance: &str,
    devices: &Devices,
) -> ApiResult<()> {
    let disks = rxd_core::devices::volume_disks(devices);
    if disks.is_empty() {
        return Ok(());
    }
    let home = home(d, project)?;
    for disk in disks {
        let (p, j, n) = (disk.pool.clone(), home.clone(), disk.volume.clone());
        let Ok(row) = d.db(move |s| s.storage_volume(&p, &j, &n)).await else {
            if !disk.required {
                continue;
            }
            return Err(ApiError::BadRequest(format!(
                "Device {:?}: storage volume {:?} not found in pool {:?}",
                disk.device, disk.volume, disk.pool
            )));
        };
        if flag(&parse(&row.config), "security.shared")? {
            continue;
        }
        let users = users(d, &disk.pool, &home, &disk.volume).await?;
        let running = users.instances.iter().any(|(p, n)| {
            !(p == project && n == instance)
                && d.runtime
                    .init(&rxd_core::name::instance_key(p, n))
                    .is_some()
        });
        if running {
            return Err(ApiError::BadRequest(format!(
                "Device {:?}: storage volume {:?} is in use by another running instance and is not security.shared",
                disk.device, disk.volume
            )));
        }
    }
    Ok(())
}

/// A profile's new devices, for the instances that use it: a volume that is not
/// `security.shared` may reach one instance only.
pub async fn check_profile_attach(
    d: &Daemon,
    home_project: &str,
    profile: &str,
    devices: &Devices,
    instances: usize,
) -> ApiResult<()> {
    for disk in rxd_core::devices::volume_disks(devices) {
        let (p, j, n) = (
            disk.pool.clone(),
            home(d, home_project)?,
            disk.volume.clone(),
        );
        let Ok(row) = d.db(move |s| s.storage_volume(&p, &j, &n)).await else {
            continue;
        };
        if instances > 1 && !flag(&parse(&row.config), "security.shared")? {
            return Err(ApiError::BadRequest(format!(
                "Profile {profile:?} is used by {instances} instances: storage volume {:?} can be attached to more than one only with security.shared=true",
                disk.volume
            )));
        }
    }
    Ok(())
}

/// The mounts of the volume disks among `devices` (instance in `project`), for the container
/// helper. A volume whose pool is not mounted here gives a mount of a path that does not
/// exist, so a required one fails the start with the helper's error.
pub fn mounts(d: &Daemon, project: &str, devices: &Devices) -> Vec<rxd_core::devices::DiskMount> {
    let disks = rxd_core::devices::volume_disks(devices);
    if disks.is_empty() {
        return Vec::new();
    }
    let home = home(d, project).unwrap_or_else(|_| project.to_owned());
    disks
        .iter()
        .map(|disk| {
            let path = d
                .pools
                .get(&disk.pool)
                .and_then(|pool| dir(&pool, &home, &disk.volume).ok())
                .unwrap_or_else(|| {
                    crate::service::layout::pool_dir(d, &disk.pool)
                        .join("custom")
                        .join(rxd_core::name::instance_key(&home, &disk.volume))
                });
            disk.mount(path)
        })
        .collect()
}

/// Remove what a killed create, delete or restore left in each pool's `custom/` and
/// `custom-snapshots/`: directories without a row, and hidden work in progress.
pub async fn sweep(d: &Daemon) {
    let rows = match d.db(|s| s.storage_volumes(None, None)).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "listing storage volumes for recovery");
            return;
        }
    };
    let mut keep: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut keep_snaps: BTreeMap<(String, String), std::collections::BTreeSet<String>> =
        BTreeMap::new();
    for row in &rows {
        let key = rxd_core::name::instance_key(&row.project, &row.name);
        keep.entry(row.pool.clone())
            .or_default()
            .insert(key.clone());
        match snapshots(d, row).await {
            Ok(snaps) => keep_snaps
                .entry((row.pool.clone(), key))
                .or_default()
                .extend(snaps.into_iter().map(|s| s.name)),
            Err(e) => {
                // Nothing is removed on a partial view.
                tracing::warn!(error = %e, "listing storage volume snapshots for recovery");
                return;
            }
        }
    }
    for pool in d.pools.all() {
        let custom = pool.mount_point().join(VolumeType::Custom.dir());
        let kept = keep.get(pool.name()).cloned().unwrap_or_default();
        let mut gone = Vec::new();
        for name in all_entries(&custom) {
            if layout::in_progress(&name) || !kept.contains(&name) {
                gone.push(custom.join(&name));
            }
        }
        let snapshots_dir = pool.mount_point().join("custom-snapshots");
        for volume in all_entries(&snapshots_dir) {
            let kept = keep_snaps
                .get(&(pool.name().to_owned(), volume.clone()))
                .cloned()
                .unwrap_or_default();
            for snap in all_entries(&snapshots_dir.join(&volume)) {
                if !kept.contains(&snap) {
                    gone.push(snapshots_dir.join(&volume).join(&snap));
                }
            }
            if kept.is_empty() {
                gone.push(snapshots_dir.join(&volume));
            }
        }
        let _ = tokio::task::spawn_blocking(move || {
            for path in gone {
                tracing::warn!(path = %path.display(), "removing a storage volume left without a record");
                if let Err(e) = remove_any(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "removing a leftover volume");
                }
            }
        })
        .await;
    }
}

/// Every name in a directory, hidden ones included.
fn all_entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
