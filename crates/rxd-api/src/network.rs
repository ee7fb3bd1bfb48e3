//! `/1.0/networks`: the network object, creation, edits, renames, its state and its leases.
//! Field order is LXD 5.0's (`NetworkPut`'s fields, then the read-only ones).

use crate::instance::InstanceStateNetworkAddress;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

go_struct! {
    /// A network as `GET /1.0/networks/<name>` and listings return it: managed bridges, and host
    /// interfaces (`managed: false`) for server administrators.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Network {
        pub config: BTreeMap<String, String>,
        pub description: String,
        pub name: String,
        #[serde(rename = "type")]
        pub kind: String,
        /// The profiles and instances using it (URLs), those the caller may see.
        pub used_by: Vec<String>,
        pub managed: bool,
        /// `Created`, `Errored`, or empty for host interfaces.
        pub status: String,
        pub locations: Vec<String>,
    }
}

go_struct! {
    /// `POST /1.0/networks`. An empty `type` is `bridge`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct NetworksPost {
        pub config: BTreeMap<String, String>,
        pub description: String,
        pub name: String,
        #[serde(rename = "type")]
        pub kind: String,
    }
}

go_struct! {
    /// `PUT /1.0/networks/<name>`, and `PATCH` (an absent field keeps its value). Bodies from
    /// pylxd and `lxc network edit` may carry the read-only fields too: ignored.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct NetworkPut {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub config: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub description: Option<String>,
    }
}

impl NetworkPut {
    /// The writable part of a network, as `lxc network edit` sends it back.
    pub fn from_network(n: &Network) -> NetworkPut {
        NetworkPut {
            config: Some(n.config.clone()),
            description: Some(n.description.clone()),
        }
    }
}

go_struct! {
    /// `POST /1.0/networks/<name>`: rename.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct NetworkPost {
        pub name: String,
    }
}

go_struct! {
    /// One entry of `GET /1.0/networks/<name>/leases`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct NetworkLease {
        pub hostname: String,
        pub hwaddr: String,
        pub address: String,
        /// `gateway`, `static` or `dynamic`.
        #[serde(rename = "type")]
        pub kind: String,
        pub location: String,
    }
}

go_struct! {
    /// `GET /1.0/networks/<name>/state`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct NetworkState {
        pub addresses: Vec<InstanceStateNetworkAddress>,
        pub counters: NetworkStateCounters,
        pub hwaddr: String,
        pub mtu: i64,
        pub state: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub bond: Option<serde_json::Value>,
        pub bridge: Option<NetworkStateBridge>,
        pub vlan: Option<serde_json::Value>,
        pub ovn: Option<serde_json::Value>,
    }
}

go_struct! {
    /// The `bridge` part of a bridge's state.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct NetworkStateBridge {
        pub id: String,
        pub stp: bool,
        pub forward_delay: u64,
        pub vlan_default: u64,
        pub vlan_filtering: bool,
        pub upper_devices: Vec<String>,
    }
}

go_struct! {
    /// A network's traffic counters (LXD 5.0 reports four, fewer than an instance's).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct NetworkStateCounters {
        pub bytes_received: i64,
        pub bytes_sent: i64,
        pub packets_received: i64,
        pub packets_sent: i64,
    }
}
