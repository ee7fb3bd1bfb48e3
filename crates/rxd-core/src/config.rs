//! The server config key registry. Every key rxd accepts is listed here with how it is validated;
//! an unknown key or a bad value refuses the whole update, so nothing changes half-way.

use crate::address::ListenAddress;
use crate::expiry::parse_expiry;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use thiserror::Error;

/// Stored server config: key to stored value. Secrets are stored as their hash, never as given.
pub type StoredConfig = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `core.https_address`.
    ListenAddress,
    /// Write-only: stored hashed, read back as `true`.
    Secret,
    /// An LXD expiry string such as `1d 12H`.
    Expiry,
    /// `true` or `false`; unset means false.
    Bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub name: &'static str,
    pub kind: KeyKind,
}

pub const HTTPS_ADDRESS: &str = "core.https_address";
pub const TRUST_PASSWORD: &str = "core.trust_password";
pub const REMOTE_TOKEN_EXPIRY: &str = "core.remote_token_expiry";
pub const TRUST_CA_CERTIFICATES: &str = "core.trust_ca_certificates";

pub const KEYS: &[KeySpec] = &[
    KeySpec {
        name: HTTPS_ADDRESS,
        kind: KeyKind::ListenAddress,
    },
    KeySpec {
        name: TRUST_PASSWORD,
        kind: KeyKind::Secret,
    },
    KeySpec {
        name: REMOTE_TOKEN_EXPIRY,
        kind: KeyKind::Expiry,
    },
    KeySpec {
        name: TRUST_CA_CERTIFICATES,
        kind: KeyKind::Bool,
    },
];

pub fn spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.name == key)
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown configuration key: {0:?}")]
    UnknownKey(String),
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// PUT: keys absent from the body are reset.
    Replace,
    /// PATCH: only the keys in the body change.
    Merge,
}

/// What an update does to one key. A secret arrives in plain text and must be hashed by the caller
/// before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(String),
    SetSecret(String),
    Unset,
}

/// Validate a PUT or PATCH body against the registry and the current config, and return the
/// changes to make. Keys whose value does not change are left out.
pub fn plan_update(
    current: &StoredConfig,
    body: &Map<String, Value>,
    mode: UpdateMode,
) -> Result<BTreeMap<String, Change>, ConfigError> {
    let mut changes = BTreeMap::new();
    for (key, value) in body {
        let spec = spec(key).ok_or_else(|| ConfigError::UnknownKey(key.clone()))?;
        let invalid = |reason: String| ConfigError::Invalid {
            key: key.clone(),
            reason,
        };
        let change = match (spec.kind, value) {
            (_, Value::Null) => Change::Unset,
            // Reading a secret shows `true`; writing that back means "leave it as it is".
            (KeyKind::Secret, Value::Bool(true)) => continue,
            (KeyKind::Secret, Value::String(s)) if s.is_empty() => Change::Unset,
            (KeyKind::Secret, Value::String(s)) => Change::SetSecret(s.clone()),
            (KeyKind::Secret, _) => return Err(invalid("expected a string".into())),
            (kind, v) => {
                let text = match v {
                    Value::String(s) => s.trim().to_owned(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) if kind == KeyKind::Bool => b.to_string(),
                    _ => return Err(invalid("expected a string".into())),
                };
                if text.is_empty() {
                    Change::Unset
                } else {
                    validate_plain(kind, &text).map_err(invalid)?;
                    Change::Set(text)
                }
            }
        };
        let unchanged = match &change {
            Change::Unset => !current.contains_key(key),
            Change::Set(v) => current.get(key) == Some(v),
            Change::SetSecret(_) => false,
        };
        if !unchanged {
            changes.insert(key.clone(), change);
        }
    }
    if mode == UpdateMode::Replace {
        for key in current.keys() {
            if !body.contains_key(key) {
                changes.insert(key.clone(), Change::Unset);
            }
        }
    }
    Ok(changes)
}

fn validate_plain(kind: KeyKind, value: &str) -> Result<(), String> {
    match kind {
        KeyKind::ListenAddress => ListenAddress::parse(value)
            .map(drop)
            .map_err(|e| e.to_string()),
        KeyKind::Expiry => parse_expiry(value).map(drop).map_err(|e| e.to_string()),
        KeyKind::Bool => match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("expected true or false, not {value:?}")),
        },
        KeyKind::Secret => Ok(()),
    }
}

/// The config as GET shows it: secrets as `true`, everything else as stored. Keys at their
/// default (unset) are omitted, as LXD does.
pub fn public_view(stored: &StoredConfig) -> Map<String, Value> {
    stored
        .iter()
        .map(|(k, v)| {
            let shown = match spec(k).map(|s| s.kind) {
                Some(KeyKind::Secret) => Value::Bool(true),
                _ => Value::String(v.clone()),
            };
            (k.clone(), shown)
        })
        .collect()
}

/// A boolean key's value (unset is false).
pub fn flag(config: &StoredConfig, key: &str) -> bool {
    config.get(key).is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(pairs: &[(&str, &str)]) -> StoredConfig {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(
        current: &[(&str, &str)],
        body: Value,
        mode: UpdateMode,
        expected: Result<&[(&str, Change)], ()>,
    ) {
        let got = plan_update(&stored(current), body.as_object().unwrap(), mode);
        match (got, expected) {
            (Ok(got), Ok(exp)) => {
                let exp: BTreeMap<String, Change> = exp
                    .iter()
                    .map(|(k, c)| (k.to_string(), c.clone()))
                    .collect();
                assert_eq!(got, exp, "{body}");
            }
            (Err(_), Err(())) => {}
            (got, _) => panic!("{body}: unexpected {got:?}"),
        }
    }

    #[test]
    fn update_table() {
        use Change::*;
        use UpdateMode::*;
        let addr = "core.https_address";
        let pw = "core.trust_password";
        check(
            &[],
            json!({addr: "127.0.0.1:8443"}),
            Merge,
            Ok(&[(addr, Set("127.0.0.1:8443".into()))]),
        );
        check(
            &[],
            json!({addr: " 127.0.0.1 "}),
            Merge,
            Ok(&[(addr, Set("127.0.0.1".into()))]),
        );
        check(&[], json!({addr: "nope nope"}), Merge, Err(()));
        check(&[], json!({"core.unknown": "x"}), Merge, Err(()));
        check(&[], json!({addr: true}), Merge, Err(()));
        check(
            &[(addr, "a:1")],
            json!({addr: ""}),
            Merge,
            Ok(&[(addr, Unset)]),
        );
        check(
            &[(addr, "a:1")],
            json!({addr: null}),
            Merge,
            Ok(&[(addr, Unset)]),
        );
        check(&[(addr, "a:1")], json!({addr: "a:1"}), Merge, Ok(&[]));
        check(&[], json!({addr: ""}), Merge, Ok(&[]));
        check(
            &[],
            json!({pw: "s3cret"}),
            Merge,
            Ok(&[(pw, SetSecret("s3cret".into()))]),
        );
        check(&[(pw, "$argon2id$x")], json!({pw: true}), Replace, Ok(&[]));
        check(
            &[(pw, "$argon2id$x")],
            json!({pw: ""}),
            Merge,
            Ok(&[(pw, Unset)]),
        );
        check(&[(pw, "$argon2id$x")], json!({pw: false}), Merge, Err(()));
        check(&[(pw, "$argon2id$x")], json!({pw: 5}), Merge, Err(()));
        check(
            &[(pw, "$argon2id$x"), (addr, "a:1")],
            json!({}),
            Replace,
            Ok(&[(addr, Unset), (pw, Unset)]),
        );
        check(
            &[(pw, "$argon2id$x"), (addr, "a:1")],
            json!({}),
            Merge,
            Ok(&[]),
        );
        check(
            &[],
            json!({"core.remote_token_expiry": "1d 2H"}),
            Merge,
            Ok(&[("core.remote_token_expiry", Set("1d 2H".into()))]),
        );
        check(
            &[],
            json!({"core.remote_token_expiry": "soon"}),
            Merge,
            Err(()),
        );
        let ca = "core.trust_ca_certificates";
        check(
            &[],
            json!({ca: true}),
            Merge,
            Ok(&[(ca, Set("true".into()))]),
        );
        check(
            &[],
            json!({ca: "false"}),
            Merge,
            Ok(&[(ca, Set("false".into()))]),
        );
        check(&[], json!({ca: "yes"}), Merge, Err(()));
        check(&[], json!({ca: 1}), Merge, Err(()));
        // One bad key refuses the whole update.
        check(
            &[],
            json!({addr: "127.0.0.1", "core.nope": "1"}),
            Merge,
            Err(()),
        );
    }

    #[test]
    fn secrets_are_never_shown() {
        let v = public_view(&stored(&[
            ("core.trust_password", "$argon2id$v=19$..."),
            ("core.https_address", ":8443"),
        ]));
        assert_eq!(
            v,
            *json!({"core.https_address": ":8443", "core.trust_password": true})
                .as_object()
                .unwrap()
        );
    }
}
