//! Instance backups (`lxc export`, `lxc import`) in LXD 5.0's layout: a tarball holding
//! `backup/index.yaml` (what it is: the instance's config, its snapshots' configs, its pool),
//! then `backup/container/` (`backup.yaml`, `metadata.yaml`, `templates/`, `rootfs/`) and
//! `backup/snapshots/<name>/` likewise, files in the container's own ids. Stored as
//! `<state>/backups/<uuid>` (0600 in a 0700 directory) with a row each.
//!
//! An import is hostile input, and the lesson of CVE-2026-34178 and CVE-2026-9640 applies: the
//! one config read is `index.yaml`'s (`backup.yaml` files are drained unread), its `volatile.*`
//! keys are dropped but the base image's, and the instance *and every snapshot it brings* pass
//! [`instances::confine`] for the target project, as a restore later checks again. The tarball
//! is unpacked by rxd-image's writer (the same rules as an image: no escaping path or link, no
//! device node, bounded), only under `backup/container/` and the snapshots `index.yaml` lists.
//! The new instance is recorded first without a config and finished last, as a create is, so
//! recovery removes an interrupted import with its files.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::copy::copied_config;
use crate::service::images::UnpackBudget;
use crate::service::instances::{self, confine, idmap_want, set_next_idmap, Keyed};
use crate::service::{expand, layout, pools};
use crate::state::Daemon;
use rxd_api::backup::{BackupConfig, BackupIndex, InstanceBackup, InstanceBackupsPost};
use rxd_store::{BackupRow, InstanceRow, SnapshotRow};
use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Backups an instance may have at once (each a whole copy of its files on the host).
const MAX_BACKUPS: usize = 8;

/// Go's zero time: a backup that never expires.
const NEVER: &str = "0001-01-01T00:00:00Z";

/// The backups directory, made if missing (uploads of `lxc import` land there too).
pub fn make_upload_dir(d: &Daemon) -> ApiResult<PathBuf> {
    make_dir(d)
}

fn make_dir(d: &Daemon) -> ApiResult<PathBuf> {
    let dir = layout::backups_dir(d);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(dir),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// `/1.0/instances/<instance>/backups/<name>`.
pub fn url(instance: &str, name: &str) -> String {
    format!(
        "/1.0/instances/{}/backups/{}",
        rxd_core::profile::url_segment(instance),
        rxd_core::profile::url_segment(name)
    )
}

pub fn view(row: &BackupRow) -> InstanceBackup {
    InstanceBackup {
        name: row.name.clone(),
        created_at: crate::tokens::rfc3339(row.created_at),
        expires_at: row
            .expires_at
            .map_or_else(|| NEVER.to_owned(), crate::tokens::rfc3339),
        instance_only: row.instance_only,
        container_only: row.instance_only,
        optimized_storage: row.optimized_storage,
    }
}

fn valid_name(name: &str) -> ApiResult<()> {
    crate::service::snapshot_names::valid_name(name)
        .map_err(|_| ApiError::BadRequest(format!("Invalid backup name {name:?}: letters, digits, '-' and '_', starting with a letter or digit, at most 63")))
}

pub async fn list(d: &Daemon, row: &InstanceRow) -> ApiResult<Vec<BackupRow>> {
    let (p, n) = (row.project.clone(), row.name.clone());
    d.db(move |s| s.backups(&p, &n)).await
}

pub async fn get(d: &Daemon, row: &InstanceRow, name: &str) -> ApiResult<BackupRow> {
    let (p, n, b) = (row.project.clone(), row.name.clone(), name.to_owned());
    d.db(move |s| s.backup(&p, &n, &b))
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound("Instance backup not found".into()),
            other => other,
        })
}

/// The file holding a backup.
pub fn file(d: &Daemon, row: &BackupRow) -> PathBuf {
    layout::backups_dir(d).join(&row.file)
}

/// The name a new backup gets and checks on the request, before its operation starts.
pub async fn prepare(
    d: &Daemon,
    row: &InstanceRow,
    req: &InstanceBackupsPost,
) -> ApiResult<String> {
    compression(d, row, &req.compression_algorithm)?;
    let taken = list(d, row).await?;
    let name = if req.name.is_empty() {
        (0..)
            .map(|i| format!("backup{i}"))
            .find(|n| !taken.iter().any(|b| &b.name == n))
            .unwrap_or_default()
    } else {
        req.name.clone()
    };
    valid_name(&name)?;
    if taken.len() >= MAX_BACKUPS {
        return Err(ApiError::BadRequest(format!(
            "Instance {:?} has {MAX_BACKUPS} backups already: delete one first",
            row.name
        )));
    }
    if taken.iter().any(|b| b.name == name) {
        return Err(ApiError::Conflict(format!(
            "Backup {name:?} already exists"
        )));
    }
    Ok(name)
}

fn compression(
    d: &Daemon,
    row: &InstanceRow,
    asked: &str,
) -> ApiResult<rxd_image::pack::Compression> {
    let configured = d
        .project(&row.project)
        .and_then(|p| p.config.get("backups.compression_algorithm").cloned())
        .or_else(|| {
            crate::sync::read(&d.config)
                .get("backups.compression_algorithm")
                .cloned()
        });
    let name = if asked.is_empty() {
        configured.unwrap_or_else(|| "gzip".into())
    } else {
        asked.to_owned()
    };
    rxd_image::pack::Compression::parse(&name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Unsupported compression algorithm {name:?}: rxd has none, gzip, xz and zstd"
        ))
    })
}

/// Write the backup `name` of `row` (see [`prepare`]) and record it.
pub async fn create(
    d: &Arc<Daemon>,
    caller: &Caller,
    row: &InstanceRow,
    name: &str,
    req: &InstanceBackupsPost,
) -> ApiResult<()> {
    let compression = compression(d, row, &req.compression_algorithm)?;
    let instance_only = req.instance_only || req.container_only;
    let expires_at = match req.expires_at.as_deref() {
        None | Some("") | Some(NEVER) => None,
        Some(t) => Some(crate::service::volumes::parse_time(t)?),
    };
    let key = row.key();
    // No start, stop, rename, restore or delete while it is read.
    let lock = d.runtime.action_lock(&key);
    let _guard = lock.lock().await;
    let row = instances::find(d, &row.project, &row.name).await?;
    // The cap again, under the lock (two requests may have passed `prepare` together).
    if list(d, &row).await?.len() >= MAX_BACKUPS {
        return Err(ApiError::BadRequest(format!(
            "Instance {:?} has {MAX_BACKUPS} backups already: delete one first",
            row.name
        )));
    }
    let dir = make_dir(d)?;
    let file_name = uuid::Uuid::new_v4().simple().to_string();
    let path = dir.join(&file_name);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(ApiError::internal)?;
    let path2 = path.clone();
    // Optimized only where the pool can send its subvolumes (LXD: a plain backup elsewhere).
    let optimized =
        req.optimized_storage && pools::get(d, &row.pool)?.kind() == rxd_storage::DriverKind::Btrfs;
    let packed = if optimized {
        let packed = async {
            let snaps: Vec<SnapshotRow> = if instance_only {
                Vec::new()
            } else {
                let (p, n) = (row.project.clone(), row.name.clone());
                d.db(move |s| s.snapshots(&p, &n)).await?
            };
            let texts = index_yaml(d, caller, &row, &snaps, true, None).await?;
            // What the project may still write (limits.disk), and the server's bound.
            let limit = UnpackBudget::of(d, &row.project)
                .await?
                .limits()
                .max_total_bytes;
            crate::service::optimized::pack(d, &row, &snaps, texts, compression, out, limit).await
        };
        match packed.await {
            Ok(packed) => packed,
            Err(e) => {
                let _ = std::fs::remove_file(&path2);
                return Err(e);
            }
        }
    } else {
        let source = Source::Instance { instance_only };
        match pack(d, caller, &row, source, compression, out, None).await {
            Ok((packed, file)) => {
                match tokio::task::spawn_blocking(move || file.sync_all()).await {
                    Ok(Ok(())) => packed,
                    Ok(Err(e)) => {
                        let _ = std::fs::remove_file(&path2);
                        return Err(ApiError::internal(format!("writing the backup: {e}")));
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&path2);
                        return Err(e.into());
                    }
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path2);
                return Err(e);
            }
        }
    };
    crate::failpoint::hit("instance-backup:written");
    let record = BackupRow {
        project: row.project.clone(),
        instance: row.name.clone(),
        name: name.to_owned(),
        file: file_name,
        created_at: crate::sync::now_unix(),
        expires_at,
        instance_only,
        optimized_storage: optimized,
        compression: format!("{compression:?}").to_lowercase(),
    };
    if let Err(e) = d.db(move |s| s.create_backup(&record)).await {
        let _ = std::fs::remove_file(&path2);
        return Err(e);
    }
    tracing::info!(instance = %row.name, project = %row.project, backup = %name, bytes = packed.size, "instance backup written");
    Ok(())
}

/// What a backup holds: the instance (with its snapshots unless `instance_only`), or one of
/// its snapshots as an instance of its own (a snapshot copied to another server).
pub enum Source {
    Instance { instance_only: bool },
    Snapshot(SnapshotRow),
}

/// A backup of `row` (`source` says what of it) in LXD's layout, written into `out` and handed
/// back with what was written: a running container frozen while its root filesystem is read,
/// owners mapped back to container ids. `limits` bound it (`None`: what the project may still
/// write, under `limits.disk`, and the server's bound). The caller holds the instance's action
/// lock.
pub async fn pack<W: std::io::Write + Send + 'static>(
    d: &Daemon,
    caller: &Caller,
    row: &InstanceRow,
    source: Source,
    compression: rxd_image::pack::Compression,
    out: W,
    limits: Option<rxd_image::Limits>,
) -> ApiResult<(rxd_image::pack::Packed, W)> {
    let key = row.key();
    let (snaps, as_snapshot): (Vec<SnapshotRow>, Option<SnapshotRow>) = match source {
        Source::Instance {
            instance_only: true,
        } => (Vec::new(), None),
        Source::Instance {
            instance_only: false,
        } => {
            let (p, n) = (row.project.clone(), row.name.clone());
            (d.db(move |s| s.snapshots(&p, &n)).await?, None)
        }
        Source::Snapshot(s) => (Vec::new(), Some(s)),
    };
    let index = index_yaml(d, caller, row, &snaps, false, as_snapshot.as_ref()).await?;
    let (index_text, backup_text) = index;
    // The files' map: the snapshot's own when a snapshot is the source.
    let config = match &as_snapshot {
        Some(s) => serde_json::from_str(&s.config).unwrap_or_default(),
        None => instances::config_of(row),
    };
    // Files shifted on disk are written in the container's ids.
    let shift = config
        .get("volatile.last_state.idmap")
        .and_then(|m| instances::parse_idmap(m).ok().flatten())
        .map(|m| rxd_image::IdShift {
            uid_base: m.uid,
            gid_base: m.gid,
            size: m.size,
        });
    let inst_dir = layout::instance_dir(d, &row.pool, &key);
    let snaps_dir = layout::snapshots_dir(d, &row.pool, &key);
    let limits = match limits {
        Some(l) => l,
        None => UnpackBudget::of(d, &row.project).await?.limits(),
    };
    let names: Vec<String> = snaps.iter().map(|s| s.name.clone()).collect();
    // A running container is frozen while its root filesystem is read (as a copy is).
    let read = d.runtime.rootfs_lock(&key);
    let _reading = read.read().await;
    let freeze = d.runtime.init(&key).is_some() && !d.runtime.frozen(&key);
    if freeze {
        d.runtime.freeze(&key, true).await?;
    }
    let packed = tokio::task::spawn_blocking(move || {
        let rootfs = match &as_snapshot {
            Some(snap) => snaps_dir.join(&snap.name).join("rootfs"),
            None => inst_dir.join("rootfs"),
        };
        let snap_roots: Vec<PathBuf> = names
            .iter()
            .map(|n| snaps_dir.join(n).join("rootfs"))
            .collect();
        let mut trees = vec![rxd_image::pack::BackupTree {
            prefix: "backup/container".into(),
            rootfs: &rootfs,
            extras: &inst_dir,
        }];
        for (n, root) in names.iter().zip(&snap_roots) {
            trees.push(rxd_image::pack::BackupTree {
                prefix: format!("backup/snapshots/{n}"),
                rootfs: root,
                extras: &inst_dir,
            });
        }
        rxd_image::pack::pack_backup_to(
            &index_text,
            &backup_text,
            &trees,
            shift.as_ref(),
            compression,
            out,
            &limits,
        )
    })
    .await;
    if freeze {
        if let Err(e) = d.runtime.freeze(&key, false).await {
            tracing::error!(instance = %row.name, error = %e, "could not thaw after a backup");
        }
    }
    match packed {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(ApiError::internal(format!("writing the backup: {e}"))),
        Err(e) => Err(e.into()),
    }
}

/// `index.yaml` and `backup.yaml` of a backup of `row` with `snaps`: the instance, its
/// snapshots, its pool and root volume as LXD writes them.
async fn index_yaml(
    d: &Daemon,
    caller: &Caller,
    row: &InstanceRow,
    snaps: &[SnapshotRow],
    optimized: bool,
    as_snapshot: Option<&SnapshotRow>,
) -> ApiResult<(String, String)> {
    let expanded = expand::expanded(d, row).await?;
    let known = expand::known(d, &row.project).await?;
    let mut instance = crate::views::instance(d, row, 1, expanded);
    // A snapshot sent as an instance of its own: its config, devices and profiles.
    if let Some(s) = as_snapshot {
        let view = crate::views::snapshot(s, &known);
        instance.config = view.config;
        instance.devices = view.devices;
        instance.profiles = view.profiles;
        instance.expanded_config = view.expanded_config;
        instance.expanded_devices = view.expanded_devices;
    }
    instance.status = "Stopped".into();
    instance.status_code = 102;
    // The root disk rxd implies (its pool) written out: LXD's import looks for one.
    let implied_root = |devices: &mut rxd_api::instance::Devices| {
        if !devices.values().any(rxd_core::devices::is_root_disk) {
            devices.insert(
                "root".into(),
                [("type", "disk"), ("path", "/"), ("pool", row.pool.as_str())]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            );
        }
    };
    implied_root(&mut instance.expanded_devices);
    lxd_keys(&mut instance.config);
    lxd_keys(&mut instance.expanded_config);
    let pool_row = {
        let p = row.pool.clone();
        d.db(move |s| s.storage_pool(&p)).await?
    };
    let driver = pool_row.driver.clone();
    let pool = pools::view(d, caller, pool_row).await;
    let config = BackupConfig {
        container: Some(instance),
        snapshots: snaps
            .iter()
            .map(|s| {
                let mut view = crate::views::snapshot(s, &known);
                implied_root(&mut view.expanded_devices);
                lxd_keys(&mut view.config);
                lxd_keys(&mut view.expanded_config);
                view
            })
            .collect(),
        pool: Some(pool),
        volume: Some(rxd_api::storage::StorageVolume {
            name: row.name.clone(),
            kind: "container".into(),
            location: "none".into(),
            content_type: "filesystem".into(),
            project: row.project.clone(),
            created_at: crate::tokens::rfc3339(row.created_at),
            ..Default::default()
        }),
    };
    let index = BackupIndex {
        name: row.name.clone(),
        backend: driver,
        pool: row.pool.clone(),
        snapshots: snaps.iter().map(|s| s.name.clone()).collect(),
        optimized: Some(optimized),
        optimized_header: Some(optimized),
        kind: "container".into(),
        config: Some(config.clone()),
    };
    let yaml = |v: &dyn erased::Yaml| v.text();
    Ok((yaml(&index)?, yaml(&config)?))
}

/// A config as LXD 5.0 can take it back: rxd's own `volatile.*` keys (the lxcfs binds, the
/// quota state) left out, LXD's and its devices' kept (LXD refuses a key it does not know).
fn lxd_keys(config: &mut BTreeMap<String, String>) {
    const RXD_ONLY: &[&str] = &["volatile.lxcfs", "volatile.rootfs.quota"];
    config.retain(|k, _| !RXD_ONLY.contains(&k.as_str()));
}

/// YAML text of a wire value, through its JSON form (LXD's field names).
mod erased {
    use crate::error::{ApiError, ApiResult};

    pub trait Yaml {
        fn text(&self) -> ApiResult<String>;
    }

    impl<T: serde::Serialize> Yaml for T {
        fn text(&self) -> ApiResult<String> {
            let value = serde_json::to_value(self).map_err(ApiError::internal)?;
            serde_norway::to_string(&value).map_err(ApiError::internal)
        }
    }
}

pub async fn rename(d: &Daemon, row: &InstanceRow, backup: &BackupRow, new: &str) -> ApiResult<()> {
    valid_name(new)?;
    let (p, n, b, nn) = (
        row.project.clone(),
        row.name.clone(),
        backup.name.clone(),
        new.to_owned(),
    );
    d.db(move |s| s.rename_backup(&p, &n, &b, &nn)).await
}

/// Row first, then the file (a file without a row is removed at start).
pub async fn delete(d: &Daemon, row: &InstanceRow, backup: &BackupRow) -> ApiResult<()> {
    let (p, n, b) = (row.project.clone(), row.name.clone(), backup.name.clone());
    d.db(move |s| s.delete_backup(&p, &n, &b)).await?;
    match std::fs::remove_file(file(d, backup)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Delete the backups whose expiry has come (`lxc export` asks a day, in case it never gets
/// to delete its backup itself): row, then file.
pub async fn prune_expired(d: &Daemon, now: i64) {
    let Ok(rows) = d.db(move |s| s.expired_backups(now)).await else {
        return;
    };
    for b in rows {
        let (p, n, name) = (b.project.clone(), b.instance.clone(), b.name.clone());
        if d.db(move |s| s.delete_backup(&p, &n, &name)).await.is_ok() {
            let _ = std::fs::remove_file(file(d, &b));
            tracing::info!(instance = %b.instance, project = %b.project, backup = %b.name, "expired backup deleted");
        }
    }
}

/// Remove backup files no row owns (an instance deleted with its backups, a kill between a
/// file and its row), and expired backups.
pub async fn sweep(d: &Daemon) {
    let Ok(files) = d.db(|s| s.backup_files()).await else {
        return;
    };
    for entry in std::fs::read_dir(layout::backups_dir(d))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !files.contains(&name) {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "removing a backup file no row owns");
            }
        }
    }
}

/// What an import takes from `index.yaml`, checked.
struct Plan {
    index: BackupIndex,
    instance: rxd_api::instance::Instance,
    snapshots: Vec<rxd_api::snapshot::InstanceSnapshot>,
}

fn plan(text: &str) -> ApiResult<Plan> {
    let bad = |why: String| ApiError::BadRequest(format!("Invalid backup: {why}"));
    let index: BackupIndex =
        serde_norway::from_str(text).map_err(|e| bad(format!("index.yaml: {e}")))?;
    if !matches!(index.kind.as_str(), "" | "container") {
        return Err(bad(format!(
            "it holds a {:?}, and rxd runs containers only",
            index.kind
        )));
    }
    if index.optimized == Some(true) && index.backend != "btrfs" {
        return Err(bad(format!(
            "it is an optimized backup of a {:?} pool; rxd imports optimized backups of btrfs pools only",
            index.backend
        )));
    }
    let config = index
        .config
        .clone()
        .ok_or_else(|| bad("index.yaml has no config (a backup older than LXD 4.0)".into()))?;
    let instance = config
        .container
        .ok_or_else(|| bad("index.yaml has no container".into()))?;
    let names: Vec<&str> = config.snapshots.iter().map(|s| s.name.as_str()).collect();
    let listed: Vec<&str> = index.snapshots.iter().map(String::as_str).collect();
    if names != listed {
        return Err(bad(format!(
            "index.yaml lists snapshots {listed:?} but configures {names:?}"
        )));
    }
    for s in &index.snapshots {
        if !rxd_core::name::valid_snapshot_name(s) {
            return Err(bad(format!("invalid snapshot name {s:?}")));
        }
    }
    if !matches!(instance.architecture.as_str(), "" | "x86_64") {
        return Err(bad(format!(
            "its architecture is {:?}; this server runs x86_64",
            instance.architecture
        )));
    }
    Ok(Plan {
        index,
        instance,
        snapshots: config.snapshots,
    })
}

/// The instance a migration's target was asked to make, as the client described it: it takes
/// the place of the backup's own instance entry (the snapshots still come from the stream).
pub struct Requested {
    pub config: BTreeMap<String, String>,
    pub devices: rxd_api::instance::Devices,
    /// `None`: the source's; `[]`: none.
    pub profiles: Option<Vec<String>>,
    pub description: String,
    pub ephemeral: bool,
}

/// `POST /1.0/instances` with a backup tarball (already received at `upload`): the new
/// instance `name` (else the backup's) in `pool` (else the backup's if this server has it,
/// else the default profile's), as `requested` says when a migration brought it. Returns the
/// instance's name.
pub async fn import(
    d: &Arc<Daemon>,
    caller: &Caller,
    upload: &Path,
    name: Option<String>,
    pool: Option<String>,
    hostids: crate::hostids::HostIds,
    requested: Option<Requested>,
) -> ApiResult<String> {
    let budget = UnpackBudget::of(d, &caller.project).await?;
    let limits = budget.limits();
    let text = {
        let upload = upload.to_owned();
        tokio::task::spawn_blocking(move || rxd_image::read_backup_index(&upload))
            .await?
            .map_err(|e| ApiError::BadRequest(format!("Invalid backup: {e}")))?
    };
    let mut plan = plan(&text)?;
    let optimized = plan.index.optimized == Some(true);
    if optimized && requested.is_some() {
        return Err(ApiError::BadRequest(
            "A migration carries plain backups only".into(),
        ));
    }
    if optimized && !caller.rights.is_admin() {
        return Err(ApiError::BadRequest(
            "Optimized (btrfs send) backups are imported by server administrators only: btrfs parses their streams as root, and a stream may reach any subvolume of the pool".into(),
        ));
    }
    // The ids the files carry: the container's in a plain backup; an optimized one holds the
    // subvolumes as they were on disk, in the map its config says.
    let on_disk = |config: &BTreeMap<String, String>| -> ApiResult<String> {
        if !optimized {
            return Ok("[]".into());
        }
        let map = config
            .get("volatile.last_state.idmap")
            .cloned()
            .unwrap_or_else(|| "[]".into());
        // One range each for users and groups, as rxd maps them: the files of a map with more
        // (LXD's raw.idmap) would be shifted in part.
        let ranges = serde_json::from_str::<Vec<serde_json::Value>>(&map)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if ranges > 2 || instances::parse_idmap(&map).is_err() {
            return Err(ApiError::BadRequest(format!(
                "Invalid backup: volatile.last_state.idmap {map:?} is not an id map rxd can shift (one range for users, one for groups)"
            )));
        }
        Ok(map)
    };
    let files_map = on_disk(&plan.instance.config)?;
    let mut snapshot_maps = BTreeMap::new();
    for s in &plan.snapshots {
        let map = if s.config.contains_key("volatile.last_state.idmap") {
            on_disk(&s.config)?
        } else {
            files_map.clone()
        };
        snapshot_maps.insert(s.name.clone(), map);
    }
    let mut no_profiles = false;
    let migrated = requested.is_some();
    if let Some(r) = requested {
        plan.instance.config = r.config;
        plan.instance.devices = r.devices;
        plan.instance.description = r.description;
        plan.instance.ephemeral = r.ephemeral;
        if let Some(p) = r.profiles {
            no_profiles = p.is_empty();
            plan.instance.profiles = p;
        }
    }
    let name = name.unwrap_or_else(|| plan.instance.name.clone());
    if !rxd_core::name::valid_instance_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "Invalid instance name {name:?}"
        )));
    }
    // A backup's config as a copy takes it (rxd keeps no `volatile.uuid` of its own).
    let mut config = copied_config(&plan.instance.config);
    rxd_core::instance_config::validate(&config)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // A migration's request keeps the MACs an administrator's move brought (the request was
    // filtered by `routes::instances::post_json`); a backup's never count (it may be restored
    // as a copy).
    config.extend(rxd_core::devices::carried_macs(
        &plan.instance.config,
        migrated,
    ));
    let mut devices = plan.instance.devices.clone();
    // The root disk names a pool of this server: the one asked for, else the backup's when
    // this server has it, else whatever the profiles give.
    // A migration's pool is the request's (its root disk), never the sending server's choice.
    let wanted_pool = pool.or_else(|| {
        Some(plan.index.pool.clone())
            .filter(|p| !migrated && !p.is_empty() && d.pools.get(p).is_some())
    });
    if let Some(p) = &wanted_pool {
        pools::get(d, p)?;
        if let Some(root) = devices
            .values_mut()
            .find(|dev| rxd_core::devices::is_root_disk(dev))
        {
            root.insert("pool".into(), p.clone());
        }
    }
    expand::check_devices(&devices)?;
    let profiles = if plan.instance.profiles.is_empty() && !no_profiles {
        vec![rxd_core::profile::DEFAULT.to_owned()]
    } else {
        plan.instance.profiles.clone()
    };
    let profiles_guard = d.profiles_lock.read().await;
    let known = expand::known(d, &caller.project).await?;
    expand::check_list(&known, &profiles)
        .map_err(|e| ApiError::BadRequest(format!("The backup's profiles on this server: {e}")))?;
    let mut expanded = expand::expand_with(&known, &profiles, &config, &devices);
    // Without a root disk from its own devices or its profiles here: one in the pool asked for.
    if !expanded
        .devices
        .values()
        .any(rxd_core::devices::is_root_disk)
    {
        let pool = wanted_pool
            .clone()
            .unwrap_or_else(|| pools::DEFAULT.to_owned());
        devices.insert(
            "root".into(),
            [("type", "disk"), ("path", "/"), ("pool", pool.as_str())]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        );
        expanded = expand::expand_with(&known, &profiles, &config, &devices);
    } else if let Some(p) = &wanted_pool {
        // A root disk from a profile: overridden locally to name the pool asked for (LXD's).
        if let Some((root_name, root)) = expanded
            .devices
            .iter()
            .find(|(_, dev)| rxd_core::devices::is_root_disk(dev))
            .map(|(n, dev)| (n.clone(), dev.clone()))
        {
            if root.get("pool") != Some(p) {
                let mut root = root;
                root.insert("pool".into(), p.clone());
                devices.insert(root_name, root);
                expanded = expand::expand_with(&known, &profiles, &config, &devices);
            }
        }
    }
    expand::check_devices(&expanded.devices)?;
    confine(
        d,
        caller,
        &caller.project,
        &name,
        &expanded.config,
        &expanded.devices,
    )
    .await?;
    if !plan.snapshots.is_empty() {
        if let Some(p) = d.project(&caller.project) {
            rxd_auth::confinement::check_snapshot(&caller.project, &p.config)?;
        }
    }
    // Each snapshot's config is live again once restored: checked as the instance's is.
    let mut snaps = Vec::new();
    for s in &plan.snapshots {
        let snap_config = copied_config(&s.config);
        rxd_core::instance_config::validate(&snap_config)
            .map_err(|e| ApiError::BadRequest(format!("Snapshot {:?}: {e}", s.name)))?;
        let snap_profiles = if s.profiles.is_empty() {
            profiles.clone()
        } else {
            s.profiles.clone()
        };
        expand::check_list(&known, &snap_profiles)
            .map_err(|e| ApiError::BadRequest(format!("Snapshot {:?}: {e}", s.name)))?;
        let mut snap_devices = s.devices.clone();
        if let Some(p) = &wanted_pool {
            if let Some(root) = snap_devices
                .values_mut()
                .find(|dev| rxd_core::devices::is_root_disk(dev))
            {
                root.insert("pool".into(), p.clone());
            }
        }
        expand::check_devices(&snap_devices)
            .map_err(|e| ApiError::BadRequest(format!("Snapshot {:?}: {e}", s.name)))?;
        let e = expand::expand_with(&known, &snap_profiles, &snap_config, &snap_devices);
        confine(d, caller, &caller.project, &name, &e.config, &e.devices)
            .await
            .map_err(|e| match e {
                ApiError::Forbidden(m) => {
                    ApiError::Forbidden(format!("Snapshot {:?}: {m}", s.name))
                }
                ApiError::BadRequest(m) => {
                    ApiError::BadRequest(format!("Snapshot {:?}: {m}", s.name))
                }
                other => other,
            })?;
        // The snapshot's files are in the backup's ids: a restore applies the map.
        let mut stored = snap_config;
        stored.insert(
            "volatile.last_state.idmap".into(),
            snapshot_maps
                .get(&s.name)
                .cloned()
                .unwrap_or_else(|| "[]".into()),
        );
        snaps.push(SnapshotRow {
            project: caller.project.clone(),
            instance: name.clone(),
            name: s.name.clone(),
            config: serde_json::to_string(&stored).map_err(ApiError::internal)?,
            created_at: parse_rfc3339(&s.created_at).unwrap_or_else(crate::sync::now_unix),
            expires_at: parse_rfc3339(&s.expires_at).unwrap_or(0),
            profiles: snap_profiles,
            devices: serde_json::to_string(&snap_devices).map_err(ApiError::internal)?,
        });
    }
    let project = caller.project.clone();
    let existing = d.db(move |s| s.instances(&project)).await?.len() as u64;
    if let Some(p) = d.project(&caller.project) {
        rxd_auth::confinement::check_count(&caller.project, &p.config, existing)?;
    }
    let want = idmap_want(&expanded.config)?;
    let pool_guard = d.pools.lifecycle.read().await;
    let pool = pools::pool_for(d, &expanded.devices)?;
    if optimized && pool.kind() != rxd_storage::DriverKind::Btrfs {
        return Err(ApiError::BadRequest(format!(
            "An optimized (btrfs send) backup is imported into a btrfs pool, and {:?} is not one: name one with --storage",
            pool.name()
        )));
    }
    pools::check_size(&pool, pools::root_size(&expanded.devices))?;
    let row = InstanceRow {
        project: caller.project.clone(),
        name: name.clone(),
        architecture: "x86_64".into(),
        config: String::new(),
        description: plan.instance.description.clone(),
        ephemeral: plan.instance.ephemeral,
        created_at: crate::sync::now_unix(),
        profiles,
        devices: serde_json::to_string(&devices).map_err(ApiError::internal)?,
        pool: pool.name().to_owned(),
    };
    let map = instances::record_unfinished(d, caller, &row, want, &hostids).await?;
    drop(pool_guard);
    drop(profiles_guard);
    crate::failpoint::hit("instance-import:row-recorded");
    set_next_idmap(&mut config, map);
    // The files are in the backup's ids: the first start applies the map (or mounts it).
    config.insert("volatile.last_state.idmap".into(), files_map);
    config.insert("volatile.rootfs.quota".into(), "reapply".into());
    crate::service::nics::fill_macs(&expanded.devices, &mut config);
    let placed = if optimized {
        crate::service::optimized::place(
            d,
            &row,
            upload,
            &plan.index.snapshots,
            plan.index.optimized_header == Some(true),
            &snaps,
            &limits,
        )
        .await
    } else {
        place(
            d,
            &row,
            upload,
            &plan.index.snapshots,
            &snaps,
            &limits,
            &budget,
        )
        .await
    };
    let saved = match placed {
        Ok(size) => {
            let size = i64::try_from(size).unwrap_or(i64::MAX);
            crate::failpoint::hit("instance-import:placed");
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
    tracing::info!(instance = %row.name, project = %row.project, snapshots = snaps.len(), by = %caller.identity.user_name(), "instance imported from a backup");
    Ok(name)
}

fn parse_rfc3339(t: &str) -> Option<i64> {
    if t.is_empty() || t.starts_with("0001-01-01") {
        return None;
    }
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Unpack the backup beside the instance's directory, then put its trees in place: the
/// instance's and each snapshot's (a subvolume of their own on btrfs), and the snapshots'
/// rows. Returns the root filesystem's bytes.
async fn place(
    d: &Arc<Daemon>,
    row: &InstanceRow,
    upload: &Path,
    listed: &[String],
    snaps: &[SnapshotRow],
    limits: &rxd_image::Limits,
    budget: &UnpackBudget,
) -> ApiResult<u64> {
    let pool = pools::get(d, &row.pool)?;
    let dest = layout::instance_dir(d, &row.pool, &row.key());
    let containers = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    let staged = containers.join(format!(".import-{}", uuid::Uuid::new_v4().simple()));
    let unpacked = {
        let (upload, staged, listed, limits) =
            (upload.to_owned(), staged.clone(), listed.to_vec(), *limits);
        tokio::task::spawn_blocking(move || {
            rxd_image::unpack_backup(&upload, &staged, &listed, &limits)
        })
        .await?
    };
    let (size, snap_sizes) = match unpacked {
        Ok(sizes) => sizes,
        Err(e) => return Err(budget.refusal(e)),
    };
    let result = settle(d, &pool, row, &staged, &dest, snaps).await;
    let _ = layout::remove_tree(&staged);
    result.map(|()| size + snap_sizes.iter().sum::<u64>())
}

async fn settle(
    d: &Arc<Daemon>,
    pool: &Arc<rxd_storage::Pool>,
    row: &InstanceRow,
    staged: &Path,
    dest: &Path,
    snaps: &[SnapshotRow],
) -> ApiResult<()> {
    let from = staged.join("container");
    // On a dir pool the unpacked trees are renamed into place (the same filesystem: nothing is
    // written twice); on btrfs each root filesystem is copied into a subvolume of its own.
    let dir_pool = pool.kind() == rxd_storage::DriverKind::Dir;
    if dir_pool {
        crate::service::copy::private_dir(&from)?;
        rxd_image::durable::publish(&from, dest).map_err(ApiError::internal)?;
    } else {
        let containers = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        let temp = containers.join(format!(".new-{}", uuid::Uuid::new_v4().simple()));
        crate::service::copy::private_dir(&temp)?;
        let copied = {
            let (pool, from, temp) = (pool.clone(), from.clone(), temp.clone());
            tokio::task::spawn_blocking(move || -> ApiResult<()> {
                pools::clone_tree(&pool, &from.join("rootfs"), &temp.join("rootfs"), false)?;
                layout::copy_image_extras(&from, &temp).map_err(ApiError::internal)?;
                Ok(())
            })
            .await?
        };
        let published = copied
            .and_then(|()| rxd_image::durable::publish(&temp, dest).map_err(ApiError::internal));
        if let Err(e) = published {
            let _ = layout::remove_tree(&temp);
            return Err(e);
        }
    }
    if !snaps.is_empty() {
        let snaps_dir = layout::snapshots_dir(d, &row.pool, &row.key());
        crate::service::copy::private_dir(&snaps_dir)?;
        for snap in snaps {
            let temp = snaps_dir.join(format!(".new-{}", uuid::Uuid::new_v4().simple()));
            crate::service::copy::private_dir(&temp)?;
            let from = staged.join("snapshots").join(&snap.name).join("rootfs");
            let placed = if dir_pool {
                std::fs::rename(&from, temp.join("rootfs")).map_err(ApiError::internal)
            } else {
                let (pool, temp) = (pool.clone(), temp.clone());
                tokio::task::spawn_blocking(move || {
                    pools::clone_tree(&pool, &from, &temp.join("rootfs"), true).map(drop)
                })
                .await?
            };
            crate::service::snapshots::publish_brought(d, placed, &temp, &snaps_dir, snap.clone())
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_take_no_volatile_key_but_the_base_image() {
        let config: BTreeMap<String, String> = [
            ("limits.cpu", "1"),
            ("volatile.base_image", "abc"),
            ("volatile.uuid", "u"),
            ("volatile.idmap.next", "[]"),
            ("volatile.last_state.idmap", "[]"),
            ("volatile.eth0.hwaddr", "00:16:3e:12:34:56"),
            ("volatile.eth0.host_name", "veth1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            copied_config(&config).keys().collect::<Vec<_>>(),
            ["limits.cpu", "volatile.base_image"]
        );
    }

    #[test]
    fn index_yaml_is_checked() {
        let ok = "name: c1\nbackend: dir\npool: default\nsnapshots: [s0]\noptimized: false\ntype: container\nconfig:\n  container: {name: c1, architecture: x86_64, config: {}, devices: {}, profiles: [default]}\n  snapshots: [{name: s0, config: {}}]\n";
        let p = plan(ok).unwrap();
        assert_eq!(p.instance.name, "c1");
        for (bad, why) in [
            (
                ok.replace("snapshots: [s0]", "snapshots: []"),
                "lists snapshots",
            ),
            (
                ok.replace("type: container", "type: virtual-machine"),
                "containers only",
            ),
            (
                ok.replace("optimized: false", "optimized: true"),
                "optimized",
            ),
            (
                ok.replace("[s0]", "[\"../x\"]")
                    .replace("name: s0", "name: ../x"),
                "invalid snapshot name",
            ),
            (
                ok.replace("architecture: x86_64", "architecture: aarch64"),
                "architecture",
            ),
        ] {
            let e = plan(&bad).err().unwrap().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
