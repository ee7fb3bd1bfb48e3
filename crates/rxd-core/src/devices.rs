//! Devices as instances and profiles carry them: the name rule, what rxd accepts today, and
//! which devices reach the host (for confinement). rxd has one root filesystem per instance and
//! no device drivers yet: a profile or instance may hold the root disk
//! (`{type: disk, path: /, pool: default}`, which describes what every instance already has)
//! and `none` (which masks a profile's device of that name); every other type is refused.

use std::collections::BTreeMap;
use thiserror::Error;

pub type Device = BTreeMap<String, String>;
pub type Devices = BTreeMap<String, Device>;

/// The only storage pool rxd has (the state dir's `containers/`).
pub const DEFAULT_POOL: &str = "default";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("Invalid device name {0:?}: 1 to 63 of A-Z a-z 0-9 / . _ : -, not starting with '.'")]
    Name(String),
    #[error("Device validation failed for {0:?}: Missing device type")]
    NoType(String),
    #[error("Device validation failed for {name:?}: Unsupported device type {kind:?} (rxd has no device drivers yet: only the root disk and none)")]
    Unsupported { name: String, kind: String },
    #[error("Device validation failed for {name:?}: Invalid device option {key:?}")]
    UnknownKey { name: String, key: String },
    #[error("Device validation failed for {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("More than one root disk device: {0:?} and {1:?}")]
    TwoRoots(String, String),
}

/// LXD's `IsDeviceName`.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._:-".contains(&b))
}

/// Whether `device` is a root disk (`type: disk`, `path: /`).
pub fn is_root_disk(device: &Device) -> bool {
    device.get("type").map(String::as_str) == Some("disk")
        && device.get("path").map(String::as_str) == Some("/")
}

fn check_one(name: &str, device: &Device) -> Result<(), DeviceError> {
    if !valid_name(name) {
        return Err(DeviceError::Name(name.to_owned()));
    }
    let kind = device
        .get("type")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DeviceError::NoType(name.to_owned()))?;
    let allowed: &[&str] = match kind.as_str() {
        "none" => &["type"],
        "disk" if is_root_disk(device) => &["type", "path", "pool"],
        _ => {
            return Err(DeviceError::Unsupported {
                name: name.to_owned(),
                kind: kind.clone(),
            })
        }
    };
    if let Some(key) = device.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(DeviceError::UnknownKey {
            name: name.to_owned(),
            key: key.clone(),
        });
    }
    if kind == "disk" {
        match device.get("pool").map(String::as_str) {
            Some(DEFAULT_POOL) => {}
            Some(pool) => {
                return Err(DeviceError::Invalid {
                    name: name.to_owned(),
                    reason: format!(
                        "Storage pool {pool:?} not found (rxd has only {DEFAULT_POOL:?})"
                    ),
                })
            }
            None => {
                return Err(DeviceError::Invalid {
                    name: name.to_owned(),
                    reason: "Root disk entry must have a \"pool\" property set".into(),
                })
            }
        }
    }
    Ok(())
}

/// Check a set of devices as one profile or one instance holds them.
pub fn validate(devices: &Devices) -> Result<(), DeviceError> {
    let mut root: Option<&str> = None;
    for (name, device) in devices {
        check_one(name, device)?;
        if is_root_disk(device) {
            if let Some(first) = root {
                return Err(DeviceError::TwoRoots(first.to_owned(), name.clone()));
            }
            root = Some(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(list: &[(&str, &[(&str, &str)])]) -> Devices {
        list.iter()
            .map(|(n, kv)| {
                (
                    (*n).to_owned(),
                    kv.iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn names() {
        for good in ["root", "eth0", "a/b", "x.y:z_1-2", &"a".repeat(63)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", ".hidden", "sp ace", "new\nline", &"a".repeat(64), "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn what_rxd_accepts_today() {
        let root = [("type", "disk"), ("path", "/"), ("pool", "default")];
        assert_eq!(validate(&devices(&[("root", &root)])), Ok(()));
        assert_eq!(validate(&devices(&[("eth0", &[("type", "none")])])), Ok(()));
        assert_eq!(validate(&Devices::new()), Ok(()));
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("path", "/")], "Missing device type"),
            (
                &[("type", "nic"), ("network", "br0")],
                "Unsupported device type \"nic\"",
            ),
            (
                &[("type", "disk"), ("source", "/etc"), ("path", "/mnt")],
                "Unsupported device type \"disk\"",
            ),
            (
                &[("type", "disk"), ("path", "/"), ("pool", "other")],
                "Storage pool \"other\" not found",
            ),
            (&[("type", "disk"), ("path", "/")], "must have a \"pool\""),
            (
                &[
                    ("type", "disk"),
                    ("path", "/"),
                    ("pool", "default"),
                    ("size", "1GB"),
                ],
                "Invalid device option \"size\"",
            ),
            (
                &[("type", "none"), ("x", "y")],
                "Invalid device option \"x\"",
            ),
        ];
        for (device, want) in cases {
            let e = validate(&devices(&[("d", device)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{device:?}: {e}");
        }
        let two = devices(&[("a", &root), ("b", &root)]);
        assert!(matches!(validate(&two), Err(DeviceError::TwoRoots(..))));
        assert!(matches!(
            validate(&devices(&[(".x", &[("type", "none")])])),
            Err(DeviceError::Name(_))
        ));
    }
}
