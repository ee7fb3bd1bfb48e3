//! `/1.0/warnings`: conditions the daemon wants an administrator to act on.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub status: String,
    pub uuid: String,
    pub location: String,
    pub project: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub count: u64,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub last_message: String,
    pub severity: String,
    pub entity_url: String,
}

/// `PUT /1.0/warnings/<uuid>`: only the status can be changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarningPut {
    pub status: String,
}
