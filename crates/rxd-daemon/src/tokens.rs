//! Certificate add tokens: issuing them, their operation objects, and recognising one in a POST.
//! Only SHA-256 of a token's secret is stored; the secret itself is shown once, in the reply to
//! the admin who asked for it, because LXD's client builds the token from that reply.

use rxd_store::TokenRow;
use serde_json::{json, Value};

/// Tokens expire after this when `core.remote_token_expiry` is unset (LXD: never).
pub const DEFAULT_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The token operation as LXD shapes it. `secret` is `Some` only in the reply that issues it;
/// listings carry an empty secret so LXD's `list-tokens` still parses them.
pub fn operation(
    token: &TokenRow,
    server_fingerprint: &str,
    addresses: &[String],
    secret: Option<&str>,
) -> Value {
    json!({
        "id": token.id,
        "class": "token",
        "description": "Executing operation",
        "created_at": rfc3339(token.created_at),
        "updated_at": rfc3339(token.created_at),
        "status": "Running",
        "status_code": 103,
        "resources": null,
        "metadata": {
            "addresses": addresses,
            "fingerprint": server_fingerprint,
            "request": {
                "name": token.name,
                "type": "client",
                "restricted": token.restricted,
                "projects": token.projects,
                "certificate": "",
                "password": "",
                "token": true,
            },
            "secret": secret.unwrap_or(""),
            "expiresAt": rfc3339(token.expires_at),
        },
        "may_cancel": true,
        "err": "",
        "location": "none",
    })
}

pub fn operation_url(id: &str) -> String {
    format!("/1.0/operations/{id}")
}
