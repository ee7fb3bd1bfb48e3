//! Where an instance's things live under the state directory: the one place that knows.

use crate::state::Daemon;
use std::io;
use std::path::{Path, PathBuf};

/// Where storage pools are mounted (each at its name; a pool on a host directory or a loop
/// file is mounted there too).
pub fn pools_dir(d: &Daemon) -> PathBuf {
    d.dir.join("storage-pools")
}

/// Where a pool's volumes are.
pub fn pool_dir(d: &Daemon, pool: &str) -> PathBuf {
    pools_dir(d).join(pool)
}

/// An instance's directory (its root filesystem, the image's metadata and templates), in the
/// pool it lives in.
pub fn instance_dir(d: &Daemon, pool: &str, name: &str) -> PathBuf {
    pool_dir(d, pool).join("containers").join(name)
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
pub fn snapshots_dir(d: &Daemon, pool: &str, instance: &str) -> PathBuf {
    pool_dir(d, pool)
        .join("containers-snapshots")
        .join(instance)
}

/// The prefix of a directory moved out of the way to be removed (see [`move_aside`]).
pub const ASIDE: &str = ".trash-";

/// Whether a name in `containers/`, `containers-snapshots/` or `containers-snapshots/<instance>/` is rxd's own work in
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
            match remove_tree(&dir) {
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
pub fn instance_dirs(d: &Daemon, pool: &str, key: &str) -> Vec<PathBuf> {
    vec![instance_dir(d, pool, key), snapshots_dir(d, pool, key)]
}

/// Remove a tree of rxd's (an instance's or snapshot's directory, a hidden work-in-progress
/// one, or a directory of them): on btrfs the root filesystems in it are subvolumes, deleted
/// as such (with any a container made inside, read-only snapshots included) before the rest
/// is removed by descriptor.
pub fn remove_tree(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    if rxd_storage::is_btrfs(path).unwrap_or(false) {
        for tree in subvolume_candidates(path) {
            if rxd_storage::is_subvolume(&tree).unwrap_or(false) {
                rxd_storage::delete_subvolume_tree(&tree).map_err(io::Error::other)?;
            }
        }
    }
    rxd_image::remove::remove_tree(path)
}

/// Copy an image's metadata and templates (`metadata.yaml`, `templates/`) from the image or
/// instance directory `from` to `to`; entries copied.
/// Neither is followed when it is a link (a received stream or a container may have made one),
/// and `metadata.yaml` is read only as a regular file of at most [`MAX_METADATA`] bytes.
pub fn copy_image_extras(from: &Path, to: &Path) -> Result<u64, rxd_image::ImageError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| rxd_image::ImageError::Io { path, source }
    };
    let mut n = 0;
    let templates = from.join("templates");
    if std::fs::symlink_metadata(&templates).is_ok_and(|m| m.is_dir()) {
        n += rxd_image::copy::copy_tree(&templates, &to.join("templates"))?;
    }
    let metadata = from.join("metadata.yaml");
    if std::fs::symlink_metadata(&metadata).is_ok_and(|m| m.is_file()) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&metadata)
            .map_err(io(&metadata))?;
        if !file.metadata().map_err(io(&metadata))?.is_file() {
            return Ok(n);
        }
        let mut text = Vec::new();
        file.take(MAX_METADATA + 1)
            .read_to_end(&mut text)
            .map_err(io(&metadata))?;
        if text.len() as u64 > MAX_METADATA {
            return Err(rxd_image::ImageError::MetadataTooLarge(MAX_METADATA));
        }
        std::fs::write(to.join("metadata.yaml"), text).map_err(io(to))?;
        n += 1;
    }
    Ok(n)
}

/// The image volume `from`'s `metadata.yaml` and templates into the new instance directory
/// `to` on the same btrfs filesystem, with nothing left to write out but their entries, which
/// the caller's next transaction commit carries: `metadata.yaml` alone is cloned (`FICLONE`:
/// its extents are already on disk, the clone only refers to them); templates, or a
/// `metadata.yaml` that cannot be cloned, are copied as [`copy_image_extras`] copies them and
/// written out (`syncfs`).
pub fn place_image_extras(from: &Path, to: &Path) -> Result<(), rxd_image::ImageError> {
    let templates = std::fs::symlink_metadata(from.join("templates")).is_ok_and(|m| m.is_dir());
    if !templates && clone_metadata(from, to).is_ok() {
        return Ok(());
    }
    let _ = std::fs::remove_file(to.join("metadata.yaml"));
    copy_image_extras(from, to)?;
    rxd_image::durable::sync_tree(to).map_err(|source| rxd_image::ImageError::Io {
        path: to.display().to_string(),
        source,
    })
}

/// `from/metadata.yaml`, a regular file of at most [`MAX_METADATA`] bytes (its last component
/// not followed), cloned to the new file `to/metadata.yaml`; none there, nothing made.
fn clone_metadata(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{FileType, Mode, OFlags};
    let source = match rustix::fs::open(
        from.join("metadata.yaml"),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&source)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || u64::try_from(st.st_size).unwrap_or(u64::MAX) > MAX_METADATA
    {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let copy = rustix::fs::open(
        to.join("metadata.yaml"),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    Ok(rustix::fs::ioctl_ficlone(&copy, &source)?)
}

/// The most of a `metadata.yaml` copied with an instance.
pub const MAX_METADATA: u64 = 1 << 20;

/// Where rxd's subvolumes can be in `path`: itself, `rootfs` (an instance's or an image's
/// directory), `*/rootfs` (a snapshots directory) and `*` (an optimized backup's work). A root filesystem is never looked into:
/// what is inside is the container's, and `btrfs` deletes nested subvolumes itself.
fn subvolume_candidates(path: &Path) -> Vec<PathBuf> {
    let mut found = vec![path.to_path_buf(), path.join("rootfs")];
    if path.file_name().is_some_and(|n| n == "rootfs") {
        return vec![path.to_path_buf()];
    }
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            // Directories of rxd's (snapshot names) only: never a link, never a root filesystem.
            if e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "rootfs" {
                // Itself, when it is one (an optimized backup's work: a volume root, a
                // received stream), and the root filesystem of a snapshot directory.
                found.push(e.path());
                found.push(e.path().join("rootfs"));
            }
        }
    }
    found
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
pub fn move_instance(d: &Daemon, pool: &str, from: &str, to: &str) -> io::Result<()> {
    move_once(&instance_dir(d, pool, from), &instance_dir(d, pool, to))?;
    if let Err(e) = move_once(&snapshots_dir(d, pool, from), &snapshots_dir(d, pool, to)) {
        let _ = move_once(&instance_dir(d, pool, to), &instance_dir(d, pool, from));
        return Err(e);
    }
    Ok(())
}

/// Exchange two directories atomically: at every moment each name holds one whole tree.
pub fn exchange(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE)?;
    rxd_image::durable::sync_dir(b.parent().unwrap_or(std::path::Path::new(".")))
}

/// Where instance backups are kept, one file each (`service::backups`).
pub fn backups_dir(d: &Daemon) -> PathBuf {
    d.dir.join("backups")
}
