//! `/1.0/instances/<name>/backups`: an instance's backups, made as an operation, listed,
//! renamed, deleted and exported (`lxc export`); and `POST /1.0/instances` with a backup
//! tarball (`lxc import`). Reading needs `view`, the rest `manage-containers` (a backup holds
//! the whole root filesystem; the authorization layer checks both). The rules are
//! `service::backups`'.

use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response;
use crate::service::backups;
use crate::service::instances::find;
use crate::state::Daemon;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use rxd_api::backup::{InstanceBackupPost, InstanceBackupsPost};
use serde_json::Value;
use std::sync::Arc;

pub async fn list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let objects: Vec<Value> = backups::list(&d, &row)
        .await?
        .iter()
        .map(|b| serde_json::to_value(backups::view(b)).unwrap_or_default())
        .collect();
    let selected = q.select(objects, |o| {
        backups::url(&row.name, o["name"].as_str().unwrap_or_default())
    })?;
    Ok(response::sync(selected))
}

fn task(
    d: &Arc<Daemon>,
    project: &str,
    description: &str,
    resources: crate::operations::Resources,
    work: impl std::future::Future<Output = ApiResult<()>> + Send + 'static,
) -> Response {
    let op = crate::service::tasks::spawn(d, description, project, resources, work);
    response::operation(op.url(), op.to_json())
}

/// As LXD 5.0 renders them (`/1.0/<kind>/<name>`): `lxc export` 5.0.2 takes the backup's name
/// from after `/1.0/backups/`.
fn resources(instance: &str, backup: &str) -> crate::operations::Resources {
    crate::operations::resources([
        (
            "backups",
            vec![format!(
                "/1.0/backups/{}",
                rxd_core::profile::url_segment(backup)
            )],
        ),
        (
            "instances",
            vec![format!(
                "/1.0/instances/{}",
                rxd_core::profile::url_segment(instance)
            )],
        ),
    ])
}

pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<InstanceBackupsPost>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let backup = backups::prepare(&d, &row, &body).await?;
    let (d2, b2, project) = (d.clone(), backup.clone(), caller.project.clone());
    let work = async move {
        backups::create(&d2, &caller, &row, &b2, &body).await?;
        d2.events.lifecycle(
            "instance-backup-created",
            &backups::url(&row.name, &b2),
            &caller.project,
            &caller,
        );
        Ok(())
    };
    Ok(task(
        &d,
        &project,
        "Backing up instance",
        resources(&name, &backup),
        work,
    ))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((name, backup)): Path<(String, String)>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let b = backups::get(&d, &row, &backup).await?;
    Ok(response::sync(backups::view(&b)))
}

pub async fn rename(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((name, backup)): Path<(String, String)>,
    Json(body): Json<InstanceBackupPost>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let b = backups::get(&d, &row, &backup).await?;
    backups::rename(&d, &row, &b, &body.name).await?;
    let project = caller.project.clone();
    let d2 = d.clone();
    let work = async move {
        d2.events.lifecycle(
            "instance-backup-renamed",
            &backups::url(&row.name, &body.name),
            &caller.project,
            &caller,
        );
        Ok(())
    };
    Ok(task(
        &d,
        &project,
        "Renaming instance backup",
        resources(&name, &backup),
        work,
    ))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((name, backup)): Path<(String, String)>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let b = backups::get(&d, &row, &backup).await?;
    let project = caller.project.clone();
    let d2 = d.clone();
    let work = async move {
        backups::delete(&d2, &row, &b).await?;
        d2.events.lifecycle(
            "instance-backup-deleted",
            &backups::url(&row.name, &b.name),
            &caller.project,
            &caller,
        );
        Ok(())
    };
    Ok(task(
        &d,
        &project,
        "Deleting instance backup",
        resources(&name, &backup),
        work,
    ))
}

/// `GET .../backups/<name>/export`: the tarball as it is stored.
pub async fn export(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((name, backup)): Path<(String, String)>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let b = backups::get(&d, &row, &backup).await?;
    let file = tokio::fs::File::open(backups::file(&d, &b))
        .await
        .map_err(ApiError::internal)?;
    let size = file.metadata().await.map_err(ApiError::internal)?.len();
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .body(Body::from_stream(tokio_util::io::ReaderStream::new(file)))
        .map_err(ApiError::internal)
}
