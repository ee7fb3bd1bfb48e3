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
    /// An `http://` or `https://` base URL (`candid.api.url`).
    Url,
    /// A curve25519 public key, base64 of 32 bytes (`candid.api.key`).
    PublicKey,
    /// A whole number of seconds, at least 1.
    Seconds,
    /// Comma-separated domain names.
    DomainList,
    /// A Candid user name (`candid.agent.username`).
    UserName,
    /// A curve25519 private key, base64 of 32 bytes: kept as given (it must be usable), read
    /// back as `true` like a secret.
    PrivateKey,
    /// A size in bytes with LXD's units (`4GiB`, `500MB`), at least 1 MiB.
    Bytes,
    /// Comma-separated `https://` base URLs.
    HttpsUrlList,
    /// A whole number (negative allowed where the key gives it a meaning).
    Integer,
    /// How published images are compressed: `none`, `gzip`, `xz` or `zstd` (LXD ran any program
    /// named here).
    Compression,
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
pub const CANDID_URL: &str = "candid.api.url";
pub const CANDID_KEY: &str = "candid.api.key";
pub const CANDID_EXPIRY: &str = "candid.expiry";
pub const CANDID_DOMAINS: &str = "candid.domains";
/// rxd's own: the agent identity the daemon logs in to Candid as, to read users' groups.
pub const CANDID_AGENT_USERNAME: &str = "candid.agent.username";
pub const CANDID_AGENT_KEY: &str = "candid.agent.private_key";
/// rxd's own: how many bytes an image may unpack to, on import and on every instance create
/// (a compressed tarball can expand a thousandfold).
pub const IMAGES_MAX_UNPACKED: &str = "images.max_unpacked_size";
/// rxd's own: the image servers users who are not server administrators may pull images from
/// (comma-separated https URLs; empty, the default: none). Administrators may name any https
/// server. A URL in a request body is never fetched unless one of these rules allows it.
pub const IMAGES_ALLOWED_SERVERS: &str = "images.allowed_servers";
/// LXD's: images pulled for instances are kept up to date (default true).
pub const IMAGES_AUTO_UPDATE_CACHED: &str = "images.auto_update_cached";
/// LXD's: hours between checks for newer versions of images kept up to date (default 6; 0: off).
pub const IMAGES_AUTO_UPDATE_INTERVAL: &str = "images.auto_update_interval";
/// LXD's: days a cached image may go unused before it is removed (default 10; ≤ 0: never).
pub const IMAGES_REMOTE_CACHE_EXPIRY: &str = "images.remote_cache_expiry";
/// LXD's: how `publish` compresses images (default gzip); rxd knows `none`, `gzip`, `xz`, `zstd`.
pub const IMAGES_COMPRESSION: &str = "images.compression_algorithm";
/// The compressions `images.compression_algorithm` may name.
pub const COMPRESSIONS: &[&str] = &["none", "gzip", "xz", "zstd"];
/// `images.max_unpacked_size` when unset: enough for distribution images, small enough that
/// one upload cannot fill a host's disk.
pub const IMAGES_MAX_UNPACKED_DEFAULT: u64 = 4 << 30;
/// `candid.expiry` when unset, in seconds (LXD's default).
pub const CANDID_DEFAULT_EXPIRY: u64 = 3600;

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
    KeySpec {
        name: CANDID_URL,
        kind: KeyKind::Url,
    },
    KeySpec {
        name: CANDID_KEY,
        kind: KeyKind::PublicKey,
    },
    KeySpec {
        name: CANDID_EXPIRY,
        kind: KeyKind::Seconds,
    },
    KeySpec {
        name: CANDID_DOMAINS,
        kind: KeyKind::DomainList,
    },
    KeySpec {
        name: CANDID_AGENT_USERNAME,
        kind: KeyKind::UserName,
    },
    KeySpec {
        name: CANDID_AGENT_KEY,
        kind: KeyKind::PrivateKey,
    },
    KeySpec {
        name: IMAGES_MAX_UNPACKED,
        kind: KeyKind::Bytes,
    },
    KeySpec {
        name: IMAGES_ALLOWED_SERVERS,
        kind: KeyKind::HttpsUrlList,
    },
    KeySpec {
        name: IMAGES_AUTO_UPDATE_CACHED,
        kind: KeyKind::Bool,
    },
    KeySpec {
        name: IMAGES_REMOTE_CACHE_EXPIRY,
        kind: KeyKind::Integer,
    },
    KeySpec {
        name: IMAGES_AUTO_UPDATE_INTERVAL,
        kind: KeyKind::Integer,
    },
    KeySpec {
        name: IMAGES_COMPRESSION,
        kind: KeyKind::Compression,
    },
];

/// An integer key's value, or `default` when unset (or, impossibly once validated, not one).
pub fn integer(config: &StoredConfig, key: &str, default: i64) -> i64 {
    config
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An image server's URL as `images.allowed_servers` compares it: scheme and host lowercased,
/// the default port dropped, no trailing slash.
pub fn normalize_server(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let Some(rest) = url
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("https://"))
        .map(|_| &url[8..])
    else {
        return url.to_owned();
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix(":443").unwrap_or(&host);
    format!("https://{host}{path}")
}

/// Whether `server` is one of `images.allowed_servers`.
pub fn server_allowed(config: &StoredConfig, server: &str) -> bool {
    let wanted = normalize_server(server);
    config.get(IMAGES_ALLOWED_SERVERS).is_some_and(|list| {
        list.split(',')
            .any(|s| !s.trim().is_empty() && normalize_server(s) == wanted)
    })
}

pub fn spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.name == key)
}

/// Is `key`'s value a secret (never shown, never logged)? Unknown keys count as secret, so a
/// key added without a registry entry is not leaked by accident.
pub fn is_secret(key: &str) -> bool {
    spec(key).is_none_or(|s| matches!(s.kind, KeyKind::Secret | KeyKind::PrivateKey))
}

/// The unpack bound for images: `images.max_unpacked_size`, or its default.
pub fn max_unpacked_size(config: &StoredConfig) -> u64 {
    config
        .get(IMAGES_MAX_UNPACKED)
        .and_then(|v| crate::instance_config::parse_bytes(v))
        .unwrap_or(IMAGES_MAX_UNPACKED_DEFAULT)
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
            (KeyKind::Secret | KeyKind::PrivateKey, Value::Bool(true)) => continue,
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
        KeyKind::Compression => {
            if COMPRESSIONS.contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "expected one of {}, not {value:?}",
                    COMPRESSIONS.join(", ")
                ))
            }
        }
        KeyKind::Secret => Ok(()),
        KeyKind::Url => check_url(value),
        KeyKind::PublicKey | KeyKind::PrivateKey => check_public_key(value),
        KeyKind::UserName => (value.len() <= 256
            && !value.chars().any(|c| c.is_control() || c.is_whitespace()))
        .then_some(())
        .ok_or_else(|| format!("not a user name: {value:?}")),
        KeyKind::Bytes => match crate::instance_config::parse_bytes(value) {
            Some(n) if n >= 1 << 20 => Ok(()),
            Some(_) => Err("at least 1MiB".into()),
            None => Err(format!("expected a size like 4GiB or 500MB, not {value:?}")),
        },
        KeyKind::Seconds => match value.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(()),
            _ => Err(format!("expected a whole number of seconds, not {value:?}")),
        },
        KeyKind::Integer => value
            .parse::<i64>()
            .map(drop)
            .map_err(|_| format!("expected a whole number, not {value:?}")),
        KeyKind::HttpsUrlList => value
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .try_for_each(|u| {
                if u.len() >= 8 && u[..8].eq_ignore_ascii_case("https://") {
                    check_url(u)
                } else {
                    Err(format!("image servers must be https URLs, not {u:?}"))
                }
            }),
        KeyKind::DomainList => domain_list(value)
            .all(|d| {
                !d.is_empty()
                    && d.len() <= 253
                    && d.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            })
            .then_some(())
            .ok_or_else(|| format!("expected comma-separated domain names, not {value:?}")),
    }
}

fn check_url(value: &str) -> Result<(), String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| format!("expected an http:// or https:// URL, not {value:?}"))?;
    let host = rest.split('/').next().unwrap_or_default();
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-._~:/%[]".contains(c);
    if host.is_empty() || !rest.chars().all(ok_char) || rest.contains("..") {
        return Err(format!("not a usable URL: {value:?}"));
    }
    Ok(())
}

fn check_public_key(value: &str) -> Result<(), String> {
    let bad = || "expected base64 of a 32-byte key".to_owned();
    let body = value.trim_end_matches('=');
    if body.len() != 43
        || !body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/-_".contains(c))
    {
        return Err(bad());
    }
    Ok(())
}

/// The entries of a comma-separated list, trimmed.
pub fn domain_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim)
}

/// Rules between keys, checked on the config an update would produce, before anything is
/// stored. A plain-HTTP authentication server is only acceptable with its public key pinned
/// (otherwise anyone on the path could answer for it); set the key first.
pub fn check_whole(config: &StoredConfig) -> Result<(), ConfigError> {
    match config.get(CANDID_URL) {
        Some(url) if url.starts_with("http://") && !config.contains_key(CANDID_KEY) => {
            return Err(ConfigError::Invalid {
                key: CANDID_URL.into(),
                reason: format!("a plain http URL needs {CANDID_KEY} (set it first)"),
            });
        }
        _ => {}
    }
    if config.contains_key(CANDID_AGENT_USERNAME) != config.contains_key(CANDID_AGENT_KEY) {
        return Err(ConfigError::Invalid {
            key: CANDID_AGENT_USERNAME.into(),
            reason: format!("{CANDID_AGENT_USERNAME} and {CANDID_AGENT_KEY} go together"),
        });
    }
    Ok(())
}

/// The config as GET shows it: secrets as `true`, everything else as stored. Keys at their
/// default (unset) are omitted, as LXD does.
pub fn public_view(stored: &StoredConfig) -> Map<String, Value> {
    stored
        .iter()
        .map(|(k, v)| {
            let shown = match spec(k).map(|s| s.kind) {
                Some(KeyKind::Secret | KeyKind::PrivateKey) => Value::Bool(true),
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
    #[test]
    fn image_servers_are_compared_normalised() {
        let mut config = StoredConfig::new();
        assert!(!server_allowed(&config, "https://images.example"));
        config.insert(
            IMAGES_ALLOWED_SERVERS.into(),
            "https://Images.Example:443/, https://other.example:8443/streams".into(),
        );
        for yes in [
            "https://images.example",
            "HTTPS://images.example/",
            "https://other.example:8443/streams/",
        ] {
            assert!(server_allowed(&config, yes), "{yes}");
        }
        for no in [
            "https://images.example:8443",
            "http://images.example",
            "https://other.example:8443",
            "https://images.example.evil",
            "",
        ] {
            assert!(!server_allowed(&config, no), "{no}");
        }
        assert!(validate_plain(KeyKind::HttpsUrlList, "http://x").is_err());
        assert!(validate_plain(KeyKind::HttpsUrlList, "https://a, https://b:1/p").is_ok());
    }

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
        let (url, key, exp, dom) = (CANDID_URL, CANDID_KEY, CANDID_EXPIRY, CANDID_DOMAINS);
        let k32 = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
        for (k, v, ok) in [
            (url, "https://candid.example", true),
            (url, "http://127.0.0.1:8081/auth", true),
            (url, "ftp://x", false),
            (url, "https://", false),
            (url, "https://a b", false),
            (url, "https://x/../y", false),
            (key, k32, true),
            (key, k32.trim_end_matches('='), true),
            (key, "AAAA", false),
            (key, "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA!", false),
            (exp, "2", true),
            (exp, "0", false),
            (exp, "-1", false),
            (exp, "1h", false),
            (dom, "example.com, staff.example.com", true),
            (dom, "a,,b", false),
            (dom, "bad domain", false),
        ] {
            let r = plan_update(&stored(&[]), json!({k: v}).as_object().unwrap(), Merge);
            assert_eq!(r.is_ok(), ok, "{k}={v}");
        }
        let whole = |pairs: &[(&str, &str)]| check_whole(&stored(pairs)).is_ok();
        assert!(whole(&[(url, "https://c")]));
        assert!(!whole(&[(url, "http://c")]));
        assert!(whole(&[(url, "http://c"), (key, k32)]));
        assert!(whole(&[(key, k32)]));
        assert!(whole(&[(exp, "5")]));
        assert!(!whole(&[(url, "http://c"), (exp, "5")]));
        let (au, ak) = (CANDID_AGENT_USERNAME, CANDID_AGENT_KEY);
        assert!(!whole(&[(url, "https://c"), (au, "bot")]));
        assert!(!whole(&[(url, "https://c"), (ak, k32)]));
        assert!(whole(&[(url, "https://c"), (au, "bot"), (ak, k32)]));
        let shown = public_view(&stored(&[(ak, k32), (au, "bot")]));
        assert_eq!(shown[ak], json!(true), "the private key is never shown");
        assert_eq!(shown[au], json!("bot"));
        check(&[(ak, k32)], json!({ak: true}), Replace, Ok(&[]));
        assert!(whole(&[]));
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
        let max = IMAGES_MAX_UNPACKED;
        check(
            &[],
            json!({max: "2GiB"}),
            Merge,
            Ok(&[(max, Set("2GiB".into()))]),
        );
        check(&[], json!({max: "12"}), Merge, Err(()));
        check(&[], json!({max: "lots"}), Merge, Err(()));
        assert_eq!(max_unpacked_size(&stored(&[(max, "2GiB")])), 2 << 30);
        assert_eq!(max_unpacked_size(&stored(&[])), IMAGES_MAX_UNPACKED_DEFAULT);
        assert!(is_secret(pw) && is_secret(CANDID_AGENT_KEY) && is_secret("core.nope"));
        assert!(!is_secret(addr) && !is_secret(max));
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
