//! `/1.0/images` and `/1.0/images/aliases`: importing unified image tarballs, listing, showing and
//! deleting them, and naming them. An upload is streamed to a private file while it is hashed; the
//! checks and unpacking (rxd-image, which refuses hostile archives) run as a task operation, and
//! a failure at any step leaves nothing behind.

use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response;
use crate::service::images::{images_dir, resolve, unpacked_dir, UnpackBudget};
use crate::state::Daemon;
use crate::sync::now_unix;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use rxd_api::image::{ImageAliasesEntry, ImageUploadMetadata};
use rxd_store::{AliasRow, ImageRow};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

/// Largest image tarball accepted.
pub const MAX_IMAGE_BYTES: u64 = 4 << 30;

fn rfc3339(t: i64) -> String {
    crate::tokens::rfc3339(t)
}

fn to_json(row: &ImageRow, aliases: &[AliasRow]) -> Value {
    serde_json::to_value(image(row, aliases)).unwrap_or(Value::Null)
}

/// An image as LXD 5.0 shows it. Its properties are strings in LXD's type: a value
/// `metadata.yaml` gave as a number or a list is shown as its text.
fn image(row: &ImageRow, aliases: &[AliasRow]) -> rxd_api::image::Image {
    let stored: serde_json::Map<String, Value> =
        serde_json::from_str(&row.properties).unwrap_or_default();
    let properties = stored
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    rxd_api::image::Image {
        aliases: aliases
            .iter()
            .filter(|a| a.fingerprint == row.fingerprint)
            .map(|a| rxd_api::image::ImageAlias {
                name: a.name.clone(),
                description: a.description.clone(),
            })
            .collect(),
        architecture: row.architecture.clone(),
        created_at: rfc3339(row.created_at),
        expires_at: "0001-01-01T00:00:00Z".into(),
        filename: row.filename.clone(),
        fingerprint: row.fingerprint.clone(),
        last_used_at: "0001-01-01T00:00:00Z".into(),
        profiles: vec!["default".into()],
        project: row.project.clone(),
        properties,
        public: row.public,
        size: row.size,
        kind: "container".into(),
        uploaded_at: rfc3339(row.uploaded_at),
        ..Default::default()
    }
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let p = caller.project.clone();
    let (images, aliases) = d.db(move |s| Ok((s.images(&p)?, s.aliases(&p)?))).await?;
    let objects = images.iter().map(|i| to_json(i, &aliases)).collect();
    let selected = q.select(objects, |o| {
        format!(
            "/1.0/images/{}",
            o["fingerprint"].as_str().unwrap_or_default()
        )
    })?;
    Ok(response::sync(selected))
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(fp): Path<String>,
) -> ApiResult<Response> {
    let row = resolve(&d, &caller.project, &fp).await?;
    let p = caller.project.clone();
    let aliases = d.db(move |s| s.aliases(&p)).await?;
    Ok(response::sync(to_json(&row, &aliases)))
}

/// `PUT` (every field; an absent one is its zero value) and `PATCH` (absent fields keep theirs)
/// of `/1.0/images/<fingerprint>`: properties and `public`. rxd fetches no images, keeps no
/// expiry and applies no profiles, so it refuses `auto_update: true`, an expiry date and
/// profiles other than `default`, rather than store what it would not honour.
async fn update(
    d: &Daemon,
    caller: &Caller,
    fp: &str,
    body: rxd_api::image::ImagePut,
    replace: bool,
) -> ApiResult<Response> {
    let row = resolve(d, &caller.project, fp).await?;
    if body.auto_update == Some(true) {
        return Err(ApiError::BadRequest(
            "rxd images have no source to update from: auto_update must be false".into(),
        ));
    }
    if body
        .expires_at
        .as_deref()
        .is_some_and(|e| !e.is_empty() && !e.starts_with("0001-01-01"))
    {
        return Err(ApiError::BadRequest(
            "rxd images do not expire: leave expires_at unset".into(),
        ));
    }
    if body
        .profiles
        .as_ref()
        .is_some_and(|p| !p.is_empty() && p.as_slice() != ["default"])
    {
        return Err(ApiError::BadRequest(
            "rxd has only the default profile: profiles must be [default]".into(),
        ));
    }
    let properties = match body.properties {
        Some(p) => serde_json::to_string(&p).map_err(ApiError::internal)?,
        None if replace => "{}".to_owned(),
        None => row.properties.clone(),
    };
    let public = body.public.unwrap_or(!replace && row.public);
    let (p, f) = (row.project.clone(), row.fingerprint.clone());
    d.db(move |s| s.update_image(&p, &f, &properties, public))
        .await?;
    Ok(response::empty())
}

pub async fn put(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(fp): Path<String>,
    Json(body): Json<rxd_api::image::ImagePut>,
) -> ApiResult<Response> {
    update(&d, &caller, &fp, body, true).await
}

pub async fn patch(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(fp): Path<String>,
    Json(body): Json<rxd_api::image::ImagePut>,
) -> ApiResult<Response> {
    update(&d, &caller, &fp, body, false).await
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `POST /1.0/images` with the tarball as the body.
pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if header(&headers, "content-type").is_some_and(|c| c.starts_with("application/json")) {
        return Err(ApiError::BadRequest(
            "rxd imports images uploaded directly (the tarball as the request body); remote sources are not supported".into(),
        ));
    }
    if header(&headers, "content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_IMAGE_BYTES)
    {
        return Err(ApiError::TooLarge {
            limit: MAX_IMAGE_BYTES as usize,
        });
    }
    // A project with no room left is refused before its upload is received.
    UnpackBudget::of(&d, &caller.project)
        .await?
        .check_known(0)?;
    let dir = images_dir(&d);
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(ApiError::internal)?;
    }
    let upload = Upload::new(dir.join(format!(".upload-{}", uuid::Uuid::new_v4())))?;
    let (fingerprint, size) = upload.receive(body).await?;
    if let Some(claimed) = header(&headers, "x-lxd-fingerprint") {
        if claimed != fingerprint {
            return Err(ApiError::BadRequest(format!(
                "Fingerprint mismatch: the upload's SHA-256 is {fingerprint}, not {claimed}"
            )));
        }
    }
    let (p, fp) = (caller.project.clone(), fingerprint.clone());
    if d.db(move |s| s.images_by_prefix(&p, &fp, 1))
        .await?
        .iter()
        .any(|i| i.fingerprint == fingerprint)
    {
        return Err(ApiError::Conflict(
            "Image with same fingerprint already exists".into(),
        ));
    }
    let filename = header(&headers, "x-lxd-filename")
        .map(|f| f.rsplit('/').next().unwrap_or(f).to_owned())
        .unwrap_or_default();
    let public = matches!(header(&headers, "x-lxd-public"), Some("1" | "true"));
    let op = d.operations.start(
        &d.events,
        "Downloading image",
        &caller.project,
        crate::operations::resources([("images", vec![format!("/1.0/images/{fingerprint}")])]),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let result = import(&d2, upload, &fingerprint, size, filename, public, &caller).await;
        op2.finish(&d2.events, result.map_err(|e| e.to_string()));
    });
    Ok(response::operation(op.url(), op.to_json()))
}

/// An upload in progress: removed on drop unless kept.
struct Upload {
    path: PathBuf,
    keep: bool,
}

impl Upload {
    fn new(path: PathBuf) -> ApiResult<Upload> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(ApiError::internal)?;
        Ok(Upload { path, keep: false })
    }

    /// Stream the body to the file, hashing as it goes; returns the fingerprint and size.
    async fn receive(&self, body: Body) -> ApiResult<(String, u64)> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(ApiError::internal)?;
        let mut hasher = Sha256::new();
        let size = crate::body::stream(body, MAX_IMAGE_BYTES, |chunk| {
            hasher.update(chunk);
            // Small writes to a local file; blocking here is brief.
            file.write_all(chunk).map_err(ApiError::internal)
        })
        .await?;
        file.sync_all().map_err(ApiError::internal)?;
        if size == 0 {
            return Err(ApiError::BadRequest("The upload is empty".into()));
        }
        Ok((hex::encode(hasher.finalize()), size))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn import(
    d: &Arc<Daemon>,
    mut upload: Upload,
    fingerprint: &str,
    size: u64,
    filename: String,
    public: bool,
    caller: &Caller,
) -> ApiResult<Value> {
    let (tarball, unpacked) = (
        images_dir(d).join(fingerprint),
        unpacked_dir(d, fingerprint),
    );
    let src = upload.path.clone();
    let (tb, up) = (tarball.clone(), unpacked.clone());
    let budget = UnpackBudget::of(d, &caller.project).await?;
    let fp = fingerprint.to_owned();
    let recorded = d.db(move |s| s.image_unpacked_size(&fp)).await?;
    let recorded = recorded.and_then(|n| u64::try_from(n).ok());
    if unpacked.exists() {
        budget.check_known(recorded.unwrap_or(0))?;
    }
    let limits = budget.limits();
    // Unpack once per content; another project's import of the same tarball reuses it.
    let (meta, unpacked_size) = tokio::task::spawn_blocking(move || {
        let (meta, bytes) = if up.exists() {
            (rxd_image::read_metadata(&src, &limits)?, recorded)
        } else {
            let u = rxd_image::unpack(&src, &up, None, &limits)?;
            (u.metadata, Some(u.bytes))
        };
        if !tb.exists() {
            std::fs::rename(&src, &tb).map_err(|e| rxd_image::ImageError::Io {
                path: tb.display().to_string(),
                source: e,
            })?;
        }
        Ok::<_, rxd_image::ImageError>((meta, bytes))
    })
    .await?
    .map_err(|e| budget.refusal(e))?;
    upload.keep = tarball.exists();
    let row = ImageRow {
        project: caller.project.clone(),
        fingerprint: fingerprint.into(),
        filename,
        size: size as i64,
        architecture: meta.architecture.clone(),
        properties: serde_json::to_string(&meta.properties).unwrap_or_else(|_| "{}".into()),
        public,
        created_at: meta.creation_date,
        uploaded_at: now_unix(),
        unpacked_size: i64::try_from(unpacked_size.unwrap_or(0)).unwrap_or(i64::MAX),
    };
    let stored = row.clone();
    d.db(move |s| s.insert_image(&stored)).await?;
    tracing::info!(fingerprint, size, by = %caller.identity.user_name(), peer = %caller.conn.peer(), "image imported");
    d.events.lifecycle(
        "image-created",
        &format!("/1.0/images/{fingerprint}"),
        &caller.project,
        caller,
    );
    let done = ImageUploadMetadata {
        fingerprint: fingerprint.to_owned(),
        size: i64::try_from(size).map_err(ApiError::internal)?,
    };
    serde_json::to_value(done).map_err(ApiError::internal)
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(fp): Path<String>,
) -> ApiResult<Response> {
    let row = resolve(&d, &caller.project, &fp).await?;
    let op = d.operations.start(
        &d.events,
        "Deleting image",
        &caller.project,
        crate::operations::resources([(
            "images",
            vec![format!("/1.0/images/{}", row.fingerprint)],
        )]),
        false,
    );
    let (p, fingerprint) = (caller.project.clone(), row.fingerprint.clone());
    let result = d
        .db(move |s| {
            s.delete_image(&p, &fingerprint)?;
            s.image_in_use(&fingerprint)
        })
        .await;
    match result {
        Ok(in_use) => {
            if !in_use {
                let _ = std::fs::remove_file(images_dir(&d).join(&row.fingerprint));
                let _ = rxd_image::remove::remove_tree(unpacked_dir(&d, &row.fingerprint));
            }
            d.events.lifecycle(
                "image-deleted",
                &format!("/1.0/images/{}", row.fingerprint),
                &caller.project,
                &caller,
            );
            op.finish(&d.events, Ok(Value::Null));
        }
        Err(e) => op.finish(&d.events, Err(e.to_string())),
    }
    Ok(response::operation(op.url(), op.to_json()))
}

/// Alias names: like LXD's, free text without `/` or control characters, at most 255 bytes.
fn valid_alias(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.contains('/')
        && !name.chars().any(char::is_control)
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Invalid alias name {name:?}: no '/', no control characters, at most 255 bytes"
        )))
    }
}

fn alias_json(a: &AliasRow) -> ImageAliasesEntry {
    ImageAliasesEntry {
        description: a.description.clone(),
        target: a.fingerprint.clone(),
        name: a.name.clone(),
        kind: "container".into(),
    }
}

pub async fn aliases(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let p = caller.project.clone();
    let all = d.db(move |s| s.aliases(&p)).await?;
    Ok(if q.recursion > 0 {
        response::sync(all.iter().map(alias_json).collect::<Vec<_>>())
    } else {
        response::sync(
            all.iter()
                .map(|a| format!("/1.0/images/aliases/{}", a.name))
                .collect::<Vec<_>>(),
        )
    })
}

pub use rxd_api::image::{
    ImageAliasesEntryPost as AliasRename, ImageAliasesEntryPut as AliasPut,
    ImageAliasesPost as AliasPost,
};

pub async fn alias_post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Json(body): Json<AliasPost>,
) -> ApiResult<Response> {
    valid_alias(&body.name)?;
    let image = resolve(&d, &caller.project, &body.target).await?;
    let row = AliasRow {
        project: caller.project.clone(),
        name: body.name.clone(),
        fingerprint: image.fingerprint,
        description: body.description,
    };
    let stored = row.clone();
    d.db(move |s| s.insert_alias(&stored))
        .await
        .map_err(|e| match e {
            ApiError::Conflict(_) => ApiError::Conflict("Alias already exists".into()),
            other => other,
        })?;
    d.events.lifecycle(
        "image-alias-created",
        &format!("/1.0/images/aliases/{}", row.name),
        &caller.project,
        &caller,
    );
    Ok(response::created(&format!(
        "/1.0/images/aliases/{}",
        row.name
    )))
}

async fn find_alias(d: &Daemon, project: &str, name: &str) -> ApiResult<AliasRow> {
    let (p, n) = (project.to_owned(), name.to_owned());
    d.db(move |s| s.alias(&p, &n)).await.map_err(|e| match e {
        ApiError::NotFound(_) => ApiError::NotFound("Image alias not found".into()),
        other => other,
    })
}

pub async fn alias_get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(response::sync(alias_json(
        &find_alias(&d, &caller.project, &name).await?,
    )))
}

pub async fn alias_put(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<AliasPut>,
) -> ApiResult<Response> {
    let mut alias = find_alias(&d, &caller.project, &name).await?;
    if let Some(t) = body.target {
        alias.fingerprint = resolve(&d, &caller.project, &t).await?.fingerprint;
    }
    if let Some(desc) = body.description {
        alias.description = desc;
    }
    d.db(move |s| s.update_alias(&alias)).await?;
    Ok(response::empty())
}

/// `POST /1.0/images/aliases/<name>` renames.
pub async fn alias_rename(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<AliasRename>,
) -> ApiResult<Response> {
    valid_alias(&body.name)?;
    find_alias(&d, &caller.project, &name).await?;
    let (p, new) = (caller.project.clone(), body.name.clone());
    d.db(move |s| s.rename_alias(&p, &name, &new))
        .await
        .map_err(|e| match e {
            ApiError::Conflict(_) => ApiError::Conflict("Alias already exists".into()),
            other => other,
        })?;
    Ok(response::created(&format!(
        "/1.0/images/aliases/{}",
        body.name
    )))
}

pub async fn alias_delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    find_alias(&d, &caller.project, &name).await?;
    let (p, n) = (caller.project.clone(), name.clone());
    d.db(move |s| s.delete_alias(&p, &n)).await?;
    d.events.lifecycle(
        "image-alias-deleted",
        &format!("/1.0/images/aliases/{name}"),
        &caller.project,
        &caller,
    );
    Ok(response::empty())
}
