//! The cookie jar of a Candid remote (`$RXC_CONF/jars/<remote>`, mode 0600): a JSON list of
//! cookies with `lxc`'s field names, holding the `macaroon-*` login cookies. Expired cookies are
//! neither sent nor kept.

use super::CandidError;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Only these cookies are ours to send: the login macaroons.
const PREFIX: &str = "macaroon-";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cookie {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Value")]
    pub value: String,
    /// The host the cookie was set by (host-only: no subdomains).
    #[serde(rename = "Domain", default)]
    pub domain: String,
    #[serde(rename = "Path", default)]
    pub path: String,
    #[serde(rename = "Secure", default)]
    pub secure: bool,
    #[serde(rename = "HttpOnly", default)]
    pub http_only: bool,
    #[serde(rename = "Persistent", default)]
    pub persistent: bool,
    #[serde(rename = "HostOnly", default)]
    pub host_only: bool,
    /// RFC 3339; a cookie without it never expires.
    #[serde(rename = "Expires", default, skip_serializing_if = "String::is_empty")]
    pub expires: String,
}

impl Cookie {
    fn expired(&self, now: OffsetDateTime) -> bool {
        if self.expires.is_empty() {
            return false;
        }
        // An unreadable date is treated as expired: the cookie is then replaced by a new login.
        OffsetDateTime::parse(&self.expires, &Rfc3339).map_or(true, |t| t <= now)
    }

    fn same_slot(&self, other: &Cookie) -> bool {
        self.name == other.name
            && self.domain.eq_ignore_ascii_case(&other.domain)
            && self.path == other.path
    }
}

/// RFC 6265 §5.1.4: does `request` fall under cookie path `cookie`?
fn path_matches(cookie: &str, request: &str) -> bool {
    let cookie = if cookie.is_empty() { "/" } else { cookie };
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jar {
    cookies: Vec<Cookie>,
}

impl Jar {
    /// Reads a jar; a missing one is empty. One that cannot be read as a jar is also treated as
    /// empty: it only costs a new login, which then replaces it.
    pub fn load(path: &Path) -> Result<Jar, CandidError> {
        match std::fs::read(path) {
            Ok(data) => Ok(Jar {
                cookies: serde_json::from_slice(&data).unwrap_or_default(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Jar::default()),
            Err(e) => Err(CandidError::Jar {
                path: path.into(),
                reason: e.to_string(),
            }),
        }
    }

    /// Writes the jar atomically with mode 0600 (its directory 0700), without expired cookies.
    pub fn save(&self, path: &Path) -> Result<(), CandidError> {
        let err = |reason: String| CandidError::Jar {
            path: path.into(),
            reason,
        };
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| err(e.to_string()))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        let now = OffsetDateTime::now_utc();
        let live: Vec<&Cookie> = self.cookies.iter().filter(|c| !c.expired(now)).collect();
        let text = serde_json::to_vec_pretty(&live).map_err(|e| err(e.to_string()))?;
        crate::remotes::write_atomic(path, &text, 0o600).map_err(|e| err(e.to_string()))
    }

    /// Adds a cookie, replacing one with the same name, host and path.
    pub fn set(&mut self, cookie: Cookie) {
        self.cookies.retain(|c| !c.same_slot(&cookie));
        self.cookies.push(cookie);
    }

    /// The `Cookie` header for a request to `host` at `path` over `secure` (or not) transport:
    /// the unexpired `macaroon-*` cookies that match, longest path first.
    pub fn header(
        &self,
        host: &str,
        path: &str,
        secure: bool,
        now: OffsetDateTime,
    ) -> Option<String> {
        let mut matching: Vec<&Cookie> = self
            .cookies
            .iter()
            .filter(|c| c.name.starts_with(PREFIX))
            .filter(|c| c.domain.eq_ignore_ascii_case(host))
            .filter(|c| path_matches(&c.path, path))
            .filter(|c| secure || !c.secure)
            .filter(|c| !c.expired(now))
            .collect();
        if matching.is_empty() {
            return None;
        }
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        Some(
            matching
                .iter()
                .map(|c| format!("{}={}", c.name, c.value))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    pub fn cookies(&self) -> &[Cookie] {
        &self.cookies
    }
}

/// An RFC 3339 timestamp, as the jar stores expiry times.
pub fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use time::Duration;

    fn cookie(name: &str, path: &str, expires: Option<OffsetDateTime>) -> Cookie {
        Cookie {
            name: name.into(),
            value: "dmFs==".into(),
            domain: "127.0.0.1".into(),
            path: path.into(),
            secure: true,
            http_only: false,
            persistent: true,
            host_only: true,
            expires: expires.map(format_time).unwrap_or_default(),
        }
    }

    #[test]
    fn paths() {
        for (cookie, request, expected) in [
            ("/", "/1.0", true),
            ("/", "/", true),
            ("", "/1.0", true),
            ("/1.0", "/1.0", true),
            ("/1.0", "/1.0/instances", true),
            ("/1.0", "/1.00", false),
            ("/1.0/", "/1.0/x", true),
            ("/1.0/instances", "/1.0", false),
        ] {
            assert_eq!(
                path_matches(cookie, request),
                expected,
                "{cookie} {request}"
            );
        }
    }

    #[test]
    fn only_live_matching_login_cookies_are_sent_and_kept() {
        let now = OffsetDateTime::now_utc();
        let mut jar = Jar::default();
        jar.set(cookie("macaroon-auth", "/", Some(now + Duration::hours(1))));
        jar.set(cookie(
            "macaroon-old",
            "/",
            Some(now - Duration::seconds(1)),
        ));
        jar.set(cookie("session", "/", None));
        jar.set(cookie("macaroon-deep", "/1.0/instances", None));
        let mut other_host = cookie("macaroon-x", "/", None);
        other_host.domain = "10.0.0.1".into();
        jar.set(other_host);

        assert_eq!(
            jar.header("127.0.0.1", "/1.0", true, now).as_deref(),
            Some("macaroon-auth=dmFs==")
        );
        assert_eq!(
            jar.header("127.0.0.1", "/1.0/instances/c1", true, now)
                .as_deref(),
            Some("macaroon-deep=dmFs==; macaroon-auth=dmFs==")
        );
        assert_eq!(
            jar.header("127.0.0.1", "/1.0", false, now),
            None,
            "secure cookies need TLS"
        );
        assert_eq!(
            jar.header("127.0.0.1", "/1.0", true, now + Duration::hours(2)),
            None
        );

        // Replacing keeps one cookie per slot.
        jar.set(cookie("macaroon-auth", "/", Some(now + Duration::hours(3))));
        assert_eq!(
            jar.cookies()
                .iter()
                .filter(|c| c.name == "macaroon-auth")
                .count(),
            1
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jars").join("prod");
        jar.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"Name\": \"macaroon-auth\"") && text.contains("\"Expires\""),
            "{text}"
        );
        let back = Jar::load(&path).unwrap();
        assert_eq!(
            back.cookies().len(),
            4,
            "the expired cookie is dropped: {text}"
        );
        assert!(!text.contains("macaroon-old"));

        // A missing jar is empty, and so is a damaged one.
        assert_eq!(Jar::load(&dir.path().join("none")).unwrap(), Jar::default());
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(Jar::load(&path).unwrap(), Jar::default());
    }
}
