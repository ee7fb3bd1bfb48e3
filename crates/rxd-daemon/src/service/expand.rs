//! Expansion: an instance's config and devices over its profiles, in LXD's order, and where a
//! project's profiles live. A leaf of the services: instances, snapshots and profiles all use
//! it, and it uses none of them.

use crate::error::{ApiError, ApiResult, PROJECT_NOT_FOUND};
use crate::state::Daemon;
use rxd_core::devices::{self, Devices};
use rxd_core::profile::{self, Config};
use rxd_core::project_config::profiles_project;
use rxd_store::{InstanceRow, ProfileRow};
use std::collections::BTreeMap;

/// An instance's config and devices with its profiles applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded {
    pub config: Config,
    pub devices: Devices,
}

/// Where `project`'s profiles live: itself, or `default` when it has none of its own.
pub fn home(d: &Daemon, project: &str) -> ApiResult<String> {
    let p = d
        .project(project)
        .ok_or_else(|| ApiError::NotFound(PROJECT_NOT_FOUND.into()))?;
    Ok(profiles_project(project, &p.config).to_owned())
}

/// The projects whose instances use `home`'s profiles.
pub fn users(d: &Daemon, home: &str) -> Vec<String> {
    d.projects()
        .iter()
        .filter(|(name, p)| profiles_project(name, &p.config) == home)
        .map(|(name, _)| name.clone())
        .collect()
}

pub fn config_of(row: &ProfileRow) -> Config {
    serde_json::from_str(&row.config).unwrap_or_default()
}

/// Devices as a row stores them (`{}` when unreadable, which only the daemon writes).
pub fn devices_of(text: &str) -> Devices {
    serde_json::from_str(text).unwrap_or_default()
}

/// The profiles `project`'s instances may use, by name.
pub async fn known(d: &Daemon, project: &str) -> ApiResult<BTreeMap<String, ProfileRow>> {
    Ok(known_with(d, project, |_| Ok(())).await?.0)
}

/// [`known`], and what `also` reads, in one trip to the store (each trip is a hand-over to a
/// blocking thread and back).
pub async fn known_with<R: Send + 'static>(
    d: &Daemon,
    project: &str,
    also: impl FnOnce(&rxd_store::Store) -> Result<R, rxd_store::StoreError> + Send + 'static,
) -> ApiResult<(BTreeMap<String, ProfileRow>, R)> {
    let home = home(d, project)?;
    let (rows, more) = d.db(move |s| Ok((s.profiles(&home)?, also(s)?))).await?;
    Ok((
        rows.into_iter().map(|r| (r.name.clone(), r)).collect(),
        more,
    ))
}

/// Expand `config` and `devices` over the profiles `names` (in order) found in `known`. A name
/// not there (which the checks on every write keep from happening) adds nothing.
pub fn expand_with(
    known: &BTreeMap<String, ProfileRow>,
    names: &[String],
    config: &Config,
    devices: &Devices,
) -> Expanded {
    let parsed: Vec<(Config, Devices)> = names
        .iter()
        .filter_map(|n| known.get(n))
        .map(|p| (config_of(p), devices_of(&p.devices)))
        .collect();
    let (config, devices) = profile::expand(parsed.iter().map(|(c, d)| (c, d)), config, devices);
    Expanded { config, devices }
}

/// An instance as it runs: its profiles' config and devices, then its own.
pub async fn expanded(d: &Daemon, row: &InstanceRow) -> ApiResult<Expanded> {
    let known = known(d, &row.project).await?;
    Ok(expand_with(
        &known,
        &row.profiles,
        &serde_json::from_str(&row.config).unwrap_or_default(),
        &devices_of(&row.devices),
    ))
}

/// A profile list an instance in `project` may use: no name twice, each one there.
pub fn check_list(known: &BTreeMap<String, ProfileRow>, names: &[String]) -> ApiResult<()> {
    profile::valid_list(names).map_err(ApiError::BadRequest)?;
    match names.iter().find(|n| !known.contains_key(*n)) {
        Some(missing) => Err(ApiError::BadRequest(format!(
            "Requested profile {missing:?} doesn't exist"
        ))),
        None => Ok(()),
    }
}

/// Devices as an instance or a profile may hold them.
pub fn check_devices(devices: &Devices) -> ApiResult<()> {
    devices::validate(devices).map_err(|e| ApiError::BadRequest(format!("Invalid devices: {e}")))
}
