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

/// A profile's own config: instance keys, never `volatile.*` (LXD's rule). A key set to the
/// empty string is no key (LXD does not store empty values).
fn check_config(config: &mut Config) -> ApiResult<()> {
    config.retain(|_, v| !v.is_empty());
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

/// Only the server administrator changes profiles another project shares: the `default`
/// project's, when a project without `features.profiles` uses them (from that project, or
/// from `default` itself).
fn may_write(d: &Daemon, caller: &Caller, project: &str, home: &str) -> ApiResult<()> {
    if caller.rights.is_admin() {
        return Ok(());
    }
    if home != project {
        return Err(ApiError::Forbidden(format!(
            "Project {project:?} has no profiles of its own (features.profiles=false): only the server administrator may change the default project's profiles"
        )));
    }
    if users(d, home).iter().any(|p| p != project) {
        return Err(ApiError::Forbidden(format!(
            "Project {home:?}'s profiles are shared with projects without profiles of their own: only the server administrator may change them"
        )));
    }
    Ok(())
}

/// An instance named in a refusal: by name where the caller may see it.
fn shown(caller: &Caller, project: &str, instance: &str) -> String {
    if caller.can_view(project) {
        format!("instance {instance:?} in project {project:?}")
    } else {
        "an instance in another project".to_owned()
    }
}

/// Check a profile's own content as `caller` may write it in `project`.
fn check_profile(
    caller: &Caller,
    project: &str,
    description: &str,
    config: &mut Config,
    devices: &Devices,
) -> ApiResult<()> {
    if description.len() > 4096 || description.contains('\0') {
        return Err(ApiError::BadRequest(
            "Invalid description: at most 4096 bytes, no NUL".into(),
        ));
    }
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
    may_write(d, caller, project, &home)?;
    let mut config = config;
    check_profile(caller, project, &description, &mut config, &devices)?;
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

/// A profile's new content: description, config, devices.
pub type Content = (String, Config, Devices);

/// `PUT`/`PATCH /1.0/profiles/<name>`: `change` makes the new content from the current row
/// (checking its ETag), under the profiles lock so no other change slips in between; the
/// content is checked alone and then, for every instance using the profile, as that
/// instance's expanded config would be; written only if all pass; then CPU, memory and
/// process limits reach the running ones, as in LXD.
pub async fn update(
    d: &Arc<Daemon>,
    caller: &Caller,
    project: &str,
    name: &str,
    change: impl FnOnce(&ProfileRow) -> ApiResult<Content>,
) -> ApiResult<()> {
    let home = home(d, project)?;
    may_write(d, caller, project, &home)?;
    let _write = d.profiles_lock.write().await;
    let mut known = known(d, project).await?;
    let old = known
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::NotFound("Profile not found".into()))?;
    let (description, mut config, devices) = change(&old)?;
    check_profile(caller, project, &description, &mut config, &devices)?;
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
    // A volume that is not shared reaches one instance only, through a profile as directly.
    crate::service::volumes::check_profile_attach(d, &home, name, &devices, checked.len()).await?;
    let old_known = known.clone();
    known.insert(name.to_owned(), new.clone());
    let mut live = Vec::new();
    for (p, instance) in &checked {
        let row = instances::find(d, p, instance).await?;
        let refused = |e: ApiError| -> ApiError {
            let why = e.to_string();
            let text = format!(
                "Profile {name:?} cannot change: for {}: {why}",
                shown(caller, p, instance)
            );
            match e {
                ApiError::Forbidden(_) => ApiError::Forbidden(text),
                _ => ApiError::BadRequest(text),
            }
        };
        // Its config is recorded when its create finishes: until then, nothing to check.
        if instances::create_unfinished(&row) {
            return Err(refused(ApiError::Conflict(
                "it is being created; try again".into(),
            )));
        }
        let local = instances::config_of(&row);
        let local_devices = devices_of(&row.devices);
        let before = expand_with(&old_known, &row.profiles, &local, &local_devices);
        let after = expand_with(&known, &row.profiles, &local, &local_devices);
        check_devices(&after.devices).map_err(refused)?;
        confine(d, caller, p, &row.name, &after.config, &after.devices)
            .await
            .map_err(refused)?;
        crate::service::pools::check_root(d, &row, &after.devices).map_err(refused)?;
        if idmap_want(&before.config)? != idmap_want(&after.config).map_err(refused)? {
            return Err(refused(ApiError::BadRequest(
                "the change would give it another id map (security.privileged, security.idmap.*): set those keys on the instance, or remove the profile from it first".into(),
            )));
        }
        if LIVE_KEYS
            .iter()
            .any(|k| before.config.get(*k) != after.config.get(*k))
            || before.devices != after.devices
        {
            live.push((row.key(), before.devices));
        }
    }
    let stored = new.clone();
    d.db(move |s| s.update_profile(&stored, &users, &checked))
        .await?;
    drop(_write);
    // Live limits, each under its instance's action lock, from its config as it is then
    // (an edit may have come in between); the profile stays saved, as in LXD.
    let mut failed = String::new();
    for (key, before) in live {
        let lock = d.runtime.action_lock(&key);
        let _guard = lock.lock().await;
        let Ok(row) = instances::by_key(d, &key).await else {
            continue;
        };
        let applied = match crate::service::expand::expanded(d, &row).await {
            Ok(e) => match apply_limits(d, &row, &e.config).await {
                Ok(()) => {
                    let mut config = instances::config_of(&row);
                    let idmap = crate::service::instances::running_idmap(&config);
                    match crate::service::devices::plug(
                        d,
                        &key,
                        &row.project,
                        idmap,
                        &before,
                        &e.devices,
                    )
                    .await
                    {
                        Ok(()) => match d.runtime.init(&key) {
                            Some(init) => {
                                let plugged = crate::service::nics::hotplug(
                                    d,
                                    &key,
                                    init.pid,
                                    &before,
                                    &e.devices,
                                    &mut config,
                                )
                                .await;
                                let saved = instances::save_config(d, &key, &config).await;
                                plugged.and(saved)
                            }
                            // A NIC the profile gives a stopped instance gets its MAC now.
                            None => {
                                let before = config.clone();
                                crate::service::nics::fill_macs(&e.devices, &mut config);
                                if config == before {
                                    Ok(())
                                } else {
                                    instances::save_config(d, &key, &config).await
                                }
                            }
                        },
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            if caller.can_view(&row.project) {
                failed.push_str(&format!(
                    " - Project: {}, Instance: {}: {e}\n",
                    row.project, row.name
                ));
            } else {
                failed.push_str(&format!(" - an instance in another project: {e}\n"));
            }
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
    may_write(d, caller, project, &home)?;
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
    may_write(d, caller, project, &home)?;
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
