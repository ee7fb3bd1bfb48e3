//! `/1.0/operations`: background work (tasks, websocket sessions, certificate add tokens).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The classes of operation LXD has.
pub const CLASS_TASK: &str = "task";
pub const CLASS_WEBSOCKET: &str = "websocket";
pub const CLASS_TOKEN: &str = "token";

go_struct! {
    /// An operation, as `GET /1.0/operations/<id>` returns it and an async reply carries it.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Operation {
        pub id: String,
        pub class: String,
        pub description: String,
        pub created_at: String,
        pub updated_at: String,
        pub status: String,
        pub status_code: u16,
        /// Kind (`instances`, `images`...) → URLs; `null` for tokens.
        pub resources: Option<BTreeMap<String, Vec<String>>>,
        /// Depends on the operation: [`crate::instance::InstanceExecMetadata`] for an exec,
        /// [`crate::image::ImageUploadMetadata`] for an upload, [`TokenMetadata`] for a token.
        pub metadata: Value,
        pub may_cancel: bool,
        pub err: String,
        /// `none` when not clustered.
        pub location: String,
    }
}

impl Operation {
    pub fn url(&self) -> String {
        format!("/1.0/operations/{}", self.id)
    }
}

go_struct! {
    /// A certificate add token's metadata: what a client needs to build the token
    /// (`secret` only in the reply that issued it). `expiresAt` is spelled as LXD spells it.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct TokenMetadata {
        pub addresses: Vec<String>,
        pub fingerprint: String,
        pub request: crate::certificate::CertificatesPost,
        pub secret: String,
        #[serde(rename = "expiresAt")]
        pub expires_at: String,
    }
}
