//! Copying an instance between two servers: LXD's stateless migration API (`lxc copy` and
//! `lxc move` between remotes, in pull, push or relay mode). The source packs the instance, with
//! its snapshots unless `instance_only`, as a backup in LXD's layout and streams it on the `fs`
//! channel; the target takes it as it takes an imported backup (the same bounded unpack, the same
//! confinement of the instance and of every snapshot it brings), with the instance's config,
//! devices and profiles as the request that created it says. The `control` channel carries the
//! source's header and the target's result as JSON text frames: rxd's own stream, which LXD's
//! API leaves to the servers. LXD's protobuf header and rsync stream are not spoken; an LXD peer
//! is told so in its own protobuf. Whichever server dialled the other, or a client relaying both,
//! the source sends and the target receives. The source packs into a file first (a running
//! container is frozen only while it is read, not while a slow peer takes the stream); the
//! header announces the stream's length and digest, and a stream cut short or changed is never
//! imported. Every frame has a deadline, and messages are bounded.

use crate::caller::Caller;
use crate::channels::{Frame, Pipe};
use crate::error::{ApiError, ApiResult};
use crate::service::backups::{self, Requested};
use crate::service::images::{self, Upload};
use crate::service::instances::{self, Keyed};
use crate::state::Daemon;
use bytes::Bytes;
use rxd_store::InstanceRow;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The channels of a migration operation, as LXD names them (no `criu`: never live).
pub const CHANNELS: [&str; 2] = ["control", "fs"];
/// How long an operation waits for its channels to be connected, and a target for the header.
pub const CONNECT_WAIT: Duration = Duration::from_secs(60);
/// The stream format this server sends and takes.
const FORMAT: &str = "rxd-backup/1";
/// Bytes per `fs` frame.
const FRAME: usize = 256 * 1024;
/// The largest message either side takes on a migration's channels.
pub const MAX_MESSAGE: usize = 1 << 20;
/// How long a peer may leave a frame unsent or unread before the migration fails.
const STALL: Duration = Duration::from_secs(60);
/// How long a target may take to import what it received, and a source to pack before it
/// speaks.
const RESULT_WAIT: Duration = Duration::from_secs(3600);

/// The source's first message on `control`: what follows on `fs`, exactly.
#[derive(Serialize, Deserialize)]
struct Header {
    rxd_migration: String,
    /// The stream's length and SHA-256 (hex).
    bytes: u64,
    sha256: String,
}

/// The last message on `control`: the target's result (or the source's failure).
#[derive(Serialize, Deserialize)]
struct Outcome {
    success: bool,
    #[serde(default)]
    message: String,
}

fn outcome(result: &Result<(), String>) -> Frame {
    let o = match result {
        Ok(()) => Outcome {
            success: true,
            message: String::new(),
        },
        Err(e) => Outcome {
            success: false,
            message: e.clone(),
        },
    };
    Frame::Text(serde_json::to_string(&o).unwrap_or_default())
}

/// LXD's `MigrationControl{success: false, message}` in protobuf (field 1 varint, field 2
/// bytes), what an LXD peer reads on its control channel.
fn lxd_refusal(message: &str) -> Frame {
    let mut out = vec![0x08, 0x00, 0x12];
    let mut len = message.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(message.as_bytes());
    Frame::Binary(Bytes::from(out))
}

const LXD_PEER: &str = "The other server speaks LXD's migration stream (protobuf and rsync), which rxd does not: copy between rxd servers, or through a backup (lxc export, lxc import)";

/// A migration operation's channel secrets, by channel.
pub type Secrets = serde_json::Map<String, serde_json::Value>;

/// What a migration's operation is handed to wait for its channels' sockets.
pub type Connect = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<HashMap<&'static str, Pipe>, String>> + Send>,
>;

/// A migration's websocket operation, on either side: its channels wait for their sockets
/// (for at most [`CONNECT_WAIT`] once `work` awaits them, with messages of at most
/// [`MAX_MESSAGE`] bytes); `work`'s result ends it. Until they are connected it may be
/// cancelled (`lxc` cancels a source whose target refused the copy); once data flows it runs
/// to its end. Returns the operation and its channels' secrets, for the reply that made it and
/// no one else.
pub fn channel_operation<F, Fut>(
    d: &Arc<Daemon>,
    description: &str,
    project: &str,
    resources: crate::operations::Resources,
    work: F,
) -> (Arc<crate::operations::Op>, Secrets)
where
    F: FnOnce(Connect) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let op = d.operations.start_class(
        &d.events,
        "websocket",
        description,
        project,
        resources,
        true,
    );
    let (secrets, receivers) = d
        .exec_sessions
        .open_limited(&op.id, &CHANNELS, Some(MAX_MESSAGE));
    let waiting = op.clone();
    let connect: Connect = Box::pin(async move {
        tokio::select! {
            pipes = crate::channels::accept_all(receivers, CONNECT_WAIT) => pipes
                .ok_or_else(|| "The other server did not connect to the migration in time".to_owned()),
            () = waiting.cancelled() => Err("The migration was cancelled".to_owned()),
        }
    });
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let result = work(connect).await;
        d2.exec_sessions.close(&op2.id);
        op2.finish(&d2.events, result.map(|()| serde_json::Value::Null));
    });
    (op, secrets)
}

/// A migration's peer operation: an `https` URL of an operation (`.../1.0/operations/<id>`),
/// as the client hands it over; a caller who is not an administrator may name only servers in
/// `images.allowed_servers` (the server dials it, as it dials image servers).
pub fn check_peer(d: &Daemon, caller: &Caller, operation: &str) -> ApiResult<()> {
    let bad = |why: &str| {
        ApiError::BadRequest(format!("Invalid migration operation {operation:?}: {why}"))
    };
    let rest = operation
        .strip_prefix("https://")
        .ok_or_else(|| bad("it must be an https URL"))?;
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("it names no operation"))?;
    let id = path
        .strip_prefix("1.0/operations/")
        .ok_or_else(|| bad("it is not an operation's URL"))?;
    if authority.is_empty()
        || authority.contains('@')
        || id.is_empty()
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(bad("it is not an operation's URL"));
    }
    let server = format!("https://{authority}");
    if caller.rights.is_admin()
        || rxd_core::config::server_allowed(&crate::sync::read(&d.config), &server)
    {
        return Ok(());
    }
    tracing::warn!(%server, by = %caller.identity.user_name(), "migration with a server not in images.allowed_servers refused");
    Err(ApiError::Forbidden(format!(
        "Migrating with {server} is not allowed: only server administrators may name servers not listed in images.allowed_servers"
    )))
}

/// The channels of the peer's migration operation at `operation` (checked by [`check_peer`]),
/// opened with its `secrets`, trusting exactly `certificate` (PEM; empty: the system's roots).
pub async fn dial(
    operation: &str,
    certificate: &str,
    secrets: &BTreeMap<String, String>,
) -> ApiResult<HashMap<&'static str, Pipe>> {
    let client = rxd_web::WebClient::pinned(certificate)
        .map_err(|e| ApiError::BadRequest(format!("The migration peer's certificate: {e}")))?;
    let mut pipes = HashMap::new();
    for name in CHANNELS {
        let secret = secrets.get(name).ok_or_else(|| {
            ApiError::BadRequest(format!("The migration gives no {name:?} secret"))
        })?;
        let url = format!(
            "{operation}/websocket?secret={}",
            rxd_web::query_escape(secret)
        );
        let ws = client
            .websocket(&url, MAX_MESSAGE)
            .await
            .map_err(|e| ApiError::BadRequest(format!("Migration channel {name:?}: {e}")))?;
        pipes.insert(name, crate::channels::dialled_pipe(ws));
    }
    Ok(pipes)
}

fn take(pipes: &mut HashMap<&'static str, Pipe>, name: &str) -> Result<Pipe, String> {
    pipes
        .remove(name)
        .ok_or_else(|| format!("the migration's {name:?} channel is missing"))
}

/// The source's operation for `what` of `row`: sent to the target operation `target` names
/// (push; this server dials it), else to a target that dials this operation's channels, whose
/// secrets are returned for the reply that made it. A live migration is refused.
pub fn send_operation(
    d: &Arc<Daemon>,
    caller: &Caller,
    row: &InstanceRow,
    what: What,
    live: bool,
    target: Option<rxd_api::instance::InstancePostTarget>,
) -> ApiResult<(Arc<crate::operations::Op>, Option<Secrets>)> {
    if live {
        return Err(ApiError::BadRequest(
            "Unable to perform a live migration: rxd does not checkpoint running containers (no CRIU); stop the instance first or copy it with --stateless"
                .into(),
        ));
    }
    let url = match &what {
        What::Snapshot(snap) => format!(
            "/1.0/instances/{}/snapshots/{snap}{}",
            row.name,
            instances::project_suffix(&row.project)
        ),
        What::Instance { .. } => format!(
            "/1.0/instances/{}{}",
            row.name,
            instances::project_suffix(&row.project)
        ),
    };
    let resources = crate::operations::instance_resources(&url);
    let (d2, caller, project, name) = (
        d.clone(),
        caller.clone(),
        row.project.clone(),
        row.name.clone(),
    );
    match target {
        Some(target) => {
            check_peer(d, &caller, &target.operation)?;
            let work = async move {
                let connect = async {
                    dial(&target.operation, &target.certificate, &target.websockets)
                        .await
                        .map_err(|e| e.to_string())
                };
                send(&d2, &caller, &project, &name, what, connect).await
            };
            let op = crate::service::tasks::spawn(
                d,
                "Migrating instance",
                &row.project,
                resources,
                work,
            );
            Ok((op, None))
        }
        None => {
            let (op, secrets) = channel_operation(
                d,
                "Migrating instance",
                &row.project,
                resources,
                move |connect| async move { send(&d2, &caller, &project, &name, what, connect).await },
            );
            Ok((op, Some(secrets)))
        }
    }
}

/// What a source sends: the instance (with its snapshots unless `instance_only`), or one of
/// its snapshots as an instance of its own (`lxc copy src:c1/snap0 dst:c2`).
pub enum What {
    Instance { instance_only: bool },
    Snapshot(String),
}

/// The source's side: `what` of `project`/`name` packed into a file first, under the
/// instance's action lock (a running container frozen only while it is read), then, with the
/// lock let go, sent on the `fs` channel of the pipes `connect` gives, and the target's result
/// read from `control`.
pub async fn send(
    d: &Arc<Daemon>,
    caller: &Caller,
    project: &str,
    name: &str,
    what: What,
    connect: impl std::future::Future<Output = Result<HashMap<&'static str, Pipe>, String>>,
) -> Result<(), String> {
    let s = |e: ApiError| e.to_string();
    let dir = backups::make_upload_dir(d).map_err(s)?;
    let packed_file =
        Upload::new(dir.join(format!(".migration-out-{}", uuid::Uuid::new_v4().simple())))
            .map_err(s)?;
    let (header, size) = {
        let row = instances::find(d, project, name).await.map_err(s)?;
        // No start, stop, rename, restore or delete while it is read.
        let lock = d.runtime.action_lock(&row.key());
        let _guard = lock.lock().await;
        let row = instances::find(d, project, name).await.map_err(s)?;
        let source = match what {
            What::Instance { instance_only } => backups::Source::Instance { instance_only },
            What::Snapshot(snap) => backups::Source::Snapshot(
                crate::service::snapshots::find_snapshot(d, &row, &snap)
                    .await
                    .map_err(s)?,
            ),
        };
        // Bounded by the server alone: reading an instance takes nothing from its project.
        let limits = rxd_image::Limits {
            max_total_bytes: rxd_core::config::max_unpacked_size(&crate::sync::read(&d.config)),
            ..rxd_image::Limits::default()
        };
        let out = packed_file.open().map_err(s)?;
        let (packed, file) = backups::pack(
            d,
            caller,
            &row,
            source,
            rxd_image::pack::Compression::Zstd,
            out,
            Some(limits),
        )
        .await
        .map_err(s)?;
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let header = Header {
            rxd_migration: FORMAT.into(),
            bytes: packed.size,
            sha256: packed.fingerprint,
        };
        (header, packed.size)
    };
    if size > images::MAX_IMAGE_BYTES {
        return Err(format!(
            "The instance packs into {size} bytes, more than a migration carries ({} bytes)",
            images::MAX_IMAGE_BYTES
        ));
    }
    let mut pipes = connect.await?;
    let mut control = take(&mut pipes, "control")?;
    let fs = take(&mut pipes, "fs")?;
    let streamed = async {
        deliver(
            &control.tx,
            Frame::Text(serde_json::to_string(&header).unwrap_or_default()),
        )
        .await?;
        let mut file = tokio::fs::File::open(&packed_file.path)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; FRAME];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            deliver(&fs.tx, Frame::Binary(Bytes::copy_from_slice(&buf[..n]))).await?;
        }
        Ok::<(), String>(())
    }
    .await;
    // Dropping the last sender closes `fs`: the end of the stream, which the target checks
    // against the header's size and digest.
    drop(fs);
    drop(packed_file);
    if let Err(e) = streamed {
        let _ = control.tx.send(outcome(&Err(e.clone()))).await;
        return Err(e);
    }
    tracing::info!(instance = %name, %project, bytes = size, "instance sent to a migration target");
    let answer = tokio::time::timeout(RESULT_WAIT, control.rx.recv())
        .await
        .map_err(|_| "The migration target gave no result in time".to_owned())?;
    match answer {
        Some(Frame::Text(t)) => {
            let o: Outcome = serde_json::from_str(&t)
                .map_err(|e| format!("the migration target's answer: {e}"))?;
            if o.success {
                Ok(())
            } else {
                Err(format!("The migration target failed: {}", o.message))
            }
        }
        Some(Frame::Binary(_)) => {
            let _ = control.tx.send(lxd_refusal(LXD_PEER)).await;
            Err(LXD_PEER.into())
        }
        None => Err("The migration target closed the connection without a result".into()),
    }
}

/// Queues one frame for a peer that must take it within [`STALL`].
async fn deliver(tx: &tokio::sync::mpsc::Sender<Frame>, frame: Frame) -> Result<(), String> {
    match tokio::time::timeout(STALL, tx.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("The migration peer closed the connection".into()),
        Err(_) => Err("The migration peer stopped reading".into()),
    }
}

/// The target's side: the instance `name` made in the caller's project from the stream on
/// `pipes` as `requested` describes it (see [`backups::import`]), and the result sent back on
/// `control`. Returns the instance's name.
pub async fn receive(
    d: &Arc<Daemon>,
    caller: &Caller,
    name: String,
    requested: Requested,
    hostids: crate::hostids::HostIds,
    mut pipes: HashMap<&'static str, Pipe>,
) -> ApiResult<String> {
    let mut control = take(&mut pipes, "control").map_err(ApiError::internal)?;
    let fs = take(&mut pipes, "fs").map_err(ApiError::internal)?;
    let made = receive_into(d, caller, name, requested, hostids, &mut control, fs).await;
    let said = made.as_ref().map(drop).map_err(|e| e.to_string());
    let _ = control.tx.send(outcome(&said)).await;
    made
}

async fn receive_into(
    d: &Arc<Daemon>,
    caller: &Caller,
    name: String,
    requested: Requested,
    hostids: crate::hostids::HostIds,
    control: &mut Pipe,
    mut fs: Pipe,
) -> ApiResult<String> {
    let bad = |m: String| ApiError::BadRequest(m);
    // The source packs before it speaks: wait as long as it stays connected.
    let first = tokio::time::timeout(RESULT_WAIT, control.rx.recv())
        .await
        .map_err(|_| bad("The migration source sent nothing".into()))?;
    let header: Header = match first {
        Some(Frame::Text(t)) => serde_json::from_str(&t)
            .map_err(|e| bad(format!("The migration source's header: {e}")))?,
        Some(Frame::Binary(_)) => {
            let _ = control.tx.send(lxd_refusal(LXD_PEER)).await;
            return Err(bad(LXD_PEER.into()));
        }
        None => return Err(bad("The migration source closed the connection".into())),
    };
    if header.rxd_migration != FORMAT {
        return Err(bad(format!(
            "The migration source sends {:?}; this server takes {FORMAT:?}",
            header.rxd_migration
        )));
    }
    if header.bytes > images::MAX_IMAGE_BYTES {
        return Err(ApiError::TooLarge {
            limit: images::MAX_IMAGE_BYTES as usize,
        });
    }
    let dir = backups::make_upload_dir(d)?;
    let upload = Upload::new(dir.join(format!(".migration-{}", uuid::Uuid::new_v4().simple())))?;
    let mut file = tokio::fs::File::from_std(upload.open()?);
    let mut size: u64 = 0;
    let mut hash = <sha2::Sha256 as sha2::Digest>::new();
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(STALL, fs.rx.recv()) => {
                frame.map_err(|_| bad("The migration source stopped sending".into()))?
            }
            said = control.rx.recv() => {
                let why = match said {
                    Some(Frame::Text(t)) => serde_json::from_str::<Outcome>(&t)
                        .map(|o| o.message)
                        .unwrap_or_default(),
                    _ => "it closed the connection".into(),
                };
                return Err(bad(format!("The migration source failed: {why}")));
            }
        };
        match frame {
            Some(Frame::Binary(chunk)) => {
                size += chunk.len() as u64;
                if size > header.bytes {
                    return Err(bad(format!(
                        "The migration source sent more than the {} bytes it announced",
                        header.bytes
                    )));
                }
                sha2::Digest::update(&mut hash, &chunk);
                file.write_all(&chunk).await.map_err(ApiError::internal)?;
            }
            Some(Frame::Text(_)) => {
                return Err(bad(
                    "The migration source sent text on the fs channel".into()
                ))
            }
            None => break,
        }
    }
    // A stream cut short, or not the one announced, is never imported.
    let digest = hex::encode(sha2::Digest::finalize(hash));
    if size != header.bytes || digest != header.sha256 {
        return Err(bad(format!(
            "The migration stream was cut short or changed: {size} of {} bytes, sha256 {digest}",
            header.bytes
        )));
    }
    file.sync_all().await.map_err(ApiError::internal)?;
    drop(file);
    backups::import(
        d,
        caller,
        &upload.path,
        Some(name),
        None,
        hostids,
        Some(requested),
    )
    .await
}
