//! What the daemon asks the container helper (`rxd-shim`) to start: a small, fully resolved plan.
//! The helper turns it into an OCI runtime spec; nothing in it is ever parsed as text by a shell
//! or written into a generated config file, so every value stays data.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One contiguous id map: container ids `0..size` are host ids `uid..uid+size` (and the same for
/// gids from `gid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchPlan {
    /// The container's runtime id (its instance key: the name, prefixed by a non-default project).
    pub name: String,
    /// The container's host name: the instance's name.
    pub hostname: String,
    /// Absolute path of the root filesystem on the host.
    pub rootfs: PathBuf,
    /// `None` runs a privileged container: no user namespace, container root is host root.
    pub idmap: Option<IdMap>,
    /// Where the helper mounts `rootfs` idmapped to `idmap` (in a mount namespace of its own)
    /// for the container's root: the files on disk keep container ids. `None`: they are
    /// shifted on disk already (or the container is privileged).
    #[serde(default)]
    pub idmapped_root: Option<PathBuf>,
    /// The cgroup the container runs in, relative to each hierarchy's root.
    pub cgroup: String,
    /// `limits.memory`, resolved to bytes.
    pub memory_limit: Option<u64>,
    /// `limits.processes`.
    pub process_limit: Option<i64>,
    /// `limits.memory.enforce=soft`: `memory_limit` is a soft limit (reclaimed above it under
    /// pressure, never killed for it) rather than a hard one.
    #[serde(default)]
    pub memory_soft: bool,
    /// `limits.memory.swap=false`: keep the container's memory out of swap.
    #[serde(default)]
    pub no_swap: bool,
    /// `limits.cpu`, resolved to the host CPUs the container may run on (`0-1`).
    #[serde(default)]
    pub cpus: Option<String>,
    /// `limits.cpu.allowance`.
    #[serde(default)]
    pub cpu_allowance: Option<crate::instance_config::CpuAllowance>,
    /// `linux.sysctl.*`: namespaced sysctls written inside the container's namespaces before
    /// its init runs (only names `instance_config::namespaced_sysctl` accepts).
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    /// `security.nesting`: a procfs and a sysfs without masks at `/dev/.lxc/proc` and
    /// `/dev/.lxc/sys`, so that the kernel lets a runtime inside mount fresh ones (LXD's way).
    #[serde(default)]
    pub nesting: bool,
    /// The init's environment (`environment.*` keys, plus the defaults).
    pub environment: BTreeMap<String, String>,
    /// Host-path disks and unix device nodes, mounted into the container before its init runs.
    #[serde(default)]
    pub devices: DeviceChange,
    /// NICs: veth pairs the container helper makes with one end already inside the
    /// container's network namespace, or host links the daemon made (macvlans, p2p and routed
    /// veths) moved in and renamed; all before its init runs.
    #[serde(default)]
    pub nics: Vec<NicPlan>,
}

/// The largest plan the container helper reads (as one JSON line).
pub const MAX_PLAN: u64 = 64 * 1024;

/// One NIC of a starting container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicPlan {
    /// The link's name on the host (a checked interface name): with `veth`, the host end the
    /// helper makes; without, the link the daemon made, to be moved in.
    pub host: String,
    /// Its name inside the container (`eth0`).
    pub name: String,
    /// Default routes set inside before the init runs (a routed NIC's).
    #[serde(default)]
    pub routes: Vec<NicRoute>,
    /// A bridged NIC's veth pair, made by the helper once the container's network namespace
    /// exists, its inside end created there under `name` (moving a link between namespaces
    /// waits for an RCU grace period or more; making it there does not).
    #[serde(default)]
    pub veth: Option<NicVeth>,
}

/// A bridged NIC's veth pair, as the container helper makes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicVeth {
    /// The inside end's MAC address (`00:16:3e:…`).
    pub mac: String,
    pub mtu: u32,
    /// Rates in bits per second the container receives and sends at, policed on the host end.
    #[serde(default)]
    pub ingress: Option<u64>,
    #[serde(default)]
    pub egress: Option<u64>,
    /// The bridge the host end joins (after the daemon's go-ahead: its filters are in place).
    pub bridge: String,
    /// Whether the port is isolated (`security.port_isolation`).
    #[serde(default)]
    pub isolated: bool,
}

/// A default route inside the container through `gateway`, reached on link `link` (which
/// holds no address of the gateway's subnet: the gateway gets a host route first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicRoute {
    pub link: String,
    pub gateway: std::net::IpAddr,
}

/// Devices to mount into a container (before its init runs, or into a running one: hot-plug)
/// or to take out of a running one (`rxd-shim devices`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceChange {
    #[serde(default)]
    pub add_disks: Vec<crate::devices::DiskMount>,
    #[serde(default)]
    pub add_nodes: Vec<crate::devices::UnixNode>,
    #[serde(default)]
    pub remove_disks: Vec<crate::devices::DiskMount>,
    #[serde(default)]
    pub remove_nodes: Vec<crate::devices::UnixNode>,
    /// No source may be, or lie inside, this directory (rxd's state dir).
    #[serde(default)]
    pub refuse: Option<PathBuf>,
    /// Nor these (storage pools whose files are outside the state dir).
    #[serde(default)]
    pub refuse_also: Vec<PathBuf>,
}

impl DeviceChange {
    /// Every directory no source may reach.
    pub fn refused(&self) -> Vec<&std::path::Path> {
        self.refuse
            .iter()
            .chain(self.refuse_also.iter())
            .map(PathBuf::as_path)
            .collect()
    }
}

impl DeviceChange {
    pub fn is_empty(&self) -> bool {
        self.add_disks.is_empty()
            && self.add_nodes.is_empty()
            && self.remove_disks.is_empty()
            && self.remove_nodes.is_empty()
    }
}

impl LaunchPlan {
    /// The environment every container's init gets unless `environment.*` overrides it.
    pub fn default_environment() -> BTreeMap<String, String> {
        [
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ("container", "lxc"),
            ("LANG", "C.UTF-8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

/// The ids the forwarder takes once its listeners exist (decided by the daemon).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// What the daemon writes on the stdin of `rxd-shim --root <dir> proxy --pid-file <path>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyPlan {
    /// The container's runtime id.
    pub instance: String,
    /// The device's name (for messages).
    pub device: String,
    /// The container's init, and its start time (field 22 of `/proc/<pid>/stat`), so a reused
    /// pid is never taken for it.
    pub init_pid: i32,
    pub init_start: u64,
    /// The container's id map; `None` for a privileged container (no user namespace).
    pub idmap: Option<IdMap>,
    pub proxy: crate::proxy::ProxyDevice,
    pub run_as: RunAs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_round_trips_and_refuses_unknown_fields() {
        let plan = ProxyPlan {
            instance: "c1".into(),
            device: "web".into(),
            init_pid: 42,
            init_start: 7,
            idmap: Some(IdMap {
                uid: 100000,
                gid: 100000,
                size: 65536,
            }),
            proxy: crate::proxy::validate(
                &[
                    ("type", "proxy"),
                    ("listen", "unix:/run/a.sock"),
                    ("connect", "tcp:[::1]:80"),
                    ("mode", "0600"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            )
            .unwrap(),
            run_as: RunAs {
                uid: 65534,
                gid: 65534,
            },
        };
        let text = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<ProxyPlan>(&text).unwrap(), plan);
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["proxy"]["surprise"] = true.into();
        assert!(serde_json::from_value::<ProxyPlan>(v).is_err());
    }
}
