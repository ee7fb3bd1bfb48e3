//! LXD unified image tarballs (`metadata.yaml`, `rootfs/`, optional `templates/`; gzip, xz or
//! uncompressed): the fingerprint, the metadata, and a safe unpacker.
//!
//! Images are uploaded by API clients, so every archive is treated as hostile. The unpacker never
//! follows a symlink while creating anything, refuses paths that leave the image (`..`, absolute
//! paths, links through symlinks), refuses symlinked top-level entries, bounds entries, bytes and
//! metadata size, skips device nodes, maps ownership through the container's id shift (refusing
//! ids outside it), and works in a private temporary directory renamed into place only on
//! success, so a refused or failed import leaves nothing behind.
#![forbid(unsafe_code)]

pub mod copy;
pub mod durable;
pub mod pack;
pub mod remove;
pub mod rootfs;
mod shift;
mod squashfs;
pub mod template;
mod tree;
mod unpack;
pub mod walk;
mod writer;

pub use shift::{reshift, Shifted};
pub use unpack::{
    each_backup_file, read_backup_index, read_metadata, unpack, unpack_backup, unpack_split,
};
pub use writer::Unpacked;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: u64,
    /// Sum of the sizes of all files written (bounds decompression bombs too).
    pub max_total_bytes: u64,
    pub max_metadata_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1_000_000,
            max_total_bytes: 16 << 30,
            max_metadata_bytes: 64 << 10,
        }
    }
}

/// Container id N is written on the host as `base + N`; ids at or above `size` are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdShift {
    pub uid_base: u32,
    pub gid_base: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Template {
    #[serde(default)]
    pub when: Vec<String>,
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub create_only: bool,
}

/// `metadata.yaml`. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageMetadata {
    pub architecture: String,
    pub creation_date: i64,
    #[serde(default)]
    pub expiry_date: Option<i64>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub templates: BTreeMap<String, Template>,
}

#[derive(Debug, Error)]
pub enum ImageError {
    /// A template of the image could not be rendered or written (named in the text).
    #[error("{0}")]
    Template(String),
    #[error("image entry {path:?} is not allowed: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error(
        "image entry {path:?} links to {target:?}, which is not a regular file inside the image"
    )]
    EscapingLink { path: String, target: String },
    #[error("image entry {path:?} would be created through {through:?}, which is not a directory of the image")]
    ThroughNonDirectory { path: String, through: String },
    #[error("the top-level entry {name:?} must not be a link")]
    LinkedTopLevel { name: String },
    #[error("image entry {path:?} conflicts with an earlier entry of another kind")]
    Conflict { path: String },
    #[error("image entry {path:?} has an unsupported type ({kind})")]
    UnsupportedEntry { path: String, kind: String },
    #[error("image entry {path:?} is owned by id {id}, outside the container's id map (0-{max})")]
    IdOutOfMap { path: String, id: u64, max: u32 },
    #[error("the image has more than {0} entries")]
    TooManyEntries(u64),
    /// A tree with more hard-linked files than a copy remembers: copied as separate files they
    /// could multiply its size (one huge file with a million links).
    #[error("the tree has more than {0} hard-linked files, more than a copy keeps linked")]
    TooManyLinks(usize),
    #[error("the image unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("metadata.yaml is larger than {0} bytes")]
    MetadataTooLarge(u64),
    #[error("metadata.yaml is invalid: {0}")]
    BadMetadata(String),
    #[error("the image has no metadata.yaml")]
    MissingMetadata,
    #[error("the image has no rootfs/ directory")]
    MissingRootfs,
    #[error("the root filesystem is not a valid squashfs: {0}")]
    Squashfs(String),
    #[error("the image is not a valid tar archive (gzip, xz, zstd or uncompressed): {0}")]
    Archive(String),
    #[error("{0}")]
    Remap(String),
    #[error("{path}: the directory tree is deeper than {max} levels")]
    TooDeep { path: String, max: usize },
    #[error("{path} changed while it was being worked on")]
    Changed { path: String },
    #[error("the root filesystem changed while it was being remapped ({cause}): {undone} changes were undone{}", if *left > 0 { format!(", {left} could not be (they moved or vanished)") } else { String::new() })]
    ShiftAborted {
        cause: String,
        undone: u64,
        left: u64,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Lowercase hex SHA-256 of a file: an image's fingerprint.
pub fn fingerprint(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Parse metadata.yaml text (already bounded in size).
pub(crate) fn parse_metadata(text: &str) -> Result<ImageMetadata, ImageError> {
    // serde_norway bounds recursion and alias expansion, so a "billion laughs" document is an
    // error rather than a memory bomb (tested below).
    serde_norway::from_str(text).map_err(|e| ImageError::BadMetadata(e.to_string()))
}
