//! Changing an instance: `PUT`/`PATCH /1.0/instances/<name>` (config, description, ephemeral;
//! ETag-checked) and `POST /1.0/instances/<name>` (rename, stopped instances only).
//!
//! Client-sent `volatile.*` keys must be unchanged (LXD's tools send them back as they read
//! them), except the few LXD lets clients set. A change to `security.privileged` or
//! `security.idmap.*` takes a new idmap at once (allocated in the same transaction as the
//! config is saved) and the root filesystem is re-shifted to it at the next start. CPU, memory
//! and process limits reach a running container before the config is saved (LXD's live
//! update); everything else waits for its next start.

use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::response::{self, check_if_match};
use crate::service::expand;
use crate::service::instances::{
    allocator, apply_limits, config_of, confine, find, idmap_want, map_for, set_next_idmap, Keyed,
    LIVE_KEYS,
};
use crate::state::Daemon;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use rxd_core::instance_config;
use rxd_store::InstanceRow;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the ETag of an instance covers: what PUT can change.
#[derive(Serialize)]
pub struct EtagFields {
    config: BTreeMap<String, String>,
    description: String,
    devices: rxd_core::devices::Devices,
    ephemeral: bool,
    profiles: Vec<String>,
}

pub fn etag_fields(row: &InstanceRow) -> EtagFields {
    EtagFields {
        config: config_of(row),
        description: row.description.clone(),
        devices: expand::devices_of(&row.devices),
        ephemeral: row.ephemeral,
        profiles: row.profiles.clone(),
    }
}

/// `GET /1.0/instances/<name>`, with its ETag.
pub async fn get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<crate::listing::ListQuery>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let full = if q.recursion > 0 { 2 } else { 0 };
    let snapshots = if full > 0 {
        let (p, n) = (row.project.clone(), row.name.clone());
        d.db(move |s| s.snapshots(&p, &n)).await?
    } else {
        Vec::new()
    };
    let known = expand::known(&d, &row.project).await?;
    let expanded = expand::expand_with(
        &known,
        &row.profiles,
        &config_of(&row),
        &expand::devices_of(&row.devices),
    );
    let instance = crate::views::instance(&d, &row, full, expanded);
    Ok(response::sync_with_etag(
        crate::views::with_snapshots(instance, &snapshots, &known),
        &etag_fields(&row),
    ))
}

pub use rxd_api::instance::{InstancePost, InstancePut};

pub async fn put(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<InstancePut>,
) -> ApiResult<Response> {
    update(&d, &caller, &name, &headers, body, true).await
}

pub async fn patch(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<InstancePut>,
) -> ApiResult<Response> {
    update(&d, &caller, &name, &headers, body, false).await
}

/// The config a PUT (`replace`) or PATCH asks for, with volatile keys checked and kept.
fn merge_config(
    current: &BTreeMap<String, String>,
    sent: BTreeMap<String, String>,
    replace: bool,
) -> ApiResult<BTreeMap<String, String>> {
    let mut next: BTreeMap<String, String> = if replace {
        current
            .iter()
            .filter(|(k, _)| k.starts_with("volatile."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    } else {
        current.clone()
    };
    for (k, v) in sent {
        if k.starts_with("volatile.") && current.get(&k) == Some(&v) {
            continue;
        }
        instance_config::validate_key(&k, &v, true)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        next.insert(k, v);
    }
    Ok(next)
}

async fn update(
    d: &Arc<Daemon>,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
    body: InstancePut,
    replace: bool,
) -> ApiResult<Response> {
    let row = find(d, &caller.project, name).await?;
    let lock = d.runtime.action_lock(&row.key());
    let _guard = lock.lock().await;
    // Profiles cannot change under this edit's checks (see `Daemon::profiles_lock`).
    let _profiles = d.profiles_lock.read().await;
    let row = find(d, &caller.project, name).await?;
    check_if_match(headers, &etag_fields(&row))?;
    if let Some(snap) = body.restore.as_deref().filter(|r| !r.is_empty()) {
        // The restore takes the instance's lock itself, in its operation.
        drop(_guard);
        drop(_profiles);
        let op = crate::service::snapshots::restore(d, caller, &row.name, snap).await?;
        return Ok(response::operation(op.url(), op.to_json()));
    }
    if body.stateful == Some(true) {
        return Err(ApiError::BadRequest(
            "Stateful instances are not supported".into(),
        ));
    }
    // PUT replaces the profile list and the devices (absent: none, Go's zero value); PATCH
    // keeps what is not sent and replaces each device sent whole, as LXD.
    let profile_names = match (body.profiles, replace) {
        (Some(list), _) => list,
        (None, true) => Vec::new(),
        (None, false) => row.profiles.clone(),
    };
    let current_devices = expand::devices_of(&row.devices);
    let devices = crate::patch::merged(current_devices.clone(), body.devices, replace);
    expand::check_devices(&devices)?;
    let known = expand::known(d, &row.project).await?;
    expand::check_list(&known, &profile_names)?;
    if body
        .architecture
        .as_deref()
        .is_some_and(|a| !a.is_empty() && a != row.architecture)
    {
        return Err(ApiError::BadRequest(
            "The architecture of an instance cannot be changed".into(),
        ));
    }
    let current = config_of(&row);
    let mut config = merge_config(&current, body.config.unwrap_or_default(), replace)?;
    let old = expand::expand_with(&known, &row.profiles, &current, &current_devices);
    let new = expand::expand_with(&known, &profile_names, &config, &devices);
    expand::check_devices(&new.devices)?;
    confine(
        d,
        caller,
        &row.project,
        &row.name,
        &new.config,
        &new.devices,
    )
    .await?;
    crate::service::pools::check_root(d, &row, &new.devices)?;

    // A new idmap if what the config asks of it changed.
    let (before, after) = (idmap_want(&old.config)?, idmap_want(&new.config)?);
    let remap = before != after;
    // A running container keeps using its block until it stops: releasing the block now would
    // let the next isolated container be given the same host ids (under the action lock, so a
    // start cannot slip in between).
    if remap && d.runtime.init(&row.key()).is_some() {
        return Err(ApiError::BadRequest(
            "The id map of a running instance cannot change (security.privileged, security.idmap.*): stop it first".into(),
        ));
    }
    let hostids = d.hostids;
    if remap && !after.privileged && hostids.is_none() {
        return Err(ApiError::BadRequest(
            "No subordinate ids for root: only privileged containers can run".into(),
        ));
    }
    // CPU, memory and process limits reach a running container at once, as in LXD; the row
    // is written only once they have.
    let live = LIVE_KEYS
        .iter()
        .any(|k| old.config.get(*k) != new.config.get(*k));
    if live {
        if let Err(e) = apply_limits(d, &row, &new.config).await {
            // Back to what the stored config says, as far as it goes.
            let _ = apply_limits(d, &row, &old.config).await;
            return Err(e);
        }
    }
    // Devices go into (and out of) a running container at once, as in LXD.
    let key = row.key();
    let idmap = crate::service::instances::running_idmap(&current);
    let plug = |from, to| crate::service::devices::plug(d, &key, &row.project, idmap, from, to);
    // A plug that fails stops where it failed (removals come first): what it took out stays
    // out, which the stored config still lists until the next start; nothing is re-added, as
    // a re-add of a device whose removal failed would mount it twice.
    if let Err(e) = plug(&old.devices, &new.devices).await {
        if live {
            let _ = apply_limits(d, &row, &old.config).await;
        }
        return Err(e);
    }
    // NICs too (their `volatile.<dev>.*` keys go into the config stored below).
    if let Some(init) = d.runtime.init(&key) {
        let plugged = crate::service::nics::hotplug(
            d,
            &key,
            init.pid,
            &old.devices,
            &new.devices,
            &mut config,
        )
        .await;
        if let Err(e) = plugged {
            let _ = plug(&new.devices, &old.devices).await;
            if live {
                let _ = apply_limits(d, &row, &old.config).await;
            }
            return Err(e);
        }
    } else {
        // A NIC added to a stopped instance gets its MAC now, as at its create (LXD).
        crate::service::nics::fill_macs(&new.devices, &mut config);
    }
    let undo = || async {
        let _ = plug(&new.devices, &old.devices).await;
    };
    let mut new_row = row.clone();
    new_row.description = match (body.description, replace) {
        (Some(text), _) => text,
        (None, true) => String::new(),
        (None, false) => row.description.clone(),
    };
    new_row.ephemeral = match (body.ephemeral, replace) {
        (Some(e), _) => e,
        (None, true) => false,
        (None, false) => row.ephemeral,
    };
    new_row.config = serde_json::to_string(&config).map_err(ApiError::internal)?;
    new_row.profiles = profile_names;
    new_row.devices = serde_json::to_string(&devices).map_err(ApiError::internal)?;
    // One transaction: the row (config, and the idmap block if it changes) is either the old
    // one or the new one, whenever a kill comes.
    crate::failpoint::hit("instance-update:checked");
    let block = if remap {
        let limit = crate::service::instances::idmap_limit(d, caller, &row.project);
        let allocate = hostids.map(|h| allocator(after, &h, &row.project, limit));
        let wants_block = after.isolated && !after.privileged;
        let store_row = new_row.clone();
        let block = d
            .db(move |s| {
                let config_for = |block: Option<(u32, u32)>| {
                    let mut config = config.clone();
                    set_next_idmap(
                        &mut config,
                        hostids.and_then(|h| map_for(&h, after.privileged, block)),
                    );
                    serde_json::to_string(&config).unwrap_or_else(|_| "{}".into())
                };
                let allocate: Option<&rxd_store::Allocator<rxd_core::idmap::IdmapError>> =
                    match &allocate {
                        Some(f) if wants_block => Some(f),
                        _ => None,
                    };
                s.update_instance(
                    &store_row,
                    Some(rxd_store::Remap {
                        allocate,
                        config: &config_for,
                    }),
                )
            })
            .await
            .and_then(|r| r.map_err(|e| ApiError::BadRequest(e.to_string())));
        let block = match block {
            Ok(b) => b,
            Err(e) => {
                undo().await;
                return Err(e);
            }
        };
        Some(block)
    } else {
        let store_row = new_row.clone();
        let stored = d
            .db(move |s| s.update_instance::<String>(&store_row, None))
            .await
            .and_then(|r| r.map_err(ApiError::BadRequest));
        if let Err(e) = stored {
            if live {
                let _ = apply_limits(d, &row, &old.config).await;
            }
            undo().await;
            return Err(e);
        }
        None
    };
    crate::failpoint::hit("instance-update:row-updated");
    // NICs taken off a managed network free their reservations now, not at the next start.
    if let Err(e) = crate::service::nics::prune(d, &key, Some(&new.devices)).await {
        tracing::warn!(instance = %row.name, error = %e, "reservations not pruned");
    }
    if after.privileged && !before.privileged {
        tracing::warn!(instance = %row.name, "instance made privileged: root inside it will be root on the host");
    }
    tracing::info!(instance = %row.name, remapped = remap, block = ?block.flatten(), "instance updated");
    let url = format!("/1.0/instances/{}", row.name);
    d.events
        .lifecycle("instance-updated", &url, &row.project, caller);
    finished_operation(d, "Updating instance", &row.project, &url)
}

/// LXD answers these edits with an operation; the work is done, so it is already finished.
fn finished_operation(
    d: &Daemon,
    description: &str,
    project: &str,
    url: &str,
) -> ApiResult<Response> {
    let op = d.operations.start(
        &d.events,
        description,
        project,
        crate::operations::instance_resources(url),
        false,
    );
    op.finish(&d.events, Ok(Value::Null));
    Ok(response::operation(op.url(), op.to_json()))
}

/// `POST /1.0/instances/<name>` with `migration` (`lxc copy`/`lxc move` to another server): the
/// instance sent as `service::migration::send` sends it, to a target that dials this operation's
/// channels (their secrets go to this caller only, in this reply), or to the target operation
/// `target` names (push), which this server dials.
async fn migrate_out(
    d: Arc<Daemon>,
    caller: Caller,
    name: String,
    body: InstancePost,
) -> ApiResult<Response> {
    use crate::service::migration;
    let row = find(&d, &caller.project, &name).await?;
    let what = migration::What::Instance {
        instance_only: body.instance_only || body.container_only,
    };
    let (op, secrets) = migration::send_operation(&d, &caller, &row, what, body.live, body.target)?;
    let mut shown = op.to_json();
    if let Some(secrets) = secrets {
        shown["metadata"] = Value::Object(secrets);
    }
    Ok(response::operation(op.url(), shown))
}

/// `POST /1.0/instances/<name>`: rename a stopped instance.
pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<InstancePost>,
) -> ApiResult<Response> {
    // `lxc move NAME -s POOL` (LXD's `instance_pool_move`): on this server, to another pool.
    // (`live` says nothing here: the instance must be stopped.)
    let pool_move = body.migration
        && body.target.is_none()
        && !body.pool.is_empty()
        && (body.project.is_empty() || body.project == caller.project);
    // `lxc move NAME --target-project P` (LXD's `instance_project_move`).
    let project_move = body.migration
        && body.target.is_none()
        && !body.project.is_empty()
        && body.project != caller.project;
    if project_move && !body.pool.is_empty() {
        return Err(ApiError::BadRequest(
            "Move the instance to another project and to another pool one at a time".into(),
        ));
    }
    if (body.migration || body.live) && !pool_move && !project_move {
        return migrate_out(d, caller, name, body).await;
    }
    if !rxd_core::name::valid_instance_name(&body.name) {
        return Err(ApiError::BadRequest(format!(
            "Invalid instance name {:?}: 1 to 63 letters, digits and dashes, starting with a letter, not ending with a dash",
            body.name
        )));
    }
    let row = find(&d, &caller.project, &name).await?;
    let key = row.key();
    let lock = d.runtime.action_lock(&key);
    let _guard = lock.lock().await;
    if project_move {
        crate::service::moves::to_project(&d, &caller, &row, &body.project, &body.name).await?;
        let url = format!(
            "/1.0/instances/{}{}",
            body.name,
            crate::service::instances::project_suffix(&body.project)
        );
        d.events
            .lifecycle("instance-created", &url, &body.project, &caller);
        d.events.lifecycle(
            "instance-deleted",
            &format!("/1.0/instances/{name}"),
            &row.project,
            &caller,
        );
        return finished_operation(&d, "Moving instance", &row.project, &url);
    }
    if pool_move {
        crate::service::moves::to_pool(&d, &caller, &row, &body.pool).await?;
        let url = format!("/1.0/instances/{name}");
        d.events
            .lifecycle("instance-updated", &url, &row.project, &caller);
        if body.name == name {
            return finished_operation(&d, "Moving instance", &row.project, &url);
        }
    }
    let row = find(&d, &caller.project, &name).await?;
    if d.runtime.init(&key).is_some() {
        return Err(ApiError::BadRequest(
            "Renaming of running instance not allowed".into(),
        ));
    }
    let expanded = expand::expanded(&d, &row).await?;
    confine(
        &d,
        &caller,
        &row.project,
        &row.name,
        &expanded.config,
        &expanded.devices,
    )
    .await?;
    let new = body.name;
    let new_key = rxd_core::name::instance_key(&row.project, &new);
    let new_lock = d.runtime.action_lock(&new_key);
    let _new_guard = new_lock.lock().await;
    crate::service::instances::rename(&d, &row, &new).await?;
    let url = format!("/1.0/instances/{new}");
    d.events
        .lifecycle("instance-renamed", &url, &row.project, &caller);
    finished_operation(&d, "Renaming instance", &row.project, &url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn volatile_keys_are_kept_and_cannot_be_forged() {
        let current = map(&[
            ("limits.processes", "10"),
            ("volatile.idmap.base", "1000000"),
            ("volatile.idmap.next", "[]"),
        ]);
        // PUT replaces user keys, keeps volatile ones, accepts them sent back unchanged.
        let next = merge_config(
            &current,
            map(&[
                ("limits.memory", "64MiB"),
                ("volatile.idmap.base", "1000000"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            next,
            map(&[
                ("limits.memory", "64MiB"),
                ("volatile.idmap.base", "1000000"),
                ("volatile.idmap.next", "[]"),
            ])
        );
        // PATCH merges.
        let next = merge_config(&current, map(&[("limits.memory", "64MiB")]), false).unwrap();
        assert_eq!(next.get("limits.processes").map(String::as_str), Some("10"));
        // Forging the map, or an unknown or raw key, is refused.
        for (k, v) in [
            ("volatile.idmap.base", "0"),
            ("volatile.idmap.next", "[{\"Isuid\":true,\"Hostid\":0}]"),
            ("raw.lxc", "lxc.apparmor.profile=unconfined"),
            ("nonsense.key", "1"),
            ("limits.processes", "lots"),
        ] {
            assert!(
                merge_config(&current, map(&[(k, v)]), false).is_err(),
                "{k}={v}"
            );
        }
    }
}
