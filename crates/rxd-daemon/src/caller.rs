//! Request extractors that authenticate the caller. Handlers declare what they need in their
//! signature: [`Caller`] (anyone), [`Trusted`] or [`Admin`]; the check runs before the handler.

use crate::error::ApiError;
use crate::listener::ConnInfo;
use crate::state::{now_unix, read, Daemon};
use crate::tlsstate::PkiState;
use axum::extract::FromRequestParts;
use http::request::Parts;
use rxd_auth::{authenticate, Access, AdminProof, CaCheck, Identity, Transport, TrustPolicy};
use rxd_core::config::{flag, TRUST_CA_CERTIFICATES};
use rxd_tls::pki::CaVerdict;
use std::sync::Arc;

#[derive(Clone)]
pub struct Caller {
    pub identity: Identity,
    pub conn: ConnInfo,
}

impl FromRequestParts<Arc<Daemon>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        daemon: &Arc<Daemon>,
    ) -> Result<Self, Self::Rejection> {
        let conn = parts
            .extensions
            .get::<ConnInfo>()
            .cloned()
            .ok_or_else(|| ApiError::internal("request without connection facts"))?;
        let transport = with_ca_verdict(daemon, &conn);
        let policy = TrustPolicy {
            trust_ca_certificates: flag(&read(&daemon.config), TRUST_CA_CERTIFICATES),
        };
        let identity = authenticate(&transport, &read(&daemon.trust), policy, now_unix());
        Ok(Caller { identity, conn })
    }
}

/// Any trusted identity.
pub struct Trusted(pub Caller);

impl FromRequestParts<Arc<Daemon>> for Trusted {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        daemon: &Arc<Daemon>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, daemon).await?;
        caller.identity.allows(Access::Trusted)?;
        Ok(Trusted(caller))
    }
}

/// A server administrator, with the proof functions that change server state ask for.
pub struct Admin(pub Caller, pub AdminProof);

impl FromRequestParts<Arc<Daemon>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        daemon: &Arc<Daemon>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, daemon).await?;
        let proof = caller.identity.require_admin()?;
        Ok(Admin(caller, proof))
    }
}

/// In PKI mode, ask the CA about the connection's client certificate, now: a CA or CRL reloaded
/// since the handshake applies to this request.
fn with_ca_verdict(daemon: &Daemon, conn: &ConnInfo) -> Transport {
    let Transport::Tls {
        peer_fingerprint, ..
    } = &conn.transport
    else {
        return conn.transport.clone();
    };
    let tls = daemon.tls_state();
    let ca = match (&tls.pki, &conn.peer_cert) {
        (None, _) | (_, None) => None,
        (Some(PkiState::Broken), Some(_)) => Some(CaCheck::Unverifiable),
        (Some(PkiState::Ready(pki)), Some(der)) => Some(ca_check(pki, der)),
    };
    Transport::Tls {
        peer_fingerprint: *peer_fingerprint,
        ca,
    }
}

/// The CA's verdict on one certificate, as rxd-auth understands it.
pub fn ca_check(pki: &rxd_tls::pki::Pki, der: &[u8]) -> CaCheck {
    match pki.verdict(der, rustls_now()) {
        CaVerdict::Signed => CaCheck::Signed {
            subject: rxd_tls::cert::describe(der)
                .and_then(|i| i.common_name)
                .unwrap_or_else(|| "CA-issued".into()),
        },
        CaVerdict::NotSigned => CaCheck::NotSigned,
        CaVerdict::Revoked => CaCheck::Revoked,
        CaVerdict::Unverifiable => CaCheck::Unverifiable,
    }
}

fn rustls_now() -> rxd_tls::pki::UnixTime {
    rxd_tls::pki::UnixTime::now()
}
