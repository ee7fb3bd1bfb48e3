//! The two listeners and how one connection is served.
//!
//! Each accepted connection runs in its own task: the TLS handshake (bounded by a timeout) never
//! blocks the accept loop. The facts about the connection (unix peer uid, or the TLS client
//! certificate's fingerprint and peer address) are attached to every request as [`ConnInfo`]; the
//! trust decision is made per request from them.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use rxd_auth::Transport;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time a peer has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a peer has to send a request's headers (also bounds idle keep-alive connections).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once per listener; further ones are closed at accept.
pub const MAX_CONNECTIONS: usize = 4096;
/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub transport: Transport,
    /// The TCP peer; `None` on the unix socket.
    pub remote: Option<SocketAddr>,
    /// The client certificate (DER) sent in the TLS handshake, for self-enrolment.
    pub peer_cert: Option<Arc<[u8]>>,
    /// Which HTTPS listener accepted the connection; `None` on the unix socket.
    pub listener: Option<u64>,
}

impl ConnInfo {
    /// The peer for logs: address, or `unix:uid=N`.
    pub fn peer(&self) -> String {
        match (&self.remote, &self.transport) {
            (Some(a), _) => a.to_string(),
            (None, Transport::Unix { uid }) => format!("unix:uid={uid}"),
            (None, _) => "unknown".to_owned(),
        }
    }

    pub fn fingerprint(&self) -> Option<String> {
        match &self.transport {
            Transport::Tls {
                peer_fingerprint: Some(fp),
                ..
            } => Some(hex::encode(fp)),
            _ => None,
        }
    }
}

/// Resolves once `stop` says true. A sender that goes away without saying so means "never".
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serve HTTP/1.1 on one connection until it closes, or until `stop` resolves (then finish the
/// request in flight and close).
pub async fn serve_connection<I>(
    io: I,
    info: ConnInfo,
    router: Router,
    stop: impl std::future::Future<Output = ()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(info.clone());
            tower::ServiceExt::oneshot(router.clone(), req)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => { if let Err(e) = res { tracing::debug!(error = %e, "connection ended"); } }
        _ = stop => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Bind the unix socket at `path` with mode 0660 and group `gid`, before any connection can be
/// accepted. A stale socket from a crashed run is replaced; anything else at the path is refused.
pub fn bind_unix(path: &Path, gid: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by another running daemon", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The process umask (022, set by the binary) means the socket is born writable by root only,
    // so nobody else can connect before the group and mode below are in place.
    let listener = UnixListener::bind(path)?;
    std::os::unix::fs::chown(path, Some(0), Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

pub async fn run_unix(
    listener: UnixListener,
    router: Router,
    stop: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut stop_accept = stop.clone();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => { tracing::warn!(error = %e, "unix socket accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = stopped(&mut stop_accept) => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!("unix socket: too many connections, closing a new one");
            continue;
        };
        let uid = match stream.peer_cred() {
            Ok(c) => c.uid(),
            Err(e) => {
                tracing::warn!(error = %e, "unix socket: no peer credentials, closing");
                continue;
            }
        };
        let info = ConnInfo {
            transport: Transport::Unix { uid },
            remote: None,
            peer_cert: None,
            listener: None,
        };
        let (router, mut stop) = (router.clone(), stop.clone());
        tracker.spawn(async move {
            serve_connection(
                stream,
                info,
                router,
                async move { stopped(&mut stop).await },
            )
            .await;
            drop(permit);
        });
    }
}

/// What one HTTPS listener's connections share: which listener it is, the stop signal, and the
/// count of connections still open.
#[derive(Clone)]
pub struct HttpsContext {
    pub id: u64,
    pub stop: watch::Receiver<bool>,
    pub open: Arc<OpenConnections>,
}

/// Accept TLS connections on `listener` until `stop` fires.
pub async fn run_https(
    listener: TcpListener,
    tls: crate::tlsstate::SharedTls,
    router: Router,
    ctx: HttpsContext,
    tracker: TaskTracker,
    registry: Arc<ConnRegistry>,
) {
    let HttpsContext { id, stop, open } = ctx;
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut stop_accept = stop.clone();
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => { tracing::warn!(error = %e, "https accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = stopped(&mut stop_accept) => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(peer = %remote, "https: too many connections, closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        // The configuration current at accept time: a reloaded certificate or CA applies to new
        // connections at once.
        let config = crate::state::read(&tls).config.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (router, stop, registry) = (router.clone(), stop.clone(), registry.clone());
        let counted = open.enter();
        tracker.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(peer = %remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(peer = %remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer_cert: Option<Arc<[u8]>> =
                rxd_tls::server::peer_certificate(tls.get_ref().1).map(Arc::from);
            let peer_fingerprint = peer_cert.as_deref().map(rxd_tls::cert::fingerprint_bytes);
            let info = ConnInfo {
                transport: Transport::Tls {
                    peer_fingerprint,
                    ca: None,
                },
                remote: Some(remote),
                peer_cert,
                listener: Some(id),
            };
            // A connection authenticated by a certificate can be closed when that certificate
            // is revoked; it also closes when its listener stops.
            let (registration, mut revoked) = registry.register(peer_fingerprint);
            let (mut listener_stop, mut after) = (stop.clone(), stop);
            let stop = async move {
                tokio::select! {
                    _ = stopped(&mut listener_stop) => {}
                    _ = stopped(&mut revoked) => {}
                }
            };
            let (io, socket) = Watched::new(tls, fd);
            serve_connection(io, info, router, stop).await;
            drop(registration);
            drop(counted);
            // The connection may live on as a websocket (exec, events, console), which the HTTP
            // layer no longer sees: cut it when the listener stops. Shutting the socket down
            // wakes every task reading or writing it, whichever half each holds.
            tokio::select! {
                _ = socket.gone.cancelled() => {}
                _ = stopped(&mut after) => socket.shut_down(),
            }
            drop(permit);
        });
    }
}

/// A connection's socket as its connection task sees it: whether the connection is gone, and a
/// way to shut it down while it is not.
struct SocketHandle {
    /// The socket's descriptor while the connection holds it open; `None` once it is dropped.
    fd: std::sync::Mutex<Option<std::os::fd::RawFd>>,
    /// Cancelled when the connection is dropped.
    gone: CancellationToken,
}

impl SocketHandle {
    /// Shut the socket down in both directions, which wakes every task reading or writing it.
    /// The lock keeps the connection from closing (and the number from being reused) meanwhile.
    fn shut_down(&self) {
        let fd = self.fd.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = *fd {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    }
}

/// An I/O object over the socket `fd` that tells its [`SocketHandle`] when it is dropped: the
/// connection task uses it to learn whether a connection lives on as a websocket after its HTTP
/// exchange, and to cut it.
struct Watched<T> {
    io: T,
    socket: Arc<SocketHandle>,
}

impl<T> Watched<T> {
    fn new(io: T, fd: std::os::fd::RawFd) -> (Self, Arc<SocketHandle>) {
        let socket = Arc::new(SocketHandle {
            fd: std::sync::Mutex::new(Some(fd)),
            gone: CancellationToken::new(),
        });
        let watched = Watched {
            io,
            socket: socket.clone(),
        };
        (watched, socket)
    }
}

impl<T> Drop for Watched<T> {
    /// Runs before `io` (and so the descriptor) is dropped.
    fn drop(&mut self) {
        *self.socket.fd.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.socket.gone.cancel();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How many connections one listener has open, so that stopping it can wait for them to close.
#[derive(Debug)]
pub struct OpenConnections(watch::Sender<usize>);

impl Default for OpenConnections {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

/// Counts one open connection until dropped.
pub struct Counted(Arc<OpenConnections>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0 .0.send_modify(|n| *n -= 1);
    }
}

impl OpenConnections {
    pub fn enter(self: &Arc<Self>) -> Counted {
        self.0.send_modify(|n| *n += 1);
        Counted(self.clone())
    }

    /// Resolves once at most `n` connections are open.
    pub async fn at_most(&self, n: usize) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|open| *open <= n).await;
    }
}

/// Open TLS connections by client certificate, so that revoking a certificate closes them.
#[derive(Debug, Default)]
pub struct ConnRegistry {
    next: std::sync::atomic::AtomicU64,
    by_fingerprint: std::sync::Mutex<std::collections::HashMap<[u8; 32], ConnsOfOne>>,
}

/// One certificate's open connections: connection id to its stop signal.
type ConnsOfOne = std::collections::HashMap<u64, watch::Sender<bool>>;

/// Removes its connection from the registry when dropped.
pub struct Registration {
    registry: Arc<ConnRegistry>,
    key: Option<([u8; 32], u64)>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some((fp, id)) = self.key {
            let mut map = self
                .registry
                .by_fingerprint
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(conns) = map.get_mut(&fp) {
                conns.remove(&id);
                if conns.is_empty() {
                    map.remove(&fp);
                }
            }
        }
    }
}

impl ConnRegistry {
    pub fn register(
        self: &Arc<Self>,
        fingerprint: Option<[u8; 32]>,
    ) -> (Registration, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        let key = fingerprint.map(|fp| {
            let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.by_fingerprint
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(fp)
                .or_default()
                .insert(id, tx);
            (fp, id)
        });
        (
            Registration {
                registry: self.clone(),
                key,
            },
            rx,
        )
    }

    /// Close every connection that presented `fingerprint`; returns how many there were.
    pub fn close(&self, fingerprint: &[u8; 32]) -> usize {
        let conns = self
            .by_fingerprint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(fingerprint);
        let conns = conns.unwrap_or_default();
        for tx in conns.values() {
            tx.send_replace(true);
        }
        conns.len()
    }
}
