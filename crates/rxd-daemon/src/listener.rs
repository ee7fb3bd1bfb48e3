//! The two listeners and how one connection is served.
//!
//! Each accepted connection runs in its own task: the TLS handshake (bounded by a timeout) never
//! blocks the accept loop. The facts about the connection (unix peer uid, or the TLS client
//! certificate's fingerprint and peer address) are attached to every request as [`ConnInfo`]; the
//! trust decision is made per request from them.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use rxd_auth::Transport;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
/// Connections served at once on the unix socket, and by all HTTPS listeners together, when
/// descriptors allow ([`Limits::for_descriptors`]); further ones are closed at accept.
pub const MAX_CONNECTIONS: usize = 4096;
/// Descriptors kept for everything but connections: the database, images, container helpers and
/// their pipes, files being pushed.
const OTHER_DESCRIPTORS: u64 = 512;
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
    let limit = Arc::new(Semaphore::new(Limits::current().total));
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
    let (mut refused, mut last_warned) = (0u64, None::<std::time::Instant>);
    let mut stop_accept = stop.clone();
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => { tracing::warn!(error = %e, "https accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = stopped(&mut stop_accept) => break,
        };
        // Closed at once, before any TLS: one source must not be able to take the pool.
        let mut admission = match registry.sources.admit(remote.ip()) {
            Ok(a) => a,
            Err(why) => {
                drop(stream);
                // One line per 10 s at most: a flood must not flood the log as well.
                refused += 1;
                if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(peer = %remote, reason = %why, refused, "https: closing new connections at accept");
                    last_warned = Some(std::time::Instant::now());
                    refused = 0;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        // The configuration current at accept time: a reloaded certificate or CA applies to new
        // connections at once.
        let config = crate::sync::read(&tls).config.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (router, stop, registry) = (router.clone(), stop.clone(), registry.clone());
        let counted = open.enter();
        tracker.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    admission.handshake_done();
                    tls
                }
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
            drop(admission);
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

/// Open TLS connections by client certificate, so that revoking a certificate closes them, and
/// by source, so that no source takes the connection pool ([`SourceLimits`], shared by every
/// HTTPS listener, the old and the new one during an address change included).
#[derive(Debug)]
pub struct ConnRegistry {
    next: std::sync::atomic::AtomicU64,
    by_fingerprint: std::sync::Mutex<std::collections::HashMap<[u8; 32], ConnsOfOne>>,
    pub sources: Arc<SourceLimits>,
}

impl Default for ConnRegistry {
    /// Sized against the descriptor limit the process has at start-up (raised by the binary).
    fn default() -> Self {
        let limits = Limits::current();
        tracing::info!(
            total = limits.total,
            per_source = limits.per_source,
            handshakes_per_source = limits.handshakes_per_source,
            reserve = limits.reserve,
            "connection limits"
        );
        ConnRegistry {
            next: Default::default(),
            by_fingerprint: Default::default(),
            sources: Arc::new(SourceLimits::new(limits)),
        }
    }
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

/// How many connections the listeners take, sized against the descriptors the process may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once on the unix socket, and on all HTTPS listeners together.
    pub total: usize,
    /// Connections open at once from one source (an IPv4 address or an IPv6 /64).
    pub per_source: usize,
    /// TLS handshakes in progress at once from one source.
    pub handshakes_per_source: usize,
    /// The last connections of `total`, kept for sources that hold fewer than `reserve_below`.
    pub reserve: usize,
    pub reserve_below: usize,
}

impl Limits {
    /// The limits for a soft descriptor limit of `nofile`: each connection is one descriptor,
    /// the unix socket and HTTPS may each fill `total`, and [`OTHER_DESCRIPTORS`] stay free.
    /// One source gets a sixteenth of the pool, an eighth of that in handshakes; an eighth of
    /// the pool is kept for sources with fewer than 8 connections (a client, an `lxc exec`).
    pub fn for_descriptors(nofile: u64) -> Limits {
        let spare = nofile.saturating_sub(OTHER_DESCRIPTORS) / 2;
        let total = usize::try_from(spare)
            .unwrap_or(MAX_CONNECTIONS)
            .clamp(64, MAX_CONNECTIONS);
        let per_source = (total / 16).max(4);
        Limits {
            total,
            per_source,
            handshakes_per_source: (per_source / 8).max(2),
            reserve: total / 8,
            reserve_below: 8,
        }
    }

    /// The limits for this process's soft descriptor limit now.
    pub fn current() -> Limits {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        Limits::for_descriptors(soft.unwrap_or(u64::MAX))
    }
}

/// Where a connection comes from, as the per-source limits count it: an IPv4 address, or an IPv6
/// /64 (one host, or one customer, usually holds a whole /64). IPv4-mapped addresses are IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    V6Prefix(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Full,
    Reserved,
    SourceConnections,
    SourceHandshakes,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Full => "connection limit reached",
            Refusal::Reserved => "the rest of the pool is kept for other sources",
            Refusal::SourceConnections => "this source is at its connection limit",
            Refusal::SourceHandshakes => "this source has too many TLS handshakes in progress",
        })
    }
}

/// The HTTPS connections open now, in total and per source, shared by every HTTPS listener.
#[derive(Debug)]
pub struct SourceLimits {
    limits: Limits,
    counts: std::sync::Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Per source: (connections open, of which still in their TLS handshake).
    by_source: std::collections::HashMap<Source, (usize, usize)>,
}

impl SourceLimits {
    pub fn new(limits: Limits) -> SourceLimits {
        SourceLimits {
            limits,
            counts: std::sync::Mutex::new(Counts::default()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admit a new connection from `ip`, counted as handshaking until [`Admission::handshake_done`],
    /// or say why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refusal> {
        let source = Source::of(ip);
        let l = self.limits;
        let mut counts = self.counts();
        let (open, handshaking) = counts.by_source.get(&source).copied().unwrap_or((0, 0));
        if counts.total >= l.total {
            return Err(Refusal::Full);
        }
        if open >= l.per_source {
            return Err(Refusal::SourceConnections);
        }
        if handshaking >= l.handshakes_per_source {
            return Err(Refusal::SourceHandshakes);
        }
        if counts.total >= l.total - l.reserve && open >= l.reserve_below {
            return Err(Refusal::Reserved);
        }
        counts.total += 1;
        counts.by_source.insert(source, (open + 1, handshaking + 1));
        Ok(Admission {
            owner: self.clone(),
            source,
            handshaking: true,
        })
    }
}

/// One admitted connection, counted until dropped.
pub struct Admission {
    owner: Arc<SourceLimits>,
    source: Source,
    handshaking: bool,
}

impl Admission {
    /// The TLS handshake finished: the connection no longer counts as one in progress.
    pub fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            if let Some((_, h)) = self.owner.counts().by_source.get_mut(&self.source) {
                *h = h.saturating_sub(1);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self.owner.counts();
        counts.total = counts.total.saturating_sub(1);
        let gone = match counts.by_source.get_mut(&self.source) {
            Some((open, handshaking)) => {
                *open = open.saturating_sub(1);
                if self.handshaking {
                    *handshaking = handshaking.saturating_sub(1);
                }
                *open == 0
            }
            None => false,
        };
        if gone {
            counts.by_source.remove(&self.source);
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sizing() {
        let l = Limits::for_descriptors(1 << 20);
        assert_eq!(
            (l.total, l.per_source, l.handshakes_per_source, l.reserve),
            (4096, 256, 32, 512)
        );
        let l = Limits::for_descriptors(1024);
        assert_eq!(
            (l.total, l.per_source, l.handshakes_per_source),
            (256, 16, 2)
        );
        assert_eq!(Limits::for_descriptors(0).total, 64);
    }

    #[test]
    fn sources() {
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1"))
        );
        assert_eq!(
            Source::of(ip("2001:db8::1")),
            Source::of(ip("2001:db8::ffff:1"))
        );
        assert_ne!(
            Source::of(ip("2001:db8::1")),
            Source::of(ip("2001:db8:0:1::1"))
        );
        assert_ne!(Source::of(ip("10.0.0.1")), Source::of(ip("10.0.0.2")));
    }

    #[test]
    fn one_source_never_takes_the_pool() {
        let limits = Limits {
            total: 32,
            per_source: 8,
            handshakes_per_source: 2,
            reserve: 8,
            reserve_below: 2,
        };
        let pool = Arc::new(SourceLimits::new(limits));
        let a = ip("10.0.0.1");
        // Handshakes in progress are limited first...
        let mut held: Vec<Admission> = (0..2).map(|_| pool.admit(a).unwrap()).collect();
        assert_eq!(pool.admit(a).err(), Some(Refusal::SourceHandshakes));
        // ...then connections, once handshakes finish.
        for h in &mut held {
            h.handshake_done();
        }
        while held.len() < 8 {
            let mut c = pool.admit(a).unwrap();
            c.handshake_done();
            held.push(c);
        }
        assert_eq!(pool.admit(a).err(), Some(Refusal::SourceConnections));
        // Three sources fill the shared part; a fourth with connections is kept out of the
        // reserve, a new source still gets in, until the pool is full.
        for n in 2..=3 {
            for _ in 0..8 {
                let mut c = pool.admit(ip(&format!("10.0.0.{n}"))).unwrap();
                c.handshake_done();
                held.push(c);
            }
        }
        let d = ip("10.0.0.4");
        let mut first = pool.admit(d).unwrap();
        first.handshake_done();
        let mut second = pool.admit(d).unwrap();
        second.handshake_done();
        assert_eq!(pool.admit(d).err(), Some(Refusal::Reserved));
        for n in 5..11 {
            held.push(pool.admit(ip(&format!("10.0.0.{n}"))).unwrap());
        }
        assert_eq!(pool.admit(ip("10.0.0.99")).err(), Some(Refusal::Full));
        // Closing gives the slots back.
        drop(held);
        drop((first, second));
        assert_eq!(pool.counts().total, 0);
        assert!(pool.counts().by_source.is_empty());
        assert!(pool.admit(a).is_ok());
    }
}
