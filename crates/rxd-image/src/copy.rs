//! Copying a container's root filesystem (snapshots and restores).
//!
//! Both sides are walked by descriptor, never by path. The source may belong to a running
//! container, so every entry is opened relative to its parent's descriptor with `O_NOFOLLOW`:
//! swapping a directory for a symlink mid-copy cannot lead the walk out of the tree. The
//! destination is a new directory of the daemon's (it must not exist), built privately, every
//! entry made relative to its parent's descriptor and finished (owner, mode, times) through its
//! own descriptor or with `AT_SYMLINK_NOFOLLOW`; it is left for the caller to rename into place.
//! Kept: file types, content, hard links, owners (as host ids: the copy stays shifted as the
//! source was), permission bits including set-id bits, and modification times. Not kept:
//! extended attributes and holes (a sparse file is copied in full); sockets are skipped.

use crate::ImageError;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn errno(path: &Path) -> impl Fn(rustix::io::Errno) -> ImageError + '_ {
    move |e| ImageError::Io {
        path: path.display().to_string(),
        source: e.into(),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.display().to_string(),
        source,
    }
}

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Hard-linked files remembered at most, so a tree of millions of links cannot exhaust memory;
/// a tree with more is refused (copied as separate files, one huge file with a million links
/// would fill the disk).
const MAX_LINKS: usize = 16384;

/// Copy the tree at `src` to the new directory `dst`. Returns the number of entries copied.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<u64, ImageError> {
    copy_tree_shifted(src, dst, None)
}

/// [`copy_tree`], with every owner N written as N shifted through `shift` (an image's unpacked
/// tree, in the container's own ids, copied for a new container); an id outside the map is
/// refused, as the unpacker refuses it.
pub fn copy_tree_shifted(
    src: &Path,
    dst: &Path,
    shift: Option<&crate::IdShift>,
) -> Result<u64, ImageError> {
    rustix::fs::mkdir(dst, Mode::from_raw_mode(0o700)).map_err(errno(dst))?;
    copy_tree_into(src, dst, shift)
}

/// [`copy_tree_shifted`] into `dst`, an empty directory that exists already (say a new btrfs
/// subvolume); it gets the source's owner, mode and times like every directory copied.
pub fn copy_tree_into(
    src: &Path,
    dst: &Path,
    shift: Option<&crate::IdShift>,
) -> Result<u64, ImageError> {
    let root = rustix::fs::open(src, DIR, Mode::empty()).map_err(errno(src))?;
    let st = rustix::fs::fstat(&root).map_err(errno(src))?;
    let out = rustix::fs::open(dst, DIR, Mode::empty()).map_err(errno(dst))?;
    if !listing(&out, dst)?.is_empty() {
        return Err(ImageError::Io {
            path: dst.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the copy's destination is not empty",
            ),
        });
    }
    let mut copy = Copy {
        out_root: out.try_clone().map_err(io(dst))?,
        count: 1,
        links: HashMap::new(),
        shown: dst.to_path_buf(),
        shift: shift.copied(),
    };
    copy.tree(root, out, st)?;
    Ok(copy.count)
}

struct Copy {
    /// The destination's root, for re-finding the first copy of a hard-linked file.
    out_root: OwnedFd,
    count: u64,
    /// Files with more than one name, by (device, inode): the first copy's path below the root.
    links: HashMap<(u64, u64), PathBuf>,
    /// The destination, for messages.
    shown: PathBuf,
    /// Owners are shifted through this map (`None`: kept).
    shift: Option<crate::IdShift>,
}

/// One directory being copied: both descriptors, its name, its source's stat (to finish the
/// copy with), and the names still to copy.
struct Level {
    from: OwnedFd,
    to: OwnedFd,
    name: CString,
    stat: rustix::fs::Stat,
    rest: std::vec::IntoIter<CString>,
}

fn listing(dir: &OwnedFd, shown: &Path) -> Result<Vec<CString>, ImageError> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(errno(shown))? {
        let entry = entry.map_err(errno(shown))?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// The path of `name` below the copy's root, from the levels it is in.
fn rel_of(levels: &[Level], name: &CStr) -> PathBuf {
    levels
        .iter()
        .skip(1)
        .map(|l| std::ffi::OsStr::from_bytes(l.name.to_bytes()))
        .chain(std::iter::once(std::ffi::OsStr::from_bytes(
            name.to_bytes(),
        )))
        .collect()
}

fn times(st: &rustix::fs::Stat) -> Timestamps {
    let mtime = Timespec {
        tv_sec: st.st_mtime,
        tv_nsec: st.st_mtime_nsec as _,
    };
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

/// An entry's owner in the copy: as in the source, or shifted through `shift`.
fn ids(
    st: &rustix::fs::Stat,
    shift: Option<&crate::IdShift>,
    shown: &Path,
) -> Result<(Option<rustix::fs::Uid>, Option<rustix::fs::Gid>), ImageError> {
    let map = |id: u32, base: u32| match shift {
        None => Ok(id),
        Some(s) if id < s.size => Ok(base + id),
        Some(s) => Err(ImageError::IdOutOfMap {
            path: shown.display().to_string(),
            id: u64::from(id),
            max: s.size - 1,
        }),
    };
    Ok((
        Some(rustix::fs::Uid::from_raw(map(
            st.st_uid,
            shift.map_or(0, |s| s.uid_base),
        )?)),
        Some(rustix::fs::Gid::from_raw(map(
            st.st_gid,
            shift.map_or(0, |s| s.gid_base),
        )?)),
    ))
}

/// Owner, mode and times of a copied entry held open (mode after chown, which clears set-id
/// bits).
fn finish_fd(
    fd: &OwnedFd,
    st: &rustix::fs::Stat,
    shift: Option<&crate::IdShift>,
    shown: &Path,
) -> Result<(), ImageError> {
    let (uid, gid) = ids(st, shift, shown)?;
    rustix::fs::fchown(fd, uid, gid).map_err(errno(shown))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(errno(shown))?;
    rustix::fs::futimens(fd, &times(st)).map_err(errno(shown))?;
    Ok(())
}

/// The same for an entry that cannot be held open (a symlink, a node), by name in its new
/// parent, never following it.
fn finish_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    st: &rustix::fs::Stat,
    set_mode: bool,
    shift: Option<&crate::IdShift>,
    shown: &Path,
) -> Result<(), ImageError> {
    let (uid, gid) = ids(st, shift, shown)?;
    rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW).map_err(errno(shown))?;
    if set_mode {
        // Only for nodes this copy just made in its private directory: nothing can have
        // replaced them with a link.
        rustix::fs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(errno(shown))?;
    }
    rustix::fs::utimensat(dir, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno(shown))?;
    Ok(())
}

impl Copy {
    /// A path for messages, keeping only the end of a deep one.
    fn shown(&self, levels: &[Level], name: &CStr) -> PathBuf {
        let tail = crate::walk::display_path(
            levels
                .iter()
                .skip(1)
                .map(|l| l.name.to_bytes())
                .chain(std::iter::once(name.to_bytes())),
        );
        self.shown.join(tail.trim_start_matches('/'))
    }

    /// Copy everything below `from` into `to`, one level at a time on an explicit stack (a deep
    /// tree must not overflow the thread's stack), refusing trees deeper than
    /// [`crate::walk::MAX_DEPTH`].
    fn tree(
        &mut self,
        from: OwnedFd,
        to: OwnedFd,
        stat: rustix::fs::Stat,
    ) -> Result<(), ImageError> {
        let rest = listing(&from, &self.shown)?.into_iter();
        let mut stack = vec![Level {
            from,
            to,
            name: CString::default(),
            stat,
            rest,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.rest.next() else {
                let done = stack.pop().expect("a level is on the stack");
                let shown = match stack.is_empty() {
                    true => self.shown.clone(),
                    false => self.shown(&stack, &done.name),
                };
                finish_fd(&done.to, &done.stat, self.shift.as_ref(), &shown)?;
                continue;
            };
            let top = stack.last().expect("a level is on the stack");
            let (from, to) = (&top.from, &top.to);
            let st = rustix::fs::statat(from, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| errno(&self.shown(&stack, &name))(e))?;
            let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
            match kind {
                rustix::fs::FileType::Directory => {
                    let shown = self.shown(&stack, &name);
                    if stack.len() >= crate::walk::MAX_DEPTH {
                        // Said relative to the tree: the message may reach a client.
                        return Err(ImageError::TooDeep {
                            path: crate::walk::display_path(
                                stack
                                    .iter()
                                    .skip(1)
                                    .map(|l| l.name.to_bytes())
                                    .chain(std::iter::once(name.to_bytes())),
                            ),
                            max: crate::walk::MAX_DEPTH,
                        });
                    }
                    let top = stack.last().expect("a level is on the stack");
                    let sub = rustix::fs::openat(&top.from, name.as_c_str(), DIR, Mode::empty())
                        .map_err(errno(&shown))?;
                    rustix::fs::mkdirat(&top.to, name.as_c_str(), Mode::from_raw_mode(0o700))
                        .map_err(errno(&shown))?;
                    let made = rustix::fs::openat(&top.to, name.as_c_str(), DIR, Mode::empty())
                        .map_err(errno(&shown))?;
                    let rest = listing(&sub, &shown)?.into_iter();
                    stack.push(Level {
                        from: sub,
                        to: made,
                        name,
                        stat: st,
                        rest,
                    });
                }
                rustix::fs::FileType::RegularFile => {
                    let shown = self.shown(&stack, &name);
                    // Hard links stay links: one copy of the content, not one per name.
                    let id = (st.st_dev, st.st_ino);
                    if st.st_nlink > 1 {
                        if let Some(first) = self.links.get(&id) {
                            let first = rustix::fs::openat2(
                                &self.out_root,
                                first.as_path(),
                                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                                Mode::empty(),
                                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                            )
                            .map_err(errno(&shown))?;
                            rustix::fs::linkat(
                                &first,
                                c"",
                                to,
                                name.as_c_str(),
                                AtFlags::EMPTY_PATH,
                            )
                            .map_err(errno(&shown))?;
                            self.count += 1;
                            continue;
                        }
                        if self.links.len() >= MAX_LINKS {
                            return Err(ImageError::TooManyLinks(MAX_LINKS));
                        }
                        self.links.insert(id, rel_of(&stack, &name));
                    }
                    let top = stack.last().expect("a level is on the stack");
                    copy_file(&top.from, &top.to, &name, &st, self.shift.as_ref(), &shown)?;
                }
                rustix::fs::FileType::Symlink => {
                    let shown = self.shown(&stack, &name);
                    let link = rustix::fs::readlinkat(from, name.as_c_str(), Vec::new())
                        .map_err(errno(&shown))?;
                    rustix::fs::symlinkat(link.as_c_str(), to, name.as_c_str())
                        .map_err(errno(&shown))?;
                    finish_at(to.as_fd(), &name, &st, false, self.shift.as_ref(), &shown)?;
                }
                rustix::fs::FileType::Fifo
                | rustix::fs::FileType::CharacterDevice
                | rustix::fs::FileType::BlockDevice => {
                    let shown = self.shown(&stack, &name);
                    rustix::fs::mknodat(
                        to,
                        name.as_c_str(),
                        kind,
                        Mode::from_raw_mode(0o600),
                        st.st_rdev,
                    )
                    .map_err(errno(&shown))?;
                    finish_at(to.as_fd(), &name, &st, true, self.shift.as_ref(), &shown)?;
                }
                _ => continue,
            }
            self.count += 1;
        }
        Ok(())
    }
}

/// Copy one regular file's content from `from/name` to a new `to/name`, then finish it.
fn copy_file(
    from: &OwnedFd,
    to: &OwnedFd,
    name: &CStr,
    st: &rustix::fs::Stat,
    shift: Option<&crate::IdShift>,
    shown: &Path,
) -> Result<(), ImageError> {
    let fd = rustix::fs::openat(
        from,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(errno(shown))?;
    let now = rustix::fs::fstat(&fd).map_err(errno(shown))?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(ImageError::Changed {
            path: shown.display().to_string(),
        });
    }
    let made = rustix::fs::openat(
        to,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(errno(shown))?;
    let mut reader = File::from(fd);
    let mut writer = File::from(made);
    // No more than the size seen: a file cannot grow the copy while it runs.
    std::io::copy(&mut (&mut reader).take(st.st_size as u64), &mut writer).map_err(io(shown))?;
    finish_fd(&OwnedFd::from(writer), st, shift, shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};

    #[test]
    fn copies_types_owners_modes_and_never_follows_links() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("etc/sub")).unwrap();
        std::fs::write(src.join("etc/passwd"), "root:x:0:0\n").unwrap();
        std::os::unix::fs::chown(src.join("etc/passwd"), Some(1000033), Some(1000044)).unwrap();
        std::fs::set_permissions(
            src.join("etc/passwd"),
            std::fs::Permissions::from_mode(0o4750),
        )
        .unwrap();
        symlink("/etc/shadow", src.join("shadow-link")).unwrap();
        std::os::unix::fs::lchown(src.join("shadow-link"), Some(1000001), Some(1000001)).unwrap();
        std::fs::write(t.path().join("outside"), "host").unwrap();
        std::fs::hard_link(src.join("etc/passwd"), src.join("etc/sub/passwd-link")).unwrap();
        symlink("../outside", src.join("etc/sub/up")).unwrap();
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();

        let dst = t.path().join("dst");
        assert_eq!(copy_tree(&src, &dst).unwrap(), 8);
        let (a, b) = (
            std::fs::metadata(dst.join("etc/passwd")).unwrap(),
            std::fs::metadata(dst.join("etc/sub/passwd-link")).unwrap(),
        );
        assert_eq!(
            (a.ino(), a.nlink()),
            (b.ino(), 2),
            "a hard link stays one file"
        );
        assert_eq!(
            std::fs::read_to_string(dst.join("etc/passwd")).unwrap(),
            "root:x:0:0\n"
        );
        let m = std::fs::metadata(dst.join("etc/passwd")).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1000033, 1000044, 0o4750)
        );
        assert_eq!(
            std::fs::metadata(src.join("etc/passwd")).unwrap().mtime(),
            m.mtime()
        );
        let l = std::fs::symlink_metadata(dst.join("shadow-link")).unwrap();
        assert!(l.file_type().is_symlink());
        assert_eq!((l.uid(), l.gid()), (1000001, 1000001));
        assert_eq!(
            std::fs::read_link(dst.join("etc/sub/up")).unwrap(),
            Path::new("../outside")
        );
        assert!(std::fs::symlink_metadata(dst.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        // An existing destination is refused.
        assert!(copy_tree(&src, &dst).is_err());
    }

    #[test]
    fn a_shifted_copy_maps_every_owner_and_refuses_ids_outside_the_map() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("home/u")).unwrap();
        std::fs::write(src.join("home/u/f"), "x").unwrap();
        std::os::unix::fs::chown(src.join("home/u"), Some(1000), Some(1001)).unwrap();
        std::os::unix::fs::chown(src.join("home/u/f"), Some(1000), Some(1001)).unwrap();
        std::fs::set_permissions(
            src.join("home/u/f"),
            std::fs::Permissions::from_mode(0o2755),
        )
        .unwrap();
        symlink("f", src.join("home/u/l")).unwrap();
        let shift = crate::IdShift {
            uid_base: 200_000,
            gid_base: 300_000,
            size: 65536,
        };
        let dst = t.path().join("dst");
        copy_tree_shifted(&src, &dst, Some(&shift)).unwrap();
        let meta = |p: &str| std::fs::symlink_metadata(dst.join(p)).unwrap();
        assert_eq!((meta("").uid(), meta("").gid()), (200_000, 300_000));
        assert_eq!(
            (meta("home/u").uid(), meta("home/u").gid()),
            (201_000, 301_001)
        );
        let f = meta("home/u/f");
        assert_eq!(
            (f.uid(), f.gid(), f.mode() & 0o7777),
            (201_000, 301_001, 0o2755)
        );
        assert_eq!(meta("home/u/l").uid(), 200_000, "the link's own owner");
        // An owner the map cannot hold: refused.
        std::os::unix::fs::chown(src.join("home/u/f"), Some(70_000), None).unwrap();
        let err = copy_tree_shifted(&src, &t.path().join("dst2"), Some(&shift)).unwrap_err();
        assert!(
            matches!(err, ImageError::IdOutOfMap { id: 70_000, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_tree_deeper_than_the_copy_goes_is_refused_without_crashing() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let mut dir = rustix::fs::open(&src, DIR, Mode::empty()).unwrap();
        for _ in 0..crate::walk::MAX_DEPTH + 5 {
            rustix::fs::mkdirat(&dir, c"d", Mode::from_raw_mode(0o755)).unwrap();
            dir = rustix::fs::openat(&dir, c"d", DIR, Mode::empty()).unwrap();
        }
        drop(dir);
        let (s, d) = (src.clone(), t.path().join("dst"));
        let result = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || copy_tree(&s, &d))
            .unwrap()
            .join()
            .unwrap();
        assert!(
            matches!(result, Err(ImageError::TooDeep { .. })),
            "{result:?}"
        );
        crate::remove::remove_tree(&src).unwrap();
    }
}
