//! `/1.0/events`: lifecycle and operation events, streamed over a websocket to trusted callers.
//! Each subscriber sees only what it may see (today: admins see everything, others only events of
//! their projects), and a connection's stream closes when its certificate is revoked. Upgrades from
//! a foreign web origin are refused before they get here (`origin::refuse_cross_site`). `logging`
//! events carry the security log (`audit`) and go to server administrators only.

use crate::caller::{Caller, Trusted};
use crate::error::{ApiError, ApiResult};
use crate::listener::stopped;
use crate::state::Daemon;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Every type a client may ask for.
const KINDS: [&str; 3] = ["lifecycle", "operation", "logging"];
/// What a stream without `?type=` receives: the security log is asked for by name.
const DEFAULT_KINDS: [&str; 2] = ["lifecycle", "operation"];

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: String,
    pub metadata: Value,
    pub location: &'static str,
    pub project: String,
    /// About the server itself (the trust store): only for server administrators, whatever
    /// the project it is shown in.
    #[serde(skip)]
    pub server_only: bool,
}

pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        // Slow subscribers that fall this far behind lose events (and are told so by a lag).
        Events {
            tx: broadcast::channel(1024).0,
        }
    }
}

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Events {
    /// A lifecycle event, e.g. `certificate-created` for `/1.0/certificates/<fp>`.
    pub fn lifecycle(&self, action: &str, source: &str, project: &str, by: &Caller) {
        let metadata = json!({
            "action": action,
            "source": source,
            "context": {},
            "requestor": {
                "username": by.identity.user_name(),
                "protocol": by.identity.method(),
                "address": by.conn.peer(),
            },
        });
        self.send(Event {
            kind: "lifecycle",
            timestamp: now(),
            metadata,
            location: "none",
            project: project.into(),
            server_only: false,
        });
    }

    pub fn operation(&self, op: Value, project: &str) {
        self.send(Event {
            kind: "operation",
            timestamp: now(),
            metadata: op,
            location: "none",
            project: project.into(),
            server_only: false,
        });
    }

    /// An operation about the server (a certificate add token): shown in `project`, as LXD
    /// does, but sent to server administrators only, as `GET /1.0/operations` lists it.
    pub fn server_operation(&self, op: Value, project: &str) {
        self.send(Event {
            kind: "operation",
            timestamp: now(),
            metadata: op,
            location: "none",
            project: project.into(),
            server_only: true,
        });
    }

    /// A security event (`audit`), in LXD's `logging` shape. Its project is empty, so only
    /// administrators may see it; [`Filter::passes`] checks that again.
    pub fn logging(&self, metadata: Value, timestamp: String) {
        self.send(Event {
            kind: "logging",
            timestamp,
            metadata,
            location: "none",
            project: String::new(),
            server_only: true,
        });
    }

    fn send(&self, event: Event) {
        // No subscribers is not an error.
        let _ = self.tx.send(Arc::new(event));
    }
}

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
    let rx = d.events.tx.subscribe();
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
        if event.kind == "logging" {
            return rights.admin;
        }
        (rights.admin || !event.server_only)
            && crate::operations::project_visible(&rights, &event.project)
            && crate::operations::project_selected(
                &self.caller.project,
                self.all_projects,
                &event.project,
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
                Ok(e) if kinds.iter().any(|k| k == e.kind) && filter.passes(&e) => {
                    let Ok(text) = serde_json::to_string(&*e) else { continue };
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
