//! Identities and the per-request trust decision.

use crate::trust::{TrustStore, TrustedCert};
use std::sync::Arc;
use thiserror::Error;

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The local socket; the kernel told us the peer's uid.
    Unix { uid: u32 },
    /// HTTPS; the SHA-256 of the client certificate's DER, if one was sent.
    Tls { peer_fingerprint: Option<[u8; 32]> },
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Anyone who can open the unix socket: full admin, i.e. root on the host.
    Unix { uid: u32 },
    /// A client certificate in the trust store, within its validity.
    Certificate(Arc<TrustedCert>),
    /// Everyone else. The fingerprint is kept for logs and for self-enrolment.
    Untrusted { fingerprint: Option<String> },
}

/// The one place a request becomes an identity. `now` is Unix seconds.
pub fn authenticate(transport: &Transport, trust: &TrustStore, now: i64) -> Identity {
    match transport {
        Transport::Unix { uid } => Identity::Unix { uid: *uid },
        Transport::Tls {
            peer_fingerprint: None,
        } => Identity::Untrusted { fingerprint: None },
        Transport::Tls {
            peer_fingerprint: Some(fp),
        } => match trust.get(fp) {
            Some(cert) if cert.not_before <= now && now <= cert.not_after => {
                Identity::Certificate(cert.clone())
            }
            _ => Identity::Untrusted {
                fingerprint: Some(hex::encode(fp)),
            },
        },
    }
}

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, trusted or not (`GET /1.0`, `POST /1.0/certificates`).
    Anyone,
    /// Any trusted identity.
    Trusted,
    /// Server administrators only.
    Admin,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    /// The text is LXD's, which clients match.
    #[error("not authorized")]
    NotAuthorized,
}

/// Proof that the caller is a server administrator. Only this crate can make one, so a function
/// that takes it cannot be reached without the check.
#[derive(Debug)]
pub struct AdminProof(());

impl Identity {
    pub fn is_trusted(&self) -> bool {
        !matches!(self, Identity::Untrusted { .. })
    }

    /// Unix socket users and unrestricted certificates administer the whole server, as in LXD.
    pub fn is_admin(&self) -> bool {
        match self {
            Identity::Unix { .. } => true,
            Identity::Certificate(c) => !c.restricted,
            Identity::Untrusted { .. } => false,
        }
    }

    pub fn allows(&self, access: Access) -> Result<(), AuthError> {
        let ok = match access {
            Access::Anyone => true,
            Access::Trusted => self.is_trusted(),
            Access::Admin => self.is_admin(),
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::NotAuthorized)
        }
    }

    pub fn require_admin(&self) -> Result<AdminProof, AuthError> {
        self.allows(Access::Admin).map(|()| AdminProof(()))
    }

    /// `auth_user_name`: the certificate fingerprint, or `uid=N` for the socket.
    pub fn user_name(&self) -> String {
        match self {
            Identity::Unix { uid } => format!("uid={uid}"),
            Identity::Certificate(c) => c.fingerprint.clone(),
            Identity::Untrusted { fingerprint } => fingerprint.clone().unwrap_or_default(),
        }
    }

    /// `auth_user_method`.
    pub fn method(&self) -> &'static str {
        match self {
            Identity::Unix { .. } => "unix",
            Identity::Certificate(_) | Identity::Untrusted { .. } => "tls",
        }
    }

    /// The certificate fingerprint for logs, if there is one.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Identity::Certificate(c) => Some(&c.fingerprint),
            Identity::Untrusted { fingerprint } => fingerprint.as_deref(),
            Identity::Unix { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000;

    fn store() -> TrustStore {
        let cert = |fp: u8, restricted: bool, not_before: i64, not_after: i64| {
            (
                [fp; 32],
                TrustedCert {
                    fingerprint: hex::encode([fp; 32]),
                    name: format!("c{fp}"),
                    restricted,
                    projects: vec![],
                    not_before,
                    not_after,
                },
            )
        };
        TrustStore::new([
            cert(1, false, 0, 2_000),
            cert(2, true, 0, 2_000),
            cert(3, false, 0, 999),
            cert(4, false, 1_001, 2_000),
        ])
    }

    /// Every kind of caller against every access level: (transport, trusted, anyone, trusted-route, admin-route).
    #[test]
    fn authentication_and_access_table() {
        let tls = |fp: Option<u8>| Transport::Tls {
            peer_fingerprint: fp.map(|b| [b; 32]),
        };
        let cases: &[(&str, Transport, bool, bool, bool, bool)] = &[
            (
                "unix socket, root",
                Transport::Unix { uid: 0 },
                true,
                true,
                true,
                true,
            ),
            (
                "unix socket, other uid",
                Transport::Unix { uid: 1000 },
                true,
                true,
                true,
                true,
            ),
            ("tls, no certificate", tls(None), false, true, false, false),
            (
                "tls, unknown certificate",
                tls(Some(9)),
                false,
                true,
                false,
                false,
            ),
            (
                "tls, trusted unrestricted",
                tls(Some(1)),
                true,
                true,
                true,
                true,
            ),
            (
                "tls, trusted restricted",
                tls(Some(2)),
                true,
                true,
                true,
                false,
            ),
            (
                "tls, trusted but expired",
                tls(Some(3)),
                false,
                true,
                false,
                false,
            ),
            (
                "tls, trusted but not yet valid",
                tls(Some(4)),
                false,
                true,
                false,
                false,
            ),
        ];
        let trust = store();
        for (what, transport, trusted, anyone, trusted_ok, admin_ok) in cases {
            let id = authenticate(transport, &trust, NOW);
            assert_eq!(id.is_trusted(), *trusted, "{what}");
            assert_eq!(id.allows(Access::Anyone).is_ok(), *anyone, "{what}");
            assert_eq!(id.allows(Access::Trusted).is_ok(), *trusted_ok, "{what}");
            assert_eq!(id.allows(Access::Admin).is_ok(), *admin_ok, "{what}");
            assert_eq!(id.require_admin().is_ok(), *admin_ok, "{what}");
        }
    }

    #[test]
    fn untrusted_keeps_its_fingerprint_for_logs() {
        let id = authenticate(
            &Transport::Tls {
                peer_fingerprint: Some([9; 32]),
            },
            &store(),
            NOW,
        );
        assert_eq!(id.fingerprint(), Some(hex::encode([9u8; 32]).as_str()));
        assert_eq!(id.method(), "tls");
        assert_eq!(
            authenticate(&Transport::Unix { uid: 7 }, &store(), NOW).user_name(),
            "uid=7"
        );
    }
}
