//! Instances below HTTP: find, create, start, stop, watch, recover and delete them, with their
//! idmaps allocated and their config confined. Routes parse and authorize, then call here; this
//! module knows no request or response type.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::images;
use crate::service::intent::{self, Intent};
use crate::service::layout;
use crate::state::Daemon;
use rxd_core::idmap::{decode_volatile, encode_volatile, Block, Want};
use rxd_core::instance_config::{self, flag};
use rxd_core::launch::IdMap;
use rxd_core::name::InstanceKey;
use rxd_store::InstanceRow;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const NOT_FOUND: &str = "Instance not found";

/// An instance's key on disk and in the runtime (see `rxd_core::name::instance_key`).
pub trait Keyed {
    fn key(&self) -> InstanceKey;
}

impl Keyed for InstanceRow {
    fn key(&self) -> InstanceKey {
        InstanceKey::new(&self.project, &self.name)
    }
}

pub use rxd_core::profile::project_suffix;

/// The one check every path that creates or changes an instance (or a profile) calls with
/// the final expanded config and devices of the instance `instance` in `project`: the
/// project's restrictions, host-path sources opened as the container helper will, and custom
/// volumes the project has and may attach there.
pub async fn confine(
    d: &Daemon,
    caller: &Caller,
    project: &str,
    instance: &str,
    config: &BTreeMap<String, String>,
    devices: &rxd_core::devices::Devices,
) -> ApiResult<()> {
    confine_moving(d, caller, project, instance, None, config, devices).await
}

/// [`confine`] for an instance that is `from` (project, name) until it moves: the volumes it
/// has attached there are not another instance's.
pub async fn confine_moving(
    d: &Daemon,
    caller: &Caller,
    project: &str,
    instance: &str,
    from: Option<(&str, &str)>,
    config: &BTreeMap<String, String>,
    devices: &rxd_core::devices::Devices,
) -> ApiResult<()> {
    let p = d
        .project(project)
        .ok_or_else(|| ApiError::NotFound(crate::error::PROJECT_NOT_FOUND.into()))?;
    rxd_auth::confinement::check_instance(caller.rights.is_admin(), project, &p.config, config, devices)
        .map_err(|v| {
            tracing::warn!(project, by = %caller.identity.user_name(), refused = %v, "instance config refused");
            ApiError::from(v)
        })?;
    crate::service::devices::check_sources(d, project, devices)?;
    crate::service::volumes::check_attach(d, caller, project, instance, from, devices).await
}

/// The bound on `project`'s isolated ids for this caller (`rxd_core::idmap::project_limit`).
pub fn idmap_limit(d: &Daemon, caller: &Caller, project: &str) -> Option<u64> {
    let configured = d
        .project(project)
        .and_then(|p| p.config.get("limits.idmap.size").cloned());
    rxd_core::idmap::project_limit(configured.as_deref(), caller.rights.is_admin())
}

pub fn config_of(row: &InstanceRow) -> BTreeMap<String, String> {
    serde_json::from_str(&row.config).unwrap_or_default()
}

/// LXD's status name and code for an instance now.
pub fn status(d: &Daemon, name: &str) -> (&'static str, u16) {
    match d.runtime.init(name) {
        None => ("Stopped", 102),
        Some(_) if d.runtime.frozen(name) => ("Frozen", 110),
        Some(_) => ("Running", 103),
    }
}

pub async fn find(d: &Daemon, project: &str, name: &str) -> ApiResult<InstanceRow> {
    if !rxd_core::name::valid_instance_name(name) {
        return Err(ApiError::NotFound(NOT_FOUND.into()));
    }
    let (p, n) = (project.to_owned(), name.to_owned());
    d.db(move |s| s.instance(&p, &n))
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound(NOT_FOUND.into()),
            other => other,
        })
}

/// Parse one `volatile.idmap.*` value (see `rxd_core::idmap::decode_volatile`).
pub fn parse_idmap(text: &str) -> ApiResult<Option<IdMap>> {
    decode_volatile(text).map_err(ApiError::internal)
}

/// The id map a running container was started with.
pub fn running_idmap(config: &BTreeMap<String, String>) -> Option<IdMap> {
    config
        .get("volatile.idmap.current")
        .and_then(|m| parse_idmap(m).ok())
        .flatten()
}

fn memory_limit(value: &str) -> Option<u64> {
    if let Some(pct) = value.strip_suffix('%') {
        let pct: u64 = pct.parse().ok()?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        return Some(kib * 1024 / 100 * pct);
    }
    instance_config::parse_bytes(value)
}

/// The host CPUs `limits.cpu` gives a container, as a kernel CPU list. A count takes the first
/// that many online CPUs (all of them if it asks for more): LXD 5.0 picks the least loaded and
/// moves containers as others start and stop; rxd pins once, at start, and says so in the
/// README. A set must name online CPUs only.
fn cpuset(value: &str) -> ApiResult<String> {
    use instance_config::{format_cpu_list, parse_cpu_limit, parse_cpu_list, CpuLimit};
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| parse_cpu_list(&t))
        .ok_or_else(|| ApiError::internal("cannot read the host's online CPUs"))?;
    match parse_cpu_limit(value).map_err(ApiError::BadRequest)? {
        CpuLimit::Count(n) => Ok(format_cpu_list(
            &online[..online.len().min(n as usize)],
        )),
        CpuLimit::Set(cpus) => match cpus.iter().find(|c| !online.contains(c)) {
            Some(missing) => Err(ApiError::BadRequest(format!(
                "limits.cpu {value:?} names CPU {missing}, which this host does not have online (online: {})",
                format_cpu_list(&online)
            ))),
            None => Ok(format_cpu_list(&cpus)),
        },
    }
}

/// What the container helper is given to start (or re-limit) the container `name` with
/// `config`.
fn launch_plan(
    d: &Daemon,
    name: &InstanceKey,
    row: &InstanceRow,
    config: &BTreeMap<String, String>,
    idmap: Option<IdMap>,
    devices: rxd_core::launch::DeviceChange,
) -> ApiResult<rxd_core::launch::LaunchPlan> {
    let mut environment = rxd_core::launch::LaunchPlan::default_environment();
    for (k, v) in config {
        if let Some(var) = k.strip_prefix("environment.") {
            environment.insert(var.to_owned(), v.clone());
        }
    }
    Ok(rxd_core::launch::LaunchPlan {
        name: name.to_string(),
        hostname: row.name.clone(),
        rootfs: layout::instance_dir(d, &row.pool, name).join("rootfs"),
        idmap,
        idmapped_root: None,
        cgroup: d.runtime.cgroup(name),
        memory_limit: config.get("limits.memory").and_then(|v| memory_limit(v)),
        process_limit: config.get("limits.processes").and_then(|v| v.parse().ok()),
        memory_soft: config.get("limits.memory.enforce").map(String::as_str) == Some("soft"),
        no_swap: config.get("limits.memory.swap").map(String::as_str) == Some("false"),
        cpus: config.get("limits.cpu").map(|v| cpuset(v)).transpose()?,
        cpu_allowance: config
            .get("limits.cpu.allowance")
            .and_then(|v| instance_config::parse_cpu_allowance(v).ok()),
        sysctl: config
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("linux.sysctl.")?.to_owned(), v.clone())))
            .collect(),
        nesting: flag(config, "security.nesting"),
        environment,
        devices,
        nics: Vec::new(),
    })
}

/// Keys a running container takes at once, as LXD applies them; every other key waits for
/// the next start.
pub const LIVE_KEYS: &[&str] = &[
    "limits.cpu",
    "limits.cpu.allowance",
    "limits.memory",
    "limits.memory.enforce",
    "limits.memory.swap",
    "limits.processes",
];

/// Give the running container `row` the CPU, memory and process limits of `config` (its
/// action lock held by the caller); nothing if it is not running.
pub async fn apply_limits(
    d: &Daemon,
    row: &InstanceRow,
    config: &BTreeMap<String, String>,
) -> ApiResult<()> {
    let key = row.key();
    if d.runtime.init(&key).is_none() {
        return Ok(());
    }
    let current = config
        .get("volatile.idmap.current")
        .map_or(Ok(None), |m| parse_idmap(m))?;
    let plan = launch_plan(d, &key, row, config, current, Default::default())?;
    d.runtime.set_limits(&plan).await.map_err(|e| {
        ApiError::BadRequest(format!(
            "Failed to apply the new limits to the running instance: {e}"
        ))
    })
}

/// Start the container (by its key) from its stored config.
pub async fn start(d: &Arc<Daemon>, name: &InstanceKey) -> ApiResult<()> {
    let row = by_key(d, name).await?;
    // `config` is the instance's own (its `volatile.*` keys change and are saved as it
    // starts); what it runs with is `expanded`, its profiles' config under its own.
    let mut config = config_of(&row);
    let crate::service::expand::Expanded {
        config: expanded,
        devices,
    } = crate::service::expand::expanded(d, &row).await?;
    let next = config
        .get("volatile.idmap.next")
        .cloned()
        .unwrap_or_else(|| "[]".into());
    let idmap = parse_idmap(&next)?;
    let privileged = flag(&expanded, "security.privileged");
    if privileged != idmap.is_none() {
        return Err(ApiError::internal(format!(
            "instance {name}: idmap does not match security.privileged"
        )));
    }
    let pool = crate::service::pools::get(d, &row.pool)?;
    // Its volumes stay as they are (no restore, rename or delete) until it runs with them.
    let _volumes = if rxd_core::devices::volume_disks(&devices).is_empty() {
        None
    } else {
        Some(d.pools.volumes.lock().await)
    };
    crate::service::volumes::check_start(d, &row.project, &row.name, &devices).await?;
    let dir = layout::instance_dir(d, &row.pool, name);
    // Say what is missing, rather than let the runtime fail on it with a bare errno.
    if !std::fs::symlink_metadata(dir.join("rootfs")).is_ok_and(|m| m.is_dir()) {
        return Err(ApiError::BadRequest(format!(
            "The instance's root filesystem is missing ({}): restore a snapshot of it, or delete it and create it again",
            dir.join("rootfs").display()
        )));
    }
    // Where the filesystem takes idmapped mounts, the files keep container ids on disk and
    // the container sees them through a mount in its map: nothing is chowned, whatever the map.
    // Elsewhere they are shifted on disk into the map.
    let idmapped = idmap.is_some() && idmapped_storage(d, &dir).await;
    let on_disk = if idmapped { None } else { idmap };
    let on_disk_text = encode_volatile(on_disk);
    let last = config
        .get("volatile.last_state.idmap")
        .cloned()
        .unwrap_or_else(|| "[]".into());
    if last != on_disk_text {
        // The files carry another map than they must: shift them to it.
        let from = parse_idmap(&last)?;
        let shift = |m: rxd_core::launch::IdMap| rxd_image::IdShift {
            uid_base: m.uid,
            gid_base: m.gid,
            size: m.size,
        };
        let (from, to) = (from.map(shift), on_disk.map(shift));
        let rootfs = dir.join("rootfs");
        tracing::info!(instance = %name, from = %last, to = %on_disk_text, "remapping container filesystem");
        // No host-side write into the tree while its owners change.
        let exclusive = d.runtime.rootfs_lock(name).write_owned().await;
        let shifted = tokio::task::spawn_blocking(move || {
            rxd_image::reshift(&rootfs, from.as_ref(), to.as_ref())
        })
        .await?
        .map_err(|e| {
            tracing::warn!(instance = %name, error = %e, "container filesystem not remapped");
            ApiError::BadRequest(format!("Failed to remap the container filesystem: {e}"))
        })?;
        tracing::info!(
            instance = %name,
            entries = shifted.changed,
            vanished = shifted.vanished,
            "container filesystem remapped"
        );
        config.insert("volatile.last_state.idmap".into(), on_disk_text);
        save_config(d, name, &config).await?;
        // Held until the new map is recorded: a write must not be given the old map's ids.
        drop(exclusive);
    }
    apply_templates(d, name, &row, &mut config, &expanded, on_disk).await?;
    if idmap.is_some() && d.hostids.is_none() {
        return Err(ApiError::BadRequest(
            "No subordinate ids for root: only privileged containers can run".into(),
        ));
    }
    // The root disk's size, as a quota on the root filesystem (changed since the last start).
    apply_quota(d, name, &pool, &dir, &devices, &mut config).await?;
    let mount_point = layout::idmapped_root(d);
    if idmapped {
        layout::make_idmapped_root(d).map_err(ApiError::internal)?;
        untraversable_ancestor(&mount_point)?;
    } else if idmap.is_some() {
        untraversable_ancestor(&dir)?;
    }
    // Only the container's root may enter its directory (and so reach its root filesystem):
    // host users never can, so setuid files inside stay out of their reach. Files kept in
    // container ids (idmapped, or privileged) hold real setuid-root files: root's alone.
    let (uid, gid, mode) = match on_disk {
        Some(m) => (m.uid, m.gid, 0o100),
        None => (0, 0, 0o700),
    };
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(ApiError::internal)?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(ApiError::internal)?;

    let mut full = expanded;
    full.extend(config.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mounts = crate::service::devices::additions(d, &row.project, &devices);
    let mut plan = launch_plan(d, name, &row, &full, idmap, mounts)?;
    plan.idmapped_root = idmapped.then_some(mount_point);
    if privileged {
        tracing::warn!(instance = %name, "starting a privileged container: root inside it is root on the host");
        crate::audit::privileged_start(&d.audit, &row.project, &row.name);
    }
    // Its NICs' veth pairs, reservations and filters, saved (`volatile.<dev>.*`) before the
    // container exists so a daemon killed from here on finds them.
    let nics = crate::service::nics::prepare(d, name, &devices, &mut config).await?;
    plan.nics = nics.plans.clone();
    if let Err(e) = save_config(d, name, &config).await {
        crate::service::nics::abandon(d, name, nics).await;
        return Err(e);
    }
    // The container starts while its NICs' filters are applied; the container helper makes
    // their veth pairs meanwhile, and a NIC joins its bridge only once the filters are in
    // place (the helper waits for that before the init runs).
    let mut activated = Ok(());
    let started = d
        .runtime
        .start(&plan, async {
            activated = crate::service::nics::activate(d, &nics).await;
            activated.is_ok()
        })
        .await;
    let init = match (started, activated) {
        (Ok(init), Ok(())) => init,
        (Ok(_), Err(e)) => {
            let _ = kill(d, name).await;
            crate::service::nics::abandon(d, name, nics).await;
            return Err(e);
        }
        (Err(_), Err(e)) => {
            crate::service::nics::abandon(d, name, nics).await;
            return Err(e);
        }
        (Err(e), Ok(())) => {
            crate::service::nics::abandon(d, name, nics).await;
            return Err(e.into());
        }
    };
    // Its proxies' forwarders, or no start (as in LXD).
    if let Err(e) = crate::service::devices::start_proxies(d, name, idmap, &devices).await {
        for device in devices.keys() {
            d.runtime.stop_proxy(name, device).await;
        }
        crate::service::proxy_nat::clear(d, name).await;
        let _ = kill(d, name).await;
        return Err(e);
    }
    crate::failpoint::hit("instance-start:started");
    tracing::info!(instance = %name, pid = init.pid, idmap = ?idmap, "container started");
    config.insert("volatile.idmap.current".into(), next);
    config.insert("volatile.last_state.power".into(), "RUNNING".into());
    // Whether it sees lxcfs's /proc files (its limits in `free`, `uptime`): a config key, as
    // LXD keeps runtime facts (`volatile.*`), so the wire's objects stay LXD's.
    config.insert(
        "volatile.lxcfs".into(),
        d.runtime.uses_lxcfs(name).to_string(),
    );
    save_config(d, name, &config).await
}

/// A new instance's directory `dest` whose root filesystem is a writable snapshot of the image
/// volume `volume`'s (btrfs), made durable by one transaction commit: the image's metadata and
/// templates are placed in the hidden directory `tmp` (`metadata.yaml` cloned, so no data is
/// written), `tmp` is renamed to `dest`, and the snapshot is made in it last. The kernel commits a transaction to
/// make a snapshot, and that commit carries the rename and the copied files' entries with it,
/// so neither a `syncfs` nor a directory sync is needed. Until the snapshot is there, `dest`
/// holds no root filesystem and its row no config: recovery removes both. On failure nothing
/// it made is left (`tmp` is the caller's to remove, `dest` only once it renamed it there).
fn snapshot_instance_dir(
    pool: &rxd_storage::Pool,
    volume: &std::path::Path,
    tmp: &std::path::Path,
    dest: &std::path::Path,
) -> Result<(), rxd_image::ImageError> {
    make_work_dir(tmp)?;
    crate::service::layout::place_image_extras(volume, tmp)?;
    std::fs::rename(tmp, dest).map_err(image_io(dest))?;
    crate::failpoint::hit("instance-create:placed-before-snapshot");
    let made = pool
        .snapshot_volume(&volume.join("rootfs"), &dest.join("rootfs"), false)
        .map_err(|e| image_io(dest)(std::io::Error::other(e)));
    if made.is_err() {
        let _ = crate::service::layout::remove_tree(dest);
    }
    made
}

/// An I/O error at `path`, as rxd-image reports one.
fn image_io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> rxd_image::ImageError {
    let path = path.display().to_string();
    move |source| rxd_image::ImageError::Io { path, source }
}

/// The hidden directory a new instance's tree is made in, root's alone until it is renamed
/// into place.
fn make_work_dir(tmp: &std::path::Path) -> Result<(), rxd_image::ImageError> {
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(tmp)
        .map_err(image_io(tmp))
}

/// A new instance directory `tmp` as a copy of an image's unpacked tree `from`, owners shifted
/// through `shift` if any: on btrfs its root filesystem a subvolume of its own (so it can be
/// snapshotted and given a quota), the image's metadata and templates copied beside it.
fn instance_dir_from(
    pool: &rxd_storage::Pool,
    from: &std::path::Path,
    tmp: &std::path::Path,
    shift: Option<&rxd_image::IdShift>,
) -> Result<u64, rxd_image::ImageError> {
    if pool.kind() != rxd_storage::DriverKind::Btrfs {
        return rxd_image::copy::copy_tree_shifted(from, tmp, shift);
    }
    make_work_dir(tmp)?;
    let (rootfs, into) = (from.join("rootfs"), tmp.join("rootfs"));
    pool.create_volume(&into, 0o755)
        .map_err(|e| image_io(tmp)(std::io::Error::other(e)))?;
    let n = rxd_image::copy::copy_tree_into(&rootfs, &into, shift)?;
    Ok(n + crate::service::layout::copy_image_extras(from, tmp)?)
}

/// Bring the root filesystem's quota to the root disk's `size` if it changed since it was last
/// applied (`volatile.rootfs.quota`, the bytes): a size on a pool without quotas is refused.
async fn apply_quota(
    d: &Daemon,
    name: &InstanceKey,
    pool: &Arc<rxd_storage::Pool>,
    dir: &std::path::Path,
    devices: &BTreeMap<String, BTreeMap<String, String>>,
    config: &mut BTreeMap<String, String>,
) -> ApiResult<()> {
    let size = crate::service::pools::root_size(devices);
    crate::service::pools::check_size(pool, size)?;
    let want = size.map(|s| s.to_string());
    if config.get("volatile.rootfs.quota") == want.as_ref() {
        return Ok(());
    }
    let (p, rootfs) = (pool.clone(), dir.join("rootfs"));
    tokio::task::spawn_blocking(move || crate::service::pools::set_root_quota(&p, &rootfs, size))
        .await??;
    match want {
        Some(bytes) => config.insert("volatile.rootfs.quota".into(), bytes),
        None => config.remove("volatile.rootfs.quota"),
    };
    tracing::info!(instance = %name, size = ?size, "root filesystem quota applied");
    save_config(d, name, config).await
}

/// Whether instances' files are kept in container ids and mounted idmapped (the filesystem of
/// `dir`, in the instance's pool, takes idmapped mounts, and no test asked otherwise).
pub async fn idmapped_storage(d: &Daemon, dir: &std::path::Path) -> bool {
    !crate::danger::no_idmapped_mounts() && d.runtime.idmapped_mounts(dir).await
}

/// Render the image's templates (`metadata.yaml`) and write them into the root filesystem, as
/// LXD does before each start: a trigger deferred at create (`volatile.apply_template`, then
/// cleared), then `start`. Files are written through `rxd_image::rootfs` (confined to the root
/// filesystem whatever links it holds); an existing file keeps its owner and mode, a new one is
/// owned by the container's root, 0644, in directories made 0755.
async fn apply_templates(
    d: &Arc<Daemon>,
    name: &InstanceKey,
    row: &InstanceRow,
    config: &mut BTreeMap<String, String>,
    expanded: &BTreeMap<String, String>,
    idmap: Option<IdMap>,
) -> ApiResult<()> {
    let deferred = config.get("volatile.apply_template").cloned();
    let triggers: Vec<String> = deferred
        .iter()
        .cloned()
        .chain(["start".to_owned()])
        .collect();
    let dir = layout::instance_dir(d, &row.pool, name);
    let (root_uid, root_gid) = idmap.map_or((0, 0), |m| (m.uid, m.gid));
    // Templates and cloud-init seeds see the expanded config, as in LXD.
    let (config_now, row_now) = (expanded.clone(), row.clone());
    // Host-side writes into the tree: shared with the files API, never during a remap.
    let _writes = d.runtime.rootfs_lock(name).read_owned().await;
    let written = tokio::task::spawn_blocking(move || {
        use rxd_image::template;
        let Some(metadata) = template::instance_metadata(&dir)? else {
            return Ok(0);
        };
        let instance = template::Instance {
            name: &row_now.name,
            architecture: &row_now.architecture,
            ephemeral: row_now.ephemeral,
            privileged: instance_config::flag(&config_now, "security.privileged"),
            config: &config_now,
        };
        let rootfs = rxd_image::rootfs::Rootfs::open(&dir.join("rootfs"))
            .map_err(|e| rxd_image::ImageError::Template(e.to_string()))?;
        let mut written = 0;
        for trigger in &triggers {
            for file in template::render(&dir, &metadata, trigger, &instance)? {
                if write_template(&rootfs, &file, root_uid, root_gid).map_err(|e| {
                    rxd_image::ImageError::Template(format!("writing {}: {e}", file.path))
                })? {
                    written += 1;
                }
            }
        }
        Ok::<_, rxd_image::ImageError>(written)
    })
    .await?
    .map_err(|e| {
        tracing::warn!(instance = %name, error = %e, "image templates not applied");
        ApiError::BadRequest(format!("Failed to apply the image's templates: {e}"))
    })?;
    if written > 0 {
        tracing::info!(instance = %name, files = written, "image templates applied");
    }
    if deferred.is_some() {
        config.remove("volatile.apply_template");
        save_config(d, name, config).await?;
    }
    Ok(())
}

/// Write one rendered template; false when it was left alone (`create_only` and present, or
/// something other than a regular file is there).
fn write_template(
    rootfs: &rxd_image::rootfs::Rootfs,
    file: &rxd_image::template::Rendered,
    uid: u32,
    gid: u32,
) -> Result<bool, rxd_image::rootfs::FileError> {
    use rxd_image::rootfs::{Entry, FileError};
    use std::io::Write;
    let (uid, gid, mode) = match rootfs.get(&file.path) {
        Ok(Entry::File(_, meta, _)) if !file.create_only => (meta.uid, meta.gid, meta.mode),
        Ok(_) => return Ok(false),
        Err(FileError::NotFound) => {
            let mut parent = String::new();
            let components: Vec<&str> = file.path.split('/').filter(|c| !c.is_empty()).collect();
            for c in &components[..components.len().saturating_sub(1)] {
                parent.push('/');
                parent.push_str(c);
                match rootfs.mkdir(&parent, uid, gid, 0o755) {
                    // A link (to a directory, say /var/run → /run): followed when the file is
                    // made, inside the root filesystem.
                    Err(FileError::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    other => other?,
                }
            }
            (uid, gid, 0o644)
        }
        Err(e) => return Err(e),
    };
    let mut upload = rootfs.upload(&file.path, uid, gid, mode, false)?;
    upload.file().write_all(file.content.as_bytes())?;
    upload.commit()?;
    Ok(true)
}

/// An unprivileged container's root is an ordinary host user: it must be able to traverse every
/// directory above its own (as LXD needs /var/lib/lxd to be 0711). Say so clearly, rather than
/// let the runtime fail to mount the root filesystem.
fn untraversable_ancestor(dir: &std::path::Path) -> ApiResult<()> {
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(ApiError::BadRequest(format!(
                "{} is not traversable by other users (mode {:o}): unprivileged containers cannot reach their root filesystems; make it 0711",
                ancestor.display(),
                meta.permissions().mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// The stored instance a runtime key names.
pub async fn by_key(d: &Daemon, key: &InstanceKey) -> ApiResult<InstanceRow> {
    let (p, n) = key.split();
    let (p, n) = (p.to_owned(), n.to_owned());
    d.db(move |s| s.instance(&p, &n)).await
}

/// Store the config of the instance a runtime key names.
pub async fn save_config(
    d: &Daemon,
    key: &InstanceKey,
    config: &BTreeMap<String, String>,
) -> ApiResult<()> {
    let text = serde_json::to_string(config).map_err(ApiError::internal)?;
    let (p, n) = key.split();
    let (p, n) = (p.to_owned(), n.to_owned());
    d.db(move |s| s.update_instance_config(&p, &n, &text)).await
}

/// Stop the container: with `force` (or a zero timeout, as LXD) kill it; otherwise ask its init
/// to halt, with the signal it expects (SIGRTMIN+3 for systemd, else SIGPWR; liblxc's rule, see
/// `rxd_runtime::halt_signal`), and wait up to `timeout` seconds (negative: as long as it
/// takes). An explicit timeout that runs out kills the container and records a warning
/// (images-storage.md §9.7: LXD 5.0 fails the operation and leaves it running instead).
pub async fn stop(
    d: &Arc<Daemon>,
    name: &InstanceKey,
    force: bool,
    timeout: i64,
    restarting: bool,
) -> ApiResult<()> {
    halt(d, name, force, timeout).await?;
    crate::failpoint::hit("instance-stop:ended");
    let why = if restarting { Why::Restart } else { Why::Stop };
    stopped(d, name, why).await.map(drop)
}

/// The init gone, by `stop`'s rules (see there); the book-keeping is the caller's.
async fn halt(d: &Daemon, name: &InstanceKey, force: bool, timeout: i64) -> ApiResult<()> {
    if force || timeout == 0 {
        return kill(d, name).await;
    }
    if d.runtime.frozen(name) {
        return Err(ApiError::BadRequest(
            "The instance is frozen: unfreeze it first, or stop it with --force".into(),
        ));
    }
    let signal = d.runtime.halt_signal(name);
    tracing::info!(instance = %name, signal, timeout, "asking the container's init to halt");
    d.runtime.signal(name, signal, false).await?;
    let wait = u64::try_from(timeout)
        .ok()
        .map(std::time::Duration::from_secs);
    match d.runtime.wait_stopped(name, wait).await {
        Err(rxd_runtime::RuntimeError::StopTimeout) => {
            let message = format!(
                "Instance {name} did not halt within its {timeout} s stop timeout (signal {signal}) and was killed"
            );
            tracing::warn!(instance = %name, "{message}");
            crate::sync::lock(&d.warnings)
                .record(rxd_core::warnings::WarningKind::StopTimedOut, message);
            kill(d, name).await
        }
        other => Ok(other?),
    }
}

/// The host is going down (rxd got SIGPWR or `rxd shutdown`): halt every running instance,
/// higher `boot.stop.priority` first, as many at once as there are CPUs, each given
/// `boot.host_shutdown_timeout` seconds (default 30) before it is killed. Their
/// `volatile.last_state.power` stays `RUNNING`, which is what brings them back after the
/// host's reboot. (A mere daemon stop or restart, SIGTERM, leaves them running.)
pub async fn stop_all_for_host(d: &Arc<Daemon>) {
    const DEFAULT_TIMEOUT: i64 = 30;
    let rows = match d.db(|s| s.all_instances()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot list instances to stop for the host's shutdown");
            return;
        }
    };
    let mut running: Vec<(i64, i64, InstanceKey)> = Vec::new();
    for r in rows.iter().filter(|r| d.runtime.init(&r.key()).is_some()) {
        // Profiles may set these (an unreadable profile: the instance's own keys).
        let config = match crate::service::expand::expanded(d, r).await {
            Ok(e) => e.config,
            Err(_) => config_of(r),
        };
        let number = |key: &str| -> Option<i64> { config.get(key).and_then(|v| v.parse().ok()) };
        running.push((
            number("boot.stop.priority").unwrap_or(0),
            number("boot.host_shutdown_timeout").unwrap_or(DEFAULT_TIMEOUT),
            r.key(),
        ));
    }
    if running.is_empty() {
        return;
    }
    tracing::info!(
        instances = running.len(),
        "the host is shutting down: halting instances"
    );
    running.sort_by_key(|r| std::cmp::Reverse(r.0));
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    for batch in running.chunk_by(|a, b| a.0 == b.0) {
        for group in batch.chunks(parallel) {
            let halts = group.iter().map(|(_, timeout, key)| async move {
                let lock = d.runtime.action_lock(key);
                let _guard = lock.lock().await;
                if d.runtime.init(key).is_none() {
                    return;
                }
                // One that cannot be asked (frozen, say) would die with the host anyway.
                let halted = match halt(d, key, false, *timeout).await {
                    Err(e) => {
                        tracing::warn!(instance = %key, error = %e, "cannot halt for the host's shutdown: killing it");
                        kill(d, key).await
                    }
                    ok => ok,
                };
                let result = match halted {
                    Ok(()) => stopped(d, key, Why::HostShutdown).await.map(drop),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => tracing::info!(instance = %key, "halted for the host's shutdown"),
                    Err(e) => {
                        tracing::error!(instance = %key, error = %e, "could not halt for the host's shutdown")
                    }
                }
            });
            futures_util::future::join_all(halts).await;
        }
    }
}

async fn kill(d: &Daemon, name: &InstanceKey) -> ApiResult<()> {
    const SIGKILL: i32 = 9;
    d.runtime.signal(name, SIGKILL, false).await?;
    d.runtime
        .wait_stopped(name, Some(std::time::Duration::from_secs(30)))
        .await?;
    Ok(())
}

/// Why a container's init is gone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A stop was asked for.
    Stop,
    /// A restart was asked for: it starts again next.
    Restart,
    /// It ended by itself: a reboot from inside is a restart, anything else a stop.
    Ended,
    /// The host is going down: a stop, but it was running and is to run again after.
    HostShutdown,
}

/// Book-keeping once a container's init is gone; says how it ended.
/// An ephemeral instance is deleted once it stops, unless it is being restarted.
async fn stopped(d: &Arc<Daemon>, name: &InstanceKey, why: Why) -> ApiResult<rxd_runtime::Ending> {
    d.runtime.forget(name);
    let ending = d.runtime.clean_up(name).await?;
    // Its NAT proxies' rules go with it, whatever becomes of the instance.
    crate::service::proxy_nat::clear(d, name).await;
    let restarting =
        why == Why::Restart || (why == Why::Ended && ending == rxd_runtime::Ending::Reboot);
    if !restarting {
        d.runtime.prune_cgroup_parents();
    }
    if let Ok(row) = by_key(d, name).await {
        if row.ephemeral && !restarting {
            remove(d, &row).await?;
            tracing::info!(instance = %name, "ephemeral container stopped and deleted");
            return Ok(ending);
        }
        crate::failpoint::hit("instance-stop:cleaned-up");
        let mut config = config_of(&row);
        config.remove("volatile.idmap.current");
        config.remove("volatile.lxcfs");
        crate::service::nics::stopped(d, name, &mut config).await;
        let power = if why == Why::HostShutdown {
            "RUNNING"
        } else {
            "STOPPED"
        };
        config.insert("volatile.last_state.power".into(), power.into());
        save_config(d, name, &config).await?;
    }
    tracing::info!(instance = %name, ?ending, "container stopped");
    Ok(ending)
}

/// A create that did not finish: the row is recorded first with an empty config and the config
/// stored last, after the root filesystem is in place, so only an interrupted create leaves one.
pub fn create_unfinished(row: &InstanceRow) -> bool {
    row.config.is_empty()
}

/// Notice containers that end by themselves (halted from inside, or killed), and tidy up.
pub async fn watch(d: Arc<Daemon>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        for name in d.runtime.ended() {
            let Some(name) = InstanceKey::parse(&name) else {
                tracing::warn!(key = %name, "the runtime reports an instance rxd cannot have made");
                continue;
            };
            let lock = d.runtime.action_lock(&name);
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            if d.runtime.init(&name).is_none() {
                match stopped(&d, &name, Why::Ended).await {
                    Ok(rxd_runtime::Ending::Reboot) => {
                        tracing::info!(instance = %name, "the container rebooted: starting it again");
                        if let Err(e) = start(&d, &name).await {
                            tracing::warn!(instance = %name, error = %e, "could not start a rebooted container again");
                        }
                    }
                    Ok(rxd_runtime::Ending::Stopped) => {}
                    Err(e) => {
                        tracing::warn!(instance = %name, error = %e, "could not tidy up after a container")
                    }
                }
            }
        }
    }
}

/// An isolated block chosen (base, size), or why none can be.
pub type BlockChoice = Result<(u32, u32), rxd_core::idmap::IdmapError>;

/// What an instance's config asks of its idmap, or why the config is refused.
pub fn idmap_want(config: &BTreeMap<String, String>) -> ApiResult<Want> {
    Want::of(config).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The allocator for an isolated block of an instance in `project`, for the store's
/// transaction: the project's share of ids (`limit`, see `idmap::project_limit`) is counted in
/// the same transaction that takes the block.
pub fn allocator(
    want: Want,
    hostids: &crate::hostids::HostIds,
    project: &str,
    limit: Option<u64>,
) -> impl Fn(&[rxd_store::TakenBlock]) -> BlockChoice {
    let range = hostids.uid;
    let project = project.to_owned();
    move |taken: &[rxd_store::TakenBlock]| {
        let used = taken
            .iter()
            .filter(|t| t.project == project)
            .map(|t| u64::from(t.size))
            .sum();
        rxd_core::idmap::check_project_budget(&project, used, want.size, limit)?;
        let taken: Vec<Block> = taken
            .iter()
            .map(|t| Block {
                base: t.base,
                size: t.size,
            })
            .collect();
        let b = range.allocate(&taken, want.size, want.pinned)?;
        Ok((b.base, b.size))
    }
}

/// The map of an instance: none if privileged, its isolated block, or the shared block.
pub fn map_for(
    hostids: &crate::hostids::HostIds,
    privileged: bool,
    block: Option<(u32, u32)>,
) -> Option<IdMap> {
    rxd_core::idmap::map_for(&hostids.uid, &hostids.gid, privileged, block)
}

/// The first step of a create or copy: the row recorded with an empty config (an unfinished
/// create, see [`create_unfinished`]) and, for an isolated instance, its id block, in one
/// transaction. Returns the instance's id map.
pub async fn record_unfinished(
    d: &Daemon,
    caller: &Caller,
    row: &InstanceRow,
    want: Want,
    hostids: &crate::hostids::HostIds,
) -> ApiResult<Option<IdMap>> {
    let allocate = allocator(
        want,
        hostids,
        &row.project,
        idmap_limit(d, caller, &row.project),
    );
    let store_row = row.clone();
    let isolated = want.isolated && !want.privileged;
    // The project's limit, checked again with the row (the caller's early check may race).
    crate::failpoint::pause("instance-record:before").await;
    let max = d
        .project(&row.project)
        .and_then(|p| rxd_auth::confinement::instance_limit(&p.config));
    let block = d
        .db(move |s| s.create_instance(&store_row, isolated.then_some(&allocate), max))
        .await
        .map_err(|e| match e {
            ApiError::Conflict(_) => {
                ApiError::Conflict(format!("Instance {:?} already exists", row.name))
            }
            other => other,
        })?
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(map_for(hostids, want.privileged, block))
}

/// An unfinished create or copy taken back: its row, then its files and snapshots.
pub async fn undo_unfinished(d: &Daemon, row: &InstanceRow) {
    let (p, n) = (row.project.clone(), row.name.clone());
    let _ = d.db(move |s| s.delete_instance(&p, &n)).await;
    for dir in layout::instance_dirs(d, &row.pool, &row.key()) {
        let _ = layout::remove_tree(&dir);
    }
}

pub fn set_next_idmap(config: &mut BTreeMap<String, String>, map: Option<IdMap>) {
    config.insert(
        "volatile.idmap.base".into(),
        map.map_or(0, |m| m.uid).to_string(),
    );
    config.insert("volatile.idmap.next".into(), encode_volatile(map));
}

pub async fn create(
    d: &Arc<Daemon>,
    mut row: InstanceRow,
    mut config: BTreeMap<String, String>,
    fingerprint: String,
    hostids: crate::hostids::HostIds,
    caller: &Caller,
) -> ApiResult<()> {
    // Held until the row is recorded: the profiles it names exist, and are as checked here.
    let profiles_guard = d.profiles_lock.read().await;
    let (p, fp) = (row.project.clone(), fingerprint.clone());
    let (known, mut found) = crate::service::expand::known_with(d, &row.project, move |s| {
        s.images_by_prefix(&p, &fp, 1)
    })
    .await?;
    crate::service::expand::check_list(&known, &row.profiles)?;
    let expanded = crate::service::expand::expand_with(
        &known,
        &row.profiles,
        &config,
        &crate::service::expand::devices_of(&row.devices),
    );
    crate::service::expand::check_devices(&expanded.devices)?;
    confine(
        d,
        caller,
        &row.project,
        &row.name,
        &expanded.config,
        &expanded.devices,
    )
    .await?;
    let want = idmap_want(&expanded.config)?;
    let privileged = want.privileged;
    let image = found
        .pop()
        .ok_or_else(|| ApiError::NotFound("Image not found".into()))?;
    row.architecture = image.architecture.clone();
    config.insert("volatile.base_image".into(), fingerprint.clone());
    // The image's `create` templates are applied at the first start, as LXD does.
    config.insert("volatile.apply_template".into(), "create".into());
    crate::service::nics::fill_macs(&expanded.devices, &mut config);
    // Every instance unpacks its image again: refuse one that cannot fit before recording it.
    let budget = images::UnpackBudget::of(d, &row.project).await?;
    budget.check_known(u64::try_from(image.unpacked_size).unwrap_or(0))?;
    let limits = budget.limits();
    // The pool its root disk names (else `default`), and a size only where quotas exist; the
    // pool stays until the row is recorded.
    let pool_guard = d.pools.lifecycle.read().await;
    let pool = crate::service::pools::pool_for(d, &expanded.devices)?;
    // Its size becomes a quota at its first start.
    crate::service::pools::check_size(&pool, crate::service::pools::root_size(&expanded.devices))?;
    row.pool = pool.name().to_owned();

    let map = record_unfinished(d, caller, &row, want, &hostids).await?;
    drop(pool_guard);
    drop(profiles_guard);
    crate::failpoint::hit("instance-create:row-recorded");
    set_next_idmap(&mut config, map);
    // Files keep the image's ids where the container will see them through an idmapped mount
    // (see `start`); elsewhere they are shifted to the map now.
    let on_disk = match map {
        Some(_) if idmapped_storage(d, pool.mount_point()).await => None,
        other => other,
    };
    config.insert("volatile.last_state.idmap".into(), encode_volatile(on_disk));

    // Unpack the image (shifted when it must be); undo the record on any failure.
    let dest = layout::instance_dir(d, &row.pool, &row.key());
    let containers = dest
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let tarball = images::images_dir(d).join(&fingerprint);
    let rootfs_file = images::rootfs_path(d, &fingerprint);
    let shift = on_disk.map(|m| rxd_image::IdShift {
        uid_base: m.uid,
        gid_base: m.gid,
        size: m.size,
    });
    // The image's tree, unpacked once at import, is copied with its owners shifted: a copy
    // is several times faster than decompressing again. Without it (an image unpacked before
    // rxd kept its size), the tarball is unpacked.
    let image_tree = images::unpacked_dir(d, &fingerprint);
    let recorded = u64::try_from(image.unpacked_size).unwrap_or(0);
    // On btrfs, with the files kept in container ids, the instance is a writable snapshot of
    // the image's volume in the pool (made once per pool): instant, whatever the image's size.
    let volume = if recorded > 0 && image_tree.is_dir() && on_disk.is_none() {
        match crate::service::pools::image_volume(d, &pool, &fingerprint, image_tree.clone()).await
        {
            Ok(v) => v,
            Err(e) => {
                undo_unfinished(d, &row).await;
                return Err(e);
            }
        }
    } else {
        None
    };
    let cow_pool = pool.clone();
    let unpacked = tokio::task::spawn_blocking(move || {
        let io = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |e| rxd_image::ImageError::Io { path, source: e }
        };
        if !containers.exists() {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o711)
                .create(&containers)
                .map_err(io(&containers))?;
        }
        if let Some(volume) = volume {
            let tmp = containers.join(format!(".unpack-{}", uuid::Uuid::new_v4().simple()));
            let made = snapshot_instance_dir(&cow_pool, &volume, &tmp, &dest);
            if made.is_err() {
                let _ = crate::service::layout::remove_tree(&tmp);
            }
            return made.map(|()| recorded);
        }
        if recorded > 0 && image_tree.is_dir() {
            let tmp = containers.join(format!(".unpack-{}", uuid::Uuid::new_v4().simple()));
            let copied = instance_dir_from(&cow_pool, &image_tree, &tmp, shift.as_ref())
                .and_then(|_| rxd_image::durable::publish(&tmp, &dest).map_err(io(&dest)));
            if copied.is_err() {
                let _ = crate::service::layout::remove_tree(&tmp);
            }
            return copied.map(|()| recorded);
        }
        if rootfs_file.exists() {
            rxd_image::unpack_split(&tarball, &rootfs_file, &dest, shift.as_ref(), &limits)
        } else {
            rxd_image::unpack(&tarball, &dest, shift.as_ref(), &limits)
        }
        .map(|u| u.bytes)
    })
    .await?;
    let stored_config = serde_json::to_string(&config).unwrap_or_else(|_| "{}".into());
    let (name, project) = (row.name.clone(), row.project.clone());
    if unpacked.is_ok() {
        crate::failpoint::hit("instance-create:unpacked");
    }
    let saved = match unpacked {
        Ok(bytes) => {
            let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
            let (fp, now) = (fingerprint.clone(), crate::sync::now_unix());
            d.db(move |s| s.finish_create(&project, &name, &stored_config, bytes, &fp, now))
                .await
        }
        Err(e) => Err(match budget.refusal(e) {
            ApiError::BadRequest(m) => {
                ApiError::BadRequest(format!("Failed to unpack the image: {m}"))
            }
            other => other,
        }),
    };
    if let Err(e) = saved {
        undo_unfinished(d, &row).await;
        return Err(e);
    }
    if privileged {
        tracing::warn!(instance = %row.name, "created a privileged container: root inside it is root on the host");
    }
    tracing::info!(instance = %row.name, image = %fingerprint, idmap = ?map, by = %caller.identity.user_name(), "instance created");
    d.events.lifecycle(
        "instance-created",
        &format!("/1.0/instances/{}", row.name),
        &row.project,
        caller,
    );
    Ok(())
}

/// What `PUT .../state` asks.
pub struct StateChange<'a> {
    pub action: &'a str,
    pub timeout: i64,
    pub force: bool,
}

/// Start, stop, restart, freeze or unfreeze, under the instance's action lock (held by the
/// caller), announcing the change.
pub async fn change_state(
    d: &Arc<Daemon>,
    row: &InstanceRow,
    req: &StateChange<'_>,
    caller: &Caller,
) -> ApiResult<()> {
    let url = format!("/1.0/instances/{}", row.name);
    let key = row.key();
    let project = row.project.as_str();
    let running = d.runtime.init(&key).is_some();
    match req.action {
        "start" => {
            if running {
                return Err(ApiError::BadRequest(
                    "The instance is already running".into(),
                ));
            }
            start(d, &key).await?;
            d.events
                .lifecycle("instance-started", &url, project, caller);
        }
        "stop" | "restart" => {
            if running {
                let restarting = req.action == "restart";
                stop(d, &key, req.force, req.timeout, restarting).await?;
            } else if req.action == "stop" {
                return Err(ApiError::BadRequest(
                    "The instance is already stopped".into(),
                ));
            }
            if req.action == "restart" {
                start(d, &key).await?;
                d.events
                    .lifecycle("instance-restarted", &url, project, caller);
            } else {
                let action = if req.force || req.timeout == 0 {
                    "instance-stopped"
                } else {
                    "instance-shutdown"
                };
                d.events.lifecycle(action, &url, project, caller);
            }
        }
        "freeze" | "unfreeze" => {
            if !running {
                return Err(ApiError::BadRequest(
                    "The instance is already stopped".into(),
                ));
            }
            let freeze = req.action == "freeze";
            d.runtime.freeze(&key, freeze).await?;
            let action = if freeze {
                "instance-paused"
            } else {
                "instance-resumed"
            };
            d.events.lifecycle(action, &url, project, caller);
        }
        _ => unreachable!("actions are checked before the operation starts"),
    }
    Ok(())
}

/// The instance's action lock, held, once it is known not to be running: nothing can start it
/// until the guard is dropped.
pub async fn stopped_guard(
    d: &Daemon,
    row: &InstanceRow,
) -> ApiResult<tokio::sync::OwnedMutexGuard<()>> {
    let guard = d.runtime.action_lock(&row.key()).lock_owned().await;
    if d.runtime.init(&row.key()).is_some() {
        return Err(ApiError::BadRequest(
            "The instance is currently running, stop it first".into(),
        ));
    }
    Ok(guard)
}

/// Delete a stopped instance (its action lock held by the caller, see [`stopped_guard`]): its
/// root filesystem, snapshots, record and logs. Refused while `security.protection.delete` is
/// set, with LXD's words (it guards only this: snapshots, renames and restores go on).
///
/// Steps: intent recorded; directories moved aside (one rename each, so nothing half-removed
/// is ever listed); rows deleted; intent ended; directories and logs removed. Recovery finishes
/// the delete from the intent; directories left aside are removed at start-up.
pub async fn remove(d: &Arc<Daemon>, row: &InstanceRow) -> ApiResult<()> {
    let expanded = crate::service::expand::expanded(d, row).await?.config;
    if flag(&expanded, "security.protection.delete") {
        return Err(ApiError::BadRequest("Container is protected".into()));
    }
    let key = row.key();
    // Its backups' files, whose rows go with its row.
    let backup_files: Vec<std::path::PathBuf> = {
        let (p, n) = (row.project.clone(), row.name.clone());
        d.db(move |s| s.backups(&p, &n))
            .await?
            .iter()
            .map(|b| layout::backups_dir(d).join(&b.file))
            .collect()
    };
    // Writes in flight through the files API finish before the tree goes.
    let writes = d.runtime.rootfs_lock(&key).write_owned().await;
    let pending = intent::begin(
        d,
        &Intent::InstanceDelete {
            project: row.project.clone(),
            name: row.name.clone(),
        },
    )
    .await?;
    crate::failpoint::hit("instance-delete:intent-recorded");
    // Files of a pool that is not mounted are not there to remove (nor to lose to recovery).
    if let Err(e) = crate::service::pools::get(d, &row.pool) {
        pending.end(d).await?;
        return Err(e);
    }
    let aside = match layout::move_aside(&layout::instance_dirs(d, &row.pool, &key)) {
        Ok(aside) => aside,
        Err(e) => {
            pending.end(d).await?;
            return Err(ApiError::internal(e));
        }
    };
    crate::failpoint::hit("instance-delete:moved-aside");
    let reservations = crate::service::nics::reservations_of(d, &key).await;
    let (p, n, id) = (row.project.clone(), row.name.clone(), pending.into_id());
    if let Err(e) = d.db(move |s| s.delete_instance_ending(&p, &n, id)).await {
        aside.restore().map_err(ApiError::internal)?;
        d.db(move |s| s.end_intent(id)).await?;
        return Err(e);
    }
    crate::failpoint::hit("instance-delete:row-deleted");
    // Its reservations went with its row: its addresses and names are free again.
    crate::service::nics::release(d, &reservations).await;
    d.runtime.remove_logs(&key);
    // Its backups' rows went with its row: their files go now (or at the next start).
    for file in backup_files {
        let _ = std::fs::remove_file(file);
    }
    drop(writes);
    let removed = tokio::task::spawn_blocking(move || aside.remove()).await?;
    if let Err(e) = removed {
        // The instance is gone; its files are under a hidden name start-up removes.
        tracing::error!(instance = %key, error = %e, "could not remove a deleted instance's files");
    }
    Ok(())
}

/// Rename a stopped instance (the action locks of both names held by the caller).
///
/// Steps: intent recorded; directories moved (root filesystem, then snapshots); row renamed;
/// logs moved; intent ended. Recovery finishes the rename if the row moved, else undoes it.
pub async fn rename(d: &Arc<Daemon>, row: &InstanceRow, new: &str) -> ApiResult<()> {
    let key = row.key();
    let new_key = InstanceKey::new(&row.project, new);
    // Writes in flight through the files API finish first: they hold the old name's lock, and
    // once renamed the tree is guarded by the new name's.
    let _writes = d.runtime.rootfs_lock(&key).write_owned().await;
    let exists = || ApiError::Conflict(format!("Instance {new:?} already exists"));
    crate::service::pools::get(d, &row.pool)?;
    if layout::instance_dir(d, &row.pool, &new_key).exists() {
        return Err(exists());
    }
    let pending = intent::begin(
        d,
        &Intent::InstanceRename {
            project: row.project.clone(),
            from: row.name.clone(),
            to: new.to_owned(),
        },
    )
    .await?;
    crate::failpoint::hit("instance-rename:intent-recorded");
    if let Err(e) = layout::move_instance(d, &row.pool, &key, &new_key) {
        pending.end(d).await?;
        return Err(ApiError::internal(e));
    }
    crate::failpoint::hit("instance-rename:moved");
    let (p, old, n) = (row.project.clone(), row.name.clone(), new.to_owned());
    if let Err(e) = d.db(move |s| s.rename_instance(&p, &old, &n)).await {
        layout::move_instance(d, &row.pool, &new_key, &key).map_err(ApiError::internal)?;
        pending.end(d).await?;
        return Err(match e {
            ApiError::Conflict(_) => exists(),
            other => other,
        });
    }
    crate::failpoint::hit("instance-rename:row-renamed");
    // Its reservations followed the row: its DNS names follow them.
    let reservations = crate::service::nics::reservations_of(d, &new_key).await;
    crate::service::nics::renamed(d, &reservations).await;
    d.runtime.rename_logs(&key, &new_key);
    pending.end(d).await?;
    tracing::info!(from = %key, to = %new_key, "instance renamed");
    Ok(())
}
