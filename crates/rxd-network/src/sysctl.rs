//! Per-interface sysctls, through `/proc/sys/net/...`: that tree shows the network namespace of
//! the thread that opens a file in it, so a thread inside [`crate::in_netns`] reads and writes
//! that namespace's values. Only the keys rxd sets on the interfaces it owns are nameable.

use crate::error::{NetworkError, Result};
use rxd_core::network::config::IfName;
use std::io::{self, Write};
use std::path::PathBuf;

/// A per-interface sysctl rxd sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfaceSysctl {
    /// `net.ipv6.conf.<if>.disable_ipv6`: 1 on a bridge without IPv6 (no guessable link-local
    /// address on the host) and on a NIC's host end.
    Ipv6DisableIpv6,
    /// `net.ipv6.conf.<if>.autoconf`: 0 on a bridge (it routes; it does not take SLAAC).
    Ipv6Autoconf,
    /// `net.ipv6.conf.<if>.accept_dad`: 0 on a bridge, so its addresses are never tentative.
    Ipv6AcceptDad,
    /// `net.ipv6.conf.<if>.accept_ra`: 0 on a NIC's host end.
    Ipv6AcceptRa,
    /// `net.ipv4.conf.<if>.forwarding`: 1 on a bridge (rxd never sets the host-wide one).
    Ipv4Forwarding,
}

impl IfaceSysctl {
    fn parts(self) -> (&'static str, &'static str) {
        match self {
            IfaceSysctl::Ipv6DisableIpv6 => ("ipv6", "disable_ipv6"),
            IfaceSysctl::Ipv6Autoconf => ("ipv6", "autoconf"),
            IfaceSysctl::Ipv6AcceptDad => ("ipv6", "accept_dad"),
            IfaceSysctl::Ipv6AcceptRa => ("ipv6", "accept_ra"),
            IfaceSysctl::Ipv4Forwarding => ("ipv4", "forwarding"),
        }
    }

    /// `/proc/sys/net/<family>/conf/<iface>/<key>`. `IfName` admits no `/` and is never `.` or
    /// `..`; checked again here because this string becomes a path.
    pub fn path(self, iface: &IfName) -> Result<PathBuf> {
        let (family, key) = self.parts();
        let name = iface.as_str();
        let mut path = PathBuf::from(format!("/proc/sys/net/{family}/conf"));
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(NetworkError::Sysctl {
                path: path.join("?").join(key),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name:?} cannot name an interface directory"),
                ),
            });
        }
        path.push(name);
        path.push(key);
        Ok(path)
    }
}

/// Writes `value` to an interface's sysctl, in the calling thread's network namespace.
pub fn set_iface_sysctl(iface: &IfName, key: IfaceSysctl, value: u32) -> Result<()> {
    let path = key.path(iface)?;
    let write = || -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
        file.write_all(format!("{value}\n").as_bytes())
    };
    write().map_err(|source| NetworkError::Sysctl { path, source })
}

/// Reads an interface's sysctl, in the calling thread's network namespace.
pub fn iface_sysctl(iface: &IfName, key: IfaceSysctl) -> Result<i64> {
    let path = key.path(iface)?;
    let text = std::fs::read_to_string(&path).map_err(|source| NetworkError::Sysctl {
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| NetworkError::Sysctl {
        path,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a number: {:?}", text.trim()),
        ),
    })
}
