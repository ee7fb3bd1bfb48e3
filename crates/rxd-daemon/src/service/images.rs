//! Images below HTTP: where they live, resolving a name or fingerprint prefix to one, and the
//! budget every unpack runs within.

use crate::error::{ApiError, ApiResult};
use crate::state::Daemon;
use rxd_store::ImageRow;
use std::path::PathBuf;

pub const NOT_FOUND: &str = "Image not found";

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
                let used = d.db(move |s| s.disk_usage(&p)).await?;
                Some((limit, u64::try_from(used).unwrap_or(0)))
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
