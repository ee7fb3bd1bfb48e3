//! Re-shifting a stopped container's root filesystem from one id map to another (LXD's
//! "Remapping container filesystem").
//!
//! The tree is walked by descriptor ([`crate::walk`]): every owner and mode is changed through a
//! descriptor of the very inode that was looked at, so a name swapped for a symlink to a host
//! file can never redirect a change to it. Every entry is checked before the first change (so an
//! id that does not fit the new map leaves nothing half-shifted); hard-linked inodes are shifted
//! once, and any inode at most once per shift, even if it moves within the tree meanwhile; the
//! set-id bits a chown clears are put back. If the tree changes under the shift so that it cannot
//! finish (an entry whose id does not fit appears, an entry changes between two looks), every
//! change already made is undone and the error says so; entries that merely vanish are counted
//! and reported.
//!
//! Left alone: ids outside the old map (they were never the container's), file capability
//! xattrs (a chown drops them), and set-id bits on FIFOs and device nodes, where they mean
//! nothing.

use crate::walk::{self, Node};
use crate::{IdShift, ImageError};
use std::collections::HashMap;
use std::path::Path;

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

/// What a shift did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shifted {
    /// Inodes whose owner changed.
    pub changed: u64,
    /// Entries that were listed but gone by the time the shift came to them.
    pub vanished: u64,
}

/// The owner an entry gets (`None`: it stays as it is).
fn new_owner(
    node: &Node<'_>,
    from: Option<&IdShift>,
    to: Option<&IdShift>,
) -> Result<Option<(u32, u32)>, ImageError> {
    let (fu, fg) = from.map_or((0, 0), |m| (m.uid_base, m.gid_base));
    let (tu, tg) = to.map_or((0, 0), |m| (m.uid_base, m.gid_base));
    let (old_uid, old_gid) = (node.stat.st_uid, node.stat.st_gid);
    let uid = to_container(old_uid, fu, from).map(|id| (id, to_host(id, tu, to)));
    let gid = to_container(old_gid, fg, from).map(|id| (id, to_host(id, tg, to)));
    let (uid, gid) = match (uid, gid) {
        (None, None) => return Ok(None),
        (Some((id, None)), _) | (_, Some((id, None))) => {
            return Err(ImageError::Remap(format!(
                "{} is owned by container id {id}, outside the new map",
                node.path()
            )))
        }
        (u, g) => (
            u.and_then(|x| x.1).unwrap_or(old_uid),
            g.and_then(|x| x.1).unwrap_or(old_gid),
        ),
    };
    Ok(((uid, gid) != (old_uid, old_gid)).then_some((uid, gid)))
}

/// Owner and mode, through the entry's descriptor; the mode only where a chown cleared set-id
/// bits of a regular file.
fn set_owner(node: &Node<'_>, uid: u32, gid: u32, mode: u32) -> Result<(), ImageError> {
    walk::chown(node, uid, gid)?;
    if mode & 0o6000 != 0 && node.kind() == rustix::fs::FileType::RegularFile {
        let fd = node.reopen()?;
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode & 0o7777))
            .map_err(|e| walk::io_err(&node.path(), e))?;
    }
    Ok(())
}

/// Inodes changed so far, with the owner and mode they had: (device, inode) → (uid, gid, mode).
type Done = HashMap<(u64, u64), (u32, u32, u32)>;

/// Passes over the tree before a shift that keeps finding unshifted entries gives up.
const MAX_PASSES: usize = 4;

/// Shift one entry if it is not shifted yet.
fn apply(
    node: &Node<'_>,
    from: Option<&IdShift>,
    to: Option<&IdShift>,
    done: &mut Done,
) -> Result<(), ImageError> {
    let key = (node.stat.st_dev, node.stat.st_ino);
    if done.contains_key(&key) {
        return Ok(());
    }
    if let Some((uid, gid)) = new_owner(node, from, to)? {
        let mode = node.stat.st_mode & 0o7777;
        // Recorded before the change: an undo then also covers a half-made one.
        done.insert(key, (node.stat.st_uid, node.stat.st_gid, mode));
        set_owner(node, uid, gid, mode)?;
    }
    Ok(())
}

/// Shift the ownership of everything under `root` from map `from` to map `to`.
pub fn reshift(
    root: &Path,
    from: Option<&IdShift>,
    to: Option<&IdShift>,
) -> Result<Shifted, ImageError> {
    let root = walk::open_root(root)?;
    // Every entry first, so an id that does not fit is refused before anything changes.
    walk::walk(&root, &mut |node| new_owner(node, from, to).map(drop))?;
    let mut done = Done::new();
    // A pass shifts what it meets that is not yet shifted. Entries moved meanwhile into a part
    // of the tree the pass had already left are missed by it, so passes repeat until one finds
    // nothing left to shift; a tree that keeps changing is given up on (and undone).
    let mut vanished = 0;
    let mut applied = Err(ImageError::Remap(
        "the tree kept changing while it was being remapped".into(),
    ));
    for _ in 0..MAX_PASSES {
        let before = done.len();
        match walk::walk(&root, &mut |node| apply(node, from, to, &mut done)) {
            Ok(walked) => {
                vanished += walked.vanished;
                if done.len() == before {
                    applied = Ok(());
                    break;
                }
            }
            Err(e) => {
                applied = Err(e);
                break;
            }
        }
    }
    match applied {
        Ok(()) => Ok(Shifted {
            changed: done.len() as u64,
            vanished,
        }),
        Err(cause) => {
            // The tree changed under the shift: put back what was changed.
            let total = done.len() as u64;
            let undo = walk::walk(&root, &mut |node| {
                if let Some((uid, gid, mode)) = done.remove(&(node.stat.st_dev, node.stat.st_ino)) {
                    set_owner(node, uid, gid, mode)?;
                }
                Ok(())
            });
            let left = done.len() as u64;
            Err(ImageError::ShiftAborted {
                cause: match undo {
                    Ok(_) => cause.to_string(),
                    Err(e) => format!("{cause}; undoing: {e}"),
                },
                undone: total - left,
                left,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
        assert_eq!(reshift(&root, Some(&old), Some(&new)).unwrap().changed, 4);
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

    fn owned_tree(files: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("many")).unwrap();
        for i in 0..files {
            let f = root.join(format!("many/f{i:05}"));
            std::fs::write(&f, "x").unwrap();
            std::os::unix::fs::lchown(&f, Some(100_000), Some(100_000)).unwrap();
            std::fs::set_permissions(&f, PermissionsExt::from_mode(0o6777)).unwrap();
        }
        for i in 0..50 {
            let d = root.join(format!("many/d{i:02}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("f"), "x").unwrap();
            for p in [&d, &d.join("f")] {
                std::os::unix::fs::lchown(p, Some(100_000), Some(100_000)).unwrap();
            }
        }
        for p in [&root, &root.join("many")] {
            std::os::unix::fs::lchown(p, Some(100_000), Some(100_000)).unwrap();
        }
        (dir, root)
    }

    const OLD: IdShift = IdShift {
        uid_base: 100_000,
        gid_base: 100_000,
        size: 65536,
    };
    const NEW: IdShift = IdShift {
        uid_base: 300_000,
        gid_base: 300_000,
        size: 65536,
    };

    /// Every entry's owner, by whether it lies in the old or the new map.
    fn owners(root: &Path) -> (usize, usize) {
        let (mut old, mut new) = (0, 0);
        let mut stack = vec![root.to_path_buf()];
        while let Some(p) = stack.pop() {
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
            match m.uid() {
                100_000..=165_535 => old += 1,
                300_000..=365_535 => new += 1,
                _ => {}
            }
        }
        (old, new)
    }

    fn needs_root(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("SKIP {test}: reshift needs root to chown");
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        false
    }

    /// The review's critical finding: while the shift runs, the container (or the files API)
    /// swaps a planned file for a symlink to a host file, and a planned directory for a symlink
    /// to a host directory. Neither host entry may change, and the shift ends consistent.
    #[test]
    fn a_racing_swap_for_symlinks_never_reaches_host_files() {
        if !needs_root("a_racing_swap_for_symlinks_never_reaches_host_files") {
            return;
        }
        for round in 0..3 {
            let (dir, root) = owned_tree(20_000);
            let host = dir.path().join("host");
            std::fs::create_dir(&host).unwrap();
            std::fs::write(host.join("victim"), "secret").unwrap();
            std::fs::write(host.join("f"), "secret").unwrap();
            for f in ["victim", "f"] {
                std::fs::set_permissions(host.join(f), PermissionsExt::from_mode(0o600)).unwrap();
            }
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let racer = {
                let (root, host, stop) = (root.clone(), host.clone(), stop.clone());
                std::thread::spawn(move || {
                    use std::sync::atomic::Ordering;
                    let mut swapped = 0;
                    for i in (0..20_000).rev().step_by(7) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let f = root.join(format!("many/f{i:05}"));
                        if std::fs::remove_file(&f).is_ok() {
                            std::os::unix::fs::symlink(host.join("victim"), &f).unwrap();
                            swapped += 1;
                        }
                        if i % 400 < 7 {
                            let d = root.join(format!("many/d{:02}", (i / 400) % 50));
                            let _ = std::fs::rename(&d, root.join(format!("gone{i}")));
                            let _ = std::os::unix::fs::symlink(&host, &d);
                        }
                    }
                    swapped
                })
            };
            let result = reshift(&root, Some(&OLD), Some(&NEW));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let swapped = racer.join().unwrap();
            for f in ["victim", "f"] {
                assert_eq!(
                    owner(&host.join(f)),
                    (0, 0, 0o600),
                    "round {round}: host file {f} changed ({swapped} swaps, {result:?})"
                );
            }
            let (old, new) = owners(&root);
            match result {
                Ok(_) => assert_eq!(old, 0, "round {round}: left in the old map"),
                Err(ImageError::ShiftAborted { left: 0, .. }) => {
                    assert_eq!(new, 0, "round {round}: undone")
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
    }

    /// Entries that vanish mid-shift are skipped; the rest is shifted whole, never half.
    #[test]
    fn entries_vanishing_mid_shift_leave_a_consistent_tree() {
        if !needs_root("entries_vanishing_mid_shift_leave_a_consistent_tree") {
            return;
        }
        let (_dir, root) = owned_tree(20_000);
        let racer = {
            let root = root.clone();
            std::thread::spawn(move || {
                for i in (0..20_000).rev().step_by(3) {
                    let _ = std::fs::remove_file(root.join(format!("many/f{i:05}")));
                }
                for i in 0..50 {
                    let _ = std::fs::remove_dir_all(root.join(format!("many/d{i:02}")));
                }
            })
        };
        let shifted = reshift(&root, Some(&OLD), Some(&NEW)).unwrap();
        racer.join().unwrap();
        let (old, new) = owners(&root);
        assert_eq!(old, 0, "{shifted:?}");
        assert!(new > 0);
        let s = std::fs::symlink_metadata(root.join("many/f00000")).unwrap();
        assert_eq!(s.permissions().mode() & 0o7777, 0o6777, "set-id bits kept");
    }

    /// The review's deep-tree finding: a chain of directories deeper than the walk goes is
    /// refused before anything changes, on a small stack and without holding its depth in
    /// descriptors or memory.
    #[test]
    fn a_tree_deeper_than_the_walk_goes_is_refused_untouched() {
        if !needs_root("a_tree_deeper_than_the_walk_goes_is_refused_untouched") {
            return;
        }
        use rustix::fs::{Mode, OFlags};
        let (_dir, root) = owned_tree(10);
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        let mut dir = rustix::fs::open(&root, dir_flags, Mode::empty()).unwrap();
        for _ in 0..crate::walk::MAX_DEPTH + 5 {
            rustix::fs::mkdirat(&dir, c"d", Mode::from_raw_mode(0o755)).unwrap();
            dir = rustix::fs::openat(&dir, c"d", dir_flags, Mode::empty()).unwrap();
        }
        drop(dir);
        let r = root.clone();
        let result = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || reshift(&r, Some(&OLD), Some(&NEW)))
            .unwrap()
            .join()
            .unwrap();
        assert!(
            matches!(result, Err(ImageError::TooDeep { .. })),
            "{result:?}"
        );
        assert_eq!(owner(&root).0, 100_000, "nothing changed");
        crate::remove::remove_tree(&root).unwrap();
    }
}
