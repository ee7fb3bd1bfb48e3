//! The one error type of rxd-network: what was asked, and what the kernel answered.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetworkError {
    /// The kernel refused a request; `errno` is its answer (positive, as errno(3) lists them).
    #[error("{what}: the kernel refused: {}", io::Error::from_raw_os_error(*errno))]
    Kernel { what: String, errno: i32 },
    /// The netlink socket itself failed (open, send, receive).
    #[error("{what}: netlink socket: {source}")]
    Socket {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The kernel's reply could not be read, or was not the reply asked for.
    #[error("{what}: unexpected netlink reply: {detail}")]
    Reply { what: String, detail: String },
    /// No link has this name (or index) in the network namespace the socket belongs to.
    #[error("no network interface {link} in this network namespace")]
    NoSuchLink { link: String },
    /// A link of the bridge's name exists and is something else: rxd neither adopts nor
    /// replaces an interface it did not make.
    #[error(
        "interface {name} exists and is a {kind} link, not a bridge; rxd does not adopt or \
         replace it: remove it or pick another network name"
    )]
    NotABridge { name: String, kind: String },
    /// Reading or writing `/proc/sys/net/...` failed.
    #[error("sysctl {}: {source}", path.display())]
    Sysctl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Entering or creating a network namespace failed.
    #[error("{what}: {source}")]
    Netns {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A tool rxd runs (`tc`) could not run or refused.
    #[error("{tool}: {detail}")]
    Tool { tool: &'static str, detail: String },
    /// dnsmasq exited right after its start (LXD's message: the status as Go prints it, then
    /// what dnsmasq wrote, quoted).
    #[error("The DNS and DHCP service exited prematurely: {status} ({stderr:?})")]
    DnsmasqExited { status: String, stderr: String },
    /// The process started for a network's dnsmasq is not dnsmasq leading its own session.
    #[error("network {net}: pid {pid} is not the dnsmasq rxd started (stopped)")]
    DnsmasqIdentity { net: String, pid: i32 },
    /// A network's dnsmasq is no longer running (its pid is gone or belongs to another
    /// process).
    #[error("network {net}: dnsmasq (pid {pid}) is not running")]
    DnsmasqGone { net: String, pid: i32 },
    /// Starting, signalling or keeping the files of a network's dnsmasq failed.
    #[error("network {net}: {what}: {source}")]
    Dnsmasq {
        net: String,
        what: String,
        #[source]
        source: io::Error,
    },
}

impl NetworkError {
    /// The kernel's errno, when the kernel (or a system call) refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetworkError::Kernel { errno, .. } => Some(*errno),
            NetworkError::Socket { source, .. }
            | NetworkError::Sysctl { source, .. }
            | NetworkError::Netns { source, .. }
            | NetworkError::Dnsmasq { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = NetworkError> = std::result::Result<T, E>;
