//! The state database. Every SQL statement in rxd lives in this crate. Calls block: the daemon
//! runs them off its async executor.
#![forbid(unsafe_code)]

mod backups;
mod bakery;
mod certificates;
mod config;
mod images;
mod instances;
mod intents;
mod migrations;
mod networks;
mod profiles;
mod projects;
mod snapshots;
mod storage;
mod volumes;

pub use backups::BackupRow;
pub use bakery::RootKeyRow;
pub use certificates::{CertificateRow, TokenRow};
pub use images::{AliasRow, ImageCache, ImageRow};
pub use instances::{Allocator, InstanceRow, Remap, TakenBlock};
pub use intents::IntentRow;
pub use networks::{NetworkRow, NicRow};
pub use profiles::ProfileRow;
pub use projects::{GrantRow, ProjectRow};
pub use snapshots::SnapshotRow;
pub use storage::StoragePoolRow;
pub use volumes::{VolumeRow, VolumeSnapshotRow};

use rusqlite::Connection;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("database schema version {found} is newer than this rxd understands ({known}); use a newer rxd")]
    TooNew { found: i64, known: i64 },
    #[error("{kind} already exists")]
    AlreadyExists { kind: &'static str },
    #[error("{kind} has expired")]
    Expired { kind: &'static str },
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    /// Renaming or deleting a project that still holds instances or images.
    #[error("{kind} is not empty")]
    NotEmpty { kind: &'static str },
    /// Deleting a profile an instance still uses.
    #[error("{kind} is in use")]
    InUse { kind: &'static str },
    /// What the caller checked changed before the write (the write did not happen).
    #[error("{kind} changed while it was being checked")]
    Changed { kind: &'static str },
    /// A project would hold more instances than its limit allows (the write did not happen).
    #[error("Project {project:?} reached its limit of {limit} instances")]
    Full { project: String, limit: u64 },
    #[error("database lock poisoned")]
    Poisoned,
}

pub struct Store {
    conn: Mutex<Connection>,
}

/// A statement's constraint violation (a unique name taken) as `AlreadyExists` of `kind`;
/// any other error as it is.
fn conflict(kind: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::AlreadyExists { kind }
        }
        _ => e.into(),
    }
}

impl Store {
    /// Open (creating if needed, mode 0600) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk (the WAL synced) before the call that made it answers, so
        // acknowledged work survives a power cut too, not only a killed daemon.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()?
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}
