//! What is mounted where (`/proc/self/mountinfo`), which loop devices a file backs
//! (`/sys/block/loop*/loop/backing_file`), what filesystem a path is on (`statfs`), and attaching
//! a loop file the way LXD does: `losetup --find --nooverlap --show` attaches it, the caller
//! mounts the device, then `losetup --detach` on the now busy device makes the kernel set
//! autoclear, so the last unmount frees it. No `unsafe`: the loop ioctls are losetup's.

use crate::tool::run;
use crate::{Result, StorageError};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `statfs`'s `f_type` for btrfs.
pub const BTRFS_SUPER_MAGIC: u64 = 0x9123_683e;

/// The inode number of every btrfs subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
const SUBVOLUME_ROOT_INO: u64 = 256;

/// Whether `path` (followed if a link) is on a btrfs filesystem.
pub fn is_btrfs(path: &Path) -> Result<bool> {
    let st = rustix::fs::statfs(path)
        .map_err(StorageError::errno("reading the filesystem type of", path))?;
    Ok(st.f_type as u64 == BTRFS_SUPER_MAGIC)
}

/// Whether `path` (not followed if a link) is the root of a btrfs subvolume. A missing path is
/// not one.
pub fn is_subvolume(path: &Path) -> Result<bool> {
    let st = match rustix::fs::lstat(path) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(StorageError::errno("inspecting", path)(e)),
    };
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory
        || st.st_ino != SUBVOLUME_ROOT_INO
    {
        return Ok(false);
    }
    is_btrfs(path)
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The directory of the mounted filesystem that is mounted (`/` for its root).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\012` for a newline, ...).
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Parses mountinfo text (`id parent major:minor root mount-point options [optional...] -
/// fstype source super-options`); lines that do not parse are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 {
                return None;
            }
            Some(MountEntry {
                root: PathBuf::from(OsStr::from_bytes(&unescape(fields[3]))),
                mount_point: PathBuf::from(OsStr::from_bytes(&unescape(fields[4]))),
                fstype: (*fields.get(sep + 1)?).to_owned(),
                source: String::from_utf8_lossy(&unescape(fields.get(sep + 2)?)).into_owned(),
            })
        })
        .collect()
}

pub(crate) fn mountinfo() -> Result<Vec<MountEntry>> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(StorageError::io("reading", path))?;
    Ok(parse_mountinfo(&text))
}

/// The mounts at `path`, bottom first (the last one is what a lookup of `path` reaches). `path`
/// is resolved first, as the kernel shows resolved paths; a missing path has none.
pub(crate) fn mounts_at(path: &Path) -> Result<Vec<MountEntry>> {
    let resolved = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("resolving", path)(e)),
    };
    Ok(mountinfo()?
        .into_iter()
        .filter(|m| m.mount_point == resolved)
        .collect())
}

/// The loop devices (`/dev/loopN`) whose backing file is `file`.
pub fn loop_devices_of(file: &Path) -> Result<Vec<PathBuf>> {
    let file = match std::fs::canonicalize(file) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => file.to_path_buf(),
        Err(e) => return Err(StorageError::io("resolving", file)(e)),
    };
    let sys = Path::new("/sys/block");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(sys).map_err(StorageError::io("listing", sys))? {
        let entry = entry.map_err(StorageError::io("listing", sys))?;
        let name = entry.file_name();
        if !name.as_bytes().starts_with(b"loop") {
            continue;
        }
        let Ok(backing) = std::fs::read(entry.path().join("loop/backing_file")) else {
            continue; // not attached
        };
        let backing = backing.strip_suffix(b"\n").unwrap_or(&backing);
        if backing == file.as_os_str().as_bytes() {
            found.push(Path::new("/dev").join(name));
        }
    }
    Ok(found)
}

/// The file behind the loop device `device` (`/dev/loopN`), if it is an attached loop device.
pub(crate) fn loop_backing_file(device: &str) -> Option<PathBuf> {
    let name = device.strip_prefix("/dev/")?;
    if !name.starts_with("loop") || name.contains('/') {
        return None;
    }
    let raw = std::fs::read(Path::new("/sys/block").join(name).join("loop/backing_file")).ok()?;
    let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
    Some(PathBuf::from(OsStr::from_bytes(raw)))
}

/// Attaches `file` to a free loop device (or finds the one it is already attached to) and
/// returns the device. Direct I/O is asked for first (no double caching of the pool's data in
/// the host's page cache), and left out where the backing filesystem refuses it, as LXD does.
pub(crate) fn attach_loop(file: &Path) -> Result<PathBuf> {
    let with_dio = [
        OsStr::new("--find"),
        OsStr::new("--nooverlap"),
        OsStr::new("--direct-io=on"),
        OsStr::new("--show"),
        file.as_os_str(),
    ];
    let out = match run("losetup", &with_dio) {
        Ok(out) => out,
        Err(e) => {
            tracing::debug!(file = %file.display(), error = %e, "loop device with direct I/O refused, trying without");
            run(
                "losetup",
                &[
                    OsStr::new("--find"),
                    OsStr::new("--nooverlap"),
                    OsStr::new("--show"),
                    file.as_os_str(),
                ],
            )?
        }
    };
    let device = PathBuf::from(out.trim());
    if !device.starts_with("/dev") || loop_backing_file(out.trim()).is_none() {
        return Err(StorageError::ToolOutput {
            command: format!("losetup --find --show {}", file.display()),
            detail: format!("{:?} is not an attached loop device", out.trim()),
        });
    }
    Ok(device)
}

/// `losetup --detach`: frees an unused loop device at once, and makes a used one (mounted)
/// free itself when its last user closes it.
pub(crate) fn detach_loop(device: &Path) -> Result<()> {
    run("losetup", &[OsStr::new("--detach"), device.as_os_str()]).map(drop)
}

/// Waits up to `limit` for the loop devices backed by `file` to be released (the kernel
/// finishes an autoclear asynchronously, after the unmount returns). Returns those left.
pub(crate) fn wait_loop_released(file: &Path, limit: Duration) -> Result<Vec<PathBuf>> {
    let start = Instant::now();
    loop {
        let left = loop_devices_of(file)?;
        if left.is_empty() || start.elapsed() >= limit {
            return Ok(left);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(device, inode)` of `path`, followed if a link.
pub(crate) fn identity(path: &Path) -> Result<(u64, u64)> {
    let st = rustix::fs::stat(path).map_err(StorageError::errno("inspecting", path))?;
    Ok((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
47 27 0:41 / /tmp/bt/mnt rw,relatime - btrfs /dev/loop0 rw,space_cache=v2,subvolid=5,subvol=/
48 27 0:41 /src/pool /var/lib/rxd/storage-pools/with\\040space rw shared:9 master:2 - btrfs /dev/loop0 rw
garbage line
";
        let got = parse_mountinfo(text);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].mount_point, Path::new("/tmp/bt/mnt"));
        assert_eq!(got[1].fstype, "btrfs");
        assert_eq!(got[1].source, "/dev/loop0");
        assert_eq!(got[2].root, Path::new("/src/pool"));
        assert_eq!(
            got[2].mount_point,
            Path::new("/var/lib/rxd/storage-pools/with space")
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"a\040b\011c\012d\134e"), b"a b\tc\nd\\e");
        assert_eq!(unescape(r"end\04"), b"end\\04");
        assert_eq!(unescape(r"\777x"), b"\\777x");
    }

    #[test]
    fn root_is_mounted_and_not_btrfs_magic_confused() {
        assert!(!mounts_at(Path::new("/")).unwrap().is_empty());
        assert!(mounts_at(Path::new("/no/such/dir")).unwrap().is_empty());
        assert!(!is_subvolume(Path::new("/no/such/dir")).unwrap());
        // /proc is never btrfs.
        assert!(!is_btrfs(Path::new("/proc")).unwrap());
    }
}
