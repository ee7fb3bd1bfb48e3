//! `/1.0/events`: the messages of the events websocket, and the metadata of each type.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

go_struct! {
    /// One message: `type` is `lifecycle` ([`EventLifecycle`]), `operation`
    /// ([`crate::operation::Operation`]) or `logging` ([`EventLogging`]).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Event {
        #[serde(rename = "type")]
        pub kind: String,
        pub timestamp: String,
        pub metadata: Value,
        /// LXD has `omitempty` here; rxd always sends it (`none`).
        pub location: String,
        /// LXD has `omitempty` here; rxd always sends it (empty for server-level events).
        pub project: String,
    }
}

go_struct! {
    /// A lifecycle event: `action` (`instance-started`...) happened to `source` (a URL).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct EventLifecycle {
        pub action: String,
        pub source: String,
        /// LXD has `omitempty` here; rxd always sends the map.
        pub context: Map<String, Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub requestor: Option<EventLifecycleRequestor>,
    }
}

go_struct! {
    /// Who caused a lifecycle event.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct EventLifecycleRequestor {
        pub username: String,
        pub protocol: String,
        pub address: String,
    }
}

go_struct! {
    /// A log record; rxd sends its security events this way.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct EventLogging {
        pub message: String,
        pub level: String,
        pub context: BTreeMap<String, String>,
    }
}
