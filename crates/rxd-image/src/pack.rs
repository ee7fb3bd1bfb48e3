//! Packing an instance's tree as an LXD unified image (`lxc publish`): `metadata.yaml`, then
//! `rootfs/` and `templates/` walked by descriptor (`walk`: nothing followed, every file read
//! through the inode the walk opened), owners mapped back to the container's own ids, hard links
//! kept, devices, FIFOs and sockets left out, bounded by the caller's limits. The tarball is
//! compressed as asked and hashed as it is written: its SHA-256 is the image's fingerprint.

use crate::walk::{self, Node};
use crate::{IdShift, ImageError, Limits};
use rustix::fs::FileType;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How the tarball is compressed (`images.compression_algorithm`; LXD ran any program named
/// there, rxd knows these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    pub fn parse(name: &str) -> Option<Compression> {
        Some(match name {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "xz" => Compression::Xz,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }

    /// The file name extension LXD gives such an image.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".tar",
            Compression::Gzip => ".tar.gz",
            Compression::Xz => ".tar.xz",
            Compression::Zstd => ".tar.zst",
        }
    }
}

/// What was packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// SHA-256 of the file written, in hex.
    pub fingerprint: String,
    /// Bytes of the file written.
    pub size: u64,
    /// Devices, FIFOs and sockets left out.
    pub skipped_special: u64,
    /// Entries whose host owner was outside the map, packed as `nobody` (65534).
    pub outside_map: u64,
}

/// The `metadata.yaml` of a published image: `own` (the instance's, from its image: templates
/// and creation date kept) with its properties replaced when some are given, else a new one for
/// `architecture` created at `now`.
pub fn published_metadata(
    own: Option<&str>,
    properties: &std::collections::BTreeMap<String, String>,
    architecture: &str,
    now: i64,
) -> Result<String, ImageError> {
    let mut doc: serde_norway::Mapping = match own {
        Some(text) => {
            serde_norway::from_str(text).map_err(|e| ImageError::BadMetadata(e.to_string()))?
        }
        None => {
            let mut m = serde_norway::Mapping::new();
            m.insert("architecture".into(), architecture.into());
            m.insert("creation_date".into(), now.into());
            m
        }
    };
    if !properties.is_empty() || !doc.contains_key("properties") {
        let props: serde_norway::Mapping = properties
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect();
        doc.insert("properties".into(), props.into());
    }
    let text = serde_norway::to_string(&doc).map_err(|e| ImageError::BadMetadata(e.to_string()))?;
    // What the unpacker will require of it.
    crate::parse_metadata(&text)?;
    Ok(text)
}

/// Hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A compressor in front of the hashing writer, finished explicitly.
enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(liblzma::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Xz(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Xz(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

impl<W: Write> Encoder<W> {
    fn new(inner: W, compression: Compression) -> std::io::Result<Encoder<W>> {
        Ok(match compression {
            Compression::None => Encoder::None(inner),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::default(),
            )),
            Compression::Xz => Encoder::Xz(liblzma::write::XzEncoder::new(inner, 6)),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(inner, 3)?),
        })
    }

    fn finish(self) -> std::io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(w) => w.finish(),
            Encoder::Xz(w) => w.finish(),
            Encoder::Zstd(w) => w.finish(),
        }
    }
}

fn tar_err(path: &str) -> impl Fn(std::io::Error) -> ImageError + '_ {
    move |e| ImageError::Io {
        path: path.to_owned(),
        source: e,
    }
}

/// Write the image of `dir` (an instance's directory: `rootfs/`, and `templates/` if present)
/// with `metadata_yaml` as its `metadata.yaml` into `out`. `rootfs` overrides where the root
/// filesystem is read from (a snapshot's). Host owners are mapped back through `shift`.
pub fn pack(
    dir: &Path,
    rootfs: Option<&Path>,
    metadata_yaml: &str,
    shift: Option<&IdShift>,
    compression: Compression,
    out: std::fs::File,
    limits: &Limits,
) -> Result<Packed, ImageError> {
    let shown = dir.display().to_string();
    let hashing = Hashing {
        inner: std::io::BufWriter::new(out),
        hash: Sha256::new(),
        bytes: 0,
    };
    let encoder = Encoder::new(hashing, compression).map_err(tar_err(&shown))?;
    let mut tar = tar::Builder::new(encoder);
    tar.mode(tar::HeaderMode::Complete);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(metadata_yaml.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    tar.append_data(&mut header, "metadata.yaml", metadata_yaml.as_bytes())
        .map_err(tar_err("metadata.yaml"))?;

    let mut packer = Packer {
        tar: &mut tar,
        shift,
        limits,
        links: HashMap::new(),
        entries: 0,
        bytes: 0,
        skipped_special: 0,
        outside_map: 0,
    };
    let rootfs = rootfs.map_or_else(|| dir.join("rootfs"), Path::to_owned);
    packer.tree(&rootfs, "rootfs")?;
    let templates = dir.join("templates");
    if std::fs::symlink_metadata(&templates).is_ok_and(|m| m.is_dir()) {
        packer.tree(&templates, "templates")?;
    }
    let (skipped_special, outside_map) = (packer.skipped_special, packer.outside_map);
    let encoder = tar.into_inner().map_err(tar_err(&shown))?;
    let mut hashing = encoder.finish().map_err(tar_err(&shown))?;
    hashing.flush().map_err(tar_err(&shown))?;
    let file = hashing
        .inner
        .into_inner()
        .map_err(|e| tar_err(&shown)(e.into_error()))?;
    file.sync_all().map_err(tar_err(&shown))?;
    Ok(Packed {
        fingerprint: hex::encode(hashing.hash.finalize()),
        size: hashing.bytes,
        skipped_special,
        outside_map,
    })
}

/// One tree of an instance backup: the instance's (`backup/container`) or a snapshot's
/// (`backup/snapshots/<name>`). `rootfs` is its root filesystem; `extras` the directory whose
/// `metadata.yaml` and `templates/` go with it (the instance's own, for its snapshots too).
pub struct BackupTree<'a> {
    pub prefix: String,
    pub rootfs: &'a Path,
    pub extras: &'a Path,
}

/// Write an instance backup in LXD 5.0's layout into `out`: `backup/index.yaml` first, then
/// for each tree `<prefix>/backup.yaml` (the instance's only; LXD reads it, rxd never does),
/// `<prefix>/metadata.yaml`, `<prefix>/templates/` and `<prefix>/rootfs/`, owners mapped back
/// to container ids through `shift`. Returns what [`pack`] returns.
pub fn pack_backup(
    index_yaml: &str,
    backup_yaml: &str,
    trees: &[BackupTree<'_>],
    shift: Option<&IdShift>,
    compression: Compression,
    out: std::fs::File,
    limits: &Limits,
) -> Result<Packed, ImageError> {
    let (packed, file) = pack_backup_to(
        index_yaml,
        backup_yaml,
        trees,
        shift,
        compression,
        out,
        limits,
    )?;
    file.sync_all().map_err(tar_err("backup"))?;
    Ok(packed)
}

/// [`pack_backup`] into any writer (a migration's stream), handed back flushed.
pub fn pack_backup_to<W: Write>(
    index_yaml: &str,
    backup_yaml: &str,
    trees: &[BackupTree<'_>],
    shift: Option<&IdShift>,
    compression: Compression,
    out: W,
    limits: &Limits,
) -> Result<(Packed, W), ImageError> {
    let mut tar = backup_tar(out, compression)?;
    tar.mode(tar::HeaderMode::Complete);
    let file = |tar: &mut tar::Builder<_>, name: &str, text: &[u8]| {
        tar.append_data(&mut file_header(text.len() as u64), name, text)
            .map_err(tar_err(name))
    };
    file(&mut tar, "backup/index.yaml", index_yaml.as_bytes())?;
    let mut packer = Packer {
        tar: &mut tar,
        shift,
        limits,
        links: HashMap::new(),
        entries: 0,
        bytes: 0,
        skipped_special: 0,
        outside_map: 0,
    };
    for (i, t) in trees.iter().enumerate() {
        if i == 0 {
            file(
                packer.tar,
                &format!("{}/backup.yaml", t.prefix),
                backup_yaml.as_bytes(),
            )?;
        }
        let metadata = t.extras.join("metadata.yaml");
        if let Ok(text) = std::fs::read(&metadata) {
            file(packer.tar, &format!("{}/metadata.yaml", t.prefix), &text)?;
        }
        let templates = t.extras.join("templates");
        if std::fs::symlink_metadata(&templates).is_ok_and(|m| m.is_dir()) {
            packer.tree(&templates, &format!("{}/templates", t.prefix))?;
        }
        // Hard links never span two trees.
        packer.links.clear();
        packer.tree(t.rootfs, &format!("{}/rootfs", t.prefix))?;
    }
    let (skipped_special, outside_map) = (packer.skipped_special, packer.outside_map);
    finish_tar(tar, skipped_special, outside_map)
}

/// A tar writer over `out`, compressed as asked, hashing what it writes.
fn backup_tar<W: Write>(
    out: W,
    compression: Compression,
) -> Result<tar::Builder<Encoder<Hashing<std::io::BufWriter<W>>>>, ImageError> {
    let hashing = Hashing {
        inner: std::io::BufWriter::new(out),
        hash: Sha256::new(),
        bytes: 0,
    };
    let encoder = Encoder::new(hashing, compression).map_err(tar_err("backup"))?;
    Ok(tar::Builder::new(encoder))
}

/// A regular file's header: `size` bytes, 0644, owned by root, time 0.
fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// The end of a [`backup_tar`]: the archive closed and flushed, and `out` handed back with
/// what was written.
fn finish_tar<W: Write>(
    tar: tar::Builder<Encoder<Hashing<std::io::BufWriter<W>>>>,
    skipped_special: u64,
    outside_map: u64,
) -> Result<(Packed, W), ImageError> {
    let encoder = tar.into_inner().map_err(tar_err("backup"))?;
    let mut hashing = encoder.finish().map_err(tar_err("backup"))?;
    hashing.flush().map_err(tar_err("backup"))?;
    let out = hashing
        .inner
        .into_inner()
        .map_err(|e| tar_err("backup")(e.into_error()))?;
    let packed = Packed {
        fingerprint: hex::encode(hashing.hash.finalize()),
        size: hashing.bytes,
        skipped_special,
        outside_map,
    };
    Ok((packed, out))
}

/// What goes into an optimized backup after `backup/index.yaml`: a file's bytes, or a file on
/// disk (a `btrfs send` stream) copied in.
pub enum BackupFile {
    Bytes(Vec<u8>),
    Disk(std::path::PathBuf),
}

/// An optimized instance backup in LXD 5.0's layout: `backup/index.yaml` first, then `files`
/// in order (`backup/optimized_header.yaml`, the `.bin` streams), as plain files owned by root,
/// compressed as asked, into `out` (synced). Returns what [`pack`] returns.
pub fn pack_optimized(
    index_yaml: &str,
    files: &[(String, BackupFile)],
    compression: Compression,
    out: std::fs::File,
) -> Result<Packed, ImageError> {
    let mut tar = backup_tar(out, compression)?;
    tar.append_data(
        &mut file_header(index_yaml.len() as u64),
        "backup/index.yaml",
        index_yaml.as_bytes(),
    )
    .map_err(tar_err("backup/index.yaml"))?;
    for (name, file) in files {
        match file {
            BackupFile::Bytes(b) => tar
                .append_data(&mut file_header(b.len() as u64), name, b.as_slice())
                .map_err(tar_err(name))?,
            BackupFile::Disk(path) => {
                let f = std::fs::File::open(path).map_err(tar_err(name))?;
                let size = f.metadata().map_err(tar_err(name))?.len();
                tar.append_data(&mut file_header(size), name, f)
                    .map_err(tar_err(name))?;
            }
        }
    }
    let (packed, file) = finish_tar(tar, 0, 0)?;
    file.sync_all().map_err(tar_err("backup"))?;
    Ok(packed)
}

struct Packer<'a, W: Write> {
    tar: &'a mut tar::Builder<W>,
    shift: Option<&'a IdShift>,
    limits: &'a Limits,
    /// Regular files with more than one link already packed: (dev, ino) → their path.
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
    bytes: u64,
    skipped_special: u64,
    outside_map: u64,
}

impl<W: Write> Packer<'_, W> {
    fn id(&mut self, host: u32, base: u32) -> u64 {
        match self.shift {
            None => u64::from(host),
            Some(s) if host >= base && host - base < s.size => u64::from(host - base),
            Some(_) => {
                self.outside_map += 1;
                65534
            }
        }
    }

    /// Pack the tree at `root` under the name `top`.
    fn tree(&mut self, root: &Path, top: &str) -> Result<(), ImageError> {
        let fd = walk::open_root(root)?;
        walk::walk(&fd, &mut |node| self.entry(node, top))?;
        Ok(())
    }

    fn entry(&mut self, node: &Node<'_>, top: &str) -> Result<(), ImageError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ImageError::TooManyEntries(self.limits.max_entries));
        }
        let path = Path::new(top).join(node.relative());
        let shown = node.path();
        let st = node.stat;
        let (base_uid, base_gid) = self.shift.map_or((0, 0), |s| (s.uid_base, s.gid_base));
        let mut header = tar::Header::new_gnu();
        header.set_mode(st.st_mode & 0o7777);
        let uid = self.id(st.st_uid, base_uid);
        let gid = self.id(st.st_gid, base_gid);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        let err = tar_err(&shown);
        match node.kind() {
            FileType::Directory => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                self.tar
                    .append_data(&mut header, &path, std::io::empty())
                    .map_err(err)?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(node.fd, c"", Vec::new())
                    .map_err(|e| walk::io_err(&shown, e))?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                let target = std::ffi::OsStr::from_bytes(target.as_bytes());
                self.tar
                    .append_link(&mut header, &path, target)
                    .map_err(err)?;
            }
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        header.set_entry_type(tar::EntryType::Link);
                        header.set_size(0);
                        let first = first.clone();
                        return self
                            .tar
                            .append_link(&mut header, &path, &first)
                            .map_err(err);
                    }
                    self.links.insert(key, path.clone());
                }
                let size = u64::try_from(st.st_size).unwrap_or(0);
                self.bytes += size;
                if self.bytes > self.limits.max_total_bytes {
                    return Err(ImageError::TooLarge(self.limits.max_total_bytes));
                }
                let file = std::fs::File::from(node.reopen()?);
                // Exactly `size` bytes: a file that shrank meanwhile is padded, one that grew cut.
                let data = file.take(size).chain(std::io::repeat(0)).take(size);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                self.tar
                    .append_data(&mut header, &path, data)
                    .map_err(err)?;
            }
            _ => self.skipped_special += 1,
        }
        Ok(())
    }
}
