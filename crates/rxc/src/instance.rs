//! `rxc launch|init|start|stop|restart|pause|delete|list|info NAME`: containers.

use crate::cli::{CreateArgs, ExecArgs};
use crate::connect::{open, split_target, Conn};
use crate::image::{wait, wait_id};
use anyhow::{anyhow, bail};
use rxd_api::instance::{
    Instance, InstanceConsolePost, InstanceExecControl, InstanceExecMetadata, InstanceExecPost,
    InstancePost, InstancePut, InstanceSource, InstanceState, InstanceStatePut, InstancesPost,
};
use rxd_api::operation::Operation;
use rxd_api::snapshot::InstanceSnapshotsPost;
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use std::collections::BTreeMap;

pub async fn create(conf: &ConfigDir, args: CreateArgs, start: bool) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, &args.name);
    let (image_remote, image) = split_target(conf, &args.image);
    // An image server's image: the daemon pulls it (LXD's `source` with `mode: pull`).
    let server = if image_remote != remote {
        let r = conf.remote(&image_remote)?;
        if r.protocol != "simplestreams" {
            bail!("the image must be on the server the container is created on ({remote}:), or on an image server (a simplestreams remote)");
        }
        Some(r.addr)
    } else {
        None
    };
    let mut config = BTreeMap::new();
    for kv in &args.config {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("bad config {kv:?}: expected KEY=VALUE"))?;
        config.insert(k.to_owned(), v.to_owned());
    }
    let conn = open(conf, &remote)?;
    let mut source = InstanceSource {
        kind: "image".into(),
        ..Default::default()
    };
    if let Some(server) = server {
        source.mode = "pull".into();
        source.server = server;
        source.protocol = "simplestreams".into();
        source.alias = image;
    } else {
        // An image is named by alias or by fingerprint (prefix). It is sent as an alias, and
        // again as a fingerprint if the server has no such alias: rxd resolves either from
        // `alias` in one request, LXD answers 404 for a fingerprint there.
        source.alias = image;
    }
    let mut devices = rxd_api::instance::Devices::new();
    if let Some(network) = &args.network {
        devices.insert("eth0".into(), nic_on(&conn, network).await?);
    }
    if let Some(pool) = &args.storage {
        devices.insert("root".into(), root_disk(pool));
    }
    let body = InstancesPost {
        name: name.clone(),
        kind: "container".into(),
        source,
        config,
        devices,
        // None: the image's profiles (the server's choice, as `lxc` leaves it).
        profiles: if args.no_profiles {
            Some(Vec::new())
        } else if args.profiles.is_empty() {
            None
        } else {
            Some(args.profiles.clone())
        },
        ephemeral: args.ephemeral,
        ..Default::default()
    };
    outln!("Creating {name}")?;
    let op: rxd_api::operation::Operation =
        match conn.send_as(Method::POST, "/1.0/instances", &body).await {
            Err(e) if body.source.server.is_empty() && not_found(&e) => {
                let mut body = body;
                body.source.fingerprint = std::mem::take(&mut body.source.alias);
                conn.send_as(Method::POST, "/1.0/instances", &body).await?
            }
            answer => answer?,
        };
    conn.wait_operation_showing(&op.id, "Retrieving image")
        .await?;
    if start {
        outln!("Starting {name}")?;
        change_state(&conn, &name, "start", false, -1).await?;
    }
    Ok(())
}

/// Whether the server answered 404 (LXD's "Image alias not found").
fn not_found(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<rxd_client::ClientError>(),
        Some(rxd_client::ClientError::Api { status: 404, .. })
    )
}

/// A root disk in `pool`, as `lxc launch -s` and `lxc copy -s` write it.
fn root_disk(pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("type".to_owned(), "disk".to_owned()),
        ("path".to_owned(), "/".to_owned()),
        ("pool".to_owned(), pool.to_owned()),
    ])
}

/// An `eth0` on `network` as `lxc launch -n` makes it: `network=` for a managed network on a
/// server that has them, else a bridged NIC on a host bridge or a macvlan on another interface.
async fn nic_on(conn: &Conn, network: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let net: rxd_api::network::Network = conn
        .get_as(&format!("/1.0/networks/{network}"))
        .await
        .map_err(|e| anyhow!("Failed loading network {network:?}: {e}"))?;
    let mut device = BTreeMap::from([("type".to_owned(), "nic".to_owned())]);
    if net.managed {
        device.insert("network".into(), net.name);
    } else {
        let nictype = if net.kind == "bridge" {
            "bridged"
        } else {
            "macvlan"
        };
        device.insert("nictype".into(), nictype.into());
        device.insert("parent".into(), net.name);
    }
    device.insert("name".into(), "eth0".into());
    Ok(device)
}

/// One state change (`start`, `stop`, ...), its operation waited for.
pub async fn change_state(
    conn: &Conn,
    name: &str,
    action: &str,
    force: bool,
    timeout: i64,
) -> anyhow::Result<()> {
    let body = InstanceStatePut {
        action: action.into(),
        timeout,
        force,
        stateful: false,
    };
    let op = conn
        .send_as(Method::PUT, &format!("/1.0/instances/{name}/state"), &body)
        .await?;
    wait(conn, &op).await.map(drop)
}

/// Apply one state action to each named container.
pub async fn each(
    conf: &ConfigDir,
    names: &[String],
    action: &str,
    force: bool,
    timeout: i64,
) -> anyhow::Result<()> {
    if names.is_empty() {
        bail!("name at least one container");
    }
    for target in names {
        let (remote, name) = split_target(conf, target);
        let conn = open(conf, &remote)?;
        change_state(&conn, &name, action, force, timeout)
            .await
            .map_err(|e| anyhow!("{name}: {e}"))?;
    }
    Ok(())
}

pub async fn delete(conf: &ConfigDir, names: &[String], force: bool) -> anyhow::Result<()> {
    if names.is_empty() {
        bail!("name at least one container");
    }
    for target in names {
        let (remote, name) = split_target(conf, target);
        let conn = open(conf, &remote)?;
        // `NAME/SNAP`: a snapshot.
        if let Some((instance, snap)) = name.split_once('/') {
            let op = conn
                .call_as(
                    Method::DELETE,
                    &format!("/1.0/instances/{instance}/snapshots/{snap}"),
                )
                .await?;
            wait(&conn, &op).await?;
            continue;
        }
        let state: InstanceState = conn.get_as(&format!("/1.0/instances/{name}/state")).await?;
        if state.status != "Stopped" {
            if !force {
                bail!("{name} is running: stop it first, or delete it with --force");
            }
            change_state(&conn, &name, "stop", true, -1).await?;
        }
        let op = conn
            .call_as(Method::DELETE, &format!("/1.0/instances/{name}"))
            .await?;
        wait(&conn, &op).await?;
    }
    Ok(())
}

pub async fn info(conf: &ConfigDir, target: &str) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let v: Instance = conn
        .get_as(&format!("/1.0/instances/{name}?recursion=1"))
        .await?;
    outln!("Name: {}", v.name)?;
    outln!("Status: {}", v.status.to_uppercase())?;
    outln!(
        "Type: container{}",
        if v.ephemeral { " (ephemeral)" } else { "" }
    )?;
    outln!("Architecture: {}", v.architecture)?;
    outln!("Created: {}", v.created_at)?;
    let base = v
        .config
        .get("volatile.idmap.base")
        .map_or("0", String::as_str);
    outln!(
        "Idmap: {}",
        if privileged(&v) {
            "none (privileged: root in the container is root on the host)".to_owned()
        } else {
            format!("container 0 is host {base}")
        }
    )?;
    if let Some(state) = v.state.filter(|s| s.pid > 0) {
        outln!("PID: {}", state.pid)?;
        outln!("Resources:")?;
        outln!("  Processes: {}", state.processes)?;
        outln!(
            "  Memory usage: {:.2}MiB",
            state.memory.usage as f64 / 1048576.0
        )?;
        if state.memory.swap_usage > 0 {
            outln!(
                "  Swap usage: {:.2}MiB",
                state.memory.swap_usage as f64 / 1048576.0
            )?;
        }
        outln!("  CPU usage: {:.2} seconds", state.cpu.usage as f64 / 1e9)?;
        let lxcfs = v.config.get("volatile.lxcfs").is_some_and(|l| l == "true");
        outln!("LXCFS: {}", if lxcfs { "yes" } else { "no" })?;
    }
    Ok(())
}

fn privileged(v: &Instance) -> bool {
    v.config.get("security.privileged").map(String::as_str) == Some("true")
}

/// `GET` an instance with its ETag.
pub(crate) async fn fetch(conn: &Conn, name: &str) -> anyhow::Result<(Instance, Option<String>)> {
    let reply = conn
        .client
        .request(Method::GET, &format!("/1.0/instances/{name}"), None)
        .await
        .map_err(|e| conn.explain(e))?;
    let etag = reply.header("etag").map(str::to_owned);
    let v = reply.metadata_as().map_err(|e| anyhow!(e))?;
    Ok((v, etag))
}

pub async fn config_get(conf: &ConfigDir, target: &str, key: &str) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let (v, _) = fetch(&conn, &name).await?;
    outln!("{}", v.config.get(key).map_or("", String::as_str))?;
    Ok(())
}

/// Set (or with `None`, unset) keys: read the instance, change the keys, write it back in one
/// request guarded by its ETag, as `lxc config set` does.
pub async fn config_set(
    conf: &ConfigDir,
    target: &str,
    changes: &[(String, Option<String>)],
) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let (v, etag) = fetch(&conn, &name).await?;
    let mut body = InstancePut::from_instance(&v);
    let config = body.config.get_or_insert_with(BTreeMap::new);
    for (key, value) in changes {
        match value {
            Some(value) => config.insert(key.clone(), value.clone()),
            None => config.remove(key),
        };
    }
    let headers: Vec<(&str, &str)> = etag.iter().map(|e| ("if-match", e.as_str())).collect();
    let reply = conn
        .client
        .send(
            Method::PUT,
            &format!("/1.0/instances/{name}"),
            &headers,
            serde_json::to_vec(&body)?.into(),
        )
        .await
        .map_err(|e| conn.explain(e))?;
    let op = reply.metadata_as().map_err(|e| anyhow!(e))?;
    wait(&conn, &op).await.map(drop)
}

pub async fn config_show(conf: &ConfigDir, target: &str, expanded: bool) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let (v, _) = fetch(&conn, &name).await?;
    let mut shown = InstancePut {
        stateful: None,
        ..InstancePut::from_instance(&v)
    };
    if expanded {
        shown.config = Some(v.expanded_config.clone());
        shown.devices = Some(v.expanded_devices.clone());
    }
    out!("{}", serde_norway::to_string(&shown)?)?;
    Ok(())
}

/// What `lxc config edit` shows above an instance's YAML.
const INSTANCE_EDIT_HELP: &str = "### This is a YAML representation of the configuration.
### Any line starting with a '# will be ignored.
###
### A sample configuration looks like:
### profiles:
### - default
### config:
###   limits.memory: 256MiB
### devices: {}
### ephemeral: false
### description: a web server";

/// `rxc config edit [REMOTE:]NAME`: the instance's editable fields as YAML.
pub async fn config_edit(conf: &ConfigDir, target: &str) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let (v, etag) = fetch(&conn, &name).await?;
    let current = InstancePut {
        stateful: None,
        ..InstancePut::from_instance(&v)
    };
    let path = format!("/1.0/instances/{name}");
    let (conn, path, etag) = (&conn, &path, etag.as_deref());
    crate::edit::edit(
        INSTANCE_EDIT_HELP,
        &serde_norway::to_string(&current)?,
        |new: InstancePut, interactive| async move {
            if new.restore.is_some() {
                bail!("restore is not an editable field (use rxc restore)");
            }
            crate::edit::put(conn, path, &new, etag.filter(|_| interactive)).await
        },
    )
    .await
}

pub async fn rename(
    conf: &ConfigDir,
    old: &str,
    new: Option<&str>,
    pool: Option<&str>,
    project: Option<&str>,
) -> anyhow::Result<()> {
    let (remote, old) = split_target(conf, old);
    let (new_remote, new) = match new {
        Some(new) => split_target(conf, new),
        None if pool.is_some() || project.is_some() => (remote.clone(), old.clone()),
        None => bail!(
            "a new name, a storage pool (-s POOL) or a project (--target-project P) to move to is needed"
        ),
    };
    if new_remote != remote {
        if pool.is_some() || project.is_some() {
            bail!("moving to another server and to a pool or project at once is not supported: move, then move again");
        }
        let src = open(conf, &remote)?;
        let inst: rxd_api::instance::Instance =
            src.get_as(&format!("/1.0/instances/{old}")).await?;
        if inst.status != "Stopped" {
            bail!(
                "{old} is {}: stop it before moving it to another server",
                inst.status.to_lowercase()
            );
        }
        let args = crate::cli::CopyArgs::default();
        copy_between(conf, &args, (&remote, &old), (&new_remote, &new), true).await?;
        let op: Operation = src
            .call_as(Method::DELETE, &format!("/1.0/instances/{old}"))
            .await?;
        return wait(&src, &op).await.map(drop);
    }
    let conn = open(conf, &remote)?;
    // To another pool as `lxc move -s` asks it (LXD's `instance_pool_move`).
    // To another project as `lxc move --target-project` asks it (`instance_project_move`).
    let body = InstancePost {
        name: new,
        migration: pool.is_some() || project.is_some(),
        pool: pool.unwrap_or_default().to_owned(),
        project: project.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    let op = conn
        .send_as(Method::POST, &format!("/1.0/instances/{old}"), &body)
        .await?;
    wait(&conn, &op).await.map(drop)
}

/// `rxc copy`: the server copies the instance (or snapshot) itself, as `lxc copy` asks it on
/// one server (`source.type: copy`); the config sent is the `-c` overrides alone, the server
/// takes the rest from the source.
pub async fn copy(conf: &ConfigDir, args: crate::cli::CopyArgs) -> anyhow::Result<()> {
    let (remote, source) = split_target(conf, &args.source);
    let (new_remote, name) = split_target(conf, &args.name);
    if new_remote != remote {
        return copy_between(conf, &args, (&remote, &source), (&new_remote, &name), false).await;
    }
    let mut config = BTreeMap::new();
    for kv in &args.config {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("bad config {kv:?}: expected KEY=VALUE"))?;
        config.insert(k.to_owned(), v.to_owned());
    }
    let mut conn = open(conf, &remote)?;
    let source_project = conn.project.clone();
    // `-s`: the source's root disk (by its name, with its other keys) in the pool given.
    let mut devices = rxd_api::instance::Devices::new();
    if let Some(pool) = &args.storage {
        let name = source.split('/').next().unwrap_or_default();
        let src: serde_json::Value = conn.get_as(&format!("/1.0/instances/{name}")).await?;
        let root = src["expanded_devices"].as_object().and_then(|devs| {
            devs.iter()
                .find(|(_, d)| d["type"] == "disk" && d["path"] == "/")
        });
        let (dev_name, mut device) = match root {
            Some((n, d)) => (
                n.clone(),
                serde_json::from_value::<BTreeMap<String, String>>(d.clone()).unwrap_or_default(),
            ),
            None => ("root".to_owned(), root_disk(pool)),
        };
        device.insert("pool".into(), pool.clone());
        devices.insert(dev_name, device);
    }
    let body = InstancesPost {
        name,
        kind: "container".into(),
        source: InstanceSource {
            kind: "copy".into(),
            source,
            instance_only: args.instance_only,
            project: source_project,
            ..Default::default()
        },
        config,
        devices,
        profiles: if args.no_profiles {
            Some(Vec::new())
        } else if args.profiles.is_empty() {
            None
        } else {
            Some(args.profiles.clone())
        },
        ephemeral: args.ephemeral,
        ..Default::default()
    };
    if let Some(project) = &args.target_project {
        conn.client.set_project(Some(project.clone()));
        conn.project = project.clone();
    }
    let op: rxd_api::operation::Operation =
        conn.send_as(Method::POST, "/1.0/instances", &body).await?;
    wait(&conn, &op).await.map(drop)
}

/// `rxc copy` to another server, as `lxc copy` asks it (LXD's migration API): the target pulls
/// from the source's migration operation when the source is on the network, else the source
/// pushes to the target's. The config sent is the source's without its `volatile.*` keys (but
/// the base image, and when `moving` its NICs' MACs, as `lxc move` keeps them), with the `-c`
/// overrides; a running source is copied stateless, frozen while it is read.
async fn copy_between(
    conf: &ConfigDir,
    args: &crate::cli::CopyArgs,
    (remote, source): (&str, &str),
    (new_remote, name): (&str, &str),
    moving: bool,
) -> anyhow::Result<()> {
    let src = open(conf, remote)?;
    let mut dst = open(conf, new_remote)?;
    if let Some(project) = &args.target_project {
        dst.client.set_project(Some(project.clone()));
        dst.project = project.clone();
    }
    // A snapshot goes as an instance of its own, with its config, devices and profiles.
    let snapshot = source.split_once('/');
    let path = match snapshot {
        Some((instance, snap)) => format!("/1.0/instances/{instance}/snapshots/{snap}"),
        None => format!("/1.0/instances/{source}"),
    };
    let inst: rxd_api::instance::Instance = src.get_as(&path).await?;
    let mut config: BTreeMap<String, String> = inst
        .config
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("volatile.")
                || *k == "volatile.base_image"
                || (moving && k.ends_with(".hwaddr"))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for kv in &args.config {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("bad config {kv:?}: expected KEY=VALUE"))?;
        config.insert(k.to_owned(), v.to_owned());
    }
    let mut devices = inst.devices.clone();
    if let Some(pool) = &args.storage {
        let root = inst.expanded_devices.iter().find(|(_, d)| {
            d.get("type").map(String::as_str) == Some("disk")
                && d.get("path").map(String::as_str) == Some("/")
        });
        let (dev_name, mut device) = match root {
            Some((n, d)) => (n.clone(), d.clone()),
            None => ("root".to_owned(), root_disk(pool)),
        };
        device.insert("pool".into(), pool.clone());
        devices.insert(dev_name, device);
    }
    let profiles = if args.no_profiles {
        Vec::new()
    } else if args.profiles.is_empty() {
        inst.profiles.clone()
    } else {
        args.profiles.clone()
    };
    let mut req = InstancesPost {
        name: name.to_owned(),
        kind: "container".into(),
        config,
        devices,
        profiles: Some(profiles),
        ephemeral: args.ephemeral || inst.ephemeral,
        description: inst.description.clone(),
        source: InstanceSource {
            kind: "migration".into(),
            base_image: inst
                .config
                .get("volatile.base_image")
                .cloned()
                .unwrap_or_default(),
            instance_only: args.instance_only,
            container_only: args.instance_only,
            ..Default::default()
        },
        ..Default::default()
    };
    // LXD's InstancePost, or its InstanceSnapshotPost for a snapshot (which has no
    // `instance_only`).
    let mut send = serde_json::json!({
        "name": snapshot.map_or(source, |(_, snap)| snap),
        "migration": true,
    });
    if snapshot.is_none() {
        send["instance_only"] = args.instance_only.into();
        send["container_only"] = args.instance_only.into();
    }
    let secrets = |op: &Operation| -> BTreeMap<String, String> {
        op.metadata
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (src_addresses, src_certificate) = environment(&src).await?;
    if let Some(addr) = src_addresses.first() {
        // Pull: the target dials the source's operation.
        let out: Operation = src.send_as(Method::POST, &path, &send).await?;
        req.source.mode = "pull".into();
        req.source.operation = format!("https://{addr}/1.0/operations/{}", out.id);
        req.source.certificate = src_certificate;
        req.source.websockets = secrets(&out);
        let into: Operation = match dst.send_as(Method::POST, "/1.0/instances", &req).await {
            Ok(op) => op,
            Err(e) => {
                let _ = src
                    .call(Method::DELETE, &format!("/1.0/operations/{}", out.id), None)
                    .await;
                return Err(e);
            }
        };
        let (made, sent) = tokio::join!(wait(&dst, &into), wait(&src, &out));
        made?;
        sent?;
        return Ok(());
    }
    // Push: the source is not on the network, so it dials the target's operation.
    let (dst_addresses, dst_certificate) = environment(&dst).await?;
    let Some(addr) = dst_addresses.first() else {
        bail!(
            "neither server listens on the network (core.https_address): one must reach the other"
        );
    };
    req.source.mode = "push".into();
    let into: Operation = dst.send_as(Method::POST, "/1.0/instances", &req).await?;
    send["target"] = serde_json::to_value(rxd_api::instance::InstancePostTarget {
        certificate: dst_certificate,
        operation: format!("https://{addr}/1.0/operations/{}", into.id),
        websockets: secrets(&into),
    })?;
    let out: Operation = src.send_as(Method::POST, &path, &send).await?;
    let (made, sent) = tokio::join!(wait(&dst, &into), wait(&src, &out));
    made?;
    sent?;
    Ok(())
}

/// A server's network addresses and certificate (PEM), as `GET /1.0` gives them to a client
/// that hands them to another server.
async fn environment(conn: &Conn) -> anyhow::Result<(Vec<String>, String)> {
    let info = conn.call(Method::GET, "/1.0", None).await?;
    let addresses: Vec<String> = info["environment"]["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let certificate = info["environment"]["certificate"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((addresses, certificate))
}

/// `rxc exec`: LXD's non-interactive exec protocol: one websocket each for stdin, stdout and
/// stderr, and a control channel that carries Ctrl-C to the command as SIGINT.
pub async fn exec(conf: &ConfigDir, args: ExecArgs) -> anyhow::Result<i32> {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;

    let (remote, name) = split_target(conf, &args.name);
    let conn = open(conf, &remote)?;
    let mut environment = BTreeMap::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("bad --env {kv:?}: expected KEY=VALUE"))?;
        environment.insert(k.to_owned(), v.to_owned());
    }
    let interactive = args.interactive
        || (!args.noninteractive
            && rustix::termios::isatty(std::io::stdin())
            && rustix::termios::isatty(std::io::stdout()));
    let (mut width, mut height) = (0, 0);
    if interactive {
        if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
            (width, height) = (size.ws_col, size.ws_row);
        }
        if let Ok(term) = std::env::var("TERM") {
            environment.entry("TERM".to_owned()).or_insert(term);
        }
    }
    let body = InstanceExecPost {
        command: args.command,
        environment,
        wait_for_websocket: true,
        interactive,
        width: width.into(),
        height: height.into(),
        record_output: false,
        user: args.user,
        group: args.group,
        cwd: args.cwd.unwrap_or_default(),
    };
    let op: Operation = conn
        .send_as(Method::POST, &format!("/1.0/instances/{name}/exec"), &body)
        .await?;
    let channels = Channels::of(&conn, op)?;
    let id = channels.id.clone();
    let mut control = channels.connect("control").await?;
    if interactive {
        let ws0 = channels.connect("0").await?;
        return exec_terminal(&conn, &id, control, ws0).await;
    }
    let ws0 = channels.connect("0").await?;
    let ws1 = channels.connect("1").await?;
    let ws2 = channels.connect("2").await?;

    let input = tokio::spawn(async move {
        let mut ws0 = ws0;
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws0
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = ws0.send(Message::Close(None)).await;
        // Drain until the server closes.
        while let Some(Ok(_)) = ws0.next().await {}
    });
    async fn output(mut ws: rxd_client::WebSocket, mut to: impl tokio::io::AsyncWrite + Unpin) {
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Binary(b) => {
                    if to.write_all(&b).await.is_err() {
                        break;
                    }
                    let _ = to.flush().await;
                }
                Message::Text(t) => {
                    let _ = to.write_all(t.as_bytes()).await;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    }
    let out = tokio::spawn(output(ws1, tokio::io::stdout()));
    let err = tokio::spawn(output(ws2, tokio::io::stderr()));
    let outputs = async {
        let _ = out.await;
        let _ = err.await;
    };
    tokio::pin!(outputs);
    loop {
        tokio::select! {
            _ = &mut outputs => break,
            _ = tokio::signal::ctrl_c() => {
                let msg = serde_json::to_string(&InstanceExecControl {
                    command: "signal".into(),
                    signal: 2,
                    ..Default::default()
                })?;
                let _ = control.send(Message::Text(msg.into())).await;
            }
        }
    }
    input.abort();
    let done = wait_id(&conn, &id).await?;
    let _ = control.close(None).await;
    exit_code(done)
}

/// A websocket operation's channels: its id, and each channel's secret (shown once, in the
/// reply that started it).
struct Channels<'a> {
    conn: &'a Conn,
    id: String,
    fds: BTreeMap<String, String>,
}

impl<'a> Channels<'a> {
    fn of(conn: &'a Conn, op: Operation) -> anyhow::Result<Channels<'a>> {
        if op.id.is_empty() {
            bail!("no operation");
        }
        let metadata: InstanceExecMetadata = crate::connect::decode(op.metadata)?;
        Ok(Channels {
            conn,
            id: op.id,
            fds: metadata.fds,
        })
    }

    async fn connect(&self, fd: &str) -> anyhow::Result<rxd_client::WebSocket> {
        let secret = self
            .fds
            .get(fd)
            .ok_or_else(|| anyhow!("no secret for channel {fd}"))?;
        let path = format!("/1.0/operations/{}/websocket?secret={secret}", self.id);
        self.conn
            .client
            .websocket(&path)
            .await
            .map_err(|e| self.conn.explain(e))
    }
}

/// The local terminal in raw mode while it lives (keys, Ctrl-C included, go to the remote
/// terminal as they are); restored when dropped.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    fn enable() -> Option<RawMode> {
        let saved = rustix::termios::tcgetattr(std::io::stdin()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &raw,
        )
        .ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

/// Interactive exec: one websocket both ways for the remote terminal, window size changes
/// sent over the control channel.
async fn exec_terminal(
    conn: &Conn,
    id: &str,
    mut control: rxd_client::WebSocket,
    ws0: rxd_client::WebSocket,
) -> anyhow::Result<i32> {
    relay_terminal(&mut control, ws0, false).await?;
    let done = wait_id(conn, id).await?;
    let _ = futures_util::SinkExt::close(&mut control).await;
    exit_code(done)
}

/// The exit code a finished exec operation reports (`-1` if it reports none).
fn exit_code(done: Operation) -> anyhow::Result<i32> {
    let metadata: InstanceExecMetadata = crate::connect::decode(done.metadata)?;
    Ok(metadata.return_code.unwrap_or(-1) as i32)
}

/// Relay the local terminal (in raw mode) and a remote one until the remote side closes, or,
/// with `detachable`, until the user types Ctrl+a q.
async fn relay_terminal(
    control: &mut rxd_client::WebSocket,
    ws0: rxd_client::WebSocket,
    detachable: bool,
) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;

    let raw = RawMode::enable();
    let (mut sink, mut stream) = ws0.split();
    let mut input = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 4096];
        let mut after_ctrl_a = false;
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if detachable {
                for &b in &buf[..n] {
                    if after_ctrl_a && b == b'q' {
                        return;
                    }
                    after_ctrl_a = b == 0x01;
                }
            }
            if sink
                .send(Message::Binary(buf[..n].to_vec().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        // End of local input: keep showing the remote terminal until it closes.
        std::future::pending::<()>().await;
    });
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut stdout = tokio::io::stdout();
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    stdout.write_all(&b).await?;
                    stdout.flush().await?;
                }
                Some(Ok(Message::Text(t))) => {
                    stdout.write_all(t.as_bytes()).await?;
                    stdout.flush().await?;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = &mut input => break,
            _ = winch.recv() => {
                if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
                    let msg = InstanceExecControl {
                        command: "window-resize".into(),
                        args: [
                            ("width".to_owned(), size.ws_col.to_string()),
                            ("height".to_owned(), size.ws_row.to_string()),
                        ]
                        .into(),
                        signal: 0,
                    };
                    let msg = serde_json::to_string(&msg)?;
                    let _ = control.send(Message::Text(msg.into())).await;
                }
            }
        }
    }
    input.abort();
    drop(raw);
    Ok(())
}

/// `rxc console [REMOTE:]NAME`: attach to the container's console (Ctrl+a q detaches).
pub async fn console(conf: &ConfigDir, target: &str) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let (width, height) = rustix::termios::tcgetwinsize(std::io::stdout())
        .map(|s| (s.ws_col, s.ws_row))
        .unwrap_or((80, 24));
    let body = InstanceConsolePost {
        width: width.into(),
        height: height.into(),
        kind: "console".into(),
    };
    let op: Operation = conn
        .send_as(
            Method::POST,
            &format!("/1.0/instances/{name}/console"),
            &body,
        )
        .await?;
    let channels = Channels::of(&conn, op)?;
    let mut control = channels.connect("control").await?;
    let ws0 = channels.connect("0").await?;
    eprint!("To detach from the console, press: <ctrl>+a q\r\n");
    relay_terminal(&mut control, ws0, true).await?;
    let _ = futures_util::SinkExt::close(&mut control).await;
    Ok(())
}

/// `rxc snapshot [REMOTE:]NAME [SNAP]`: take a snapshot (named `snapN` unless given).
pub async fn snapshot(conf: &ConfigDir, target: &str, snap: Option<&str>) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let body = InstanceSnapshotsPost {
        name: snap.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    let op = conn
        .send_as(
            Method::POST,
            &format!("/1.0/instances/{name}/snapshots"),
            &body,
        )
        .await?;
    wait(&conn, &op).await?;
    Ok(())
}

/// `rxc restore [REMOTE:]NAME SNAP`: put the instance back as it was in the snapshot.
pub async fn restore(conf: &ConfigDir, target: &str, snap: &str) -> anyhow::Result<()> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let body = InstancePut {
        restore: Some(snap.to_owned()),
        ..Default::default()
    };
    let op = conn
        .send_as(Method::PUT, &format!("/1.0/instances/{name}"), &body)
        .await?;
    wait(&conn, &op).await?;
    Ok(())
}
