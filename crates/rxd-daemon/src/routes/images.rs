//! `/1.0/images` and `/1.0/images/aliases`: importing images (a unified tarball as the body, or a
//! split image as LXD clients send it: `multipart/form-data` with a `metadata` then a `rootfs`
//! part), listing, showing and deleting them, and naming them. An upload is streamed to a private file while it is hashed; the
//! checks and unpacking (rxd-image, which refuses hostile archives) run as a task operation, and
//! a failure at any step leaves nothing behind.

use crate::body::Json;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::ListQuery;
use crate::response;
use crate::service::images::{
    images_dir, import, resolve, rootfs_path, Details, UnpackBudget, Upload, Uploaded,
};
use crate::state::Daemon;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use rxd_api::image::{ImageAliasesEntry, ImagesPost};
use rxd_store::{AliasRow, ImageRow};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use crate::service::images::MAX_IMAGE_BYTES;

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
        last_used_at: if row.cache.last_used_at > 0 {
            rfc3339(row.cache.last_used_at)
        } else {
            "0001-01-01T00:00:00Z".into()
        },
        cached: row.cache.cached,
        auto_update: row.cache.auto_update,
        update_source: serde_json::from_str(&row.cache.update_source).ok(),
        profiles: vec!["default".into()],
        project: row.project.clone(),
        properties,
        public: row.public,
        size: row.size,
        kind: "container".into(),
        uploaded_at: rfc3339(row.uploaded_at),
    }
}

/// Who is asking for images. The image GETs are open to untrusted callers, as in LXD: they
/// see public images, and a private one only with its secret. A trusted caller gets what the
/// table's `view` would have given it (a project it may not view answers as a missing one).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Viewer {
    Full,
    Public,
}

fn viewer(d: &Daemon, caller: &Caller) -> ApiResult<Viewer> {
    if !caller.identity.is_trusted() {
        return Ok(Viewer::Public);
    }
    let exists = crate::sync::read(&d.projects).contains_key(&caller.project);
    match rxd_auth::rbac::decide(
        rxd_auth::rbac::Need::Project(rxd_auth::rbac::Permission::View),
        true,
        &caller.rights,
        &caller.project,
        exists,
    ) {
        rxd_auth::rbac::Decision::Allow => Ok(Viewer::Full),
        refused => Err(ApiError::from(refused)),
    }
}

/// `?secret=` on the two GETs another server makes to pull a private image.
#[derive(serde::Deserialize, Default)]
pub struct SecretQuery {
    #[serde(default)]
    secret: String,
}

/// The image `prefix` names for `caller`: any of the project's for a full viewer; for an
/// untrusted one, a public image, or a private one named by its whole fingerprint with a
/// secret issued for it. Anything else is "not found", the same words as a missing image.
async fn find(d: &Daemon, caller: &Caller, prefix: &str, secret: &str) -> ApiResult<ImageRow> {
    if viewer(d, caller)? == Viewer::Full {
        return resolve(d, &caller.project, prefix).await;
    }
    let valid = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return Err(ApiError::NotFound(crate::service::images::NOT_FOUND.into()));
    }
    let (p, f) = (caller.project.clone(), prefix.to_owned());
    let rows = d.db(move |s| s.images_by_prefix(&p, &f, 1000)).await?;
    let mut open: Vec<ImageRow> = rows
        .into_iter()
        .filter(|r| {
            r.public
                || (r.fingerprint == prefix
                    && d.image_secrets
                        .accepts(&caller.project, &r.fingerprint, secret))
        })
        .collect();
    match open.len() {
        0 => Err(ApiError::NotFound(crate::service::images::NOT_FOUND.into())),
        1 => Ok(open.remove(0)),
        _ => Err(ApiError::BadRequest("More than one image matches".into())),
    }
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let public_only = viewer(&d, &caller)? == Viewer::Public;
    let p = caller.project.clone();
    let (images, aliases) = d.db(move |s| Ok((s.images(&p)?, s.aliases(&p)?))).await?;
    let objects = images
        .iter()
        .filter(|i| i.public || !public_only)
        .map(|i| to_json(i, &aliases))
        .collect();
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
    Query(q): Query<SecretQuery>,
) -> ApiResult<Response> {
    let row = find(&d, &caller, &fp, &q.secret).await?;
    let p = caller.project.clone();
    let aliases = d.db(move |s| s.aliases(&p)).await?;
    Ok(response::sync(to_json(&row, &aliases)))
}

/// `PUT` (every field; an absent one is its zero value) and `PATCH` (absent fields keep theirs)
/// of `/1.0/images/<fingerprint>`: properties, `public` and `auto_update`. rxd keeps no expiry
/// and applies no profiles, and can refresh only an image pulled from a server, so it refuses
/// an expiry date, profiles other than `default` and `auto_update` on an uploaded image, rather
/// than store what it would not honour.
async fn update(
    d: &Daemon,
    caller: &Caller,
    fp: &str,
    body: rxd_api::image::ImagePut,
    replace: bool,
) -> ApiResult<Response> {
    let row = resolve(d, &caller.project, fp).await?;
    if body.auto_update == Some(true) && row.cache.update_source.is_empty() {
        return Err(ApiError::BadRequest(
            "The image was not pulled from an image server: it has no source to update from, auto_update must be false".into(),
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
            "rxd does not keep profiles per image (instances made from one get `default` unless the request names others): profiles must be [default]".into(),
        ));
    }
    let properties = match body.properties {
        Some(p) => serde_json::to_string(&p).map_err(ApiError::internal)?,
        None if replace => "{}".to_owned(),
        None => row.properties.clone(),
    };
    let public = body.public.unwrap_or(!replace && row.public);
    let auto_update = body
        .auto_update
        .unwrap_or(!replace && row.cache.auto_update);
    let (p, f) = (row.project.clone(), row.fingerprint.clone());
    d.db(move |s| s.update_image(&p, &f, &properties, public, auto_update))
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

/// `POST /1.0/images` with a JSON body: an image from another server (`source.mode` pull, as
/// `lxc image copy REMOTE:ALIAS local:` and pylxd's `create_from_simplestreams` send it), in
/// an operation whose metadata is its fingerprint and size; then the aliases asked for.
async fn pull(d: Arc<Daemon>, caller: Caller, body: ImagesPost) -> ApiResult<Response> {
    let source = body.source.clone().unwrap_or_default();
    if matches!(source.kind.as_str(), "instance" | "container" | "snapshot") {
        return publish(d, caller, body).await;
    }
    if source.kind != "image" {
        return Err(ApiError::BadRequest(format!(
            "Unsupported image source type {:?}",
            source.kind
        )));
    }
    if !matches!(source.mode.as_str(), "" | "pull") {
        return Err(ApiError::BadRequest(format!(
            "Unsupported image source mode {:?}: rxd pulls",
            source.mode
        )));
    }
    if source.server.is_empty() {
        return Err(ApiError::BadRequest("No image server given".into()));
    }
    for alias in &body.aliases {
        valid_alias(&alias.name)?;
    }
    // Refused at once, before any operation: no request reaches a server not allowed.
    crate::service::images::may_pull_from(&d, &caller, &source.server)?;
    let name = if source.fingerprint.is_empty() {
        source.alias.clone()
    } else {
        source.fingerprint.clone()
    };
    let op = d.operations.start(
        &d.events,
        "Downloading image",
        &caller.project,
        crate::operations::resources([("images", Vec::new())]),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let (d3, op3) = (d2.clone(), op2.clone());
        let report = move |text: String| op3.report_download(&d3.events, text);
        let pull = crate::service::images::Pull {
            server: &source.server,
            protocol: &source.protocol,
            name: &name,
            certificate: &source.certificate,
            secret: &source.secret,
            project: &source.project,
            report: &report,
        };
        let result = async {
            let purpose = crate::service::images::Purpose::Copy {
                public: body.public,
                auto_update: body.auto_update,
            };
            let pulled = crate::service::images::pull(&d2, &caller, &pull, purpose).await?;
            add_aliases(&d2, &caller, body.aliases, &pulled.fingerprint).await?;
            serde_json::to_value(pulled).map_err(ApiError::internal)
        }
        .await;
        op2.finish(&d2.events, result.map_err(|e| e.to_string()));
    });
    Ok(response::operation(op.url(), op.to_json()))
}

/// The aliases a `POST /1.0/images` asked for, made once its image is in place.
async fn add_aliases(
    d: &Arc<Daemon>,
    caller: &Caller,
    aliases: Vec<rxd_api::image::ImageAlias>,
    fingerprint: &str,
) -> ApiResult<()> {
    for alias in aliases {
        let row = AliasRow {
            project: caller.project.clone(),
            name: alias.name,
            fingerprint: fingerprint.to_owned(),
            description: alias.description,
        };
        d.db(move |s| s.insert_alias(&row)).await?;
    }
    Ok(())
}

/// `POST /1.0/images` with an instance or snapshot as its source (`lxc publish`), in an
/// operation whose metadata is the new image's fingerprint and size; then the aliases asked for.
async fn publish(d: Arc<Daemon>, caller: Caller, body: ImagesPost) -> ApiResult<Response> {
    for alias in &body.aliases {
        valid_alias(&alias.name)?;
    }
    let op = d.operations.start(
        &d.events,
        "Downloading image",
        &caller.project,
        crate::operations::resources([("images", Vec::new())]),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let result = async {
            let done = crate::service::publish::publish(&d2, &caller, &body).await?;
            let fingerprint = done["fingerprint"].as_str().unwrap_or_default().to_owned();
            add_aliases(&d2, &caller, body.aliases, &fingerprint).await?;
            Ok::<_, ApiError>(done)
        }
        .await;
        op2.finish(&d2.events, result.map_err(|e| e.to_string()));
    });
    Ok(response::operation(op.url(), op.to_json()))
}

/// `POST /1.0/images` with the tarball as the body.
pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let content_type = header(&headers, "content-type").unwrap_or_default();
    if content_type.starts_with("application/json") {
        let bytes = axum::body::to_bytes(body, crate::body::DEFAULT_LIMIT)
            .await
            .map_err(|_| ApiError::TooLarge {
                limit: crate::body::DEFAULT_LIMIT,
            })?;
        return pull(d, caller, crate::body::decode(&bytes)?).await;
    }
    let multipart = content_type.starts_with("multipart/form-data");
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
    let new_upload = || Upload::new(dir.join(format!(".upload-{}", uuid::Uuid::new_v4())));
    let (upload, fingerprint, size, part_filename) = if multipart {
        let (meta, rootfs) = (new_upload()?, new_upload()?);
        let (fingerprint, size, filename) =
            receive_split(content_type, body, &meta, &rootfs).await?;
        (
            Uploaded::Split { meta, rootfs },
            fingerprint,
            size,
            Some(filename),
        )
    } else {
        let upload = new_upload()?;
        let (fingerprint, size) = receive(&upload, body).await?;
        (Uploaded::Unified(upload), fingerprint, size, None)
    };
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
    // As LXD: a split upload's name is its rootfs part's file name, a unified one's the header.
    let filename = part_filename
        .or_else(|| header(&headers, "x-lxd-filename").map(str::to_owned))
        .map(|f| f.rsplit('/').next().unwrap_or(&f).to_owned())
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
        let result = import(
            &d2,
            upload,
            &fingerprint,
            size,
            Details {
                filename,
                public,
                properties: Default::default(),
                cache: Default::default(),
            },
            &caller,
        )
        .await;
        op2.finish(&d2.events, result.map_err(|e| e.to_string()));
    });
    Ok(response::operation(op.url(), op.to_json()))
}

/// Receive a split image as LXD clients send it (`multipart/form-data`: part `metadata`, then
/// part `rootfs`), each part to its own file, hashed as one stream: the fingerprint is the
/// SHA-256 of the metadata then the root filesystem. Returns it, the total size and the root
/// filesystem part's file name.
async fn receive_split(
    content_type: &str,
    body: Body,
    meta: &Upload,
    rootfs: &Upload,
) -> ApiResult<(String, u64, String)> {
    let bad = |m: String| ApiError::BadRequest(m);
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| bad(format!("Invalid multipart upload: {e}")))?;
    let mut parts = multer::Multipart::new(body.into_data_stream(), boundary);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut filename = String::new();
    for (want, upload) in [("metadata", meta), ("rootfs", rootfs)] {
        let mut field = parts
            .next_field()
            .await
            .map_err(|e| bad(format!("Invalid multipart upload: {e}")))?
            .ok_or_else(|| bad(format!("Invalid multipart image upload: no {want:?} part")))?;
        match field.name() {
            Some(name) if name == want => {}
            Some("rootfs.img") => {
                return Err(bad("Virtual-machine images are not supported by rxd".into()))
            }
            other => {
                return Err(bad(format!(
                    "Invalid multipart image upload: expected part {want:?}, got {other:?}"
                )))
            }
        }
        if want == "rootfs" {
            filename = field.file_name().unwrap_or_default().to_owned();
        }
        let mut file = upload.open()?;
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| bad(format!("reading the upload: {e}")))?
        {
            size += chunk.len() as u64;
            if size > MAX_IMAGE_BYTES {
                return Err(ApiError::TooLarge {
                    limit: MAX_IMAGE_BYTES as usize,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(ApiError::internal)?;
        }
        file.sync_all().map_err(ApiError::internal)?;
    }
    if parts
        .next_field()
        .await
        .map_err(|e| bad(format!("Invalid multipart upload: {e}")))?
        .is_some()
    {
        return Err(bad(
            "Invalid multipart image upload: more than a metadata and a rootfs part".into(),
        ));
    }
    Ok((hex::encode(hasher.finalize()), size, filename))
}

/// Stream the body to the upload's file, hashing as it goes; returns the fingerprint and size.
async fn receive(upload: &Upload, body: Body) -> ApiResult<(String, u64)> {
    let mut file = upload.open()?;
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
            // Files without a row are removed at start-up if a kill comes first.
            crate::failpoint::hit("image-delete:row-deleted");
            if !in_use {
                crate::service::images::remove_files(&d, &row.fingerprint);
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

/// `POST /1.0/images/<fp>/refresh` (`lxc image refresh`): look for a newer version on the
/// server the image was pulled from; the operation's metadata says whether it was replaced.
pub async fn refresh(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(fp): Path<String>,
    // LXD's takes no body; one sent anyway is held to the JSON rules.
    _body: crate::body::OptionalJson<serde_json::Value>,
) -> ApiResult<Response> {
    let row = resolve(&d, &caller.project, &fp).await?;
    if row.cache.update_source.is_empty() {
        return Err(ApiError::BadRequest(
            "The image was not pulled from an image server: nothing to refresh from".into(),
        ));
    }
    let op = d.operations.start(
        &d.events,
        "Refreshing image",
        &caller.project,
        crate::operations::resources([(
            "images",
            vec![format!("/1.0/images/{}", row.fingerprint)],
        )]),
        false,
    );
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let result = crate::service::images::refresh(&d2, &caller, &row)
            .await
            .map(|refreshed| serde_json::json!({ "refreshed": refreshed }));
        op2.finish(&d2.events, result.map_err(|e| e.to_string()));
    });
    Ok(response::operation(op.url(), op.to_json()))
}

/// The file name extension LXD gives an image file, from its first bytes (never its name).
fn extension(path: &std::path::Path) -> ApiResult<&'static str> {
    use std::io::Read;
    let mut magic = [0u8; 6];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(ApiError::internal)?;
    let magic = &magic[..n];
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        ".tar.gz"
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        ".tar.xz"
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ".tar.zst"
    } else if magic.starts_with(b"hsqs") {
        ".squashfs"
    } else {
        ".tar"
    })
}

async fn file_stream(
    path: &std::path::Path,
) -> ApiResult<tokio_util::io::ReaderStream<tokio::fs::File>> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(ApiError::internal)?;
    Ok(tokio_util::io::ReaderStream::new(file))
}

/// `GET /1.0/images/<fp>/export`: the image's files as LXD sends them, so `lxc image export`
/// (and another server's import) gets what was imported: a unified image as one
/// `application/octet-stream` body, a split one as `multipart/form-data` with a `metadata`
/// then a `rootfs` part.
pub async fn export(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(fp): Path<String>,
    Query(q): Query<SecretQuery>,
) -> ApiResult<Response> {
    use futures_util::StreamExt;
    let row = find(&d, &caller, &fp, &q.secret).await?;
    let fp = row.fingerprint;
    let (meta, rootfs) = (images_dir(&d).join(&fp), rootfs_path(&d, &fp));
    let meta_ext = extension(&meta)?;
    if !rootfs.exists() {
        let size = std::fs::metadata(&meta).map_err(ApiError::internal)?.len();
        return Response::builder()
            .header("content-type", "application/octet-stream")
            .header("content-length", size)
            .header(
                "content-disposition",
                format!("inline;filename={fp}{meta_ext}"),
            )
            .body(Body::from_stream(file_stream(&meta).await?))
            .map_err(ApiError::internal);
    }
    let rootfs_ext = extension(&rootfs)?;
    let boundary = uuid::Uuid::new_v4().simple().to_string();
    let head = |name: &str, filename: String| {
        bytes::Bytes::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ))
    };
    let once =
        |b: bytes::Bytes| futures_util::stream::once(async move { Ok::<_, std::io::Error>(b) });
    let body = once(head("metadata", format!("meta-{fp}{meta_ext}")))
        .chain(file_stream(&meta).await?)
        .chain(once(bytes::Bytes::from_static(b"\r\n")))
        .chain(once(head("rootfs", format!("{fp}{rootfs_ext}"))))
        .chain(file_stream(&rootfs).await?)
        .chain(once(bytes::Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    Response::builder()
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from_stream(body))
        .map_err(ApiError::internal)
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
    let viewer = viewer(&d, &caller)?;
    let alias = find_alias(&d, &caller.project, &name).await?;
    // An untrusted caller sees the aliases of public images only.
    if viewer == Viewer::Public && find(&d, &caller, &alias.fingerprint, "").await.is_err() {
        return Err(ApiError::NotFound("Image alias not found".into()));
    }
    Ok(response::sync(alias_json(&alias)))
}

/// `POST /1.0/images/<fingerprint>/secret`: a one-time secret that lets another server read
/// this private image (`lxc image copy`), in a token operation as LXD shows it.
pub async fn secret(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(fp): Path<String>,
    // LXD's takes no body; one sent anyway is held to the JSON rules.
    _body: crate::body::OptionalJson<serde_json::Value>,
) -> ApiResult<Response> {
    let row = resolve(&d, &caller.project, &fp).await?;
    let secret = d.image_secrets.issue(&caller.project, &row.fingerprint);
    tracing::info!(fingerprint = %row.fingerprint, by = %caller.identity.user_name(), peer = %caller.conn.peer(), "image secret issued");
    let now = rfc3339(crate::sync::now_unix());
    let id = uuid::Uuid::new_v4().to_string();
    let op = rxd_api::operation::Operation {
        id: id.clone(),
        class: "token".into(),
        description: "Image download token".into(),
        created_at: now.clone(),
        updated_at: now,
        status: "Running".into(),
        status_code: 103,
        resources: Some(
            [(
                "images".to_owned(),
                vec![format!("/1.0/images/{}", row.fingerprint)],
            )]
            .into(),
        ),
        metadata: serde_json::json!({"secret": secret}),
        may_cancel: false,
        err: String::new(),
        location: "none".into(),
    };
    Ok(response::operation(format!("/1.0/operations/{id}"), op))
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
