//! Squashfs root filesystems (what image servers ship), read with `backhand` and fed entry by
//! entry into the same writer as tarballs, so the same rules hold: no escape, no devices, ids
//! inside the map, entry, byte and depth caps.
//!
//! What backhand does not bound, this module does before handing it the file: the number of
//! inodes, the fragment table, and the metadata (inode and directory tables) it decompresses
//! into memory. Its tree walk recurses once per directory level, so it runs on a thread whose
//! stack fits the deepest tree the directory count allows. Extended attributes (file
//! capabilities, ACLs) are not carried: backhand has no API for them; `Unpacked::xattrs_dropped`
//! says so.

use crate::writer::{Entry, Kind, Part, Writer};
use crate::ImageError;
use backhand::kind::{Kind as SquashKind, LE_V4_0};
use backhand::v4::inode::InodeInner;
use backhand::{InnerNode, Squashfs};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"hsqs";
/// Uncompressed metadata blocks are at most this large.
const METADATA_BLOCK: u64 = 8192;
/// The inode and directory tables of the largest distribution images are a few MiB.
const MAX_METADATA_BYTES: u64 = 256 << 20;
/// Unset table offsets.
const NOT_SET: u64 = u64::MAX;
/// Stack for the tree walk: room for a frame per directory level (measured at under
/// 240 bytes in a debug build: 1100 levels fit in 256 KiB), four times over, plus slack.
const STACK_PER_DIR: u64 = 1 << 10;
const MIN_STACK: u64 = 2 << 20;

/// Whether the file starts with the squashfs magic (format is told by magic, never by name).
pub(crate) fn is_squashfs(path: &Path) -> std::io::Result<bool> {
    let mut magic = [0u8; 4];
    let n = File::open(path)?.read(&mut magic)?;
    Ok(n == 4 && &magic == MAGIC)
}

fn bad(e: impl std::fmt::Display) -> ImageError {
    ImageError::Squashfs(e.to_string())
}

/// Unpack the squashfs at `path` as the image's root filesystem (under `rootfs/`).
pub(crate) fn unpack_into(path: &Path, writer: &mut Writer<'_>) -> Result<(), ImageError> {
    let io = |e: std::io::Error| ImageError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::new(file);
    let kind = SquashKind::from_const(LE_V4_0).map_err(bad)?;
    let (sb, _) = Squashfs::superblock_and_compression_options(&mut reader, &kind).map_err(bad)?;
    if u64::from(sb.inode_count) > writer.limits().max_entries {
        return Err(ImageError::TooManyEntries(writer.limits().max_entries));
    }
    // Every fragment holds the tail of at least one file.
    if sb.frag_count > sb.inode_count {
        return Err(bad("more fragments than inodes"));
    }
    if sb.bytes_used > len {
        return Err(bad("the superblock claims more bytes than the file has"));
    }
    count_metadata_blocks(&mut reader, &sb)?;
    writer.xattrs_dropped |= sb.xattr_table != NOT_SET;
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    let squashfs = Squashfs::from_reader_with_offset_and_kind(reader, 0, kind).map_err(bad)?;

    // Directory inodes bound the tree's depth, and with it backhand's recursion.
    let dirs = squashfs
        .inodes
        .values()
        .filter(|i| {
            matches!(
                i.inner,
                InodeInner::BasicDirectory(_) | InodeInner::ExtendedDirectory(_)
            )
        })
        .count() as u64;
    let stack = MIN_STACK + dirs * STACK_PER_DIR;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("squashfs".into())
            .stack_size(usize::try_from(stack).unwrap_or(usize::MAX))
            .spawn_scoped(scope, || walk(squashfs, writer))
            .map_err(io)?
            .join()
            .unwrap_or_else(|_| Err(bad("the squashfs reader failed")))
    })
}

/// Count the metadata blocks between the inode table and the first table after the directory
/// table, refusing more than [`MAX_METADATA_BYTES`] of them once uncompressed.
fn count_metadata_blocks(
    reader: &mut (impl Read + Seek),
    sb: &backhand::SuperBlock,
) -> Result<(), ImageError> {
    let end = [sb.frag_table, sb.export_table, sb.id_table, sb.xattr_table]
        .into_iter()
        .filter(|&t| t != NOT_SET && t > sb.dir_table)
        .min()
        .ok_or_else(|| bad("no table follows the directory table"))?;
    if sb.inode_table >= sb.dir_table || end > sb.bytes_used {
        return Err(bad("the tables are out of order"));
    }
    let mut pos = sb.inode_table;
    let mut blocks = 0u64;
    while pos < end {
        reader.seek(SeekFrom::Start(pos)).map_err(bad)?;
        let mut header = [0u8; 2];
        reader.read_exact(&mut header).map_err(bad)?;
        let size = u64::from(u16::from_le_bytes(header) & 0x7fff);
        if size == 0 || size > METADATA_BLOCK {
            return Err(bad("a metadata block has an impossible size"));
        }
        pos += 2 + size;
        blocks += 1;
        if blocks * METADATA_BLOCK > MAX_METADATA_BYTES {
            return Err(bad(format!(
                "the inode and directory tables exceed {MAX_METADATA_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

fn walk(squashfs: Squashfs<'_>, writer: &mut Writer<'_>) -> Result<(), ImageError> {
    let fs = squashfs.into_filesystem_reader().map_err(bad)?;
    for node in fs.files() {
        // backhand refuses names that are not single components; paths start at "/".
        let raw: PathBuf = node
            .fullpath
            .strip_prefix("/")
            .map_err(|_| bad("an entry's path is not absolute"))?
            .to_owned();
        let h = node.header;
        let mut no_data = std::io::empty();
        let mut file_reader;
        let (kind, size, data): (Kind, u64, &mut dyn Read) = match &node.inner {
            InnerNode::Dir(_) => (Kind::Dir, 0, &mut no_data),
            InnerNode::File(f) => {
                file_reader = fs.file(f).reader_checked().map_err(bad)?;
                (Kind::File, f.file_len() as u64, &mut file_reader)
            }
            InnerNode::Symlink(l) => (
                Kind::Symlink(l.link.clone().into_os_string()),
                0,
                &mut no_data,
            ),
            InnerNode::CharacterDevice(_)
            | InnerNode::BlockDevice(_)
            | InnerNode::NamedPipe
            | InnerNode::Socket => (Kind::Special, 0, &mut no_data),
        };
        writer.add(
            Part::Rootfs,
            Entry {
                raw,
                kind,
                mode: u32::from(h.permissions) & 0o7777,
                uid: u64::from(h.uid),
                gid: u64::from(h.gid),
                size,
                data,
            },
        )?;
    }
    Ok(())
}
