//! The project config key registry. rxd keeps images and instances per project whatever
//! `features.*` says (only `features.images=true` is accepted); `restricted.*` keys that name
//! features rxd does not have (devices, nesting, low-level keys, backups) are accepted because
//! rxd refuses those features to every non-administrator already.

use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProjectConfigError {
    #[error("unknown project configuration key: {0:?}")]
    UnknownKey(String),
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// LXD's aggregate disk budget of a project. rxd counts what it stores per project: each
/// image's unpacked tree and each instance's root filesystem as unpacked at creation.
pub const LIMITS_DISK: &str = "limits.disk";

/// A project's `limits.disk` in bytes, if set (values were validated when stored).
pub fn disk_limit(config: &BTreeMap<String, String>) -> Option<u64> {
    config
        .get(LIMITS_DISK)
        .and_then(|v| crate::instance_config::parse_bytes(v))
}

/// The config a new project starts with (LXD's defaults for a project created over the API).
pub fn defaults() -> BTreeMap<String, String> {
    [
        "features.images",
        "features.profiles",
        "features.storage.volumes",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), "true".to_owned()))
    .collect()
}

/// The `features.*` keys: they decide where a project's things live, so they change only
/// while the project is empty, and never on `default`.
pub const FEATURES: &[&str] = &[
    "features.images",
    "features.profiles",
    "features.storage.volumes",
    "features.networks",
];

/// Whether `features.*` differ between two configs.
pub fn features_changed(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> bool {
    FEATURES.iter().any(|k| old.get(*k) != new.get(*k))
}

/// Whether a project has profiles of its own (`features.profiles=true`).
pub fn has_profiles(config: &BTreeMap<String, String>) -> bool {
    config.get("features.profiles").map(String::as_str) == Some("true")
}

/// Where a project's profiles live: itself, or `default` (LXD's `ProfileProject`).
pub fn profiles_project<'a>(project: &'a str, config: &BTreeMap<String, String>) -> &'a str {
    if has_profiles(config) {
        project
    } else {
        "default"
    }
}

fn one_of(v: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!("expected one of {}, not {v:?}", allowed.join(", ")))
    }
}

pub fn validate_key(key: &str, value: &str) -> Result<(), ProjectConfigError> {
    let result = match key {
        "features.images" => one_of(value, &["true"])
            .map_err(|_| "rxd always keeps images per project; only true is accepted".to_owned()),
        "features.profiles" | "features.storage.volumes" | "features.networks" | "restricted" => {
            one_of(value, &["true", "false"])
        }
        "restricted.containers.privilege" => one_of(value, &["unprivileged", "isolated", "allow"]),
        "restricted.snapshots"
        | "restricted.backups"
        | "restricted.containers.lowlevel"
        | "restricted.containers.nesting" => one_of(value, &["block", "allow"]),
        crate::config::IMAGES_COMPRESSION => one_of(value, crate::config::COMPRESSIONS),
        "limits.instances" | "limits.containers" => match value.parse::<u32>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("expected a whole number, not {value:?}")),
        },
        // The host ids the project's isolated id maps may hold together.
        "limits.idmap.size" => match value.parse::<u64>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("expected a whole number of ids, not {value:?}")),
        },
        LIMITS_DISK => match crate::instance_config::parse_bytes(value) {
            Some(_) => Ok(()),
            None => Err(format!(
                "expected a size like 50GiB or 500MB, not {value:?}"
            )),
        },
        // Host prefixes for host-path disks (`restricted.devices.disk=allow`): absolute and
        // normal, so a prefix check on a normal source means what it says.
        "restricted.devices.disk.paths" => match value
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .find(|p| crate::devices::normal_absolute(p).is_none())
        {
            Some(bad) => Err(format!(
                "{bad:?} is not an absolute path without \".\", \"..\" or \"//\""
            )),
            None => Ok(()),
        },
        // The networks (managed, or host interfaces as NIC parents) the project's NICs may use.
        "restricted.networks.access" => match value
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .find(|n| crate::network::config::IfName::parse(n).is_err())
        {
            Some(bad) => Err(format!("{bad:?} is not a network or interface name")),
            None => Ok(()),
        },
        _ if key.starts_with("restricted.devices.") && key.len() > "restricted.devices.".len() => {
            one_of(value, &["block", "allow", "managed"])
        }
        _ if key.starts_with("user.") => {
            if value.contains('\0') {
                Err("NUL in value".into())
            } else {
                Ok(())
            }
        }
        _ => return Err(ProjectConfigError::UnknownKey(key.into())),
    };
    result.map_err(|reason| ProjectConfigError::Invalid {
        key: key.into(),
        reason,
    })
}

/// Project keys that bound what the project may take from the host: only a server
/// administrator may change them (a project's own administrator could otherwise lift them).
pub const HOST_LIMITS: &[&str] = &["limits.idmap.size", LIMITS_DISK];

/// How permissive a value of a `restricted.*` key is (higher gives more), by LXD's defaults.
fn permissiveness(key: &str, value: Option<&str>) -> u8 {
    match key {
        "restricted" => u8::from(value != Some("true")) * 2,
        "restricted.containers.privilege" => match value.unwrap_or("unprivileged") {
            "isolated" => 0,
            "unprivileged" => 1,
            _ => 2,
        },
        // rxd blocks snapshots only when told to.
        "restricted.snapshots" => u8::from(value != Some("block")) * 2,
        // Any other value fails closed where it is read.
        _ => u8::from(value == Some("allow")) * 2,
    }
}

/// The first key of `new` that only the server administrator may set as it is: a host limit
/// ([`HOST_LIMITS`]) that changed, any `restricted.devices.*` or `restricted.networks.*` key that
/// changed (they give the project's operators host paths, devices and proxies), or another
/// `restricted*` key changed to something more permissive (turning `restricted` off, allowing
/// what was blocked). A project administrator may still tighten its project.
pub fn changed_host_limit(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Option<String> {
    let changed = |k: &String| old.get(k) != new.get(k);
    if let Some(k) = HOST_LIMITS
        .iter()
        .map(|k| (*k).to_owned())
        .find(|k| changed(k))
    {
        return Some(k);
    }
    // Turning `restricted` on wakes the `restricted.devices.*` and `restricted.networks.*`
    // keys that give (operators get host devices only in a restricted project that allows
    // them), whoever set them while they did nothing.
    let gives = |k: &String, v: &String| {
        (k.starts_with("restricted.devices.") || k.starts_with("restricted.networks."))
            && (v == "allow" || k.ends_with(".paths") || k.ends_with(".access"))
    };
    let switched_on = new.get("restricted").map(String::as_str) == Some("true")
        && old.get("restricted").map(String::as_str) != Some("true");
    if switched_on && new.iter().any(|(k, v)| gives(k, v)) {
        return Some("restricted".to_owned());
    }
    old.keys()
        .chain(new.keys())
        .filter(|k| k.starts_with("restricted") && changed(k))
        .find(|k| {
            k.starts_with("restricted.devices.")
                || k.starts_with("restricted.networks.")
                || permissiveness(k, new.get(*k).map(String::as_str))
                    > permissiveness(k, old.get(*k).map(String::as_str))
        })
        .cloned()
}

pub fn validate(config: &BTreeMap<String, String>) -> Result<(), ProjectConfigError> {
    config.iter().try_for_each(|(k, v)| validate_key(k, v))?;
    // LXD: the default project's profiles are not checked against this project's restrictions.
    // (LXD refuses only an explicit `false`; an absent key means no profiles of its own too.)
    if config.get("restricted").map(String::as_str) == Some("true") && !has_profiles(config) {
        return Err(ProjectConfigError::Invalid {
            key: "restricted".into(),
            reason: "Projects without their own profiles cannot be restricted".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_projects_have_their_own_profiles() {
        let c = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(validate(&c(&[
            ("restricted", "true"),
            ("features.profiles", "false")
        ]))
        .is_err());
        assert!(validate(&c(&[("restricted", "true"), ("features.profiles", "true")])).is_ok());
        assert!(
            validate(&c(&[("restricted", "true")])).is_err(),
            "absent is none"
        );
        assert!(validate(&c(&[
            ("restricted", "false"),
            ("features.profiles", "false")
        ]))
        .is_ok());
        let own = c(&[("features.profiles", "true")]);
        assert_eq!(profiles_project("p1", &own), "p1");
        assert_eq!(profiles_project("p1", &BTreeMap::new()), "default");
        assert!(features_changed(&own, &BTreeMap::new()));
        assert!(!features_changed(
            &own,
            &c(&[("features.profiles", "true"), ("user.x", "1")])
        ));
    }

    #[test]
    fn key_table() {
        for (k, v, ok) in [
            ("features.images", "true", true),
            ("features.images", "false", false),
            ("features.profiles", "false", true),
            ("restricted", "true", true),
            ("restricted", "yes", false),
            ("restricted.containers.privilege", "isolated", true),
            ("restricted.containers.privilege", "privileged", false),
            ("restricted.snapshots", "block", true),
            ("restricted.devices.disk", "managed", true),
            ("restricted.devices.", "block", false),
            ("restricted.devices.disk.paths", "/srv/a, /data", true),
            ("restricted.devices.disk.paths", "", true),
            ("restricted.devices.disk.paths", "srv", false),
            ("restricted.devices.disk.paths", "/srv/../etc", false),
            ("restricted.networks.access", "rxdbr0, up0", true),
            ("restricted.networks.access", "", true),
            ("restricted.networks.access", "a/b", false),
            ("restricted.networks.uplinks", "up0", false),
            ("limits.containers", "10", true),
            ("limits.containers", "-1", false),
            ("limits.disk", "10GiB", true),
            ("limits.disk", "0", true),
            ("limits.disk", "lots", false),
            ("user.note", "anything", true),
            ("restrict", "true", false),
            ("core.https_address", ":8443", false),
        ] {
            assert_eq!(validate_key(k, v).is_ok(), ok, "{k}={v}");
        }
        assert!(validate(&defaults()).is_ok());
    }

    #[test]
    fn host_limits_changes_are_found() {
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Pairs, Pairs, Option<&str>)] = &[
            (&[], &[], None),
            (&[], &[("user.x", "1")], None),
            (
                &[],
                &[("limits.idmap.size", "1")],
                Some("limits.idmap.size"),
            ),
            (
                &[("limits.idmap.size", "1")],
                &[],
                Some("limits.idmap.size"),
            ),
            (&[("limits.disk", "1GiB")], &[("limits.disk", "1GiB")], None),
            (
                &[("limits.disk", "1GiB")],
                &[("limits.disk", "2GiB")],
                Some("limits.disk"),
            ),
            (
                &[("restricted", "true")],
                &[("restricted", "true"), ("restricted.devices.disk", "allow")],
                Some("restricted.devices.disk"),
            ),
            (
                &[
                    ("restricted", "true"),
                    ("restricted.devices.disk.paths", "/srv"),
                ],
                &[
                    ("restricted", "true"),
                    ("restricted.devices.disk.paths", "/"),
                ],
                Some("restricted.devices.disk.paths"),
            ),
            (&[("restricted", "true")], &[], Some("restricted")),
            (
                &[("restricted", "true")],
                &[("restricted", "true"), ("user.x", "y")],
                None,
            ),
        ];
        for (old, new, want) in cases {
            assert_eq!(
                changed_host_limit(&m(old), &m(new)).as_deref(),
                *want,
                "{old:?} -> {new:?}"
            );
        }
    }
}
