//! lxcfs (Debian's `lxcfs` package): files of /proc and /sys that show a container its own
//! limits and usage (`free`, `top`, `uptime`, `nproc`), bound over the kernel's as LXD does.
//! Used only when lxcfs is mounted and answering at start: a dead lxcfs would give every
//! reader in the container ENOTCONN.

use crate::cgroups::unescape;

/// Where Debian's lxcfs mounts itself.
pub const ROOT: &str = "/var/lib/lxcfs";

/// The files bound, relative to [`ROOT`] and to the container's `/`. libcontainer allows
/// exactly these eight under /proc.
const FILES: &[&str] = &[
    "proc/cpuinfo",
    "proc/diskstats",
    "proc/loadavg",
    "proc/meminfo",
    "proc/slabinfo",
    "proc/stat",
    "proc/swaps",
    "proc/uptime",
    "sys/devices/system/cpu/online",
];

/// Whether `mountinfo` shows a `fuse.lxcfs` mount at [`ROOT`].
fn mounted(mountinfo: &str) -> bool {
    mountinfo.lines().any(|line| {
        let Some((left, right)) = line.split_once(" - ") else {
            return false;
        };
        left.split(' ').nth(4).map(unescape).as_deref() == Some(ROOT)
            && right.split(' ').next() == Some("fuse.lxcfs")
    })
}

/// The files to bind (relative paths, see [`FILES`]): none unless lxcfs is mounted and live.
pub fn files() -> Vec<&'static str> {
    let live = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| mounted(&m))
        && std::fs::metadata(format!("{ROOT}/proc/uptime")).is_ok();
    if !live {
        return Vec::new();
    }
    FILES
        .iter()
        .copied()
        .filter(|f| std::fs::metadata(format!("{ROOT}/{f}")).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fuse_lxcfs_mount_at_its_place_counts() {
        let lxcfs = "90 23 0:50 / /var/lib/lxcfs rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0\n";
        assert!(mounted(lxcfs));
        assert!(!mounted(
            "90 23 0:50 / /var/lib/lxcfs rw - tmpfs tmpfs rw\n"
        ));
        assert!(!mounted(
            "90 23 0:50 / /srv/lxcfs rw - fuse.lxcfs lxcfs rw\n"
        ));
        assert!(!mounted(""));
    }
}
