//! Image servers that speak simplestreams (LXD's `--protocol=simplestreams` remotes): read the
//! index and products files, find the image an alias or fingerprint names for this host's
//! architecture as LXD 5.0 does, and download its files verified against the index (every
//! file's own SHA-256 and size, and the combined fingerprint, which LXD does not check). Knows
//! nothing of the daemon, HTTP serving or SQL: the daemon decides who may pull from where.
#![forbid(unsafe_code)]

mod catalog;
mod fetch;

pub use catalog::{Catalog, File, RemoteImage};
pub use fetch::{download_image, Downloaded, Server};

#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("image server {0}: only https servers are supported")]
    NotHttps(String),
    #[error("image server: {0}")]
    Web(#[from] rxd_web::WebError),
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: not a simplestreams {what}: {reason}")]
    Format {
        url: String,
        what: &'static str,
        reason: String,
    },
    #[error("The image {0:?} was not found on the server")]
    NotFound(String),
    #[error("More than one image on the server matches {0:?}")]
    Ambiguous(String),
    #[error("{url}: {reason}")]
    Verify { url: String, reason: String },
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}
