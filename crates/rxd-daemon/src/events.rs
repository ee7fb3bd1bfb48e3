//! Lifecycle, operation and logging events: one broadcast channel every stream subscribes to.
//! What a subscriber may see is decided where the stream is served (`routes::events`).

use crate::caller::Caller;
use crate::sync::now_rfc3339 as now;
use rxd_api::event::{EventLifecycle, EventLifecycleRequestor};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::broadcast;

/// An event as sent (`wire`), and who it is for.
#[derive(Debug, Clone)]
pub struct Event {
    pub wire: rxd_api::event::Event,
    /// About the server itself (the trust store): only for server administrators, whatever
    /// the project it is shown in.
    pub server_only: bool,
}

impl Event {
    fn new(
        kind: &str,
        timestamp: String,
        metadata: Value,
        project: &str,
        server_only: bool,
    ) -> Event {
        Event {
            wire: rxd_api::event::Event {
                kind: kind.to_owned(),
                timestamp,
                metadata,
                location: "none".to_owned(),
                project: project.to_owned(),
            },
            server_only,
        }
    }
}

/// Cheap to clone: every clone sends into the same channel.
#[derive(Clone)]
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

impl Events {
    /// A lifecycle event, e.g. `certificate-created` for `/1.0/certificates/<fp>`.
    pub fn lifecycle(&self, action: &str, source: &str, project: &str, by: &Caller) {
        let metadata = EventLifecycle {
            action: action.into(),
            source: source.into(),
            context: Map::new(),
            requestor: Some(EventLifecycleRequestor {
                username: by.identity.user_name(),
                protocol: by.identity.method().into(),
                address: by.conn.peer(),
            }),
        };
        // Strings and an empty map: serializing cannot fail.
        let metadata = serde_json::to_value(metadata).unwrap_or(Value::Null);
        self.send(Event::new("lifecycle", now(), metadata, project, false));
    }

    /// A lifecycle event for what the daemon did by itself (autostart, scheduled snapshots):
    /// no requestor, as LXD sends them.
    pub fn lifecycle_by_daemon(&self, action: &str, source: &str, project: &str) {
        let metadata = EventLifecycle {
            action: action.into(),
            source: source.into(),
            context: Map::new(),
            requestor: None,
        };
        let metadata = serde_json::to_value(metadata).unwrap_or(Value::Null);
        self.send(Event::new("lifecycle", now(), metadata, project, false));
    }

    pub fn operation(&self, op: Value, project: &str) {
        self.send(Event::new("operation", now(), op, project, false));
    }

    /// An operation about the server (a certificate add token): shown in `project`, as LXD
    /// does, but sent to server administrators only, as `GET /1.0/operations` lists it.
    pub fn server_operation(&self, op: Value, project: &str) {
        self.send(Event::new("operation", now(), op, project, true));
    }

    /// A security event (`audit`), in LXD's `logging` shape. Its project is empty, so only
    /// administrators may see it; [`Filter::passes`] checks that again.
    pub fn logging(&self, metadata: Value, timestamp: String) {
        self.send(Event::new("logging", timestamp, metadata, "", true));
    }

    /// A new stream of every event sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    fn send(&self, event: Event) {
        // No subscribers is not an error.
        let _ = self.tx.send(Arc::new(event));
    }
}
