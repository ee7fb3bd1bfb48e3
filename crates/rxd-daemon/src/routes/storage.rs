//! `/1.0/storage-pools`: LXD 5.0's storage pool API (pools are global; reading them is for
//! anyone trusted, writing for the server administrator), and the volumes in a pool: each
//! instance's (`container`) and each image's (`image`, on btrfs). The rules are
//! `service::pools`'.

use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response::{self, check_if_match};
use crate::service::instances::project_suffix;
use crate::service::pools;
use crate::state::Daemon;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use rxd_api::storage::{
    StoragePoolInodes, StoragePoolPut, StoragePoolSpace, StoragePoolState, StoragePoolsPost,
    StorageVolume,
};
use rxd_store::StoragePoolRow;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a PUT replaces and the ETag covers (LXD's: config and description).
#[derive(Serialize)]
struct EtagFields {
    config: BTreeMap<String, String>,
    description: String,
}

fn etag_fields(row: &StoragePoolRow) -> EtagFields {
    EtagFields {
        config: serde_json::from_str(&row.config).unwrap_or_default(),
        description: row.description.clone(),
    }
}

fn url(name: &str) -> String {
    format!(
        "/1.0/storage-pools/{}",
        rxd_core::profile::url_segment(name)
    )
}

async fn row(d: &Daemon, name: &str) -> ApiResult<StoragePoolRow> {
    let n = name.to_owned();
    d.db(move |s| s.storage_pool(&n))
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound("Storage pool not found".into()),
            other => other,
        })
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let rows = d.db(|s| s.storage_pools()).await?;
    let mut objects = Vec::new();
    for row in rows {
        objects.push(if q.recursion > 0 {
            serde_json::to_value(pools::view(&d, &caller, row).await).map_err(ApiError::internal)?
        } else {
            serde_json::json!({ "name": row.name })
        });
    }
    let selected = q.select(objects, |o| url(o["name"].as_str().unwrap_or_default()))?;
    Ok(response::sync(selected))
}

pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Json(body): Json<StoragePoolsPost>,
) -> ApiResult<Response> {
    let admin = caller.rights.require_admin()?;
    let name = body.name.clone();
    pools::create(&d, &admin, body).await?;
    let url = url(&name);
    tracing::info!(pool = %name, by = %caller.identity.user_name(), "storage pool created");
    d.events
        .lifecycle("storage-pool-created", &url, "default", &caller);
    Ok(response::created(&url))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = row(&d, &name).await?;
    let etag = etag_fields(&row);
    let body = pools::view(&d, &caller, row).await;
    Ok(response::sync_with_etag(body, &etag))
}

async fn update(
    d: &Arc<Daemon>,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
    body: StoragePoolPut,
    replace: bool,
) -> ApiResult<Response> {
    let admin = caller.rights.require_admin()?;
    let current = row(d, name).await?;
    check_if_match(headers, &etag_fields(&current))?;
    let fields = etag_fields(&current);
    let description = match (body.description, replace) {
        (Some(t), _) => t,
        (None, true) => String::new(),
        (None, false) => fields.description,
    };
    let config = crate::patch::merged(fields.config, body.config, replace);
    pools::update(d, &admin, name, description, config).await?;
    tracing::info!(pool = %name, by = %caller.identity.user_name(), "storage pool updated");
    d.events
        .lifecycle("storage-pool-updated", &url(name), "default", caller);
    Ok(response::empty())
}

pub async fn put(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<StoragePoolPut>,
) -> ApiResult<Response> {
    update(&d, &caller, &name, &headers, body, true).await
}

pub async fn patch(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<StoragePoolPut>,
) -> ApiResult<Response> {
    update(&d, &caller, &name, &headers, body, false).await
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let admin = caller.rights.require_admin()?;
    row(&d, &name).await?;
    pools::delete(&d, &admin, &caller, &name).await?;
    tracing::info!(pool = %name, by = %caller.identity.user_name(), "storage pool deleted");
    d.events
        .lifecycle("storage-pool-deleted", &url(&name), "default", &caller);
    Ok(response::empty())
}

/// `GET /1.0/storage-pools/<name>/resources`: space and inodes, used and total.
pub async fn resources(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    row(&d, &name).await?;
    let pool = pools::get(&d, &name)?;
    let r = tokio::task::spawn_blocking(move || pool.resources())
        .await?
        .map_err(ApiError::internal)?;
    Ok(response::sync(StoragePoolState {
        space: StoragePoolSpace {
            used: r.space.used,
            total: r.space.total,
        },
        inodes: StoragePoolInodes {
            used: r.inodes.used,
            total: r.inodes.total,
        },
    }))
}

/// The volumes of a pool the caller's project sees: its instances' (`container`) and, for the
/// server administrator in the `default` project, the images' (`image`: they name images of
/// every project).
async fn volumes(d: &Daemon, caller: &Caller, pool: &str) -> ApiResult<Vec<StorageVolume>> {
    let project = caller.project.clone();
    let instances = d.db(move |s| s.instances(&project)).await?;
    let mut out = Vec::new();
    for r in instances.into_iter().filter(|r| r.pool == pool) {
        out.push(StorageVolume {
            config: BTreeMap::new(),
            description: String::new(),
            name: r.name.clone(),
            kind: "container".into(),
            used_by: vec![format!(
                "/1.0/instances/{}{}",
                rxd_core::profile::url_segment(&r.name),
                project_suffix(&r.project)
            )],
            location: "none".into(),
            content_type: "filesystem".into(),
            project: r.project.clone(),
            created_at: crate::tokens::rfc3339(r.created_at),
        });
    }
    for row in crate::service::volumes::list(d, caller, pool).await? {
        out.push(crate::service::volumes::view(d, caller, &row).await?);
    }
    if caller.project == "default" && caller.rights.is_admin() {
        if let Some(p) = d.pools.get(pool) {
            for fp in pools::entries(&p.mount_point().join("images")) {
                out.push(StorageVolume {
                    name: fp.clone(),
                    kind: "image".into(),
                    used_by: vec![format!("/1.0/images/{fp}")],
                    location: "none".into(),
                    content_type: "filesystem".into(),
                    project: "default".into(),
                    // Go's zero time, as LXD shows a volume it has no date for.
                    created_at: "0001-01-01T00:00:00Z".into(),
                    ..StorageVolume::default()
                });
            }
        }
    }
    Ok(out)
}

fn volume_url(pool: &str, v: &serde_json::Value) -> String {
    let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
    format!(
        "{}/volumes/{}/{}{}",
        url(pool),
        text("type"),
        rxd_core::profile::url_segment(&text("name")),
        project_suffix(&text("project"))
    )
}

pub async fn volume_list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(pool): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    list_of(&d, &caller, &pool, None, q).await
}

/// `GET /1.0/storage-pools/<pool>/volumes/<type>`.
pub async fn volume_list_typed(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let kind = if kind == "virtual-machine" {
        "container".to_owned()
    } else {
        kind
    };
    list_of(&d, &caller, &pool, Some(kind), q).await
}

async fn list_of(
    d: &Daemon,
    caller: &Caller,
    pool: &str,
    kind: Option<String>,
    q: ListQuery,
) -> ApiResult<Response> {
    row(d, pool).await?;
    let mut found = volumes(d, caller, pool).await?;
    if let Some(kind) = kind {
        found.retain(|v| v.kind == kind);
    }
    let objects: Vec<serde_json::Value> = found
        .iter()
        .map(|v| serde_json::to_value(v).unwrap_or_default())
        .collect();
    let selected = q.select(objects, |o| volume_url(pool, o))?;
    Ok(response::sync(selected))
}

pub async fn volume_get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((pool, kind, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    row(&d, &pool).await?;
    if kind == "custom" {
        let row = crate::service::volumes::get(&d, &caller, &pool, &name).await?;
        let body = crate::service::volumes::view(&d, &caller, &row).await?;
        return Ok(response::sync_with_etag(
            body,
            &crate::service::volumes::etag_fields(&row),
        ));
    }
    let kind = if kind == "virtual-machine" || kind == "container" {
        "container".to_owned()
    } else {
        kind
    };
    volumes(&d, &caller, &pool)
        .await?
        .into_iter()
        .find(|v| v.kind == kind && v.name == name)
        .map(response::sync)
        .ok_or_else(|| ApiError::NotFound("Storage pool volume not found".into()))
}
