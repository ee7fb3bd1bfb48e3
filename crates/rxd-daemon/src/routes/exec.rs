//! `POST /1.0/instances/<name>/exec` (LXD 5.0's exec protocol, non-interactive) and the
//! operation websockets `GET /1.0/operations/<id>/websocket?secret=`.
//!
//! Each channel (`0`, `1`, `2`, `control`) has its own random secret, returned once, in the
//! reply to the POST, never by `GET /1.0/operations`. A secret is compared in constant time and
//! works once; channels not connected within 5 s fail the operation. The command runs through
//! the `rxd-shim` helper (inside every namespace of the container, its cgroups, its seccomp
//! filter, no_new_privs, fds 0-2 only; see `runtime/exec.rs`); its exit status is the
//! operation's `return`. A revoked client's session is killed and its channels closed.

use crate::body::Json;
use crate::caller::Caller;
use crate::channels;
use crate::error::{ApiError, ApiResult};
use crate::response;
use crate::service::instances::{find, project_suffix, Keyed};
use crate::state::Daemon;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use rxd_runtime::{ExecHelper, ExecSpec};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the client has to connect the channels.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// LXD's `InstanceExecPost`. `width` and `height` are Go `int`s: clamped into a terminal's
/// range where a terminal is made.
pub use rxd_api::instance::InstanceExecPost as ExecPost;

/// A terminal width or height from a request (a Go `int`), within 1..=10000.
fn terminal_dimension(v: i64) -> u32 {
    u32::try_from(v.clamp(1, 10_000)).unwrap_or(1)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The command's environment: the request's values, then `environment.*` keys, then defaults.
fn environment(
    req: &BTreeMap<String, String>,
    config: &BTreeMap<String, String>,
    user: u32,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    env.insert("LANG".into(), "C.UTF-8".into());
    if user == 0 {
        env.insert("HOME".into(), "/root".into());
        env.insert("USER".into(), "root".into());
    }
    for (k, v) in config {
        if let Some(var) = k.strip_prefix("environment.") {
            env.insert(var.to_owned(), v.clone());
        }
    }
    env.extend(req.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

pub async fn post(
    State(d): State<Arc<Daemon>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<ExecPost>,
) -> ApiResult<Response> {
    let row = find(&d, &caller.project, &name).await?;
    if d.runtime.init(&row.key()).is_none() {
        return Err(ApiError::BadRequest("Instance is not running".into()));
    }
    if d.runtime.frozen(&row.key()) {
        return Err(ApiError::BadRequest("Instance is frozen".into()));
    }
    if req.command.is_empty() || req.command.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::BadRequest("A command is required".into()));
    }
    if let Some(bad) = req
        .environment
        .iter()
        .find(|(k, v)| !is_env_name(k) || v.contains('\0'))
    {
        return Err(ApiError::BadRequest(format!(
            "Invalid environment variable {:?}",
            bad.0
        )));
    }
    if !req.cwd.is_empty() && (!req.cwd.starts_with('/') || req.cwd.contains('\0')) {
        return Err(ApiError::BadRequest("cwd must be an absolute path".into()));
    }
    if req.interactive && !req.wait_for_websocket {
        return Err(ApiError::BadRequest(
            "Interactive exec needs wait-for-websocket".into(),
        ));
    }
    if req.record_output && (req.wait_for_websocket || req.interactive) {
        return Err(ApiError::BadRequest(
            "record-output works only without websockets and without a terminal".into(),
        ));
    }
    // `environment.*` from the instance's profiles too.
    let expanded = crate::service::expand::expanded(&d, &row).await?.config;
    let env = environment(&req.environment, &expanded, req.user);
    let url = format!("/1.0/instances/{}", row.name);
    let resources = crate::operations::instance_resources(&url);
    // The environment stays out: the operation is readable by every auditor of the project (and
    // its events by every subscriber), and environments carry secrets (`DB_PASSWORD=...`).
    let public = json!({"command": req.command, "interactive": req.interactive});

    if !req.wait_for_websocket {
        let op = d.operations.start(
            &d.events,
            "Executing command",
            &row.project,
            resources,
            false,
        );
        op.set_metadata(public.clone());
        let (d2, op2) = (d.clone(), op.clone());
        let id = op.id.clone();
        tokio::spawn(async move {
            let result = run_detached(&d2, &row.key(), &id, &req, &env).await;
            let result = result.map(|(code, output)| {
                let mut md = public;
                md["return"] = json!(code);
                if let Some(output) = output {
                    md["output"] = output;
                }
                md
            });
            op2.finish(&d2.events, result.map_err(|e| e.to_string()));
        });
        return Ok(response::operation(op.url(), op.to_json()));
    }

    let op = d.operations.start_class(
        &d.events,
        "websocket",
        "Executing command",
        &row.project,
        resources,
        false,
    );
    op.set_metadata(public.clone());
    // A terminal is one channel both ways; pipes are three.
    let names: &[&'static str] = if req.interactive {
        &["0", "control"]
    } else {
        &["0", "1", "2", "control"]
    };
    let (fds, receivers) = d.exec_sessions.open(&op.id, names);
    let revoked = channels::watch_revocation(&d.connections, &caller);
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let result = run_attached(&d2, &row.key(), &req, &env, receivers, revoked).await;
        d2.exec_sessions.close(&op2.id);
        let result = result.map(|code| {
            let mut md = public;
            md["return"] = json!(code);
            md
        });
        op2.finish(&d2.events, result.map_err(|e| e.to_string()));
    });
    // The secrets go to this caller only, in this reply.
    let mut shown = op.to_json();
    shown["metadata"]["fds"] = Value::Object(fds);
    Ok(response::operation(op.url(), shown))
}

/// The command's environment, in a private file the helper reads (and removes); removed here
/// too in case the helper never got that far.
struct EnvFile(std::path::PathBuf);

impl EnvFile {
    fn write(d: &Daemon, env: &BTreeMap<String, String>) -> ApiResult<EnvFile> {
        d.runtime
            .write_exec_env(env)
            .map(EnvFile)
            .map_err(ApiError::internal)
    }
}

impl Drop for EnvFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The most of each stream `record-output` keeps.
const MAX_RECORDED: u64 = 16 << 20;

/// Copy up to [`MAX_RECORDED`] bytes of `from` into the new file `path`; the rest is read and
/// dropped, so the command never blocks on a full pipe.
async fn record(mut from: impl tokio::io::AsyncRead + Unpin, path: std::path::PathBuf) {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path);
    let mut file = file.ok().map(tokio::fs::File::from_std);
    let (mut buf, mut kept) = (vec![0u8; 32 * 1024], 0u64);
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = (MAX_RECORDED - kept).min(n as u64) as usize;
        if let (Some(f), true) = (file.as_mut(), room > 0) {
            if f.write_all(&buf[..room]).await.is_err() {
                file = None;
            }
            kept += room as u64;
        }
    }
}

/// The helper that runs the request's command in the container.
fn helper(
    d: &Daemon,
    name: &str,
    req: &ExecPost,
    env_file: &EnvFile,
    pid_file: Option<&std::path::Path>,
    pty: Option<(u32, u32)>,
) -> ApiResult<ExecHelper> {
    let spec = ExecSpec {
        uid: req.user,
        gid: req.group,
        cwd: &req.cwd,
        env_file: &env_file.0,
        command: &req.command,
        pid_file,
        pty,
    };
    d.runtime
        .exec_helper(name, &spec)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

async fn run_detached(
    d: &Daemon,
    name: &str,
    op_id: &str,
    req: &ExecPost,
    env: &BTreeMap<String, String>,
) -> ApiResult<(i32, Option<Value>)> {
    use std::process::Stdio;
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let env_file = EnvFile::write(d, env)?;
    let mut helper = helper(d, name, req, &env_file, None, None)?;
    helper
        .command()
        .stdin(Stdio::null())
        .stdout(piped(req.record_output))
        .stderr(piped(req.record_output));
    let mut child = helper.spawn(&d.runtime).await.map_err(ApiError::internal)?;
    let mut output = None;
    let mut recorders = Vec::new();
    if req.record_output {
        let dir = d.runtime.logs_dir(name);
        let mut urls = serde_json::Map::new();
        for (fd, stream) in [("1", "stdout"), ("2", "stderr")] {
            let file = format!("exec_{op_id}.{stream}");
            let (project, instance) = rxd_core::name::split_instance_key(name);
            let suffix = project_suffix(project);
            urls.insert(
                fd.into(),
                json!(format!("/1.0/instances/{instance}/logs/{file}{suffix}")),
            );
            let path = dir.join(&file);
            recorders.push(match stream {
                "stdout" => tokio::spawn(record(child.stdout.take().expect("piped"), path)),
                _ => tokio::spawn(record(child.stderr.take().expect("piped"), path)),
            });
        }
        output = Some(Value::Object(urls));
    }
    let status = child.wait().await.map_err(ApiError::internal)?;
    for mut r in recorders {
        // A process left holding the pipes does not keep a recorder alive.
        if tokio::time::timeout(Duration::from_secs(2), &mut r)
            .await
            .is_err()
        {
            r.abort();
        }
    }
    Ok((exit_code(status), output))
}

/// The pumps of one session: pipes (`0`, `1`, `2`) or a terminal (`0` both ways).
struct Pumps {
    /// Output to the client: drained when the command ends.
    outputs: Vec<tokio::task::JoinHandle<()>>,
    /// Input from the client: stopped when the command ends.
    inputs: Vec<tokio::task::JoinHandle<()>>,
    /// Resize frames for the terminal, if there is one.
    resize: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
}

fn pipes(
    child: &mut tokio::process::Child,
    ws0: WebSocket,
    ws1: WebSocket,
    ws2: WebSocket,
) -> Pumps {
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    Pumps {
        inputs: vec![tokio::spawn(pump_in(ws0, stdin))],
        outputs: vec![
            tokio::spawn(pump_out(stdout, ws1)),
            tokio::spawn(pump_out(stderr, ws2)),
        ],
        resize: None,
    }
}

fn terminal(child: &mut tokio::process::Child, ws0: WebSocket) -> Pumps {
    use futures_util::{SinkExt, StreamExt};
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (frames, mut queued) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(f) = queued.recv().await {
            if stdin.write_all(&f).await.is_err() {
                break;
            }
        }
    });
    let (mut sink, mut stream) = ws0.split();
    let keys = frames.clone();
    let input = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            // In frames the relay accepts, however large the message (a paste, say).
            for chunk in data.chunks(64 * 1024) {
                if keys.send(rxd_core::pty::data(chunk)).await.is_err() {
                    return;
                }
            }
        }
    });
    // The terminal's output, and the helper's own last words if it cannot start the command.
    let output = tokio::spawn(async move {
        let (mut out, mut err) = (vec![0u8; 32 * 1024], vec![0u8; 4096]);
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            let chunk = tokio::select! {
                n = stdout.read(&mut out), if out_open => match n {
                    Ok(n) if n > 0 => out[..n].to_vec(),
                    _ => { out_open = false; continue }
                },
                n = stderr.read(&mut err), if err_open => match n {
                    Ok(n) if n > 0 => err[..n].to_vec(),
                    _ => { err_open = false; continue }
                },
            };
            if sink.send(Message::Binary(chunk.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    Pumps {
        inputs: vec![input, writer],
        outputs: vec![output],
        resize: Some(frames),
    }
}

async fn run_attached(
    d: &Arc<Daemon>,
    name: &str,
    req: &ExecPost,
    env: &BTreeMap<String, String>,
    mut receivers: channels::Receivers,
    revoked: channels::Revocation,
) -> ApiResult<i32> {
    let timed_out = || ApiError::BadRequest("Timed out waiting for websockets to connect".into());
    let mut take = |fd| receivers.remove(fd);
    let (r0, r1, r2, rc) = (take("0"), take("1"), take("2"), take("control"));
    let r0 = r0.expect("channel 0");
    // Pipes: 0, 1 and 2 must connect (control may come later); a terminal: 0 and control.
    let mut control: Option<WebSocket> = None;
    let mut control_rx = None;
    let channels = if req.interactive {
        let rc = rc.expect("control channel");
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let (a, c) = tokio::join!(r0, rc);
            Some((a.ok()?, c.ok()?))
        })
        .await;
        let Ok(Some((ws0, wsc))) = connected else {
            return Err(timed_out());
        };
        control = Some(wsc);
        (ws0, None)
    } else {
        let (r1, r2) = (r1.expect("channel 1"), r2.expect("channel 2"));
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let (a, b, c) = tokio::join!(r0, r1, r2);
            Some((a.ok()?, b.ok()?, c.ok()?))
        })
        .await;
        let Ok(Some((ws0, ws1, ws2))) = connected else {
            return Err(timed_out());
        };
        control_rx = rc;
        (ws0, Some((ws1, ws2)))
    };
    let pid_file = d.runtime.exec_pid_file();
    let env_file = EnvFile::write(d, env)?;
    let pty = req.interactive.then(|| {
        (
            terminal_dimension(req.width),
            terminal_dimension(req.height),
        )
    });
    let mut helper = helper(d, name, req, &env_file, Some(&pid_file), pty)?;
    helper
        .command()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = helper.spawn(&d.runtime).await.map_err(ApiError::internal)?;
    let pumps = match channels {
        (ws0, Some((ws1, ws2))) => pipes(&mut child, ws0, ws1, ws2),
        (ws0, None) => terminal(&mut child, ws0),
    };

    // Signals from the control channel, until the command ends or the client is revoked.
    let (_registration, mut revoked_rx) = match revoked {
        Some((r, rx)) => (Some(r), Some(rx)),
        None => (None, None),
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(ApiError::internal)?,
            ws = async { control_rx.as_mut().expect("pending").await }, if control_rx.is_some() => {
                control_rx = None;
                control = ws.ok();
            }
            msg = async { control.as_mut().expect("open").recv().await }, if control.is_some() => {
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<channels::Control>(&text) {
                            Ok(c) if c.command == "signal" && (1..=64).contains(&c.signal) => {
                                signal(d, &pid_file, c.signal).await;
                            }
                            Ok(c) if c.command == "window-resize" => {
                                if let (Some(tx), Some((w, h))) = (&pumps.resize, c.size()) {
                                    let _ = tx.send(rxd_core::pty::resize(w, h)).await;
                                }
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(_)) => {}
                    // The control channel closing while the command runs kills it, as in LXD.
                    None | Some(Err(_)) => {
                        control = None;
                        signal(d, &pid_file, 9).await;
                    }
                }
            }
            _ = channels::revocation(&mut revoked_rx) => {
                tracing::info!(instance = %name, "killing an exec session: the client's certificate was revoked");
                // The command first (by its pid, once the helper has written it), then the
                // helper: killed first, it could leave a command that has not yet armed its
                // parent-death signal.
                signal(d, &pid_file, 9).await;
                let _ = child.start_kill();
                revoked_rx = None;
            }
        }
    };
    // Output still buffered is delivered; a process left holding the pipes does not hold us.
    let Pumps {
        outputs, inputs, ..
    } = pumps;
    for mut pump in outputs {
        if tokio::time::timeout(Duration::from_secs(2), &mut pump)
            .await
            .is_err()
        {
            tracing::warn!(instance = %name, "an exec output stream stayed open after the command ended");
            // Its websocket closes with it.
            pump.abort();
        }
    }
    for task in inputs {
        task.abort();
    }
    if let Some(mut c) = control {
        let _ = c.send(Message::Close(None)).await;
    }
    let _ = std::fs::remove_file(&pid_file);
    Ok(exit_code(status))
}

/// The command's status as LXD reports it: its exit code, or 128+N when signal N ended it
/// (or ended the helper, which takes the command with it).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Send `sig` to the command. The helper writes its pid once it has started it, which can be
/// just after the channels connect: a signal sent before then waits (up to 2 s) for it.
async fn signal(d: &Daemon, pid_file: &std::path::Path, sig: i32) {
    for _ in 0..200 {
        if d.runtime.signal_exec(pid_file, sig) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Websocket → the command's stdin; a close, or an empty message (LXD's client), is end of input.
async fn pump_in(mut ws: WebSocket, mut stdin: tokio::process::ChildStdin) {
    while let Some(Ok(msg)) = ws.recv().await {
        let data = match msg {
            Message::Binary(b) => b,
            Message::Text(t) => t.as_bytes().to_vec().into(),
            Message::Close(_) => break,
            _ => continue,
        };
        if data.is_empty() || stdin.write_all(&data).await.is_err() {
            break;
        }
    }
    drop(stdin);
    // Keep the channel open until the command is done; closing it is the other side's job.
    while let Some(Ok(msg)) = ws.recv().await {
        if matches!(msg, Message::Close(_)) {
            break;
        }
    }
}

/// The command's stdout or stderr → websocket, closed at end of output.
async fn pump_out(mut from: impl tokio::io::AsyncRead + Unpin, mut ws: WebSocket) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if ws
                    .send(Message::Binary(buf[..n].to_vec().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = ws.send(Message::Close(None)).await;
}

#[derive(Deserialize)]
pub struct SecretQuery {
    #[serde(default)]
    secret: String,
}

/// `GET /1.0/operations/<id>/websocket?secret=`: the secret is the credential (as in LXD), so
/// no trust is needed; each works once.
pub async fn websocket(
    State(d): State<Arc<Daemon>>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<SecretQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    crate::origin::check_origin(&headers)?;
    // Checked before the secret is spent, so a plain GET does not burn a channel.
    let upgrade = upgrade.map_err(|_| {
        ApiError::BadRequest("This endpoint is a websocket: upgrade the connection".into())
    })?;
    let claimed = d.exec_sessions.claim(&id, &q.secret);
    let Some((sender, max_message)) = claimed else {
        return Err(ApiError::NotAuthorized);
    };
    let upgrade = match max_message {
        Some(n) => upgrade.max_message_size(n).max_frame_size(n),
        None => upgrade,
    };
    Ok(upgrade.on_upgrade(move |ws| async move {
        let _ = sender.send(ws);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_precedence() {
        let config: BTreeMap<String, String> = [
            ("environment.FOO".to_string(), "config".to_string()),
            ("environment.BAR".to_string(), "config".to_string()),
        ]
        .into();
        let req: BTreeMap<String, String> = [("FOO".to_string(), "request".to_string())].into();
        let env = environment(&req, &config, 0);
        assert_eq!(env["FOO"], "request");
        assert_eq!(env["BAR"], "config");
        assert_eq!(env["HOME"], "/root");
        assert_eq!(env["LANG"], "C.UTF-8");
        assert!(env["PATH"].contains("/usr/bin"));
        assert!(!environment(&req, &config, 1000).contains_key("HOME"));
    }
}
