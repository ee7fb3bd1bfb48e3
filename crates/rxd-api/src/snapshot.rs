//! `/1.0/instances/<name>/snapshots`: the snapshot object, taking, renaming and changing one.

use crate::shared::{Devices, InstancePostTarget};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

go_struct! {
    /// A snapshot as `GET .../snapshots/<snap>` returns it. `expires_at` is
    /// `0001-01-01T00:00:00Z` (Go's zero time) when it never expires; `size` is `-1` when
    /// unknown.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceSnapshot {
        pub expires_at: String,
        pub architecture: String,
        pub config: BTreeMap<String, String>,
        pub created_at: String,
        pub devices: Devices,
        pub ephemeral: bool,
        /// LXD has `omitempty` here; rxd always sends the map.
        pub expanded_config: BTreeMap<String, String>,
        /// LXD has `omitempty` here; rxd always sends the map.
        pub expanded_devices: Devices,
        pub last_used_at: String,
        pub name: String,
        pub profiles: Vec<String>,
        pub stateful: bool,
        pub size: i64,
        /// rxd only: LXD 5.0's snapshot has no description (later LXD has one).
        pub description: String,
    }
}

go_struct! {
    /// `POST /1.0/instances/<name>/snapshots`. An empty `name` takes the next free `snapN`;
    /// `expires_at` is RFC 3339, `null` for never.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceSnapshotsPost {
        pub name: String,
        pub stateful: bool,
        pub expires_at: Option<String>,
    }
}

go_struct! {
    /// `POST /1.0/instances/<name>/snapshots/<snap>`: rename (rxd does not migrate).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceSnapshotPost {
        pub name: String,
        pub migration: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub target: Option<InstancePostTarget>,
        #[serde(skip_serializing_if = "crate::is_default")]
        pub live: bool,
    }
}

go_struct! {
    /// `PUT`/`PATCH /1.0/instances/<name>/snapshots/<snap>`: only the expiry can change
    /// (rxd does not serve it yet).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceSnapshotPut {
        pub expires_at: String,
    }
}
