//! Certificate add tokens: issuing them, their operation objects, and recognising one in a POST.
//! Only SHA-256 of a token's secret is stored; the secret itself is shown once, in the reply to
//! the admin who asked for it, because LXD's client builds the token from that reply.

use rxd_api::certificate::CertificatesPost;
use rxd_api::operation::{Operation, TokenMetadata, CLASS_TOKEN};
use rxd_api::StatusCode;
use rxd_store::TokenRow;
use serde_json::Value;

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
    let metadata = TokenMetadata {
        addresses: addresses.to_vec(),
        fingerprint: server_fingerprint.to_owned(),
        request: CertificatesPost {
            name: token.name.clone(),
            kind: "client".into(),
            restricted: token.restricted,
            projects: token.projects.clone(),
            certificate: String::new(),
            password: String::new(),
            token: true,
        },
        secret: secret.unwrap_or_default().to_owned(),
        expires_at: rfc3339(token.expires_at),
    };
    let op = Operation {
        id: token.id.clone(),
        class: CLASS_TOKEN.into(),
        description: "Executing operation".into(),
        created_at: rfc3339(token.created_at),
        updated_at: rfc3339(token.created_at),
        status: StatusCode::Running.text().into(),
        status_code: StatusCode::Running.code(),
        resources: None,
        metadata: serde_json::to_value(metadata).unwrap_or(Value::Null),
        may_cancel: true,
        err: String::new(),
        location: "none".into(),
    };
    // Strings, booleans and lists of strings: serializing cannot fail.
    serde_json::to_value(op).unwrap_or(Value::Null)
}

pub fn operation_url(id: &str) -> String {
    format!("/1.0/operations/{id}")
}
