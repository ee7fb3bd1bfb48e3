//! One-time image secrets (`POST /1.0/images/<fp>/secret`): what lets another server, asking as
//! an untrusted client, read one private image (`lxc image copy src:img dst:`). LXD keeps a
//! secret as a token operation until its first use and no longer; rxd keeps only its SHA-256,
//! bound to the project and fingerprint it was issued for, and accepts it for five minutes after
//! issue or sixty seconds after its first use (the target reads the image's record, then its
//! files), on those two GETs only. Kept in memory: a daemon restart voids them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unused secret is accepted.
pub const UNUSED_FOR: Duration = Duration::from_secs(5 * 60);
/// How long after its first use a secret is still accepted.
pub const USED_FOR: Duration = Duration::from_secs(60);

struct Issued {
    project: String,
    fingerprint: String,
    issued: Instant,
    first_use: Option<Instant>,
}

impl Issued {
    fn live(&self, now: Instant) -> bool {
        match self.first_use {
            Some(t) => now.duration_since(t) < USED_FOR,
            None => now.duration_since(self.issued) < UNUSED_FOR,
        }
    }
}

#[derive(Default)]
pub struct ImageSecrets {
    by_hash: Mutex<HashMap<[u8; 32], Issued>>,
}

impl ImageSecrets {
    /// A new secret for `fingerprint` in `project`.
    pub fn issue(&self, project: &str, fingerprint: &str) -> String {
        let secret = rxd_auth::password::new_secret();
        let now = Instant::now();
        let mut map = crate::sync::lock(&self.by_hash);
        map.retain(|_, s| s.live(now));
        map.insert(
            rxd_auth::password::secret_hash(&secret),
            Issued {
                project: project.to_owned(),
                fingerprint: fingerprint.to_owned(),
                issued: now,
                first_use: None,
            },
        );
        secret
    }

    /// Whether `secret` opens `fingerprint` in `project` now (its first use starts its last
    /// minute). The secret is looked up by its hash, so no comparison runs over the secret.
    pub fn accepts(&self, project: &str, fingerprint: &str, secret: &str) -> bool {
        if secret.is_empty() {
            return false;
        }
        let now = Instant::now();
        let mut map = crate::sync::lock(&self.by_hash);
        map.retain(|_, s| s.live(now));
        match map.get_mut(&rxd_auth::password::secret_hash(secret)) {
            Some(s) if s.project == project && s.fingerprint == fingerprint => {
                s.first_use.get_or_insert(now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_opens_its_own_image_only() {
        let secrets = ImageSecrets::default();
        let s = secrets.issue("p", "aa");
        assert!(!secrets.accepts("p", "bb", &s));
        assert!(!secrets.accepts("q", "aa", &s));
        assert!(!secrets.accepts("p", "aa", "guess"));
        assert!(!secrets.accepts("p", "aa", ""));
        assert!(secrets.accepts("p", "aa", &s));
        assert!(secrets.accepts("p", "aa", &s), "within its last minute");
        // Past that minute, refused.
        for issued in crate::sync::lock(&secrets.by_hash).values_mut() {
            issued.first_use = Some(Instant::now() - USED_FOR);
        }
        assert!(!secrets.accepts("p", "aa", &s));
        // Unused for five minutes: refused too.
        let s = secrets.issue("p", "aa");
        for issued in crate::sync::lock(&secrets.by_hash).values_mut() {
            issued.issued = Instant::now() - UNUSED_FOR;
        }
        assert!(!secrets.accepts("p", "aa", &s));
    }
}
