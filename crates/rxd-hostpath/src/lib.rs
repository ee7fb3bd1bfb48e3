//! Host paths opened by descriptor. A device's host source (a disk's `source`, a unix device's
//! node) is named by whoever wrote the instance or profile config, and resolved by the root
//! daemon or helper: a path walk there must not be steered by anyone but root. [`open`] walks
//! from `/` one component at a time with `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//! and follows a symlink only if root owns it (at most 40 of them); under a
//! `restricted.devices.disk.paths` prefix ([`Walk::beneath`]) it may not leave the prefix at
//! all, by `..` or by any symlink, whoever owns it. The result is an `O_PATH` descriptor of the
//! object the walk reached, never a path to be looked up again; an object that is, or lies
//! inside, one of the refused directories (rxd's state dir: every container's root filesystem
//! lives there) is refused by comparing device and inode numbers of every directory on the
//! walk's final chain.

#![forbid(unsafe_code)]

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// As Linux's `MAXSYMLINKS`.
const MAX_LINKS: u32 = 40;

#[derive(Debug, Error)]
pub enum WalkError {
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("{path}: a symbolic link not owned by root (owner {uid}); rxd follows only root's")]
    ForeignSymlink { path: PathBuf, uid: u32 },
    #[error("{0}: too many levels of symbolic links")]
    TooManyLinks(PathBuf),
    #[error("{path} leaves {prefix}, the allowed prefix it must stay beneath")]
    LeavesPrefix { path: PathBuf, prefix: PathBuf },
    #[error("{path} is inside {refused}, which no device may reach")]
    Refused { path: PathBuf, refused: PathBuf },
    #[error("{path} contains {refused}, which no device may reach")]
    Contains { path: PathBuf, refused: PathBuf },
    #[error("{0}: a link of /proc (rxd follows no /proc link)")]
    ProcLink(PathBuf),
    #[error("{0} is not an absolute path")]
    Relative(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl WalkError {
    /// Whether the path simply does not exist (a device with `required=false` is then skipped).
    pub fn is_not_found(&self) -> bool {
        matches!(self, WalkError::NotFound(_))
    }
}

/// What the walk reached.
#[derive(Debug)]
pub struct Opened {
    /// An `O_PATH | O_CLOEXEC` descriptor of it.
    pub fd: OwnedFd,
    pub file_type: FileType,
    /// Its device number when it is a character or block device.
    pub rdev: u64,
}

/// How to walk one path.
pub struct Walk<'a> {
    path: &'a Path,
    beneath: Option<&'a Path>,
    refused: Vec<(PathBuf, (u64, u64))>,
    /// The directories that contain a refused one, up to `/`.
    containing: Vec<(PathBuf, (u64, u64))>,
}

fn io(path: &Path) -> impl FnOnce(rustix::io::Errno) -> WalkError + '_ {
    move |e| match e {
        rustix::io::Errno::NOENT => WalkError::NotFound(path.to_path_buf()),
        rustix::io::Errno::NOTDIR => WalkError::NotADirectory(path.to_path_buf()),
        e => WalkError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        },
    }
}

fn identity(fd: impl AsFd, path: &Path) -> Result<(FileType, (u64, u64), u32, u64), WalkError> {
    let st = rustix::fs::fstat(fd).map_err(io(path))?;
    Ok((
        FileType::from_raw_mode(st.st_mode),
        (st.st_dev, st.st_ino),
        st.st_uid,
        st.st_rdev,
    ))
}

impl<'a> Walk<'a> {
    pub fn new(path: &'a Path) -> Self {
        Walk {
            path,
            beneath: None,
            refused: Vec::new(),
            containing: Vec::new(),
        }
    }

    /// Stay beneath `prefix` (itself walked as any path is): no `..` above it, no symlink at
    /// all that leads out of it.
    pub fn beneath(mut self, prefix: Option<&'a Path>) -> Self {
        self.beneath = prefix;
        self
    }

    /// Refuse `dir`, everything inside it and every directory that contains it (a directory
    /// that does not exist refuses nothing).
    pub fn refuse(mut self, dir: &Path) -> Self {
        let Ok(mut here) = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return self;
        };
        let Ok((_, id, _, _)) = identity(&here, dir) else {
            return self;
        };
        self.refused.push((dir.to_path_buf(), id));
        // Up by `..` until it leads nowhere new (`/`).
        let mut last = id;
        for _ in 0..4096 {
            let Ok(up) = rustix::fs::openat(
                &here,
                "..",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                break;
            };
            let Ok((_, up_id, _, _)) = identity(&up, dir) else {
                break;
            };
            if up_id == last {
                break;
            }
            self.containing.push((dir.to_path_buf(), up_id));
            last = up_id;
            here = up;
        }
        self
    }

    pub fn open(self) -> Result<Opened, WalkError> {
        if !self.path.is_absolute() {
            return Err(WalkError::Relative(self.path.to_path_buf()));
        }
        let root = rustix::fs::open(
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io(Path::new("/")))?;
        let mut chain = vec![root];
        match self.beneath {
            Some(prefix) => {
                if !prefix.is_absolute() {
                    return Err(WalkError::Relative(prefix.to_path_buf()));
                }
                let rest = self
                    .path
                    .strip_prefix(prefix)
                    .map_err(|_| WalkError::LeavesPrefix {
                        path: self.path.to_path_buf(),
                        prefix: prefix.to_path_buf(),
                    })?;
                walk(&mut chain, components(prefix), prefix, None)?;
                let floor = chain.len();
                walk(
                    &mut chain,
                    components(rest),
                    self.path,
                    Some((floor, prefix)),
                )?;
            }
            None => walk(&mut chain, components(self.path), self.path, None)?,
        }
        for fd in &chain {
            let (_, id, _, _) = identity(fd, self.path)?;
            if let Some((dir, _)) = self.refused.iter().find(|(_, r)| *r == id) {
                return Err(WalkError::Refused {
                    path: self.path.to_path_buf(),
                    refused: dir.clone(),
                });
            }
        }
        let fd = chain.pop().expect("the chain always holds the root");
        let (file_type, id, _, rdev) = identity(&fd, self.path)?;
        if let Some((dir, _)) = self.containing.iter().find(|(_, c)| *c == id) {
            return Err(WalkError::Contains {
                path: self.path.to_path_buf(),
                refused: dir.clone(),
            });
        }
        Ok(Opened {
            fd,
            file_type,
            rdev,
        })
    }
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Walk `queue` from the last descriptor of `chain`, pushing each object reached. With a floor
/// (`chain` length, prefix), nothing may pop below it and every symlink is refused if it would
/// (absolute ones always do).
fn walk(
    chain: &mut Vec<OwnedFd>,
    mut queue: VecDeque<OsString>,
    path: &Path,
    floor: Option<(usize, &Path)>,
) -> Result<(), WalkError> {
    let leaves = || WalkError::LeavesPrefix {
        path: path.to_path_buf(),
        prefix: floor.map(|(_, p)| p.to_path_buf()).unwrap_or_default(),
    };
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        let here = chain.last().expect("the chain always holds the root");
        if part == ".." {
            match floor {
                Some((f, _)) if chain.len() <= f => return Err(leaves()),
                _ if chain.len() > 1 => {
                    chain.pop();
                }
                _ => {}
            }
            continue;
        }
        if part.is_empty() || part == "." {
            continue;
        }
        let (kind, _, _, _) = identity(here, path)?;
        if kind != FileType::Directory {
            return Err(WalkError::NotADirectory(path.to_path_buf()));
        }
        let fd = rustix::fs::openat2(
            here,
            part.as_os_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::BENEATH,
        )
        .map_err(io(path))?;
        let (kind, _, uid, _) = identity(&fd, path)?;
        if kind != FileType::Symlink {
            chain.push(fd);
            continue;
        }
        // procfs's links (`/proc/self/root`, `/proc/<pid>/fd/N`) are not paths: never followed.
        if rustix::fs::fstatfs(&fd).is_ok_and(|s| s.f_type == rustix::fs::PROC_SUPER_MAGIC) {
            return Err(WalkError::ProcLink(path.to_path_buf()));
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(WalkError::TooManyLinks(path.to_path_buf()));
        }
        if floor.is_none() && uid != 0 {
            return Err(WalkError::ForeignSymlink {
                path: path.to_path_buf(),
                uid,
            });
        }
        let target = rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(io(path))?;
        let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
        if target.is_absolute() {
            if floor.is_some() {
                return Err(leaves());
            }
            chain.truncate(1);
        }
        let mut parts = components(target);
        parts.extend(queue);
        queue = parts;
    }
    Ok(())
}

/// Open `path` as [`Walk`] does with no prefix and nothing refused.
pub fn open(path: &Path) -> Result<Opened, WalkError> {
    Walk::new(path).open()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, symlink};

    fn same(a: &Opened, b: &Path) -> bool {
        let st = rustix::fs::fstat(&a.fd).unwrap();
        let want = rustix::fs::stat(b).unwrap();
        (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino)
    }

    #[test]
    fn walks_by_descriptor() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/b/f"), b"x").unwrap();
        std::fs::create_dir_all(base.join("state/containers/c1")).unwrap();
        let root_owned = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);

        let got = open(&base.join("a/b/f")).unwrap();
        assert!(same(&got, &base.join("a/b/f")));
        assert_eq!(got.file_type, FileType::RegularFile);
        assert!(open(&base.join("a/nope")).unwrap_err().is_not_found());
        assert!(matches!(
            open(&base.join("a/b/f/x")),
            Err(WalkError::NotADirectory(_))
        ));
        assert!(matches!(
            open(Path::new("rel")),
            Err(WalkError::Relative(_))
        ));
        // `..` is walked by descriptor too.
        assert!(same(
            &open(&base.join("a/b/../b/f")).unwrap(),
            &base.join("a/b/f")
        ));
        assert!(same(&open(Path::new("/../..")).unwrap(), Path::new("/")));

        // Symlinks: root's are followed (relative and absolute), anyone else's refused.
        symlink("b", base.join("a/rel")).unwrap();
        symlink(base.join("a/b"), base.join("a/abs")).unwrap();
        symlink("loop", base.join("a/loop")).unwrap();
        if root_owned {
            assert!(same(
                &open(&base.join("a/rel/f")).unwrap(),
                &base.join("a/b/f")
            ));
            assert!(same(
                &open(&base.join("a/abs/f")).unwrap(),
                &base.join("a/b/f")
            ));
            assert!(matches!(
                open(&base.join("a/loop")),
                Err(WalkError::TooManyLinks(_))
            ));
            symlink(base.join("state"), base.join("a/to-state")).unwrap();
            let foreign = base.join("a/foreign");
            symlink("b", &foreign).unwrap();
            std::os::unix::fs::lchown(&foreign, Some(1000), Some(1000)).unwrap();
            assert!(matches!(
                open(&base.join("a/foreign/f")),
                Err(WalkError::ForeignSymlink { uid: 1000, .. })
            ));
            // The state dir and everything inside it, however it is reached.
            for p in [
                "state",
                "state/containers/c1",
                "a/to-state/containers",
                "a/../state",
            ] {
                let e = Walk::new(&base.join(p))
                    .refuse(&base.join("state"))
                    .open()
                    .err();
                assert!(matches!(e, Some(WalkError::Refused { .. })), "{p}: {e:?}");
            }
            assert!(Walk::new(&base.join("a"))
                .refuse(&base.join("state"))
                .open()
                .is_ok());
            // Nor what contains it: that would reach it too.
            for p in ["", "state/.."] {
                let e = Walk::new(&base.join(p))
                    .refuse(&base.join("state/containers"))
                    .open()
                    .err();
                assert!(matches!(e, Some(WalkError::Contains { .. })), "{p}: {e:?}");
            }
            let e = Walk::new(Path::new("/"))
                .refuse(&base.join("state"))
                .open()
                .err();
            assert!(matches!(e, Some(WalkError::Contains { .. })), "{e:?}");
            // procfs's magic links are not followed, root's though they are.
            let e = open(Path::new("/proc/self/root/etc")).err();
            assert!(matches!(e, Some(WalkError::ProcLink(_))), "{e:?}");
        }

        // Beneath a prefix: no way out, whoever owns the link.
        let prefix = base.join("a");
        let beneath = |p: &str| Walk::new(&base.join(p)).beneath(Some(&prefix)).open();
        assert!(same(&beneath("a/b/f").unwrap(), &base.join("a/b/f")));
        assert!(same(&beneath("a").unwrap(), &base.join("a")));
        assert!(same(&beneath("a/rel/f").unwrap(), &base.join("a/b/f")));
        symlink("../state", base.join("a/out")).unwrap();
        if root_owned {
            chown(base.join("a/b"), Some(1000), None).unwrap();
        }
        for bad in [
            "a/abs/f",
            "a/out",
            "a/out/containers",
            "a/b/../../state",
            "state",
        ] {
            assert!(
                matches!(beneath(bad), Err(WalkError::LeavesPrefix { .. })),
                "{bad}: {:?}",
                beneath(bad).err()
            );
        }
    }
}
