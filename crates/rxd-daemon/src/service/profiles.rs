//! Profiles below HTTP: where a project's profiles live, an instance's config and devices
//! expanded over its profiles, and every change to a profile, checked against every instance
//! that uses it before anything is written (LXD saves first and reports the instances that
//! fail; rxd refuses the whole change instead).

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::expand::{check_devices, devices_of, expand_with, home, known, users};
use crate::service::instances::{self, apply_limits, confine, idmap_want, Keyed, LIVE_KEYS};
use crate::state::Daemon;
use rxd_core::devices::Devices;
use rxd_core::profile::{self, Config, DEFAULT};
use rxd_store::ProfileRow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A profile's own config: instance keys, never `volatile.*` (LXD's rule).
fn check_config(config: &Config) -> ApiResult<()> {
    for (k, v) in config {
        if k.starts_with("volatile.") {
            return Err(ApiError::BadRequest(format!(
                "Invalid config: Volatile keys can only be set on instances: {k:?}"
            )));
        }
        rxd_core::instance_config::validate_key(k, v, true)
            .map_err(|e| ApiError::BadRequest(format!("Invalid config: {e}")))?;
    }
    Ok(())
}

/// Only the server administrator changes the `default` project's profiles from a project
/// that uses them (one without `features.profiles`): they apply to other projects too.
fn may_write(caller: &Caller, project: &str, home: &str) -> ApiResult<()> {
    if home != project && !caller.rights.is_admin() {
        return Err(ApiError::Forbidden(format!(
            "Project {project:?} has no profiles of its own (features.profiles=false): only the server administrator may change the default project's profiles"
        )));
    }
    Ok(())
}

/// Check a profile's own content as `caller` may write it in `project`.
fn check_profile(
    caller: &Caller,
    project: &str,
    config: &Config,
    devices: &Devices,
) -> ApiResult<()> {
    check_config(config)?;
    check_devices(devices)?;
    // Keys and devices only the server administrator may set, whoever uses the profile. The
    // project's own restrictions are checked on each instance's expanded config (a profile
    // alone may lack what a project requires, `security.idmap.isolated` say, which its
    // instances set), here for the ones using it and at every later assignment.
    let open = BTreeMap::new();
    rxd_auth::confinement::check_instance(caller.rights.is_admin(), project, &open, config, devices)
        .map_err(|v| {
            tracing::warn!(project, by = %caller.identity.user_name(), refused = %v, "profile refused");
            ApiError::from(v)
        })
}

/// The URLs of the instances that use `name` of `home`, that `caller` may see.
pub async fn used_by(
    d: &Daemon,
    caller: &Caller,
    home: &str,
    name: &str,
) -> ApiResult<Vec<String>> {
    let users = users(d, home);
    let name = name.to_owned();
    let found = d.db(move |s| s.profile_users(&users, &name)).await?;
    Ok(found
        .into_iter()
        .filter(|(p, _)| caller.can_view(p))
        .map(|(p, n)| format!("/1.0/instances/{n}{}", instances::project_suffix(&p)))
        .collect())
}

/// `POST /1.0/profiles`.
pub async fn create(
    d: &Daemon,
    caller: &Caller,
    project: &str,
    name: &str,
    description: String,
    config: Config,
    devices: Devices,
) -> ApiResult<()> {
    profile::valid_name(name).map_err(ApiError::BadRequest)?;
    let home = home(d, project)?;
    may_write(caller, project, &home)?;
    check_profile(caller, project, &config, &devices)?;
    let row = ProfileRow {
        project: home,
        name: name.to_owned(),
        description,
        config: serde_json::to_string(&config).map_err(ApiError::internal)?,
        devices: serde_json::to_string(&devices).map_err(ApiError::internal)?,
    };
    d.db(move |s| s.create_profile(&row))
        .await
        .map_err(|e| match e {
            ApiError::Conflict(_) => ApiError::Conflict(format!(
                "Error inserting {name:?} into database: The profile already exists"
            )),
            other => other,
        })
}

pub async fn get(d: &Daemon, project: &str, name: &str) -> ApiResult<ProfileRow> {
    let home = home(d, project)?;
    let name = name.to_owned();
    d.db(move |s| s.profile(&home, &name))
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound("Profile not found".into()),
            other => other,
        })
}

/// `PUT`/`PATCH /1.0/profiles/<name>`: the new content, checked alone and then, for every
/// instance using the profile, as that instance's expanded config would be; written only if
/// all pass; then CPU, memory and process limits reach the running ones, as in LXD.
pub async fn update(
    d: &Arc<Daemon>,
    caller: &Caller,
    project: &str,
    name: &str,
    description: String,
    config: Config,
    devices: Devices,
) -> ApiResult<()> {
    let home = home(d, project)?;
    may_write(caller, project, &home)?;
    check_profile(caller, project, &config, &devices)?;
    let _write = d.profiles_lock.write().await;
    let mut known = known(d, project).await?;
    let old = known
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::NotFound("Profile not found".into()))?;
    let new = ProfileRow {
        description,
        config: serde_json::to_string(&config).map_err(ApiError::internal)?,
        devices: serde_json::to_string(&devices).map_err(ApiError::internal)?,
        ..old.clone()
    };
    let users = users(d, &home);
    let checked = {
        let (users, name) = (users.clone(), name.to_owned());
        d.db(move |s| s.profile_users(&users, &name)).await?
    };
    let old_known = known.clone();
    known.insert(name.to_owned(), new.clone());
    let mut live = Vec::new();
    for (p, instance) in &checked {
        let row = instances::find(d, p, instance).await?;
        let refused = |e: ApiError| -> ApiError {
            let why = e.to_string();
            let text = format!(
                "Profile {name:?} cannot change: for instance {instance:?} in project {p:?}: {why}"
            );
            match e {
                ApiError::Forbidden(_) => ApiError::Forbidden(text),
                _ => ApiError::BadRequest(text),
            }
        };
        let local = instances::config_of(&row);
        let local_devices = devices_of(&row.devices);
        let before = expand_with(&old_known, &row.profiles, &local, &local_devices);
        let after = expand_with(&known, &row.profiles, &local, &local_devices);
        confine(d, caller, p, &after.config, &after.devices).map_err(refused)?;
        if idmap_want(&before.config)? != idmap_want(&after.config).map_err(refused)? {
            return Err(refused(ApiError::BadRequest(
                "the change would give it another id map (security.privileged, security.idmap.*): set those keys on the instance, or remove the profile from it first".into(),
            )));
        }
        if LIVE_KEYS
            .iter()
            .any(|k| before.config.get(*k) != after.config.get(*k))
        {
            live.push((row, after.config));
        }
    }
    let stored = new.clone();
    d.db(move |s| s.update_profile(&stored, &users, &checked))
        .await?;
    drop(_write);
    // Live limits, each under its instance's action lock; the profile stays saved, as in LXD.
    let mut failed = String::new();
    for (row, config) in live {
        let lock = d.runtime.action_lock(&row.key());
        let _guard = lock.lock().await;
        if let Err(e) = apply_limits(d, &row, &config).await {
            failed.push_str(&format!(
                " - Project: {}, Instance: {}: {e}\n",
                row.project, row.name
            ));
        }
    }
    if !failed.is_empty() {
        // LXD's text (LXD answers 500).
        return Err(ApiError::BadRequest(format!(
            "The following instances failed to update (profile change still saved):\n{failed}"
        )));
    }
    Ok(())
}

/// `POST /1.0/profiles/<name>`: rename; instances using it follow.
pub async fn rename(
    d: &Daemon,
    caller: &Caller,
    project: &str,
    old: &str,
    new: &str,
) -> ApiResult<()> {
    if old == DEFAULT {
        return Err(ApiError::Forbidden(
            "The \"default\" profile cannot be renamed".into(),
        ));
    }
    profile::valid_name(new).map_err(ApiError::BadRequest)?;
    let home = home(d, project)?;
    may_write(caller, project, &home)?;
    let _write = d.profiles_lock.write().await;
    let users = users(d, &home);
    let (old, new) = (old.to_owned(), new.to_owned());
    let taken = format!("Name {new:?} already in use");
    d.db(move |s| s.rename_profile(&home, &old, &new, &users))
        .await
        .map_err(|e| match e {
            ApiError::Conflict(_) => ApiError::Conflict(taken),
            ApiError::NotFound(_) => ApiError::NotFound("Profile not found".into()),
            other => other,
        })
}

/// `DELETE /1.0/profiles/<name>`: only one no instance uses.
pub async fn delete(d: &Daemon, caller: &Caller, project: &str, name: &str) -> ApiResult<()> {
    if name == DEFAULT {
        return Err(ApiError::Forbidden(
            "The \"default\" profile cannot be deleted".into(),
        ));
    }
    let home = home(d, project)?;
    may_write(caller, project, &home)?;
    let _write = d.profiles_lock.write().await;
    let users = users(d, &home);
    let name = name.to_owned();
    d.db(move |s| s.delete_profile(&home, &name, &users))
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound("Profile not found".into()),
            other => other,
        })
}
