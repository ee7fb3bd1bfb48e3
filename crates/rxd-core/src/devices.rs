//! Devices as instances and profiles carry them: the name rule, each type's keys and values
//! (LXD 5.0's, minus what rxd does not support), and the typed forms the container helper is
//! handed. Who may use which device is `rxd-auth::confinement`'s; opening host paths is
//! `rxd-hostpath`'s. Types: the root disk (`{type: disk, path: /, pool: default}`), `disk` with a
//! host `source`, `unix-char`, `unix-block`, `proxy` (see `proxy.rs`), `nic` (validated and
//! stored; wired by the networks work) and `none` (masks a profile's device of that name).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

pub type Device = BTreeMap<String, String>;
pub type Devices = BTreeMap<String, Device>;

/// The only storage pool rxd has (the state dir's `containers/`).
pub const DEFAULT_POOL: &str = "default";

/// rxd's own disk key (LXD 5.0 has none): `false` lets a server administrator drop the
/// `nosuid,nodev` rxd puts on every host-path disk.
pub const DISK_NOSUID: &str = "rxd.nosuid";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("Invalid device name {0:?}: 1 to 63 of A-Z a-z 0-9 / . _ : -, not starting with '.'")]
    Name(String),
    #[error("Device validation failed for {0:?}: Missing device type")]
    NoType(String),
    #[error("Device validation failed for {name:?}: Unsupported device type {kind:?}")]
    Unsupported { name: String, kind: String },
    #[error("Device validation failed for {name:?}: Invalid device option {key:?}")]
    UnknownKey { name: String, key: String },
    #[error("Device validation failed for {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("More than one root disk device: {0:?} and {1:?}")]
    TwoRoots(String, String),
    #[error("More than one disk device uses the same path {path:?}: {first:?} and {second:?}")]
    SamePath {
        path: String,
        first: String,
        second: String,
    },
}

/// LXD's `IsDeviceName`.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._:-".contains(&b))
}

/// A device name as one path component or file name: `/` (allowed in names) becomes `--`,
/// `-` becomes `-2d` first, so two names never meet.
pub fn encoded_name(name: &str) -> String {
    name.replace('-', "-2d").replace('/', "--")
}

/// Whether `device` is a root disk (`type: disk`, `path: /`).
pub fn is_root_disk(device: &Device) -> bool {
    device.get("type").map(String::as_str) == Some("disk")
        && device.get("path").map(String::as_str) == Some("/")
}

/// How a disk's mount propagates (LXD's `propagation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    Private,
    Shared,
    Slave,
    Unbindable,
}

/// A `disk` device with a host `source`, as the container helper mounts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskMount {
    pub device: String,
    /// Absolute and normal (no `.`, `..` or empty components).
    pub source: PathBuf,
    /// A `restricted.devices.disk.paths` prefix the source must resolve beneath.
    #[serde(default)]
    pub beneath: Option<PathBuf>,
    /// Where inside the container (absolute, normal, not `/`, not under `/proc` or `/sys`).
    pub path: PathBuf,
    pub readonly: bool,
    pub recursive: bool,
    /// Idmapped with the container's user namespace.
    pub shift: bool,
    pub propagation: Option<Propagation>,
    /// A missing source fails the start (`true`) or skips the device.
    pub required: bool,
    /// `nosuid,nodev` (rxd's default).
    pub nosuid: bool,
    /// A custom storage volume rxd made (`source` is its directory in a pool, which lies in
    /// the directories no host-path disk may reach): opened beneath itself instead.
    #[serde(default)]
    pub volume: bool,
}

/// A `disk` naming a custom storage volume (`pool` and `source: <volume>`), before the daemon
/// finds the volume's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeDisk {
    pub device: String,
    pub pool: String,
    pub volume: String,
    /// Where inside the container.
    pub path: PathBuf,
    pub readonly: bool,
    pub required: bool,
}

impl VolumeDisk {
    /// The mount of the volume's directory `dir`: idmapped with the container's user namespace
    /// (the volume keeps container ids on disk, as an idmapped root filesystem does), not
    /// recursive, private, `nosuid,nodev`.
    pub fn mount(&self, dir: PathBuf) -> DiskMount {
        DiskMount {
            device: self.device.clone(),
            beneath: Some(dir.clone()),
            source: dir,
            path: self.path.clone(),
            readonly: self.readonly,
            recursive: false,
            shift: true,
            propagation: None,
            required: self.required,
            nosuid: true,
            volume: true,
        }
    }
}

/// Whether `device` is a disk naming a custom storage volume (a non-root disk with a `pool`).
pub fn is_volume_disk(device: &Device) -> bool {
    device.get("type").map(String::as_str) == Some("disk")
        && !is_root_disk(device)
        && device.get("pool").is_some_and(|p| !p.is_empty())
}

const VOLUME_DISK_KEYS: &[&str] = &[
    "type", "pool", "source", "path", "readonly", "required", "optional",
];

/// A disk naming a custom storage volume, typed.
pub fn volume_disk(name: &str, device: &Device) -> Result<VolumeDisk, DeviceError> {
    if let Some(key) = device
        .keys()
        .find(|k| !VOLUME_DISK_KEYS.contains(&k.as_str()))
    {
        return Err(invalid(
            name,
            format!("Option {key:?} is not supported by rxd for storage volume disks"),
        ));
    }
    let pool = device.get("pool").cloned().unwrap_or_default();
    if pool.is_empty() || pool.contains('/') {
        return Err(invalid(name, format!("Invalid storage pool name {pool:?}")));
    }
    let volume = device.get("source").cloned().unwrap_or_default();
    if volume.is_empty() {
        return Err(invalid(
            name,
            "Storage volume disks need a \"source\" (the volume's name)",
        ));
    }
    if !crate::name::valid_volume_name(&volume) {
        return Err(invalid(
            name,
            format!("Invalid storage volume name {volume:?} (snapshots and volumes of other types cannot be attached)"),
        ));
    }
    let path = target_path(
        name,
        device
            .get("path")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid(name, "Disk devices need a \"path\""))?,
    )?;
    let required = flag(
        name,
        device,
        "required",
        !flag(name, device, "optional", false)?,
    )?;
    Ok(VolumeDisk {
        device: name.to_owned(),
        pool,
        volume,
        path,
        readonly: flag(name, device, "readonly", false)?,
        required,
    })
}

/// The custom-volume disks of an instance's expanded devices (already validated), in name
/// order.
pub fn volume_disks(devices: &Devices) -> Vec<VolumeDisk> {
    devices
        .iter()
        .filter(|(_, d)| is_volume_disk(d))
        .filter_map(|(n, d)| volume_disk(n, d).ok())
        .collect()
}

/// A `unix-char` or `unix-block` device node, as the container helper makes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixNode {
    pub device: String,
    pub block: bool,
    /// The host node (under `/dev`) whose numbers to take when `major`/`minor` are not given.
    pub source: Option<PathBuf>,
    /// Where inside the container.
    pub path: PathBuf,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Owner and mode inside the container.
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub required: bool,
}

const DISK_KEYS: &[&str] = &[
    "type",
    "source",
    "path",
    "readonly",
    "recursive",
    "shift",
    "propagation",
    "required",
    "optional",
    DISK_NOSUID,
];
const UNIX_KEYS: &[&str] = &[
    "type", "source", "path", "major", "minor", "uid", "gid", "mode", "required",
];
/// NIC keys rxd stores (LXD 5.0's bridged, macvlan, p2p and routed keys).
const NIC_KEYS: &[&str] = &[
    "type",
    "nictype",
    "network",
    "parent",
    "name",
    "hwaddr",
    "host_name",
    "mtu",
    "ipv4.address",
    "ipv6.address",
    "ipv4.routes",
    "ipv6.routes",
    "ipv4.routes.external",
    "ipv6.routes.external",
    "ipv4.gateway",
    "ipv6.gateway",
    "limits.ingress",
    "limits.egress",
    "limits.max",
    "security.mac_filtering",
    "security.ipv4_filtering",
    "security.ipv6_filtering",
    "security.port_isolation",
    "vlan",
    "mode",
    "boot.priority",
];
/// Device types LXD has and rxd does not.
const NOT_SUPPORTED: &[&str] = &["gpu", "usb", "infiniband", "pci", "tpm", "unix-hotplug"];

fn invalid(name: &str, reason: impl Into<String>) -> DeviceError {
    DeviceError::Invalid {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

fn flag(name: &str, device: &Device, key: &str, default: bool) -> Result<bool, DeviceError> {
    match device.get(key).map(String::as_str) {
        None | Some("") => Ok(default),
        Some("true") | Some("1") | Some("yes") | Some("on") => Ok(true),
        Some("false") | Some("0") | Some("no") | Some("off") => Ok(false),
        Some(v) => Err(invalid(
            name,
            format!("Invalid value for {key:?}: {v:?} is not a boolean"),
        )),
    }
}

/// An absolute path with no `.`, `..`, empty or over-long parts (so a prefix check on it means
/// what it says).
pub fn normal_absolute(text: &str) -> Option<PathBuf> {
    if !text.starts_with('/') || text.len() > 4096 || text.contains('\0') {
        return None;
    }
    let path = Path::new(text);
    let parts_ok = path.components().all(|c| match c {
        Component::RootDir => true,
        Component::Normal(p) => p.len() <= 255,
        _ => false,
    });
    let rebuilt: PathBuf = path.components().collect();
    (parts_ok && rebuilt.as_os_str() == path.as_os_str()).then(|| path.to_path_buf())
}

fn target_path(name: &str, text: &str) -> Result<PathBuf, DeviceError> {
    let path = normal_absolute(text).ok_or_else(|| {
        invalid(
            name,
            format!("Invalid path {text:?}: it must be absolute, without \".\", \"..\" or \"//\""),
        )
    })?;
    if path == Path::new("/") {
        return Err(invalid(name, "Only the root disk may have path \"/\""));
    }
    if path.starts_with("/proc") || path.starts_with("/sys") {
        return Err(invalid(
            name,
            format!("Path {text:?} is under /proc or /sys, whose masks a mount there would undo"),
        ));
    }
    Ok(path)
}

/// A `disk` with a host source, typed.
pub fn disk(name: &str, device: &Device) -> Result<DiskMount, DeviceError> {
    if let Some(key) = device.keys().find(|k| !DISK_KEYS.contains(&k.as_str())) {
        let reason = match key.as_str() {
            "pool" => "A storage volume disk needs a non-empty \"pool\"".into(),
            "size" | "size.state" => "Only the root disk can have a size in rxd".into(),
            k if k.starts_with("limits.")
                || k.starts_with("ceph")
                || k == "raw.mount.options"
                || k == "boot.priority" =>
            {
                format!("Option {k:?} is not supported by rxd")
            }
            _ => {
                return Err(DeviceError::UnknownKey {
                    name: name.to_owned(),
                    key: key.clone(),
                })
            }
        };
        return Err(invalid(name, reason));
    }
    let source_text = device
        .get("source")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            invalid(
                name,
                "Disk devices other than the root disk need a \"source\"",
            )
        })?;
    if source_text.starts_with("ceph:") || source_text.starts_with("cephfs:") {
        return Err(invalid(name, "Ceph sources are not supported by rxd"));
    }
    let source = normal_absolute(source_text).ok_or_else(|| {
        invalid(
            name,
            format!("Invalid source {source_text:?}: it must be an absolute host path, without \".\", \"..\" or \"//\" (or a custom storage volume's name with \"pool\")"),
        )
    })?;
    let path = target_path(
        name,
        device
            .get("path")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid(name, "Disk devices need a \"path\""))?,
    )?;
    let propagation = match device.get("propagation").map(String::as_str) {
        None | Some("") | Some("private") => None,
        Some("shared") => Some(Propagation::Shared),
        Some("slave") => Some(Propagation::Slave),
        Some("unbindable") => Some(Propagation::Unbindable),
        Some(v) if v.starts_with('r') => {
            return Err(invalid(
                name,
                format!(
                "Propagation {v:?} is not supported by rxd (use \"recursive\" with a plain mode)"
            ),
            ))
        }
        Some(v) => return Err(invalid(name, format!("Invalid propagation mode {v:?}"))),
    };
    // `optional` is LXD's older name for `required=false`.
    let required = flag(
        name,
        device,
        "required",
        !flag(name, device, "optional", false)?,
    )?;
    Ok(DiskMount {
        device: name.to_owned(),
        source,
        beneath: None,
        path,
        readonly: flag(name, device, "readonly", false)?,
        recursive: flag(name, device, "recursive", false)?,
        shift: flag(name, device, "shift", false)?,
        propagation,
        required,
        nosuid: flag(name, device, DISK_NOSUID, true)?,
        volume: false,
    })
}

fn number(name: &str, device: &Device, key: &str, radix: u32) -> Result<Option<u32>, DeviceError> {
    match device.get(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => u32::from_str_radix(v.trim_start_matches("0o"), radix)
            .map(Some)
            .map_err(|_| invalid(name, format!("Invalid value for {key:?}: {v:?}"))),
    }
}

/// A `unix-char` or `unix-block` device, typed.
pub fn unix(name: &str, device: &Device) -> Result<UnixNode, DeviceError> {
    if let Some(key) = device.keys().find(|k| !UNIX_KEYS.contains(&k.as_str())) {
        return Err(DeviceError::UnknownKey {
            name: name.to_owned(),
            key: key.clone(),
        });
    }
    let block = device.get("type").map(String::as_str) == Some("unix-block");
    let source = match device.get("source").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match normal_absolute(s) {
            Some(p) if p.starts_with("/dev") && p != Path::new("/dev") => Some(p),
            _ => {
                return Err(invalid(
                    name,
                    format!(
                        "Invalid source {s:?}: it must be a device node's absolute path under /dev"
                    ),
                ))
            }
        },
    };
    let path_text = device
        .get("path")
        .filter(|p| !p.is_empty())
        .map(String::as_str)
        .or_else(|| device.get("source").map(String::as_str))
        .ok_or_else(|| invalid(name, "Unix devices need a \"source\" or a \"path\""))?;
    let path = target_path(name, path_text)?;
    let major = number(name, device, "major", 10)?;
    let minor = number(name, device, "minor", 10)?;
    if source.is_none() && (major.is_none() || minor.is_none()) {
        return Err(invalid(
            name,
            "Unix devices without a \"source\" need both \"major\" and \"minor\"",
        ));
    }
    if major.is_some_and(|m| m >= 1 << 12) || minor.is_some_and(|m| m >= 1 << 20) {
        return Err(invalid(name, "Device numbers out of range"));
    }
    let mode = number(name, device, "mode", 8)?.unwrap_or(0o660);
    if mode > 0o777 {
        return Err(invalid(
            name,
            format!("Invalid mode {mode:o}: only permission bits (at most 0777)"),
        ));
    }
    Ok(UnixNode {
        device: name.to_owned(),
        block,
        source,
        path,
        major,
        minor,
        uid: number(name, device, "uid", 10)?.unwrap_or(0),
        gid: number(name, device, "gid", 10)?.unwrap_or(0),
        mode,
        required: flag(name, device, "required", true)?,
    })
}

/// A bit rate as LXD writes one (`units.ParseBitSizeString`): a whole number and a unit, `bit`,
/// decimal `kbit` to `Ebit` or binary `Kibit` to `Eibit`; in bits per second.
pub fn parse_bit_rate(value: &str) -> Option<u64> {
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = value.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit {
        "bit" => 1,
        "kbit" => 1_000,
        "Mbit" => 1_000_000,
        "Gbit" => 1_000_000_000,
        "Tbit" => 1_000_000_000_000,
        "Pbit" => 1_000_000_000_000_000,
        "Ebit" => 1_000_000_000_000_000_000,
        "Kibit" => 1 << 10,
        "Mibit" => 1 << 20,
        "Gibit" => 1 << 30,
        "Tibit" => 1 << 40,
        "Pibit" => 1 << 50,
        "Eibit" => 1 << 60,
        _ => return None,
    };
    n.checked_mul(multiplier).filter(|r| *r > 0)
}

fn nic(name: &str, device: &Device) -> Result<(), DeviceError> {
    if let Some(key) = device
        .keys()
        .find(|k| !NIC_KEYS.contains(&k.as_str()) && !k.starts_with("maas."))
    {
        return Err(DeviceError::UnknownKey {
            name: name.to_owned(),
            key: key.clone(),
        });
    }
    for key in ["limits.ingress", "limits.egress", "limits.max"] {
        if let Some(v) = device.get(key).filter(|v| !v.is_empty()) {
            if parse_bit_rate(v).is_none() {
                return Err(invalid(
                    name,
                    format!(
                        "{key}: {v:?} is not a bit rate (a number and bit, kbit, Mbit, Gbit...)"
                    ),
                ));
            }
        }
    }
    let network = device.get("network").filter(|v| !v.is_empty());
    let parent = device.get("parent").filter(|v| !v.is_empty());
    match (device.get("nictype").map(String::as_str), network, parent) {
        (_, Some(_), Some(_)) => Err(invalid(
            name,
            "Cannot use \"network\" and \"parent\" together",
        )),
        (None | Some("bridged") | Some("macvlan"), Some(_), None) => Ok(()),
        (Some("bridged") | Some("macvlan"), None, Some(_)) | (Some("p2p"), None, None) => Ok(()),
        (Some("routed"), None, None) => Ok(()),
        (Some(t @ ("p2p" | "routed")), None, Some(_)) => Err(invalid(
            name,
            format!("NIC type {t:?} takes no parent in rxd (p2p never has one; routed with proxy ARP/NDP on a parent is not supported)"),
        )),
        (Some(t @ ("ipvlan" | "physical" | "sriov")), ..) => Err(invalid(
            name,
            format!("NIC type {t:?} is not supported by rxd"),
        )),
        (None, None, _) => Err(invalid(name, "Missing nic type or network")),
        (Some(t), ..) => Err(invalid(
            name,
            format!("Invalid NIC type {t:?} with these options (bridged and macvlan need \"network\" or \"parent\")"),
        )),
    }
}

fn check_one(name: &str, device: &Device) -> Result<(), DeviceError> {
    if !valid_name(name) {
        return Err(DeviceError::Name(name.to_owned()));
    }
    let kind = device
        .get("type")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DeviceError::NoType(name.to_owned()))?;
    match kind.as_str() {
        "none" => match device.keys().find(|k| k.as_str() != "type") {
            Some(key) => Err(DeviceError::UnknownKey {
                name: name.to_owned(),
                key: key.clone(),
            }),
            None => Ok(()),
        },
        "disk" if is_root_disk(device) => root_disk(name, device),
        "disk" if is_volume_disk(device) => volume_disk(name, device).map(drop),
        "disk" => disk(name, device).map(drop),
        "unix-char" | "unix-block" => unix(name, device).map(drop),
        "nic" => nic(name, device),
        "proxy" => crate::proxy::validate(device)
            .map(drop)
            .map_err(|e| invalid(name, e.to_string())),
        k if NOT_SUPPORTED.contains(&k) => Err(invalid(
            name,
            format!("Device type {k:?} is not supported by rxd"),
        )),
        _ => Err(DeviceError::Unsupported {
            name: name.to_owned(),
            kind: kind.clone(),
        }),
    }
}

fn root_disk(name: &str, device: &Device) -> Result<(), DeviceError> {
    if let Some(key) = device
        .keys()
        .find(|k| !["type", "path", "pool", "size"].contains(&k.as_str()))
    {
        return Err(match key.as_str() {
            "source" => invalid(name, "The root disk cannot have a \"source\""),
            "readonly" => invalid(name, "The root disk cannot be read-only"),
            _ => DeviceError::UnknownKey {
                name: name.to_owned(),
                key: key.clone(),
            },
        });
    }
    if let Some(size) = device.get("size") {
        if crate::instance_config::parse_bytes(size).is_none() {
            return Err(invalid(name, format!("Invalid size {size:?}")));
        }
    }
    // Whether the pool exists is the daemon's to say (pools come and go).
    match device.get("pool").map(String::as_str) {
        Some(pool) if !pool.is_empty() && !pool.contains('/') => Ok(()),
        Some(pool) => Err(invalid(name, format!("Invalid storage pool name {pool:?}"))),
        None => Err(invalid(
            name,
            "Root disk entry must have a \"pool\" property set",
        )),
    }
}

/// Where a device appears inside the container, for the types that have a path.
fn target_of(device: &Device) -> Option<&str> {
    match device.get("type").map(String::as_str)? {
        "disk" => device.get("path").map(String::as_str),
        "unix-char" | "unix-block" => device
            .get("path")
            .filter(|p| !p.is_empty())
            .or_else(|| device.get("source"))
            .map(String::as_str),
        _ => None,
    }
}

/// Check a set of devices as one profile or one instance holds them, or as an instance runs
/// with them (expanded).
pub fn validate(devices: &Devices) -> Result<(), DeviceError> {
    let mut root: Option<&str> = None;
    let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, device) in devices {
        check_one(name, device)?;
        if is_root_disk(device) {
            if let Some(first) = root {
                return Err(DeviceError::TwoRoots(first.to_owned(), name.clone()));
            }
            root = Some(name);
        } else if let Some(path) = target_of(device) {
            if let Some(first) = paths.insert(path, name) {
                return Err(DeviceError::SamePath {
                    path: path.to_owned(),
                    first: first.to_owned(),
                    second: name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The host-path disks and unix nodes of an instance's expanded devices (already validated),
/// in name order (custom-volume disks are [`volume_disks`]).
pub fn mounts(devices: &Devices) -> (Vec<DiskMount>, Vec<UnixNode>) {
    let mut disks = Vec::new();
    let mut nodes = Vec::new();
    for (name, device) in devices {
        match device.get("type").map(String::as_str) {
            Some("disk") if !is_root_disk(device) && !is_volume_disk(device) => {
                disks.extend(disk(name, device).ok())
            }
            Some("unix-char" | "unix-block") => nodes.extend(unix(name, device).ok()),
            _ => {}
        }
    }
    (disks, nodes)
}

/// Whether `key = value` is a NIC's MAC a moved instance may bring along
/// (`volatile.<device>.hwaddr`, a unicast MAC): `lxc move` sends it so that the container keeps
/// its address on the other server. A client never sets one (`instance_config::validate_key`);
/// the server keeps one that a move brings only when an administrator moves it.
pub fn carried_mac(key: &str, value: &str) -> bool {
    key.strip_prefix("volatile.")
        .and_then(|rest| rest.strip_suffix(".hwaddr"))
        .is_some_and(|dev| valid_name(dev) && !dev.contains('.'))
        && value
            .parse::<crate::network::mac::Mac>()
            .is_ok_and(|m| m.is_unicast())
}

/// The NICs' MACs a migration keeps from the config it brings ([`carried_mac`]): none unless
/// `allowed`, which a request is only when a server administrator sends it (who alone chooses a
/// NIC's MAC).
pub fn carried_macs(
    config: &std::collections::BTreeMap<String, String>,
    allowed: bool,
) -> std::collections::BTreeMap<String, String> {
    config
        .iter()
        .filter(|(k, v)| allowed && carried_mac(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_administrators_move_carries_macs() {
        let sent: std::collections::BTreeMap<String, String> = [
            ("volatile.eth0.hwaddr", "00:16:3e:12:34:56"),
            ("volatile.eth1.hwaddr", "ff:ff:ff:ff:ff:ff"),
            ("volatile.eth0.host_name", "veth1"),
            ("limits.cpu", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            carried_macs(&sent, true).into_iter().collect::<Vec<_>>(),
            [(
                "volatile.eth0.hwaddr".to_owned(),
                "00:16:3e:12:34:56".to_owned()
            )]
        );
        assert!(carried_macs(&sent, false).is_empty());
    }

    #[test]
    fn a_move_carries_nic_macs_only() {
        assert!(carried_mac("volatile.eth0.hwaddr", "00:16:3e:12:34:56"));
        assert!(!carried_mac("volatile.eth0.hwaddr", "01:16:3e:12:34:56"));
        assert!(!carried_mac("volatile.eth0.hwaddr", "00:00:00:00:00:00"));
        assert!(!carried_mac("volatile.eth0.hwaddr", "me"));
        assert!(!carried_mac("volatile.hwaddr", "00:16:3e:12:34:56"));
        assert!(!carried_mac("volatile..hwaddr", "00:16:3e:12:34:56"));
        assert!(!carried_mac(
            "volatile.eth0.last_state.hwaddr",
            "00:16:3e:12:34:56"
        ));
        assert!(!carried_mac("volatile.eth 0.hwaddr", "00:16:3e:12:34:56"));
        assert!(!carried_mac("volatile.eth0.host_name", "00:16:3e:12:34:56"));
    }

    #[test]
    fn bit_rates_read_as_lxd_reads_them() {
        assert_eq!(parse_bit_rate("100Mbit"), Some(100_000_000));
        assert_eq!(parse_bit_rate("1Gbit"), Some(1_000_000_000));
        assert_eq!(parse_bit_rate("8Kibit"), Some(8192));
        assert_eq!(parse_bit_rate("10bit"), Some(10));
        for bad in [
            "",
            "Mbit",
            "10",
            "10mbit",
            "-1Mbit",
            "1.5Mbit",
            "0bit",
            "99999999Ebit",
        ] {
            assert_eq!(parse_bit_rate(bad), None, "{bad}");
        }
    }

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

    fn check(device: &[(&str, &str)], want: Result<(), &str>) {
        let got = validate(&devices(&[("d", device)])).map_err(|e| e.to_string());
        match (got, want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(w)) => assert!(e.contains(w), "{device:?}: {e} (wanted {w})"),
            (got, want) => panic!("{device:?}: got {got:?}, wanted {want:?}"),
        }
    }

    #[test]
    fn device_keys_and_values() {
        let ok = Ok(());
        check(&[("type", "disk"), ("path", "/"), ("pool", "default")], ok);
        check(&[("type", "none")], ok);
        check(&[("path", "/")], Err("Missing device type"));
        check(&[("type", "gpu")], Err("\"gpu\" is not supported by rxd"));
        check(&[("type", "what")], Err("Unsupported device type \"what\""));
        check(
            &[("type", "none"), ("x", "y")],
            Err("Invalid device option \"x\""),
        );
        // The root disk.
        check(
            &[("type", "disk"), ("path", "/"), ("pool", "other")],
            Ok(()),
        );
        check(
            &[("type", "disk"), ("path", "/"), ("pool", "a/b")],
            Err("Invalid storage pool name"),
        );
        check(
            &[("type", "disk"), ("path", "/")],
            Err("must have a \"pool\""),
        );
        check(
            &[
                ("type", "disk"),
                ("path", "/"),
                ("pool", "default"),
                ("size", "1GB"),
            ],
            Ok(()),
        );
        check(
            &[
                ("type", "disk"),
                ("path", "/"),
                ("pool", "default"),
                ("size", "lots"),
            ],
            Err("Invalid size"),
        );
        check(
            &[
                ("type", "disk"),
                ("path", "/"),
                ("pool", "default"),
                ("readonly", "true"),
            ],
            Err("cannot be read-only"),
        );
        // Host-path disks.
        check(
            &[("type", "disk"), ("source", "/srv/data"), ("path", "/mnt")],
            ok,
        );
        check(
            &[
                ("type", "disk"),
                ("source", "/srv"),
                ("path", "/mnt"),
                ("readonly", "true"),
                ("shift", "true"),
                ("recursive", "1"),
                ("required", "false"),
                ("propagation", "slave"),
                ("rxd.nosuid", "false"),
            ],
            ok,
        );
        check(
            &[("type", "disk"), ("path", "/mnt")],
            Err("need a \"source\""),
        );
        check(
            &[("type", "disk"), ("source", "/srv")],
            Err("need a \"path\""),
        );
        check(
            &[("type", "disk"), ("source", "srv"), ("path", "/mnt")],
            Err("absolute host path"),
        );
        check(
            &[
                ("type", "disk"),
                ("source", "/srv/../etc"),
                ("path", "/mnt"),
            ],
            Err("Invalid source"),
        );
        check(
            &[("type", "disk"), ("source", "/srv//x"), ("path", "/mnt")],
            Err("Invalid source"),
        );
        check(
            &[("type", "disk"), ("source", "/srv/./x"), ("path", "/mnt")],
            Err("Invalid source"),
        );
        check(
            &[("type", "disk"), ("source", "/srv/"), ("path", "/mnt")],
            Err("Invalid source"),
        );
        check(
            &[("type", "disk"), ("source", "/srv"), ("path", "/proc/sys")],
            Err("under /proc or /sys"),
        );
        check(
            &[("type", "disk"), ("source", "/srv"), ("path", "/sys")],
            Err("under /proc or /sys"),
        );
        check(
            &[("type", "disk"), ("source", "/srv"), ("path", "/procfs")],
            ok,
        );
        check(
            &[("type", "disk"), ("source", "/srv"), ("path", "/mnt/../x")],
            Err("Invalid path"),
        );
        check(
            &[
                ("type", "disk"),
                ("source", "/srv"),
                ("path", "/mnt"),
                ("readonly", "maybe"),
            ],
            Err("not a boolean"),
        );
        check(
            &[
                ("type", "disk"),
                ("source", "/srv"),
                ("path", "/mnt"),
                ("propagation", "rshared"),
            ],
            Err("not supported"),
        );
        // Custom volumes: `pool` and a volume name as `source`.
        let volume = |extra: &[(&'static str, &'static str)]| {
            let mut d = vec![
                ("type", "disk"),
                ("pool", "default"),
                ("source", "data"),
                ("path", "/mnt"),
            ];
            d.extend_from_slice(extra);
            d
        };
        check(&volume(&[]), ok);
        check(&volume(&[("readonly", "true"), ("required", "false")]), ok);
        check(
            &[
                ("type", "disk"),
                ("source", "/srv"),
                ("path", "/mnt"),
                ("pool", "default"),
            ],
            Err("Invalid storage volume name \"/srv\""),
        );
        check(
            &volume(&[("shift", "true")]),
            Err("not supported by rxd for storage volume disks"),
        );
        check(
            &[("type", "disk"), ("pool", "default"), ("path", "/mnt")],
            Err("need a \"source\""),
        );
        check(
            &[
                ("type", "disk"),
                ("pool", "default"),
                ("source", "v/snap0"),
                ("path", "/mnt"),
            ],
            Err("Invalid storage volume name"),
        );
        check(
            &[
                ("type", "disk"),
                ("pool", "default"),
                ("source", "v"),
                ("path", "/"),
            ],
            Err("The root disk cannot have a \"source\""),
        );
        let mut two = devices(&[("a", &volume(&[])), ("b", &volume(&[]))]);
        two.get_mut("b")
            .unwrap()
            .insert("path".into(), "/mnt".into());
        assert!(validate(&two).is_err(), "two devices at one path");
        let disks = volume_disks(&devices(&[("v", &volume(&[("readonly", "yes")]))]));
        assert_eq!(disks.len(), 1);
        let m = disks[0].mount("/s/custom/data".into());
        assert!(m.volume && m.shift && m.nosuid && m.readonly && m.required && !m.recursive);
        assert_eq!(m.beneath.as_deref(), Some(Path::new("/s/custom/data")));
        check(
            &[
                ("type", "disk"),
                ("source", "/srv"),
                ("path", "/mnt"),
                ("raw.mount.options", "x"),
            ],
            Err("not supported by rxd"),
        );
        check(
            &[
                ("type", "disk"),
                ("source", "ceph:pool/vol"),
                ("path", "/mnt"),
            ],
            Err("Ceph"),
        );
        check(
            &[
                ("type", "disk"),
                ("source", "/srv"),
                ("path", "/mnt"),
                ("bogus", "1"),
            ],
            Err("Invalid device option \"bogus\""),
        );
        // Unix nodes.
        check(&[("type", "unix-char"), ("source", "/dev/fuse")], ok);
        check(
            &[
                ("type", "unix-char"),
                ("path", "/dev/x"),
                ("major", "10"),
                ("minor", "229"),
                ("mode", "0600"),
                ("uid", "1000"),
            ],
            ok,
        );
        check(
            &[
                ("type", "unix-block"),
                ("source", "/dev/loop0"),
                ("path", "/dev/xvda"),
            ],
            ok,
        );
        check(
            &[("type", "unix-char"), ("path", "/dev/x"), ("major", "10")],
            Err("both \"major\" and \"minor\""),
        );
        check(
            &[("type", "unix-char"), ("source", "/etc/passwd")],
            Err("under /dev"),
        );
        check(
            &[("type", "unix-char"), ("source", "/dev/../etc/shadow")],
            Err("under /dev"),
        );
        check(
            &[
                ("type", "unix-char"),
                ("source", "/dev/fuse"),
                ("mode", "4755"),
            ],
            Err("permission bits"),
        );
        check(
            &[
                ("type", "unix-char"),
                ("source", "/dev/fuse"),
                ("mode", "9"),
            ],
            Err("Invalid value for \"mode\""),
        );
        check(
            &[
                ("type", "unix-char"),
                ("source", "/dev/fuse"),
                ("path", "/proc/x"),
            ],
            Err("under /proc"),
        );
        check(
            &[
                ("type", "unix-char"),
                ("path", "/dev/x"),
                ("major", "5000"),
                ("minor", "1"),
            ],
            Err("out of range"),
        );
        check(
            &[
                ("type", "unix-char"),
                ("source", "/dev/fuse"),
                ("shift", "true"),
            ],
            Err("Invalid device option \"shift\""),
        );
        // NICs (stored; wired with networks).
        check(
            &[("type", "nic"), ("network", "rxdbr0"), ("name", "eth0")],
            ok,
        );
        check(
            &[("type", "nic"), ("nictype", "bridged"), ("parent", "br0")],
            ok,
        );
        check(&[("type", "nic"), ("nictype", "p2p")], ok);
        check(
            &[("type", "nic"), ("nictype", "physical"), ("parent", "eth1")],
            Err("not supported by rxd"),
        );
        check(
            &[("type", "nic"), ("network", "a"), ("parent", "b")],
            Err("together"),
        );
        check(&[("type", "nic")], Err("Missing nic type"));
        check(
            &[("type", "nic"), ("network", "a"), ("x", "y")],
            Err("Invalid device option \"x\""),
        );
    }

    #[test]
    fn sets_of_devices() {
        let root = [("type", "disk"), ("path", "/"), ("pool", "default")];
        assert_eq!(validate(&devices(&[("root", &root)])), Ok(()));
        assert_eq!(validate(&Devices::new()), Ok(()));
        let two = devices(&[("a", &root), ("b", &root)]);
        assert!(matches!(validate(&two), Err(DeviceError::TwoRoots(..))));
        assert!(matches!(
            validate(&devices(&[(".x", &[("type", "none")])])),
            Err(DeviceError::Name(_))
        ));
        let a = [("type", "disk"), ("source", "/srv/a"), ("path", "/mnt")];
        let b = [
            ("type", "unix-char"),
            ("source", "/dev/fuse"),
            ("path", "/mnt"),
        ];
        assert!(matches!(
            validate(&devices(&[("a", &a), ("b", &b)])),
            Err(DeviceError::SamePath { .. })
        ));
        let (disks, nodes) = mounts(&devices(&[
            ("a", &a),
            ("r", &root),
            ("f", &[("type", "unix-char"), ("source", "/dev/fuse")]),
        ]));
        assert_eq!(disks.len(), 1);
        assert!(disks[0].nosuid && disks[0].required && !disks[0].shift);
        assert_eq!(nodes[0].path, Path::new("/dev/fuse"));
        assert_eq!(nodes[0].mode, 0o660);
    }

    #[test]
    fn encoded_names_never_meet() {
        assert_eq!(encoded_name("a/b"), "a--b");
        assert_ne!(encoded_name("a/b"), encoded_name("a--b"));
        assert_ne!(encoded_name("a-/b"), encoded_name("a/-b"));
        assert!(!encoded_name("x/y/z").contains('/'));
    }
}
