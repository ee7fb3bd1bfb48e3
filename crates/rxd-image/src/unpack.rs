//! The unpacker. Every path is checked component by component; the work happens in a private
//! 0700 staging directory reached only by descriptor (`tree::Staging`): every parent of a new
//! entry is opened one component at a time with `O_DIRECTORY | O_NOFOLLOW` (so never through a
//! symlink or a file, whatever an earlier entry put there), every entry is made relative to its
//! parent's descriptor and finished through its own descriptor or with `AT_SYMLINK_NOFOLLOW`,
//! and the directory is renamed into place only when everything succeeded.

use crate::tree::Staging;
use crate::{parse_metadata, IdShift, ImageError, ImageMetadata, Limits};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::cell::Cell;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use tar::EntryType;

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

/// What the tar reader may read to produce the next entry: its header plus any GNU long name,
/// long link and PAX extension before it, which the `tar` crate reads whole into memory. Real
/// images need a few KiB; without a bound, a small compressed upload declaring a huge long name
/// made the daemon allocate gigabytes.
pub(crate) const HEADER_BUDGET: u64 = 1 << 20;

/// The decompressed archive, with a byte budget while the tar reader looks for the next entry.
/// `None`: unbounded (an entry's data is being read; the callers bound that themselves).
struct Budgeted<R> {
    inner: R,
    budget: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(left) = self.budget.get() else {
            return self.inner.read(buf);
        };
        if left == 0 {
            return Err(std::io::Error::other(format!(
                "the headers of an entry (long names, PAX extensions) exceed {HEADER_BUDGET} bytes"
            )));
        }
        let cap = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap])?;
        self.budget.set(Some(left - n as u64));
        Ok(n)
    }
}

/// The entries of an archive, each found within [`HEADER_BUDGET`] bytes.
struct Entries<'a> {
    inner: tar::Entries<'a, Budgeted<Box<dyn Read>>>,
    budget: Rc<Cell<Option<u64>>>,
}

impl<'a> Iterator for Entries<'a> {
    type Item = std::io::Result<tar::Entry<'a, Budgeted<Box<dyn Read>>>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.budget.set(Some(HEADER_BUDGET));
        let next = self.inner.next();
        self.budget.set(None);
        next
    }
}

/// An opened archive; see [`Archive::entries`].
struct Archive {
    tar: tar::Archive<Budgeted<Box<dyn Read>>>,
    budget: Rc<Cell<Option<u64>>>,
}

impl Archive {
    /// The entries. A caller must read or [`drain`] each entry's data before asking for the
    /// next: what is left unread would be skipped within the header budget and fail.
    fn entries(&mut self) -> Result<Entries<'_>, ImageError> {
        Ok(Entries {
            inner: self.tar.entries().map_err(archive_err)?,
            budget: self.budget.clone(),
        })
    }
}

/// Read past what is left of an entry's data, counting it into `bytes` (bounded by
/// `max_total_bytes`, so a bomb hidden in entries nobody reads is refused too).
fn drain(entry: &mut impl Read, bytes: &mut u64, limits: &Limits) -> Result<(), ImageError> {
    let remaining = limits.max_total_bytes.saturating_sub(*bytes);
    let n =
        std::io::copy(&mut entry.take(remaining + 1), &mut std::io::sink()).map_err(archive_err)?;
    *bytes += n;
    if *bytes > limits.max_total_bytes {
        return Err(ImageError::TooLarge(limits.max_total_bytes));
    }
    Ok(())
}

/// Open the archive, detecting gzip, xz and zstd by their magic bytes.
fn archive(tarball: &Path) -> Result<Archive, ImageError> {
    let io = |e| ImageError::Io {
        path: tarball.display().to_string(),
        source: e,
    };
    let mut reader = BufReader::new(File::open(tarball).map_err(io)?);
    let magic = reader.fill_buf().map_err(io)?;
    let inner: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(io)?)
    } else {
        Box::new(reader)
    };
    let budget = Rc::new(Cell::new(None));
    Ok(Archive {
        tar: tar::Archive::new(Budgeted {
            inner,
            budget: budget.clone(),
        }),
        budget,
    })
}

fn archive_err(e: std::io::Error) -> ImageError {
    ImageError::Archive(e.to_string())
}

/// A relative path of plain components (leading `./` allowed), or why not.
fn clean(raw: &Path) -> Result<PathBuf, &'static str> {
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

fn path_str(p: &Path) -> String {
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

/// Removes the temporary directory unless the unpack succeeded.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = crate::remove::remove_tree(&p);
        }
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

/// Unpack `tarball` into `dest` (which must not exist): `dest/metadata.yaml`, `dest/rootfs/...`,
/// `dest/templates/...`, with ownership mapped through `shift` (`None`: kept as archived).
pub fn unpack(
    tarball: &Path,
    dest: &Path,
    shift: Option<&IdShift>,
    limits: &Limits,
) -> Result<Unpacked, ImageError> {
    unpack_parts(&[(tarball, Part::Unified)], dest, shift, limits)
}

/// Unpack a split image (a metadata tarball and a root filesystem tarball) into `dest`, laid
/// out as [`unpack`] lays out a unified one, under the same rules and one set of limits.
pub fn unpack_split(
    meta: &Path,
    rootfs: &Path,
    dest: &Path,
    shift: Option<&IdShift>,
    limits: &Limits,
) -> Result<Unpacked, ImageError> {
    unpack_parts(
        &[(meta, Part::Meta), (rootfs, Part::Rootfs)],
        dest,
        shift,
        limits,
    )
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
    bytes: u64,
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

fn io(p: &Path) -> impl Fn(std::io::Error) -> ImageError {
    let p = path_str(p);
    move |e: std::io::Error| ImageError::Io {
        path: p.clone(),
        source: e,
    }
}

fn unpack_parts(
    parts: &[(&Path, Part)],
    dest: &Path,
    shift: Option<&IdShift>,
    limits: &Limits,
) -> Result<Unpacked, ImageError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(ImageError::Io {
            path: path_str(dest),
            source: std::io::ErrorKind::AlreadyExists.into(),
        });
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".unpack-{}", uuid::Uuid::new_v4()));
    let stage = Staging::create(&tmp)?;
    let mut guard = TempDir(Some(tmp.clone()));
    let mut writer = Writer {
        stage,
        shift,
        limits,
        entries_seen: 0,
        bytes: 0,
        skipped_special: 0,
        xattrs_dropped: false,
        dirs: Vec::new(),
    };
    for &(file, part) in parts {
        if part == Part::Rootfs && crate::squashfs::is_squashfs(file).map_err(io(file))? {
            crate::squashfs::unpack_into(file, &mut writer)?;
            continue;
        }
        let mut ar = archive(file)?;
        for entry in ar.entries()? {
            let mut entry = entry.map_err(archive_err)?;
            let header = entry.header();
            let kind = match header.entry_type() {
                EntryType::Directory => Kind::Dir,
                EntryType::Regular | EntryType::Continuous => Kind::File,
                EntryType::Symlink => Kind::Symlink(
                    entry
                        .link_name()
                        .map_err(archive_err)?
                        .ok_or_else(|| ImageError::Archive("symlink without a target".into()))?
                        .into_owned()
                        .into_os_string(),
                ),
                EntryType::Link => Kind::HardLink(
                    entry
                        .link_name()
                        .map_err(archive_err)?
                        .ok_or_else(|| ImageError::Archive("hardlink without a target".into()))?
                        .into_owned(),
                ),
                EntryType::Char | EntryType::Block | EntryType::Fifo => Kind::Special,
                other => Kind::Unsupported(format!("{other:?}")),
            };
            let raw = entry.path().map_err(archive_err)?.into_owned();
            let (mode, uid, gid) = (
                header.mode().map_err(archive_err)? & 0o7777,
                header.uid().map_err(archive_err)?,
                header.gid().map_err(archive_err)?,
            );
            let size = entry.size();
            writer.add(
                part,
                Entry {
                    raw,
                    kind,
                    mode,
                    uid,
                    gid,
                    size,
                    data: &mut entry,
                },
            )?;
            // Data a non-file entry carries (none, in a real image).
            drain(&mut entry, &mut writer.bytes, limits)?;
        }
    }
    let unpacked = writer.finish(&tmp, dest)?;
    guard.0 = None;
    Ok(unpacked)
}

impl Writer<'_> {
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
    fn finish(self, tmp: &Path, dest: &Path) -> Result<Unpacked, ImageError> {
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
        crate::durable::publish(tmp, dest).map_err(io(dest))?;
        Ok(Unpacked {
            metadata,
            skipped_special: self.skipped_special,
            bytes: self.bytes,
            xattrs_dropped: self.xattrs_dropped,
        })
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

/// Read and parse `metadata.yaml` only.
pub fn read_metadata(tarball: &Path, limits: &Limits) -> Result<ImageMetadata, ImageError> {
    let mut ar = archive(tarball)?;
    let mut skipped = 0;
    for entry in ar.entries()? {
        let mut entry = entry.map_err(archive_err)?;
        let raw = entry.path().map_err(archive_err)?.into_owned();
        if clean(&raw).ok().as_deref() != Some(Path::new("metadata.yaml")) {
            drain(&mut entry, &mut skipped, limits)?;
            continue;
        }
        if !matches!(
            entry.header().entry_type(),
            EntryType::Regular | EntryType::Continuous
        ) {
            return Err(ImageError::LinkedTopLevel {
                name: "metadata.yaml".into(),
            });
        }
        if entry.size() > limits.max_metadata_bytes {
            return Err(ImageError::MetadataTooLarge(limits.max_metadata_bytes));
        }
        let mut text = String::new();
        entry
            .take(limits.max_metadata_bytes)
            .read_to_string(&mut text)
            .map_err(archive_err)?;
        return parse_metadata(&text);
    }
    Err(ImageError::MissingMetadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A gzip'd archive whose first member is a GNU long name (or another entry type) declaring
    /// `size` bytes of zeros, then a regular file it would name.
    fn archive_with_big_member(dir: &Path, kind: EntryType, size: u64) -> PathBuf {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut h = tar::Header::new_gnu();
        h.set_path("././@LongLink").unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_cksum();
        gz.write_all(h.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        let mut left = size.div_ceil(512) * 512;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            gz.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
        let mut f = tar::Header::new_gnu();
        f.set_path("metadata.yaml").unwrap();
        f.set_size(0);
        f.set_cksum();
        gz.write_all(f.as_bytes()).unwrap();
        gz.write_all(&[0; 1024]).unwrap();
        let path = dir.join("image.tar.gz");
        fs::write(&path, gz.finish().unwrap()).unwrap();
        path
    }

    fn limits() -> Limits {
        Limits {
            max_entries: 100,
            max_total_bytes: 1 << 20,
            max_metadata_bytes: 4096,
        }
    }

    #[test]
    fn huge_long_name_is_refused_before_it_is_read_into_memory() {
        // Found by fuzz/image_unpack: a 1.5 MB upload declaring a 1.5 GiB long name made the
        // unpacker allocate 1.5 GiB. Now the header budget stops it after 1 MiB.
        let dir = tempfile::tempdir().unwrap();
        let tarball = archive_with_big_member(dir.path(), EntryType::GNULongName, 4 << 20);
        for err in [
            unpack(&tarball, &dir.path().join("out"), None, &limits()).unwrap_err(),
            read_metadata(&tarball, &limits()).unwrap_err(),
        ] {
            assert!(
                err.to_string().contains("long names, PAX extensions"),
                "{err}"
            );
        }
        assert!(!dir.path().join("out").exists());
        let pax = archive_with_big_member(dir.path(), EntryType::XHeader, 4 << 20);
        let err = read_metadata(&pax, &limits()).unwrap_err();
        assert!(err.to_string().contains("PAX extensions"), "{err}");
    }

    #[test]
    fn data_of_skipped_entries_counts_towards_the_size_limit() {
        // A directory (or device) entry carrying data: read past, but not without bound.
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_size(2 << 20);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "rootfs/", std::io::repeat(0).take(2 << 20))
            .unwrap();
        let path = dir.path().join("image.tar");
        fs::write(&path, b.into_inner().unwrap()).unwrap();
        let err = unpack(&path, &dir.path().join("out"), None, &limits()).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge(_)), "{err}");
        let err = read_metadata(&path, &limits()).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge(_)), "{err}");
    }
}
