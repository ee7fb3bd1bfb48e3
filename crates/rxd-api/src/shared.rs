//! Pieces that instances and their snapshots both use. A leaf module, so that `instance` may
//! hold snapshots (`recursion=2`) while `snapshot` uses these without importing `instance`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Devices as LXD writes them: device name → its settings.
pub type Devices = BTreeMap<String, BTreeMap<String, String>>;

go_struct! {
    /// Where a migration goes (`InstancePostTarget`); rxd does not migrate, but decodes it.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstancePostTarget {
        pub certificate: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub operation: String,
        #[serde(rename = "secrets", skip_serializing_if = "BTreeMap::is_empty")]
        pub websockets: BTreeMap<String, String>,
    }
}
