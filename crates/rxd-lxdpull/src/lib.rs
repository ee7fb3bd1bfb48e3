//! Pulling an image from another server speaking LXD's API (`source.protocol: lxd`, what
//! `lxc image copy src:img dst:` asks the target daemon to do). As LXD does, the target asks as
//! an untrusted client: no client certificate, the source's certificate pinned when the client
//! handed one over (else the system's roots), and a private image reached only with the
//! one-time secret the client obtained from the source. Unlike LXD, every byte is hashed and
//! must make the fingerprint asked for before anything is kept.
#![forbid(unsafe_code)]

use rxd_web::{query_escape, WebClient};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Web(#[from] rxd_web::WebError),
    #[error("the image server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("Image not found on the server")]
    NotFound,
    #[error("the image server's answer is not usable: {0}")]
    Protocol(String),
    #[error("the downloaded files hash to {got}, not the fingerprint {want}")]
    Fingerprint { got: String, want: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// An image's server, as a request's `source` names it.
pub struct Source {
    client: WebClient,
    base: String,
    project: String,
    secret: String,
}

/// What the source says of an image.
#[derive(Debug, Clone)]
pub struct RemoteImage {
    pub fingerprint: String,
    pub filename: String,
    pub size: u64,
    pub properties: std::collections::BTreeMap<String, String>,
}

/// What was downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes of the image's files (the metadata tarball and root filesystem together).
    pub size: u64,
    /// A split image (the root filesystem went to the second file).
    pub split: bool,
}

/// Answers to the JSON requests are small.
const TIMEOUT: Duration = Duration::from_secs(30);
/// A download may go on as long as it moves.
const STALL: Duration = Duration::from_secs(60);

fn is_fingerprint(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Source {
    /// `server` must be `https`; `certificate` is the source's certificate (PEM) to pin, or
    /// empty for the system's roots.
    pub fn new(
        server: &str,
        certificate: &str,
        project: &str,
        secret: &str,
    ) -> Result<Source, PullError> {
        if !server.starts_with("https://") {
            return Err(PullError::Protocol(format!(
                "{server:?}: image servers are reached over https only"
            )));
        }
        Ok(Source {
            client: WebClient::pinned(certificate)?,
            base: server.trim_end_matches('/').to_owned(),
            project: if project.is_empty() {
                "default".into()
            } else {
                project.to_owned()
            },
            secret: secret.to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        let mut url = format!(
            "{}{path}?project={}",
            self.base,
            query_escape(&self.project)
        );
        if !self.secret.is_empty() {
            url.push_str("&secret=");
            url.push_str(&query_escape(&self.secret));
        }
        url
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value, PullError> {
        let reply = self
            .client
            .request(http::Method::GET, &self.url(path), &[], None, TIMEOUT)
            .await?;
        let envelope: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|e| PullError::Protocol(format!("not JSON: {e}")))?;
        match reply.status {
            200 => Ok(envelope["metadata"].clone()),
            404 => Err(PullError::NotFound),
            status => Err(PullError::Status {
                status,
                // The server's own words, bounded and printable: never its raw body.
                message: envelope["error"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect(),
            }),
        }
    }

    /// The image `name` names on the source: a full fingerprint, else (without a secret: a
    /// public image) an alias or a fingerprint prefix.
    pub async fn resolve(&self, name: &str) -> Result<RemoteImage, PullError> {
        let mut fingerprint = name.to_owned();
        if !is_fingerprint(name) && self.secret.is_empty() {
            if let Ok(alias) = self
                .get_json(&format!("/1.0/images/aliases/{}", query_escape(name)))
                .await
            {
                if let Some(target) = alias["target"].as_str() {
                    fingerprint = target.to_owned();
                }
            }
        }
        let image: rxd_api::image::Image = serde_json::from_value(
            self.get_json(&format!("/1.0/images/{}", query_escape(&fingerprint)))
                .await?,
        )
        .map_err(|e| PullError::Protocol(e.to_string()))?;
        if !is_fingerprint(&image.fingerprint) || !image.fingerprint.starts_with(&fingerprint) {
            return Err(PullError::Protocol(format!(
                "asked for {fingerprint:?}, the server described {:?}",
                image.fingerprint
            )));
        }
        Ok(RemoteImage {
            fingerprint: image.fingerprint,
            filename: image.filename,
            size: u64::try_from(image.size).unwrap_or(0),
            properties: image.properties,
        })
    }

    /// Download `image`'s files (`GET …/export`): a unified image into `meta`, a split one
    /// (multipart: `metadata` then `rootfs`) into `meta` and `rootfs`; `raw` holds the reply
    /// meanwhile. At most `limit` bytes; the files must hash to the image's fingerprint.
    /// `progress` hears the bytes received so far and the size the server described.
    pub async fn download(
        &self,
        image: &RemoteImage,
        raw: &Path,
        meta: &Path,
        rootfs: &Path,
        limit: u64,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<Downloaded, PullError> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(raw)?);
        let mut hash = Sha256::new();
        let mut received = 0u64;
        let (status, headers, size) = self
            .client
            .download(
                &self.url(&format!("/1.0/images/{}/export", image.fingerprint)),
                limit,
                STALL,
                |chunk| {
                    hash.update(chunk);
                    received += chunk.len() as u64;
                    progress(received, image.size);
                    out.write_all(chunk).map_err(|e| e.to_string())
                },
            )
            .await?;
        out.flush()?;
        drop(out);
        match status {
            200 => {}
            404 => return Err(PullError::NotFound),
            status => {
                return Err(PullError::Status {
                    status,
                    message: "the export was refused".into(),
                })
            }
        }
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let boundary = content_type
            .strip_prefix("multipart/form-data")
            .and_then(|rest| rest.split("boundary=").nth(1))
            .map(|b| b.trim_matches('"').to_owned());
        let (got, size, split) = match boundary {
            None => {
                std::fs::rename(raw, meta)?;
                (hex::encode(hash.finalize()), size, false)
            }
            Some(boundary) => {
                let (got, size) = split_parts(raw, &boundary, meta, rootfs).await?;
                let _ = std::fs::remove_file(raw);
                (got, size, true)
            }
        };
        if got != image.fingerprint {
            return Err(PullError::Fingerprint {
                got,
                want: image.fingerprint.clone(),
            });
        }
        Ok(Downloaded { size, split })
    }
}

/// Write the `metadata` and `rootfs` parts of the multipart body in `raw` to `meta` and
/// `rootfs`; returns the SHA-256 of both in that order and their size.
async fn split_parts(
    raw: &Path,
    boundary: &str,
    meta: &Path,
    rootfs: &Path,
) -> Result<(String, u64), PullError> {
    let file = tokio::fs::File::open(raw).await?;
    let stream = tokio_util::io::ReaderStream::new(file);
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut hash = Sha256::new();
    let mut size = 0u64;
    for (name, path) in [("metadata", meta), ("rootfs", rootfs)] {
        let mut field = parts
            .next_field()
            .await
            .map_err(|e| PullError::Protocol(e.to_string()))?
            .ok_or_else(|| PullError::Protocol(format!("no {name} part")))?;
        if field.name() != Some(name) {
            return Err(PullError::Protocol(format!(
                "expected the {name} part, got {:?}",
                field.name()
            )));
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| PullError::Protocol(e.to_string()))?
        {
            hash.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk)?;
        }
        out.flush()?;
    }
    Ok((hex::encode(hash.finalize()), size))
}
