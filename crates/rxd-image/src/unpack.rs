//! The unpacker: tarballs (gzip, xz, zstd or plain) read entry by entry, a squashfs root
//! filesystem through `squashfs`, and every entry handed to the one writer (`writer`) that
//! enforces the rules and publishes the tree only when everything succeeded.

use crate::tree::Staging;
use crate::writer::{archive_err, clean, io, path_str, Entry, Kind, Part, Unpacked, Writer};
use crate::{parse_metadata, IdShift, ImageError, ImageMetadata, Limits};
use std::cell::Cell;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tar::EntryType;

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

/// Removes the temporary directory unless the unpack succeeded.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = crate::remove::remove_tree(&p);
        }
    }
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
    let mut writer = Writer::new(stage, shift, limits);
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

/// Where an entry of an instance backup goes.
enum BackupPlace {
    /// `backup/`, `backup/snapshots/`, a listed snapshot's own directory: nothing to make.
    Skip,
    /// `backup/index.yaml` and the `backup.yaml` files: never read here (the caller takes
    /// `index.yaml` alone from [`read_backup_index`]), drained.
    Ignore,
    /// Into the instance's tree (`None`) or a snapshot's, at this path relative to it.
    Tree(Option<String>, PathBuf),
}

fn backup_place(rel: &Path, snapshots: &[String]) -> Result<BackupPlace, &'static str> {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let rest = |from: usize| parts[from..].iter().collect::<PathBuf>();
    match parts
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["backup"] | ["backup", "snapshots"] | ["backup", "container"] => Ok(BackupPlace::Skip),
        ["backup", "index.yaml"] | ["backup", "container", "backup.yaml"] => {
            Ok(BackupPlace::Ignore)
        }
        ["backup", "container", ..] => Ok(BackupPlace::Tree(None, rest(2))),
        ["backup", "snapshots", snap, tail @ ..] => {
            if !snapshots.iter().any(|s| s == snap) {
                return Err("is in a snapshot directory index.yaml does not list");
            }
            match tail {
                [] => Ok(BackupPlace::Skip),
                ["backup.yaml"] => Ok(BackupPlace::Ignore),
                _ => Ok(BackupPlace::Tree(Some((*snap).to_owned()), rest(3))),
            }
        }
        ["backup", "container.bin" | "optimized_header.yaml"] => {
            Err("is part of an optimized (btrfs send) backup, which rxd does not import")
        }
        _ => Err("is outside backup/index.yaml, backup/container/ and backup/snapshots/"),
    }
}

/// The largest `backup/index.yaml` read: each snapshot brings its config and expanded config.
pub const MAX_BACKUP_INDEX: u64 = 4 << 20;

/// The text of `backup/index.yaml`, which must come first in the archive (LXD writes it
/// first), at most [`MAX_BACKUP_INDEX`] bytes.
pub fn read_backup_index(tarball: &Path) -> Result<String, ImageError> {
    let mut ar = archive(tarball)?;
    for entry in ar.entries()? {
        let mut entry = entry.map_err(archive_err)?;
        let raw = entry.path().map_err(archive_err)?.into_owned();
        let rel = clean(&raw).map_err(|reason| ImageError::UnsafePath {
            path: path_str(&raw),
            reason,
        })?;
        if rel.as_os_str().is_empty() || rel == Path::new("backup") {
            continue;
        }
        if rel != Path::new("backup/index.yaml")
            || entry.header().entry_type() != EntryType::Regular
        {
            return Err(ImageError::Archive(
                "not an instance backup: backup/index.yaml must be its first file".into(),
            ));
        }
        if entry.size() > MAX_BACKUP_INDEX {
            return Err(ImageError::MetadataTooLarge(MAX_BACKUP_INDEX));
        }
        let mut text = String::new();
        entry
            .by_ref()
            .take(MAX_BACKUP_INDEX)
            .read_to_string(&mut text)
            .map_err(archive_err)?;
        return Ok(text);
    }
    Err(ImageError::Archive(
        "not an instance backup: no backup/index.yaml".into(),
    ))
}

/// Every file of an optimized instance backup after `backup/index.yaml`, in archive order: its
/// path (checked as [`unpack_backup`] checks paths: no `..`, no absolute name) and its data,
/// read or not by `each` (what it leaves is skipped). Directory entries are passed over; any
/// other kind of entry (a link, a device) refuses the archive, and so do more than
/// `max_entries` entries or more than `max_bytes` of data in all.
pub fn each_backup_file(
    tarball: &Path,
    max_entries: u64,
    max_bytes: u64,
    mut each: impl FnMut(&str, &mut dyn Read) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let mut ar = archive(tarball)?;
    let (mut entries, mut bytes) = (0u64, 0u64);
    for entry in ar.entries()? {
        let mut entry = entry.map_err(archive_err)?;
        entries += 1;
        if entries > max_entries {
            return Err(ImageError::TooManyEntries(max_entries));
        }
        let raw = entry.path().map_err(archive_err)?.into_owned();
        let rel = clean(&raw).map_err(|reason| ImageError::UnsafePath {
            path: path_str(&raw),
            reason,
        })?;
        match entry.header().entry_type() {
            EntryType::Directory => continue,
            EntryType::Regular => {}
            _ => {
                return Err(ImageError::Archive(format!(
                    "{}: an optimized backup holds files only",
                    path_str(&rel)
                )))
            }
        }
        bytes = bytes.saturating_add(entry.size());
        if bytes > max_bytes {
            return Err(ImageError::TooLarge(max_bytes));
        }
        let name = rel.to_str().ok_or_else(|| ImageError::UnsafePath {
            path: path_str(&rel),
            reason: "not UTF-8",
        })?;
        let name = name.to_owned();
        let mut counted = (&mut entry).take(u64::MAX);
        each(&name, &mut counted)?;
        std::io::copy(&mut counted, &mut std::io::sink()).map_err(archive_err)?;
    }
    Ok(())
}

/// Unpack an instance backup into `dest` (which must not exist): `dest/container/` (its
/// `metadata.yaml`, `templates/`, `rootfs/`) and `dest/snapshots/<name>/` for each of
/// `snapshots` (the names `index.yaml` lists: an entry of any other snapshot, or anywhere else,
/// refuses the backup). Owners are kept as archived (the container's ids); every entry goes
/// through the image writer's rules under one set of limits; `backup.yaml` files are drained,
/// never parsed. `limits` bound the whole archive (entries and bytes across every tree).
/// Nothing is left at `dest` on error. Returns the bytes written for the instance and for each
/// snapshot, in `snapshots`' order.
pub fn unpack_backup(
    tarball: &Path,
    dest: &Path,
    snapshots: &[String],
    limits: &Limits,
) -> Result<(u64, Vec<u64>), ImageError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(ImageError::Io {
            path: path_str(dest),
            source: std::io::ErrorKind::AlreadyExists.into(),
        });
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".unpack-{}", uuid::Uuid::new_v4()));
    fs::create_dir(&tmp).map_err(io(&tmp))?;
    let mut guard = TempDir(Some(tmp.clone()));
    fs::create_dir(tmp.join("snapshots")).map_err(io(&tmp))?;
    let stage_of = |name: &Option<String>| match name {
        None => tmp.join(".container"),
        Some(s) => tmp.join(format!(".snapshot-{s}")),
    };
    let mut writers: std::collections::BTreeMap<Option<String>, Writer<'_>> = Default::default();
    let mut bytes = 0u64;
    let mut seen = 0u64;
    let mut sizes: std::collections::BTreeMap<Option<String>, u64> = Default::default();
    let mut ar = archive(tarball)?;
    for entry in ar.entries()? {
        let mut entry = entry.map_err(archive_err)?;
        // One count of entries for the whole archive, whatever tree they go to.
        seen += 1;
        if seen > limits.max_entries {
            return Err(ImageError::TooManyEntries(limits.max_entries));
        }
        let raw = entry.path().map_err(archive_err)?.into_owned();
        let rel = clean(&raw).map_err(|reason| ImageError::UnsafePath {
            path: path_str(&raw),
            reason,
        })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let place = backup_place(&rel, snapshots).map_err(|reason| ImageError::UnsafePath {
            path: path_str(&raw),
            reason,
        })?;
        let (tree, inner) = match place {
            BackupPlace::Skip => continue,
            BackupPlace::Ignore => {
                drain(&mut entry, &mut bytes, limits)?;
                continue;
            }
            BackupPlace::Tree(tree, inner) => (tree, inner),
        };
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
            EntryType::Link => {
                // A hard link's target is named from the archive's root: it must lie in the
                // same tree, and is then named from that tree's top.
                let target = entry
                    .link_name()
                    .map_err(archive_err)?
                    .ok_or_else(|| ImageError::Archive("hardlink without a target".into()))?
                    .into_owned();
                let escaping = || ImageError::EscapingLink {
                    path: path_str(&raw),
                    target: path_str(&target),
                };
                let target = clean(&target).map_err(|_| escaping())?;
                match backup_place(&target, snapshots) {
                    Ok(BackupPlace::Tree(t, inner)) if t == tree => Kind::HardLink(inner),
                    _ => return Err(escaping()),
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => Kind::Special,
            other => Kind::Unsupported(format!("{other:?}")),
        };
        let (mode, uid, gid) = (
            header.mode().map_err(archive_err)? & 0o7777,
            header.uid().map_err(archive_err)?,
            header.gid().map_err(archive_err)?,
        );
        let size = entry.size();
        let writer = match writers.entry(tree.clone()) {
            std::collections::btree_map::Entry::Occupied(w) => w.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let stage = Staging::create(&stage_of(&tree))?;
                v.insert(Writer::new(stage, None, limits))
            }
        };
        writer.add(
            Part::Unified,
            Entry {
                raw: inner,
                kind,
                mode,
                uid,
                gid,
                size,
                data: &mut entry,
            },
        )?;
        drain(&mut entry, &mut writer.bytes, limits)?;
        bytes += size;
        *sizes.entry(tree.clone()).or_default() += size;
        if bytes > limits.max_total_bytes {
            return Err(ImageError::TooLarge(limits.max_total_bytes));
        }
    }
    if !writers.contains_key(&None) {
        return Err(ImageError::MissingRootfs);
    }
    for snap in snapshots {
        if !writers.contains_key(&Some(snap.clone())) {
            return Err(ImageError::Archive(format!(
                "index.yaml lists snapshot {snap:?}, which the backup does not hold"
            )));
        }
    }
    for (tree, writer) in writers {
        let to = match &tree {
            None => tmp.join("container"),
            Some(s) => tmp.join("snapshots").join(s),
        };
        writer.settle(&stage_of(&tree), &to)?;
    }
    crate::durable::publish(&tmp, dest).map_err(io(dest))?;
    guard.0 = None;
    let of = |t: Option<String>| sizes.get(&t).copied().unwrap_or(0);
    Ok((
        of(None),
        snapshots.iter().map(|s| of(Some(s.clone()))).collect(),
    ))
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
