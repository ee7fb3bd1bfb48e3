//! `GET /1.0/events`: the event stream over a websocket, filtered per subscriber by what its
//! identity may see under the grants current when each event is sent.

use crate::caller::{Caller, Trusted};
use crate::error::{ApiError, ApiResult};
use crate::events::Event;
use crate::listener::stopped;
use crate::state::Daemon;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use rxd_auth::rbac::Item;
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Every type a client may ask for.
const KINDS: [&str; 3] = ["lifecycle", "operation", "logging"];
/// What a stream without `?type=` receives: the security log is asked for by name.
const DEFAULT_KINDS: [&str; 2] = ["lifecycle", "operation"];

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(rename = "type", default)]
    kinds: Option<String>,
    #[serde(rename = "all-projects", default)]
    all_projects: bool,
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    Trusted(caller): Trusted,
    Query(q): Query<EventsQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let kinds: Vec<String> = match q.kinds.as_deref() {
        None | Some("") => DEFAULT_KINDS.iter().map(|k| k.to_string()).collect(),
        Some(list) => list.split(',').map(|k| k.trim().to_owned()).collect(),
    };
    if let Some(bad) = kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "Unknown event type {bad:?}; rxd has: {}",
            KINDS.join(", ")
        )));
    }
    let upgrade = upgrade.map_err(|_| {
        ApiError::BadRequest("This endpoint is a websocket: upgrade the connection".into())
    })?;
    let rx = d.events.subscribe();
    // Closed when this caller's certificate is revoked.
    let revoked = match &caller.conn.transport {
        rxd_auth::Transport::Tls {
            peer_fingerprint: Some(fp),
            ..
        } => Some(d.connections.register(Some(*fp))),
        _ => None,
    };
    let filter = Filter {
        daemon: d.clone(),
        caller,
        all_projects: q.all_projects,
    };
    Ok(upgrade.on_upgrade(move |ws| stream(ws, rx, filter, kinds, revoked)))
}

/// Which events one stream receives.
struct Filter {
    daemon: Arc<Daemon>,
    caller: Caller,
    all_projects: bool,
}

impl Filter {
    /// May this caller see this event, under the grants current now, and did it ask for its
    /// project?
    fn passes(&self, event: &Event) -> bool {
        let rights = self.daemon.rights(&self.caller.identity);
        if event.wire.kind == "logging" {
            return rights.may_see(Item::SecurityLog);
        }
        (!event.server_only || rights.may_see(Item::ServerOnly))
            && rights.may_see(Item::Project(&event.wire.project))
            && crate::operations::project_selected(
                &self.caller.project,
                self.all_projects,
                &event.wire.project,
            )
    }
}
async fn stream(
    mut ws: WebSocket,
    mut rx: broadcast::Receiver<Arc<Event>>,
    filter: Filter,
    kinds: Vec<String>,
    revoked: Option<(
        crate::listener::Registration,
        tokio::sync::watch::Receiver<bool>,
    )>,
) {
    let (_registration, mut revoked_rx) = match revoked {
        Some((r, rx)) => (Some(r), Some(rx)),
        None => (None, None),
    };
    let revoked_fut = async {
        match revoked_rx.as_mut() {
            Some(r) => stopped(r).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(revoked_fut);
    loop {
        tokio::select! {
            // Revocation is signalled before the event announcing it is sent, so checking it first
            // means a revoked identity is sent nothing more.
            biased;
            _ = &mut revoked_fut => {
                tracing::info!(fingerprint = filter.caller.identity.fingerprint().unwrap_or(""), "closing an event stream: certificate revoked");
                let _ = ws.send(Message::Close(None)).await;
                return;
            }
            incoming = ws.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
            event = rx.recv() => match event {
                Ok(e) if kinds.iter().any(|k| *k == e.wire.kind) && filter.passes(&e) => {
                    let Ok(text) = serde_json::to_string(&e.wire) else { continue };
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(missed = n, "an event subscriber fell behind"),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
