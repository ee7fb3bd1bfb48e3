//! `/1.0/profiles`: LXD's profile API, per project (a project without `features.profiles`
//! reads and writes `default`'s). The rules are `service::profiles`'.

use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response::{self, check_if_match};
use crate::service::expand::{config_of, devices_of};
use crate::service::instances::project_suffix;
use crate::service::profiles;
use crate::state::Daemon;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use rxd_api::profile::{Profile, ProfilePost, ProfilePut, ProfilesPost};
use rxd_store::ProfileRow;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a PUT replaces and the ETag covers (LXD's order: config, description, devices).
#[derive(Serialize)]
struct EtagFields {
    config: BTreeMap<String, String>,
    description: String,
    devices: rxd_api::profile::Devices,
}

fn etag_fields(row: &ProfileRow) -> EtagFields {
    EtagFields {
        config: config_of(row),
        description: row.description.clone(),
        devices: devices_of(&row.devices),
    }
}

async fn to_api(d: &Daemon, caller: &Caller, row: &ProfileRow) -> ApiResult<Profile> {
    Ok(Profile {
        config: config_of(row),
        description: row.description.clone(),
        devices: devices_of(&row.devices),
        name: row.name.clone(),
        used_by: profiles::used_by(d, caller, &row.project, &row.name).await?,
    })
}

fn url(name: &str, project: &str) -> String {
    format!(
        "/1.0/profiles/{}{}",
        rxd_core::profile::url_segment(name),
        project_suffix(project)
    )
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let known = crate::service::expand::known(&d, &caller.project).await?;
    let mut objects = Vec::new();
    for row in known.values() {
        objects.push(if q.recursion > 0 {
            serde_json::to_value(to_api(&d, &caller, row).await?).map_err(ApiError::internal)?
        } else {
            serde_json::json!({ "name": row.name })
        });
    }
    let project = caller.project.clone();
    let selected = q.select(objects, |o| {
        url(o["name"].as_str().unwrap_or_default(), &project)
    })?;
    Ok(response::sync(selected))
}

pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Json(body): Json<ProfilesPost>,
) -> ApiResult<Response> {
    profiles::create(
        &d,
        &caller,
        &caller.project,
        &body.name,
        body.description,
        body.config,
        body.devices,
    )
    .await?;
    let url = url(&body.name, &caller.project);
    tracing::info!(profile = %body.name, project = %caller.project, by = %caller.identity.user_name(), "profile created");
    d.events
        .lifecycle("profile-created", &url, &caller.project, &caller);
    Ok(response::created(&url))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = profiles::get(&d, &caller.project, &name).await?;
    let body = to_api(&d, &caller, &row).await?;
    Ok(response::sync_with_etag(body, &etag_fields(&row)))
}

async fn update(
    d: &Arc<Daemon>,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
    body: ProfilePut,
    replace: bool,
) -> ApiResult<Response> {
    // The ETag is checked and the body merged with the profile as it is under the profiles
    // lock, so two edits sent with the same ETag cannot both pass.
    let change = |row: &ProfileRow| -> ApiResult<profiles::Content> {
        check_if_match(headers, &etag_fields(row))?;
        let current = etag_fields(row);
        let description = match (body.description, replace) {
            (Some(t), _) => t,
            (None, true) => String::new(),
            (None, false) => current.description,
        };
        let config = crate::patch::merged(current.config, body.config, replace);
        let devices = crate::patch::merged(current.devices, body.devices, replace);
        Ok((description, config, devices))
    };
    profiles::update(d, caller, &caller.project, name, change).await?;
    tracing::info!(profile = %name, project = %caller.project, by = %caller.identity.user_name(), "profile updated");
    d.events.lifecycle(
        "profile-updated",
        &url(name, &caller.project),
        &caller.project,
        caller,
    );
    Ok(response::empty())
}

pub async fn put(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ProfilePut>,
) -> ApiResult<Response> {
    update(&d, &caller, &name, &headers, body, true).await
}

pub async fn patch(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ProfilePut>,
) -> ApiResult<Response> {
    update(&d, &caller, &name, &headers, body, false).await
}

/// `POST /1.0/profiles/<name>`: rename.
pub async fn rename(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<ProfilePost>,
) -> ApiResult<Response> {
    profiles::rename(&d, &caller, &caller.project, &name, &body.name).await?;
    let new_url = url(&body.name, &caller.project);
    d.events
        .lifecycle("profile-renamed", &new_url, &caller.project, &caller);
    Ok(response::created(&new_url))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    profiles::delete(&d, &caller, &caller.project, &name).await?;
    d.events.lifecycle(
        "profile-deleted",
        &url(&name, &caller.project),
        &caller.project,
        &caller,
    );
    Ok(response::empty())
}
