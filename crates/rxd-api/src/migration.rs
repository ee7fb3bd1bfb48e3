//! Where a migration goes, as instance and snapshot moves name it. rxd does not migrate; it
//! decodes the field so the requests that carry it are understood.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
