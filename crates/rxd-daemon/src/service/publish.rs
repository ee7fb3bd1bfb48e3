//! Publishing an instance or one of its snapshots as an image (`lxc publish`): its tree packed
//! by descriptor into a unified tarball with the container's own ids (`rxd_image::pack`), then
//! imported as an upload would be (unpacked within the project's budget, recorded), so a
//! published image is held to every rule an uploaded one is.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::images::{self, Details, UnpackBudget, Upload, Uploaded};
use crate::service::{instances, layout, snapshots};
use crate::state::Daemon;
use rxd_api::image::ImagesPost;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One publish at a time, as in LXD: each reads a whole tree and writes a whole image.
static PUBLISHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `metadata.yaml` is at most this large (the unpacker's bound).
const MAX_METADATA: u64 = 64 << 10;

/// The compression asked for, else the project's `images.compression_algorithm`, else the
/// server's, else gzip (LXD's default).
fn compression(d: &Daemon, project: &str, asked: &str) -> ApiResult<rxd_image::pack::Compression> {
    let key = rxd_core::config::IMAGES_COMPRESSION;
    let name = if asked.is_empty() {
        d.project(project)
            .and_then(|p| p.config.get(key).cloned())
            .or_else(|| crate::sync::read(&d.config).get(key).cloned())
            .unwrap_or_else(|| "gzip".into())
    } else {
        asked.to_owned()
    };
    rxd_image::pack::Compression::parse(&name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Unsupported compression algorithm {name:?}: rxd knows {}",
            rxd_core::config::COMPRESSIONS.join(", ")
        ))
    })
}

/// The image's `metadata.yaml` (see `rxd_image::pack::published_metadata`).
fn metadata(dir: &std::path::Path, properties: &BTreeMap<String, String>) -> ApiResult<String> {
    use std::io::Read;
    let mut text = String::new();
    let own = std::fs::File::open(dir.join("metadata.yaml"))
        .and_then(|f| f.take(MAX_METADATA).read_to_string(&mut text))
        .is_ok();
    let arch = rustix::system::uname()
        .machine()
        .to_string_lossy()
        .into_owned();
    rxd_image::pack::published_metadata(
        own.then_some(text.as_str()),
        properties,
        &arch,
        crate::sync::now_unix(),
    )
    .map_err(|e| ApiError::BadRequest(format!("The instance's metadata.yaml is unusable: {e}")))
}

/// Publish `body.source` (`c1` or `c1/snap0`) in the caller's project. Returns the operation's
/// metadata (`fingerprint`, `size`).
pub async fn publish(
    d: &Arc<Daemon>,
    caller: &Caller,
    body: &ImagesPost,
) -> ApiResult<serde_json::Value> {
    let source = body.source.clone().unwrap_or_default();
    let (name, snap) = match source.name.split_once('/') {
        Some((i, s)) => (i.to_owned(), Some(s.to_owned())),
        None if source.kind == "snapshot" => {
            return Err(ApiError::BadRequest(
                "A snapshot source is named INSTANCE/SNAPSHOT".into(),
            ))
        }
        None => (source.name.clone(), None),
    };
    let row = instances::find(d, &caller.project, &name).await?;
    let snap = match snap {
        Some(s) => Some(snapshots::find_snapshot(d, &row, &s).await?),
        None => None,
    };
    let compression = compression(d, &caller.project, &body.compression_algorithm)?;
    let _one = PUBLISHING.lock().await;
    // Nothing starts, deletes or restores the instance while its files are read.
    let key = instances::Keyed::key(&row);
    let _guard = d.runtime.action_lock(&key).lock_owned().await;
    if snap.is_none() && d.runtime.init(&key).is_some() {
        return Err(ApiError::BadRequest(
            "Cannot export a running instance as an image".into(),
        ));
    }
    let _files = d.runtime.rootfs_lock(&key).read_owned().await;
    // The map the files carry: the instance's now, or the snapshot's when it was taken.
    let config: BTreeMap<String, String> =
        serde_json::from_str(snap.as_ref().map_or(&row.config, |s| &s.config)).unwrap_or_default();
    let map = instances::parse_idmap(
        config
            .get("volatile.last_state.idmap")
            .map_or("[]", String::as_str),
    )?;
    let shift = map.map(|m| rxd_image::IdShift {
        uid_base: m.uid,
        gid_base: m.gid,
        size: m.size,
    });
    let dir = layout::instance_dir(d, &row.pool, &key);
    let rootfs = snap.as_ref().map(|s| {
        layout::snapshots_dir(d, &row.pool, &key)
            .join(&s.name)
            .join("rootfs")
    });
    let yaml = metadata(&dir, &body.properties)?;
    let limits = UnpackBudget::of(d, &caller.project).await?.limits();
    let upload =
        Upload::new(images::images_dir(d).join(format!(".upload-{}", uuid::Uuid::new_v4())))?;
    let out = upload.open()?;
    let packed = tokio::task::spawn_blocking(move || {
        rxd_image::pack::pack(
            &dir,
            rootfs.as_deref(),
            &yaml,
            shift.as_ref(),
            compression,
            out,
            &limits,
        )
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        rxd_image::ImageError::TooLarge(_) | rxd_image::ImageError::TooManyEntries(_) => {
            ApiError::BadRequest(format!("The instance is too large to publish: {e}"))
        }
        other => ApiError::internal(other),
    })?;
    if packed.outside_map > 0 {
        tracing::warn!(
            instance = name,
            entries = packed.outside_map,
            "published image: owners outside the instance's id map were packed as nobody"
        );
    }
    let (p, f) = (caller.project.clone(), packed.fingerprint.clone());
    let same = d.db(move |s| s.images_by_prefix(&p, &f, 2)).await?;
    if same.iter().any(|i| i.fingerprint == packed.fingerprint) {
        return Err(ApiError::Conflict(format!(
            "The image already exists: {}",
            packed.fingerprint
        )));
    }
    let filename = if body.filename.is_empty() {
        format!("{}{}", packed.fingerprint, compression.extension())
    } else {
        body.filename.clone()
    };
    images::import(
        d,
        Uploaded::Unified(upload),
        &packed.fingerprint,
        packed.size,
        Details {
            filename,
            public: body.public,
            properties: BTreeMap::new(),
            cache: rxd_store::ImageCache::default(),
        },
        caller,
    )
    .await
}
