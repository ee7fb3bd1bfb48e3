//! A private directory being filled (the unpacker's staging tree), reached by descriptor only.
//!
//! Every entry is made relative to its parent's descriptor; parents are reached one component at
//! a time with `O_DIRECTORY | O_NOFOLLOW`, so a path can never pass through a symlink or a file,
//! whatever the archive put there before. Missing parents are created `0700`.

use crate::ImageError;
use rustix::fs::{Mode, OFlags};
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

pub(crate) struct Staging {
    root: OwnedFd,
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

fn io_at(p: &Path, e: rustix::io::Errno) -> ImageError {
    ImageError::Io {
        path: shown(p),
        source: e.into(),
    }
}

fn c_name(name: &std::ffi::OsStr, rel: &Path) -> Result<CString, ImageError> {
    CString::new(name.as_bytes()).map_err(|_| ImageError::UnsafePath {
        path: shown(rel),
        reason: "contains a NUL byte",
    })
}

impl Staging {
    /// Make the new private directory `path` (it must not exist) and hold it.
    pub(crate) fn create(path: &Path) -> Result<Staging, ImageError> {
        rustix::fs::mkdir(path, Mode::from_raw_mode(0o700)).map_err(|e| io_at(path, e))?;
        let root = rustix::fs::open(path, DIR, Mode::empty()).map_err(|e| io_at(path, e))?;
        Ok(Staging { root })
    }

    pub(crate) fn root(&self) -> &OwnedFd {
        &self.root
    }

    /// The directory holding `rel`'s last component, and that component's name. With `create`,
    /// missing parents are made; either way a parent that is not a real directory is refused.
    pub(crate) fn parent(
        &self,
        rel: &Path,
        create: bool,
    ) -> Result<(OwnedFd, CString), ImageError> {
        let names: Vec<&std::ffi::OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let Some((last, parents)) = names.split_last() else {
            return Err(ImageError::UnsafePath {
                path: shown(rel),
                reason: "is empty",
            });
        };
        let mut dir = self.root.try_clone().map_err(|e| ImageError::Io {
            path: shown(rel),
            source: e,
        })?;
        let mut through = PathBuf::new();
        for name in parents {
            through.push(name);
            let c = c_name(name, rel)?;
            let opened = match rustix::fs::openat(&dir, c.as_c_str(), DIR, Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&dir, c.as_c_str(), Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(io_at(&through, e)),
                    }
                    rustix::fs::openat(&dir, c.as_c_str(), DIR, Mode::empty())
                }
                other => other,
            };
            dir = match opened {
                Ok(fd) => fd,
                // A symlink (ELOOP with O_NOFOLLOW) or anything but a directory.
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                    return Err(ImageError::ThroughNonDirectory {
                        path: shown(rel),
                        through: shown(&through),
                    })
                }
                Err(rustix::io::Errno::NOENT) => {
                    return Err(ImageError::ThroughNonDirectory {
                        path: shown(rel),
                        through: shown(&through),
                    })
                }
                Err(e) => return Err(io_at(&through, e)),
            };
        }
        Ok((dir, c_name(last, rel)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_never_pass_through_links_or_files() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let s = Staging::create(&t.path().join("stage")).unwrap();
        let (dir, name) = s.parent(Path::new("rootfs/etc/passwd"), true).unwrap();
        assert_eq!(name.as_bytes(), b"passwd");
        assert!(rustix::fs::fstat(&dir).is_ok());
        assert!(t.path().join("stage/rootfs/etc").is_dir());
        std::os::unix::fs::symlink(&outside, t.path().join("stage/rootfs/link")).unwrap();
        std::fs::write(t.path().join("stage/rootfs/file"), "x").unwrap();
        for rel in ["rootfs/link/x", "rootfs/link/a/b", "rootfs/file/x"] {
            assert!(
                matches!(
                    s.parent(Path::new(rel), true),
                    Err(ImageError::ThroughNonDirectory { .. })
                ),
                "{rel}"
            );
        }
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        assert!(matches!(
            s.parent(Path::new("rootfs/missing/x"), false),
            Err(ImageError::ThroughNonDirectory { .. })
        ));
        // The staging directory itself must be new.
        assert!(Staging::create(&t.path().join("stage")).is_err());
    }
}
