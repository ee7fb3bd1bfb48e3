//! `/1.0/auth/grants` (rxd's extension `rxd_auth_grants`): a role given to an identity on a
//! project, on every project, or on the server. LXD 5.0 has no such endpoint.

use serde::{Deserialize, Serialize};

go_struct! {
    /// A grant as `GET /1.0/auth/grants/<id>` returns it. `identity_type` is `certificate`
    /// (the identity is a full fingerprint), `candid-user` or `candid-group`; `scope` is
    /// `project` (then `project` names it), `all-projects` or `server`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Grant {
        pub id: i64,
        pub identity_type: String,
        pub identity: String,
        pub role: String,
        pub scope: String,
        pub project: String,
    }
}

go_struct! {
    /// `POST /1.0/auth/grants`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct GrantsPost {
        pub identity_type: String,
        pub identity: String,
        pub role: String,
        pub scope: String,
        pub project: String,
    }
}
