//! The authorization layer ([`authorize`]): identifies every routed request, computes its
//! rights and decides it from the endpoint table before any handler runs; and the extractors
//! that hand handlers the admitted caller.

use crate::caller::{Admin, Caller, Trusted};
use crate::candid::{self, Login};
use crate::error::ApiError;
use crate::listener::ConnInfo;
use crate::state::Daemon;
use crate::sync::{now_unix, read};
use crate::tlsstate::PkiState;
use axum::extract::{FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use rxd_auth::endpoints::{self, ProjectFrom};
use rxd_auth::rbac::{decide, Decision, Need};
use rxd_auth::{authenticate, Access, CaCheck, Identity, Transport, TrustPolicy};
use rxd_core::config::{flag, TRUST_CA_CERTIFICATES};
use std::collections::HashMap;
use std::sync::Arc;

/// The caller as the authorization layer identified and admitted it.
#[derive(Clone)]
struct Admitted(Caller);

/// `?project=` (`default` when absent or empty) and whether `all-projects=true`, from one parse
/// of the query string.
fn scope_params(uri: &http::Uri) -> (String, bool) {
    let mut q = Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let project = q
        .remove("project")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    (
        project,
        q.get("all-projects").map(String::as_str) == Some("true"),
    )
}

/// Who is asking, with their rights now, for a request on `project`, and what its macaroons
/// said (requests on the macaroon path are judged by them alone, the client certificate ignored).
fn identify(daemon: &Daemon, parts: &Parts, project: String) -> Result<(Caller, Login), ApiError> {
    let conn = parts
        .extensions
        .get::<ConnInfo>()
        .cloned()
        .ok_or_else(|| ApiError::internal("request without connection facts"))?;
    let transport = with_ca_verdict(daemon, &conn);
    let login = match transport {
        Transport::Tls { .. } => daemon
            .logins
            .authenticate(&parts.headers, time::OffsetDateTime::now_utc()),
        Transport::Unix { .. } => Login::NotAsked,
    };
    let identity = match &login {
        Login::NotAsked => {
            let policy = TrustPolicy {
                trust_ca_certificates: flag(&read(&daemon.config), TRUST_CA_CERTIFICATES),
            };
            authenticate(&transport, &read(&daemon.trust), policy, now_unix())
        }
        Login::Verified(identity) => identity.clone(),
        Login::Refused(_) | Login::Missing { .. } => Identity::Untrusted { fingerprint: None },
    };
    let rights = Arc::new(daemon.rights(&identity));
    Ok((
        Caller {
            identity,
            conn,
            rights,
            project,
        },
        login,
    ))
}

/// The authorization layer: every routed request is looked up in the endpoint table
/// (`rxd_auth::endpoints`) and decided by `rxd_auth::rbac::decide` before its handler runs. A
/// route missing from the table is treated as admin-only.
pub async fn authorize(
    State(daemon): State<Arc<Daemon>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let (project, all_projects) = scope_params(&parts.uri);
    let (mut caller, login) = match identify(&daemon, &parts, project) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if matches!(caller.identity, Identity::Candid { .. }) {
        caller.identity = daemon.logins.with_groups(caller.identity).await;
        caller.rights = Arc::new(daemon.rights(&caller.identity));
    }
    let route = matched.as_ref().map(MatchedPath::as_str).unwrap_or("");
    let (need, from) = match endpoints::lookup(route, parts.method.as_str()) {
        Some(e) => (e.need_for(all_projects), e.project_from),
        None => {
            tracing::error!(route, method = %parts.method, "route missing from the endpoint table: admin only");
            (Need::Admin, ProjectFrom::Query)
        }
    };
    let project = match from {
        ProjectFrom::Query => caller.project.clone(),
        ProjectFrom::PathName => {
            Path::<HashMap<String, String>>::from_request_parts(&mut parts, &daemon)
                .await
                .ok()
                .and_then(|Path(mut p)| p.remove("name"))
                .unwrap_or_default()
        }
    };
    crate::audit::login_failure(&daemon.audit, &caller, &parts, &login);
    match login {
        Login::Refused(refusal) => return ApiError::Forbidden(refusal.to_string()).into_response(),
        // No valid login: challenge, unless the route is open to anyone and the client did not
        // insist on being authenticated (LXD's `X-LXD-authenticated`).
        Login::Missing { version, .. }
            if need != Need::Anyone || parts.headers.contains_key(candid::AUTHENTICATED_HEADER) =>
        {
            return daemon
                .logins
                .challenge(parts.uri.path(), version)
                .await
                .into_response();
        }
        _ => {}
    }
    let exists = read(&daemon.projects).contains_key(&project);
    match decide(
        need,
        caller.identity.is_trusted(),
        &caller.rights,
        &project,
        exists,
    ) {
        Decision::Allow => {}
        refused => {
            crate::audit::refusal(&daemon.audit, &caller, &parts, refused, &project);
            return ApiError::from(refused).into_response();
        }
    }
    parts.extensions.insert(Admitted(caller));
    next.run(Request::from_parts(parts, body)).await
}

impl FromRequestParts<Arc<Daemon>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        daemon: &Arc<Daemon>,
    ) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Admitted>() {
            Some(Admitted(caller)) => Ok(caller.clone()),
            // Not behind the authorization layer (no route matched): identify only.
            None => identify(daemon, parts, scope_params(&parts.uri).0).map(|(c, _)| c),
        }
    }
}

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

impl FromRequestParts<Arc<Daemon>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        daemon: &Arc<Daemon>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, daemon).await?;
        let proof = caller.rights.require_admin()?;
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
        (Some(PkiState::Ready(pki)), Some(der)) => Some(crate::tlsstate::ca_check(pki, der)),
    };
    Transport::Tls {
        peer_fingerprint: *peer_fingerprint,
        ca,
    }
}
