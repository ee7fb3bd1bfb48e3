//! `/1.0/projects`: LXD's project API. Listing shows only the projects the caller may view; one
//! it may not view answers as a missing one (the authorization layer does that). `default` always
//! exists; a project is renamed or deleted only while empty.

use crate::body::Json;
use crate::caller::{Admin, Caller};
use crate::error::{ApiError, ApiResult, PROJECT_NOT_FOUND};
use crate::listing::ListQuery;
use crate::response::{self, check_if_match};
use crate::service::access;
use crate::state::{Daemon, Project};
use crate::sync::read;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use rxd_auth::rbac::Permission;
use rxd_core::project_config;
use rxd_store::ProjectRow;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a PUT replaces and the ETag covers.
#[derive(Serialize)]
struct EtagFields<'a> {
    description: &'a str,
    config: &'a BTreeMap<String, String>,
}

/// LXD's answer to a name that is taken.
fn taken(name: &str) -> impl FnOnce(ApiError) -> ApiError + '_ {
    move |e| match e {
        ApiError::Conflict(_) => ApiError::Conflict(format!("Project {name:?} already exists")),
        other => other,
    }
}

async fn to_json(d: &Daemon, name: &str, p: &Project) -> ApiResult<Value> {
    let n = name.to_owned();
    let (instances, images, profiles) = d
        .db(move |s| Ok((s.instances(&n)?, s.images(&n)?, s.profiles(&n)?)))
        .await?;
    let suffix = crate::service::instances::project_suffix(name);
    let used_by: Vec<String> = instances
        .iter()
        .map(|i| format!("/1.0/instances/{}{suffix}", i.name))
        .chain(
            images
                .iter()
                .map(|i| format!("/1.0/images/{}{suffix}", i.fingerprint)),
        )
        .chain(profiles.iter().map(|p| {
            format!(
                "/1.0/profiles/{}{suffix}",
                rxd_core::profile::url_segment(&p.name)
            )
        }))
        .collect();
    Ok(json!({
        "name": name,
        "description": p.description,
        "config": p.config,
        "used_by": used_by,
    }))
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let projects = read(&d.projects).clone();
    let mut objects = Vec::new();
    for (name, p) in projects.iter().filter(|(n, _)| caller.can_view(n)) {
        objects.push(if q.recursion > 0 {
            to_json(&d, name, p).await?
        } else {
            json!({ "name": name })
        });
    }
    let selected = q.select(objects, |o| {
        format!("/1.0/projects/{}", o["name"].as_str().unwrap_or_default())
    })?;
    Ok(response::sync(selected))
}

fn current(d: &Daemon, name: &str) -> ApiResult<Project> {
    d.project(name)
        .ok_or_else(|| ApiError::NotFound(PROJECT_NOT_FOUND.into()))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    _: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let p = current(&d, &name)?;
    let body = to_json(&d, &name, &p).await?;
    Ok(response::sync_with_etag(
        body,
        &EtagFields {
            description: &p.description,
            config: &p.config,
        },
    ))
}

/// `GET /1.0/projects/<name>/state`: what the project's instances use against its limits, as
/// LXD counts it: the sums of the instances' `limits.cpu`, `limits.memory` and
/// `limits.processes`, the disk rxd stores for the project, and instance counts.
pub async fn state(
    State(d): State<Arc<Daemon>>,
    _: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    use rxd_api::project::{ProjectState, ProjectStateResource};
    use rxd_core::instance_config::parse_bytes;
    let p = current(&d, &name)?;
    let n = name.clone();
    let (instances, disk) = d
        .db(move |s| Ok((s.instances(&n)?, s.disk_usage(&n)?)))
        .await?;
    // What each instance runs with: its profiles' limits count.
    let known = crate::service::expand::known(&d, &name).await?;
    let configs: Vec<BTreeMap<String, String>> = instances
        .iter()
        .map(|r| {
            crate::service::expand::expand_with(
                &known,
                &r.profiles,
                &crate::service::instances::config_of(r),
                &crate::service::expand::devices_of(&r.devices),
            )
            .config
        })
        .collect();
    // A CPU limit is a count or a set of CPUs (`0-3,6`): its size.
    let cpus = |v: &str| -> Option<i64> {
        if let Ok(n) = v.parse::<i64>() {
            return Some(n);
        }
        v.split(',')
            .map(|part| match part.split_once('-') {
                Some((a, b)) => {
                    Some(b.trim().parse::<i64>().ok()? - a.trim().parse::<i64>().ok()? + 1)
                }
                None => part.trim().parse::<i64>().ok().map(|_| 1),
            })
            .sum()
    };
    let bytes = |v: &str| parse_bytes(v).and_then(|b| i64::try_from(b).ok());
    let count = |v: &str| v.parse::<i64>().ok();
    let limit = |key: &str, read: &dyn Fn(&str) -> Option<i64>| {
        p.config.get(key).and_then(|v| read(v)).unwrap_or(-1)
    };
    let sum = |key: &str, read: &dyn Fn(&str) -> Option<i64>| -> i64 {
        configs
            .iter()
            .filter_map(|c| c.get(key).and_then(|v| read(v)))
            .sum()
    };
    let resource = |limit: i64, usage: i64| ProjectStateResource { limit, usage };
    let n = instances.len() as i64;
    let resources = BTreeMap::from([
        (
            "cpu".to_owned(),
            resource(limit("limits.cpu", &cpus), sum("limits.cpu", &cpus)),
        ),
        (
            "disk".to_owned(),
            resource(limit("limits.disk", &bytes), disk),
        ),
        (
            "memory".to_owned(),
            resource(limit("limits.memory", &bytes), sum("limits.memory", &bytes)),
        ),
        (
            "networks".to_owned(),
            resource(limit("limits.networks", &count), 0),
        ),
        (
            "processes".to_owned(),
            resource(
                limit("limits.processes", &count),
                sum("limits.processes", &count),
            ),
        ),
        (
            "instances".to_owned(),
            resource(limit("limits.instances", &count), n),
        ),
        (
            "containers".to_owned(),
            resource(limit("limits.containers", &count), n),
        ),
        (
            "virtual-machines".to_owned(),
            resource(limit("limits.virtual-machines", &count), 0),
        ),
    ]);
    Ok(response::sync(ProjectState { resources }))
}

pub use rxd_api::project::{ProjectPost, ProjectPut, ProjectsPost};

fn valid_name(name: &str) -> ApiResult<()> {
    if rxd_core::name::valid_project_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Invalid project name {name:?}: 1 to 63 letters, digits, '-', '_' and '.', starting with a letter or digit"
        )))
    }
}

fn valid_description(text: &str) -> ApiResult<()> {
    if text.len() > 4096 || text.contains('\0') {
        return Err(ApiError::BadRequest(
            "Invalid description: at most 4096 bytes, no NUL".into(),
        ));
    }
    Ok(())
}

fn checked_config(config: &BTreeMap<String, String>) -> ApiResult<()> {
    project_config::validate(config).map_err(|e| ApiError::BadRequest(e.to_string()))
}

pub async fn post(
    State(d): State<Arc<Daemon>>,
    Admin(caller, proof): Admin,
    Json(body): Json<ProjectsPost>,
) -> ApiResult<Response> {
    valid_name(&body.name)?;
    valid_description(&body.description)?;
    let mut config = project_config::defaults();
    config.extend(body.config);
    checked_config(&config)?;
    let row = ProjectRow {
        name: body.name.clone(),
        description: body.description,
        config: serde_json::to_string(&config).map_err(ApiError::internal)?,
    };
    access::create_project(&d, &proof, row)
        .await
        .map_err(taken(&body.name))?;
    d.reload_access().await?;
    let url = format!("/1.0/projects/{}", body.name);
    tracing::info!(project = %body.name, by = %caller.identity.user_name(), "project created");
    d.events
        .lifecycle("project-created", &url, &body.name, &caller);
    Ok(response::created(&url))
}

async fn update(
    d: &Daemon,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
    body: ProjectPut,
    replace: bool,
) -> ApiResult<Response> {
    // The authorization layer checked this already; the write asks for the proof.
    let proof = caller.rights.require(name, Permission::ManageProjects)?;
    let p = current(d, name)?;
    check_if_match(
        headers,
        &EtagFields {
            description: &p.description,
            config: &p.config,
        },
    )?;
    let description = match body.description {
        Some(t) => t,
        None if replace => String::new(),
        None => p.description.clone(),
    };
    valid_description(&description)?;
    let config = crate::patch::merged(p.config.clone(), body.config, replace);
    checked_config(&config)?;
    // LXD's rules: `default`'s features never change, another project's only while it is
    // empty (checked with the write); `features.profiles` gives or takes its own profiles.
    let profiles = if project_config::features_changed(&p.config, &config) {
        if name == "default" {
            return Err(ApiError::BadRequest(
                "You can't change the features of the default project".into(),
            ));
        }
        Some(project_config::has_profiles(&config))
    } else {
        None
    };
    if let Some(key) = project_config::changed_host_limit(&p.config, &config) {
        if !caller.rights.is_admin() {
            return Err(ApiError::Forbidden(format!(
                "Only the server administrator may change {key}: it bounds what the project may take from the host"
            )));
        }
    }
    let row = ProjectRow {
        name: name.to_owned(),
        description,
        config: serde_json::to_string(&config).map_err(ApiError::internal)?,
    };
    let _profiles = d.profiles_lock.write().await;
    // As LXD: new restrictions must hold for the instances the project already has (no
    // instance config or profile can change meanwhile: the profiles lock is held).
    let restrictions = |c: &BTreeMap<String, String>| -> Vec<(String, String)> {
        c.iter()
            .filter(|(k, _)| k.starts_with("restricted"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    if restrictions(&p.config) != restrictions(&config) {
        use crate::service::expand;
        let n = name.to_owned();
        let instances = d.db(move |s| s.instances(&n)).await?;
        let known = expand::known(d, name).await?;
        for r in &instances {
            // Its config is recorded when its create finishes.
            if crate::service::instances::create_unfinished(r) {
                return Err(ApiError::Conflict(format!(
                    "Instance {:?} is being created: try again when it is",
                    r.name
                )));
            }
            let e = expand::expand_with(
                &known,
                &r.profiles,
                &crate::service::instances::config_of(r),
                &expand::devices_of(&r.devices),
            );
            if let Err(v) =
                rxd_auth::confinement::check_instance(true, name, &config, &e.config, &e.devices)
            {
                return Err(ApiError::BadRequest(format!(
                    "Conflict detected when changing the restrictions of project {name:?}: instance {:?}: {v}",
                    r.name
                )));
            }
        }
    }
    access::update_project(d, &proof, row, profiles).await?;
    d.reload_access().await?;
    crate::audit::project_config_change(&d.audit, caller, name, &p.config, &config, replace);
    tracing::info!(project = %name, by = %caller.identity.user_name(), ?config, "project updated");
    d.events.lifecycle(
        "project-updated",
        &format!("/1.0/projects/{name}"),
        name,
        caller,
    );
    Ok(response::empty())
}

pub async fn put(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ProjectPut>,
) -> ApiResult<Response> {
    update(&d, &caller, &name, &headers, body, true).await
}

pub async fn patch(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ProjectPut>,
) -> ApiResult<Response> {
    update(&d, &caller, &name, &headers, body, false).await
}

/// Rename an empty project (an operation, as in LXD).
pub async fn rename(
    State(d): State<Arc<Daemon>>,
    Admin(caller, proof): Admin,
    Path(name): Path<String>,
    Json(body): Json<ProjectPost>,
) -> ApiResult<Response> {
    current(&d, &name)?;
    if name == "default" {
        return Err(ApiError::Forbidden(
            "The 'default' project cannot be renamed".into(),
        ));
    }
    valid_name(&body.name)?;
    access::rename_project(&d, &proof, &name, &body.name)
        .await
        .map_err(taken(&body.name))?;
    d.reload_access().await?;
    tracing::info!(from = %name, to = %body.name, by = %caller.identity.user_name(), "project renamed");
    let url = format!("/1.0/projects/{}", body.name);
    d.events
        .lifecycle("project-renamed", &url, &body.name, &caller);
    let op = d.operations.start(
        &d.events,
        "Renaming project",
        &body.name,
        crate::operations::resources([("projects", vec![url.to_string()])]),
        false,
    );
    op.finish(&d.events, Ok(Value::Null));
    Ok(response::operation(op.url(), op.to_json()))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Admin(caller, proof): Admin,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    current(&d, &name)?;
    if name == "default" {
        return Err(ApiError::Forbidden(
            "The 'default' project cannot be deleted".into(),
        ));
    }
    access::delete_project(&d, &proof, &name).await?;
    d.reload_access().await?;
    tracing::info!(project = %name, by = %caller.identity.user_name(), "project deleted");
    d.events.lifecycle(
        "project-deleted",
        &format!("/1.0/projects/{name}"),
        &name,
        &caller,
    );
    Ok(response::empty())
}
