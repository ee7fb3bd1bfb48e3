//! `GET /1.0`: the server's self-description, in its untrusted and trusted forms.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The untrusted view and the common part of the trusted one. Field order is LXD's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Only in the trusted view; `null` for trusted callers that are not admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    pub api_extensions: Vec<String>,
    pub api_status: String,
    pub api_version: String,
    pub auth: String,
    pub public: bool,
    pub auth_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageDriver {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Remote")]
    pub remote: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub addresses: Vec<String>,
    pub architectures: Vec<String>,
    pub certificate: String,
    pub certificate_fingerprint: String,
    pub driver: String,
    pub driver_version: String,
    pub firewall: String,
    pub kernel: String,
    pub kernel_architecture: String,
    pub kernel_features: BTreeMap<String, String>,
    pub kernel_version: String,
    pub lxc_features: BTreeMap<String, String>,
    pub os_name: String,
    pub os_version: String,
    pub project: String,
    pub server: String,
    pub server_clustered: bool,
    pub server_event_mode: String,
    pub server_name: String,
    pub server_pid: u32,
    pub server_version: String,
    pub storage: String,
    pub storage_version: String,
    pub storage_supported_drivers: Vec<StorageDriver>,
    /// rxd's own version; LXD clients ignore the key.
    #[serde(default)]
    pub rxd_version: String,
}

/// Body of `PUT /1.0` and `PATCH /1.0`. Unknown top-level fields are ignored, as LXD does; the
/// config keys themselves are validated strictly by the daemon's key registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerPut {
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub config: Map<String, Value>,
}
