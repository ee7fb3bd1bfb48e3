//! Devices that reach the host, as an instance runs with them: the host-path disks and unix
//! nodes its expanded devices give the container helper at start, the check of their host
//! sources by descriptor when a config names them, and hot-plug (the difference between two
//! expanded device sets, applied to a running container).

use crate::error::{ApiError, ApiResult};
use crate::state::Daemon;
use rxd_core::devices::{self, Devices};
use rxd_core::launch::DeviceChange;
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
    DeviceChange {
        add_disks: disks,
        add_nodes: nodes,
        refuse: Some(d.dir.clone()),
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
        let walked = rxd_hostpath::Walk::new(&disk.source)
            .beneath(disk.beneath.as_deref())
            .refuse(&d.dir)
            .open();
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
            match rxd_hostpath::Walk::new(source).refuse(&d.dir).open() {
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

/// The mounts to take out of and put into a running container when its expanded devices go
/// from `old` to `new`: every disk and node that changed goes out and comes back as it is now.
pub fn difference(d: &Daemon, project: &str, old: &Devices, new: &Devices) -> DeviceChange {
    let changed = |a: &Devices, b: &Devices| -> Devices {
        a.iter()
            .filter(|(name, dev)| b.get(*name) != Some(*dev))
            .map(|(n, dev)| (n.clone(), dev.clone()))
            .collect()
    };
    let gone = devices::mounts(&changed(old, new));
    let mut change = additions(d, project, &changed(new, old));
    change.remove_disks = gone.0;
    change.remove_nodes = gone.1;
    change
}

/// Apply a device change to the running container `key` (nothing when it is not running).
pub async fn hotplug(d: &Daemon, key: &str, change: &DeviceChange) -> ApiResult<()> {
    if change.is_empty() || d.runtime.init(key).is_none() {
        return Ok(());
    }
    d.runtime.change_devices(key, change).await.map_err(|e| {
        ApiError::BadRequest(format!(
            "Failed to update the devices of the running instance: {e}"
        ))
    })
}

/// The change that undoes `change`.
pub fn reverse(change: &DeviceChange) -> DeviceChange {
    DeviceChange {
        add_disks: change.remove_disks.clone(),
        add_nodes: change.remove_nodes.clone(),
        remove_disks: change.add_disks.clone(),
        remove_nodes: change.add_nodes.clone(),
        refuse: change.refuse.clone(),
    }
}
