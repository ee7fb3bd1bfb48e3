//! Walking a tree on the host by descriptor, never by path.
//!
//! A container's root filesystem is written by the container (and by the files API), so any path
//! into it may turn into a symlink to a host file between two system calls. This walk holds a
//! descriptor for every directory it is in and opens each entry relative to its parent's
//! descriptor with `O_PATH | O_NOFOLLOW`: what it hands to its visitor is the very inode it
//! opened, whatever happens to the names meanwhile. A symlink is handed over as the link itself;
//! a directory is entered through the descriptor it was opened as (`openat(fd, ".")`), so a
//! directory swapped for a link mid-walk is never followed. Entries that vanish are reported,
//! not errors. Descriptors held at once: one per directory level.

use crate::ImageError;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One entry met by the walk.
pub struct Node<'a> {
    /// An `O_PATH` descriptor of the entry itself (a symlink is not followed).
    pub fd: &'a OwnedFd,
    pub stat: &'a rustix::fs::Stat,
    /// Its path below the root, for messages only (never used to reach it).
    pub path: &'a str,
}

impl Node<'_> {
    pub fn kind(&self) -> rustix::fs::FileType {
        rustix::fs::FileType::from_raw_mode(self.stat.st_mode)
    }

    /// The entry opened for reading, checked to be the same inode: for `fchmod`, which an
    /// `O_PATH` descriptor does not allow. Only for regular files and directories.
    pub fn reopen(&self) -> Result<OwnedFd, ImageError> {
        // Opening "." relative to a directory's own descriptor reaches that very inode. A regular
        // file is re-opened through its descriptor's magic link in /proc/self/fd, which names the
        // inode held, not a path in the tree (libpathrs does the same).
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match self.kind() {
            rustix::fs::FileType::Directory => {
                rustix::fs::openat(self.fd, c".", flags | OFlags::DIRECTORY, Mode::empty())
            }
            rustix::fs::FileType::RegularFile => {
                let proc_path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
                rustix::fs::open(proc_path.as_str(), flags | OFlags::NONBLOCK, Mode::empty())
            }
            _ => return Err(io_err(self.path, rustix::io::Errno::INVAL)),
        }
        .map_err(|e| io_err(self.path, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_err(self.path, e))?;
        if (st.st_dev, st.st_ino) != (self.stat.st_dev, self.stat.st_ino) {
            return Err(ImageError::Changed {
                path: self.path.to_owned(),
            });
        }
        Ok(fd)
    }
}

pub(crate) fn io_err(path: &str, e: rustix::io::Errno) -> ImageError {
    ImageError::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// What the walk counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    pub entries: u64,
    /// Names listed in a directory that were gone when the walk came to open them.
    pub vanished: u64,
}

/// Open the root of a tree: a real directory, not a link.
pub fn open_root(root: &Path) -> Result<OwnedFd, ImageError> {
    rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(&root.display().to_string(), e))
}

fn names(dir: BorrowedFd<'_>, path: &str) -> Result<Vec<CString>, ImageError> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(|e| io_err(path, e))? {
        let entry = entry.map_err(|e| io_err(path, e))?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// Visit the root and every entry below it, depth first, parents before children.
pub fn walk(
    root: &OwnedFd,
    visit: &mut dyn FnMut(&Node<'_>) -> Result<(), ImageError>,
) -> Result<Walked, ImageError> {
    let mut walked = Walked::default();
    let stat = rustix::fs::fstat(root).map_err(|e| io_err("/", e))?;
    visit(&Node {
        fd: root,
        stat: &stat,
        path: "/",
    })?;
    walked.entries += 1;
    let open_dir = |fd: &OwnedFd, path: &str| {
        rustix::fs::openat(
            fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(path, e))
    };
    // Each level: the directory's readable descriptor, its path, and the names still to visit.
    let first = open_dir(root, "/")?;
    let listed = names(first.as_fd(), "/")?;
    let mut stack: Vec<(OwnedFd, String, std::vec::IntoIter<CString>)> =
        vec![(first, String::new(), listed.into_iter())];
    while let Some((dir, dir_path, rest)) = stack.last_mut() {
        let Some(name) = rest.next() else {
            stack.pop();
            continue;
        };
        let path = format!(
            "{dir_path}/{}",
            std::ffi::OsStr::from_bytes(name.to_bytes()).to_string_lossy()
        );
        let fd = match rustix::fs::openat(
            &*dir,
            name.as_c_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                walked.vanished += 1;
                continue;
            }
            Err(e) => return Err(io_err(&path, e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_err(&path, e))?;
        visit(&Node {
            fd: &fd,
            stat: &stat,
            path: &path,
        })?;
        walked.entries += 1;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory {
            let sub = open_dir(&fd, &path)?;
            let listed = names(sub.as_fd(), &path)?;
            stack.push((sub, path, listed.into_iter()));
        }
    }
    Ok(walked)
}

/// Change an entry's owner through its descriptor (a symlink's own owner, never its target's).
pub fn chown(node: &Node<'_>, uid: u32, gid: u32) -> Result<(), ImageError> {
    rustix::fs::chownat(
        node.fd,
        c"",
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::EMPTY_PATH,
    )
    .map_err(|e| io_err(node.path, e))
}
