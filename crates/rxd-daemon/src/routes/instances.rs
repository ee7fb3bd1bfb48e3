//! `/1.0/instances` (and LXD's alias `/1.0/containers`): creating an instance from an image, with
//! its idmap allocated and its root filesystem unpacked with ownership shifted to that map; listing,
//! showing and deleting. Starting and stopping need the container runtime, which rxd does not
//! have yet: those actions answer 501.

use super::ListQuery;
use crate::body::Json;
use crate::caller::{Admin, Caller, Trusted};
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

const PROJECT: &str = "default";
const NOT_FOUND: &str = "Instance not found";

pub fn instance_dir(d: &Daemon, name: &str) -> PathBuf {
    d.dir.join("containers").join(name)
}

#[derive(Deserialize, Default)]
pub struct Source {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    alias: String,
    #[serde(default)]
    fingerprint: String,
}

#[derive(Deserialize)]
pub struct InstancesPost {
    name: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    source: Source,
    #[serde(default)]
    config: Option<BTreeMap<String, String>>,
    #[serde(default)]
    devices: Option<Map<String, Value>>,
    #[serde(default)]
    ephemeral: bool,
    #[serde(default)]
    description: Option<String>,
}

fn config_of(row: &InstanceRow) -> BTreeMap<String, String> {
    serde_json::from_str(&row.config).unwrap_or_default()
}

fn state_json() -> Value {
    json!({
        "status": "Stopped", "status_code": 102, "disk": {}, "memory": {"usage": 0, "usage_peak": 0, "swap_usage": 0, "swap_usage_peak": 0},
        "network": null, "pid": 0, "processes": 0, "cpu": {"usage": 0},
    })
}

fn to_json(row: &InstanceRow, recursion: u8) -> Value {
    let config = config_of(row);
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
        "status": "Stopped",
        "status_code": 102,
        "last_used_at": "0001-01-01T00:00:00Z",
        "location": "none",
        "type": "container",
        "project": row.project,
    });
    if recursion >= 2 {
        v["state"] = state_json();
        v["snapshots"] = json!([]);
        v["backups"] = json!([]);
    }
    v
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    _: Trusted,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let rows = d.db(|s| s.instances(PROJECT)).await?;
    let objects = rows.iter().map(|r| to_json(r, q.recursion)).collect();
    let selected = q.select(objects, |o| {
        format!("/1.0/instances/{}", o["name"].as_str().unwrap_or_default())
    })?;
    Ok(response::sync(selected))
}

async fn find(d: &Daemon, name: &str) -> ApiResult<InstanceRow> {
    if !rxd_core::name::valid_instance_name(name) {
        return Err(ApiError::NotFound(NOT_FOUND.into()));
    }
    let n = name.to_owned();
    d.db(move |s| s.instance(PROJECT, &n))
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound(NOT_FOUND.into()),
            other => other,
        })
}

/// With `?recursion=1`, the full form (state, snapshots, backups inline: extension
/// `instance_get_full`), which `lxc list` uses.
pub async fn get(
    State(d): State<Arc<Daemon>>,
    _: Trusted,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let full = if q.recursion > 0 { 2 } else { 0 };
    Ok(response::sync(to_json(&find(&d, &name).await?, full)))
}

pub async fn state(
    State(d): State<Arc<Daemon>>,
    _: Trusted,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    find(&d, &name).await?;
    Ok(response::sync(state_json()))
}

/// `GET .../snapshots`: snapshots are not implemented yet, so an instance has none.
pub async fn snapshots(
    State(d): State<Arc<Daemon>>,
    _: Trusted,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    find(&d, &name).await?;
    Ok(response::sync(Vec::<Value>::new()))
}

/// `PUT .../state`: the runtime that starts and stops containers is not built yet.
pub async fn put_state(
    State(d): State<Arc<Daemon>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    find(&d, &name).await?;
    Err(ApiError::NotImplemented)
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
    Admin(caller, _proof): Admin,
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
    let fingerprint = images::resolve_source(&d, &target).await?;
    let hostids = d.hostids.ok_or_else(|| {
        ApiError::BadRequest("No subordinate ids for root in /etc/subuid and /etc/subgid: only privileged containers could run".into())
    })?;

    let url = format!("/1.0/instances/{}", body.name);
    let op = d.operations.start(
        &d.events,
        "Creating instance",
        PROJECT,
        json!({"instances": [url], "containers": [url.replace("instances", "containers")]}),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    let row = InstanceRow {
        project: PROJECT.into(),
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
    let privileged = flag(&config, "security.privileged");
    let isolated = flag(&config, "security.idmap.isolated");
    let size = match config.get("security.idmap.size") {
        Some(s) => s
            .parse::<u32>()
            .map_err(|_| ApiError::BadRequest("invalid security.idmap.size".into()))?,
        None => BLOCK_SIZE,
    };
    let pinned = config
        .get("security.idmap.base")
        .and_then(|b| b.parse::<u32>().ok());
    let image = d
        .db({
            let fp = fingerprint.clone();
            move |s| s.images_by_prefix(PROJECT, &fp, 1)
        })
        .await?
        .pop()
        .ok_or_else(|| ApiError::NotFound("Image not found".into()))?;
    row.architecture = image.architecture.clone();
    config.insert("volatile.base_image".into(), fingerprint.clone());

    // Record the instance and, for an isolated one, its block, in one transaction.
    let (uid_range, gid_range) = (hostids.uid, hostids.gid);
    let allocate = move |taken: &[(u32, u32)]| -> Result<(u32, u32), rxd_core::idmap::IdmapError> {
        let taken: Vec<Block> = taken
            .iter()
            .map(|&(base, size)| Block { base, size })
            .collect();
        let b = uid_range.allocate(&taken, size, pinned)?;
        Ok((b.base, b.size))
    };
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
    let map = match (privileged, block) {
        (true, _) => None,
        (false, Some((base, size))) => {
            Some((base, gid_range.0.base + (base - uid_range.0.base), size))
        }
        (false, None) => Some((uid_range.shared().base, gid_range.shared().base, BLOCK_SIZE)),
    };
    config.insert(
        "volatile.idmap.base".into(),
        map.map_or(0, |(b, _, _)| b).to_string(),
    );
    config.insert("volatile.idmap.next".into(), idmap_json(map));
    config.insert("volatile.last_state.idmap".into(), idmap_json(map));

    // Unpack the image with ownership shifted to the map; undo the record on any failure.
    let containers = d.dir.join("containers");
    let dest = instance_dir(d, &row.name);
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
        rxd_image::unpack(
            &tarball,
            &dest,
            shift.as_ref(),
            &rxd_image::Limits::default(),
        )
    })
    .await?;
    let stored_config = serde_json::to_string(&config).unwrap_or_else(|_| "{}".into());
    let (name, project) = (row.name.clone(), row.project.clone());
    let saved = match unpacked {
        Ok(_) => {
            d.db(move |s| s.update_instance_config(&project, &name, &stored_config))
                .await
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "Failed to unpack the image: {e}"
        ))),
    };
    if let Err(e) = saved {
        let (name, project) = (row.name.clone(), row.project.clone());
        let _ = d.db(move |s| s.delete_instance(&project, &name)).await;
        let _ = std::fs::remove_dir_all(instance_dir(d, &row.name));
        return Err(e);
    }
    if privileged {
        tracing::warn!(instance = %row.name, "created a privileged container: root inside it is root on the host");
    }
    tracing::info!(instance = %row.name, image = %fingerprint, idmap = ?map, by = %caller.identity.user_name(), "instance created");
    d.events.lifecycle(
        "instance-created",
        &format!("/1.0/instances/{}", row.name),
        PROJECT,
        caller,
    );
    Ok(())
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Admin(caller, _proof): Admin,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = find(&d, &name).await?;
    let url = format!("/1.0/instances/{}", row.name);
    let op = d.operations.start(
        &d.events,
        "Deleting instance",
        PROJECT,
        json!({"instances": [url]}),
        false,
    );
    let dir = instance_dir(&d, &row.name);
    // remove_dir_all does not follow the symlinks inside the root filesystem.
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
    .await?;
    let result = match removed {
        Ok(()) => {
            let n = row.name.clone();
            d.db(move |s| s.delete_instance(PROJECT, &n)).await
        }
        Err(e) => Err(ApiError::internal(e)),
    };
    match result {
        Ok(()) => {
            d.events
                .lifecycle("instance-deleted", &url, PROJECT, &caller);
            op.finish(&d.events, Ok(Value::Null));
        }
        Err(e) => op.finish(&d.events, Err(e.to_string())),
    }
    Ok(response::operation(op.url(), op.to_json()))
}
