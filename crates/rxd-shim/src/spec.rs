//! A launch plan turned into an OCI runtime spec for a system container: `/sbin/init` as pid 1 in
//! its own user (unless privileged), PID, mount, UTS, IPC, network and cgroup namespaces, a minimal
//! /dev, read-only /sys and /proc/sys, a capability set without the host-reaching ones, a seccomp
//! deny list, the standard device set only, and the plan's cgroup limits.
//!
//! What a systemd init needs besides (images-storage.md §5), as LXD gives it: the container's own
//! cgroups at `/sys/fs/cgroup` (a fresh cgroupfs per host hierarchy, seen through the cgroup
//! namespace; on a v1 host that includes the named `systemd` one, so systemd runs in "legacy"
//! mode), `/run` and `/run/lock` as tmpfs, `container=lxc` in the environment, and lxcfs's files
//! over /proc's when lxcfs runs. The cgroup placement and delegation libcontainer cannot express
//! are in `delegation.rs`.
//!
//! With these, Debian 12 (systemd 252) reaches `running` with no failed unit, unprivileged or
//! privileged, with or without lxcfs: what cannot work in a container skips itself by its
//! conditions (udev and sysctl on the read-only /sys and /proc/sys, module loading, binfmt,
//! the kernel debug and config file systems). The one complaint in the console log, "Failed to
//! create symlink /sys/fs/cgroup/cpu", is systemd expecting cpu and cpuacct mounted together:
//! harmless where the host mounts them apart.
//!
//! The spec is written as JSON and then parsed by `oci_spec`, so a shape mistake fails here, in
//! tests, rather than inside the runtime; every value from the plan enters as a JSON value.

use libcontainer::oci_spec::runtime::Spec;
use rxd_core::launch::LaunchPlan;
use serde_json::{json, Value};

/// Capabilities a system container keeps (inside its user namespace, for unprivileged ones),
/// with their bit numbers.
/// Left out, as LXD does and more: module loading, raw IO, the clock, MAC policy, `mknod`, audit
/// control, syslog, BPF, perf, and the wake/suspend ones.
const CAPABILITIES: &[(&str, u32)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_SETFCAP", 31),
];

/// System calls refused with EPERM: the usual ways out of a container or into the host kernel.
const DENIED_SYSCALLS: &[&str] = &[
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    // Its partner `name_to_handle_at` stays allowed, as Docker and LXD allow it: it only names
    // a file, and systemd uses it to tell mount points apart.
    "open_by_handle_at",
    "add_key",
    "request_key",
    "keyctl",
    "iopl",
    "ioperm",
    "swapon",
    "swapoff",
    "acct",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "lookup_dcookie",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "stime",
    "syslog",
    "uselib",
    "vm86",
    "vm86old",
    "nfsservctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
];

/// Character devices a container may use (type, major, minor; -1 is any): null, zero, full,
/// random, urandom, tty, console, ptmx and the pty slaves.
pub(crate) const DEVICES: &[(i64, i64)] = &[
    (1, 3),
    (1, 5),
    (1, 7),
    (1, 8),
    (1, 9),
    (5, 0),
    (5, 1),
    (5, 2),
    (136, -1),
];

/// `bounding` is the helper's own capability bounding set: no container gets a capability the
/// helper lacks (a privileged one could not have it; and commands run later with `exec` take
/// the init's set while still outside the container's user namespace). `lxcfs`: the lxcfs
/// files to bind over the kernel's, relative to `/var/lib/lxcfs` and to `/` (see `lxcfs.rs`).
/// What the host's cgroups offer, which decides how limits are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupHost {
    /// The unified hierarchy (cgroup v2) rather than v1 controllers.
    pub v2: bool,
    /// v1's `memory.memsw.*` (swap accounting) is there.
    pub memsw: bool,
}

impl CgroupHost {
    /// This host's, from `/sys/fs/cgroup`.
    pub fn probe() -> CgroupHost {
        let root = std::path::Path::new("/sys/fs/cgroup");
        CgroupHost {
            v2: root.join("cgroup.controllers").exists(),
            memsw: root.join("memory/memory.memsw.limit_in_bytes").exists(),
        }
    }
}

/// The plan's CPU and memory limits as OCI resources (`linux.resources.cpu`, `.memory`,
/// `.unified`), as LXD sets them (`driver_lxc.go`):
///
/// | key | cgroup v1 | cgroup v2 |
/// |---|---|---|
/// | `limits.cpu` | `cpuset.cpus` | `cpuset.cpus` |
/// | `limits.cpu.allowance` `P%` | `cpu.shares` = 1024 × P / 100 | `cpu.weight` = P |
/// | `limits.cpu.allowance` `Q/R` | `cpu.cfs_quota_us`, `cpu.cfs_period_us` | `cpu.max` |
/// | `limits.memory` (hard) | `memory.limit_in_bytes` = L, `soft_limit_in_bytes` = 0.9 L | `memory.max` = L, `memory.low` = 0.9 L |
/// | `limits.memory` + `enforce=soft` | `memory.soft_limit_in_bytes` = L | `memory.high` = L |
/// | `limits.memory` (hard), any `limits.memory.swap` | `memsw.limit_in_bytes` = L, with swap accounting | `memory.swap.max` = 0 |
/// | `limits.memory.swap=false` | `memory.swappiness` = 0 | `memory.swap.max` = 0 |
///
/// (`memory.high` throttles and reclaims above it without killing: v2's soft limit. LXD writes
/// `memory.low`, a protection, which does not limit anything.)
fn cpu_and_memory(plan: &LaunchPlan, host: CgroupHost, resources: &mut Value) {
    use rxd_core::instance_config::CpuAllowance;
    let mut cpu = json!({});
    let mut unified = serde_json::Map::new();
    if let Some(cpus) = &plan.cpus {
        cpu["cpus"] = json!(cpus);
    }
    match plan.cpu_allowance {
        Some(CpuAllowance::Percent(p)) if host.v2 => {
            unified.insert("cpu.weight".into(), json!(p.max(1).to_string()));
        }
        Some(CpuAllowance::Percent(p)) => cpu["shares"] = json!((1024 * u64::from(p) / 100).max(2)),
        Some(CpuAllowance::Quota {
            quota_us,
            period_us,
        }) => {
            cpu["quota"] = json!(quota_us);
            cpu["period"] = json!(period_us);
        }
        None => {}
    }
    if cpu != json!({}) {
        resources["cpu"] = cpu;
    }
    let mut memory = json!({});
    match (plan.memory_limit, plan.memory_soft) {
        (Some(bytes), false) => {
            memory["limit"] = json!(bytes);
            // A page multiple, as the kernel stores it.
            memory["reservation"] = json!(soft_of_hard(bytes));
            if host.v2 || host.memsw {
                // LXD 5.0: memory and swap together no more than the limit (v1 memsw = L; v2
                // swap.max 0), whatever `limits.memory.swap` says. (LXD leaves swap unbounded
                // when it is `false`; rxd does not.)
                memory["swap"] = json!(bytes);
            }
        }
        (Some(bytes), true) if host.v2 => {
            unified.insert("memory.high".into(), json!(bytes.to_string()));
        }
        (Some(bytes), true) => memory["reservation"] = json!(bytes),
        (None, _) => {}
    }
    if plan.no_swap {
        if host.v2 {
            unified.insert("memory.swap.max".into(), json!("0"));
        } else {
            memory["swappiness"] = json!(0);
        }
    }
    if memory != json!({}) {
        resources["memory"] = memory;
    }
    if !unified.is_empty() {
        resources["unified"] = Value::Object(unified);
    }
}

/// LXD's soft limit under a hard one: 90% of it (rounded down to a 4 KiB page).
pub fn soft_of_hard(bytes: u64) -> u64 {
    (bytes / 10 * 9) & !4095
}

pub fn build(
    plan: &LaunchPlan,
    bounding: u64,
    lxcfs: &[&str],
    host: CgroupHost,
) -> Result<Spec, serde_json::Error> {
    let env: Vec<String> = plan
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let caps: Vec<&str> = CAPABILITIES
        .iter()
        .filter(|&&(_, bit)| bounding & (1 << bit) != 0)
        .map(|&(name, _)| name)
        .collect();
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "uts"}),
        json!({"type": "ipc"}),
        json!({"type": "network"}),
        json!({"type": "cgroup"}),
    ];
    let mut linux = json!({});
    if let Some(map) = plan.idmap {
        namespaces.push(json!({"type": "user"}));
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": map.uid, "size": map.size}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": map.gid, "size": map.size}]);
    }
    let mut devices = vec![json!({"allow": false, "access": "rwm"})];
    devices.extend(DEVICES.iter().map(|&(major, minor)| {
        let mut d = json!({"allow": true, "type": "c", "major": major, "access": "rwm"});
        if minor >= 0 {
            d["minor"] = json!(minor);
        }
        d
    }));
    // The unix-char and unix-block devices it is given (numbers fixed by the caller).
    devices.extend(plan.devices.add_nodes.iter().filter_map(|n| {
        Some(json!({
            "allow": true,
            "type": if n.block { "b" } else { "c" },
            "major": n.major?,
            "minor": n.minor?,
            "access": "rwm",
        }))
    }));
    let mut resources = json!({"devices": devices});
    if let Some(limit) = plan.process_limit {
        resources["pids"] = json!({"limit": limit});
    }
    cpu_and_memory(plan, host, &mut resources);
    if !plan.sysctl.is_empty() {
        linux["sysctl"] = json!(plan.sysctl);
    }
    linux["namespaces"] = Value::Array(namespaces);
    // Links the daemon made: libcontainer moves each into the new network namespace under its
    // inside name and brings it up before the init execs (runtime-spec `netDevices`). Veth
    // pairs are made with their end inside by `nics.rs`.
    let moved: serde_json::Map<String, Value> = plan
        .nics
        .iter()
        .filter(|n| n.veth.is_none())
        .map(|n| (n.host.clone(), json!({"name": n.name})))
        .collect();
    if !moved.is_empty() {
        linux["netDevices"] = Value::Object(moved);
    }
    linux["resources"] = resources;
    linux["cgroupsPath"] = json!(plan.cgroup);
    linux["maskedPaths"] = json!([
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/kernel/debug",
        "/sys/kernel/security"
    ]);
    linux["readonlyPaths"] = json!([
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger"
    ]);
    linux["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    });
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        // libcontainer mounts a tmpfs here, then, in the cgroup namespace, a fresh cgroupfs for
        // each v1 hierarchy of the host (the named ones with `name=`), or cgroup2 on a v2 host.
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev"]}),
        // systemd mounts /run itself only where it may; Debian's units expect /run/lock too.
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755", "size=20%"]}),
        json!({"destination": "/run/lock", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "noexec", "mode=1777", "size=5120k"]}),
    ];
    if plan.nesting {
        // A procfs and a sysfs with nothing mounted over them: the kernel lets a user namespace
        // mount a fresh procfs or sysfs only where one is already fully visible to it, which the
        // masked /proc and /sys are not. Nested runtimes (LXC, runc, youki) need those mounts.
        mounts.push(json!({"destination": "/dev/.lxc/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}));
        mounts.push(json!({"destination": "/dev/.lxc/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev"]}));
    }
    for file in lxcfs {
        mounts.push(json!({
            "destination": format!("/{file}"),
            "type": "bind",
            "source": format!("/var/lib/lxcfs/{file}"),
            "options": ["bind", "nosuid", "nodev", "noexec"],
        }));
    }
    let spec = json!({
        "ociVersion": "1.0.2",
        "hostname": plan.hostname,
        "root": {"path": plan.idmapped_root.as_ref().unwrap_or(&plan.rootfs), "readonly": false},
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/sbin/init"],
            "env": env,
            "cwd": "/",
            "noNewPrivileges": false,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []
            },
        },
        "mounts": mounts,
        "linux": linux,
    });
    serde_json::from_value(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::{LinuxNamespaceType, LinuxSeccompAction};
    use rxd_core::instance_config::CpuAllowance;
    use rxd_core::launch::IdMap;

    const V1: CgroupHost = CgroupHost {
        v2: false,
        memsw: true,
    };
    const V2: CgroupHost = CgroupHost {
        v2: true,
        memsw: false,
    };

    fn plan(idmap: Option<IdMap>) -> LaunchPlan {
        LaunchPlan {
            name: "c1".into(),
            hostname: "c1".into(),
            rootfs: "/var/lib/rxd/containers/c1/rootfs".into(),
            idmap,
            idmapped_root: None,
            cgroup: "/rxd/abc/c1".into(),
            memory_limit: Some(256 << 20),
            process_limit: Some(50),
            memory_soft: false,
            no_swap: false,
            cpus: None,
            cpu_allowance: None,
            sysctl: Default::default(),
            nesting: false,
            environment: LaunchPlan::default_environment(),
            devices: Default::default(),
            nics: Vec::new(),
        }
    }

    #[test]
    fn moved_nics_become_net_devices_renamed_inside_and_veths_do_not() {
        let mut p = plan(None);
        let s = build(&p, u64::MAX, &[], V2).unwrap();
        assert!(s.linux().as_ref().unwrap().net_devices().is_none());
        let veth = rxd_core::launch::NicPlan {
            host: "vethab12cd34".into(),
            name: "eth1".into(),
            routes: Vec::new(),
            veth: Some(rxd_core::launch::NicVeth {
                mac: "00:16:3e:00:00:01".into(),
                mtu: 1500,
                ingress: None,
                egress: None,
                bridge: "br0".into(),
                isolated: false,
            }),
        };
        p.nics = vec![veth.clone()];
        let s = build(&p, u64::MAX, &[], V2).unwrap();
        assert!(s.linux().as_ref().unwrap().net_devices().is_none());
        p.nics = vec![
            rxd_core::launch::NicPlan {
                host: "rxp0a1b2c3d".into(),
                name: "eth0".into(),
                routes: Vec::new(),
                veth: None,
            },
            veth,
        ];
        let s = build(&p, u64::MAX, &[], V2).unwrap();
        let nets = s.linux().as_ref().unwrap().net_devices().clone().unwrap();
        assert_eq!(nets.len(), 1);
        assert_eq!(nets["rxp0a1b2c3d"].name().as_deref(), Some("eth0"));
    }

    #[test]
    fn unix_devices_get_their_cgroup_rule_and_nothing_more() {
        let mut p = plan(None);
        let node = |block, major, minor| rxd_core::devices::UnixNode {
            device: "d".into(),
            block,
            source: None,
            path: "/dev/x".into(),
            major,
            minor,
            uid: 0,
            gid: 0,
            mode: 0o660,
            required: true,
        };
        p.devices.add_nodes = vec![
            node(false, Some(10), Some(229)),
            node(true, Some(7), Some(3)),
        ];
        let s = build(&p, u64::MAX, &[], V1).unwrap();
        let rules = serde_json::to_value(s.linux().as_ref().unwrap().resources()).unwrap()
            ["devices"]
            .clone();
        let rules = rules.as_array().unwrap();
        let has = |kind: &str, major: i64, minor: i64| {
            rules.iter().any(|r| {
                r["allow"] == true
                    && r["type"] == kind
                    && r["major"] == major
                    && r["minor"] == minor
            })
        };
        assert!(has("c", 10, 229) && has("b", 7, 3), "{rules:?}");
        let without = build(&plan(None), u64::MAX, &[], V1).unwrap();
        let base = serde_json::to_value(without.linux().as_ref().unwrap().resources()).unwrap()
            ["devices"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(rules.len(), base + 2);
    }

    fn has_ns(s: &Spec, t: LinuxNamespaceType) -> bool {
        let linux = s.linux().as_ref().unwrap();
        linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == t)
    }

    #[test]
    fn unprivileged_gets_a_user_namespace_mapped_to_its_block() {
        let s = build(
            &plan(Some(IdMap {
                uid: 1_065_536,
                gid: 2_065_536,
                size: 65536,
            })),
            0,
            &[],
            V1,
        )
        .unwrap();
        let linux = s.linux().as_ref().unwrap();
        assert!(has_ns(&s, LinuxNamespaceType::User));
        let u = &linux.uid_mappings().as_ref().unwrap()[0];
        assert_eq!(
            (u.container_id(), u.host_id(), u.size()),
            (0, 1_065_536, 65536)
        );
        let g = &linux.gid_mappings().as_ref().unwrap()[0];
        assert_eq!(g.host_id(), 2_065_536);
        for t in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Cgroup,
        ] {
            assert!(has_ns(&s, t), "{t:?}");
        }
        assert_eq!(s.hostname().as_deref(), Some("c1"));
    }

    #[test]
    fn privileged_has_no_user_namespace_and_no_map() {
        let s = build(&plan(None), u64::MAX, &[], V1).unwrap();
        assert!(!has_ns(&s, LinuxNamespaceType::User));
        assert!(s.linux().as_ref().unwrap().uid_mappings().is_none());
    }

    #[test]
    fn limits_seccomp_and_capabilities() {
        let s = build(&plan(None), u64::MAX, &[], V1).unwrap();
        let linux = s.linux().as_ref().unwrap();
        let r = linux.resources().as_ref().unwrap();
        assert_eq!(r.pids().as_ref().unwrap().limit(), 50);
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(256 << 20));
        let seccomp = linux.seccomp().as_ref().unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
        let denied = seccomp.syscalls().as_ref().unwrap()[0].names();
        for call in [
            "init_module",
            "kexec_load",
            "open_by_handle_at",
            "keyctl",
            "bpf",
        ] {
            assert!(denied.iter().any(|n| n == call), "{call}");
        }
        let caps = s
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        let bounding: Vec<String> = caps
            .bounding()
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.to_string().trim_start_matches("CAP_").to_owned())
            .collect();
        assert_eq!(bounding.len(), CAPABILITIES.len());
        for gone in ["SYS_MODULE", "SYS_RAWIO", "MKNOD", "SYS_TIME", "MAC_ADMIN"] {
            assert!(!bounding.iter().any(|c| c == gone), "{gone} kept");
        }
        assert!(bounding.iter().any(|c| c == "SYS_BOOT"));
        let ro = linux.readonly_paths().as_ref().unwrap();
        assert!(ro.iter().any(|p| p == "/proc/sys"));
    }

    #[test]
    fn containers_get_only_what_the_host_has() {
        let without_sys_resource: u64 = !(1 << 24);
        for idmap in [
            None,
            Some(rxd_core::launch::IdMap {
                uid: 1 << 20,
                gid: 1 << 20,
                size: 65536,
            }),
        ] {
            let s = build(&plan(idmap), without_sys_resource, &[], V1).unwrap();
            let caps = s
                .process()
                .as_ref()
                .unwrap()
                .capabilities()
                .as_ref()
                .unwrap();
            let bounding = caps.bounding().as_ref().unwrap();
            assert_eq!(bounding.len(), CAPABILITIES.len() - 1);
            assert!(!bounding
                .iter()
                .any(|c| c.to_string().ends_with("SYS_RESOURCE")));
        }
    }

    #[test]
    fn values_stay_data() {
        let mut p = plan(None);
        p.environment
            .insert("EVIL".into(), "a\nlxc.hook=/bin/sh\"".into());
        let s = build(&p, u64::MAX, &[], V1).unwrap();
        let env = s.process().as_ref().unwrap().env().as_ref().unwrap();
        assert!(env.iter().any(|e| e == "EVIL=a\nlxc.hook=/bin/sh\""));
    }

    #[test]
    fn systemd_gets_its_cgroups_run_and_lxcfs_when_live() {
        let dest = |s: &Spec| -> Vec<(String, String)> {
            s.mounts()
                .as_ref()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m.destination().display().to_string(),
                        m.typ().clone().unwrap_or_default(),
                    )
                })
                .collect()
        };
        let without = dest(&build(&plan(None), u64::MAX, &[], V1).unwrap());
        for (path, typ) in [
            ("/sys/fs/cgroup", "cgroup"),
            ("/run", "tmpfs"),
            ("/run/lock", "tmpfs"),
        ] {
            assert!(
                without.iter().any(|(p, t)| p == path && t == typ),
                "{path} {without:?}"
            );
        }
        // The cgroup mount comes after /sys, which it is mounted on.
        let at = |p: &str| without.iter().position(|(d, _)| d == p).unwrap();
        assert!(at("/sys") < at("/sys/fs/cgroup"));
        assert!(at("/run") < at("/run/lock"));
        assert!(!without.iter().any(|(_, t)| t == "bind"));

        let s = build(
            &plan(None),
            u64::MAX,
            &["proc/meminfo", "sys/devices/system/cpu/online"],
            V1,
        )
        .unwrap();
        let binds: Vec<(String, String)> = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.typ().as_deref() == Some("bind"))
            .map(|m| {
                (
                    m.source().as_ref().unwrap().display().to_string(),
                    m.destination().display().to_string(),
                )
            })
            .collect();
        assert_eq!(
            binds,
            [
                ("/var/lib/lxcfs/proc/meminfo".into(), "/proc/meminfo".into()),
                (
                    "/var/lib/lxcfs/sys/devices/system/cpu/online".into(),
                    "/sys/devices/system/cpu/online".into()
                ),
            ]
        );
        let env = s.process().as_ref().unwrap().env().as_ref().unwrap();
        assert!(env.iter().any(|e| e == "container=lxc"));
        let denied = s
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .as_ref()
            .unwrap()
            .syscalls()
            .as_ref()
            .unwrap()[0]
            .names();
        assert!(!denied.iter().any(|n| n == "name_to_handle_at"));
    }

    /// The resources part of the spec, as JSON.
    fn resources(p: &LaunchPlan, host: CgroupHost) -> Value {
        let s = build(p, u64::MAX, &[], host).unwrap();
        serde_json::to_value(s.linux().as_ref().unwrap().resources())
            .unwrap()
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "devices" && *k != "pids")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    #[test]
    fn cpu_and_memory_limits_as_lxd_sets_them() {
        let check = |change: &dyn Fn(&mut LaunchPlan), host: CgroupHost, want: Value| {
            let mut p = plan(None);
            p.memory_limit = None;
            change(&mut p);
            assert_eq!(resources(&p, host), want, "{host:?}");
        };
        let mib = 1 << 20;
        check(&|_| {}, V1, json!({}));
        check(
            &|p| p.cpus = Some("0-1".into()),
            V1,
            json!({"cpu": {"cpus": "0-1"}}),
        );
        check(
            &|p| p.cpus = Some("1".into()),
            V2,
            json!({"cpu": {"cpus": "1"}}),
        );
        check(
            &|p| p.cpu_allowance = Some(CpuAllowance::Percent(50)),
            V1,
            json!({"cpu": {"shares": 512}}),
        );
        check(
            &|p| p.cpu_allowance = Some(CpuAllowance::Percent(50)),
            V2,
            json!({"unified": {"cpu.weight": "50"}}),
        );
        let quota = CpuAllowance::Quota {
            quota_us: 25_000,
            period_us: 100_000,
        };
        for host in [V1, V2] {
            check(
                &|p| p.cpu_allowance = Some(quota),
                host,
                json!({"cpu": {"quota": 25_000, "period": 100_000}}),
            );
        }
        check(
            &|p| p.memory_limit = Some(100 * mib),
            V1,
            json!({"memory": {"limit": 100 * mib, "reservation": soft_of_hard(100 * mib), "swap": 100 * mib}}),
        );
        // A hard limit with swap allowed (the default) still bounds memory and swap together.
        check(
            &|p| p.memory_limit = Some(100 * mib),
            V2,
            json!({"memory": {"limit": 100 * mib, "reservation": soft_of_hard(100 * mib), "swap": 100 * mib}}),
        );
        check(
            &|p| {
                p.memory_limit = Some(100 * mib);
                p.no_swap = true;
            },
            V1,
            json!({"memory": {"limit": 100 * mib, "reservation": soft_of_hard(100 * mib), "swap": 100 * mib, "swappiness": 0}}),
        );
        // Without swap accounting, only swappiness.
        check(
            &|p| {
                p.memory_limit = Some(100 * mib);
                p.no_swap = true;
            },
            CgroupHost {
                v2: false,
                memsw: false,
            },
            json!({"memory": {"limit": 100 * mib, "reservation": soft_of_hard(100 * mib), "swappiness": 0}}),
        );
        check(
            &|p| {
                p.memory_limit = Some(100 * mib);
                p.no_swap = true;
            },
            V2,
            json!({"memory": {"limit": 100 * mib, "reservation": soft_of_hard(100 * mib), "swap": 100 * mib}, "unified": {"memory.swap.max": "0"}}),
        );
        check(
            &|p| {
                p.memory_limit = Some(100 * mib);
                p.memory_soft = true;
            },
            V1,
            json!({"memory": {"reservation": 100 * mib}}),
        );
        check(
            &|p| {
                p.memory_limit = Some(100 * mib);
                p.memory_soft = true;
            },
            V2,
            json!({"unified": {"memory.high": (100 * mib).to_string()}}),
        );
        check(
            &|p| p.no_swap = true,
            V1,
            json!({"memory": {"swappiness": 0}}),
        );
        check(
            &|p| p.no_swap = true,
            V2,
            json!({"unified": {"memory.swap.max": "0"}}),
        );
    }

    #[test]
    fn sysctls_and_nesting() {
        let mut p = plan(Some(IdMap {
            uid: 1 << 20,
            gid: 1 << 20,
            size: 65536,
        }));
        let s = build(&p, u64::MAX, &[], V1).unwrap();
        let linux = s.linux().as_ref().unwrap();
        assert!(linux.sysctl().is_none());
        let fresh = |s: &Spec| {
            s.mounts()
                .as_ref()
                .unwrap()
                .iter()
                .filter(|m| m.destination().starts_with("/dev/.lxc"))
                .map(|m| m.typ().clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert!(fresh(&s).is_empty());
        p.sysctl.insert("net.ipv4.ip_forward".into(), "1".into());
        p.nesting = true;
        let s = build(&p, u64::MAX, &[], V1).unwrap();
        let sysctl = s.linux().as_ref().unwrap().sysctl().clone().unwrap();
        assert_eq!(
            sysctl.get("net.ipv4.ip_forward").map(String::as_str),
            Some("1")
        );
        assert_eq!(fresh(&s), ["proc", "sysfs"]);
    }
}
