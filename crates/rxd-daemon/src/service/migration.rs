//! Copying an instance between two servers: LXD's stateless migration API (`lxc copy` and
//! `lxc move` between remotes, in pull, push or relay mode). The source packs the instance, with
//! its snapshots unless `instance_only`, as a backup in LXD's layout and streams it on the `fs`
//! channel; the target takes it as it takes an imported backup (the same bounded unpack, the same
//! confinement of the instance and of every snapshot it brings), with the instance's config,
//! devices and profiles as the request that created it says. The `control` channel carries the
//! source's header and the target's result as JSON text frames: rxd's own stream, which LXD's
//! API leaves to the servers. LXD's protobuf header and rsync stream are not spoken; an LXD peer
//! is told so in its own protobuf. Whichever server dialled the other, or a client relaying both,
//! the source sends and the target receives.

use crate::caller::Caller;
use crate::channels::{Frame, Pipe};
use crate::error::{ApiError, ApiResult};
use crate::service::backups::{self, Requested};
use crate::service::images::{self, Upload};
use crate::service::instances::{self, Keyed};
use crate::state::Daemon;
use bytes::Bytes;
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

/// The source's first message on `control`.
#[derive(Serialize, Deserialize)]
struct Header {
    rxd_migration: String,
    #[serde(default)]
    snapshots: Vec<String>,
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
            .websocket(&url)
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

/// `fs` as a blocking writer, for the packer's thread: frames of [`FRAME`] bytes.
struct FrameWriter {
    tx: tokio::sync::mpsc::Sender<Frame>,
    buf: Vec<u8>,
}

impl std::io::Write for FrameWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= FRAME {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(FRAME));
            self.tx
                .blocking_send(Frame::Binary(Bytes::from(full)))
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "the migration target closed the stream",
                    )
                })?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The source's side: `project`/`name` packed (without snapshots when `instance_only`) onto
/// the `fs` channel of `pipes`, then the target's result read from `control`.
pub async fn send(
    d: &Arc<Daemon>,
    caller: &Caller,
    project: &str,
    name: &str,
    instance_only: bool,
    mut pipes: HashMap<&'static str, Pipe>,
) -> Result<(), String> {
    let mut control = take(&mut pipes, "control")?;
    let fs = take(&mut pipes, "fs")?;
    let sent = async {
        let row = instances::find(d, project, name)
            .await
            .map_err(|e| e.to_string())?;
        // No start, stop, rename, restore or delete while it is read.
        let lock = d.runtime.action_lock(&row.key());
        let _guard = lock.lock().await;
        let row = instances::find(d, project, name)
            .await
            .map_err(|e| e.to_string())?;
        let snapshots = if instance_only {
            Vec::new()
        } else {
            let (p, n) = (row.project.clone(), row.name.clone());
            d.db(move |s| s.snapshots(&p, &n))
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        let header = Header {
            rxd_migration: FORMAT.into(),
            snapshots,
        };
        control
            .tx
            .send(Frame::Text(serde_json::to_string(&header).unwrap_or_default()))
            .await
            .map_err(|_| "the migration target closed the control channel".to_owned())?;
        let writer = FrameWriter {
            tx: fs.tx,
            buf: Vec::with_capacity(FRAME),
        };
        let (packed, writer) = backups::pack(
            d,
            caller,
            &row,
            instance_only,
            rxd_image::pack::Compression::None,
            writer,
        )
        .await
        .map_err(|e| e.to_string())?;
        if !writer.buf.is_empty() {
            writer
                .tx
                .send(Frame::Binary(Bytes::from(writer.buf)))
                .await
                .map_err(|_| "the migration target closed the stream".to_owned())?;
        }
        // Dropping the last sender closes `fs`: the end of the stream.
        tracing::info!(instance = %row.name, project = %row.project, bytes = packed.size, "instance sent to a migration target");
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = &sent {
        let _ = control.tx.send(outcome(&Err(e.clone()))).await;
        return Err(e.clone());
    }
    match control.rx.recv().await {
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
    let first = tokio::time::timeout(CONNECT_WAIT, control.rx.recv())
        .await
        .map_err(|_| ApiError::BadRequest("The migration source sent nothing".into()))?;
    match first {
        Some(Frame::Text(t)) => {
            let header: Header = serde_json::from_str(&t)
                .map_err(|e| ApiError::BadRequest(format!("The migration source's header: {e}")))?;
            if header.rxd_migration != FORMAT {
                return Err(ApiError::BadRequest(format!(
                    "The migration source sends {:?}; this server takes {FORMAT:?}",
                    header.rxd_migration
                )));
            }
        }
        Some(Frame::Binary(_)) => {
            let _ = control.tx.send(lxd_refusal(LXD_PEER)).await;
            return Err(ApiError::BadRequest(LXD_PEER.into()));
        }
        None => {
            return Err(ApiError::BadRequest(
                "The migration source closed the connection".into(),
            ))
        }
    }
    let dir = backups::make_upload_dir(d)?;
    let upload = Upload::new(dir.join(format!(".migration-{}", uuid::Uuid::new_v4().simple())))?;
    let mut file = tokio::fs::File::from_std(upload.open()?);
    let mut size: u64 = 0;
    loop {
        tokio::select! {
            frame = fs.rx.recv() => match frame {
                Some(Frame::Binary(chunk)) => {
                    size += chunk.len() as u64;
                    if size > images::MAX_IMAGE_BYTES {
                        return Err(ApiError::TooLarge {
                            limit: images::MAX_IMAGE_BYTES as usize,
                        });
                    }
                    file.write_all(&chunk).await.map_err(ApiError::internal)?;
                }
                Some(Frame::Text(_)) => {
                    return Err(ApiError::BadRequest(
                        "The migration source sent text on the fs channel".into(),
                    ))
                }
                None => break,
            },
            said = control.rx.recv() => match said {
                Some(Frame::Text(t)) => {
                    let why = serde_json::from_str::<Outcome>(&t)
                        .map(|o| o.message)
                        .unwrap_or(t);
                    return Err(ApiError::BadRequest(format!("The migration source failed: {why}")));
                }
                _ => {
                    return Err(ApiError::BadRequest(
                        "The migration source closed the connection before the end of the stream".into(),
                    ))
                }
            },
        }
    }
    file.flush().await.map_err(ApiError::internal)?;
    drop(file);
    if size == 0 {
        return Err(ApiError::BadRequest(
            "The migration source sent no data".into(),
        ));
    }
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
