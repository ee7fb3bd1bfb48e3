//! Entry points for the fuzz targets in `fuzz/` (not an API): the request bodies, query strings,
//! file headers and websocket control frames clients send, decoded exactly as the handlers
//! decode them. Nothing here runs in the daemon.

use crate::body;
use crate::channels;
use crate::routes::{exec, files, operations};
use rxd_api::{certificate, grant, image, instance, project, server, snapshot, warning};
use serde::de::DeserializeOwned;

/// The request body types, by the number [`decode_request_body`] takes.
pub const REQUEST_BODIES: &[&str] = &[
    "POST /1.0/certificates",
    "PUT|PATCH /1.0/certificates/{fingerprint}",
    "POST /1.0/instances/{name}/console",
    "POST /1.0/instances/{name}/exec",
    "POST /1.0/grants",
    "POST /1.0/images/aliases",
    "PUT|PATCH /1.0/images/aliases/{name}",
    "POST /1.0/images/aliases/{name}",
    "PUT|PATCH /1.0/instances/{name}",
    "POST /1.0/instances/{name}",
    "POST /1.0/instances",
    "PUT /1.0/instances/{name}/state",
    "POST /1.0/projects",
    "PUT|PATCH /1.0/projects/{name}",
    "POST /1.0/projects/{name}",
    "PUT|PATCH /1.0",
    "POST /1.0/instances/{name}/snapshots",
    "POST /1.0/instances/{name}/snapshots/{snapshot}",
    "PUT|PATCH /1.0/images/{fingerprint}",
    "PUT|PATCH /1.0/warnings/{uuid}",
];

fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), String> {
    body::decode::<T>(bytes)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Decode `bytes` as the body of endpoint `kind` (an index into [`REQUEST_BODIES`], modulo
/// its length), as `body::Json` does: into the rxd-api type the handler takes.
pub fn decode_request_body(kind: u8, bytes: &[u8]) -> Result<(), String> {
    match usize::from(kind) % REQUEST_BODIES.len() {
        0 => json::<certificate::CertificatesPost>(bytes),
        1 => json::<certificate::CertificatePut>(bytes),
        2 => json::<instance::InstanceConsolePost>(bytes),
        3 => json::<instance::InstanceExecPost>(bytes),
        4 => json::<grant::GrantsPost>(bytes),
        5 => json::<image::ImageAliasesPost>(bytes),
        6 => json::<image::ImageAliasesEntryPut>(bytes),
        7 => json::<image::ImageAliasesEntryPost>(bytes),
        8 => json::<instance::InstancePut>(bytes),
        9 => json::<instance::InstancePost>(bytes),
        10 => json::<instance::InstancesPost>(bytes),
        11 => json::<instance::InstanceStatePut>(bytes),
        12 => json::<project::ProjectsPost>(bytes),
        13 => json::<project::ProjectPut>(bytes),
        14 => json::<project::ProjectPost>(bytes),
        15 => json::<server::ServerPut>(bytes),
        16 => json::<snapshot::InstanceSnapshotsPost>(bytes),
        17 => json::<snapshot::InstanceSnapshotPost>(bytes),
        18 => json::<image::ImagePut>(bytes),
        _ => json::<warning::WarningPut>(bytes),
    }
}

fn query<T: DeserializeOwned>(q: &str) -> Result<(), String> {
    let uri: http::Uri = format!("/1.0?{q}").parse().map_err(|e| format!("{e}"))?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Decode `q` as the query string of a listing (0), `/1.0/events` (1), an operation's `wait`
/// (2), the files API (3) or an exec/console websocket (4), as axum's `Query` does.
pub fn decode_query(kind: u8, q: &str) -> Result<(), String> {
    match kind % 5 {
        0 => query::<crate::listing::ListQuery>(q),
        1 => query::<crate::routes::events::EventsQuery>(q),
        2 => query::<operations::WaitQuery>(q),
        3 => query::<files::PathQuery>(q),
        _ => query::<exec::SecretQuery>(q),
    }
}

/// An `X-LXD-uid`, `X-LXD-gid` or `X-LXD-mode` header's number, as the files API reads it.
pub fn file_header_int(text: &str) -> Option<i64> {
    files::parse_int(text)
}

/// What the exec and console handlers do with a text message on the control websocket.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlAction {
    /// Send this signal to the command (exec only).
    Signal(i32),
    /// Write this resize frame to the terminal relay.
    Resize(Vec<u8>),
    Ignore,
}

/// A control frame, decoded and judged as `routes/exec.rs` and `routes/console.rs` do.
pub fn control_frame(text: &str) -> ControlAction {
    match serde_json::from_str::<channels::Control>(text) {
        Ok(c) if c.command == "signal" && (1..=64).contains(&c.signal) => {
            ControlAction::Signal(c.signal)
        }
        Ok(c) if c.command == "window-resize" => match c.size() {
            Some((w, h)) => ControlAction::Resize(rxd_core::pty::resize(w, h)),
            None => ControlAction::Ignore,
        },
        _ => ControlAction::Ignore,
    }
}
