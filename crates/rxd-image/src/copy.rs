//! Copying a container's root filesystem (snapshots and restores).
//!
//! The source may belong to a running container, so it is walked by descriptor: every entry is
//! opened relative to its parent's descriptor with `O_NOFOLLOW`, so swapping a directory for a
//! symlink mid-copy cannot lead the walk out of the tree. The destination is a new directory of
//! the daemon's (it must not exist), built privately and left for the caller to rename into
//! place. Kept: file types, content, hard links, owners (as host ids: the copy stays shifted as
//! the source was), permission bits including set-id bits, and modification times. Not kept:
//! extended attributes and holes (a sparse file is copied in full); sockets are skipped.

use crate::ImageError;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn io(path: &Path) -> impl Fn(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn errno(path: &Path) -> impl Fn(rustix::io::Errno) -> ImageError + '_ {
    move |e| ImageError::Io {
        path: path.display().to_string(),
        source: e.into(),
    }
}

/// Copy the tree at `src` to the new directory `dst`. Returns the number of entries copied.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<u64, ImageError> {
    let root = rustix::fs::open(
        src,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(src))?;
    let st = rustix::fs::fstat(&root).map_err(errno(src))?;
    rustix::fs::mkdir(dst, Mode::from_raw_mode(0o700)).map_err(errno(dst))?;
    let mut count = 1;
    copy_dir(&root, dst, &mut count, &mut HashMap::new())?;
    finish(dst, &st, true)?;
    Ok(count)
}

/// Owner, mode and times of a copied entry (mode after chown, which clears set-id bits).
fn finish(path: &Path, st: &rustix::fs::Stat, set_mode: bool) -> Result<(), ImageError> {
    let cwd = rustix::fs::CWD;
    rustix::fs::chownat(
        cwd,
        path,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(errno(path))?;
    if set_mode {
        rustix::fs::chmodat(
            cwd,
            path,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(errno(path))?;
    }
    let mtime = Timespec {
        tv_sec: st.st_mtime,
        tv_nsec: st.st_mtime_nsec as _,
    };
    rustix::fs::utimensat(
        cwd,
        path,
        &Timestamps {
            last_access: mtime,
            last_modification: mtime,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(errno(path))?;
    Ok(())
}

/// Files with more than one name, by (device, inode): the first copy's path.
type Links = HashMap<(u64, u64), std::path::PathBuf>;

fn copy_dir(
    dir: &OwnedFd,
    dst: &Path,
    count: &mut u64,
    links: &mut Links,
) -> Result<(), ImageError> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(errno(dst))? {
        let entry = entry.map_err(errno(dst))?;
        let name = entry.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    for name in names {
        let target = dst.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let st = rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno(&target))?;
        let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
        match kind {
            rustix::fs::FileType::Directory => {
                let sub = rustix::fs::openat(
                    dir,
                    name.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno(&target))?;
                rustix::fs::mkdir(&target, Mode::from_raw_mode(0o700)).map_err(errno(&target))?;
                copy_dir(&sub, &target, count, links)?;
                finish(&target, &st, true)?;
            }
            rustix::fs::FileType::RegularFile => {
                // Hard links stay links: one copy of the content, not one per name.
                let id = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = links.get(&id) {
                        std::fs::hard_link(first, &target).map_err(io(&target))?;
                        *count += 1;
                        continue;
                    }
                    links.insert(id, target.clone());
                }
                let fd = rustix::fs::openat(
                    dir,
                    name.as_c_str(),
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::CLOEXEC
                        | OFlags::NOCTTY,
                    Mode::empty(),
                )
                .map_err(errno(&target))?;
                let now = rustix::fs::fstat(&fd).map_err(errno(&target))?;
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(ImageError::Io {
                        path: target.display().to_string(),
                        source: std::io::Error::other("changed while being copied"),
                    });
                }
                let mut from = File::from(fd);
                let mut to = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(io(&target))?;
                // No more than the size seen: a file cannot grow the copy while it runs.
                std::io::copy(&mut (&mut from).take(st.st_size as u64), &mut to)
                    .map_err(io(&target))?;
                finish(&target, &st, true)?;
            }
            rustix::fs::FileType::Symlink => {
                let link = rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new())
                    .map_err(errno(&target))?;
                let link = std::ffi::OsStr::from_bytes(link.as_bytes());
                std::os::unix::fs::symlink(link, &target).map_err(io(&target))?;
                finish(&target, &st, false)?;
            }
            rustix::fs::FileType::Fifo
            | rustix::fs::FileType::CharacterDevice
            | rustix::fs::FileType::BlockDevice => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    kind,
                    Mode::from_raw_mode(0o600),
                    st.st_rdev,
                )
                .map_err(errno(&target))?;
                finish(&target, &st, true)?;
            }
            _ => continue,
        }
        *count += 1;
    }
    Ok(())
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
}
