//! Removing a container's or an image's tree, by descriptor and without recursion.
//!
//! `std::fs::remove_dir_all` walks by descriptor too, but recursively: a container can build a
//! chain of directories deep enough to overflow the thread's stack, which aborts the daemon. This
//! removal keeps its own stack of at most [`MAX_DEPTH`] descriptors; a directory found deeper is
//! moved up into the tree's top directory under a fresh name, and removed by a later pass, so any
//! depth is removed with bounded descriptors and memory. Links are never followed.

use crate::walk::MAX_DEPTH;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

struct Level {
    fd: OwnedFd,
    name: CString,
    rest: std::vec::IntoIter<CString>,
}

fn listing(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn gone(e: rustix::io::Errno) -> io::Result<()> {
    if e == rustix::io::Errno::NOENT {
        Ok(())
    } else {
        Err(e.into())
    }
}

/// Remove `path` and everything below it, as `remove_dir_all` does (a missing `path` is
/// `NotFound`; a symlink or file at `path` is removed itself).
pub fn remove_tree(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    let parent = rustix::fs::open(path.parent().unwrap_or(Path::new(".")), DIR, Mode::empty())?;
    let name = CString::new(
        path.file_name()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?
            .as_bytes(),
    )
    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let st = rustix::fs::statat(&parent, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return Ok(rustix::fs::unlinkat(
            &parent,
            name.as_c_str(),
            AtFlags::empty(),
        )?);
    }
    let top = rustix::fs::openat(&parent, name.as_c_str(), DIR, Mode::empty())?;
    let mut moved_names = 0u64;
    // Each pass empties what lies within reach; what lay deeper has been moved up into `top`.
    while empty(&top, &mut moved_names)? {}
    Ok(rustix::fs::unlinkat(
        &parent,
        name.as_c_str(),
        AtFlags::REMOVEDIR,
    )?)
}

/// Remove everything below `top` down to [`MAX_DEPTH`]; returns whether directories deeper than
/// that were moved up into `top` (another pass is then needed).
fn empty(top: &OwnedFd, moved_names: &mut u64) -> io::Result<bool> {
    let mut moved = false;
    let first = top.try_clone()?;
    let rest = listing(&first)?.into_iter();
    let mut stack = vec![Level {
        fd: first,
        name: CString::default(),
        rest,
    }];
    loop {
        let depth = stack.len();
        let Some(level) = stack.last_mut() else {
            break;
        };
        let Some(name) = level.rest.next() else {
            let done = stack.pop().expect("a level is on the stack");
            if let Some(parent) = stack.last() {
                drop(done.fd);
                rustix::fs::unlinkat(&parent.fd, done.name.as_c_str(), AtFlags::REMOVEDIR)
                    .or_else(gone)?;
            }
            continue;
        };
        let st = match rustix::fs::statat(&level.fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) => {
                gone(e)?;
                continue;
            }
        };
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
            rustix::fs::unlinkat(&level.fd, name.as_c_str(), AtFlags::empty()).or_else(gone)?;
            continue;
        }
        if depth >= MAX_DEPTH {
            // Too deep to hold one more descriptor: move it up, to be removed by the next pass.
            loop {
                *moved_names += 1;
                let fresh = CString::new(format!(".rxd-removing-{moved_names}"))
                    .expect("no NUL in a number");
                match rustix::fs::renameat_with(
                    &level.fd,
                    name.as_c_str(),
                    top,
                    fresh.as_c_str(),
                    RenameFlags::NOREPLACE,
                ) {
                    Err(rustix::io::Errno::EXIST) => continue,
                    other => {
                        other?;
                        break;
                    }
                }
            }
            moved = true;
            continue;
        }
        let sub = match rustix::fs::openat(&level.fd, name.as_c_str(), DIR, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                gone(e)?;
                continue;
            }
        };
        let rest = listing(&sub)?.into_iter();
        stack.push(Level {
            fd: sub,
            name,
            rest,
        });
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_any_depth_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "host").unwrap();
        let root = t.path().join("tree");
        std::fs::create_dir(&root).unwrap();
        // Deeper than MAX_DEPTH, built by descriptor (a path this long is beyond PATH_MAX).
        let mut dir = rustix::fs::open(&root, DIR, Mode::empty()).unwrap();
        for i in 0..(2 * MAX_DEPTH + 10) {
            rustix::fs::mkdirat(&dir, c"d", Mode::from_raw_mode(0o755)).unwrap();
            if i % 100 == 0 {
                let f = rustix::fs::openat(
                    &dir,
                    c"f",
                    OFlags::WRONLY | OFlags::CREATE,
                    Mode::from_raw_mode(0o644),
                )
                .unwrap();
                drop(f);
                rustix::fs::symlinkat(
                    CString::new(outside.as_os_str().as_bytes())
                        .unwrap()
                        .as_c_str(),
                    &dir,
                    c"link",
                )
                .unwrap();
            }
            dir = rustix::fs::openat(&dir, c"d", DIR, Mode::empty()).unwrap();
        }
        drop(dir);
        // On a small stack, as the daemon's blocking threads have.
        let r = root.clone();
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || remove_tree(&r).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert!(!root.exists());
        assert!(outside.join("keep").exists(), "a link's target is kept");
        assert_eq!(
            remove_tree(&root).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // A file or a link at the top is removed itself.
        std::os::unix::fs::symlink(&outside, &root).unwrap();
        remove_tree(&root).unwrap();
        assert!(outside.join("keep").exists());
    }
}
