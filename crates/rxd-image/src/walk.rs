//! Walking a tree on the host by descriptor, never by path.
//!
//! A container's root filesystem is written by the container (and by the files API), so any path
//! into it may turn into a symlink to a host file between two system calls. This walk holds a
//! descriptor for every directory it is in and opens each entry relative to its parent's
//! descriptor with `O_PATH | O_NOFOLLOW`: what it hands to its visitor is the very inode it
//! opened, whatever happens to the names meanwhile. A symlink is handed over as the link itself;
//! a directory is entered through the descriptor it was opened as (`openat(fd, ".")`), so a
//! directory swapped for a link mid-walk is never followed. Entries that vanish are reported,
//! not errors. Descriptors held at once: one per directory level, and trees deeper than
//! [`MAX_DEPTH`] are refused (a container can build a chain of directories deep enough to
//! exhaust descriptors or memory otherwise). Paths are only put together for messages.

use crate::ImageError;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// The deepest directory level any walk or copy of a container's tree goes to.
pub const MAX_DEPTH: usize = 1024;

/// One directory the walk is in: its readable descriptor, its name, the names still to visit.
struct Level {
    fd: OwnedFd,
    name: CString,
    rest: std::vec::IntoIter<CString>,
}

/// One entry met by the walk.
pub struct Node<'a> {
    /// An `O_PATH` descriptor of the entry itself (a symlink is not followed).
    pub fd: &'a OwnedFd,
    pub stat: &'a rustix::fs::Stat,
    levels: &'a [Level],
    name: Option<&'a std::ffi::CStr>,
}

/// A path for messages from its components, keeping only the end of a long one.
pub(crate) fn display_path<'a>(names: impl DoubleEndedIterator<Item = &'a [u8]>) -> String {
    const KEEP: usize = 512;
    let mut parts = Vec::new();
    let mut len = 0;
    for n in names.rev() {
        if len > KEEP {
            parts.push("…".to_owned());
            break;
        }
        let part = String::from_utf8_lossy(n).into_owned();
        len += part.len() + 1;
        parts.push(part);
    }
    parts.reverse();
    format!("/{}", parts.join("/"))
}

impl Node<'_> {
    /// Its path below the root, for messages only (never used to reach it).
    pub fn path(&self) -> String {
        display_path(
            self.levels
                .iter()
                .skip(1)
                .map(|l| l.name.to_bytes())
                .chain(self.name.map(|n| n.to_bytes())),
        )
    }

    /// Its exact path below the root (empty for the root), to name it in an archive: the walk
    /// itself never goes through it.
    pub fn relative(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        self.levels
            .iter()
            .skip(1)
            .map(|l| l.name.to_bytes())
            .chain(self.name.map(|n| n.to_bytes()))
            .map(std::ffi::OsStr::from_bytes)
            .collect()
    }

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
            _ => return Err(io_err(&self.path(), rustix::io::Errno::INVAL)),
        }
        .map_err(|e| io_err(&self.path(), e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_err(&self.path(), e))?;
        if (st.st_dev, st.st_ino) != (self.stat.st_dev, self.stat.st_ino) {
            return Err(ImageError::Changed { path: self.path() });
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
        levels: &[],
        name: None,
    })?;
    walked.entries += 1;
    let open_dir = |fd: &OwnedFd, path: &dyn Fn() -> String| {
        rustix::fs::openat(
            fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(&path(), e))
    };
    let first = open_dir(root, &|| "/".to_owned())?;
    let listed = names(first.as_fd(), "/")?;
    let mut stack = vec![Level {
        fd: first,
        name: CString::default(),
        rest: listed.into_iter(),
    }];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.rest.next() else {
            stack.pop();
            continue;
        };
        let at = |levels: &[Level]| {
            display_path(
                levels
                    .iter()
                    .skip(1)
                    .map(|l| l.name.to_bytes())
                    .chain(std::iter::once(name.to_bytes())),
            )
        };
        let fd = match rustix::fs::openat(
            &top.fd,
            name.as_c_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                walked.vanished += 1;
                continue;
            }
            Err(e) => return Err(io_err(&at(&stack), e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_err(&at(&stack), e))?;
        visit(&Node {
            fd: &fd,
            stat: &stat,
            levels: &stack,
            name: Some(name.as_c_str()),
        })?;
        walked.entries += 1;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory {
            if stack.len() >= MAX_DEPTH {
                return Err(ImageError::TooDeep {
                    path: at(&stack),
                    max: MAX_DEPTH,
                });
            }
            let sub = open_dir(&fd, &|| at(&stack))?;
            let listed = names(sub.as_fd(), &at(&stack))?;
            stack.push(Level {
                fd: sub,
                name,
                rest: listed.into_iter(),
            });
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
    .map_err(|e| io_err(&node.path(), e))
}
