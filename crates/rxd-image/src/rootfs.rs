//! Files inside a container's root filesystem, seen from the host (the files API).
//!
//! Every path is resolved by the kernel with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV)` on a descriptor of the root filesystem: symlinks and `..` are followed as
//! the container would follow them, and can never lead out of it, whatever the container does
//! to its files meanwhile. The last component is never followed: a symlink is reported (or
//! replaced, or removed) as a symlink. Only regular files, directories and symlinks are read;
//! a device node or FIFO is refused before it is opened. Writes go to a new file in the target
//! directory, renamed over the target once complete, so a failed upload leaves nothing behind.

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Longest path accepted (as Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("Not found")]
    NotFound,
    #[error("Invalid path {0:?}: {1}")]
    InvalidPath(String, &'static str),
    #[error("{0:?} is a {1}: only files, directories and symlinks can be read")]
    Unsupported(String, &'static str),
    #[error("{0:?} is a directory")]
    IsDirectory(String),
    #[error("{0:?} is not a regular file")]
    NotRegular(String),
    #[error("The directory {0:?} is not empty")]
    NotEmpty(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<rustix::io::Errno> for FileError {
    fn from(e: rustix::io::Errno) -> Self {
        if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR {
            FileError::NotFound
        } else {
            FileError::Io(e.into())
        }
    }
}

type Result<T> = std::result::Result<T, FileError>;

/// Owner and permission bits, as stored on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

pub enum Entry {
    File(File, Meta, u64),
    Directory(Vec<String>, Meta),
    Symlink(String, Meta),
}

/// An upload in progress: a new file next to its target, renamed over it by [`commit`]
/// (or appended to in place); dropped uncommitted, the new file is removed.
///
/// [`commit`]: Upload::commit
pub struct Upload {
    file: Option<File>,
    dir: OwnedFd,
    temp: Option<String>,
    name: String,
}

impl Upload {
    /// The file to write the content to.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("until committed")
    }

    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("until committed");
        file.sync_all()?;
        drop(file);
        if let Some(temp) = self.temp.take() {
            let renamed = rustix::fs::renameat(&self.dir, &temp, &self.dir, &self.name);
            if let Err(e) = renamed {
                let _ = rustix::fs::unlinkat(&self.dir, &temp, AtFlags::empty());
                return Err(if e == rustix::io::Errno::ISDIR {
                    FileError::IsDirectory(self.name.clone())
                } else {
                    e.into()
                });
            }
        }
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(temp) = &self.temp {
            let _ = rustix::fs::unlinkat(&self.dir, temp, AtFlags::empty());
        }
    }
}

pub struct Rootfs {
    root: OwnedFd,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV
}

fn meta(st: &rustix::fs::Stat) -> Meta {
    Meta {
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
    }
}

fn kind(mode: u32) -> &'static str {
    match rustix::fs::FileType::from_raw_mode(mode) {
        rustix::fs::FileType::RegularFile => "file",
        rustix::fs::FileType::Directory => "directory",
        rustix::fs::FileType::Symlink => "symlink",
        rustix::fs::FileType::Fifo => "FIFO",
        rustix::fs::FileType::Socket => "socket",
        rustix::fs::FileType::CharacterDevice => "character device",
        rustix::fs::FileType::BlockDevice => "block device",
        _ => "special file",
    }
}

fn check(path: &str) -> Result<()> {
    let bad = |why| Err(FileError::InvalidPath(path.to_owned(), why));
    if !path.starts_with('/') {
        return bad("must be absolute");
    }
    if path.len() > MAX_PATH || path.contains('\0') {
        return bad("too long or holds a NUL byte");
    }
    Ok(())
}

/// `path` split into its parent (relative to the root) and its last component.
fn split(path: &str) -> Result<(String, String)> {
    check(path)?;
    let bad = |why| FileError::InvalidPath(path.to_owned(), why);
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", ""));
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad("names no file"));
    }
    let parent = if parent.is_empty() { "/" } else { parent };
    Ok((parent.to_owned(), name.to_owned()))
}

impl Rootfs {
    /// The root filesystem at `dir` (a host path the daemon owns).
    pub fn open(dir: &Path) -> Result<Rootfs> {
        let root = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Rootfs { root })
    }

    fn open_in(&self, path: &str, flags: OFlags) -> Result<OwnedFd> {
        Ok(rustix::fs::openat2(
            &self.root,
            path,
            // openat2 refuses anything but these with O_PATH.
            if flags.contains(OFlags::PATH) {
                flags | OFlags::CLOEXEC
            } else {
                flags | OFlags::CLOEXEC | OFlags::NOCTTY
            },
            Mode::empty(),
            resolve(),
        )?)
    }

    /// The directory `path` lives in, as a descriptor to create or remove entries in.
    fn parent(&self, path: &str) -> Result<(OwnedFd, String)> {
        let (parent, name) = split(path)?;
        let dir = self.open_in(&parent, OFlags::RDONLY | OFlags::DIRECTORY)?;
        Ok((dir, name))
    }

    /// What is at `path`: a file's content, a directory's names, or a symlink's target.
    pub fn get(&self, path: &str) -> Result<Entry> {
        check(path)?;
        // O_PATH first: nothing is opened for reading until we know what it is.
        let handle = self.open_in(path, OFlags::PATH | OFlags::NOFOLLOW)?;
        let st = rustix::fs::fstat(&handle)?;
        let m = meta(&st);
        match kind(st.st_mode) {
            "symlink" => {
                let target = rustix::fs::readlinkat(&handle, "", Vec::new())?;
                Ok(Entry::Symlink(target.to_string_lossy().into_owned(), m))
            }
            "directory" => {
                let fd = reopen(&handle, OFlags::RDONLY | OFlags::DIRECTORY)?;
                same_inode(&fd, &st)?;
                let mut names = Vec::new();
                for entry in rustix::fs::Dir::read_from(&fd)? {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name != "." && name != ".." {
                        names.push(name);
                    }
                }
                names.sort();
                Ok(Entry::Directory(names, m))
            }
            "file" => {
                let fd = reopen(&handle, OFlags::RDONLY | OFlags::NONBLOCK)?;
                same_inode(&fd, &st)?;
                Ok(Entry::File(File::from(fd), m, st.st_size as u64))
            }
            other => Err(FileError::Unsupported(path.to_owned(), other)),
        }
    }

    /// Start writing the regular file at `path`, owned by `uid`:`gid` (host ids) with `mode`.
    /// With `append`, an existing file is appended to in place (and keeps its owner and mode).
    pub fn upload(
        &self,
        path: &str,
        uid: u32,
        gid: u32,
        mode: u32,
        append: bool,
    ) -> Result<Upload> {
        let (dir, name) = self.parent(path)?;
        if append {
            match rustix::fs::openat(
                &dir,
                &name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(handle) => {
                    let st = rustix::fs::fstat(&handle)?;
                    if kind(st.st_mode) != "file" {
                        return Err(FileError::NotRegular(path.to_owned()));
                    }
                    let fd = reopen(&handle, OFlags::WRONLY | OFlags::APPEND | OFlags::NONBLOCK)?;
                    same_inode(&fd, &st)?;
                    return Ok(Upload {
                        file: Some(File::from(fd)),
                        dir,
                        temp: None,
                        name,
                    });
                }
                Err(e) if e == rustix::io::Errno::NOENT => {}
                Err(e) => return Err(e.into()),
            }
        }
        let temp = format!(".rxd-upload-{}", uuid::Uuid::new_v4().simple());
        let fd = rustix::fs::openat(
            &dir,
            &temp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let upload = Upload {
            file: Some(File::from(fd)),
            dir,
            temp: Some(temp),
            name,
        };
        let fd = upload.file.as_ref().expect("just opened").as_fd();
        rustix::fs::fchown(fd, Some(uid_of(uid)), Some(gid_of(gid)))?;
        // After the chown, which clears set-id bits.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?;
        Ok(upload)
    }

    /// Create the directory `path` (an existing directory is left as it is).
    pub fn mkdir(&self, path: &str, uid: u32, gid: u32, mode: u32) -> Result<()> {
        let (dir, name) = self.parent(path)?;
        match rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::EXIST => {
                let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
                if kind(st.st_mode) == "directory" {
                    return Ok(());
                }
                return Err(FileError::Io(e.into()));
            }
            Err(e) => return Err(e.into()),
        }
        let fd = rustix::fs::openat(
            &dir,
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::fs::fchown(&fd, Some(uid_of(uid)), Some(gid_of(gid)))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))?;
        Ok(())
    }

    /// Create (or replace) the symlink `path` → `target`. The target is only text: it is
    /// resolved inside the container by whoever follows it.
    pub fn symlink(&self, path: &str, target: &str, uid: u32, gid: u32) -> Result<()> {
        if target.is_empty() || target.len() > MAX_PATH || target.contains('\0') {
            return Err(FileError::InvalidPath(
                target.to_owned(),
                "is not a symlink target",
            ));
        }
        let (dir, name) = self.parent(path)?;
        let temp = format!(".rxd-link-{}", uuid::Uuid::new_v4().simple());
        rustix::fs::symlinkat(target, &dir, &temp)?;
        let placed = rustix::fs::chownat(
            &dir,
            &temp,
            Some(uid_of(uid)),
            Some(gid_of(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .and_then(|()| rustix::fs::renameat(&dir, &temp, &dir, &name));
        if let Err(e) = placed {
            let _ = rustix::fs::unlinkat(&dir, &temp, AtFlags::empty());
            return Err(if e == rustix::io::Errno::ISDIR {
                FileError::IsDirectory(path.to_owned())
            } else {
                e.into()
            });
        }
        Ok(())
    }

    /// Remove the file, symlink or empty directory at `path`.
    pub fn remove(&self, path: &str) -> Result<()> {
        let (dir, name) = self.parent(path)?;
        let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
        let flags = if kind(st.st_mode) == "directory" {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        rustix::fs::unlinkat(&dir, &name, flags).map_err(|e| {
            if e == rustix::io::Errno::NOTEMPTY || e == rustix::io::Errno::EXIST {
                FileError::NotEmpty(path.to_owned())
            } else {
                e.into()
            }
        })
    }
}

fn uid_of(uid: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(uid)
}

fn gid_of(gid: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(gid)
}

/// Open for real the very inode an O_PATH descriptor names (through its /proc/self/fd link),
/// once its type is known: what the container swaps in meanwhile is never opened, so a device
/// node's open never runs with the host's root behind it.
fn reopen(handle: &OwnedFd, flags: OFlags) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    Ok(rustix::fs::open(
        format!("/proc/self/fd/{}", handle.as_raw_fd()),
        flags | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?)
}

/// The descriptor opened for reading is the object first examined through O_PATH.
fn same_inode(fd: &OwnedFd, st: &rustix::fs::Stat) -> Result<()> {
    let now = rustix::fs::fstat(fd)?;
    if now.st_dev != st.st_dev || now.st_ino != st.st_ino {
        return Err(FileError::NotFound);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    /// A root filesystem, and beside it a "host" file it must never reach.
    fn fixture() -> (tempfile::TempDir, Rootfs) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), "c1\n").unwrap();
        std::fs::write(t.path().join("host-secret"), "host\n").unwrap();
        symlink("/etc", root.join("abs-link")).unwrap();
        symlink("../../../..", root.join("up")).unwrap();
        symlink("../host-secret", root.join("etc/escape")).unwrap();
        symlink("/proc/self/root", root.join("magic")).unwrap();
        let fs = Rootfs::open(&root).unwrap();
        (t, fs)
    }

    fn read(fs: &Rootfs, path: &str) -> std::result::Result<String, String> {
        match fs.get(path).map_err(|e| e.to_string())? {
            Entry::File(mut f, _, _) => {
                let mut s = String::new();
                f.read_to_string(&mut s).unwrap();
                Ok(s)
            }
            Entry::Directory(names, _) => Ok(format!("dir {names:?}")),
            Entry::Symlink(target, _) => Ok(format!("link {target}")),
        }
    }

    #[test]
    fn reads_resolve_inside_the_root_only() {
        let (_t, fs) = fixture();
        let cases: &[(&str, std::result::Result<&str, &str>)] = &[
            ("/etc/hostname", Ok("c1\n")),
            ("/abs-link/hostname", Ok("c1\n")),
            ("/up/etc/hostname", Ok("c1\n")),
            ("/up/host-secret", Err("Not found")),
            ("/../host-secret", Err("Not found")),
            ("/etc/../../host-secret", Err("Not found")),
            ("/etc/escape", Ok("link ../host-secret")),
            // A trailing slash follows the link: to a file that is not in the root.
            ("/etc/escape/", Err("Not found")),
            ("/magic/etc/hostname", Err("")),
            ("/missing", Err("Not found")),
            ("etc/hostname", Err("must be absolute")),
            ("/", Ok("dir [\"abs-link\", \"etc\", \"magic\", \"up\"]")),
        ];
        for (path, want) in cases {
            let got = read(&fs, path);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{path}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{path}: {g}"),
                _ => panic!("{path}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn writes_land_inside_the_root_atomically() {
        let (t, fs) = fixture();
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        // Through symlinks that point "outside": still inside.
        let mut up = fs.upload("/up/etc/new", me.0, me.1, 0o640, false).unwrap();
        up.file().write_all(b"hello").unwrap();
        // Nothing visible before the commit.
        assert!(!t.path().join("rootfs/etc/new").exists());
        up.commit().unwrap();
        assert_eq!(
            std::fs::read(t.path().join("rootfs/etc/new")).unwrap(),
            b"hello"
        );
        let m = std::fs::metadata(t.path().join("rootfs/etc/new")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777,
            0o640
        );
        // Overwriting a symlink replaces the link, never its target.
        let mut up = fs.upload("/etc/escape", me.0, me.1, 0o644, false).unwrap();
        up.file().write_all(b"x").unwrap();
        up.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("host-secret")).unwrap(),
            "host\n"
        );
        // Appending through a symlink is refused.
        symlink("../host-secret", t.path().join("rootfs/etc/escape2")).unwrap();
        assert!(matches!(
            fs.upload("/etc/escape2", me.0, me.1, 0o644, true),
            Err(FileError::NotRegular(_))
        ));
        // An upload dropped before its commit leaves nothing.
        let mut up = fs.upload("/etc/partial", me.0, me.1, 0o644, false).unwrap();
        up.file().write_all(b"half").unwrap();
        drop(up);
        let names: Vec<_> = std::fs::read_dir(t.path().join("rootfs/etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.contains("partial") || n.starts_with(".rxd")),
            "{names:?}"
        );
        // A parent that escapes does not exist inside.
        assert!(
            matches!(
                fs.upload("/../x", me.0, me.1, 0o644, false),
                Err(FileError::InvalidPath(..)) | Err(FileError::NotFound)
            ) || !t.path().join("x").exists()
        );
        assert!(!t.path().join("x").exists());
        // Directories, symlinks, removal.
        fs.mkdir("/etc/d", me.0, me.1, 0o750).unwrap();
        fs.mkdir("/etc/d", me.0, me.1, 0o750).unwrap();
        fs.symlink("/etc/l", "/etc/hostname", me.0, me.1).unwrap();
        assert_eq!(read(&fs, "/etc/l").unwrap(), "link /etc/hostname");
        std::fs::write(t.path().join("rootfs/etc/d/f"), "").unwrap();
        assert!(matches!(fs.remove("/etc/d"), Err(FileError::NotEmpty(_))));
        fs.remove("/etc/d/f").unwrap();
        fs.remove("/etc/d").unwrap();
        fs.remove("/etc/l").unwrap();
        assert!(t.path().join("rootfs/etc/hostname").exists());
        assert!(matches!(fs.remove("/etc/l"), Err(FileError::NotFound)));
        assert!(matches!(fs.remove("/"), Err(FileError::InvalidPath(..))));
    }

    #[test]
    fn special_files_are_never_opened() {
        let (t, fs) = fixture();
        nix::unistd::mkfifo(
            &t.path().join("rootfs/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(matches!(
            fs.get("/fifo"),
            Err(FileError::Unsupported(_, "FIFO"))
        ));
    }
}
