//! Request extractors that authenticate the caller. Handlers declare what they need in their
//! signature: [`Caller`] (anyone), [`Trusted`] or [`Admin`]; the check runs before the handler.

use crate::error::ApiError;
use crate::listener::ConnInfo;
use crate::state::{now_unix, read, Daemon};
use axum::extract::FromRequestParts;
use http::request::Parts;
use rxd_auth::{authenticate, Access, AdminProof, Identity};
use std::sync::Arc;

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
        let identity = authenticate(&conn.transport, &read(&daemon.trust), now_unix());
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
