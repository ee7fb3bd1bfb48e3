//! Facts about the host shown in `environment`, read once at start-up so `GET /1.0` does no IO.

use rxd_api::server::StorageDriver;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct HostFacts {
    pub server_name: String,
    pub kernel: String,
    pub kernel_architecture: String,
    pub kernel_version: String,
    pub architectures: Vec<String>,
    pub os_name: String,
    pub os_version: String,
    pub storage_drivers: Vec<StorageDriver>,
}

impl HostFacts {
    pub fn read() -> HostFacts {
        let uts = nix::sys::utsname::uname().ok();
        let s = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let machine = s(|u| u.machine());
        let architectures = match machine.as_str() {
            "x86_64" => vec!["x86_64".into(), "i686".into()],
            "aarch64" => vec!["aarch64".into(), "armv7l".into()],
            other => vec![other.to_owned()],
        };
        let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let os_field = |key: &str| {
            os.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .map(|v| v.trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        HostFacts {
            server_name: host_name(),
            kernel: s(|u| u.sysname()),
            kernel_architecture: machine,
            kernel_version: s(|u| u.release()),
            architectures,
            os_name: os_field("NAME"),
            os_version: os_field("VERSION_ID"),
            storage_drivers: std::iter::once(StorageDriver {
                name: "dir".into(),
                version: "1".into(),
                remote: false,
            })
            .chain(btrfs_version().map(|version| StorageDriver {
                name: "btrfs".into(),
                version,
                remote: false,
            }))
            .collect(),
        }
    }

    pub fn kernel_features(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// btrfs-progs' version (`btrfs --version`: `btrfs-progs v6.2`), as LXD reports its btrfs
/// driver's; none when the tools are missing (no btrfs pools then).
fn btrfs_version() -> Option<String> {
    let out = std::process::Command::new("/usr/bin/btrfs")
        .arg("--version")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1)?.trim_start_matches('v');
    (out.status.success() && !version.is_empty()).then(|| version.to_owned())
}
