//! `/1.0/instances/<name>/console`: the console log (what the init wrote to its stdout and
//! stderr) with GET, emptied with DELETE, as LXD 5.0's `lxc console --show-log` uses it; and
//! `/1.0/instances/<name>/logs[/<file>]`: the console log and recorded exec output by name.

use crate::body::Json;
use crate::caller::Caller;
use crate::channels;
use crate::error::{ApiError, ApiResult};
use crate::response;
use crate::service::instances::{find, Keyed};
use crate::state::Daemon;
use axum::extract::ws::Message;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
pub use rxd_api::instance::InstanceConsolePost as ConsolePost;
use serde_json::Value;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

/// At most this much of the end of the log is returned.
pub const MAX_LOG_BYTES: u64 = 1 << 20;

fn open_log(path: &std::path::Path, write: bool) -> ApiResult<Option<std::fs::File>> {
    match std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Log bytes, as LXD serves them.
fn raw(bytes: Vec<u8>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response()
}

pub async fn get(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let path = d.runtime.console_log(&row.key());
    let text = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let Some(mut f) = open_log(&path, false)? else {
            return Ok(Vec::new());
        };
        let len = f.metadata().map_err(ApiError::internal)?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX_LOG_BYTES)))
            .map_err(ApiError::internal)?;
        let mut buf = Vec::new();
        f.take(MAX_LOG_BYTES)
            .read_to_end(&mut buf)
            .map_err(ApiError::internal)?;
        Ok(buf)
    })
    .await??;
    Ok(raw(text))
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    if let Some(f) = open_log(&d.runtime.console_log(&row.key()), true)? {
        f.set_len(0).map_err(ApiError::internal)?;
    }
    Ok(response::empty())
}

/// A log file's name as this API accepts it: the console log or recorded exec output.
fn log_name(file: &str) -> ApiResult<&str> {
    let recorded = file
        .strip_prefix("exec_")
        .and_then(|rest| {
            rest.strip_suffix(".stdout")
                .or_else(|| rest.strip_suffix(".stderr"))
        })
        .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    if file == "console.log" || recorded {
        Ok(file)
    } else {
        Err(ApiError::NotFound("Log file not found".into()))
    }
}

/// `GET /1.0/instances/<name>/logs`: the instance's log files.
pub async fn logs(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let mut files: Vec<String> = match std::fs::read_dir(d.runtime.logs_dir(&row.key())) {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|f| log_name(f).is_ok())
            .map(|f| format!("/1.0/instances/{}/logs/{f}", row.name))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    Ok(response::sync(files))
}

pub async fn log_file(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((name, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let path = d.runtime.logs_dir(&row.key()).join(log_name(&file)?);
    let text = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let Some(f) = open_log(&path, false)? else {
            return Err(ApiError::NotFound("Log file not found".into()));
        };
        let mut buf = Vec::new();
        f.take(MAX_LOG_BYTES * 32)
            .read_to_end(&mut buf)
            .map_err(ApiError::internal)?;
        Ok(buf)
    })
    .await??;
    Ok(raw(text))
}

pub async fn delete_log_file(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path((name, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    let file = log_name(&file)?;
    if file == "console.log" {
        return Err(ApiError::BadRequest(
            "The console log is emptied with DELETE /1.0/instances/<name>/console".into(),
        ));
    }
    match std::fs::remove_file(d.runtime.logs_dir(&row.key()).join(file)) {
        Ok(()) => Ok(response::empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::NotFound("Log file not found".into()))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// `POST /1.0/instances/<name>/console`: attach to the console, as LXD 5.0: a websocket
/// operation whose channel `0` carries the terminal both ways and `control` its size. Ends when
/// the client goes, the container stops, or the client's certificate is revoked.
pub async fn attach(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<ConsolePost>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    if !matches!(req.kind.as_str(), "" | "console") {
        return Err(ApiError::BadRequest(format!(
            "Console type {:?} is not supported: containers have a text console only",
            req.kind
        )));
    }
    if d.runtime.init(&row.key()).is_none() {
        return Err(ApiError::BadRequest("Instance is not running".into()));
    }
    let socket = d.runtime.console_socket(&row.key());
    if !socket.exists() {
        return Err(ApiError::BadRequest(
            "This container has no console terminal (its state directory path is too long)".into(),
        ));
    }
    let url = format!("/1.0/instances/{}", row.name);
    let op = d.operations.start_class(
        &d.events,
        "websocket",
        "Showing console",
        &row.project,
        crate::operations::instance_resources(&url),
        false,
    );
    let (fds, receivers) = d.exec_sessions.open(&op.id, &["0", "control"]);
    let revocation = channels::watch_revocation(&d.connections, &caller);
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let result = relay(&socket, &req, receivers, revocation).await;
        d2.exec_sessions.close(&op2.id);
        op2.finish(
            &d2.events,
            result.map(|()| Value::Null).map_err(|e| e.to_string()),
        );
    });
    let mut shown = op.to_json();
    shown["metadata"]["fds"] = Value::Object(fds);
    Ok(response::operation(op.url(), shown))
}

async fn relay(
    socket: &std::path::Path,
    req: &ConsolePost,
    mut receivers: channels::Receivers,
    revocation: channels::Revocation,
) -> ApiResult<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (r0, rc) = (
        receivers.remove("0").expect("channel 0"),
        receivers.remove("control").expect("control channel"),
    );
    let connected = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let (a, c) = tokio::join!(r0, rc);
        Some((a.ok()?, c.ok()?))
    })
    .await;
    let Ok(Some((ws0, mut control))) = connected else {
        return Err(ApiError::BadRequest(
            "Timed out waiting for websockets to connect".into(),
        ));
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| ApiError::BadRequest(format!("The console is gone: {e}")))?;
    let (mut from_console, mut to_console) = stream.into_split();
    if let (Ok(width @ 1..), Ok(height @ 1..)) =
        (u32::try_from(req.width), u32::try_from(req.height))
    {
        let _ = to_console
            .write_all(&rxd_core::pty::resize(width, height))
            .await;
    }
    let (_registration, mut revoked) = match revocation {
        Some((r, rx)) => (Some(r), Some(rx)),
        None => (None, None),
    };
    let (mut sink, mut stream) = ws0.split();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = from_console.read(&mut buf) => match n {
                Ok(n) if n > 0 => {
                    if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
                // The container stopped (or another client took the console).
                _ => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    for chunk in b.chunks(64 * 1024) {
                        if to_console.write_all(&rxd_core::pty::data(chunk)).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    let _ = to_console.write_all(&rxd_core::pty::data(t.as_bytes())).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            msg = control.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(c) = serde_json::from_str::<channels::Control>(&text) {
                        if let (true, Some((w, h))) = (c.command == "window-resize", c.size()) {
                            let _ = to_console.write_all(&rxd_core::pty::resize(w, h)).await;
                        }
                    }
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break,
            },
            _ = channels::revocation(&mut revoked) => {
                tracing::info!("closing a console session: the client's certificate was revoked");
                break;
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    let _ = control.send(Message::Close(None)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_log_names_are_served() {
        for ok in ["console.log", "exec_0a1b-2c.stdout", "exec_ff.stderr"] {
            assert!(log_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../console.log",
            "exec_.stdout",
            "exec_x/../../etc.stdout",
            "exec_zz.stdout",
            "lxc.conf",
            "",
        ] {
            assert!(log_name(bad).is_err(), "{bad}");
        }
    }
}
