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
    if let Some(name) = key.strip_prefix("linux.sysctl.") {
        return check_sysctl(name, value).map_err(invalid);
    }
    let result = match key {
        // cloud-init's NoCloud seed, written by the image's templates (LXD's `cloud_init`).
        "cloud-init.user-data" | "cloud-init.vendor-data" => check_cloud_config(value),
        "cloud-init.network-config" => check_yaml(value),
        "security.privileged"
        | "security.idmap.isolated"
        | "security.protection.delete"
        | "security.nesting"
        | "boot.autostart"
        | "limits.memory.swap"
        | "snapshots.schedule.stopped" => check_bool(value),
        // Seconds to wait after starting this instance before starting the next one.
        "boot.autostart.delay" => check_int(value, 0, 24 * 3600),
        // Autostart starts higher priorities first.
        // LXD takes any int, negative ones too (they start after the unset ones).
        "boot.autostart.priority" => match value.parse::<i64>() {
            Ok(n) if n.unsigned_abs() <= 1 << 20 => Ok(()),
            _ => Err(format!(
                "expected a whole number from -1048576 to 1048576, not {value:?}"
            )),
        },
        // Seconds a host shutdown waits for this instance to halt before killing it.
        "boot.host_shutdown_timeout" => check_int(value, 0, 24 * 3600),
        // Host shutdown stops higher priorities first.
        "boot.stop.priority" => check_int(value, 0, 1 << 20),
        "security.idmap.size" => check_int(value, 1, 1 << 31),
        "security.idmap.base" => check_int(value, 1, u64::from(u32::MAX)),
        "limits.processes" => check_int(value, 1, 1 << 22),
        "limits.memory" => check_memory(value),
        "limits.memory.enforce" => match value {
            "hard" | "soft" => Ok(()),
            _ => Err(format!("expected hard or soft, not {value:?}")),
        },
        "limits.cpu" => parse_cpu_limit(value).map(drop),
        "limits.cpu.allowance" => parse_cpu_allowance(value).map(drop),
        "snapshots.schedule" => crate::schedule::Schedule::parse(value, "").map(drop),
        "snapshots.pattern" => check_pattern(value),
        "snapshots.expiry" => crate::expiry::parse_expiry(value)
            .map(drop)
            .map_err(|e| e.to_string()),
        _ => return Err(InstanceConfigError::UnknownKey(key.into())),
    };
    result.map_err(invalid)
}

/// `limits.cpu`: how many CPUs, or which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuLimit {
    /// A plain number: that many CPUs (`2`).
    Count(u32),
    /// A list or range (`0-1`, `0,2`, `1-1` for CPU 1 alone), sorted and without repeats.
    Set(Vec<u32>),
}

/// Most CPUs a limit may name (the kernel's `NR_CPUS` ceiling on x86_64).
const MAX_CPUS: u32 = 8192;

/// Parse `limits.cpu` as LXD does: a number is a count; anything with `,` or `-` is a set.
pub fn parse_cpu_limit(value: &str) -> Result<CpuLimit, String> {
    let bad = || {
        format!(
            "expected a number of CPUs (2) or a set of them (0-1, 0,2; 1-1 for CPU 1 alone), not {value:?}"
        )
    };
    if !value.contains([',', '-']) {
        return match value.parse::<u32>() {
            Ok(n) if (1..=MAX_CPUS).contains(&n) => Ok(CpuLimit::Count(n)),
            _ => Err(bad()),
        };
    }
    parse_cpu_list(value).map(CpuLimit::Set).ok_or_else(bad)
}

/// A kernel CPU list (`0-3,8`, as `/sys/devices/system/cpu/online` writes one), sorted, without
/// repeats; `None` if malformed or empty.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    // Longer than any real list of 8192 CPUs needs; bounds the work below.
    if text.len() > 16 * 1024 {
        return None;
    }
    // One flag per possible CPU: overlapping ranges cost no memory.
    let mut set = vec![false; MAX_CPUS as usize];
    for item in text.trim().split(',') {
        let (from, to) = match item.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = item.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if from > to || to >= MAX_CPUS {
            return None;
        }
        set[from as usize..=to as usize].fill(true);
    }
    let cpus: Vec<u32> = (0..MAX_CPUS).filter(|&c| set[c as usize]).collect();
    (!cpus.is_empty()).then_some(cpus)
}

/// A CPU list written as the kernel writes one (`0-2,5`).
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        out.push(if start == cpus[i] {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    out.join(",")
}

/// `limits.cpu.allowance`, as LXD reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuAllowance {
    /// `50%`: a share of CPU time under contention (cgroup v1 `cpu.shares` 1024 × p / 100, v2
    /// `cpu.weight` p), no hard cap.
    Percent(u32),
    /// `25ms/100ms`: at most `quota_us` of CPU time in every `period_us` (CFS bandwidth).
    Quota { quota_us: u64, period_us: u64 },
}

pub fn parse_cpu_allowance(value: &str) -> Result<CpuAllowance, String> {
    let bad = || {
        format!(
            "expected a percentage (50%) or a time quota per period (25ms/100ms), not {value:?}"
        )
    };
    if let Some(pct) = value.strip_suffix('%') {
        return match pct.parse::<u32>() {
            Ok(p @ 1..=100) => Ok(CpuAllowance::Percent(p)),
            _ => Err(bad()),
        };
    }
    let (quota, period) = value.split_once('/').ok_or_else(bad)?;
    let ms = |v: &str| v.strip_suffix("ms").and_then(|n| n.parse::<u64>().ok());
    match (ms(quota), ms(period)) {
        // The kernel's bounds: a period from 1 ms to 1 s, a quota of at least 1 ms.
        (Some(q), Some(p)) if q >= 1 && (1..=1000).contains(&p) && q <= p * u64::from(MAX_CPUS) => {
            Ok(CpuAllowance::Quota {
                quota_us: q * 1000,
                period_us: p * 1000,
            })
        }
        _ => Err(bad()),
    }
}

/// Sysctls that live in a namespace a container has of its own (network, IPC, UTS): writing
/// them inside the container changes nothing of the host's. Everything else is host-wide.
pub fn namespaced_sysctl(name: &str) -> bool {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    name.starts_with("net.")
        || name.starts_with("fs.mqueue.")
        || IPC.contains(&name)
        || name == "kernel.domainname"
}

fn check_sysctl(name: &str, value: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= 200
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !well_formed {
        return Err(format!("{name:?} is not a sysctl name"));
    }
    if name == "kernel.hostname" {
        return Err("the host name is the instance's name; rename the instance instead".into());
    }
    if !namespaced_sysctl(name) {
        return Err(format!(
            "{name} is not namespaced: setting it would change the host; only net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.* and kernel.domainname can be set for a container"
        ));
    }
    if value.is_empty() || value.len() > 1024 || value.chars().any(|c| c.is_control() && c != '\t')
    {
        return Err("expected a value on one line".into());
    }
    Ok(())
}

/// `snapshots.pattern` must render to a valid snapshot name (with `%d` as a number).
fn check_pattern(value: &str) -> Result<(), String> {
    let name = crate::schedule::render_pattern(value, 0)?.replacen("%d", "0", 1);
    if crate::name::valid_snapshot_name(&name) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} makes snapshot names like {name:?}: names are letters, digits, '-' and '_', starting with a letter or digit, at most 63 bytes"
        ))
    }
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
        // A MAC is what the network filters hold a NIC to: the daemon's (see `devices::carried_mac`).
        check("volatile.eth0.hwaddr", "00:16:3e:12:34:56", false);
        check("limits.cpu", "2", true);
        check("limits.cpu", "0-1", true);
        check("limits.cpu", "0,1", true);
        check("limits.cpu", "1-1", true);
        check("limits.cpu", "0-1,4", true);
        check("limits.cpu", "0", false);
        check("limits.cpu", "two", false);
        check("limits.cpu", "1-0", false);
        check("limits.cpu", "0,", false);
        check("limits.cpu", "-1", false);
        check("limits.cpu", "0-99999", false);
        check("limits.cpu.allowance", "50%", true);
        check("limits.cpu.allowance", "100%", true);
        check("limits.cpu.allowance", "0%", false);
        check("limits.cpu.allowance", "150%", false);
        check("limits.cpu.allowance", "25ms/100ms", true);
        check("limits.cpu.allowance", "200ms/100ms", true);
        check("limits.cpu.allowance", "25ms/2000ms", false);
        check("limits.cpu.allowance", "0ms/100ms", false);
        check("limits.cpu.allowance", "25/100", false);
        check("limits.cpu.allowance", "fast", false);
        check("limits.memory.enforce", "hard", true);
        check("limits.memory.enforce", "soft", true);
        check("limits.memory.enforce", "medium", false);
        check("limits.memory.swap", "false", true);
        check("limits.memory.swap", "no", false);
        check("security.nesting", "true", true);
        check("security.nesting", "1", false);
        check("linux.sysctl.net.ipv4.ip_forward", "1", true);
        check("linux.sysctl.net.ipv4.conf.eth-0.rp_filter", "2", true);
        check("linux.sysctl.net.ipv4.tcp_rmem", "4096 87380 6291456", true);
        check("linux.sysctl.kernel.shmmax", "1073741824", true);
        check("linux.sysctl.kernel.msgmnb", "65536", true);
        check("linux.sysctl.kernel.sem", "250 32000 32 128", true);
        check("linux.sysctl.fs.mqueue.msg_max", "100", true);
        check("linux.sysctl.kernel.domainname", "example", true);
        check("linux.sysctl.kernel.hostname", "other", false);
        check("linux.sysctl.kernel.panic", "1", false);
        check("linux.sysctl.vm.swappiness", "0", false);
        check("linux.sysctl.fs.file-max", "1", false);
        check("linux.sysctl.net..x", "1", false);
        check("linux.sysctl.net/ipv4/ip_forward", "1", false);
        check("linux.sysctl.net.ipv4.ip_forward", "1\n", false);
        check("linux.sysctl.net.ipv4.ip_forward", "", false);
        check("linux.sysctl.", "1", false);
        check("boot.autostart.delay", "5", true);
        check("boot.autostart.delay", "-1", false);
        check("boot.autostart.priority", "10", true);
        check("boot.autostart.priority", "high", false);
        check("boot.autostart.priority", "-5", true);
        check("boot.autostart.priority", "2000000", false);
        check("snapshots.schedule", "* * * * *", true);
        check("snapshots.schedule", "@daily, @startup", true);
        check("snapshots.schedule", "0 6 * *", false);
        check("snapshots.schedule", "@often", false);
        check("snapshots.schedule.stopped", "true", true);
        check("snapshots.schedule.stopped", "maybe", false);
        check("snapshots.pattern", "snap%d", true);
        check("snapshots.pattern", "daily-%d", true);
        check(
            "snapshots.pattern",
            "{{ creation_date|date:'2006-01-02_15-04-05' }}",
            true,
        );
        check("snapshots.pattern", "a/b", false);
        check("snapshots.pattern", "%d-%d", false);
        check("snapshots.pattern", "{{ name }}", false);
        check("snapshots.expiry", "1d", true);
        check("snapshots.expiry", "1M 2H", true);
        check("snapshots.expiry", "2x", false);
        check("nonsense", "1", false);
        assert!(
            validate_key("volatile.idmap.next", "[]", false).is_ok(),
            "the daemon writes its own volatile keys"
        );
    }

    #[test]
    fn cpu_lists() {
        for (text, cpus) in [
            ("0", Some(vec![0])),
            ("0-3", Some(vec![0, 1, 2, 3])),
            ("0-1,4,6-7\n", Some(vec![0, 1, 4, 6, 7])),
            ("1,0,1", Some(vec![0, 1])),
            ("", None),
            ("3-1", None),
            ("a", None),
            ("8191", Some(vec![8191])),
            ("8192", None),
        ] {
            assert_eq!(parse_cpu_list(text), cpus, "{text:?}");
        }
        // Many overlapping ranges: one set, and past the length bound, refused.
        let many = "0-8191,".repeat(2000) + "0";
        assert_eq!(parse_cpu_list(&many).map(|c| c.len()), Some(8192));
        let too_many = "0-8191,".repeat(3000) + "0";
        assert_eq!(parse_cpu_list(&too_many), None);
        for (cpus, text) in [
            (vec![0], "0"),
            (vec![0, 1, 2], "0-2"),
            (vec![0, 2, 3, 5], "0,2-3,5"),
        ] {
            assert_eq!(format_cpu_list(&cpus), text);
        }
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
