//! Identities and the per-request trust decision.

use crate::trust::{TrustStore, TrustedCert};
use std::sync::Arc;
use thiserror::Error;

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The local socket; the kernel told us the peer's uid.
    Unix { uid: u32 },
    /// HTTPS; the SHA-256 of the client certificate's DER, if one was sent, and in PKI mode what
    /// the CA says about that certificate (computed for each request, so CA and CRL reloads apply).
    Tls {
        peer_fingerprint: Option<[u8; 32]>,
        ca: Option<CaCheck>,
    },
}

/// The CA's verdict on a client certificate in PKI mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaCheck {
    /// Issued by the CA, valid, not revoked; `subject` names it in logs.
    Signed {
        subject: String,
    },
    NotSigned,
    Revoked,
    /// The CRL is expired or unusable: fail closed.
    Unverifiable,
}

/// Server-wide trust settings that change the decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    /// `core.trust_ca_certificates`: in PKI mode, trust CA-signed certificates without a
    /// trust-store entry.
    pub trust_ca_certificates: bool,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Anyone who can open the unix socket: full admin, i.e. root on the host.
    Unix { uid: u32 },
    /// A client certificate in the trust store, within its validity.
    Certificate(Arc<TrustedCert>),
    /// A user the Candid authentication server vouched for (`crate::candid::identify`). Their
    /// rights come only from grants naming them or their groups.
    Candid {
        username: String,
        groups: Vec<String>,
    },
    /// Everyone else. The fingerprint is kept for logs and for self-enrolment.
    Untrusted { fingerprint: Option<String> },
}

/// The one place a request becomes an identity. `now` is Unix seconds.
///
/// Outside PKI mode a certificate is trusted when it is in the trust store and within its validity.
/// In PKI mode every certificate must also be issued by the CA and not be revoked, trust-store
/// entry or not (LXD accepted pre-existing self-signed entries: CVE-2024-6156's class); with
/// `trust_ca_certificates` a CA-signed certificate needs no entry.
pub fn authenticate(
    transport: &Transport,
    trust: &TrustStore,
    policy: TrustPolicy,
    now: i64,
) -> Identity {
    let (fp, ca) = match transport {
        Transport::Unix { uid } => return Identity::Unix { uid: *uid },
        Transport::Tls {
            peer_fingerprint: None,
            ..
        } => return Identity::Untrusted { fingerprint: None },
        Transport::Tls {
            peer_fingerprint: Some(fp),
            ca,
        } => (fp, ca),
    };
    let untrusted = || Identity::Untrusted {
        fingerprint: Some(hex::encode(fp)),
    };
    let entry = trust
        .get(fp)
        .filter(|c| c.not_before <= now && now <= c.not_after);
    match (ca, entry) {
        (None, Some(cert)) => Identity::Certificate(cert.clone()),
        (None, None) => untrusted(),
        (Some(CaCheck::Signed { .. }), Some(cert)) => Identity::Certificate(cert.clone()),
        (Some(CaCheck::Signed { subject }), None) if policy.trust_ca_certificates => {
            // The CA checked the validity window; the identity lives as long as the request.
            Identity::Certificate(Arc::new(TrustedCert {
                fingerprint: hex::encode(fp),
                name: subject.clone(),
                restricted: false,
                projects: Vec::new(),
                not_before: i64::MIN,
                not_after: i64::MAX,
            }))
        }
        (Some(_), _) => untrusted(),
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

impl Identity {
    pub fn is_trusted(&self) -> bool {
        !matches!(self, Identity::Untrusted { .. })
    }

    /// Unix socket users and unrestricted certificates administer the whole server, as in LXD.
    pub fn is_admin(&self) -> bool {
        match self {
            Identity::Unix { .. } => true,
            Identity::Certificate(c) => !c.restricted,
            Identity::Candid { .. } | Identity::Untrusted { .. } => false,
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

    /// `auth_user_name`: the certificate fingerprint, or `uid=N` for the socket.
    pub fn user_name(&self) -> String {
        match self {
            Identity::Unix { uid } => format!("uid={uid}"),
            Identity::Certificate(c) => c.fingerprint.clone(),
            Identity::Candid { username, .. } => username.clone(),
            Identity::Untrusted { fingerprint } => fingerprint.clone().unwrap_or_default(),
        }
    }

    /// `auth_user_method`.
    pub fn method(&self) -> &'static str {
        match self {
            Identity::Unix { .. } => "unix",
            Identity::Candid { .. } => "candid",
            Identity::Certificate(_) | Identity::Untrusted { .. } => "tls",
        }
    }

    /// The certificate fingerprint for logs, if there is one.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Identity::Certificate(c) => Some(&c.fingerprint),
            Identity::Untrusted { fingerprint } => fingerprint.as_deref(),
            Identity::Unix { .. } | Identity::Candid { .. } => None,
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
            ca: None,
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
            let id = authenticate(transport, &trust, TrustPolicy::default(), NOW);
            assert_eq!(id.is_trusted(), *trusted, "{what}");
            assert_eq!(id.allows(Access::Anyone).is_ok(), *anyone, "{what}");
            assert_eq!(id.allows(Access::Trusted).is_ok(), *trusted_ok, "{what}");
            assert_eq!(id.allows(Access::Admin).is_ok(), *admin_ok, "{what}");
        }
    }

    #[test]
    fn untrusted_keeps_its_fingerprint_for_logs() {
        let p = TrustPolicy::default();
        let id = authenticate(
            &Transport::Tls {
                peer_fingerprint: Some([9; 32]),
                ca: None,
            },
            &store(),
            p,
            NOW,
        );
        assert_eq!(id.fingerprint(), Some(hex::encode([9u8; 32]).as_str()));
        assert_eq!(id.method(), "tls");
        assert_eq!(
            authenticate(&Transport::Unix { uid: 7 }, &store(), p, NOW).user_name(),
            "uid=7"
        );
    }

    /// PKI mode: (CA verdict, in trust store, trust_ca_certificates) -> trusted, admin.
    #[test]
    fn pki_table() {
        let signed = || {
            Some(CaCheck::Signed {
                subject: "CN=ana".into(),
            })
        };
        // (what, CA verdict, fingerprint byte, trust_ca_certificates, trusted, admin)
        type Case = (&'static str, Option<CaCheck>, u8, bool, bool, bool);
        let cases: &[Case] = &[
            ("no PKI, in store", None, 1, false, true, true),
            ("no PKI, unknown", None, 9, true, false, false),
            ("signed, in store", signed(), 1, false, true, true),
            (
                "signed, in store, restricted",
                signed(),
                2,
                false,
                true,
                false,
            ),
            (
                "signed, not in store, option off",
                signed(),
                9,
                false,
                false,
                false,
            ),
            (
                "signed, not in store, option on",
                signed(),
                9,
                true,
                true,
                true,
            ),
            (
                "signed, in store but expired entry, option off",
                signed(),
                3,
                false,
                false,
                false,
            ),
            (
                "self-signed entry in store (CVE-2024-6156)",
                Some(CaCheck::NotSigned),
                1,
                false,
                false,
                false,
            ),
            (
                "self-signed, option on",
                Some(CaCheck::NotSigned),
                9,
                true,
                false,
                false,
            ),
            (
                "revoked, in store",
                Some(CaCheck::Revoked),
                1,
                false,
                false,
                false,
            ),
            (
                "revoked, option on",
                Some(CaCheck::Revoked),
                9,
                true,
                false,
                false,
            ),
            (
                "CRL expired, in store",
                Some(CaCheck::Unverifiable),
                1,
                true,
                false,
                false,
            ),
        ];
        for (what, ca, fp, option, trusted, admin) in cases {
            let t = Transport::Tls {
                peer_fingerprint: Some([*fp; 32]),
                ca: ca.clone(),
            };
            let id = authenticate(
                &t,
                &store(),
                TrustPolicy {
                    trust_ca_certificates: *option,
                },
                NOW,
            );
            assert_eq!(
                (id.is_trusted(), id.is_admin()),
                (*trusted, *admin),
                "{what}"
            );
        }
        let t = Transport::Tls {
            peer_fingerprint: Some([9; 32]),
            ca: signed(),
        };
        match authenticate(
            &t,
            &store(),
            TrustPolicy {
                trust_ca_certificates: true,
            },
            NOW,
        ) {
            Identity::Certificate(c) => {
                assert_eq!(c.name, "CN=ana", "named by its subject in logs")
            }
            other => panic!("{other:?}"),
        }
    }
}
