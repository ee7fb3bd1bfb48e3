//! The state directory: created 0711, owned by root, its modes re-asserted at every start, and
//! locked so that a second daemon on the same directory refuses to start.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists and is not a directory")]
    NotADirectory(PathBuf),
    #[error("another rxd is already running on {0} (it holds {0}/rxd.lock)")]
    Locked(PathBuf),
}

/// The exclusive lock on the state directory, held for the daemon's life.
pub struct StateLock {
    _lock: Flock<File>,
}

pub fn prepare(dir: &Path) -> Result<StateLock, StateDirError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateDirError::Io { path, source }
    };
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(StateDirError::NotADirectory(dir.into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(dir)
                .map_err(io(dir))?;
        }
        Err(e) => return Err(io(dir)(e)),
    }
    // Re-assert ownership and mode: others may traverse (0711) but not list or write.
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    if meta.uid() != 0 && nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(dir, Some(0), Some(0)).map_err(io(dir))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(io(dir))?;

    let lock_path = dir.join("rxd.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| StateDirError::Locked(dir.into()))?;
    // Our pid, for `rxd shutdown`, which trusts it only while the lock is held.
    {
        use std::io::Write;
        let mut f: &File = &lock;
        f.set_len(0)
            .and_then(|()| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(io(&lock_path))?;
    }

    // Key and database files keep tight modes even if someone loosened them.
    for (name, mode) in [
        ("server.key", 0o600),
        ("server.crt", 0o644),
        ("rxd.db", 0o600),
    ] {
        let p = dir.join(name);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).map_err(io(&p))?;
        }
    }
    Ok(StateLock { _lock: lock })
}

fn libc_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}
