//! `rxc profile device ...` and `rxc config device ...`: a profile's or an instance's own
//! devices, each change a read, an edit of the device map and an ETag-guarded write back, as
//! `lxc` does. `override` copies a device an instance has from its profiles into its own.

use crate::cli::{ConfigDeviceCmd, DeviceCmd};
use crate::connect::Conn;
use crate::objects::{pairs, target};
use crate::project::escape;
use anyhow::{anyhow, bail};
use rxd_api::instance::{Devices, InstancePut};
use rxd_api::profile::ProfilePut;
use rxd_client::remotes::ConfigDir;

/// Whose devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Profile,
    Instance,
}

/// A profile's or an instance's devices as read, with how to write them back.
pub(crate) struct Held {
    conn: Conn,
    owner: Owner,
    name: String,
    etag: Option<String>,
    /// Its own devices: what a change edits before [`write`] sends them.
    pub(crate) devices: Devices,
    /// An instance's devices with its profiles applied (empty for a profile).
    expanded: Devices,
    /// What a write sends besides the devices.
    profile: Option<ProfilePut>,
    instance: Option<InstancePut>,
}

async fn read(conf: &ConfigDir, owner: Owner, spec: &str) -> anyhow::Result<Held> {
    let (conn, name) = target(conf, spec)?;
    read_on(conn, owner, name).await
}

/// Read the devices of profile or instance `name` on a remote already open (`rxc network
/// attach` names the instance on the network's remote).
pub(crate) async fn read_on(conn: Conn, owner: Owner, name: String) -> anyhow::Result<Held> {
    Ok(match owner {
        Owner::Profile => {
            let (v, etag) = crate::objects::profile(&conn, &name).await?;
            Held {
                devices: v.devices.clone(),
                expanded: Devices::new(),
                profile: Some(ProfilePut::from_profile(&v)),
                instance: None,
                conn,
                owner,
                name,
                etag,
            }
        }
        Owner::Instance => {
            let (v, etag) = crate::instance::fetch(&conn, &name).await?;
            Held {
                devices: v.devices.clone(),
                expanded: v.expanded_devices.clone(),
                profile: None,
                instance: Some(InstancePut {
                    stateful: None,
                    ..InstancePut::from_instance(&v)
                }),
                conn,
                owner,
                name,
                etag,
            }
        }
    })
}

/// Send the devices back, guarded by the ETag they were read with.
pub(crate) async fn write(h: Held) -> anyhow::Result<()> {
    match h.owner {
        Owner::Profile => {
            let mut body = h.profile.unwrap_or_default();
            body.devices = Some(h.devices);
            crate::edit::put(
                &h.conn,
                &crate::objects::profile_path(&h.name),
                &body,
                h.etag.as_deref(),
            )
            .await
        }
        Owner::Instance => {
            let mut body = h.instance.unwrap_or_default();
            body.devices = Some(h.devices);
            let path = format!("/1.0/instances/{}", escape(&h.name));
            crate::edit::put(&h.conn, &path, &body, h.etag.as_deref()).await
        }
    }
}

/// `KEY=VALUE...`, or one `KEY VALUE`.
fn keys(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    match args {
        [k, v] if !k.contains('=') => Ok(vec![(k.clone(), v.clone())]),
        _ => Ok(pairs(args)?.into_iter().collect()),
    }
}

pub async fn run(conf: &ConfigDir, owner: Owner, cmd: DeviceCmd) -> anyhow::Result<()> {
    match cmd {
        DeviceCmd::Add {
            target,
            device,
            kind,
            options,
        } => {
            let mut h = read(conf, owner, &target).await?;
            if h.devices.contains_key(&device) {
                bail!("The device already exists");
            }
            let mut d = pairs(&options)?;
            d.insert("type".into(), kind);
            h.devices.insert(device.clone(), d);
            let name = h.name.clone();
            write(h).await?;
            outln!("Device {device} added to {name}")?;
        }
        DeviceCmd::Remove { target, devices } => {
            let mut h = read(conf, owner, &target).await?;
            for d in &devices {
                if h.devices.remove(d).is_none() {
                    // As `lxc`: a device that only a profile gives cannot be removed here.
                    if h.expanded.contains_key(d) {
                        bail!("Device from profile(s) cannot be removed from individual instance. Override device or modify profile instead");
                    }
                    bail!("Device {d} doesn't exist");
                }
            }
            let name = h.name.clone();
            write(h).await?;
            outln!("Device {} removed from {name}", devices.join(", "))?;
        }
        DeviceCmd::List { target } => {
            let h = read(conf, owner, &target).await?;
            for d in h.devices.keys() {
                outln!("{d}")?;
            }
        }
        DeviceCmd::Show { target } => {
            let h = read(conf, owner, &target).await?;
            out!("{}", serde_norway::to_string(&h.devices)?)?;
        }
        DeviceCmd::Get {
            target,
            device,
            key,
        } => {
            let h = read(conf, owner, &target).await?;
            let d = h
                .devices
                .get(&device)
                .or_else(|| h.expanded.get(&device))
                .ok_or_else(|| anyhow!("Device doesn't exist"))?;
            outln!("{}", d.get(&key).map_or("", String::as_str))?;
        }
        DeviceCmd::Set {
            target,
            device,
            args,
        } => {
            let set = keys(&args)?;
            let mut h = read(conf, owner, &target).await?;
            let Some(d) = h.devices.get_mut(&device) else {
                if h.expanded.contains_key(&device) {
                    bail!("Device from profile(s) cannot be modified for individual instance. Override device or modify profile instead");
                }
                bail!("Device doesn't exist");
            };
            d.extend(set);
            write(h).await?;
        }
        DeviceCmd::Unset {
            target,
            device,
            key,
        } => {
            let mut h = read(conf, owner, &target).await?;
            let d = h
                .devices
                .get_mut(&device)
                .ok_or_else(|| anyhow!("Device doesn't exist"))?;
            d.remove(&key);
            write(h).await?;
        }
    }
    Ok(())
}

/// `rxc config device ...`.
pub async fn run_config(conf: &ConfigDir, cmd: ConfigDeviceCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigDeviceCmd::Common(cmd) => run(conf, Owner::Instance, cmd).await,
        ConfigDeviceCmd::Override {
            target,
            device,
            args,
        } => {
            let set = pairs(&args)?;
            let mut h = read(conf, Owner::Instance, &target).await?;
            if h.devices.contains_key(&device) {
                bail!("The device already exists");
            }
            let mut d = h
                .expanded
                .get(&device)
                .cloned()
                .ok_or_else(|| anyhow!("The profile device doesn't exist"))?;
            d.extend(set);
            h.devices.insert(device.clone(), d);
            write(h).await?;
            outln!("Device {device} overridden for {target}")?;
            Ok(())
        }
    }
}
