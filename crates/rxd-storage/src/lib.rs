//! The host side of rxd's storage pools, drivers `dir` and `btrfs`, laid out as LXD 5.0 lays
//! them out: a pool is mounted at `<state>/storage-pools/<name>` and holds `images/`,
//! `containers/`, `containers-snapshots/`, `custom/` and `custom-snapshots/`; a volume is a
//! directory there (`dir`) or a subvolume (`btrfs`).
//!
//! What a caller gets: [`prepare_config`] resolves a new pool's config as `POST
//! /1.0/storage-pools` does (defaults filled, keys checked); [`Pool`] creates, mounts, unmounts
//! and deletes the pool, reports its space, and creates, snapshots, deletes and limits its
//! volumes. This crate knows plain names and paths only: which project, instance or image a
//! volume belongs to, who may touch it and what is recorded about it are the caller's.
//!
//! Tools: `btrfs` (subvolumes, properties, quotas), `mkfs.btrfs` (formatting a loop file) and
//! `losetup` (attaching a loop file) are spawned with a fixed argv, no shell, an empty
//! environment but for a fixed `PATH`, and their stderr bounded into the error (`tool`).
//! Mounting and unmounting are system calls (rustix); tree copies and removals on `dir` pools
//! are rxd-image's descriptor walks.

#![forbid(unsafe_code)]

mod btrfs;
mod config;
mod mounts;
mod pool;
mod tool;

pub use btrfs::{delete_tree as delete_subvolume_tree, has_nested as has_nested_subvolumes};
pub use config::{loop_size_default, parse_size, prepare_config, DEFAULT_BTRFS_MOUNT_OPTIONS};
pub use mounts::{is_btrfs, is_subvolume, loop_devices_of, BTRFS_SUPER_MAGIC};
pub use pool::{Pool, Resources, Usage, LAYOUT};

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A storage driver rxd has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    Dir,
    Btrfs,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Dir => "dir",
            DriverKind::Btrfs => "btrfs",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DriverKind {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<DriverKind> {
        match s {
            "dir" => Ok(DriverKind::Dir),
            "btrfs" => Ok(DriverKind::Btrfs),
            _ => Err(StorageError::UnsupportedDriver(s.to_owned())),
        }
    }
}

/// What a volume holds; it decides the directory the volume lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeType {
    /// An unpacked image, `images/<fingerprint>`; it has no snapshots.
    Image,
    /// An instance's root, `containers/<name>`.
    Container,
    /// A custom volume, `custom/<name>`.
    Custom,
}

impl VolumeType {
    /// The API's name (`/1.0/storage-pools/<p>/volumes/<type>/...`).
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeType::Image => "image",
            VolumeType::Container => "container",
            VolumeType::Custom => "custom",
        }
    }

    /// The pool directory holding volumes of this type.
    pub fn dir(self) -> &'static str {
        match self {
            VolumeType::Image => "images",
            VolumeType::Container => "containers",
            VolumeType::Custom => "custom",
        }
    }

    /// The pool directory holding this type's snapshots (`None`: images have none).
    pub fn snapshots_dir(self) -> Option<&'static str> {
        match self {
            VolumeType::Image => None,
            VolumeType::Container => Some("containers-snapshots"),
            VolumeType::Custom => Some("custom-snapshots"),
        }
    }
}

impl fmt::Display for VolumeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VolumeType {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<VolumeType> {
        match s {
            "image" => Ok(VolumeType::Image),
            "container" => Ok(VolumeType::Container),
            "custom" => Ok(VolumeType::Custom),
            _ => Err(StorageError::InvalidName {
                what: "volume type",
                name: s.to_owned(),
                reason: "expected image, container or custom",
            }),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that goes wrong in this crate. Messages a client sees for a refused config follow
/// LXD 5.0's wording; the others name the path and what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("Storage driver {0:?} isn't supported by rxd")]
    UnsupportedDriver(String),
    /// LXD's wording for a key no rule knows.
    #[error("Invalid option {0:?}")]
    InvalidOption(String),
    /// LXD's wording for a value its rule refuses.
    #[error("Invalid value for option {key:?}: {reason}")]
    InvalidValue { key: String, reason: String },
    #[error("Invalid size {0:?}: expected a whole number of bytes with an optional unit (kB MB GB TB PB EB for powers of 1000, KiB MiB GiB TiB PiB EiB for powers of 1024)")]
    InvalidSize(String),
    #[error("Invalid {what} {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    /// The pool's `source` cannot be used (what is wrong is in `reason`).
    #[error("Invalid source {path:?} for storage pool {pool:?}: {reason}")]
    Source {
        pool: String,
        path: PathBuf,
        reason: String,
    },
    /// A volume operation was handed a path that is not a volume of this pool.
    #[error("{path:?} is not a volume path of storage pool {pool:?} (expected <pool>/<type dir>/<name>, or <pool>/<type>-snapshots/<volume>/<snapshot>)")]
    NotAVolume { pool: String, path: PathBuf },
    #[error("Storage pool {pool:?} still has volumes: {}{}", .volumes.join(", "), if *.more > 0 { format!(" and {} more", .more) } else { String::new() })]
    InUse {
        pool: String,
        volumes: Vec<String>,
        more: usize,
    },
    #[error("Quotas aren't supported by the dir driver")]
    QuotaUnsupported,
    #[error("Volume {path:?} already exists")]
    VolumeExists { path: PathBuf },
    #[error("{path:?} is not a btrfs subvolume")]
    NotSubvolume { path: PathBuf },
    #[error("Storage pool {pool:?} is not mounted at {mount_point:?}")]
    NotMounted { pool: String, mount_point: PathBuf },
    #[error("{mount_point:?} is already mounted from {found}, not from storage pool {pool:?}'s {expected:?}; unmount it first")]
    MountedElsewhere {
        pool: String,
        mount_point: PathBuf,
        found: String,
        expected: PathBuf,
    },
    /// A system call or file operation failed: `action` says what was being done to `path`.
    #[error("{action} {path:?}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A spawned tool could not be started.
    #[error("could not run {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    /// A spawned tool failed; `stderr` is the start of what it printed (at most 4 KiB).
    #[error("`{command}` failed ({status}): {stderr}")]
    Tool {
        command: String,
        status: String,
        stderr: String,
    },
    /// A tool's output was not what this crate understands.
    #[error("`{command}` printed something unexpected: {detail}")]
    ToolOutput { command: String, detail: String },
    /// Copying or removing a tree on a `dir` pool failed.
    #[error("copying {src:?} to {dst:?}: {source}")]
    Copy {
        src: PathBuf,
        dst: PathBuf,
        source: rxd_image::ImageError,
    },
}

impl StorageError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn errno(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(rustix::io::Errno) -> StorageError {
        let path = path.into();
        move |e| StorageError::Io {
            action,
            path,
            source: e.into(),
        }
    }
}
