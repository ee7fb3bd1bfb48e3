//! The instance config key registry. Values are data: they are validated here and later turned
//! into typed settings, never written into a generated file or a shell. Unknown keys, and the
//! `raw.*` escape hatches LXD has, are refused.

use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum InstanceConfigError {
    #[error("unknown instance configuration key: {0:?}")]
    UnknownKey(String),
    #[error("{0:?}: raw.* keys are not supported by rxd (they would bypass its confinement)")]
    Raw(String),
    #[error("{0:?}: volatile keys are managed by rxd")]
    Volatile(String),
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// Volatile keys a client may set (LXD's list).
const CLIENT_VOLATILE: &[&str] = &[
    "volatile.apply_template",
    "volatile.base_image",
    "volatile.last_state.power",
];

fn check_bool(v: &str) -> Result<(), String> {
    match v {
        "true" | "false" => Ok(()),
        _ => Err(format!("expected true or false, not {v:?}")),
    }
}

fn check_int(v: &str, min: u64, max: u64) -> Result<(), String> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err(format!(
            "expected a whole number from {min} to {max}, not {v:?}"
        )),
    }
}

/// Bytes with LXD's units (`kB MB GB TB PB EB`, `KiB MiB GiB TiB PiB EiB`, or none).
pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "PB" => 1_000_000_000_000_000,
        "EB" => 1_000_000_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "PiB" => 1 << 50,
        "EiB" => 1 << 60,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn check_memory(v: &str) -> Result<(), String> {
    if let Some(pct) = v.strip_suffix('%') {
        return match pct.parse::<u8>() {
            Ok(1..=100) => Ok(()),
            _ => Err(format!("expected a percentage from 1% to 100%, not {v:?}")),
        };
    }
    match parse_bytes(v) {
        Some(n) if n >= 1 << 20 => Ok(()),
        Some(_) => Err("at least 1MiB".into()),
        None => Err(format!(
            "expected a size like 512MiB or 2GB, or a percentage, not {v:?}"
        )),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Validate one key. `from_client` is false for the daemon's own `volatile.*` writes.
pub fn validate_key(key: &str, value: &str, from_client: bool) -> Result<(), InstanceConfigError> {
    let invalid = |reason: String| InstanceConfigError::Invalid {
        key: key.into(),
        reason,
    };
    if key.starts_with("raw.") {
        return Err(InstanceConfigError::Raw(key.into()));
    }
    if let Some(rest) = key.strip_prefix("volatile.") {
        if from_client && !CLIENT_VOLATILE.contains(&key) {
            return Err(InstanceConfigError::Volatile(key.into()));
        }
        return if rest.is_empty() || value.contains('\0') {
            Err(invalid("bad volatile key or value".into()))
        } else {
            Ok(())
        };
    }
    if let Some(var) = key.strip_prefix("environment.") {
        if !is_env_name(var) {
            return Err(invalid(
                "environment variable names are letters, digits and '_', not starting with a digit"
                    .into(),
            ));
        }
        // A NUL would end the variable early; anything else is passed as data.
        return if value.contains('\0') {
            Err(invalid("NUL in value".into()))
        } else {
            Ok(())
        };
    }
    if key.starts_with("user.") || key.starts_with("image.") {
        return if value.contains('\0') {
            Err(invalid("NUL in value".into()))
        } else {
            Ok(())
        };
    }
    let result = match key {
        // cloud-init's NoCloud seed, written by the image's templates (LXD's `cloud_init`).
        "cloud-init.user-data" | "cloud-init.vendor-data" => check_cloud_config(value),
        "cloud-init.network-config" => check_yaml(value),
        "security.privileged"
        | "security.idmap.isolated"
        | "security.protection.delete"
        | "boot.autostart" => check_bool(value),
        // Seconds a host shutdown waits for this instance to halt before killing it.
        "boot.host_shutdown_timeout" => check_int(value, 0, 24 * 3600),
        // Host shutdown stops higher priorities first.
        "boot.stop.priority" => check_int(value, 0, 1 << 20),
        "security.idmap.size" => check_int(value, 1, 1 << 31),
        "security.idmap.base" => check_int(value, 1, u64::from(u32::MAX)),
        "limits.processes" => check_int(value, 1, 1 << 22),
        "limits.memory" => check_memory(value),
        _ => return Err(InstanceConfigError::UnknownKey(key.into())),
    };
    result.map_err(invalid)
}

/// As LXD: a `#cloud-config` document must be YAML; any other (a script, say) is taken as is.
fn check_cloud_config(value: &str) -> Result<(), String> {
    if value.starts_with("#cloud-config") {
        check_yaml(value)
    } else if value.contains('\0') {
        Err("NUL in value".into())
    } else {
        Ok(())
    }
}

fn check_yaml(value: &str) -> Result<(), String> {
    // serde_norway bounds depth and alias expansion.
    serde_norway::from_str::<serde_norway::Value>(value)
        .map(drop)
        .map_err(|e| format!("not valid YAML: {e}"))
}

/// Validate a whole config map from a client.
pub fn validate(config: &BTreeMap<String, String>) -> Result<(), InstanceConfigError> {
    config
        .iter()
        .try_for_each(|(k, v)| validate_key(k, v, true))
}

pub fn flag(config: &BTreeMap<String, String>, key: &str) -> bool {
    config.get(key).is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, value: &str, ok: bool) {
        assert_eq!(
            validate_key(key, value, true).is_ok(),
            ok,
            "{key}={value:?}: {:?}",
            validate_key(key, value, true)
        );
    }

    #[test]
    fn key_table() {
        check(
            "cloud-init.user-data",
            "#cloud-config\npackages: [vim]\n",
            true,
        );
        check("cloud-init.user-data", "#cloud-config\n: : [\n", false);
        check("cloud-init.user-data", "#!/bin/sh\necho hi\n", true);
        check("cloud-init.network-config", "version: 2\n", true);
        check("cloud-init.network-config", "[unclosed", false);
        check("cloud-init.other", "x", false);
        check("security.privileged", "true", true);
        check("security.privileged", "yes", false);
        check("security.idmap.isolated", "false", true);
        check("security.idmap.size", "65536", true);
        check("security.idmap.size", "0", false);
        check("security.idmap.size", "-1", false);
        check("security.idmap.base", "1065536", true);
        check("security.idmap.base", "0", false);
        check("limits.processes", "100", true);
        check("limits.processes", "0", false);
        check("limits.processes", "many", false);
        check("limits.memory", "512MiB", true);
        check("limits.memory", "2GB", true);
        check("limits.memory", "50%", true);
        check("limits.memory", "0%", false);
        check("limits.memory", "101%", false);
        check("limits.memory", "12", false);
        check("limits.memory", "1XB", false);
        check("environment.FOO", "bar baz", true);
        check("environment.FOO", "line1\nline2", true);
        check("environment.FOO", "a\0b", false);
        check("environment.1X", "v", false);
        check("environment.A-B", "v", false);
        check("environment.", "v", false);
        check("user.anything", "$(reboot)", true);
        check("raw.lxc", "lxc.apparmor.profile=unconfined", false);
        check("raw.idmap", "both 0 0", false);
        check("volatile.idmap.next", "[]", false);
        check("volatile.base_image", "abc", true);
        check("limits.cpu", "2", false);
        check("nonsense", "1", false);
        assert!(
            validate_key("volatile.idmap.next", "[]", false).is_ok(),
            "the daemon writes its own volatile keys"
        );
    }

    #[test]
    fn bytes() {
        for (v, n) in [
            ("1", Some(1)),
            ("1kB", Some(1000)),
            ("1KiB", Some(1024)),
            ("3GiB", Some(3 << 30)),
            ("1EiB", Some(1 << 60)),
            ("99999EiB", None),
            ("", None),
            ("MiB", None),
        ] {
            assert_eq!(parse_bytes(v), n, "{v}");
        }
    }
}
