//! Re-shifting a stopped container's root filesystem from one id map to another (LXD's
//! "Remapping container filesystem"). The tree is walked without following symlinks, every
//! change is checked before the first one is made (so a refusal leaves nothing half-shifted),
//! hard-linked inodes are shifted once, and the mode is re-applied after each chown, because a
//! chown clears setuid and setgid bits.
//!
//! Left alone: ids outside the old map (they were never the container's), and file capability
//! xattrs, which a chown drops.

use crate::{IdShift, ImageError};
use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Container id of a host id under `map` (`None`: no map, ids are equal); `None` if outside.
fn to_container(host: u32, base: u32, map: Option<&IdShift>) -> Option<u32> {
    match map {
        None => Some(host),
        Some(m) if host >= base && host - base < m.size => Some(host - base),
        Some(_) => None,
    }
}

fn to_host(id: u32, base: u32, map: Option<&IdShift>) -> Option<u32> {
    match map {
        None => Some(id),
        Some(m) if id < m.size => Some(base + id),
        Some(_) => None,
    }
}

struct Change {
    path: PathBuf,
    uid: u32,
    gid: u32,
    mode: Option<u32>,
}

/// Plan every change, walking `root` depth-first without following symlinks.
fn plan(
    root: &Path,
    from: Option<&IdShift>,
    to: Option<&IdShift>,
) -> Result<Vec<Change>, ImageError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| ImageError::Io { path, source }
    };
    let (fu, fg) = from.map_or((0, 0), |m| (m.uid_base, m.gid_base));
    let (tu, tg) = to.map_or((0, 0), |m| (m.uid_base, m.gid_base));
    let mut changes = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(io(&path))? {
                stack.push(entry.map_err(io(&path))?.path());
            }
        }
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let uid = to_container(meta.uid(), fu, from).map(|id| (id, to_host(id, tu, to)));
        let gid = to_container(meta.gid(), fg, from).map(|id| (id, to_host(id, tg, to)));
        let (uid, gid) = match (uid, gid) {
            (None, None) => continue,
            (Some((id, None)), _) | (_, Some((id, None))) => {
                return Err(ImageError::Archive(format!(
                    "{} is owned by container id {id}, outside the new map",
                    path.display()
                )))
            }
            (u, g) => (
                u.and_then(|x| x.1).unwrap_or(meta.uid()),
                g.and_then(|x| x.1).unwrap_or(meta.gid()),
            ),
        };
        if (uid, gid) == (meta.uid(), meta.gid()) {
            continue;
        }
        let mode = (!meta.file_type().is_symlink()).then(|| meta.permissions().mode());
        changes.push(Change {
            path,
            uid,
            gid,
            mode,
        });
    }
    Ok(changes)
}

/// Shift the ownership of everything under `root` from map `from` to map `to`; returns how many
/// entries changed.
pub fn reshift(
    root: &Path,
    from: Option<&IdShift>,
    to: Option<&IdShift>,
) -> Result<usize, ImageError> {
    let changes = plan(root, from, to)?;
    for c in &changes {
        let io = |source| ImageError::Io {
            path: c.path.display().to_string(),
            source,
        };
        std::os::unix::fs::lchown(&c.path, Some(c.uid), Some(c.gid)).map_err(io)?;
        if let Some(mode) = c.mode {
            std::fs::set_permissions(&c.path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
    }
    Ok(changes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(p: &Path) -> (u32, u32, u32) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777)
    }

    #[test]
    fn shifts_between_maps_keeping_setuid_and_not_following_links() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: reshift needs root to chown");
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(&outside, "host file").unwrap();
        std::fs::write(root.join("bin/su"), "x").unwrap();
        std::fs::hard_link(root.join("bin/su"), root.join("bin/su2")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let old = IdShift {
            uid_base: 100_000,
            gid_base: 200_000,
            size: 65536,
        };
        let new = IdShift {
            uid_base: 100_010,
            gid_base: 200_010,
            size: 65536,
        };
        for p in [&root, &root.join("bin")] {
            std::os::unix::fs::lchown(p, Some(100_000), Some(200_000)).unwrap();
        }
        std::os::unix::fs::lchown(root.join("bin/su"), Some(100_000), Some(200_005)).unwrap();
        std::fs::set_permissions(root.join("bin/su"), PermissionsExt::from_mode(0o4755)).unwrap();
        std::os::unix::fs::lchown(root.join("escape"), Some(100_001), Some(200_001)).unwrap();

        // Overlapping maps: the hard link must not be shifted twice.
        assert_eq!(reshift(&root, Some(&old), Some(&new)).unwrap(), 4);
        assert_eq!(owner(&root), (100_010, 200_010, 0o755));
        assert_eq!(owner(&root.join("bin/su")), (100_010, 200_015, 0o4755));
        assert_eq!(owner(&root.join("escape")).0, 100_011);
        assert_eq!(owner(&outside).0, 0, "a symlink's target is not followed");

        // To privileged (no map) and back.
        reshift(&root, Some(&new), None).unwrap();
        assert_eq!(owner(&root.join("bin/su")), (0, 5, 0o4755));
        reshift(&root, None, Some(&old)).unwrap();
        assert_eq!(owner(&root.join("bin/su")), (100_000, 200_005, 0o4755));

        // An id that does not fit the new map: refused before anything changes.
        let small = IdShift {
            uid_base: 300_000,
            gid_base: 300_000,
            size: 4,
        };
        assert!(reshift(&root, Some(&old), Some(&small)).is_err());
        assert_eq!(owner(&root.join("bin/su")), (100_000, 200_005, 0o4755));
        assert_eq!(owner(&root).0, 100_000);
    }
}
