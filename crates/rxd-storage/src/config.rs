//! A pool's config as LXD 5.0 resolves it at `POST /1.0/storage-pools`: every key checked against
//! the rules of its driver (unknown keys refused with LXD's `Invalid option "<key>"`, `user.*`
//! taken as is), empty values dropped (LXD never stores them), and the defaults LXD writes
//! filled in: `source` for both drivers, and for a btrfs loop file its path and `size`.

use crate::{DriverKind, Result, StorageError};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The btrfs mount options used when `btrfs.mount_options` is unset. LXD does not store this
/// default in the pool's config, so neither does rxd.
pub const DEFAULT_BTRFS_MOUNT_OPTIONS: &str = "user_subvol_rm_allowed";

const GIB: u64 = 1 << 30;

/// Bytes from a size with LXD's units: none or `B`; `kB` (also `KB`), `MB`, `GB`, `TB`, `PB`,
/// `EB` for powers of 1000; `KiB`, `MiB`, `GiB`, `TiB`, `PiB`, `EiB` for powers of 1024.
pub fn parse_size(value: &str) -> Result<u64> {
    let trimmed = value.trim();
    let parsed = match trimmed.strip_suffix("KB") {
        // LXD spells it `kB`; `KB` is taken too, as people write it.
        Some(n) => rxd_core::instance_config::parse_bytes(n)
            .filter(|_| n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty())
            .and_then(|n| n.checked_mul(1000)),
        None => rxd_core::instance_config::parse_bytes(trimmed),
    };
    match parsed {
        Some(n) if !trimmed.is_empty() => Ok(n),
        _ => Err(StorageError::InvalidSize(value.to_owned())),
    }
}

/// The default size of a new loop file, LXD 5.0's rule: a fifth of the size of the filesystem
/// holding the state dir, at least 5 GiB and at most 30 GiB, in whole GiB (`"<n>GiB"`).
pub fn loop_size_default(state_dir: &Path) -> Result<String> {
    let st = rustix::fs::statfs(state_dir).map_err(StorageError::errno(
        "reading the size of the filesystem holding",
        state_dir,
    ))?;
    let fs_bytes = st.f_blocks.saturating_mul(st.f_frsize as u64);
    let gib = (fs_bytes / GIB / 5).clamp(5, 30);
    Ok(format!("{gib}GiB"))
}

/// Where a pool is mounted: `<state>/storage-pools/<name>`.
pub(crate) fn mount_point(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("storage-pools").join(name)
}

/// Where a btrfs pool's loop file lives: `<state>/disks/<name>.img`.
pub(crate) fn loop_file(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("disks").join(format!("{name}.img"))
}

/// A pool name becomes a directory and a file name: no separators, nothing hidden, nothing a
/// tool could take for an option.
pub(crate) fn check_pool_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 255 {
        "it is longer than 255 bytes"
    } else if name.contains('/') {
        "it contains a slash"
    } else if name.starts_with('.') {
        "it starts with a dot"
    } else if name.starts_with('-') {
        "it starts with a hyphen"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains white space or a control character"
    } else {
        return Ok(());
    };
    Err(StorageError::InvalidName {
        what: "storage pool name",
        name: name.to_owned(),
        reason,
    })
}

/// `path` is absolute and plain: no `.` or `..`, so comparing it with other paths means what it
/// says.
pub(crate) fn is_plain_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// LXD's booleans (`validate.IsBool`).
fn check_bool(value: &str) -> Result<(), String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "false" | "yes" | "no" | "1" | "0" | "on" | "off" => Ok(()),
        _ => Err(format!("Invalid value for a boolean {value:?}")),
    }
}

/// Mount options LXD turns into mount flags rather than handing to the filesystem
/// (`resolveMountOptions`): each name with whether it sets or clears its flag.
const FLAG_OPTIONS: &[(&str, bool, rustix::mount::MountFlags)] = {
    use rustix::mount::MountFlags as F;
    &[
        ("async", false, F::SYNCHRONOUS),
        ("atime", false, F::NOATIME),
        ("defaults", true, F::empty()),
        ("dev", false, F::NODEV),
        ("diratime", false, F::NODIRATIME),
        ("dirsync", true, F::DIRSYNC),
        ("exec", false, F::NOEXEC),
        ("lazytime", true, F::LAZYTIME),
        ("noatime", true, F::NOATIME),
        ("nodev", true, F::NODEV),
        ("nodiratime", true, F::NODIRATIME),
        ("noexec", true, F::NOEXEC),
        ("norelatime", false, F::RELATIME),
        ("nostrictatime", false, F::STRICTATIME),
        ("nosuid", true, F::NOSUID),
        ("relatime", true, F::RELATIME),
        ("ro", true, F::RDONLY),
        ("rw", false, F::RDONLY),
        ("strictatime", true, F::STRICTATIME),
        ("suid", false, F::NOSUID),
        ("sync", true, F::SYNCHRONOUS),
    ]
};

/// Options that would change what the pool's mount is rather than how it behaves.
const REFUSED_OPTIONS: &[&str] = &["bind", "rbind", "remount", "move", "loop"];

/// Splits `btrfs.mount_options` into mount flags and the data string btrfs parses.
pub(crate) fn resolve_mount_options(options: &str) -> Result<(rustix::mount::MountFlags, String)> {
    let invalid = |reason: String| StorageError::InvalidValue {
        key: "btrfs.mount_options".to_owned(),
        reason,
    };
    let mut flags = rustix::mount::MountFlags::empty();
    let mut data = Vec::new();
    for opt in options.split(',') {
        if opt.is_empty() {
            return Err(invalid(format!("empty option in {options:?}")));
        }
        if opt.contains('\0') || opt.chars().any(char::is_whitespace) {
            return Err(invalid(format!(
                "option {opt:?} contains white space or NUL"
            )));
        }
        if REFUSED_OPTIONS.contains(&opt) {
            return Err(invalid(format!(
                "option {opt:?} is not allowed: rxd decides how a pool is mounted"
            )));
        }
        match FLAG_OPTIONS.iter().find(|(name, _, _)| *name == opt) {
            Some((_, true, flag)) => flags |= *flag,
            Some((_, false, flag)) => flags -= *flag,
            None => data.push(opt),
        }
    }
    Ok((flags, data.join(",")))
}

/// Checks one key of a pool's config against LXD 5.0's rules for `kind`.
fn check_key(kind: DriverKind, key: &str, value: &str) -> Result<()> {
    let invalid = |reason: String| StorageError::InvalidValue {
        key: key.to_owned(),
        reason,
    };
    if key.starts_with("user.") {
        return Ok(());
    }
    if !known(kind, key) {
        return Err(StorageError::InvalidOption(key.to_owned()));
    }
    if value.is_empty() {
        // An empty value unsets a key: LXD's rules are all `Optional`.
        return Ok(());
    }
    match key {
        "size" | "volume.size" => parse_size(value)
            .map(drop)
            .map_err(|e| invalid(e.to_string())),
        "rsync.compression" | "volume.security.shifted" | "volume.security.unmapped" => {
            check_bool(value).map_err(invalid)
        }
        "volume.snapshots.expiry" | "volume.snapshots.pattern" | "volume.snapshots.schedule" => {
            let volume_key = &key["volume.".len()..];
            rxd_core::instance_config::validate_key(volume_key, value, true)
                .map_err(|e| invalid(e.to_string()))
        }
        "btrfs.mount_options" => resolve_mount_options(value).map(drop),
        // `source`, `volatile.initial_source`, `rsync.bwlimit`: any value (LXD's `IsAny`);
        // `source` is checked when the pool is resolved.
        _ => Ok(()),
    }
}

/// Whether `key` is one of `kind`'s keys (`user.*` aside).
fn known(kind: DriverKind, key: &str) -> bool {
    const COMMON: &[&str] = &[
        "source",
        "volatile.initial_source",
        "size",
        "rsync.bwlimit",
        "rsync.compression",
        "volume.size",
        "volume.security.shifted",
        "volume.security.unmapped",
        "volume.snapshots.expiry",
        "volume.snapshots.pattern",
        "volume.snapshots.schedule",
    ];
    COMMON.contains(&key) || (kind == DriverKind::Btrfs && key == "btrfs.mount_options")
}

/// Resolves a new pool's config as LXD 5.0 does at `POST /1.0/storage-pools`: checks every key,
/// drops empty values and fills the defaults LXD stores. What is returned is what the pool's
/// record keeps, and what [`crate::Pool::create`] takes.
///
/// - `dir`: `source` defaults to the pool's mount point `<state>/storage-pools/<name>`;
///   another source must be an absolute path (checked to exist and be empty at creation).
/// - `btrfs`: no `source` (or the loop file's own path) means a loop file
///   `<state>/disks/<name>.img` of `size` (default [`loop_size_default`]), and `source` becomes
///   that path; otherwise `source` is a directory on a btrfs filesystem (made a subvolume if
///   missing, else it must be empty), `size` is dropped as LXD drops it, and
///   `volatile.initial_source` keeps the source as given. Block devices are refused for now.
pub fn prepare_config(
    kind: DriverKind,
    name: &str,
    state_dir: &Path,
    config: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    check_pool_name(name)?;
    for (key, value) in config {
        check_key(kind, key, value)?;
    }
    let mut out: BTreeMap<String, String> = config
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mount_point = mount_point(state_dir, name);
    let source_err = |path: &Path, reason: &str| StorageError::Source {
        pool: name.to_owned(),
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    match kind {
        DriverKind::Dir => {
            let source = match out.get("source") {
                Some(s) => PathBuf::from(s),
                None => mount_point.clone(),
            };
            if !is_plain_absolute(&source) {
                return Err(source_err(
                    &source,
                    "it must be an absolute path without \".\" or \"..\"",
                ));
            }
            out.insert("source".into(), path_string(&source, name)?);
        }
        DriverKind::Btrfs => {
            let loop_path = loop_file(state_dir, name);
            let given = out.get("source").map(PathBuf::from);
            match given {
                None => {
                    out.insert("source".into(), path_string(&loop_path, name)?);
                }
                Some(p) if p == loop_path => {
                    out.insert("volatile.initial_source".into(), path_string(&p, name)?);
                }
                Some(p) => {
                    if !is_plain_absolute(&p) {
                        return Err(source_err(
                            &p,
                            "it must be an absolute path without \".\" or \"..\" (a directory on a btrfs filesystem), or unset for a loop file",
                        ));
                    }
                    match std::fs::metadata(&p) {
                        Ok(m) if std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()) => {
                            return Err(source_err(
                                &p,
                                "block devices aren't supported by rxd yet: leave source unset for a loop file, or give an empty directory on a btrfs filesystem",
                            ))
                        }
                        Ok(m) if !m.is_dir() => {
                            return Err(source_err(&p, "it isn't a directory"))
                        }
                        _ => {}
                    }
                    out.insert("volatile.initial_source".into(), path_string(&p, name)?);
                    // LXD unsets `size` for anything but a loop file.
                    out.remove("size");
                }
            }
            if out.get("source") == Some(&path_string(&loop_path, name)?)
                && !out.contains_key("size")
            {
                out.insert("size".into(), loop_size_default(state_dir)?);
            }
        }
    }
    Ok(out)
}

/// A path as config text; rxd's config is UTF-8.
pub(crate) fn path_string(path: &Path, pool: &str) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| StorageError::Source {
            pool: pool.to_owned(),
            path: path.to_path_buf(),
            reason: "it is not valid UTF-8".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(input: &str, expected: Option<u64>) {
        assert_eq!(parse_size(input).ok(), expected, "parse_size({input:?})");
    }

    #[test]
    fn sizes() {
        size("0", Some(0));
        size("4096", Some(4096));
        size("512B", Some(512));
        size("1kB", Some(1000));
        size("1KB", Some(1000));
        size("5GB", Some(5_000_000_000));
        size("2TB", Some(2_000_000_000_000));
        size("1KiB", Some(1024));
        size("100MiB", Some(100 << 20));
        size("4GiB", Some(4 << 30));
        size("1TiB", Some(1 << 40));
        size("2EiB", Some(2 << 60));
        size("", None);
        size("GiB", None);
        size("KB", None);
        size("-1", None);
        size("1.5GiB", None);
        size("4gib", None);
        size("4 XB", None);
        size("1kb", None);
        size("16EiB", None); // overflows u64
        size("99999999999999999999", None);
    }

    #[test]
    fn size_error_names_the_value_and_units() {
        let msg = parse_size("4XB").unwrap_err().to_string();
        assert!(msg.starts_with("Invalid size \"4XB\""), "{msg}");
        assert!(msg.contains("GiB"), "{msg}");
    }

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Runs `prepare_config` for pool `p` under `/state` (a state dir that need not exist unless
    /// the loop size default is asked for).
    fn prepare(kind: DriverKind, pairs: &[(&str, &str)]) -> Result<BTreeMap<String, String>> {
        prepare_config(kind, "p", Path::new("/state"), &cfg(pairs))
    }

    fn ok(kind: DriverKind, input: &[(&str, &str)], expected: &[(&str, &str)]) {
        assert_eq!(
            prepare(kind, input).unwrap(),
            cfg(expected),
            "{kind} {input:?}"
        );
    }

    fn err(kind: DriverKind, input: &[(&str, &str)], expected: &str) {
        let e = prepare(kind, input).unwrap_err().to_string();
        assert!(e.contains(expected), "{kind} {input:?}: {e}");
    }

    use DriverKind::{Btrfs, Dir};

    #[test]
    fn dir_defaults_and_keys() {
        ok(Dir, &[], &[("source", "/state/storage-pools/p")]);
        ok(
            Dir,
            &[("source", "")],
            &[("source", "/state/storage-pools/p")],
        );
        ok(Dir, &[("source", "/srv/d")], &[("source", "/srv/d")]);
        ok(
            Dir,
            &[
                ("volume.size", "10GiB"),
                ("volume.security.shifted", "true"),
                ("volume.security.unmapped", "no"),
                ("volume.snapshots.expiry", "2w"),
                ("volume.snapshots.pattern", "snap%d"),
                ("volume.snapshots.schedule", "@daily"),
                ("rsync.bwlimit", "10MiB"),
                ("rsync.compression", "false"),
                ("user.note", "anything at all"),
            ],
            &[
                ("source", "/state/storage-pools/p"),
                ("volume.size", "10GiB"),
                ("volume.security.shifted", "true"),
                ("volume.security.unmapped", "no"),
                ("volume.snapshots.expiry", "2w"),
                ("volume.snapshots.pattern", "snap%d"),
                ("volume.snapshots.schedule", "@daily"),
                ("rsync.bwlimit", "10MiB"),
                ("rsync.compression", "false"),
                ("user.note", "anything at all"),
            ],
        );
    }

    #[test]
    fn dir_refusals() {
        err(
            Dir,
            &[("btrfs.mount_options", "x")],
            "Invalid option \"btrfs.mount_options\"",
        );
        err(
            Dir,
            &[("zfs.pool_name", "x")],
            "Invalid option \"zfs.pool_name\"",
        );
        err(
            Dir,
            &[("volume.block.filesystem", "ext4")],
            "Invalid option \"volume.block.filesystem\"",
        );
        err(
            Dir,
            &[("volume.size", "big")],
            "Invalid value for option \"volume.size\": Invalid size \"big\"",
        );
        err(
            Dir,
            &[("rsync.compression", "maybe")],
            "Invalid value for a boolean \"maybe\"",
        );
        err(
            Dir,
            &[("volume.security.shifted", "2")],
            "Invalid value for option \"volume.security.shifted\"",
        );
        err(
            Dir,
            &[("volume.snapshots.expiry", "2x")],
            "Invalid value for option \"volume.snapshots.expiry\"",
        );
        err(
            Dir,
            &[("volume.snapshots.schedule", "0 6 * *")],
            "Invalid value for option \"volume.snapshots.schedule\"",
        );
        err(
            Dir,
            &[("source", "relative/dir")],
            "it must be an absolute path",
        );
        err(
            Dir,
            &[("source", "/srv/../etc")],
            "it must be an absolute path",
        );
    }

    #[test]
    fn btrfs_loop_defaults() {
        ok(
            Btrfs,
            &[("size", "4GiB")],
            &[("source", "/state/disks/p.img"), ("size", "4GiB")],
        );
        ok(
            Btrfs,
            &[
                ("size", "4GiB"),
                ("source", ""),
                ("btrfs.mount_options", "noatime,compress=zstd"),
            ],
            &[
                ("source", "/state/disks/p.img"),
                ("size", "4GiB"),
                ("btrfs.mount_options", "noatime,compress=zstd"),
            ],
        );
        // The loop file's own path is a loop pool too; LXD records it as the initial source.
        ok(
            Btrfs,
            &[("size", "1GiB"), ("source", "/state/disks/p.img")],
            &[
                ("source", "/state/disks/p.img"),
                ("size", "1GiB"),
                ("volatile.initial_source", "/state/disks/p.img"),
            ],
        );
    }

    #[test]
    fn btrfs_loop_size_default_is_lxds_rule() {
        let state = tempfile::tempdir().unwrap();
        let got = prepare_config(Btrfs, "p", state.path(), &BTreeMap::new()).unwrap();
        let st = rustix::fs::statfs(state.path()).unwrap();
        let gib = ((st.f_blocks * st.f_frsize as u64) >> 30) / 5;
        let expected = format!("{}GiB", gib.clamp(5, 30));
        assert_eq!(got.get("size"), Some(&expected));
        assert_eq!(
            got.get("source").map(PathBuf::from),
            Some(state.path().join("disks/p.img"))
        );
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn btrfs_directory_source() {
        // A directory source drops `size` (LXD unsets it) and keeps the source as given.
        ok(
            Btrfs,
            &[("source", "/mnt/btrfs/pool"), ("size", "4GiB")],
            &[
                ("source", "/mnt/btrfs/pool"),
                ("volatile.initial_source", "/mnt/btrfs/pool"),
            ],
        );
    }

    #[test]
    fn btrfs_refusals() {
        err(
            Btrfs,
            &[("size", "4XB")],
            "Invalid value for option \"size\": Invalid size \"4XB\"",
        );
        err(
            Btrfs,
            &[("lvm.vg_name", "x")],
            "Invalid option \"lvm.vg_name\"",
        );
        err(Btrfs, &[("source", "pool")], "it must be an absolute path");
        err(
            Btrfs,
            &[("btrfs.mount_options", "bind")],
            "rxd decides how a pool is mounted",
        );
        err(
            Btrfs,
            &[("btrfs.mount_options", "noatime,,x")],
            "empty option",
        );
        err(
            Btrfs,
            &[("source", "/dev/null")],
            "Invalid source \"/dev/null\"",
        );
    }

    #[test]
    fn block_device_sources_are_refused_for_now() {
        let loop0 = (0..64)
            .map(|n| PathBuf::from(format!("/dev/loop{n}")))
            .find(|p| p.exists());
        let Some(dev) = loop0 else {
            panic!("no /dev/loopN on this host: the btrfs tests need loop devices");
        };
        let e = prepare(Btrfs, &[("source", dev.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("block devices aren't supported by rxd yet"),
            "{e}"
        );
    }

    #[test]
    fn pool_names() {
        for bad in [
            "",
            ".hidden",
            "-opt",
            "a/b",
            "a b",
            "tab\t",
            "..",
            &"x".repeat(256),
        ] {
            let got = prepare_config(Dir, bad, Path::new("/s"), &BTreeMap::new());
            assert!(got.is_err(), "{bad:?} was accepted: {got:?}");
        }
        for good in ["default", "pool-1", "b_2", "Ünïcode"] {
            prepare_config(Dir, good, Path::new("/s"), &BTreeMap::new()).unwrap();
        }
    }

    #[test]
    fn drivers_parse_and_print() {
        assert_eq!("dir".parse::<DriverKind>().unwrap(), Dir);
        assert_eq!("btrfs".parse::<DriverKind>().unwrap(), Btrfs);
        assert_eq!(Btrfs.to_string(), "btrfs");
        assert_eq!(
            "zfs".parse::<DriverKind>().unwrap_err().to_string(),
            "Storage driver \"zfs\" isn't supported by rxd"
        );
    }

    #[test]
    fn mount_options_become_flags_and_data() {
        use rustix::mount::MountFlags as F;
        let (flags, data) = resolve_mount_options(DEFAULT_BTRFS_MOUNT_OPTIONS).unwrap();
        assert_eq!(
            (flags, data.as_str()),
            (F::empty(), "user_subvol_rm_allowed")
        );
        let (flags, data) = resolve_mount_options("noatime,nosuid,compress=zstd,ro,rw").unwrap();
        assert_eq!(flags, F::NOATIME | F::NOSUID);
        assert_eq!(data, "compress=zstd");
    }
}
