//! `rxc profile ...`: LXD's profiles, in the remote's current project, and the profile lists
//! of instances (`add`, `remove`, `assign`). Every change reads the object, changes it and
//! writes it back guarded by its ETag, as `lxc` does.

use crate::cli::ProfileCmd;
use crate::connect::{open, remote_name};
use crate::objects::target;
use crate::output::{column, print_list};
use crate::project::escape;
use anyhow::bail;
use rxd_api::instance::InstancePut;
use rxd_api::profile::{Profile, ProfilePost, ProfilePut, ProfilesPost};
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};

/// What `lxc profile edit` shows above a profile's YAML.
const PROFILE_EDIT_HELP: &str = "### This is a YAML representation of the profile.
### Any line starting with a '# will be ignored.
###
### A profile consists of a set of configuration items followed by a set of
### devices.
###
### An example would look like:
### name: onenic
### config:
###   raw.lxc: lxc.aa_profile=unconfined
### devices:
###   eth0:
###     nictype: bridged
###     parent: lxdbr0
###     type: nic
###
### Note that the name is shown but cannot be changed";

/// Read a profile, let `change` edit it, write it back under its ETag.
async fn modify(
    conf: &ConfigDir,
    spec: &str,
    change: impl FnOnce(&mut Profile) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (conn, name) = target(conf, spec)?;
    let (mut v, etag) = crate::objects::profile(&conn, &name).await?;
    change(&mut v)?;
    crate::edit::put(
        &conn,
        &crate::objects::profile_path(&name),
        &ProfilePut::from_profile(&v),
        etag.as_deref(),
    )
    .await
}

/// Read an instance, let `change` edit its profile list, write it back under its ETag.
async fn modify_instance(
    conf: &ConfigDir,
    spec: &str,
    change: impl FnOnce(&mut Vec<String>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (conn, name) = target(conf, spec)?;
    let (v, etag) = crate::instance::fetch(&conn, &name).await?;
    let mut body = InstancePut {
        stateful: None,
        ..InstancePut::from_instance(&v)
    };
    let mut list = v.profiles.clone();
    change(&mut list)?;
    body.profiles = Some(list);
    crate::edit::put(
        &conn,
        &format!("/1.0/instances/{}", escape(&name)),
        &body,
        etag.as_deref(),
    )
    .await
}

pub async fn run(conf: &mut ConfigDir, cmd: ProfileCmd) -> anyhow::Result<()> {
    match cmd {
        ProfileCmd::Create { name, description } => {
            let (conn, name) = target(conf, &name)?;
            // As `lxc profile create`: YAML piped in gives the new profile's content.
            let mut body = ProfilesPost {
                name: name.clone(),
                description,
                ..Default::default()
            };
            if !std::io::stdin().is_terminal() {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                if !text.trim().is_empty() {
                    let put: ProfilePut = crate::edit::parse(&text)?;
                    body.config = put.config.unwrap_or_default();
                    body.devices = put.devices.unwrap_or_default();
                    if let Some(d) = put.description.filter(|_| body.description.is_empty()) {
                        body.description = d;
                    }
                }
            }
            conn.send_as::<Value>(Method::POST, "/1.0/profiles", &body)
                .await?;
            outln!("Profile {name} created")?;
            Ok(())
        }
        ProfileCmd::List { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let items: Vec<Profile> = conn.get_as("/1.0/profiles?recursion=1").await?;
            let columns = [
                column("NAME", |v: &Profile| v.name.clone()),
                column("DESCRIPTION", |v: &Profile| v.description.clone()),
                column("USED BY", |v: &Profile| v.used_by.len().to_string()),
            ];
            print_list(format.format, &items, &columns)
        }
        ProfileCmd::Show { name } => {
            let (conn, name) = target(conf, &name)?;
            let (v, _) = crate::objects::profile(&conn, &name).await?;
            out!("{}", serde_norway::to_string(&v)?)?;
            Ok(())
        }
        ProfileCmd::Edit { name } => {
            let (conn, name) = target(conf, &name)?;
            let (v, etag) = crate::objects::profile(&conn, &name).await?;
            let p = crate::objects::profile_path(&name);
            let (conn, p, etag) = (&conn, &p, etag.as_deref());
            crate::edit::edit(
                PROFILE_EDIT_HELP,
                &serde_norway::to_string(&ProfilePut::from_profile(&v))?,
                |new: ProfilePut, interactive| async move {
                    crate::edit::put(conn, p, &new, etag.filter(|_| interactive)).await
                },
            )
            .await
        }
        ProfileCmd::Get { name, key } => {
            let (conn, name) = target(conf, &name)?;
            let (v, _) = crate::objects::profile(&conn, &name).await?;
            outln!("{}", v.config.get(&key).map_or("", String::as_str))?;
            Ok(())
        }
        ProfileCmd::Set { name, args } => {
            let set = match args.as_slice() {
                [k, v] if !k.contains('=') => BTreeMap::from([(k.clone(), v.clone())]),
                _ => crate::objects::pairs(&args)?,
            };
            modify(conf, &name, |p| {
                p.config.extend(set);
                Ok(())
            })
            .await
        }
        ProfileCmd::Unset { name, key } => {
            let shown = name.clone();
            modify(conf, &name, |p| match p.config.remove(&key) {
                Some(_) => Ok(()),
                None => bail!("Profile {shown} has no config key {key:?}"),
            })
            .await
        }
        ProfileCmd::Copy {
            source,
            target: new,
        } => {
            let (conn, name) = target(conf, &source)?;
            let (v, _) = crate::objects::profile(&conn, &name).await?;
            let new = match new.split_once(':') {
                Some((r, n)) if r == conn.name => n.to_owned(),
                Some(_) => bail!("rxc copies profiles within one server"),
                None => new,
            };
            let body = ProfilesPost {
                name: new.clone(),
                description: v.description,
                config: v.config,
                devices: v.devices,
            };
            conn.send_as::<Value>(Method::POST, "/1.0/profiles", &body)
                .await?;
            Ok(())
        }
        ProfileCmd::Rename { old, new } => {
            let (conn, old) = target(conf, &old)?;
            let new = match new.split_once(':') {
                Some((r, n)) if r == conn.name => n.to_owned(),
                Some(_) => bail!("a profile cannot move between servers"),
                None => new,
            };
            conn.send_as::<Value>(
                Method::POST,
                &crate::objects::profile_path(&old),
                &ProfilePost { name: new.clone() },
            )
            .await?;
            outln!("Profile {old} renamed to {new}")?;
            Ok(())
        }
        ProfileCmd::Delete { name } => {
            let (conn, name) = target(conf, &name)?;
            conn.call(Method::DELETE, &crate::objects::profile_path(&name), None)
                .await?;
            outln!("Profile {name} deleted")?;
            Ok(())
        }
        ProfileCmd::Add { instance, profile } => {
            let shown = (instance.clone(), profile.clone());
            modify_instance(conf, &instance, |list| {
                if list.contains(&profile) {
                    bail!("Profile {profile} is already applied to {}", shown.0);
                }
                list.push(profile);
                Ok(())
            })
            .await?;
            outln!("Profile {} added to {}", shown.1, shown.0)?;
            Ok(())
        }
        ProfileCmd::Remove { instance, profile } => {
            let shown = (instance.clone(), profile.clone());
            modify_instance(conf, &instance, |list| {
                let before = list.len();
                list.retain(|p| *p != profile);
                if list.len() == before {
                    bail!("Profile {profile} isn't currently applied to {}", shown.0);
                }
                Ok(())
            })
            .await?;
            outln!("Profile {} removed from {}", shown.1, shown.0)?;
            Ok(())
        }
        ProfileCmd::Assign { instance, profiles } => {
            let list: Vec<String> = profiles
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            let shown = instance.clone();
            let names = list.join(", ");
            modify_instance(conf, &instance, |l| {
                *l = list;
                Ok(())
            })
            .await?;
            if names.is_empty() {
                outln!("Profiles removed from {shown}")?;
            } else {
                outln!("Profiles {names} applied to {shown}")?;
            }
            Ok(())
        }
        ProfileCmd::Device(cmd) => {
            crate::device::run(conf, crate::device::Owner::Profile, cmd).await
        }
    }
}
