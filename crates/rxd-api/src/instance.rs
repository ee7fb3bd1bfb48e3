//! `/1.0/instances`: the instance object (and its `recursion=2` form), creation, edits, renames,
//! and `/state` (its reading and the actions that change it).

pub use crate::shared::{Devices, InstancePostTarget};
use crate::snapshot::InstanceSnapshot;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

go_struct! {
    /// An instance as `GET /1.0/instances/<name>` and listings return it.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Instance {
        pub architecture: String,
        pub config: BTreeMap<String, String>,
        pub devices: Devices,
        pub ephemeral: bool,
        pub profiles: Vec<String>,
        /// Only in requests; LXD's `omitempty`.
        #[serde(skip_serializing_if = "String::is_empty")]
        pub restore: String,
        pub stateful: bool,
        pub description: String,
        /// RFC 3339.
        pub created_at: String,
        /// LXD has `omitempty` here; rxd always sends the map, empty or not.
        pub expanded_config: BTreeMap<String, String>,
        /// LXD has `omitempty` here; rxd always sends the map, empty or not.
        pub expanded_devices: Devices,
        pub name: String,
        pub status: String,
        pub status_code: u16,
        pub last_used_at: String,
        pub location: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub project: String,
        /// The rest is only in `recursion=2` answers (LXD's `InstanceFull`, extension
        /// `instance_get_full`). rxd keeps no backups: always empty then.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub backups: Option<Vec<Value>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub state: Option<InstanceState>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub snapshots: Option<Vec<InstanceSnapshot>>,
    }
}

go_struct! {
    /// Where a new instance comes from. rxd creates from local images only (`type: "image"`
    /// with an `alias` or a `fingerprint`); the other fields are LXD's and are decoded so a
    /// request naming them can be refused clearly.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceSource {
        #[serde(rename = "type")]
        pub kind: String,
        pub certificate: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub alias: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub fingerprint: String,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        pub properties: BTreeMap<String, String>,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub server: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub secret: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub protocol: String,
        #[serde(rename = "base-image", skip_serializing_if = "String::is_empty")]
        pub base_image: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub mode: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub operation: String,
        #[serde(rename = "secrets", skip_serializing_if = "BTreeMap::is_empty")]
        pub websockets: BTreeMap<String, String>,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub source: String,
        #[serde(skip_serializing_if = "crate::is_default")]
        pub live: bool,
        #[serde(skip_serializing_if = "crate::is_default")]
        pub instance_only: bool,
        #[serde(skip_serializing_if = "crate::is_default")]
        pub container_only: bool,
        #[serde(skip_serializing_if = "crate::is_default")]
        pub refresh: bool,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub project: String,
        pub allow_inconsistent: bool,
    }
}

go_struct! {
    /// `POST /1.0/instances`: LXD's `InstancesPost` (its `InstancePut` fields inline).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstancesPost {
        pub architecture: String,
        pub config: BTreeMap<String, String>,
        pub devices: Devices,
        pub ephemeral: bool,
        /// Absent or `null`: the image's profiles (`default`); `[]`: none (LXD's
        /// `--no-profiles`).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub profiles: Option<Vec<String>>,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub restore: String,
        pub stateful: bool,
        pub description: String,
        pub name: String,
        pub source: InstanceSource,
        pub instance_type: String,
        /// `container` or `virtual-machine`; empty means any.
        #[serde(rename = "type")]
        pub kind: String,
    }
}

go_struct! {
    /// `PUT /1.0/instances/<name>`, and `PATCH` (where an absent field keeps its value, so
    /// every field is optional; for PUT, absent is LXD's zero value). `restore` names a
    /// snapshot to restore instead of an edit.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstancePut {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub architecture: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub config: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub devices: Option<Devices>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub ephemeral: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub profiles: Option<Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub restore: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub stateful: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub description: Option<String>,
    }
}

impl InstancePut {
    /// The writable part of an instance, as `lxc config edit` sends it back.
    pub fn from_instance(i: &Instance) -> InstancePut {
        InstancePut {
            architecture: Some(i.architecture.clone()),
            config: Some(i.config.clone()),
            devices: Some(i.devices.clone()),
            ephemeral: Some(i.ephemeral),
            profiles: Some(i.profiles.clone()),
            restore: None,
            stateful: Some(i.stateful),
            description: Some(i.description.clone()),
        }
    }
}

go_struct! {
    /// `POST /1.0/instances/<name>`: rename (rxd does not migrate). The zero-valued fields
    /// rxd does not act on are left out when serializing, so rxc's bodies stay minimal.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstancePost {
        pub name: String,
        pub migration: bool,
        pub live: bool,
        #[serde(skip_serializing_if = "crate::is_default")]
        pub instance_only: bool,
        #[serde(skip_serializing_if = "crate::is_default")]
        pub container_only: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub target: Option<InstancePostTarget>,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub pool: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub project: String,
        #[serde(skip_serializing_if = "crate::is_default")]
        pub allow_inconsistent: bool,
    }
}

/// `PUT /1.0/instances/<name>/state`. `timeout` is seconds, negative for "no limit" and `0`
/// for "at once" (a stop then kills). LXD's clients always send it (`-1` when not asked for);
/// rxd reads a missing or `null` one as `-1`, not Go's zero, so a bare `{"action":"stop"}`
/// stops cleanly instead of killing. The other fields decode as Go's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatePut {
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub action: String,
    #[serde(default = "no_timeout", deserialize_with = "null_as_no_timeout")]
    pub timeout: i64,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub force: bool,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub stateful: bool,
}

impl Default for InstanceStatePut {
    fn default() -> Self {
        InstanceStatePut {
            action: String::new(),
            timeout: no_timeout(),
            force: false,
            stateful: false,
        }
    }
}

fn no_timeout() -> i64 {
    -1
}

fn null_as_no_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or_else(no_timeout))
}

go_struct! {
    /// `GET /1.0/instances/<name>/state`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceState {
        pub status: String,
        pub status_code: u16,
        pub disk: BTreeMap<String, InstanceStateDisk>,
        pub memory: InstanceStateMemory,
        /// rxd sends `null` (it reports no interfaces yet), as Go does for a nil map.
        pub network: Option<BTreeMap<String, InstanceStateNetwork>>,
        pub pid: i64,
        pub processes: i64,
        pub cpu: InstanceStateCpu,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceStateDisk {
        pub usage: i64,
    }
}

go_struct! {
    /// CPU time used, in nanoseconds.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceStateCpu {
        pub usage: i64,
    }
}

go_struct! {
    /// Bytes.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceStateMemory {
        pub usage: i64,
        pub usage_peak: i64,
        pub swap_usage: i64,
        pub swap_usage_peak: i64,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceStateNetwork {
        pub addresses: Vec<InstanceStateNetworkAddress>,
        pub counters: InstanceStateNetworkCounters,
        pub hwaddr: String,
        pub host_name: String,
        pub mtu: i64,
        pub state: String,
        #[serde(rename = "type")]
        pub kind: String,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceStateNetworkAddress {
        pub family: String,
        pub address: String,
        pub netmask: String,
        pub scope: String,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceStateNetworkCounters {
        pub bytes_received: i64,
        pub bytes_sent: i64,
        pub packets_received: i64,
        pub packets_sent: i64,
        pub errors_received: i64,
        pub errors_sent: i64,
        pub packets_dropped_outbound: i64,
        pub packets_dropped_inbound: i64,
    }
}

go_struct! {
    /// `POST /1.0/instances/<name>/exec`. `user`, `group` and `cwd` are extension
    /// `container_exec_user_group_cwd` (0 and empty: the container's root and its default).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceExecPost {
        pub command: Vec<String>,
        #[serde(rename = "wait-for-websocket")]
        pub wait_for_websocket: bool,
        pub interactive: bool,
        pub environment: BTreeMap<String, String>,
        pub width: i64,
        pub height: i64,
        #[serde(rename = "record-output")]
        pub record_output: bool,
        pub user: u32,
        pub group: u32,
        pub cwd: String,
    }
}

go_struct! {
    /// A text message on an exec's (or console's) `control` websocket: `window-resize` with
    /// `args` `width` and `height` (as strings), or `signal` with `signal`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceExecControl {
        pub command: String,
        pub args: BTreeMap<String, String>,
        pub signal: i64,
    }
}

go_struct! {
    /// An exec operation's metadata: the command and whether it has a terminal; `fds`
    /// (channel → secret) in the reply that created a websocket exec, and only there; `return`
    /// (the exit code) and `output` (the recorded output's log URLs, by fd) once it is done.
    /// LXD also puts the `environment` here; rxd leaves it out, as it may carry secrets.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceExecMetadata {
        pub command: Vec<String>,
        pub interactive: bool,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        pub fds: BTreeMap<String, String>,
        #[serde(rename = "return", skip_serializing_if = "Option::is_none")]
        pub return_code: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub output: Option<BTreeMap<String, String>>,
    }
}

go_struct! {
    /// `POST /1.0/instances/<name>/console`; `type` is `console` (rxd has no `vga`).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceConsolePost {
        pub width: i64,
        pub height: i64,
        #[serde(rename = "type")]
        pub kind: String,
    }
}
