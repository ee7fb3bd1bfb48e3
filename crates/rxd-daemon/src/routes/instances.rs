//! `/1.0/instances` (and LXD's alias `/1.0/containers`): creating an instance from an image, with
//! its idmap allocated and its root filesystem unpacked with ownership shifted to that map;
//! listing, showing and deleting; and the state endpoint that starts, stops, restarts, freezes and
//! thaws it through the runtime.

use super::ListQuery;
use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::response;
use crate::routes::images;
use crate::state::{now_unix, Daemon};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use rxd_core::idmap::{Block, BLOCK_SIZE};
use rxd_core::instance_config::{self, flag};
use rxd_store::InstanceRow;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

const NOT_FOUND: &str = "Instance not found";

/// An instance's key on disk and in the runtime (see `rxd_core::name::instance_key`).
pub trait Keyed {
    fn key(&self) -> String;
}

impl Keyed for InstanceRow {
    fn key(&self) -> String {
        rxd_core::name::instance_key(&self.project, &self.name)
    }
}

/// `?project=` to append to an instance URL outside the default project, as LXD does.
pub fn project_suffix(project: &str) -> String {
    if project == "default" {
        String::new()
    } else {
        format!("?project={project}")
    }
}

/// The one check every path that creates or changes an instance calls with its final config.
pub(super) fn confine(
    d: &Daemon,
    caller: &Caller,
    project: &str,
    config: &BTreeMap<String, String>,
    devices: usize,
) -> ApiResult<()> {
    let p = d
        .project(project)
        .ok_or_else(|| ApiError::NotFound(crate::error::PROJECT_NOT_FOUND.into()))?;
    rxd_auth::confinement::check_instance(caller.rights.admin, project, &p.config, config, devices)
        .map_err(|v| {
            tracing::warn!(project, by = %caller.identity.user_name(), refused = %v, "instance config refused");
            ApiError::from(v)
        })
}

/// The bound on `project`'s isolated ids for this caller (`rxd_core::idmap::project_limit`).
pub(super) fn idmap_limit(d: &Daemon, caller: &Caller, project: &str) -> Option<u64> {
    let configured = d
        .project(project)
        .and_then(|p| p.config.get("limits.idmap.size").cloned());
    rxd_core::idmap::project_limit(configured.as_deref(), caller.rights.admin)
}

pub fn instance_dir(d: &Daemon, name: &str) -> PathBuf {
    d.dir.join("containers").join(name)
}

#[derive(Deserialize, Default)]
pub struct Source {
    #[serde(
        rename = "type",
        default,
        deserialize_with = "rxd_api::null_as_default"
    )]
    kind: String,
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    alias: String,
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    fingerprint: String,
}

#[derive(Deserialize)]
pub struct InstancesPost {
    name: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    source: Source,
    #[serde(default)]
    config: Option<BTreeMap<String, String>>,
    #[serde(default)]
    devices: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    ephemeral: bool,
    #[serde(default)]
    description: Option<String>,
}

pub(super) fn config_of(row: &InstanceRow) -> BTreeMap<String, String> {
    serde_json::from_str(&row.config).unwrap_or_default()
}

/// LXD's status name and code for an instance now.
fn status(d: &Daemon, name: &str) -> (&'static str, u16) {
    match d.runtime.init(name) {
        None => ("Stopped", 102),
        Some(_) if d.runtime.frozen(name) => ("Frozen", 110),
        Some(_) => ("Running", 103),
    }
}

fn state_json(d: &Daemon, name: &str) -> Value {
    let (status, code) = status(d, name);
    let (pid, usage) = match d.runtime.init(name) {
        Some(init) => (init.pid, d.runtime.usage(name)),
        None => (0, Default::default()),
    };
    json!({
        "status": status, "status_code": code, "disk": {},
        "memory": {"usage": usage.memory, "usage_peak": usage.memory_peak, "swap_usage": 0, "swap_usage_peak": 0},
        "network": null, "pid": pid, "processes": usage.processes, "cpu": {"usage": usage.cpu_ns},
    })
}

pub(super) fn to_json(d: &Daemon, row: &InstanceRow, recursion: u8) -> Value {
    let config = config_of(row);
    let (status, code) = status(d, &row.key());
    let mut v = json!({
        "architecture": row.architecture,
        "config": config,
        "devices": {},
        "ephemeral": row.ephemeral,
        "profiles": ["default"],
        "stateful": false,
        "description": row.description,
        "created_at": crate::tokens::rfc3339(row.created_at),
        "expanded_config": config,
        "expanded_devices": {},
        "name": row.name,
        "status": status,
        "status_code": code,
        "last_used_at": "0001-01-01T00:00:00Z",
        "location": "none",
        "type": "container",
        "project": row.project,
    });
    if recursion >= 2 {
        v["state"] = state_json(d, &row.key());
        v["snapshots"] = json!([]);
        v["backups"] = json!([]);
    }
    v
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let project = caller.project.clone();
    let rows = if q.all_projects {
        let mut all = d.db(|s| s.all_instances()).await?;
        all.retain(|r| caller.can_view(&r.project));
        all
    } else {
        d.db(move |s| s.instances(&project)).await?
    };
    let objects = rows.iter().map(|r| to_json(&d, r, q.recursion)).collect();
    let selected = q.select(objects, |o| {
        format!(
            "/1.0/instances/{}{}",
            o["name"].as_str().unwrap_or_default(),
            project_suffix(o["project"].as_str().unwrap_or_default())
        )
    })?;
    Ok(response::sync(selected))
}

pub(super) async fn find(d: &Daemon, project: &str, name: &str) -> ApiResult<InstanceRow> {
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

pub async fn state(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    Ok(response::sync(state_json(&d, &row.key())))
}

#[derive(Deserialize)]
pub struct StatePut {
    action: String,
    #[serde(
        default = "default_timeout",
        deserialize_with = "null_as_default_timeout"
    )]
    timeout: i64,
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    force: bool,
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    stateful: bool,
}

fn default_timeout() -> i64 {
    -1
}

/// `"timeout": null` is a timeout left out.
fn null_as_default_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or_else(default_timeout))
}

/// `PUT .../state`: start, stop, restart, freeze or unfreeze, as a task operation.
pub async fn put_state(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<StatePut>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    if req.stateful {
        return Err(ApiError::BadRequest(
            "Stateful start and stop are not supported".into(),
        ));
    }
    let description = match req.action.as_str() {
        "start" => "Starting instance",
        "stop" => "Stopping instance",
        "restart" => "Restarting instance",
        "freeze" => "Freezing instance",
        "unfreeze" => "Unfreezing instance",
        other => {
            return Err(ApiError::BadRequest(format!(
                "Unknown action {other:?}: expected start, stop, restart, freeze or unfreeze"
            )))
        }
    };
    // Refuse what cannot work now, before the operation exists.
    let running = d.runtime.init(&row.key()).is_some();
    match req.action.as_str() {
        "start" if running => {
            return Err(ApiError::BadRequest(
                "The instance is already running".into(),
            ))
        }
        "stop" | "restart" | "freeze" | "unfreeze" if !running => {
            return Err(ApiError::BadRequest(
                "The instance is already stopped".into(),
            ))
        }
        _ => {}
    }
    let url = format!("/1.0/instances/{}", row.name);
    let op = d.operations.start(
        &d.events,
        description,
        &row.project,
        json!({"instances": [url], "containers": [url.replace("instances", "containers")]}),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let lock = d2.runtime.action_lock(&row.key());
        let _guard = lock.lock().await;
        let result = change_state(&d2, &row, &req, &caller).await;
        op2.finish(
            &d2.events,
            result.map(|()| Value::Null).map_err(|e| e.to_string()),
        );
    });
    Ok(response::operation(op.url(), op.to_json()))
}

async fn change_state(
    d: &Arc<Daemon>,
    row: &InstanceRow,
    req: &StatePut,
    caller: &Caller,
) -> ApiResult<()> {
    let url = format!("/1.0/instances/{}", row.name);
    let key = row.key();
    let project = row.project.as_str();
    let running = d.runtime.init(&key).is_some();
    match req.action.as_str() {
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

/// Parse one `volatile.idmap.*` value into the simple map rxd writes (`None`: privileged).
pub(super) fn parse_idmap(text: &str) -> ApiResult<Option<rxd_core::launch::IdMap>> {
    let bad = || ApiError::internal(format!("unreadable idmap {text:?}"));
    let entries: Vec<Value> = serde_json::from_str(text).map_err(|_| bad())?;
    if entries.is_empty() {
        return Ok(None);
    }
    let find = |key: &str| {
        entries
            .iter()
            .find(|e| e[key] == json!(true) && e["Nsid"] == json!(0))
            .and_then(|e| {
                let host = u32::try_from(e["Hostid"].as_u64()?).ok()?;
                let size = u32::try_from(e["Maprange"].as_u64()?).ok()?;
                Some((host, size))
            })
    };
    let ((uid, size), (gid, gsize)) = (
        find("Isuid").ok_or_else(bad)?,
        find("Isgid").ok_or_else(bad)?,
    );
    // An unprivileged map never reaches host root.
    if uid == 0 || gid == 0 || size != gsize {
        return Err(bad());
    }
    Ok(Some(rxd_core::launch::IdMap { uid, gid, size }))
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

/// Start the container (by its key) from its stored config.
pub(super) async fn start(d: &Arc<Daemon>, name: &str) -> ApiResult<()> {
    let row = by_key(d, name).await?;
    let mut config = config_of(&row);
    let next = config
        .get("volatile.idmap.next")
        .cloned()
        .unwrap_or_else(|| "[]".into());
    let idmap = parse_idmap(&next)?;
    let privileged = flag(&config, "security.privileged");
    if privileged != idmap.is_none() {
        return Err(ApiError::internal(format!(
            "instance {name}: idmap does not match security.privileged"
        )));
    }
    let dir = instance_dir(d, name);
    let last = config
        .get("volatile.last_state.idmap")
        .cloned()
        .unwrap_or_else(|| "[]".into());
    if last != next {
        // The map changed while the container was stopped: shift its files to the new one.
        let from = parse_idmap(&last)?;
        let shift = |m: rxd_core::launch::IdMap| rxd_image::IdShift {
            uid_base: m.uid,
            gid_base: m.gid,
            size: m.size,
        };
        let (from, to) = (from.map(shift), idmap.map(shift));
        let rootfs = dir.join("rootfs");
        tracing::info!(instance = %name, from = %last, to = %next, "remapping container filesystem");
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
        config.insert("volatile.last_state.idmap".into(), next.clone());
        save_config(d, name, &config).await?;
        // Held until the new map is recorded: a write must not be given the old map's ids.
        drop(exclusive);
    }
    if idmap.is_some() && d.hostids.is_none() {
        return Err(ApiError::BadRequest(
            "No subordinate ids for root: only privileged containers can run".into(),
        ));
    }
    if idmap.is_some() {
        untraversable_ancestor(&dir)?;
    }
    // Only the container's root may enter its directory (and so reach its root filesystem):
    // host users never can, so setuid files inside stay out of their reach.
    let (uid, gid, mode) = match idmap {
        Some(m) => (m.uid, m.gid, 0o100),
        None => (0, 0, 0o700),
    };
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(ApiError::internal)?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(ApiError::internal)?;

    let mut environment = rxd_core::launch::LaunchPlan::default_environment();
    for (k, v) in &config {
        if let Some(var) = k.strip_prefix("environment.") {
            environment.insert(var.to_owned(), v.clone());
        }
    }
    let plan = rxd_core::launch::LaunchPlan {
        name: name.to_owned(),
        hostname: row.name.clone(),
        rootfs: dir.join("rootfs"),
        idmap,
        cgroup: d.runtime.cgroup(name),
        memory_limit: config.get("limits.memory").and_then(|v| memory_limit(v)),
        process_limit: config.get("limits.processes").and_then(|v| v.parse().ok()),
        environment,
    };
    if privileged {
        tracing::warn!(instance = %name, "starting a privileged container: root inside it is root on the host");
        crate::audit::privileged_start(d, &row.project, &row.name);
    }
    let init = d.runtime.start(&plan).await?;
    tracing::info!(instance = %name, pid = init.pid, idmap = ?idmap, "container started");
    config.insert("volatile.idmap.current".into(), next);
    config.insert("volatile.last_state.power".into(), "RUNNING".into());
    save_config(d, name, &config).await
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
pub(super) async fn by_key(d: &Daemon, key: &str) -> ApiResult<InstanceRow> {
    let (p, n) = rxd_core::name::split_instance_key(key);
    let (p, n) = (p.to_owned(), n.to_owned());
    d.db(move |s| s.instance(&p, &n)).await
}

/// Store the config of the instance a runtime key names.
pub(super) async fn save_config(
    d: &Daemon,
    key: &str,
    config: &BTreeMap<String, String>,
) -> ApiResult<()> {
    let text = serde_json::to_string(config).map_err(ApiError::internal)?;
    let (p, n) = rxd_core::name::split_instance_key(key);
    let (p, n) = (p.to_owned(), n.to_owned());
    d.db(move |s| s.update_instance_config(&p, &n, &text)).await
}

/// Stop the container: with `force` (or a zero timeout, as LXD) kill it; otherwise ask its init
/// to halt (SIGPWR, as LXC) and wait up to `timeout` seconds (negative: as long as it takes).
pub(super) async fn stop(
    d: &Arc<Daemon>,
    name: &str,
    force: bool,
    timeout: i64,
    restarting: bool,
) -> ApiResult<()> {
    const SIGKILL: i32 = 9;
    const SIGPWR: i32 = 30;
    if force || timeout == 0 {
        d.runtime.signal(name, SIGKILL, false).await?;
        d.runtime
            .wait_stopped(name, Some(std::time::Duration::from_secs(30)))
            .await?;
    } else {
        if d.runtime.frozen(name) {
            return Err(ApiError::BadRequest(
                "The instance is frozen: unfreeze it first, or stop it with --force".into(),
            ));
        }
        d.runtime.signal(name, SIGPWR, false).await?;
        let wait = u64::try_from(timeout)
            .ok()
            .map(std::time::Duration::from_secs);
        d.runtime.wait_stopped(name, wait).await?;
    }
    stopped(d, name, restarting).await
}

/// Book-keeping once a container's init is gone.
/// An ephemeral instance is deleted once it stops, unless it is being restarted.
async fn stopped(d: &Daemon, name: &str, restarting: bool) -> ApiResult<()> {
    d.runtime.forget(name);
    d.runtime.clean_up(name).await?;
    if !restarting {
        d.runtime.prune_cgroup_parents();
    }
    if let Ok(row) = by_key(d, name).await {
        if row.ephemeral && !restarting {
            let dir = instance_dir(d, name);
            tokio::task::spawn_blocking(move || rxd_image::remove::remove_tree(dir))
                .await?
                .map_err(ApiError::internal)?;
            super::snapshots::remove_all(d, name).map_err(ApiError::internal)?;
            let (p, n) = (row.project.clone(), row.name.clone());
            d.db(move |s| s.delete_instance(&p, &n)).await?;
            d.runtime.remove_logs(name);
            tracing::info!(instance = %name, "ephemeral container stopped and deleted");
            return Ok(());
        }
        let mut config = config_of(&row);
        config.remove("volatile.idmap.current");
        config.insert("volatile.last_state.power".into(), "STOPPED".into());
        save_config(d, name, &config).await?;
    }
    tracing::info!(instance = %name, "container stopped");
    Ok(())
}

/// At start-up: find the containers still running from before.
pub async fn recover(d: &Arc<Daemon>) {
    match d.db(|s| s.all_instances()).await {
        Ok(rows) => {
            let names: Vec<String> = rows.iter().map(Keyed::key).collect();
            d.runtime.recover(&names).await;
        }
        Err(e) => tracing::warn!(error = %e, "could not list instances to recover"),
    }
}

/// Notice containers that end by themselves (halted from inside, or killed), and tidy up.
pub async fn watch(d: Arc<Daemon>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        for name in d.runtime.ended() {
            let lock = d.runtime.action_lock(&name);
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            if d.runtime.init(&name).is_none() {
                if let Err(e) = stopped(&d, &name, false).await {
                    tracing::warn!(instance = %name, error = %e, "could not tidy up after a container");
                }
            }
        }
    }
}

/// An isolated block chosen (base, size), or why none can be.
pub(super) type BlockChoice = Result<(u32, u32), rxd_core::idmap::IdmapError>;

/// What an instance's config asks of its idmap.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct IdmapWant {
    pub privileged: bool,
    pub isolated: bool,
    pub size: u32,
    pub pinned: Option<u32>,
}

impl IdmapWant {
    pub fn of(config: &BTreeMap<String, String>) -> ApiResult<IdmapWant> {
        Ok(IdmapWant {
            privileged: flag(config, "security.privileged"),
            isolated: flag(config, "security.idmap.isolated"),
            size: match config.get("security.idmap.size") {
                Some(s) => s
                    .parse::<u32>()
                    .map_err(|_| ApiError::BadRequest("invalid security.idmap.size".into()))?,
                None => BLOCK_SIZE,
            },
            pinned: config
                .get("security.idmap.base")
                .and_then(|b| b.parse::<u32>().ok()),
        })
    }

    /// The allocator for an isolated block of an instance in `project`, for the store's
    /// transaction: the project's share of ids (`limit`, see `idmap::project_limit`) is counted
    /// in the same transaction that takes the block.
    pub fn allocator(
        self,
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
            rxd_core::idmap::check_project_budget(&project, used, self.size, limit)?;
            let taken: Vec<Block> = taken
                .iter()
                .map(|t| Block {
                    base: t.base,
                    size: t.size,
                })
                .collect();
            let b = range.allocate(&taken, self.size, self.pinned)?;
            Ok((b.base, b.size))
        }
    }
}

/// The (uid base, gid base, size) map of an instance: none if privileged, its isolated block,
/// or the shared block.
pub(super) fn map_for(
    hostids: &crate::hostids::HostIds,
    privileged: bool,
    block: Option<(u32, u32)>,
) -> Option<(u32, u32, u32)> {
    let (uid_range, gid_range) = (hostids.uid, hostids.gid);
    match (privileged, block) {
        (true, _) => None,
        (false, Some((base, size))) => {
            Some((base, gid_range.0.base + (base - uid_range.0.base), size))
        }
        (false, None) => Some((uid_range.shared().base, gid_range.shared().base, BLOCK_SIZE)),
    }
}

pub(super) fn set_next_idmap(config: &mut BTreeMap<String, String>, map: Option<(u32, u32, u32)>) {
    config.insert(
        "volatile.idmap.base".into(),
        map.map_or(0, |(b, _, _)| b).to_string(),
    );
    config.insert("volatile.idmap.next".into(), idmap_json(map));
}

/// The LXD-style `volatile.idmap.*` value for a map (empty for privileged containers).
fn idmap_json(map: Option<(u32, u32, u32)>) -> String {
    match map {
        None => "[]".into(),
        Some((uid, gid, size)) => json!([
            {"Isuid": true, "Isgid": false, "Hostid": uid, "Nsid": 0, "Maprange": size},
            {"Isuid": false, "Isgid": true, "Hostid": gid, "Nsid": 0, "Maprange": size},
        ])
        .to_string(),
    }
}

pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Json(body): Json<InstancesPost>,
) -> ApiResult<Response> {
    if !rxd_core::name::valid_instance_name(&body.name) {
        return Err(ApiError::BadRequest(format!(
            "Invalid instance name {:?}: 1 to 63 letters, digits and dashes, starting with a letter, not ending with a dash",
            body.name
        )));
    }
    if !matches!(body.kind.as_deref(), None | Some("") | Some("container")) {
        return Err(ApiError::BadRequest("rxd runs containers only".into()));
    }
    if body.devices.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(ApiError::BadRequest(
            "Devices are not supported by rxd yet".into(),
        ));
    }
    let config = body.config.unwrap_or_default();
    instance_config::validate(&config).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    confine(&d, &caller, &caller.project, &config, 0)?;
    let project = caller.project.clone();
    let existing = d.db(move |s| s.instances(&project)).await?.len() as u64;
    if let Some(p) = d.project(&caller.project) {
        rxd_auth::confinement::check_count(&caller.project, &p.config, existing)?;
    }
    if body.source.kind != "image" {
        return Err(ApiError::BadRequest(
            "Only instances created from an image are supported".into(),
        ));
    }
    let target = if body.source.alias.is_empty() {
        body.source.fingerprint.clone()
    } else {
        body.source.alias.clone()
    };
    let fingerprint = images::resolve_source(&d, &caller.project, &target).await?;
    let hostids = d.hostids.ok_or_else(|| {
        ApiError::BadRequest("No subordinate ids for root in /etc/subuid and /etc/subgid: only privileged containers could run".into())
    })?;

    let url = format!("/1.0/instances/{}", body.name);
    let op = d.operations.start(
        &d.events,
        "Creating instance",
        &caller.project,
        json!({"instances": [url], "containers": [url.replace("instances", "containers")]}),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    let row = InstanceRow {
        project: caller.project.clone(),
        name: body.name,
        architecture: String::new(),
        config: String::new(),
        description: body.description.unwrap_or_default(),
        ephemeral: body.ephemeral,
        created_at: now_unix(),
    };
    tokio::spawn(async move {
        let result = create(&d2, row, config, fingerprint, hostids, &caller).await;
        op2.finish(
            &d2.events,
            result.map(|()| Value::Null).map_err(|e| e.to_string()),
        );
    });
    Ok(response::operation(op.url(), op.to_json()))
}

async fn create(
    d: &Arc<Daemon>,
    mut row: InstanceRow,
    mut config: BTreeMap<String, String>,
    fingerprint: String,
    hostids: crate::hostids::HostIds,
    caller: &Caller,
) -> ApiResult<()> {
    let IdmapWant {
        privileged,
        isolated,
        ..
    } = IdmapWant::of(&config)?;
    let image = d
        .db({
            let (p, fp) = (row.project.clone(), fingerprint.clone());
            move |s| s.images_by_prefix(&p, &fp, 1)
        })
        .await?
        .pop()
        .ok_or_else(|| ApiError::NotFound("Image not found".into()))?;
    row.architecture = image.architecture.clone();
    config.insert("volatile.base_image".into(), fingerprint.clone());
    // Every instance unpacks its image again: refuse one that cannot fit before recording it.
    let budget = images::UnpackBudget::of(d, &row.project).await?;
    budget.check_known(u64::try_from(image.unpacked_size).unwrap_or(0))?;
    let limits = budget.limits();

    // Record the instance and, for an isolated one, its block, in one transaction.
    let allocate = IdmapWant::of(&config)?.allocator(
        &hostids,
        &row.project,
        idmap_limit(d, caller, &row.project),
    );
    let store_row = row.clone();
    let block = d
        .db(move |s| {
            s.create_instance(
                &store_row,
                if isolated && !privileged {
                    Some(&allocate)
                } else {
                    None
                },
            )
        })
        .await
        .map_err(|e| match e {
            ApiError::Conflict(_) => {
                ApiError::Conflict(format!("Instance {:?} already exists", row.name))
            }
            other => other,
        })?
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let map = map_for(&hostids, privileged, block);
    set_next_idmap(&mut config, map);
    config.insert("volatile.last_state.idmap".into(), idmap_json(map));

    // Unpack the image with ownership shifted to the map; undo the record on any failure.
    let containers = d.dir.join("containers");
    let dest = instance_dir(d, &row.key());
    let tarball = d.dir.join("images").join(&fingerprint);
    let shift = map.map(|(uid, gid, size)| rxd_image::IdShift {
        uid_base: uid,
        gid_base: gid,
        size,
    });
    let unpacked = tokio::task::spawn_blocking(move || {
        if !containers.exists() {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o711)
                .create(&containers)
                .map_err(|e| rxd_image::ImageError::Io {
                    path: containers.display().to_string(),
                    source: e,
                })?;
        }
        rxd_image::unpack(&tarball, &dest, shift.as_ref(), &limits)
    })
    .await?;
    let stored_config = serde_json::to_string(&config).unwrap_or_else(|_| "{}".into());
    let (name, project) = (row.name.clone(), row.project.clone());
    let saved = match unpacked {
        Ok(u) => {
            let bytes = i64::try_from(u.bytes).unwrap_or(i64::MAX);
            d.db(move |s| {
                s.update_instance_config(&project, &name, &stored_config)?;
                s.set_instance_rootfs_size(&project, &name, bytes)
            })
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
        let (name, project) = (row.name.clone(), row.project.clone());
        let _ = d.db(move |s| s.delete_instance(&project, &name)).await;
        let _ = rxd_image::remove::remove_tree(instance_dir(d, &row.key()));
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

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let key = row.key();
    let lock = d.runtime.action_lock(&key);
    let guard = lock.clone().lock_owned().await;
    if d.runtime.init(&key).is_some() {
        return Err(ApiError::BadRequest(
            "The instance is currently running, stop it first".into(),
        ));
    }
    let url = format!("/1.0/instances/{}", row.name);
    let op = d.operations.start(
        &d.events,
        "Deleting instance",
        &row.project,
        json!({"instances": [url]}),
        false,
    );
    let dir = instance_dir(&d, &key);
    // Writes in flight through the files API finish before the tree goes.
    let writes = d.runtime.rootfs_lock(&key).write_owned().await;
    // remove_tree does not follow the symlinks inside the root filesystem, and removes any depth.
    let d2 = d.clone();
    let name = key.clone();
    let removed = tokio::task::spawn_blocking(move || {
        match rxd_image::remove::remove_tree(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }?;
        super::snapshots::remove_all(&d2, &name)
    })
    .await?;
    let result = match removed {
        Ok(()) => {
            let (p, n) = (row.project.clone(), row.name.clone());
            d.db(move |s| s.delete_instance(&p, &n)).await
        }
        Err(e) => Err(ApiError::internal(e)),
    };
    match result {
        Ok(()) => {
            d.runtime.remove_logs(&key);
            d.events
                .lifecycle("instance-deleted", &url, &row.project, &caller);
            op.finish(&d.events, Ok(Value::Null));
        }
        Err(e) => op.finish(&d.events, Err(e.to_string())),
    }
    drop(writes);
    drop(guard);
    Ok(response::operation(op.url(), op.to_json()))
}
