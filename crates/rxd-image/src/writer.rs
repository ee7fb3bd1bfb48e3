//! The writer every unpack goes through, whatever the archive's format (tar or squashfs): every
//! path is checked component by component; the work happens in a private 0700 staging directory
//! reached only by descriptor (`tree::Staging`): every parent of a new entry is opened one
//! component at a time with `O_DIRECTORY | O_NOFOLLOW` (so never through a symlink or a file,
//! whatever an earlier entry put there), every entry is made relative to its parent's
//! descriptor and finished through its own descriptor or with `AT_SYMLINK_NOFOLLOW`, and the
//! directory is renamed into place only when everything succeeded.

use crate::tree::Staging;
use crate::{parse_metadata, IdShift, ImageError, ImageMetadata, Limits};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What an unpack produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub metadata: ImageMetadata,
    /// Device nodes and FIFOs in the archive, which are not created: a container gets its
    /// devices from the runtime, never from an image.
    pub skipped_special: u64,
    /// Bytes of regular files written (what `Limits::max_total_bytes` bounds).
    pub bytes: u64,
    /// The root filesystem (a squashfs) carried extended attributes (file capabilities,
    /// ACLs), which are not written.
    pub xattrs_dropped: bool,
}

const TOP_LEVEL: [&str; 3] = ["metadata.yaml", "rootfs", "templates"];

pub(crate) fn archive_err(e: std::io::Error) -> ImageError {
    ImageError::Archive(e.to_string())
}

/// A relative path of plain components (leading `./` allowed), or why not.
pub(crate) fn clean(raw: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok(out)
}

pub(crate) fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Map an archive id through the shift.
fn map_id(id: u64, base: u32, shift: Option<&IdShift>, path: &Path) -> Result<u32, ImageError> {
    match shift {
        None => u32::try_from(id).map_err(|_| ImageError::IdOutOfMap {
            path: path_str(path),
            id,
            max: u32::MAX,
        }),
        Some(s) if id < u64::from(s.size) => Ok(base + id as u32),
        Some(s) => Err(ImageError::IdOutOfMap {
            path: path_str(path),
            id,
            max: s.size - 1,
        }),
    }
}

/// What one archive of an image holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Part {
    /// A unified image: `metadata.yaml`, `rootfs/`, `templates/`.
    Unified,
    /// A split image's metadata: `metadata.yaml` and `templates/` only.
    Meta,
    /// A split image's root filesystem: the root's own contents, unpacked under `rootfs/`.
    Rootfs,
}

/// What kind of thing an archive entry is, whatever the archive's format.
pub(crate) enum Kind {
    Dir,
    File,
    Symlink(std::ffi::OsString),
    HardLink(PathBuf),
    /// A device node, FIFO or socket: never created.
    Special,
    Unsupported(String),
}

/// One entry of an archive (tar or squashfs), as the writer needs it.
pub(crate) struct Entry<'a> {
    /// The path as the archive names it, relative to the part's top.
    pub(crate) raw: PathBuf,
    pub(crate) kind: Kind,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    /// What the archive says the file holds (a bound is checked before reading it).
    pub(crate) size: u64,
    pub(crate) data: &'a mut dyn Read,
}

/// Fills the staging tree entry by entry under one set of limits, whatever the archives'
/// formats; [`Writer::finish`] checks the result and renames it into place.
pub(crate) struct Writer<'l> {
    stage: Staging,
    shift: Option<&'l IdShift>,
    limits: &'l Limits,
    entries_seen: u64,
    /// Bytes written (and read past, for the tar reader's skipped data).
    pub(crate) bytes: u64,
    skipped_special: u64,
    pub(crate) xattrs_dropped: bool,
    /// Directory modes and owners are applied at the end, deepest first, so read-only
    /// directories can still be filled.
    dirs: Vec<(PathBuf, u32, u32, u32)>,
}

fn at(p: &Path) -> impl Fn(rustix::io::Errno) -> ImageError {
    let p = path_str(p);
    move |e: rustix::io::Errno| ImageError::Io {
        path: p.clone(),
        source: e.into(),
    }
}

pub(crate) fn io(p: &Path) -> impl Fn(std::io::Error) -> ImageError {
    let p = path_str(p);
    move |e: std::io::Error| ImageError::Io {
        path: p.clone(),
        source: e,
    }
}

impl<'l> Writer<'l> {
    pub(crate) fn new(stage: Staging, shift: Option<&'l IdShift>, limits: &'l Limits) -> Self {
        Writer {
            stage,
            shift,
            limits,
            entries_seen: 0,
            bytes: 0,
            skipped_special: 0,
            xattrs_dropped: false,
            dirs: Vec::new(),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        self.limits
    }

    /// Create one entry (or refuse it, and with it the image).
    pub(crate) fn add(&mut self, part: Part, entry: Entry<'_>) -> Result<(), ImageError> {
        let limits = self.limits;
        let shift = self.shift;
        let Entry {
            raw,
            kind,
            mode,
            uid,
            gid,
            size,
            data,
        } = entry;
        self.entries_seen += 1;
        if self.entries_seen > limits.max_entries {
            return Err(ImageError::TooManyEntries(limits.max_entries));
        }
        let rel = clean(&raw).map_err(|reason| ImageError::UnsafePath {
            path: path_str(&raw),
            reason,
        })?;
        let rel = if part == Part::Rootfs {
            Path::new("rootfs").join(rel)
        } else {
            rel
        };
        // Deeper than any walk of a container's tree goes: refused here, where nothing is made.
        if rel.components().count() > crate::walk::MAX_DEPTH {
            return Err(ImageError::UnsafePath {
                path: path_str(&raw),
                reason: "is nested deeper than a container's tree may be",
            });
        }
        let Some(top) = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
        else {
            // "./" itself.
            return Ok(());
        };
        if part == Part::Meta && top == "rootfs" {
            return Err(ImageError::UnsafePath {
                path: path_str(&raw),
                reason: "is a root filesystem entry in a split image's metadata tarball",
            });
        }
        if !TOP_LEVEL.contains(&top.as_str()) {
            return Err(ImageError::UnsafePath {
                path: path_str(&raw),
                reason: "is outside metadata.yaml, rootfs/ and templates/",
            });
        }
        let is_top = rel.components().count() == 1;
        if is_top && matches!(kind, Kind::Symlink(_) | Kind::HardLink(_)) {
            return Err(ImageError::LinkedTopLevel { name: top });
        }
        if top == "metadata.yaml" && !(is_top && matches!(kind, Kind::File)) {
            return Err(ImageError::UnsafePath {
                path: path_str(&raw),
                reason: "metadata.yaml must be a regular file",
            });
        }
        if top == "metadata.yaml" && size > limits.max_metadata_bytes {
            return Err(ImageError::MetadataTooLarge(limits.max_metadata_bytes));
        }
        let uid = map_id(uid, shift.map_or(0, |s| s.uid_base), shift, &rel)?;
        let gid = map_id(gid, shift.map_or(0, |s| s.gid_base), shift, &rel)?;
        let owner = (
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        );

        let (dir, name) = self.stage.parent(&rel, true)?;
        let existing = match rustix::fs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(rustix::fs::FileType::from_raw_mode(st.st_mode)),
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => return Err(at(&rel)(e)),
        };
        let conflict = || ImageError::Conflict {
            path: path_str(&rel),
        };
        match kind {
            Kind::Dir => {
                match existing {
                    Some(rustix::fs::FileType::Directory) => {}
                    Some(_) => return Err(conflict()),
                    None => rustix::fs::mkdirat(&dir, name.as_c_str(), Mode::from_raw_mode(0o700))
                        .map_err(at(&rel))?,
                }
                self.dirs.push((rel, mode, uid, gid));
            }
            Kind::File => {
                match existing {
                    // A later copy of a file replaces it (tar semantics); nothing else may be replaced.
                    Some(rustix::fs::FileType::RegularFile) => {
                        rustix::fs::unlinkat(&dir, name.as_c_str(), AtFlags::empty())
                            .map_err(at(&rel))?
                    }
                    Some(_) => return Err(conflict()),
                    None => {}
                }
                let remaining = limits.max_total_bytes - self.bytes;
                if size > remaining {
                    return Err(ImageError::TooLarge(limits.max_total_bytes));
                }
                let fd = rustix::fs::openat(
                    &dir,
                    name.as_c_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(at(&rel))?;
                let mut out = File::from(fd);
                let n =
                    std::io::copy(&mut data.take(remaining + 1), &mut out).map_err(archive_err)?;
                self.bytes += n;
                if self.bytes > limits.max_total_bytes {
                    return Err(ImageError::TooLarge(limits.max_total_bytes));
                }
                out.flush().map_err(io(&rel))?;
                // chown first: it clears setuid/setgid bits, which the mode then sets.
                rustix::fs::fchown(&out, owner.0, owner.1).map_err(at(&rel))?;
                rustix::fs::fchmod(&out, Mode::from_raw_mode(mode)).map_err(at(&rel))?;
            }
            Kind::Symlink(link) => {
                if existing.is_some() {
                    return Err(conflict());
                }
                let link = std::ffi::CString::new(link.as_bytes())
                    .map_err(|_| ImageError::Archive("symlink target with a NUL byte".into()))?;
                // Any target is fine: it is never followed here, and the container resolves it in its own root.
                rustix::fs::symlinkat(link.as_c_str(), &dir, name.as_c_str()).map_err(at(&rel))?;
                rustix::fs::chownat(
                    &dir,
                    name.as_c_str(),
                    owner.0,
                    owner.1,
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(at(&rel))?;
            }
            Kind::HardLink(link) => {
                if existing.is_some() {
                    return Err(conflict());
                }
                let escaping = || ImageError::EscapingLink {
                    path: path_str(&rel),
                    target: path_str(&link),
                };
                let src_rel = clean(&link).map_err(|_| escaping())?;
                if src_rel.as_os_str().is_empty() {
                    return Err(escaping());
                }
                let src_rel = if part == Part::Rootfs {
                    Path::new("rootfs").join(src_rel)
                } else {
                    src_rel
                };
                // The source must already be a regular file of the image, reached through its
                // directories only.
                let (src_dir, src_name) =
                    self.stage.parent(&src_rel, false).map_err(|_| escaping())?;
                match rustix::fs::statat(&src_dir, src_name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st)
                        if rustix::fs::FileType::from_raw_mode(st.st_mode)
                            == rustix::fs::FileType::RegularFile =>
                    {
                        rustix::fs::linkat(
                            &src_dir,
                            src_name.as_c_str(),
                            &dir,
                            name.as_c_str(),
                            AtFlags::empty(),
                        )
                        .map_err(at(&rel))?
                    }
                    _ => return Err(escaping()),
                }
            }
            Kind::Special => self.skipped_special += 1,
            Kind::Unsupported(kind) => {
                return Err(ImageError::UnsupportedEntry {
                    path: path_str(&rel),
                    kind,
                })
            }
        }
        Ok(())
    }

    /// Check the tree is an image, set the directories' modes and owners, and publish it.
    pub(crate) fn finish(self, tmp: &Path, dest: &Path) -> Result<Unpacked, ImageError> {
        let stage = &self.stage;
        let text = match rustix::fs::openat(
            stage.root(),
            c"metadata.yaml",
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => read_regular(fd, self.limits.max_metadata_bytes)?,
            Err(_) => return Err(ImageError::MissingMetadata),
        };
        let metadata = parse_metadata(&text)?;
        let (skipped_special, bytes, xattrs_dropped) =
            (self.skipped_special, self.bytes, self.xattrs_dropped);
        self.settle(tmp, dest)?;
        Ok(Unpacked {
            metadata,
            skipped_special,
            bytes,
            xattrs_dropped,
        })
    }

    /// Check the tree has a root filesystem, set the directories' modes and owners, and
    /// publish it at `dest` (a backup's trees: `metadata.yaml` is not required there).
    pub(crate) fn settle(self, tmp: &Path, dest: &Path) -> Result<(), ImageError> {
        let stage = &self.stage;
        match rustix::fs::statat(stage.root(), c"rootfs", AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st)
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::Directory => {}
            _ => return Err(ImageError::MissingRootfs),
        }
        let mut dirs = self.dirs;
        dirs.sort_by_key(|(p, ..)| std::cmp::Reverse(p.components().count()));
        for (rel, mode, uid, gid) in dirs {
            let (dir, name) = stage.parent(&rel, false)?;
            let fd = rustix::fs::openat(
                &dir,
                name.as_c_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(at(&rel))?;
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(at(&rel))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(at(&rel))?;
        }
        crate::durable::publish(tmp, dest).map_err(io(dest))
    }
}

/// The text of a regular file held open, at most `max` bytes.
fn read_regular(fd: OwnedFd, max: u64) -> Result<String, ImageError> {
    let st = rustix::fs::fstat(&fd).map_err(|e| ImageError::Io {
        path: "metadata.yaml".into(),
        source: e.into(),
    })?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(ImageError::MissingMetadata);
    }
    let mut text = String::new();
    File::from(fd)
        .take(max)
        .read_to_string(&mut text)
        .map_err(|e| ImageError::Io {
            path: "metadata.yaml".into(),
            source: e,
        })?;
    Ok(text)
}
