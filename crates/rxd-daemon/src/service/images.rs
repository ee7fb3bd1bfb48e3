//! Images below HTTP: where they live, resolving a name or fingerprint prefix to one, and the
//! budget every unpack runs within.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::Daemon;
use crate::sync::now_unix;
use rxd_api::image::ImageUploadMetadata;
use rxd_store::ImageRow;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

pub const NOT_FOUND: &str = "Image not found";

/// Largest image accepted (uploaded or pulled).
pub const MAX_IMAGE_BYTES: u64 = 4 << 30;

pub fn images_dir(d: &Daemon) -> PathBuf {
    d.dir.join("images")
}

/// Where a split image's root filesystem file lives (`images/<fp>` holds its metadata tarball).
pub fn rootfs_path(d: &Daemon, fingerprint: &str) -> PathBuf {
    images_dir(d).join(format!("{fingerprint}.rootfs"))
}

/// Where an image's unpacked, unshifted tree lives (containers are created from it).
pub fn unpacked_dir(d: &Daemon, fingerprint: &str) -> PathBuf {
    images_dir(d).join(format!("{fingerprint}.unpacked"))
}

/// How many bytes an unpack may write for `project`: the server's bound
/// (`images.max_unpacked_size`) and, under `limits.disk`, what the project has left. Every
/// import and every instance create unpacks within it, so a compression bomb stops at the
/// bound and the partial tree is removed.
pub struct UnpackBudget {
    project: String,
    server: u64,
    /// `limits.disk` and the bytes the project holds now.
    disk: Option<(u64, u64)>,
}

impl UnpackBudget {
    pub async fn of(d: &Daemon, project: &str) -> ApiResult<UnpackBudget> {
        let server = rxd_core::config::max_unpacked_size(&crate::sync::read(&d.config));
        let limit = d
            .project(project)
            .and_then(|p| rxd_core::project_config::disk_limit(&p.config));
        let disk = match limit {
            None => None,
            Some(limit) => {
                let p = project.to_owned();
                let (used, volumes) = d
                    .db(move |s| Ok((s.disk_usage(&p)?, s.storage_volumes(None, Some(&p))?)))
                    .await?;
                // Custom volumes count by the size each is given (one without a size was made
                // before the limit; a new one needs a size under it).
                let reserved: u64 = volumes
                    .iter()
                    .filter_map(|v| {
                        serde_json::from_str::<std::collections::BTreeMap<String, String>>(
                            &v.config,
                        )
                        .ok()?
                        .get("size")
                        .and_then(|s| rxd_core::instance_config::parse_bytes(s))
                    })
                    .sum();
                Some((
                    limit,
                    u64::try_from(used).unwrap_or(0).saturating_add(reserved),
                ))
            }
        };
        Ok(UnpackBudget {
            project: project.to_owned(),
            server,
            disk,
        })
    }

    /// What the project has left under `limits.disk` (`None`: no limit).
    fn left(&self) -> Option<u64> {
        self.disk.map(|(limit, used)| limit.saturating_sub(used))
    }

    fn over_disk_limit(&self, needs: &str) -> ApiError {
        let (limit, used) = self.disk.unwrap_or_default();
        ApiError::BadRequest(format!(
            "Project {:?} would exceed its limits.disk of {limit} bytes: {used} bytes are in use and this needs {needs}",
            self.project
        ))
    }

    /// Refuse before anything is unpacked when a recorded size already tells: `bytes` more
    /// (0: is anything left at all?).
    pub fn check_known(&self, bytes: u64) -> ApiResult<()> {
        match self.left() {
            Some(0) => Err(self.over_disk_limit("more")),
            Some(left) if bytes > left => Err(self.over_disk_limit(&format!("{bytes} more"))),
            _ => Ok(()),
        }
    }

    /// The unpacker's limits: the server's bound or the project's remainder, whichever is less.
    pub fn limits(&self) -> rxd_image::Limits {
        let max = self
            .left()
            .map_or(self.server, |left| left.min(self.server));
        rxd_image::Limits {
            max_total_bytes: max,
            ..rxd_image::Limits::default()
        }
    }

    /// An unpack failure as the client sees it: a bound that stopped it is named.
    pub fn refusal(&self, e: rxd_image::ImageError) -> ApiError {
        match e {
            rxd_image::ImageError::TooLarge(n) if self.left().is_some_and(|l| l < self.server) => {
                self.over_disk_limit(&format!("more than the {n} bytes left"))
            }
            rxd_image::ImageError::TooLarge(n) => ApiError::BadRequest(format!(
                "The image unpacks to more than {n} bytes, the server's limit (images.max_unpacked_size)"
            )),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

/// The one image a fingerprint prefix names.
pub async fn resolve(d: &Daemon, project: &str, prefix: &str) -> ApiResult<ImageRow> {
    let valid = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return Err(ApiError::BadRequest(
            "Invalid fingerprint: expected 1 to 64 lowercase hexadecimal characters".into(),
        ));
    }
    let (project, p) = (project.to_owned(), prefix.to_owned());
    let mut rows = d.db(move |s| s.images_by_prefix(&project, &p, 2)).await?;
    match rows.len() {
        0 => Err(ApiError::NotFound(NOT_FOUND.into())),
        1 => Ok(rows.remove(0)),
        _ => Err(ApiError::BadRequest("More than one image matches".into())),
    }
}

/// The fingerprint an instance source names: an alias, or a fingerprint prefix.
pub async fn resolve_source(d: &Daemon, project: &str, target: &str) -> ApiResult<String> {
    let (p, name) = (project.to_owned(), target.to_owned());
    if let Ok(alias) = d.db(move |s| s.alias(&p, &name)).await {
        return Ok(alias.fingerprint);
    }
    // Neither an alias nor a fingerprint: not found, not a syntax error.
    match resolve(d, project, target).await {
        Ok(image) => Ok(image.fingerprint),
        Err(ApiError::BadRequest(_)) => Err(ApiError::NotFound(NOT_FOUND.into())),
        Err(e) => Err(e),
    }
}

/// What was uploaded: a unified tarball, or a split image's two parts.
pub enum Uploaded {
    Unified(Upload),
    Split { meta: Upload, rootfs: Upload },
}

/// An upload in progress: its file is removed on drop (once renamed into place, nothing is
/// there to remove).
pub struct Upload {
    pub path: PathBuf,
}

impl Upload {
    pub fn new(path: PathBuf) -> ApiResult<Upload> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(ApiError::internal)?;
        Ok(Upload { path })
    }

    pub fn open(&self) -> ApiResult<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(ApiError::internal)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What is recorded with an imported image besides what its files say.
pub struct Details {
    pub filename: String,
    pub public: bool,
    /// Added to (and overriding) the properties of its `metadata.yaml` (an image server's).
    pub properties: std::collections::BTreeMap<String, String>,
    /// How a pulled image is kept (default for an upload).
    pub cache: rxd_store::ImageCache,
}

/// How a pull of an image starts: the project has it already (its size), or this caller holds
/// the image's pull lock (one pull of an image at a time; a second finds it here) with the
/// project's budget checked and the images directory ready.
enum PullStart {
    Have(u64),
    Fresh(tokio::sync::OwnedMutexGuard<()>, std::path::PathBuf),
}

async fn start_pull(d: &Arc<Daemon>, caller: &Caller, fingerprint: &str) -> ApiResult<PullStart> {
    let guard = d
        .runtime
        .action_lock(&format!("image-pull:{fingerprint}"))
        .lock_owned()
        .await;
    let (p, fp) = (caller.project.clone(), fingerprint.to_owned());
    if let Some(have) = d
        .db(move |s| s.images_by_prefix(&p, &fp, 1))
        .await?
        .into_iter()
        .find(|i| i.fingerprint == fingerprint)
    {
        return Ok(PullStart::Have(u64::try_from(have.size).unwrap_or(0)));
    }
    UnpackBudget::of(d, &caller.project).await?.check_known(0)?;
    let dir = images_dir(d);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(ApiError::internal)?;
    Ok(PullStart::Fresh(guard, dir))
}

/// Import uploaded (or downloaded) files whose fingerprint is known: unpack once per content
/// (bounded by the project's budget), put the files in place, record the image. Returns the
/// operation's metadata (`fingerprint`, `size`).
pub async fn import(
    d: &Arc<Daemon>,
    uploaded: Uploaded,
    fingerprint: &str,
    size: u64,
    details: Details,
    caller: &Caller,
) -> ApiResult<serde_json::Value> {
    let Details {
        filename,
        public,
        properties,
        cache,
    } = details;
    let (tarball, rootfs_file, unpacked) = (
        images_dir(d).join(fingerprint),
        rootfs_path(d, fingerprint),
        unpacked_dir(d, fingerprint),
    );
    let (meta_upload, rootfs_upload) = match uploaded {
        Uploaded::Unified(u) => (u, None),
        Uploaded::Split { meta, rootfs } => (meta, Some(rootfs)),
    };
    let src = meta_upload.path.clone();
    let src_rootfs = rootfs_upload.as_ref().map(|u| u.path.clone());
    let (tb, rf, up) = (tarball.clone(), rootfs_file.clone(), unpacked.clone());
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
            let u = match &src_rootfs {
                Some(r) => rxd_image::unpack_split(&src, r, &up, None, &limits)?,
                None => rxd_image::unpack(&src, &up, None, &limits)?,
            };
            if u.xattrs_dropped {
                tracing::warn!(
                    "the image's squashfs carries extended attributes (file capabilities, ACLs): they are not carried"
                );
            }
            (u.metadata, Some(u.bytes))
        };
        crate::failpoint::hit("image-import:unpacked");
        let io = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |e| rxd_image::ImageError::Io { path, source: e }
        };
        // The uploads were synced as received; the renames are synced too.
        for (from, to) in [(Some(&src), &tb), (src_rootfs.as_ref(), &rf)] {
            if let Some(from) = from {
                if !to.exists() {
                    std::fs::rename(from, to).map_err(io(to))?;
                }
            }
        }
        rxd_image::durable::sync_dir(tb.parent().unwrap_or(&tb)).map_err(io(&tb))?;
        Ok::<_, rxd_image::ImageError>((meta, bytes))
    })
    .await?
    .map_err(|e| budget.refusal(e))?;
    // An upload renamed into place is gone from its path; one whose content was here already
    // (another project's same image) is removed when it drops.
    drop((meta_upload, rootfs_upload));
    crate::failpoint::hit("image-import:stored");
    let row = ImageRow {
        project: caller.project.clone(),
        fingerprint: fingerprint.into(),
        filename,
        size: size as i64,
        architecture: meta.architecture.clone(),
        properties: {
            let mut all = meta.properties.clone();
            all.extend(properties);
            serde_json::to_string(&all).unwrap_or_else(|_| "{}".into())
        },
        public,
        created_at: meta.creation_date,
        uploaded_at: now_unix(),
        unpacked_size: i64::try_from(unpacked_size.unwrap_or(0)).unwrap_or(i64::MAX),
        cache,
    };
    let stored = row.clone();
    d.db(move |s| s.insert_image(&stored)).await?;
    crate::failpoint::hit("image-import:row-recorded");
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

/// An image on another server, as a request's `source` names it (`mode: pull`).
pub struct Pull<'a> {
    pub server: &'a str,
    pub protocol: &'a str,
    /// An alias or a fingerprint (prefix) on that server.
    pub name: &'a str,
    /// `lxd` protocol: the server's certificate (PEM) to pin, the one-time secret of a private
    /// image, and the project it is in there.
    pub certificate: &'a str,
    pub secret: &'a str,
    pub project: &'a str,
    /// Told the download's progress as LXD's operations show it (`rootfs: 45% (12.34MB/s)`).
    pub report: &'a (dyn Fn(String) + Send + Sync),
}

/// Whether `caller` may make the daemon fetch from `server`: server administrators may name any
/// https server; everyone else only one listed in `images.allowed_servers` (empty by default),
/// so a URL in a request body never makes the daemon reach an address an admin did not choose.
pub fn may_pull_from(d: &Daemon, caller: &Caller, server: &str) -> ApiResult<()> {
    if caller.rights.is_admin()
        || rxd_core::config::server_allowed(&crate::sync::read(&d.config), server)
    {
        return Ok(());
    }
    tracing::warn!(server, by = %caller.identity.user_name(), "pull from an image server not in images.allowed_servers refused");
    Err(ApiError::Forbidden(format!(
        "Pulling images from {server} is not allowed: only server administrators may use image servers not listed in images.allowed_servers"
    )))
}

/// Pull an image from an image server into the caller's project, unless the project has it
/// already: resolved as LXD resolves an alias, every file verified against the server's index
/// and the combined fingerprint checked before anything is unpacked, then imported as an
/// Why an image is pulled, which decides how it is kept (LXD's rules).
pub enum Purpose {
    /// For an instance: `cached` (removed once unused for `images.remote_cache_expiry` days),
    /// kept up to date when pulled by alias and `images.auto_update_cached` allows.
    Instance,
    /// Asked for (`lxc image copy`): kept until deleted; `auto_update` when asked and pulled
    /// by alias.
    Copy { public: bool, auto_update: bool },
    /// A newer version of an image, taking over how the old one was kept.
    Refresh(rxd_store::ImageCache, bool),
}

/// upload is. Returns its fingerprint and size.
pub async fn pull(
    d: &Arc<Daemon>,
    caller: &Caller,
    source: &Pull<'_>,
    purpose: Purpose,
) -> ApiResult<ImageUploadMetadata> {
    match source.protocol {
        "simplestreams" => {}
        "" | "lxd" => return pull_lxd(d, caller, source, purpose).await,
        other => {
            return Err(ApiError::BadRequest(format!(
                "Unknown image server protocol {other:?}"
            )))
        }
    }
    if source.name.is_empty() {
        return Err(ApiError::BadRequest(
            "must specify one of alias or fingerprint for init from image".into(),
        ));
    }
    may_pull_from(d, caller, source.server)?;
    let server = rxd_simplestreams::Server::new(source.server)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let catalog = server.catalog().await.map_err(|e| {
        tracing::warn!(server = source.server, error = %e, "image server index unusable");
        ApiError::BadRequest(format!("Failed to read the image server's index: {e}"))
    })?;
    let image = catalog
        .resolve(source.name, std::env::consts::ARCH)
        .map_err(|e| match e {
            rxd_simplestreams::StreamsError::NotFound(_) => ApiError::NotFound(e.to_string()),
            e => ApiError::BadRequest(e.to_string()),
        })?
        .clone();
    let done = |size: u64| {
        Ok(ImageUploadMetadata {
            fingerprint: image.fingerprint.clone(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
        })
    };
    let (_pulling, dir) = match start_pull(d, caller, &image.fingerprint).await? {
        PullStart::Have(size) => return done(size),
        PullStart::Fresh(guard, dir) => (guard, dir),
    };
    let new_upload = || Upload::new(dir.join(format!(".upload-{}", uuid::Uuid::new_v4())));
    let meta = new_upload()?;
    let rootfs = image.rootfs.as_ref().map(|_| new_upload()).transpose()?;
    let mut meta_file = meta.open()?;
    let mut rootfs_file = rootfs.as_ref().map(Upload::open).transpose()?;
    let mut progress = crate::operations::DownloadProgress::default();
    let mut tell = |label: &str, n: u64, of: u64| {
        if let Some(text) = progress.text(label, n, of) {
            (source.report)(text);
        }
    };
    let downloaded = rxd_simplestreams::download_image(
        &server,
        &image,
        &mut meta_file,
        rootfs_file.as_mut(),
        &mut tell,
    )
    .await
            .map_err(|e| {
                tracing::warn!(server = source.server, image = %image.fingerprint, error = %e, "image download refused");
                ApiError::BadRequest(format!("Failed to download the image: {e}"))
            })?;
    tracing::info!(server = source.server, alias = source.name, fingerprint = %downloaded.fingerprint, size = downloaded.size, "image downloaded and verified");
    let uploaded = match rootfs {
        Some(rootfs) => Uploaded::Split { meta, rootfs },
        None => Uploaded::Unified(meta),
    };
    let by_alias = image.answers_to(source.name, std::env::consts::ARCH);
    let pulled = Pulled {
        fingerprint: &image.fingerprint,
        size: downloaded.size,
        filename: image.filename(),
        properties: image.properties.clone(),
        by_alias,
    };
    record(d, caller, source, uploaded, pulled, purpose).await?;
    done(downloaded.size)
}

/// What a pull downloaded, for [`record`].
struct Pulled<'a> {
    fingerprint: &'a str,
    size: u64,
    filename: String,
    properties: std::collections::BTreeMap<String, String>,
    /// Named by an alias (so it can be kept up to date from it).
    by_alias: bool,
}

/// Import downloaded files and record where they came from, kept as `purpose` says.
async fn record(
    d: &Arc<Daemon>,
    caller: &Caller,
    source: &Pull<'_>,
    uploaded: Uploaded,
    pulled: Pulled<'_>,
    purpose: Purpose,
) -> ApiResult<()> {
    let by_alias = pulled.by_alias;
    let update_source = serde_json::to_string(&rxd_api::image::ImageSource {
        alias: if by_alias {
            source.name.to_owned()
        } else {
            String::new()
        },
        certificate: source.certificate.to_owned(),
        protocol: source.protocol.to_owned(),
        server: source.server.to_owned(),
        image_type: "container".into(),
    })
    .map_err(ApiError::internal)?;
    let (public, cache) = match purpose {
        Purpose::Instance => (
            false,
            rxd_store::ImageCache {
                cached: true,
                auto_update: by_alias
                    && crate::sync::read(&d.config)
                        .get(rxd_core::config::IMAGES_AUTO_UPDATE_CACHED)
                        .is_none_or(|v| v == "true"),
                update_source,
                last_used_at: now_unix(),
            },
        ),
        Purpose::Copy {
            public,
            auto_update,
        } => (
            public,
            rxd_store::ImageCache {
                cached: false,
                auto_update: auto_update && by_alias,
                update_source,
                last_used_at: 0,
            },
        ),
        Purpose::Refresh(cache, public) => (public, cache),
    };
    import(
        d,
        uploaded,
        pulled.fingerprint,
        pulled.size,
        Details {
            filename: pulled.filename,
            public,
            properties: pulled.properties,
            cache,
        },
        caller,
    )
    .await
    .map(drop)
}

/// Pull from another server speaking LXD's API (`rxd_lxdpull`): as an untrusted client, the
/// server's certificate pinned when the request gives one, a private image through its secret;
/// every byte hashed against the fingerprint before anything is unpacked.
async fn pull_lxd(
    d: &Arc<Daemon>,
    caller: &Caller,
    source: &Pull<'_>,
    purpose: Purpose,
) -> ApiResult<ImageUploadMetadata> {
    if source.name.is_empty() {
        return Err(ApiError::BadRequest(
            "must specify one of alias or fingerprint for init from image".into(),
        ));
    }
    may_pull_from(d, caller, source.server)?;
    let bad = |e: rxd_lxdpull::PullError| match e {
        rxd_lxdpull::PullError::NotFound => ApiError::NotFound(e.to_string()),
        e => ApiError::BadRequest(format!("Failed to pull the image: {e}")),
    };
    let remote = rxd_lxdpull::Source::new(
        source.server,
        source.certificate,
        source.project,
        source.secret,
    )
    .map_err(bad)?;
    let image = remote.resolve(source.name).await.map_err(bad)?;
    let done = |size: u64| {
        Ok(ImageUploadMetadata {
            fingerprint: image.fingerprint.clone(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
        })
    };
    let (_pulling, dir) = match start_pull(d, caller, &image.fingerprint).await? {
        PullStart::Have(size) => return done(size),
        PullStart::Fresh(guard, dir) => (guard, dir),
    };
    let new_upload = || Upload::new(dir.join(format!(".upload-{}", uuid::Uuid::new_v4())));
    let (raw, meta, rootfs) = (new_upload()?, new_upload()?, new_upload()?);
    let mut progress = crate::operations::DownloadProgress::default();
    let downloaded = remote
        .download(
            &image,
            &raw.path,
            &meta.path,
            &rootfs.path,
            MAX_IMAGE_BYTES,
            &mut |n, of| {
                if let Some(text) = progress.text("rootfs", n, of) {
                    (source.report)(text);
                }
            },
        )
        .await
        .map_err(|e| {
            tracing::warn!(server = source.server, image = %image.fingerprint, error = %e, "image download refused");
            bad(e)
        })?;
    tracing::info!(server = source.server, fingerprint = %image.fingerprint, size = downloaded.size, "image pulled from an LXD-protocol server and verified");
    let uploaded = if downloaded.split {
        Uploaded::Split { meta, rootfs }
    } else {
        Uploaded::Unified(meta)
    };
    let by_alias = source.secret.is_empty() && !image.fingerprint.starts_with(source.name);
    let pulled = Pulled {
        fingerprint: &image.fingerprint,
        size: downloaded.size,
        filename: image.filename.clone(),
        properties: std::collections::BTreeMap::new(),
        by_alias,
    };
    record(d, caller, source, uploaded, pulled, purpose).await?;
    done(downloaded.size)
}

/// Remove an image's files once no project holds its content (a kill before this leaves
/// them to start-up recovery, which removes files no row owns).
pub fn remove_files(d: &Daemon, fingerprint: &str) {
    let _ = std::fs::remove_file(images_dir(d).join(fingerprint));
    let _ = std::fs::remove_file(rootfs_path(d, fingerprint));
    let _ = crate::service::layout::remove_tree(unpacked_dir(d, fingerprint));
    crate::service::pools::remove_image_volumes(d, fingerprint);
}

/// Check an image's server for a newer version of what it was pulled as (its
/// `update_source` alias); if there is one, pull it, move the old one's aliases and keeping to
/// it, and remove the old one. Returns whether it was replaced.
pub async fn refresh(d: &Arc<Daemon>, caller: &Caller, old: &ImageRow) -> ApiResult<bool> {
    let source: rxd_api::image::ImageSource = serde_json::from_str(&old.cache.update_source)
        .map_err(|_| {
            ApiError::BadRequest(
                "The image was not pulled from an image server: nothing to refresh from".into(),
            )
        })?;
    if source.alias.is_empty() {
        // Pulled by fingerprint: that is the version asked for.
        return Ok(false);
    }
    let pulled = pull(
        d,
        caller,
        &Pull {
            server: &source.server,
            protocol: &source.protocol,
            name: &source.alias,
            certificate: &source.certificate,
            secret: "",
            project: "",
            report: &|_| {},
        },
        Purpose::Refresh(old.cache.clone(), old.public),
    )
    .await?;
    if pulled.fingerprint == old.fingerprint {
        return Ok(false);
    }
    let (p, fp) = (old.project.clone(), pulled.fingerprint.clone());
    let new = d
        .db(move |s| s.images_by_prefix(&p, &fp, 1))
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("the refreshed image is not recorded"))?;
    let (old_row, new_row) = (old.clone(), new.clone());
    let shared = d.db(move |s| s.replace_image(&old_row, &new_row)).await?;
    if !shared {
        remove_files(d, &old.fingerprint);
    }
    tracing::info!(project = %old.project, from = %old.fingerprint, to = %new.fingerprint, alias = %source.alias, "image refreshed");
    d.events.lifecycle(
        "image-refreshed",
        &format!("/1.0/images/{}", new.fingerprint),
        &old.project,
        caller,
    );
    Ok(true)
}

/// The image cache's upkeep, as LXD keeps it: cached images unused for
/// `images.remote_cache_expiry` days are removed hourly (and at start-up, by `prune` before the
/// first request is served). LXD's periodic refresh of `auto_update` images is not done yet:
/// `POST /1.0/images/<fp>/refresh` is.
pub async fn upkeep(d: Arc<Daemon>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    // The first refresh check waits a whole interval: a daemon starting is busy enough.
    let mut last_refresh = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(upkeep_tick()) => {}
            _ = shutdown.changed() => return,
        }
        prune(&d).await;
        let hours = rxd_core::config::integer(
            &crate::sync::read(&d.config),
            rxd_core::config::IMAGES_AUTO_UPDATE_INTERVAL,
            6,
        );
        if hours > 0
            && last_refresh.elapsed().as_secs() >= u64::try_from(hours).unwrap_or(0) * hour()
        {
            last_refresh = std::time::Instant::now();
            refresh_all(&d).await;
        }
    }
}

/// Seconds in an hour of the image cache's upkeep. `RXD_TEST_IMAGE_HOUR` (seconds) shortens it
/// for the tests of expiry and refresh, which cannot wait hours; nothing else reads it.
fn hour() -> u64 {
    std::env::var("RXD_TEST_IMAGE_HOUR")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s: &u64| s > 0)
        .unwrap_or(3600)
}

fn upkeep_tick() -> std::time::Duration {
    std::time::Duration::from_secs(hour())
}

/// Refresh every image kept up to date (`auto_update`), as the daemon itself, one at a time:
/// what `POST /1.0/images/<fp>/refresh` does, for each. A server that cannot be reached leaves
/// the image as it is until the next interval.
pub async fn refresh_all(d: &Arc<Daemon>) {
    let Ok(images) = d.db(|s| s.all_images()).await else {
        return;
    };
    for image in images.into_iter().filter(|i| i.cache.auto_update) {
        let caller = Caller::daemon(|id| d.rights(id), &image.project);
        match refresh(d, &caller, &image).await {
            Ok(true) => tracing::info!(
                project = image.project,
                fingerprint = image.fingerprint,
                "image refreshed from its server"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(project = image.project, fingerprint = image.fingerprint, error = %e, "image refresh failed")
            }
        }
    }
}

/// Remove cached images unused for `images.remote_cache_expiry` days (by `last_used_at`, else
/// `uploaded_at`), as LXD does.
pub async fn prune(d: &Arc<Daemon>) {
    let days = rxd_core::config::integer(
        &crate::sync::read(&d.config),
        rxd_core::config::IMAGES_REMOTE_CACHE_EXPIRY,
        10,
    );
    if days <= 0 {
        return;
    }
    let cutoff = now_unix() - days * 86_400;
    let Ok(images) = d.db(|s| s.all_images()).await else {
        return;
    };
    for image in images.into_iter().filter(|i| i.cache.cached) {
        let used = if image.cache.last_used_at > 0 {
            image.cache.last_used_at
        } else {
            image.uploaded_at
        };
        if used >= cutoff {
            continue;
        }
        let (p, fp) = (image.project.clone(), image.fingerprint.clone());
        match d
            .db(move |s| {
                s.delete_image(&p, &fp)?;
                s.image_in_use(&fp)
            })
            .await
        {
            Ok(in_use) => {
                if !in_use {
                    remove_files(d, &image.fingerprint);
                }
                tracing::info!(project = %image.project, fingerprint = %image.fingerprint, days, "cached image unused for images.remote_cache_expiry days removed");
            }
            Err(e) => {
                tracing::warn!(fingerprint = %image.fingerprint, error = %e, "could not remove an expired cached image")
            }
        }
    }
}
