//! The host id range for unprivileged containers: the `root` entries of /etc/subuid and
//! /etc/subgid. Missing entries are added (`root:1000000:1000000000`), as LXD's packaging does;
//! where /etc cannot be written, that range is used unrecorded, as LXD uses it.

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
            let sep = if text.is_empty() || text.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            let recorded = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{sep}root:{}:{}", DEFAULT.0, DEFAULT.1));
            match recorded {
                Ok(()) => tracing::info!(
                    file = %path.display(),
                    "added root:{}:{} for unprivileged containers", DEFAULT.0, DEFAULT.1
                ),
                // /etc read-only (the systemd unit's ProtectSystem=full; the package adds the
                // entries): LXD's default range, as LXD takes it when the file has none.
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "no range for root and the file cannot be written: using root:{}:{} without recording it",
                    DEFAULT.0,
                    DEFAULT.1
                ),
            }
            DEFAULT
        }
    };
    HostRange::new(base, size).map_err(|e| format!("{}: {e}", path.display()))
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

    /// Under the systemd unit /etc is read-only: LXD's default range, unrecorded, rather than
    /// no unprivileged containers at all.
    #[test]
    fn an_unwritable_file_gives_the_default_range() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir/subuid");
        let r = range_from(&missing).unwrap();
        assert_eq!((r.0.base, r.0.size), DEFAULT);
        assert!(!missing.exists());
        // A file with root's entry is read, not changed.
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
