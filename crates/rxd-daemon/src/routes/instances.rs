//! `/1.0/instances` (and LXD's alias `/1.0/containers`): creating an instance from an image, with
//! its idmap allocated and its root filesystem unpacked with ownership shifted to that map;
//! listing, showing and deleting; and the state endpoint that starts, stops, restarts, freezes and
//! thaws it through the runtime.

use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response;
use crate::service::instances::{self, project_suffix, Keyed};
use crate::service::{copy, expand, images};
use crate::state::Daemon;
use crate::sync::now_unix;
use crate::views;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use rxd_core::instance_config;
use rxd_store::InstanceRow;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use rxd_api::instance::{InstanceStatePut as StatePut, InstancesPost};

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
    let snapshots = if q.recursion >= 2 {
        let keys: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.project.clone(), r.name.clone()))
            .collect();
        d.db(move |s| {
            keys.iter()
                .map(|(p, n)| s.snapshots(p, n))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
    } else {
        Vec::new()
    };
    // Each project's profiles, read once for its instances.
    let mut known = std::collections::BTreeMap::new();
    for r in &rows {
        if !known.contains_key(&r.project) {
            known.insert(r.project.clone(), expand::known(&d, &r.project).await?);
        }
    }
    let objects = rows
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let expanded = expand::expand_with(
                &known[&r.project],
                &r.profiles,
                &instances::config_of(r),
                &expand::devices_of(&r.devices),
            );
            let instance = views::instance(&d, r, q.recursion, expanded);
            let snaps = snapshots.get(k).map(Vec::as_slice).unwrap_or_default();
            serde_json::to_value(views::with_snapshots(instance, snaps, &known[&r.project]))
        })
        .collect::<Result<Vec<Value>, _>>()
        .map_err(ApiError::internal)?;
    let selected = q.select(objects, |o| {
        format!(
            "/1.0/instances/{}{}",
            o["name"].as_str().unwrap_or_default(),
            project_suffix(o["project"].as_str().unwrap_or_default())
        )
    })?;
    Ok(response::sync(selected))
}

pub async fn state(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = instances::find(&d, &caller.project, &name).await?;
    Ok(response::sync(views::instance_state(&d, &row.key())))
}

/// `PUT .../state`: start, stop, restart, freeze or unfreeze, as a task operation.
pub async fn put_state(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<StatePut>,
) -> ApiResult<Response> {
    let row = instances::find(&d, &caller.project, &name).await?;
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
        crate::operations::instance_resources(&url),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let lock = d2.runtime.action_lock(&row.key());
        let _guard = lock.lock().await;
        let change = instances::StateChange {
            action: &req.action,
            timeout: req.timeout,
            force: req.force,
        };
        let result = instances::change_state(&d2, &row, &change, &caller).await;
        if result.is_ok() && matches!(change.action, "start" | "restart") {
            // `snapshots.schedule` with `@startup` (a failure is logged, the start stands).
            crate::service::schedule::at_start(&d2, &row).await;
        }
        op2.finish(
            &d2.events,
            result.map(|()| Value::Null).map_err(|e| e.to_string()),
        );
    });
    Ok(response::operation(op.url(), op.to_json()))
}

/// `POST /1.0/instances` with `Content-Type: application/octet-stream`: import a backup
/// (`X-LXD-name` renames it, `X-LXD-pool` places it), as an operation.
async fn import_backup(
    d: Arc<Daemon>,
    caller: Caller,
    headers: &http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .filter(|v| !v.is_empty())
    };
    let name = header("x-lxd-name");
    let pool = header("x-lxd-pool");
    // Refused before the upload when it cannot succeed: too large, no room left in the
    // project, or no instance more allowed there.
    if header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > crate::service::images::MAX_IMAGE_BYTES)
    {
        return Err(ApiError::TooLarge {
            limit: crate::service::images::MAX_IMAGE_BYTES as usize,
        });
    }
    images::UnpackBudget::of(&d, &caller.project)
        .await?
        .check_known(0)?;
    let project = caller.project.clone();
    let existing = d.db(move |s| s.instances(&project)).await?.len() as u64;
    if let Some(p) = d.project(&caller.project) {
        rxd_auth::confinement::check_count(&caller.project, &p.config, existing)?;
    }
    let hostids = d
        .hostids
        .ok_or_else(|| ApiError::BadRequest("No host ids for containers (/etc/subuid)".into()))?;
    let dir = crate::service::backups::make_upload_dir(&d)?;
    let upload = crate::service::images::Upload::new(
        dir.join(format!(".import-{}", uuid::Uuid::new_v4().simple())),
    )?;
    {
        let mut file = upload.open()?;
        use std::io::Write;
        let size = crate::body::stream(body, crate::service::images::MAX_IMAGE_BYTES, |chunk| {
            file.write_all(chunk).map_err(ApiError::internal)
        })
        .await?;
        if size == 0 {
            return Err(ApiError::BadRequest("The backup is empty".into()));
        }
    }
    let project = caller.project.clone();
    let d2 = d.clone();
    let work = async move {
        let made =
            crate::service::backups::import(&d2, &caller, &upload.path, name, pool, hostids, None)
                .await;
        drop(upload);
        let made = made?;
        d2.events.lifecycle(
            "instance-created",
            &format!("/1.0/instances/{made}"),
            &caller.project,
            &caller,
        );
        Ok::<(), ApiError>(())
    };
    let op = crate::service::tasks::spawn(
        &d,
        "Creating instance from backup",
        &project,
        crate::operations::resources([("instances", Vec::new())]),
        work,
    );
    Ok(response::operation(op.url(), op.to_json()))
}

/// `POST /1.0/instances`: a new instance from an image or a copy (JSON), or from a backup
/// tarball (`application/octet-stream`, `lxc import`).
pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/octet-stream") {
        return import_backup(d, caller, &parts.headers, body).await;
    }
    let req = axum::extract::Request::from_parts(parts, body);
    let Json(body) =
        <Json<InstancesPost> as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
    post_json(d, caller, body).await
}

async fn post_json(d: Arc<Daemon>, caller: Caller, mut body: InstancesPost) -> ApiResult<Response> {
    // `lxc move` sends the source's volatile keys. They are the source server's state (its id
    // maps, its NICs' host names) and the new instance gets its own, as an import does; but its
    // NICs keep their MACs when an administrator moves it. A MAC is what the network filters
    // hold a NIC to, and only an administrator chooses one (as with a device's `hwaddr`).
    let mut carried = BTreeMap::new();
    if body.source.kind == "migration" {
        carried = rxd_core::devices::carried_macs(&body.config, caller.rights.is_admin());
        body.config = copy::copied_config(&body.config);
    }
    if !rxd_core::name::valid_instance_name(&body.name) {
        return Err(ApiError::BadRequest(format!(
            "Invalid instance name {:?}: 1 to 63 letters, digits and dashes, starting with a letter, not ending with a dash",
            body.name
        )));
    }
    if !matches!(body.kind.as_str(), "" | "container") {
        return Err(ApiError::BadRequest("rxd runs containers only".into()));
    }
    instance_config::validate(&body.config).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    body.config.extend(carried);
    expand::check_devices(&body.devices)?;
    if body.source.kind == "copy" {
        return copy_post(d, caller, body).await;
    }
    let config = body.config.clone();
    // No list: the image's profiles, which are `default` (LXD's default for an image); `[]`:
    // none.
    let profile_names = body
        .profiles
        .clone()
        .unwrap_or_else(|| vec![rxd_core::profile::DEFAULT.to_owned()]);
    // Checked now for a quick answer, and again when the row is recorded.
    let project = caller.project.clone();
    let (known, existing) = expand::known_with(&d, &caller.project, move |s| {
        Ok(s.instances(&project)?.len() as u64)
    })
    .await?;
    expand::check_list(&known, &profile_names)?;
    let expanded = expand::expand_with(&known, &profile_names, &config, &body.devices);
    // Each profile's devices are valid alone; together they must be too (one root disk).
    expand::check_devices(&expanded.devices)?;
    instances::confine(
        &d,
        &caller,
        &caller.project,
        &body.name,
        &expanded.config,
        &expanded.devices,
    )
    .await?;
    if let Some(p) = d.project(&caller.project) {
        rxd_auth::confinement::check_count(&caller.project, &p.config, existing)?;
    }
    if body.source.kind == "migration" {
        return migration_post(d, caller, body).await;
    }
    if body.source.kind != "image" {
        return Err(ApiError::BadRequest(
            "Only instances created from an image, a copy or a migration are supported".into(),
        ));
    }
    // A copy or migration source: rxd cannot take one yet, and must not quietly use a local
    // image that happens to share its name. An image on another server is pulled.
    let source = &body.source;
    if (!source.secret.is_empty() && source.server.is_empty())
        || !source.operation.is_empty()
        || source.mode == "push"
    {
        return Err(ApiError::BadRequest(
            "rxd cannot create instances from a migration or copy source yet".into(),
        ));
    }
    let pull = !source.server.is_empty();
    let target = if body.source.alias.is_empty() {
        body.source.fingerprint.clone()
    } else {
        body.source.alias.clone()
    };
    // A local image is resolved now (a missing one is refused at once); a remote one in the
    // operation, where its download is waited for.
    let local = if pull {
        images::may_pull_from(&d, &caller, &body.source.server)?;
        None
    } else {
        Some(images::resolve_source(&d, &caller.project, &target).await?)
    };
    let (server, protocol) = (body.source.server.clone(), body.source.protocol.clone());
    let (certificate, secret, source_project) = (
        body.source.certificate.clone(),
        body.source.secret.clone(),
        body.source.project.clone(),
    );
    let hostids = d.hostids.ok_or_else(|| {
        ApiError::BadRequest("No subordinate ids for root in /etc/subuid and /etc/subgid: only privileged containers could run".into())
    })?;

    let url = format!("/1.0/instances/{}", body.name);
    let op = d.operations.start(
        &d.events,
        "Creating instance",
        &caller.project,
        crate::operations::instance_resources(&url),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    let row = InstanceRow {
        project: caller.project.clone(),
        name: body.name,
        architecture: String::new(),
        config: String::new(),
        description: body.description,
        ephemeral: body.ephemeral,
        created_at: now_unix(),
        profiles: profile_names,
        devices: serde_json::to_string(&body.devices).map_err(ApiError::internal)?,
        // Chosen from the expanded root disk by the create.
        pool: String::new(),
    };
    tokio::spawn(async move {
        let (d3, op3) = (d2.clone(), op2.clone());
        let report = move |text: String| op3.report_download(&d3.events, text);
        let fingerprint = match local {
            Some(fingerprint) => Ok(fingerprint),
            None => images::pull(
                &d2,
                &caller,
                &images::Pull {
                    server: &server,
                    protocol: &protocol,
                    name: &target,
                    certificate: &certificate,
                    secret: &secret,
                    project: &source_project,
                    report: &report,
                },
                images::Purpose::Instance,
            )
            .await
            .map(|pulled| pulled.fingerprint),
        };
        let result = match fingerprint {
            Ok(fingerprint) => {
                instances::create(&d2, row, config, fingerprint, hostids, &caller).await
            }
            Err(e) => Err(e),
        };
        op2.finish(
            &d2.events,
            result.map(|()| Value::Null).map_err(|e| e.to_string()),
        );
    });
    Ok(response::operation(op.url(), op.to_json()))
}

/// `POST /1.0/instances` with a `migration` source (`lxc copy`/`lxc move` from another
/// server): `pull` dials the source's operation, `push` waits for the source (or a client's
/// relay) on this operation's channels, whose secrets go to this caller only, in this reply.
/// The instance is made as `service::migration::receive` makes it.
async fn migration_post(
    d: Arc<Daemon>,
    caller: Caller,
    body: InstancesPost,
) -> ApiResult<Response> {
    use crate::service::migration;
    let source = body.source.clone();
    if source.live || body.stateful {
        return Err(ApiError::BadRequest(
            "Unable to perform a live migration: rxd does not checkpoint running containers (no CRIU); stop the instance first or copy it with --stateless"
                .into(),
        ));
    }
    if source.refresh {
        return Err(ApiError::BadRequest(
            "Refreshing an existing copy (--refresh) is not supported by rxd".into(),
        ));
    }
    let hostids = d
        .hostids
        .ok_or_else(|| ApiError::BadRequest("No host ids for containers (/etc/subuid)".into()))?;
    images::UnpackBudget::of(&d, &caller.project)
        .await?
        .check_known(0)?;
    let name = body.name.clone();
    let requested = crate::service::backups::Requested {
        config: body.config,
        devices: body.devices,
        profiles: body.profiles,
        description: body.description,
        ephemeral: body.ephemeral,
    };
    let url = format!("/1.0/instances/{name}{}", project_suffix(&caller.project));
    let resources = crate::operations::instance_resources(&url);
    let project = caller.project.clone();
    let made = |d: Arc<Daemon>, caller: Caller, made: ApiResult<String>| {
        let made = made?;
        d.events.lifecycle(
            "instance-created",
            &format!("/1.0/instances/{made}"),
            &caller.project,
            &caller,
        );
        Ok::<(), ApiError>(())
    };
    match source.mode.as_str() {
        "" | "pull" => {
            migration::check_peer(&d, &caller, &source.operation)?;
            let d2 = d.clone();
            let work = async move {
                let pipes =
                    migration::dial(&source.operation, &source.certificate, &source.websockets)
                        .await?;
                let result =
                    migration::receive(&d2, &caller, name, requested, hostids, pipes).await;
                made(d2, caller, result)
            };
            let op =
                crate::service::tasks::spawn(&d, "Creating instance", &project, resources, work);
            Ok(response::operation(op.url(), op.to_json()))
        }
        "push" => {
            let d2 = d.clone();
            let (op, secrets) = migration::channel_operation(
                &d,
                "Creating instance",
                &project,
                resources,
                move |connect| async move {
                    let pipes = connect.await?;
                    let r = migration::receive(&d2, &caller, name, requested, hostids, pipes).await;
                    made(d2.clone(), caller, r).map_err(|e| e.to_string())
                },
            );
            let mut shown = op.to_json();
            shown["metadata"] = Value::Object(secrets);
            Ok(response::operation(op.url(), shown))
        }
        other => Err(ApiError::BadRequest(format!(
            "Unknown migration mode {other:?}: pull or push"
        ))),
    }
}

/// `POST /1.0/instances` with a `copy` source: `source.source` is `NAME` or `NAME/SNAPSHOT` in
/// `source.project` (the request's project when empty). The request's config, devices and
/// profiles win; what it leaves out comes from the source (its config without `volatile.*`).
async fn copy_post(d: Arc<Daemon>, caller: Caller, body: InstancesPost) -> ApiResult<Response> {
    let source = &body.source;
    if source.source.is_empty() {
        return Err(ApiError::BadRequest(
            "A copy needs a source instance (source.source)".into(),
        ));
    }
    // `live` (lxc sets it for a running source) is a migration's: on one server, as in LXD,
    // a running source is copied frozen.
    if !source.server.is_empty() || !source.operation.is_empty() {
        return Err(ApiError::BadRequest(
            "rxd copies instances on this server only".into(),
        ));
    }
    let (instance, snapshot) = match source.source.split_once('/') {
        Some((i, s)) => (i.to_owned(), Some(s.to_owned())),
        None => (source.source.clone(), None),
    };
    let from = copy::Source {
        project: if source.project.is_empty() {
            caller.project.clone()
        } else {
            source.project.clone()
        },
        instance,
        snapshot,
        instance_only: source.instance_only || source.container_only,
    };
    let src = copy::source_row(&d, &caller, &from).await?;
    let (src_config, src_devices, src_profiles) = match &from.snapshot {
        Some(snap) => {
            let s = crate::service::snapshots::find_snapshot(&d, &src, snap).await?;
            (s.config, s.devices, s.profiles)
        }
        None => (
            src.config.clone(),
            src.devices.clone(),
            src.profiles.clone(),
        ),
    };
    let src_config: BTreeMap<String, String> =
        serde_json::from_str(&src_config).unwrap_or_default();
    // The request's keys, then the source's for those it leaves out; no `volatile.*` from
    // either but the base image (the copy's maps and MACs are its own).
    let mut config = copy::copied_config(&body.config);
    for (k, v) in copy::copied_config(&src_config) {
        config.entry(k).or_insert(v);
    }
    let mut devices = body.devices.clone();
    for (k, v) in expand::devices_of(&src_devices) {
        devices.entry(k).or_insert(v);
    }
    let profiles = body.profiles.clone().unwrap_or(src_profiles);
    let hostids = d.hostids.ok_or_else(|| {
        ApiError::BadRequest("No subordinate ids for root in /etc/subuid and /etc/subgid: only privileged containers could run".into())
    })?;
    let url = format!("/1.0/instances/{}", body.name);
    let src_url = format!("/1.0/instances/{}", src.name);
    let op = d.operations.start(
        &d.events,
        "Creating instance",
        &caller.project,
        crate::operations::resources([
            ("instances", vec![url.clone(), src_url.clone()]),
            (
                "containers",
                vec![
                    url.replace("instances", "containers"),
                    src_url.replace("instances", "containers"),
                ],
            ),
        ]),
        false,
    );
    let row = InstanceRow {
        project: caller.project.clone(),
        name: body.name,
        architecture: String::new(),
        config: String::new(),
        description: body.description,
        ephemeral: body.ephemeral,
        created_at: now_unix(),
        profiles,
        devices: serde_json::to_string(&devices).map_err(ApiError::internal)?,
        // Chosen from the expanded root disk by the copy.
        pool: String::new(),
    };
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let result = copy::copy(&d2, row, config, from, hostids, &caller).await;
        op2.finish(
            &d2.events,
            result.map(|()| Value::Null).map_err(|e| e.to_string()),
        );
    });
    Ok(response::operation(op.url(), op.to_json()))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = instances::find(&d, &caller.project, &name).await?;
    let guard = instances::stopped_guard(&d, &row).await?;
    let url = format!("/1.0/instances/{}", row.name);
    let op = d.operations.start(
        &d.events,
        "Deleting instance",
        &row.project,
        crate::operations::resources([("instances", vec![url.to_string()])]),
        false,
    );
    match instances::remove(&d, &row).await {
        Ok(()) => {
            d.events
                .lifecycle("instance-deleted", &url, &row.project, &caller);
            op.finish(&d.events, Ok(Value::Null));
        }
        Err(e) => op.finish(&d.events, Err(e.to_string())),
    }
    drop(guard);
    Ok(response::operation(op.url(), op.to_json()))
}
