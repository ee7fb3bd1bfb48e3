//! The websocket channels of exec, console and migration operations: a fresh secret per channel,
//! shown once in the reply that started the operation and compared in constant time when a
//! socket connects (`GET /1.0/operations/<id>/websocket?secret=`); each works once. Also the
//! control channel's messages, the revocation signal that ends a session whose certificate is
//! revoked, and [`Pipe`], a websocket seen as two queues of frames whoever opened it (the
//! migration service's view of its channels, accepted here or dialled with `rxd_web`).

use crate::caller::Caller;
use crate::listener::{ConnRegistry, Registration};
use crate::sync::lock;
use axum::extract::ws::WebSocket;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

/// A channel's secret, and where its websocket goes once connected (taken on first use).
type Channel = (String, Option<oneshot::Sender<WebSocket>>);

/// The channels of one operation waiting for their websocket.
struct Session {
    channels: Mutex<HashMap<&'static str, Channel>>,
    /// The largest message its sockets take (`None`: the framework's default).
    max_message: Option<usize>,
}

/// Waiting channels' receivers, by name.
pub type Receivers = HashMap<&'static str, oneshot::Receiver<WebSocket>>;

/// Pending sessions by operation id.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Arc<Session>>>);

fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    hex::encode(bytes)
}

impl Sessions {
    /// Register the channels of operation `op_id`: a fresh secret each (returned, to be shown
    /// once) and where each socket goes when it connects.
    pub fn open(&self, op_id: &str, names: &[&'static str]) -> (Map<String, Value>, Receivers) {
        self.open_limited(op_id, names, None)
    }

    /// [`Sessions::open`], its sockets taking messages of at most `max_message` bytes.
    pub fn open_limited(
        &self,
        op_id: &str,
        names: &[&'static str],
        max_message: Option<usize>,
    ) -> (Map<String, Value>, Receivers) {
        let mut fds = Map::new();
        let mut channels = HashMap::new();
        let mut receivers = HashMap::new();
        for &fd in names {
            let s = secret();
            let (tx, rx) = oneshot::channel();
            fds.insert(fd.to_owned(), json!(s));
            channels.insert(fd, (s, Some(tx)));
            receivers.insert(fd, rx);
        }
        lock(&self.0).insert(
            op_id.to_owned(),
            Arc::new(Session {
                channels: Mutex::new(channels),
                max_message,
            }),
        );
        (fds, receivers)
    }

    /// Forget a finished operation's channels.
    pub fn close(&self, op_id: &str) {
        lock(&self.0).remove(op_id);
    }

    /// Where the socket presenting `secret` for operation `op_id` goes, and the largest message
    /// it may send: once per channel, and only for a secret equal (in constant time) to one of
    /// the channels'.
    pub fn claim(
        &self,
        op_id: &str,
        secret: &str,
    ) -> Option<(oneshot::Sender<WebSocket>, Option<usize>)> {
        let session = lock(&self.0).get(op_id).cloned()?;
        let max_message = session.max_message;
        let mut channels = lock(&session.channels);
        let sender = channels.values_mut().find_map(|(want, tx)| {
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(want.as_bytes(), secret.as_bytes()).into();
            if same {
                tx.take()
            } else {
                None
            }
        })?;
        Some((sender, max_message))
    }
}

/// A revoked certificate's signal, for sessions opened over TLS.
pub type Revocation = Option<(Registration, watch::Receiver<bool>)>;

/// The signal that ends `caller`'s session when its certificate is revoked.
pub fn watch_revocation(connections: &Arc<ConnRegistry>, caller: &Caller) -> Revocation {
    match &caller.conn.transport {
        rxd_auth::Transport::Tls {
            peer_fingerprint: Some(fp),
            ..
        } => Some(connections.register(Some(*fp))),
        _ => None,
    }
}

/// Resolves when the revocation fires (never, without one).
pub async fn revocation(r: &mut Option<watch::Receiver<bool>>) {
    match r.as_mut() {
        Some(r) => crate::listener::stopped(r).await,
        None => std::future::pending().await,
    }
}

/// A message on the control channel.
#[derive(Deserialize)]
pub struct Control {
    pub command: String,
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    pub signal: i32,
    #[serde(default, deserialize_with = "rxd_api::null_as_default")]
    pub args: BTreeMap<String, String>,
}

impl Control {
    /// A `window-resize` message's size.
    pub fn size(&self) -> Option<(u32, u32)> {
        let dim = |k: &str| self.args.get(k).and_then(|v| v.parse::<u32>().ok());
        Some((dim("width")?, dim("height")?))
    }
}

/// A websocket message that carries data (pings, pongs and closes are the socket's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(bytes::Bytes),
}

/// A websocket as two bounded queues of [`Frame`]s: `rx` ends when the peer closes (or the
/// connection drops); dropping `tx` closes the socket's sending side with a close frame.
pub struct Pipe {
    pub tx: tokio::sync::mpsc::Sender<Frame>,
    pub rx: tokio::sync::mpsc::Receiver<Frame>,
}

/// Frames queued each way before the sender waits.
const PIPE_DEPTH: usize = 8;

fn pipe_of<S, M, E>(
    ws: S,
    to_frame: fn(M) -> Option<Result<Frame, ()>>,
    from_frame: fn(Frame) -> M,
    close: M,
) -> Pipe
where
    S: futures_util::Stream<Item = Result<M, E>> + futures_util::Sink<M> + Send + Unpin + 'static,
    M: Send + 'static,
    E: Send + 'static,
{
    use futures_util::{SinkExt, StreamExt};
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Frame>(PIPE_DEPTH);
    let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Frame>(PIPE_DEPTH);
    tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if sink.send(from_frame(frame)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(close).await;
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let sent = match to_frame(message) {
                Some(Ok(frame)) => in_tx.send(frame).await.is_ok(),
                Some(Err(())) => false,
                None => true,
            };
            if !sent {
                return;
            }
        }
    });
    Pipe {
        tx: out_tx,
        rx: in_rx,
    }
}

/// A websocket this server accepted, as a [`Pipe`].
pub fn accepted_pipe(ws: WebSocket) -> Pipe {
    use axum::extract::ws::Message;
    pipe_of(
        ws,
        |m| match m {
            Message::Text(t) => Some(Ok(Frame::Text(t.to_string()))),
            Message::Binary(b) => Some(Ok(Frame::Binary(b))),
            Message::Close(_) => Some(Err(())),
            _ => None,
        },
        |f| match f {
            Frame::Text(t) => Message::Text(t.into()),
            Frame::Binary(b) => Message::Binary(b),
        },
        Message::Close(None),
    )
}

/// A websocket this server opened on another (`rxd_web::WebClient::websocket`), as a [`Pipe`].
pub fn dialled_pipe(ws: rxd_web::WebSocket) -> Pipe {
    use tokio_tungstenite::tungstenite::Message;
    pipe_of(
        ws,
        |m| match m {
            Message::Text(t) => Some(Ok(Frame::Text(t.to_string()))),
            Message::Binary(b) => Some(Ok(Frame::Binary(b))),
            Message::Close(_) => Some(Err(())),
            _ => None,
        },
        |f| match f {
            Frame::Text(t) => Message::Text(t.into()),
            Frame::Binary(b) => Message::Binary(b),
        },
        Message::Close(None),
    )
}

/// The sockets of `receivers`' channels once every one has connected, as pipes by name;
/// `None` if `timeout` passes first or the operation's channels were dropped.
pub async fn accept_all(
    receivers: Receivers,
    timeout: std::time::Duration,
) -> Option<HashMap<&'static str, Pipe>> {
    let waiting = async move {
        let mut pipes = HashMap::new();
        for (name, rx) in receivers {
            pipes.insert(name, accepted_pipe(rx.await.ok()?));
        }
        Some(pipes)
    };
    tokio::time::timeout(timeout, waiting).await.ok().flatten()
}
