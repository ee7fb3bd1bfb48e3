//! Talking to the server: the index and products files (bounded JSON), and an image's files,
//! each hashed as it streams in and refused at its first byte past the size the index gives.

use crate::catalog::{Index, Products};
use crate::{Catalog, File, RemoteImage, StreamsError};
use rxd_web::WebClient;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::Duration;

/// The index is small; LXD's own servers' products files are a few MiB.
const MAX_INDEX: u64 = 1 << 20;
const MAX_PRODUCTS: u64 = 64 << 20;
/// Longest wait for a reply's head, or for the next bytes of a body (LXD: 30 s for the head).
const STALL: Duration = Duration::from_secs(60);
/// Redirects followed, each to https only.
const MAX_REDIRECTS: usize = 3;

/// An image server: its https base URL.
pub struct Server {
    base: String,
    web: WebClient,
}

impl Server {
    /// `url` must be https; trailing slashes are dropped.
    pub fn new(url: &str) -> Result<Server, StreamsError> {
        if !url.starts_with("https://") {
            return Err(StreamsError::NotHttps(url.to_owned()));
        }
        Ok(Server {
            base: url.trim_end_matches('/').to_owned(),
            web: WebClient::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn join(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// GET `url` (following https redirects), handing the body to `each`.
    async fn get(
        &self,
        url: &str,
        limit: u64,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<u64, StreamsError> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let (status, headers, size) = self.web.download(&url, limit, STALL, &mut each).await?;
            match status {
                200..=299 => return Ok(size),
                301 | 302 | 303 | 307 | 308 => {
                    let location = headers
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .ok_or_else(|| StreamsError::Status {
                            url: url.clone(),
                            status,
                        })?;
                    let next = rxd_web::resolve(&url, location);
                    if !next.starts_with("https://") {
                        return Err(StreamsError::NotHttps(next));
                    }
                    url = next;
                }
                _ => return Err(StreamsError::Status { url, status }),
            }
        }
        Err(StreamsError::Verify {
            url,
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        limit: u64,
        what: &'static str,
    ) -> Result<T, StreamsError> {
        let url = self.join(path);
        let mut body = Vec::new();
        self.get(&url, limit, |chunk| {
            body.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        serde_json::from_slice(&body).map_err(|e| StreamsError::Format {
            url,
            what,
            reason: e.to_string(),
        })
    }

    /// Every image the server lists.
    pub async fn catalog(&self) -> Result<Catalog, StreamsError> {
        let index: Index = self
            .json("streams/v1/index.json", MAX_INDEX, "index")
            .await?;
        let mut catalog = Catalog::default();
        for path in index.product_paths() {
            let products: Products = self.json(path, MAX_PRODUCTS, "products file").await?;
            catalog.add(products);
        }
        Ok(catalog)
    }

    /// Download `file` into `out`, checking its size and SHA-256; feeds `combined` too, and
    /// `progress` the bytes received so far of the size the index gives.
    async fn fetch(
        &self,
        file: &File,
        out: &mut std::fs::File,
        combined: &mut Sha256,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<(), StreamsError> {
        let url = self.join(&file.path);
        let mut own = Sha256::new();
        let mut received = 0u64;
        let size = self
            .get(&url, file.size, |chunk| {
                own.update(chunk);
                combined.update(chunk);
                received += chunk.len() as u64;
                progress(received, file.size);
                out.write_all(chunk).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| match e {
                StreamsError::Web(rxd_web::WebError::TooLarge { url, limit }) => {
                    StreamsError::Verify {
                        url,
                        reason: format!("larger than the {limit} bytes the index gives"),
                    }
                }
                e => e,
            })?;
        if size != file.size {
            return Err(StreamsError::Verify {
                url,
                reason: format!("{size} bytes, the index gives {}", file.size),
            });
        }
        let got = hex::encode(own.finalize());
        if got != file.sha256 {
            return Err(StreamsError::Verify {
                url,
                reason: format!("SHA-256 {got}, the index gives {}", file.sha256),
            });
        }
        out.sync_all().map_err(|source| StreamsError::Io {
            path: file.path.clone(),
            source,
        })
    }
}

/// What a download produced: verified, its fingerprint the one the index gives.
#[derive(Debug)]
pub struct Downloaded {
    pub fingerprint: String,
    pub size: u64,
}

/// Download `image` into `meta` (and its root filesystem into `rootfs` for a split image):
/// every file's size and SHA-256 as the index gives them, then the fingerprint (the SHA-256 of
/// the metadata then the root filesystem) must be the image's, before anything is unpacked.
/// `progress` hears which file (`metadata`, `rootfs`), the bytes of it received and its size.
pub async fn download_image(
    server: &Server,
    image: &RemoteImage,
    meta: &mut std::fs::File,
    rootfs: Option<&mut std::fs::File>,
    progress: &mut (dyn FnMut(&str, u64, u64) + Send),
) -> Result<Downloaded, StreamsError> {
    let mut combined = Sha256::new();
    server
        .fetch(&image.meta, meta, &mut combined, &mut |n, of| {
            progress("metadata", n, of)
        })
        .await?;
    match (&image.rootfs, rootfs) {
        (Some(file), Some(out)) => {
            server
                .fetch(file, out, &mut combined, &mut |n, of| {
                    progress("rootfs", n, of)
                })
                .await?
        }
        (None, None) => {}
        _ => {
            return Err(StreamsError::Verify {
                url: server.url().to_owned(),
                reason: "a split image needs two files".into(),
            })
        }
    }
    let fingerprint = hex::encode(combined.finalize());
    if fingerprint != image.fingerprint {
        return Err(StreamsError::Verify {
            url: server.join(&image.meta.path),
            reason: format!(
                "the files hash to {fingerprint}, not the fingerprint {} the index gives",
                image.fingerprint
            ),
        });
    }
    Ok(Downloaded {
        fingerprint,
        size: image.size(),
    })
}
