//! The host id range for unprivileged containers: the `root` entries of /etc/subuid and
//! /etc/subgid. Missing entries are added (`root:1000000:1000000000`), as LXD's packaging does.

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
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let sep = if text.is_empty() || text.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            writeln!(f, "{sep}root:{}:{}", DEFAULT.0, DEFAULT.1)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(file = %path.display(), "added root:{}:{} for unprivileged containers", DEFAULT.0, DEFAULT.1);
            DEFAULT
        }
    };
    HostRange::new(base, size).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn load() -> Result<HostIds, String> {
    Ok(HostIds {
        uid: range_from(Path::new("/etc/subuid"))?,
        gid: range_from(Path::new("/etc/subgid"))?,
    })
}
