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
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Violation {
    #[error("Only the server administrator may create privileged containers (security.privileged=true gives the container host root)")]
    Privileged,
    #[error("Only the server administrator may set {0:?}")]
    AdminOnlyKey(String),
    #[error("Only the server administrator may add devices")]
    Devices,
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
        .find(|(_, d)| {
            let kind = d.get("type").map(String::as_str);
            let root = kind == Some("disk")
                && d.get("path").map(String::as_str) == Some("/")
                && !d.contains_key("source");
            !(root || kind == Some("none"))
        })
        .map(|(n, _)| n.as_str())
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
        if host_reaching(devices).is_some() {
            return Err(Violation::Devices);
        }
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
    }
}
