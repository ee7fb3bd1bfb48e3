//! Where an instance's things live under the state directory: the one place that knows.

use crate::state::Daemon;
use std::io;
use std::path::{Path, PathBuf};

pub fn instance_dir(d: &Daemon, name: &str) -> PathBuf {
    d.dir.join("containers").join(name)
}

/// The one mount point every unprivileged container's idmapped root filesystem is mounted on,
/// each in its own helper's mount namespace (never in the host's): an empty directory.
pub fn idmapped_root(d: &Daemon) -> PathBuf {
    d.dir.join("idmapped-root")
}

/// Make [`idmapped_root`] if it is missing (root's, 0700: the mount on it hides its mode).
pub fn make_idmapped_root(d: &Daemon) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .create(idmapped_root(d))
    {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Where an instance's snapshots live.
pub fn snapshots_dir(d: &Daemon, instance: &str) -> PathBuf {
    d.dir.join("snapshots").join(instance)
}

/// The prefix of a directory moved out of the way to be removed (see [`move_aside`]).
pub const ASIDE: &str = ".trash-";

/// Whether a name in `containers/`, `snapshots/` or `snapshots/<instance>/` is rxd's own work in
/// progress rather than an instance or snapshot: every such name starts with a dot, which no
/// instance or snapshot name can.
pub fn in_progress(name: &str) -> bool {
    name.starts_with('.')
}

/// Directories moved out of the way by [`move_aside`] (where each is, where it was), to remove
/// once the rows are gone.
#[must_use]
pub struct Aside(Vec<(PathBuf, PathBuf)>);

impl Aside {
    /// Remove them (it can take a while: a root filesystem of any size and depth; symlinks
    /// inside are not followed).
    pub fn remove(self) -> io::Result<()> {
        for (dir, _) in self.0 {
            match rxd_image::remove::remove_tree(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Put them back where they were (the delete did not happen).
    pub fn restore(self) -> io::Result<()> {
        for (aside, original) in self.0 {
            std::fs::rename(aside, original)?;
        }
        Ok(())
    }
}

/// Move `dirs` (those that exist) out of the way under hidden names in their own parents, one
/// rename each: what is being deleted is never seen half-removed under its name, and the name
/// is free at once. If one rename fails, the ones done are undone.
pub fn move_aside(dirs: &[PathBuf]) -> io::Result<Aside> {
    let mut done = Vec::new();
    for dir in dirs {
        let Some(parent) = dir.parent() else {
            continue;
        };
        let aside = parent.join(format!("{ASIDE}{}", uuid::Uuid::new_v4().simple()));
        match std::fs::rename(dir, &aside) {
            Ok(()) => done.push((aside, dir.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                for (aside, dir) in done.iter().rev() {
                    let _ = std::fs::rename(aside, dir);
                }
                return Err(e);
            }
        }
    }
    Ok(Aside(done))
}

/// An instance's directories (root filesystem, snapshots), for [`move_aside`].
pub fn instance_dirs(d: &Daemon, key: &str) -> Vec<PathBuf> {
    vec![instance_dir(d, key), snapshots_dir(d, key)]
}

/// Move `from` to `to` unless it is there already: a rename that recovery can repeat. `from`
/// missing is fine (moved before, or never made); both present is a conflict.
pub fn move_once(from: &Path, to: &Path) -> io::Result<()> {
    match (from.symlink_metadata(), to.symlink_metadata()) {
        (Err(e), _) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        (Err(e), _) => Err(e),
        (Ok(_), Ok(_)) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", to.display()),
        )),
        (Ok(_), Err(_)) => {
            std::fs::rename(from, to)?;
            rxd_image::durable::sync_dir(to.parent().unwrap_or(Path::new(".")))
        }
    }
}

/// Move an instance's directories (root filesystem, then snapshots) to a new key, repeatably;
/// if the second move fails the first is undone.
pub fn move_instance(d: &Daemon, from: &str, to: &str) -> io::Result<()> {
    move_once(&instance_dir(d, from), &instance_dir(d, to))?;
    if let Err(e) = move_once(&snapshots_dir(d, from), &snapshots_dir(d, to)) {
        let _ = move_once(&instance_dir(d, to), &instance_dir(d, from));
        return Err(e);
    }
    Ok(())
}
