//! Devices that reach the host, as an instance runs with them: the host-path disks, custom
//! volumes and unix nodes its expanded devices give the container helper at start, the check of their host
//! sources by descriptor when a config names them, proxies (a forwarder each, or for
//! `nat=true` firewall rules, `service::proxy_nat`), and hot-plug (the difference between two
//! expanded device sets, applied to a running container).

use crate::error::{ApiError, ApiResult};
use crate::state::Daemon;
use rxd_core::devices::{self, Devices};
use rxd_core::launch::{DeviceChange, IdMap, ProxyPlan, RunAs};
use std::collections::BTreeMap;

/// The project's config (for `restricted.devices.disk.paths`).
fn project_config(d: &Daemon, project: &str) -> BTreeMap<String, String> {
    d.project(project).map(|p| p.config).unwrap_or_default()
}

/// What the container helper mounts for `devices` (expanded, validated) in `project`.
pub fn additions(d: &Daemon, project: &str, devices: &Devices) -> DeviceChange {
    let config = project_config(d, project);
    let (mut disks, nodes) = devices::mounts(devices);
    for disk in &mut disks {
        disk.beneath = rxd_auth::confinement::disk_prefix(&config, &disk.source.to_string_lossy());
    }
    disks.extend(crate::service::volumes::mounts(d, project, devices));
    DeviceChange {
        add_disks: disks,
        add_nodes: nodes,
        refuse: Some(d.dir.clone()),
        refuse_also: crate::service::pools::outside_sources(d),
        ..DeviceChange::default()
    }
}

/// Open every host-path disk source of `devices` as the container helper will (by descriptor,
/// root's symlinks only, beneath the project's allowed prefix, never inside the state dir), so
/// a config that cannot work is refused when it is written. A source that does not exist yet
/// passes: a required one fails the start, as in LXD.
pub fn check_sources(d: &Daemon, project: &str, devices: &Devices) -> ApiResult<()> {
    let change = additions(d, project, devices);
    for disk in &change.add_disks {
        let mut walk = rxd_hostpath::Walk::new(&disk.source).beneath(disk.beneath.as_deref());
        if !disk.volume {
            for dir in change.refused() {
                walk = walk.refuse(dir);
            }
        }
        let walked = walk.open();
        match walked {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid devices: Device validation failed for {:?}: {e}",
                    disk.device
                )))
            }
        }
    }
    for node in &change.add_nodes {
        if let Some(source) = &node.source {
            let mut walk = rxd_hostpath::Walk::new(source);
            for dir in change.refused() {
                walk = walk.refuse(dir);
            }
            match walk.open() {
                Ok(opened) => {
                    let want = if node.block {
                        rustix::fs::FileType::BlockDevice
                    } else {
                        rustix::fs::FileType::CharacterDevice
                    };
                    if opened.file_type != want {
                        return Err(ApiError::BadRequest(format!(
                            "Invalid devices: Device validation failed for {:?}: {} is not a {} device",
                            node.device,
                            source.display(),
                            if node.block { "block" } else { "character" }
                        )));
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(ApiError::BadRequest(format!(
                        "Invalid devices: Device validation failed for {:?}: {e}",
                        node.device
                    )))
                }
            }
        }
    }
    Ok(())
}

fn changed(a: &Devices, b: &Devices) -> Devices {
    a.iter()
        .filter(|(name, dev)| b.get(*name) != Some(*dev))
        .map(|(n, dev)| (n.clone(), dev.clone()))
        .collect()
}

fn proxies(devices: &Devices) -> impl Iterator<Item = (&String, &devices::Device)> {
    devices
        .iter()
        .filter(|(_, d)| d.get("type").map(String::as_str) == Some("proxy"))
}

/// The mounts to take out of and put into a running container when its expanded devices go
/// from `old` to `new`: every disk and node that changed goes out and comes back as it is now.
fn difference(d: &Daemon, project: &str, old: &Devices, new: &Devices) -> DeviceChange {
    let gone_devices = changed(old, new);
    let gone = devices::mounts(&gone_devices);
    let mut change = additions(d, project, &changed(new, old));
    change.remove_disks = gone.0;
    change
        .remove_disks
        .extend(crate::service::volumes::mounts(d, project, &gone_devices));
    change.remove_nodes = gone.1;
    change
}

/// Start the proxy devices among `devices` (all of the running container `key`'s expanded
/// devices, id map `idmap`): the `nat=true` ones' firewall rules first, so a target that is
/// not the instance's refuses the start before anything runs, then a forwarder for each
/// other one that has none running.
pub async fn start_proxies(
    d: &Daemon,
    key: &str,
    idmap: Option<IdMap>,
    devices: &Devices,
) -> ApiResult<()> {
    if d.runtime.init(key).is_none() {
        return Ok(());
    }
    crate::service::proxy_nat::sync(d, key, devices).await?;
    start_forwarders(d, key, idmap, devices).await
}

/// The forwarders of the proxy devices among `devices` that are not `nat=true` and have none
/// running.
async fn start_forwarders(
    d: &Daemon,
    key: &str,
    idmap: Option<IdMap>,
    devices: &Devices,
) -> ApiResult<()> {
    let Some(init) = d.runtime.init(key) else {
        return Ok(());
    };
    for (name, device) in proxies(devices) {
        if d.runtime.proxy_pid(key, name).is_some() {
            continue;
        }
        let proxy = rxd_core::proxy::validate(device).map_err(|e| {
            ApiError::BadRequest(format!("Device validation failed for {name:?}: {e}"))
        })?;
        if proxy.nat {
            continue;
        }
        let (uid, gid) = rxd_auth::confinement::proxy_identity(device);
        let plan = ProxyPlan {
            instance: key.to_owned(),
            device: name.clone(),
            init_pid: init.pid,
            init_start: init.start_time,
            idmap,
            proxy,
            run_as: RunAs { uid, gid },
        };
        let pid = d
            .runtime
            .start_proxy(&plan)
            .await
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        tracing::info!(instance = %key, device = %name, pid, "proxy forwarder started");
    }
    Ok(())
}

/// Bring the running container `key` from expanded devices `old` to `new`: disks and nodes
/// that changed are unmounted and mounted again, proxies that changed get a new forwarder,
/// and the NAT proxies' rules become `new`'s. Nothing when it is not running.
pub async fn plug(
    d: &Daemon,
    key: &str,
    project: &str,
    idmap: Option<IdMap>,
    old: &Devices,
    new: &Devices,
) -> ApiResult<()> {
    if d.runtime.init(key).is_none() {
        return Ok(());
    }
    let change = difference(d, project, old, new);
    if !change.is_empty() {
        d.runtime.change_devices(key, &change).await.map_err(|e| {
            ApiError::BadRequest(format!(
                "Failed to update the devices of the running instance: {e}"
            ))
        })?;
    }
    let gone = changed(old, new);
    for (name, _) in proxies(&gone) {
        d.runtime.stop_proxy(key, name).await;
    }
    crate::service::proxy_nat::sync(d, key, new).await?;
    start_forwarders(d, key, idmap, &changed(new, old)).await
}
