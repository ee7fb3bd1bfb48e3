//! The host id range for unprivileged containers: the `root` entries of /etc/subuid and
//! /etc/subgid. Missing entries are added (`root:1000000:1000000000`), as LXD's packaging does,
//! unless a user's range overlaps it; where the file cannot be written the range is not used
//! (only privileged containers run), since an unrecorded range could be handed to a user.

use rxd_core::idmap::{parse_subid, HostRange};
use std::io::Write;
use std::path::Path;

const DEFAULT: (u32, u32) = (1_000_000, 1_000_000_000);

#[derive(Debug, Clone, Copy)]
pub struct HostIds {
    pub uid: HostRange,
    pub gid: HostRange,
}

fn range_from(path: &Path) -> Result<HostRange, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let (base, size) = match parse_subid(&text, "root") {
        Some(r) => r,
        None => {
            // Never a range some user already holds: they could then reach containers' files
            // and processes through newuidmap.
            if let Some(user) = overlapping(&text, DEFAULT) {
                return Err(format!(
                    "{}: no range for root, and the default root:{}:{} overlaps {user}'s: add a range for root by hand",
                    path.display(),
                    DEFAULT.0,
                    DEFAULT.1
                ));
            }
            let sep = if text.is_empty() || text.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            // Recorded, or not used: an unrecorded range could later be handed to a user by
            // useradd. (Under the systemd unit /etc is read-only; the package records it.)
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{sep}root:{}:{}", DEFAULT.0, DEFAULT.1))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(file = %path.display(), "added root:{}:{} for unprivileged containers", DEFAULT.0, DEFAULT.1);
            DEFAULT
        }
    };
    HostRange::new(base, size).map_err(|e| format!("{}: {e}", path.display()))
}

/// The first entry of a subordinate id file (`name:start:count` lines) whose range meets
/// `(start, count)`.
fn overlapping(text: &str, (start, count): (u32, u32)) -> Option<String> {
    let end = u64::from(start) + u64::from(count);
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (name, s, c) = (
            f.next()?,
            f.next()?.parse::<u64>().ok()?,
            f.next()?.parse::<u64>().ok()?,
        );
        (s < end && u64::from(start) < s + c).then(|| name.to_owned())
    })
}

pub fn load() -> Result<HostIds, String> {
    Ok(paired(
        range_from(Path::new("/etc/subuid"))?,
        range_from(Path::new("/etc/subgid"))?,
    ))
}

/// Both ranges cut to the smaller size: an isolated block is taken from the uid range and its
/// gids lie at the same offset in the gid range, so a larger uid range would hand out gids
/// beyond what /etc/subgid delegates.
fn paired(mut uid: HostRange, mut gid: HostRange) -> HostIds {
    let size = uid.0.size.min(gid.0.size);
    if uid.0.size != gid.0.size {
        tracing::warn!(
            subuid = uid.0.size,
            subgid = gid.0.size,
            used = size,
            "root's subordinate uid and gid ranges differ in size: using the smaller for both"
        );
    }
    uid.0.size = size;
    gid.0.size = size;
    HostIds { uid, gid }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unwritable file gives no range (an unrecorded one could go to a user later), nor
    /// does a default that overlaps a user's; an entry for root is read as it is.
    #[test]
    fn root_gets_a_recorded_range_that_overlaps_no_user() {
        let dir = tempfile::tempdir().unwrap();
        assert!(range_from(&dir.path().join("no-such-dir/subuid")).is_err());
        let overlap = dir.path().join("overlap");
        std::fs::write(&overlap, "alice:100000:65536\nbob:999999:2").unwrap();
        let e = range_from(&overlap).unwrap_err();
        assert!(e.contains("bob"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&overlap).unwrap(),
            "alice:100000:65536\nbob:999999:2"
        );
        let fresh = dir.path().join("fresh");
        std::fs::write(&fresh, "alice:100000:65536").unwrap();
        let r = range_from(&fresh).unwrap();
        assert_eq!((r.0.base, r.0.size), DEFAULT);
        assert_eq!(
            std::fs::read_to_string(&fresh).unwrap(),
            "alice:100000:65536\nroot:1000000:1000000000\n"
        );
        let file = dir.path().join("subuid");
        std::fs::write(&file, "alice:100000:65536\nroot:200000:65536\n").unwrap();
        let r = range_from(&file).unwrap();
        assert_eq!((r.0.base, r.0.size), (200_000, 65_536));
    }

    /// Found while fuzzing: a uid range larger than the gid range let an isolated block near its
    /// end map gids outside /etc/subgid.
    #[test]
    fn uid_and_gid_ranges_are_cut_to_the_same_size() {
        let ids = paired(
            HostRange::new(1_000_000, 1_000_000_000).unwrap(),
            HostRange::new(2_000_000, 100_000).unwrap(),
        );
        assert_eq!((ids.uid.0.size, ids.gid.0.size), (100_000, 100_000));
        assert_eq!((ids.uid.0.base, ids.gid.0.base), (1_000_000, 2_000_000));
    }
}
