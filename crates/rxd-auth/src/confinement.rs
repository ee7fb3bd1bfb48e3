//! What an instance's final config may contain, by who asks and in which project. The daemon
//! calls [`check_instance`] with the merged config every entry path produces (create, PUT,
//! PATCH, rename, snapshot restore), so no path can skip it.
//!
//! Beyond LXD: only the server administrator may make a container that escapes confinement, in
//! any project and whatever its `restricted.*` keys say. Everyone else (project admins and
//! operators included) is held to an allow-list of keys that cannot reach the host: no
//! `security.privileged`, no choice of host id range (`security.idmap.base`), no devices. Project
//! restrictions (`restricted=true`) apply to every caller, administrators too, as in LXD.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Violation {
    #[error("Only the server administrator may create privileged containers (security.privileged=true gives the container host root)")]
    Privileged,
    #[error("Only the server administrator may set {0:?}")]
    AdminOnlyKey(String),
    #[error("Only the server administrator may add {kind} devices ({name:?}){hint}")]
    DeviceAdminOnly {
        name: String,
        kind: String,
        hint: &'static str,
    },
    #[error("Only the server administrator may set {key:?} on device {name:?}")]
    DeviceKeyAdminOnly { name: String, key: String },
    #[error("Project {project:?} forbids {what} (device {name:?}, {key})")]
    ProjectDevice {
        project: String,
        name: String,
        what: String,
        key: &'static str,
    },
    #[error("Project {project:?} forbids privileged containers (restricted.containers.privilege)")]
    ProjectPrivileged { project: String },
    #[error("Project {project:?} requires isolated id maps: set security.idmap.isolated=true (restricted.containers.privilege=isolated)")]
    ProjectNotIsolated { project: String },
    #[error("Container nesting is forbidden: project {project:?} is restricted and does not set restricted.containers.nesting=allow (security.nesting)")]
    ProjectNesting { project: String },
    #[error("Project {project:?} forbids snapshots (restricted.snapshots=block)")]
    ProjectSnapshots { project: String },
    #[error("Project {project:?} reached its limit of {limit} instances ({key})")]
    ProjectLimit {
        project: String,
        key: &'static str,
        limit: u64,
    },
}

/// Keys (or key prefixes, ending in `.`) anyone allowed to edit an instance may set.
const SAFE: &[&str] = &[
    "boot.",
    "environment.",
    "image.",
    "limits.",
    "snapshots.",
    "user.",
    // Written by the daemon; clients can only send back what they read (checked by the key
    // registry), so they are safe in a final config.
    "volatile.",
    "security.idmap.isolated",
    "security.idmap.size",
    "security.protection.delete",
    // Lets the container's root mount a fresh procfs and sysfs (rxd-shim's spec.rs), inside its
    // own user namespace; restricted projects forbid it unless they allow it (below).
    "security.nesting",
    // Only namespaced sysctls pass the key registry: the container's own network, IPC and UTS.
    "linux.sysctl.",
];

/// Keys under a safe prefix that only the server administrator may set: how long a host
/// shutdown waits for an instance decides how long the whole host takes to go down (LXD puts it
/// behind `restricted.containers.lowlevel`), and an autostart priority and delay decide when
/// every other project's instances start after a reboot (up to a day later; LXD lets anyone
/// who may edit the instance set them).
const ADMIN_ONLY: &[&str] = &[
    "boot.host_shutdown_timeout",
    "boot.autostart.delay",
    "boot.autostart.priority",
];

fn safe_key(key: &str) -> bool {
    !ADMIN_ONLY.contains(&key)
        && SAFE.iter().any(|s| {
            if s.ends_with('.') {
                key.starts_with(s)
            } else {
                key == *s
            }
        })
}

/// LXD's true spellings; anything else reads as off where being off is the privilege.
fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
}

fn on(config: &BTreeMap<String, String>, key: &str) -> bool {
    config.get(key).is_some_and(|v| v == "true")
}

/// Devices by name, each an object of strings (LXD's shape).
pub type Devices = BTreeMap<String, BTreeMap<String, String>>;

/// The first device (by name) that reaches beyond the container's own root filesystem: all but
/// the root disk (`type: disk`, `path: /`, no `source`) and `none` (which masks a profile's).
pub fn host_reaching(devices: &Devices) -> Option<&str> {
    devices
        .iter()
        .find(|(_, d)| !harmless(d))
        .map(|(n, _)| n.as_str())
}

fn harmless(d: &BTreeMap<String, String>) -> bool {
    let kind = d.get("type").map(String::as_str);
    let root = kind == Some("disk")
        && d.get("path").map(String::as_str) == Some("/")
        && !d.contains_key("source");
    root || kind == Some("none")
}

fn split_list(v: Option<&String>) -> impl Iterator<Item = &str> {
    v.map(String::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The `restricted.devices.disk.paths` prefix a host-path disk's `source` lies under, when the
/// project is restricted and allows host paths: the container helper opens the source by
/// descriptor beneath it, so neither `..` nor a symlink leads out. `None` when the project does
/// not restrict host paths (only the server administrator may then add them) or no prefix
/// matches (the check refuses the device).
pub fn disk_prefix(project: &BTreeMap<String, String>, source: &str) -> Option<PathBuf> {
    if !on(project, "restricted") {
        return None;
    }
    let source = Path::new(source);
    split_list(project.get("restricted.devices.disk.paths"))
        .map(Path::new)
        // Lexically: `source` is normal (no `.` or `..`, checked by rxd-core's device rules).
        .find(|prefix| prefix.is_absolute() && source.starts_with(prefix))
        .map(Path::to_path_buf)
}

/// Who a proxy device's forwarder runs as once its sockets exist: `security.uid`/`gid`, or,
/// when unset, root only if one of its host-side ends is a unix socket path (which the host's
/// permissions guard) and nobody (65534) otherwise.
pub fn proxy_identity(device: &BTreeMap<String, String>) -> (u32, u32) {
    let host_side = proxy_host_side(device);
    let host_unix = host_side.starts_with("unix:") && !host_side.starts_with("unix:@");
    let default = if host_unix { 0 } else { 65534 };
    let id = |key: &str| {
        device
            .get(key)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(default)
    };
    (id("security.uid"), id("security.gid"))
}

/// The address of a proxy device's end on the host: `listen` with `bind=host` (the default),
/// `connect` with `bind=instance`.
fn proxy_host_side(device: &BTreeMap<String, String>) -> &str {
    let bind_instance = device.get("bind").map(String::as_str) == Some("instance");
    device
        .get(if bind_instance { "connect" } else { "listen" })
        .map(String::as_str)
        .unwrap_or("")
}

/// How many host ports a non-administrator's proxy may listen on.
const MAX_PROXY_PORTS: usize = 64;

/// One device against who asks and the project's `restricted.devices.*` (which bind everyone).
fn check_device(
    admin: bool,
    project_name: &str,
    project: &BTreeMap<String, String>,
    name: &str,
    device: &BTreeMap<String, String>,
) -> Result<(), Violation> {
    if harmless(device) {
        return Ok(());
    }
    let restricted = on(project, "restricted");
    let kind = device.get("type").map(String::as_str).unwrap_or("");
    let restriction = |key: &'static str, default: &str| {
        project
            .get(key)
            .map(String::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let forbid = |what: String, key: &'static str| Violation::ProjectDevice {
        project: project_name.to_owned(),
        name: name.to_owned(),
        what,
        key,
    };
    let admin_only = |hint: &'static str| Violation::DeviceAdminOnly {
        name: name.to_owned(),
        kind: kind.to_owned(),
        hint,
    };
    let admin_key = |key: &str| Violation::DeviceKeyAdminOnly {
        name: name.to_owned(),
        key: key.to_owned(),
    };
    match kind {
        // A custom storage volume of the instance's project (the daemon checks it is one):
        // LXD's `managed` disk, which every restricted project allows unless `block`ed.
        "disk" if rxd_core::devices::is_volume_disk(device) => {
            let key = "restricted.devices.disk";
            if restricted && restriction(key, "managed") == "block" {
                return Err(forbid("storage volume disks".into(), key));
            }
        }
        "disk" => {
            let source = device.get("source").map(String::as_str).unwrap_or("");
            if restricted {
                let key = "restricted.devices.disk";
                if restriction(key, "managed") != "allow" {
                    return Err(forbid(format!("host path disks ({source})"), key));
                }
                let key = "restricted.devices.disk.paths";
                if split_list(project.get(key)).next().is_some() {
                    if disk_prefix(project, source).is_none() {
                        return Err(forbid(
                            format!("host paths outside its allowed prefixes ({source})"),
                            key,
                        ));
                    }
                    // LXD's rule: no shifting under restricted paths.
                    if device
                        .get("shift")
                        .is_some_and(|v| !matches!(v.as_str(), "" | "false" | "0" | "no" | "off"))
                    {
                        return Err(forbid("shift=true under restricted paths".into(), key));
                    }
                }
            }
            if !admin {
                let allowed = restricted
                    && restriction("restricted.devices.disk", "managed") == "allow"
                    && disk_prefix(project, source).is_some();
                if !allowed {
                    return Err(admin_only(" unless the project is restricted with restricted.devices.disk=allow and the source under restricted.devices.disk.paths"));
                }
                // Container root would own host files (shift), or see the host's mount events
                // (propagation), or run setuid files and open device nodes (nosuid off).
                for (key, harmless_value) in [
                    ("shift", "false"),
                    ("propagation", "private"),
                    (rxd_core::devices::DISK_NOSUID, "true"),
                ] {
                    if device
                        .get(key)
                        .is_some_and(|v| !v.is_empty() && v != harmless_value)
                    {
                        return Err(admin_key(key));
                    }
                }
            }
        }
        "unix-char" | "unix-block" | "proxy" => {
            let key = match kind {
                "unix-char" => "restricted.devices.unix-char",
                "unix-block" => "restricted.devices.unix-block",
                _ => "restricted.devices.proxy",
            };
            if restricted && restriction(key, "block") != "allow" {
                return Err(forbid(format!("{kind} devices"), key));
            }
            if !admin {
                if !restricted {
                    return Err(admin_only(match kind {
                        "proxy" => " unless the project is restricted with restricted.devices.proxy=allow",
                        "unix-char" => " unless the project is restricted with restricted.devices.unix-char=allow",
                        _ => " unless the project is restricted with restricted.devices.unix-block=allow",
                    }));
                }
                // A non-administrator's forwarder runs as nobody on the host and reaches no
                // host unix socket (whose permissions would be all that guards it: the rxd
                // socket's group, a system bus): host sides are TCP or UDP only.
                if kind == "proxy" {
                    if let Some(key) = ["security.uid", "security.gid"]
                        .into_iter()
                        .find(|k| device.get(*k).is_some_and(|v| !v.is_empty()))
                    {
                        return Err(admin_key(key));
                    }
                    if proxy_host_side(device).starts_with("unix:") {
                        return Err(admin_key("listen/connect (a unix socket on the host side)"));
                    }
                    // NAT rules act as root does in the host's firewall: they would take
                    // any port of any address, the host's own traffic to addresses it does
                    // not even have included, where a forwarder only binds as nobody.
                    if device.get("nat").is_some_and(|v| {
                        matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
                    }) {
                        return Err(admin_key("nat"));
                    }
                    // Listening on the host: unprivileged ports only, and a bounded number of
                    // them (the forwarder binds before it drops its privileges).
                    let host_listen = device.get("bind").map(String::as_str) != Some("instance");
                    if host_listen {
                        use rxd_core::proxy::{parse_address, ProxyAddress};
                        let listen = device.get("listen").map(String::as_str).unwrap_or("");
                        if let Ok(
                            ProxyAddress::Tcp { ports, .. } | ProxyAddress::Udp { ports, .. },
                        ) = parse_address(listen)
                        {
                            if ports.len() > MAX_PROXY_PORTS || ports.iter().any(|p| *p < 1024) {
                                return Err(admin_key(
                                    "listen (host ports below 1024, or more than 64 of them)",
                                ));
                            }
                        }
                    }
                }
                // A unix device's numbers are its host node's: the node the project allows,
                // not any device of the same type.
                if kind != "proxy" {
                    if let Some(key) = ["major", "minor"]
                        .into_iter()
                        .find(|k| device.get(*k).is_some_and(|v| !v.is_empty()))
                    {
                        return Err(admin_key(key));
                    }
                }
            }
        }
        "nic" => {
            let key = "restricted.devices.nic";
            let set = |k: &str| device.get(k).filter(|v| !v.is_empty());
            let network = set("network");
            let managed = network.is_some();
            if restricted {
                match restriction(key, "managed").as_str() {
                    "allow" => {}
                    "managed" if managed => {}
                    _ => return Err(forbid("this kind of NIC".into(), key)),
                }
                // The networks (managed, or host parents) the project's NICs may reach.
                let access = "restricted.networks.access";
                if project.contains_key(access) {
                    let target = network.or(set("parent")).map(String::as_str).unwrap_or("");
                    if !split_list(project.get(access)).any(|n| n == target) {
                        return Err(forbid(format!("network {target:?}"), access));
                    }
                }
            }
            if !admin {
                // A host interface as parent, or a host-side name: only where the project
                // allows any NIC.
                let any_nic = restricted && restriction(key, "managed") == "allow";
                if !managed && !any_nic {
                    return Err(admin_only(" unless it is on a managed network (network=NAME), or the project is restricted with restricted.devices.nic=allow"));
                }
                // A host-side name can pose as an interface the host's firewall trusts; the
                // MAC is the one the filters hold the NIC to.
                if set("host_name").is_some() {
                    return Err(admin_key("host_name"));
                }
                if set("hwaddr").is_some() {
                    return Err(admin_key("hwaddr"));
                }
                // p2p and routed NICs put routes (their `ipv*.routes`, a routed NIC's
                // addresses) into the host's routing table: any route at all.
                if let Some(t @ ("p2p" | "routed")) = set("nictype").map(String::as_str) {
                    return Err(admin_key(&format!("nictype={t}")));
                }
                // Filtering is on by default; turning it off lets the NIC spoof its neighbours.
                if let Some(k) = [
                    "security.mac_filtering",
                    "security.ipv4_filtering",
                    "security.ipv6_filtering",
                ]
                .into_iter()
                .find(|k| set(k).is_some_and(|v| !truthy(v)))
                {
                    return Err(admin_key(&format!("{k}=false")));
                }
            }
        }
        _ => {
            if !admin {
                return Err(admin_only(""));
            }
        }
    }
    Ok(())
}

/// May an instance with `config` and `devices` (its expanded ones) exist in `project` (named
/// `project_name`, with config `project`), when asked for by an administrator (`admin`) or not?
pub fn check_instance(
    admin: bool,
    project_name: &str,
    project: &BTreeMap<String, String>,
    config: &BTreeMap<String, String>,
    devices: &Devices,
) -> Result<(), Violation> {
    let privileged = on(config, "security.privileged");
    if !admin {
        if privileged {
            return Err(Violation::Privileged);
        }
        if let Some(k) = config
            .keys()
            .find(|k| !safe_key(k) && k.as_str() != "security.privileged")
        {
            return Err(Violation::AdminOnlyKey(k.clone()));
        }
    }
    for (name, device) in devices {
        check_device(admin, project_name, project, name, device)?;
    }
    if on(project, "restricted") {
        let name = || project_name.to_owned();
        match project
            .get("restricted.containers.privilege")
            .map(String::as_str)
            .unwrap_or("unprivileged")
        {
            "allow" => {}
            "isolated" if privileged => {
                return Err(Violation::ProjectPrivileged { project: name() })
            }
            "isolated" if !on(config, "security.idmap.isolated") => {
                return Err(Violation::ProjectNotIsolated { project: name() })
            }
            "isolated" => {}
            // `unprivileged`, and anything unexpected, fail closed.
            _ if privileged => return Err(Violation::ProjectPrivileged { project: name() }),
            _ => {}
        }
        // LXD's rule: a restricted project blocks nesting unless it says `allow`.
        let nesting_allowed = project
            .get("restricted.containers.nesting")
            .map(String::as_str)
            == Some("allow");
        if on(config, "security.nesting") && !nesting_allowed {
            return Err(Violation::ProjectNesting { project: name() });
        }
    }
    Ok(())
}

/// May a snapshot be taken in this project?
pub fn check_snapshot(
    project_name: &str,
    project: &BTreeMap<String, String>,
) -> Result<(), Violation> {
    let blocked = on(project, "restricted")
        && project.get("restricted.snapshots").map(String::as_str) == Some("block");
    if blocked {
        Err(Violation::ProjectSnapshots {
            project: project_name.into(),
        })
    } else {
        Ok(())
    }
}

/// The most instances a project's config allows (`limits.instances`, `limits.containers`: the
/// smaller), if any: what the store holds a new row to, so that creates racing each other
/// cannot together pass the limit [`check_count`] checks early.
pub fn instance_limit(project: &BTreeMap<String, String>) -> Option<u64> {
    ["limits.instances", "limits.containers"]
        .iter()
        .filter_map(|key| project.get(*key).and_then(|v| v.parse::<u64>().ok()))
        .min()
}

/// May one more instance be created in a project that has `existing` instances? (`limits.*`
/// apply whether or not the project is restricted, as in LXD.)
pub fn check_count(
    project_name: &str,
    project: &BTreeMap<String, String>,
    existing: u64,
) -> Result<(), Violation> {
    for key in ["limits.instances", "limits.containers"] {
        if let Some(limit) = project.get(key).and_then(|v| v.parse::<u64>().ok()) {
            if existing >= limit {
                return Err(Violation::ProjectLimit {
                    project: project_name.into(),
                    key,
                    limit,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Config = BTreeMap<String, String>;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// (admin, project config, instance config, devices) -> allowed?
    #[test]
    fn instance_table() {
        let open = map(&[]);
        let restricted = map(&[("restricted", "true")]);
        let isolated = map(&[
            ("restricted", "true"),
            ("restricted.containers.privilege", "isolated"),
        ]);
        let allow = map(&[
            ("restricted", "true"),
            ("restricted.containers.privilege", "allow"),
        ]);
        // A misspelt `restricted` flag does not switch the admin-only ceiling off.
        let misspelt = map(&[
            ("restrict", "true"),
            ("restricted.containers.privilege", "allow"),
        ]);
        let privileged = map(&[("security.privileged", "true")]);
        let plain = map(&[
            ("limits.memory", "1GiB"),
            ("user.x", "y"),
            ("boot.autostart", "true"),
        ]);
        let iso = map(&[
            ("security.idmap.isolated", "true"),
            ("security.idmap.size", "65536"),
        ]);
        let base = map(&[("security.idmap.base", "1065536")]);
        let unpriv = map(&[("security.privileged", "false")]);
        let volatile = map(&[("volatile.idmap.next", "[]"), ("volatile.base_image", "ab")]);
        let raw = map(&[("raw.lxc", "x")]);
        let shutdown = map(&[("boot.host_shutdown_timeout", "600")]);
        let autostart_delay = map(&[("boot.autostart.delay", "86400")]);
        let autostart_priority = map(&[("boot.autostart.priority", "1048576")]);
        let autostart = map(&[("boot.autostart", "true")]);
        let nesting = map(&[("security.nesting", "true")]);
        let no_nesting = map(&[("security.nesting", "false")]);
        let nesting_allowed = map(&[
            ("restricted", "true"),
            ("restricted.containers.nesting", "allow"),
        ]);
        let nesting_blocked = map(&[
            ("restricted", "true"),
            ("restricted.containers.nesting", "block"),
        ]);
        let sysctl = map(&[("linux.sysctl.net.ipv4.ip_forward", "1")]);
        let unknown = map(&[("security.syscalls.intercept.mount", "true")]);
        type Case<'a> = (&'a str, bool, &'a Config, &'a Config, usize, bool);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (
                "admin, privileged, open project",
                true,
                &open,
                &privileged,
                0,
                true,
            ),
            (
                "admin, privileged, restricted project",
                true,
                &restricted,
                &privileged,
                0,
                false,
            ),
            (
                "admin, privileged, privilege=allow",
                true,
                &allow,
                &privileged,
                0,
                true,
            ),
            ("admin, base, open", true, &open, &base, 0, true),
            (
                "admin, host shutdown timeout",
                true,
                &open,
                &shutdown,
                0,
                true,
            ),
            (
                "operator, host shutdown timeout",
                false,
                &open,
                &shutdown,
                0,
                false,
            ),
            (
                "operator, autostart delay",
                false,
                &open,
                &autostart_delay,
                0,
                false,
            ),
            (
                "operator, autostart priority",
                false,
                &open,
                &autostart_priority,
                0,
                false,
            ),
            (
                "admin, autostart delay",
                true,
                &open,
                &autostart_delay,
                0,
                true,
            ),
            ("operator, autostart", false, &open, &autostart, 0, true),
            ("admin, devices", true, &open, &plain, 1, true),
            (
                "operator, privileged, open",
                false,
                &open,
                &privileged,
                0,
                false,
            ),
            (
                "operator, privileged, privilege=allow",
                false,
                &allow,
                &privileged,
                0,
                false,
            ),
            (
                "operator, privileged, misspelt flag",
                false,
                &misspelt,
                &privileged,
                0,
                false,
            ),
            ("operator, privileged=false", false, &open, &unpriv, 0, true),
            ("operator, plain keys", false, &restricted, &plain, 0, true),
            ("operator, isolated keys", false, &open, &iso, 0, true),
            ("operator, idmap base", false, &open, &base, 0, false),
            ("operator, raw", false, &open, &raw, 0, false),
            (
                "operator, unknown security key",
                false,
                &open,
                &unknown,
                0,
                false,
            ),
            (
                "operator, nesting, open project",
                false,
                &open,
                &nesting,
                0,
                true,
            ),
            (
                "operator, nesting, restricted project",
                false,
                &restricted,
                &nesting,
                0,
                false,
            ),
            (
                "operator, nesting, nesting=block",
                false,
                &nesting_blocked,
                &nesting,
                0,
                false,
            ),
            (
                "operator, nesting, nesting=allow",
                false,
                &nesting_allowed,
                &nesting,
                0,
                true,
            ),
            (
                "admin, nesting, restricted project",
                true,
                &restricted,
                &nesting,
                0,
                false,
            ),
            (
                "operator, nesting=false, restricted project",
                false,
                &restricted,
                &no_nesting,
                0,
                true,
            ),
            (
                "operator, namespaced sysctl",
                false,
                &restricted,
                &sysctl,
                0,
                true,
            ),
            (
                "operator, daemon volatile keys",
                false,
                &open,
                &volatile,
                0,
                true,
            ),
            ("operator, devices", false, &open, &plain, 1, false),
            (
                "operator, root disk and none",
                false,
                &open,
                &plain,
                2,
                true,
            ),
            (
                "operator, root disk, restricted",
                false,
                &restricted,
                &plain,
                2,
                true,
            ),
            (
                "isolated project, not isolated",
                false,
                &isolated,
                &plain,
                0,
                false,
            ),
            (
                "isolated project, isolated",
                false,
                &isolated,
                &iso,
                0,
                true,
            ),
            (
                "isolated project, admin, not isolated",
                true,
                &isolated,
                &plain,
                0,
                false,
            ),
            (
                "isolated project, admin, privileged",
                true,
                &isolated,
                &privileged,
                0,
                false,
            ),
        ];
        let device = |pairs: &[(&str, &str)]| map(pairs);
        // 0: none; 1: a host path; 2: the root disk and a mask, which reach nothing.
        let host_disk: Devices = [(
            "etc".to_owned(),
            device(&[("type", "disk"), ("source", "/etc"), ("path", "/mnt")]),
        )]
        .into();
        let harmless: Devices = [
            (
                "root".to_owned(),
                device(&[("type", "disk"), ("path", "/"), ("pool", "default")]),
            ),
            ("eth0".to_owned(), device(&[("type", "none")])),
        ]
        .into();
        for (what, admin, project, config, devices, ok) in cases {
            let devices = match devices {
                0 => Devices::new(),
                1 => host_disk.clone(),
                _ => harmless.clone(),
            };
            let got = check_instance(*admin, "p", project, config, &devices);
            assert_eq!(got.is_ok(), *ok, "{what}: {got:?}");
        }
    }

    /// (who, project, device) -> allowed?
    #[test]
    fn device_table() {
        let open = map(&[]);
        let restricted = map(&[("restricted", "true")]);
        let disk_allow = map(&[("restricted", "true"), ("restricted.devices.disk", "allow")]);
        let paths = map(&[
            ("restricted", "true"),
            ("restricted.devices.disk", "allow"),
            ("restricted.devices.disk.paths", "/srv/shared, /data/a"),
        ]);
        let unix_proxy = map(&[
            ("restricted", "true"),
            ("restricted.devices.unix-char", "allow"),
            ("restricted.devices.proxy", "allow"),
        ]);
        let nic_allow = map(&[("restricted", "true"), ("restricted.devices.nic", "allow")]);
        let net_access = map(&[
            ("restricted", "true"),
            ("restricted.networks.access", "br1,up0"),
        ]);
        fn disk(src: &'static str) -> Vec<(&'static str, &'static str)> {
            vec![("type", "disk"), ("source", src), ("path", "/mnt")]
        }
        fn with(
            mut d: Vec<(&'static str, &'static str)>,
            k: &'static str,
            v: &'static str,
        ) -> Vec<(&'static str, &'static str)> {
            d.push((k, v));
            d
        }
        let fuse = vec![("type", "unix-char"), ("source", "/dev/fuse")];
        let sda = vec![("type", "unix-block"), ("source", "/dev/sda")];
        let tcp = vec![
            ("type", "proxy"),
            ("listen", "tcp:127.0.0.1:8080"),
            ("connect", "tcp:127.0.0.1:80"),
        ];
        let host_unix = vec![
            ("type", "proxy"),
            ("listen", "tcp:127.0.0.1:80"),
            ("connect", "unix:/run/x.sock"),
            ("bind", "instance"),
        ];
        let nic_net = vec![("type", "nic"), ("network", "rxdbr0")];
        let nic_parent = vec![("type", "nic"), ("nictype", "bridged"), ("parent", "br0")];
        let none = vec![("type", "none")];
        let root = vec![("type", "disk"), ("path", "/"), ("pool", "default")];
        let volume = vec![
            ("type", "disk"),
            ("pool", "p"),
            ("source", "v"),
            ("path", "/mnt"),
        ];
        let disk_block = map(&[("restricted", "true"), ("restricted.devices.disk", "block")]);
        type Case<'a> = (
            &'a str,
            bool,
            &'a BTreeMap<String, String>,
            Vec<(&'a str, &'a str)>,
            bool,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("anyone: root disk", false, &open, root.clone(), true),
            ("anyone: none", false, &restricted, none.clone(), true),
            ("operator: custom volume, open project", false, &open, volume.clone(), true),
            ("operator: custom volume, restricted", false, &restricted, volume.clone(), true),
            ("anyone: custom volume, disks blocked", true, &disk_block, volume.clone(), false),
            ("admin: any host path", true, &open, disk("/etc"), true),
            (
                "admin: shift",
                true,
                &open,
                with(disk("/srv"), "shift", "true"),
                true,
            ),
            (
                "operator: host path, open project",
                false,
                &open,
                disk("/srv/shared"),
                false,
            ),
            (
                "operator: host path, restricted without allow",
                false,
                &restricted,
                disk("/srv/shared"),
                false,
            ),
            (
                "admin: host path, restricted binds admins too",
                true,
                &restricted,
                disk("/srv/shared"),
                false,
            ),
            (
                "operator: allow without paths",
                false,
                &disk_allow,
                disk("/srv/shared"),
                false,
            ),
            (
                "admin: allow without paths",
                true,
                &disk_allow,
                disk("/etc"),
                true,
            ),
            (
                "operator: under a prefix",
                false,
                &paths,
                disk("/srv/shared/x"),
                true,
            ),
            (
                "operator: the prefix itself",
                false,
                &paths,
                disk("/srv/shared"),
                true,
            ),
            (
                "operator: second prefix",
                false,
                &paths,
                disk("/data/a/b"),
                true,
            ),
            (
                "operator: prefix of a name is not a prefix",
                false,
                &paths,
                disk("/srv/sharedx"),
                false,
            ),
            ("operator: outside", false, &paths, disk("/etc"), false),
            (
                "admin: outside the prefixes binds admins",
                true,
                &paths,
                disk("/etc"),
                false,
            ),
            (
                "operator: shift under prefix",
                false,
                &paths,
                with(disk("/srv/shared"), "shift", "true"),
                false,
            ),
            (
                "admin: shift under prefix (LXD refuses)",
                true,
                &paths,
                with(disk("/srv/shared"), "shift", "true"),
                false,
            ),
            (
                "admin: shift=1 under prefix",
                true,
                &paths,
                with(disk("/srv/shared"), "shift", "1"),
                false,
            ),
            (
                "operator: propagation",
                false,
                &paths,
                with(disk("/srv/shared"), "propagation", "shared"),
                false,
            ),
            (
                "operator: nosuid off",
                false,
                &paths,
                with(disk("/srv/shared"), "rxd.nosuid", "false"),
                false,
            ),
            (
                "operator: readonly",
                false,
                &paths,
                with(disk("/srv/shared"), "readonly", "true"),
                true,
            ),
            (
                "operator: unix-char open",
                false,
                &open,
                fuse.clone(),
                false,
            ),
            ("admin: unix-char open", true, &open, fuse.clone(), true),
            (
                "operator: unix-char allowed",
                false,
                &unix_proxy,
                fuse.clone(),
                true,
            ),
            (
                "admin: unix-char restricted default block",
                true,
                &restricted,
                fuse.clone(),
                false,
            ),
            (
                "operator: unix-block not allowed",
                false,
                &unix_proxy,
                sda.clone(),
                false,
            ),
            ("operator: proxy open", false, &open, tcp.clone(), false),
            (
                "operator: proxy allowed",
                false,
                &unix_proxy,
                tcp.clone(),
                true,
            ),
            (
                "operator: proxy as root",
                false,
                &unix_proxy,
                with(tcp.clone(), "security.uid", "0"),
                false,
            ),
            (
                "operator: proxy as a host user",
                false,
                &unix_proxy,
                with(tcp.clone(), "security.uid", "1000"),
                false,
            ),
            (
                "operator: proxy to a host socket",
                false,
                &unix_proxy,
                host_unix.clone(),
                false,
            ),
            (
                "operator: proxy to a host socket as a user",
                false,
                &unix_proxy,
                with(
                    with(host_unix.clone(), "security.uid", "1000"),
                    "security.gid",
                    "1000",
                ),
                false,
            ),
            (
                "operator: proxy from a host abstract socket",
                false,
                &unix_proxy,
                vec![
                    ("type", "proxy"),
                    ("listen", "unix:@x"),
                    ("connect", "tcp:127.0.0.1:1"),
                ],
                false,
            ),
            (
                "operator: proxy to a socket inside",
                false,
                &unix_proxy,
                vec![
                    ("type", "proxy"),
                    ("listen", "tcp:127.0.0.1:8080"),
                    ("connect", "unix:/run/x.sock"),
                ],
                true,
            ),
            ("operator: proxy on a privileged host port", false, &unix_proxy, vec![("type", "proxy"), ("listen", "tcp:0.0.0.0:443"), ("connect", "tcp:127.0.0.1:443")], false),
            ("operator: proxy on every host port", false, &unix_proxy, vec![("type", "proxy"), ("listen", "udp:0.0.0.0:1024-65535"), ("connect", "udp:127.0.0.1:53")], false),
            ("operator: proxy on 64 host ports", false, &unix_proxy, vec![("type", "proxy"), ("listen", "tcp:0.0.0.0:2000-2063"), ("connect", "tcp:127.0.0.1:80")], true),
            ("operator: privileged port inside", false, &unix_proxy, vec![("type", "proxy"), ("listen", "tcp:127.0.0.1:80"), ("connect", "tcp:127.0.0.1:8080"), ("bind", "instance")], true),
            ("admin: proxy on a privileged host port", true, &open, vec![("type", "proxy"), ("listen", "tcp:0.0.0.0:443"), ("connect", "tcp:127.0.0.1:443")], true),
            ("operator: nat proxy", false, &unix_proxy, vec![("type", "proxy"), ("listen", "tcp:198.51.100.2:8080"), ("connect", "tcp:10.0.0.5:80"), ("nat", "true")], false),
            ("operator: nat proxy, any spelling", false, &unix_proxy, vec![("type", "proxy"), ("listen", "tcp:198.51.100.2:8080"), ("connect", "tcp:10.0.0.5:80"), ("nat", "On")], false),
            ("operator: nat=false proxy", false, &unix_proxy, vec![("type", "proxy"), ("listen", "tcp:198.51.100.2:8080"), ("connect", "tcp:10.0.0.5:80"), ("nat", "false")], true),
            ("admin: nat proxy", true, &open, vec![("type", "proxy"), ("listen", "tcp:198.51.100.2:80"), ("connect", "tcp:10.0.0.5:80"), ("nat", "true")], true),
            ("operator: unix-char by numbers", false, &unix_proxy, vec![("type", "unix-char"), ("source", "/dev/fuse"), ("major", "21"), ("minor", "0")], false),
            ("admin: unix-char by numbers", true, &open, vec![("type", "unix-char"), ("path", "/dev/sg0"), ("major", "21"), ("minor", "0")], true),
            (
                "admin: proxy restricted default block",
                true,
                &restricted,
                tcp.clone(),
                false,
            ),
            ("admin: proxy open", true, &open, host_unix.clone(), true),
            ("operator: nic on a managed network", false, &nic_allow, nic_net.clone(), true),
            ("operator: nic on a managed network, open project", false, &open, nic_net.clone(), true),
            ("operator: nic with parent, open project", false, &open, nic_parent.clone(), false),
            ("operator: nic with parent, nic=allow", false, &nic_allow, nic_parent.clone(), true),
            ("operator: filtering off", false, &nic_allow, vec![("type", "nic"), ("network", "rxdbr0"), ("security.ipv4_filtering", "false")], false),
            ("admin: filtering off", true, &open, vec![("type", "nic"), ("network", "rxdbr0"), ("security.ipv4_filtering", "false")], true),
            ("operator: filtering explicitly on", false, &open, vec![("type", "nic"), ("network", "rxdbr0"), ("security.mac_filtering", "true")], true),
            ("operator: hwaddr", false, &open, vec![("type", "nic"), ("network", "rxdbr0"), ("hwaddr", "00:16:3e:00:00:01")], false),
            ("operator: host_name", false, &open, vec![("type", "nic"), ("network", "rxdbr0"), ("host_name", "vethx")], false),
            ("operator: host_name, nic=allow", false, &nic_allow, vec![("type", "nic"), ("nictype", "bridged"), ("parent", "br0"), ("host_name", "wg0")], false),
            ("operator: p2p, nic=allow", false, &nic_allow, vec![("type", "nic"), ("nictype", "p2p"), ("ipv4.routes", "0.0.0.0/1")], false),
            ("operator: routed, nic=allow", false, &nic_allow, vec![("type", "nic"), ("nictype", "routed"), ("ipv4.address", "192.0.2.1")], false),
            ("admin: p2p", true, &open, vec![("type", "nic"), ("nictype", "p2p"), ("ipv4.routes", "192.0.2.0/30")], true),
            ("operator: network outside networks.access", false, &net_access, nic_net.clone(), false),
            ("admin: network outside networks.access", true, &net_access, nic_net.clone(), false),
            ("operator: network inside networks.access", false, &net_access, vec![("type", "nic"), ("network", "br1")], true),
            (
                "admin: nic with network",
                true,
                &restricted,
                nic_net.clone(),
                true,
            ),
            (
                "admin: nic with parent in restricted",
                true,
                &restricted,
                nic_parent.clone(),
                false,
            ),
            (
                "admin: nic with parent allowed",
                true,
                &nic_allow,
                nic_parent.clone(),
                true,
            ),
        ];
        for (what, admin, project, device, ok) in cases {
            let devices: Devices = [("d".to_owned(), map(device))].into();
            let got = check_instance(*admin, "p", project, &map(&[]), &devices);
            assert_eq!(got.is_ok(), *ok, "{what}: {got:?}");
        }
        assert_eq!(
            disk_prefix(&paths, "/srv/shared/x/y"),
            Some(PathBuf::from("/srv/shared"))
        );
        assert_eq!(disk_prefix(&open, "/srv/shared"), None);
        assert_eq!(proxy_identity(&map(&tcp)), (65534, 65534));
        assert_eq!(proxy_identity(&map(&host_unix)), (0, 0));
        assert_eq!(
            proxy_identity(&map(&with(tcp.clone(), "security.gid", "5"))),
            (65534, 5)
        );
    }

    #[test]
    fn what_reaches_the_host() {
        let one = |pairs: &[(&str, &str)]| -> Devices { [("d".to_owned(), map(pairs))].into() };
        assert_eq!(host_reaching(&one(&[("type", "none")])), None);
        assert_eq!(
            host_reaching(&one(&[("type", "disk"), ("path", "/")])),
            None
        );
        // A root path with a host source is a host path.
        assert_eq!(
            host_reaching(&one(&[("type", "disk"), ("path", "/"), ("source", "/")])),
            Some("d")
        );
        assert_eq!(host_reaching(&one(&[("type", "nic")])), Some("d"));
        assert_eq!(host_reaching(&one(&[])), Some("d"));
    }

    #[test]
    fn snapshots_and_counts() {
        assert!(check_snapshot("p", &map(&[("restricted.snapshots", "block")])).is_ok());
        assert!(check_snapshot(
            "p",
            &map(&[("restricted", "true"), ("restricted.snapshots", "block")])
        )
        .is_err());
        let limited = map(&[("limits.containers", "2")]);
        assert!(check_count("p", &limited, 1).is_ok());
        assert!(check_count("p", &limited, 2).is_err());
        assert!(check_count("p", &map(&[("limits.instances", "0")]), 0).is_err());
        assert!(check_count("p", &map(&[]), 1000).is_ok());
        assert_eq!(instance_limit(&limited), Some(2));
        assert_eq!(
            instance_limit(&map(&[
                ("limits.instances", "5"),
                ("limits.containers", "3")
            ])),
            Some(3)
        );
        assert_eq!(instance_limit(&map(&[])), None);
    }
}
