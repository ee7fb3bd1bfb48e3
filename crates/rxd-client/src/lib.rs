//! A client for the rxd (and LXD 5.0) REST API over the unix socket or HTTPS, authenticated by
//! a client certificate or by a Candid login (`candid`: macaroon cookies, renewed when the
//! server challenges). One connection is kept alive per client and re-opened when the server
//! closed it.
#![forbid(unsafe_code)]

pub mod candid;
pub mod remotes;

pub use bytes::Bytes;
pub use http::Method;

/// What a download reports as its reply arrives: bytes so far, and the length if known.
pub type Received = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;
/// Where [`Client::download_to`] writes a successful reply's body.
pub type Sink = tokio::sync::Mutex<tokio::fs::File>;
use http::{HeaderMap, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rxd_api::{Envelope, ResponseType};
use rxd_tls::client::{client_config, Presented, ServerTrust, CAPTURED, PIN_MISMATCH};
use rxd_tls::KeyPairFiles;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Https { host: String, port: u16 },
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    /// The handshake stopped on purpose after recording the server's certificate.
    #[error("server certificate captured")]
    Captured { der: Vec<u8> },
    /// The server presented a certificate other than the pinned one.
    #[error("server certificate does not match the pinned one")]
    PinMismatch { presented: Option<Vec<u8>> },
    #[error("TLS handshake with {target} failed: {reason}")]
    Tls {
        target: String,
        reason: String,
        presented: Option<Vec<u8>>,
    },
    #[error("HTTP: {0}")]
    Http(String),
    /// The server answered with LXD's error envelope.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected reply from the server: {0}")]
    Decode(String),
    /// A Candid login failed or was not accepted.
    #[error(transparent)]
    Candid(#[from] candid::CandidError),
}

/// A connection's byte stream: a unix socket or a TLS session.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A websocket to the server.
pub type WebSocket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// One HTTP reply, raw.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn envelope(&self) -> Result<Envelope, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The envelope's metadata, or the API error it carries.
    pub fn metadata(&self) -> Result<Value, ClientError> {
        let env = self.envelope()?;
        match env.kind {
            ResponseType::Error => Err(ClientError::Api {
                status: env.error_code,
                message: env.error,
            }),
            _ => Ok(env.metadata),
        }
    }

    /// The metadata decoded as an `rxd_api` type, as LXD's Go client decodes it (a `null` or
    /// missing field is its zero value, fields it does not know are skipped).
    pub fn metadata_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ClientError> {
        let metadata = self.metadata()?;
        rxd_api::from_value(metadata).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Client {
    endpoint: Endpoint,
    tls: Option<(Arc<rustls_config::ClientConfig>, Presented)>,
    conn: tokio::sync::Mutex<Option<SendRequest<ReqBody>>>,
    /// The project every request is scoped to (`None` for `default`).
    project: Option<String>,
    /// For a Candid remote: the login cookies every request carries, and how to log in again
    /// when the server challenges.
    candid: Option<Arc<candid::Login>>,
}

mod rustls_config {
    pub use tokio_rustls::rustls::ClientConfig;
}

impl Client {
    pub fn unix(path: impl Into<PathBuf>) -> Client {
        Client {
            endpoint: Endpoint::Unix(path.into()),
            tls: None,
            conn: Default::default(),
            project: None,
            candid: None,
        }
    }

    /// An HTTPS client judging the server by `trust` and presenting `identity`, if given.
    pub fn https(
        host: &str,
        port: u16,
        trust: ServerTrust,
        identity: Option<&KeyPairFiles>,
    ) -> Result<Client, ClientError> {
        let (config, presented) = client_config(trust, identity).map_err(|e| ClientError::Tls {
            target: format!("{host}:{port}"),
            reason: e.to_string(),
            presented: None,
        })?;
        Ok(Client {
            endpoint: Endpoint::Https {
                host: host.to_owned(),
                port,
            },
            tls: Some((config, presented)),
            conn: Default::default(),
            project: None,
            candid: None,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Authenticate by Candid (macaroons) from now on: every request and websocket carries the
    /// bakery headers and the login cookies, and a challenge is answered by logging in again
    /// (once per request) before the request is repeated.
    pub fn set_candid(&mut self, login: Arc<candid::Login>) {
        self.candid = Some(login);
    }

    pub fn candid(&self) -> Option<&Arc<candid::Login>> {
        self.candid.as_ref()
    }

    /// The bakery headers and the login cookie for a request to `path`, for a Candid client.
    fn candid_headers(&self, path: &str) -> Vec<(&'static str, String)> {
        let Some(login) = &self.candid else {
            return Vec::new();
        };
        let mut h = vec![
            (
                candid::BAKERY_PROTOCOL_HEADER,
                candid::BAKERY_PROTOCOL_VERSION.to_owned(),
            ),
            (candid::AUTHENTICATED_HEADER, "true".to_owned()),
        ];
        if let Some(cookie) = login.cookie_header(path_only(path)) {
            h.push(("cookie", cookie));
        }
        h
    }

    /// Scope every later request and websocket to `project`, as LXD's client does: the path
    /// gets `project=NAME` unless it names a project itself. `None`, `""` and `default` mean
    /// the default project, which needs no parameter.
    pub fn set_project(&mut self, project: Option<String>) {
        self.project = project.filter(|p| !p.is_empty() && p != "default");
    }

    /// The project requests are scoped to (`default` when none was set).
    pub fn project(&self) -> &str {
        self.project.as_deref().unwrap_or("default")
    }

    /// `path` with this client's project added to its query.
    fn scoped<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        with_project(path, self.project.as_deref())
    }

    fn target(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Https { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Https { host, port } => format!("{host}:{port}"),
        }
    }

    async fn connect(&self) -> Result<SendRequest<ReqBody>, ClientError> {
        handshake(self.open_stream().await?).await
    }

    /// Open a websocket (an operation's channel, or events) at `path` on a new connection.
    pub async fn websocket(&self, path: &str) -> Result<WebSocket, ClientError> {
        let path = self.scoped(path);
        let stream = self.open_stream().await?;
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_owned(),
            Endpoint::Https { .. } => self.target(),
        };
        let scheme = match self.endpoint {
            Endpoint::Unix(_) => "ws",
            Endpoint::Https { .. } => "wss",
        };
        let mut request = http::Request::builder();
        for (k, v) in self.candid_headers(&path) {
            request = request.header(k, v);
        }
        let request = request
            .uri(format!("{scheme}://{host}{path}"))
            .header("Host", host)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header(
                "Sec-WebSocket-Key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            )
            .body(())
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let (ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(resp) => ClientError::Api {
                    status: resp.status().as_u16(),
                    message: format!("websocket refused: {}", resp.status()),
                },
                other => ClientError::Http(other.to_string()),
            })?;
        Ok(ws)
    }

    /// A new connection to the server: the socket, or TCP with the TLS handshake done.
    async fn open_stream(&self) -> Result<Box<dyn Io>, ClientError> {
        let target = self.target();
        let connect_err = |source| ClientError::Connect {
            target: target.clone(),
            source,
        };
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        match (&self.endpoint, &self.tls) {
            (Endpoint::Unix(path), _) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_err)?;
                Ok(Box::new(stream))
            }
            (Endpoint::Https { host, port }, Some((config, presented))) => {
                let tcp = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await
                .map_err(|_| connect_err(timed_out()))?
                .map_err(connect_err)?;
                let _ = tcp.set_nodelay(true);
                let name = rustls_pki_types_name(host)?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| connect_err(timed_out()))?;
                match tls {
                    Ok(stream) => Ok(Box::new(stream)),
                    Err(e) => Err(classify_tls_error(e, presented.take(), target.clone())),
                }
            }
            (Endpoint::Https { .. }, None) => Err(ClientError::Http("no TLS configuration".into())),
        }
    }

    /// Send one request and return the raw reply. A kept-alive connection the server closed is
    /// re-opened once.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        let content_type = (!body.is_empty()).then_some("application/json");
        let make = move || {
            Full::new(body.clone())
                .map_err(|never| match never {})
                .boxed()
        };
        self.exchange(method, path, headers, content_type, make, true, None, None)
            .await
    }

    /// `GET path` with its reply's body reported as it arrives: `progress(received, length)`,
    /// the length being the reply's `Content-Length` if it has one.
    pub async fn download(
        &self,
        path: &str,
        progress: Arc<dyn Fn(u64, Option<u64>) + Send + Sync>,
    ) -> Result<Reply, ClientError> {
        self.get_body(path, &progress, None).await
    }

    /// [`Client::download`], a successful reply's body written to `to` as it arrives rather
    /// than kept (the reply's `body` is then empty); any other reply is kept whole, as ever.
    pub async fn download_to(
        &self,
        path: &str,
        to: &Sink,
        progress: Arc<dyn Fn(u64, Option<u64>) + Send + Sync>,
    ) -> Result<Reply, ClientError> {
        self.get_body(path, &progress, Some(to)).await
    }

    async fn get_body(
        &self,
        path: &str,
        progress: &Received,
        sink: Option<&Sink>,
    ) -> Result<Reply, ClientError> {
        let make = || {
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed()
        };
        self.exchange(
            Method::GET,
            path,
            &[],
            None,
            make,
            true,
            Some(progress),
            sink,
        )
        .await
    }

    /// Upload a split image (metadata and root filesystem files) as LXD's clients do, in one
    /// `multipart/form-data` body, reporting the bytes sent so far to `progress`. Not retried.
    pub async fn send_split_image(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        meta: &std::path::Path,
        rootfs: &std::path::Path,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Reply, ClientError> {
        if self.candid.is_some() {
            self.send(Method::GET, "/1.0", &[], Bytes::new()).await?;
        }
        let open = |p: &std::path::Path| {
            let target = p.display().to_string();
            let p = p.to_owned();
            async move {
                tokio::fs::File::open(&p)
                    .await
                    .map_err(|source| ClientError::Connect { target, source })
            }
        };
        let name = |p: &std::path::Path| {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let (meta_file, rootfs_file) = (open(meta).await?, open(rootfs).await?);
        let boundary = format!("rxc-{}", uuid::Uuid::new_v4().simple());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let body = std::sync::Mutex::new(Some(split_image_body(
            &boundary,
            (meta_file, &name(meta)),
            (rootfs_file, &name(rootfs)),
            progress,
        )));
        let make = move || {
            body.lock()
                .ok()
                .and_then(|mut b| b.take())
                .unwrap_or_else(|| {
                    Full::new(Bytes::new())
                        .map_err(|never| match never {})
                        .boxed()
                })
        };
        self.exchange(
            Method::POST,
            path,
            headers,
            Some(&content_type),
            make,
            false,
            None,
            None,
        )
        .await
    }

    /// Upload a file as the request body (`application/octet-stream`), reporting the bytes sent
    /// so far to `progress`. Not retried: uploads are not idempotent.
    pub async fn send_file(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        file: &std::path::Path,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Reply, ClientError> {
        // The body cannot be sent twice: make sure a Candid login is current before streaming.
        if self.candid.is_some() {
            self.send(Method::GET, "/1.0", &[], Bytes::new()).await?;
        }
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|source| ClientError::Connect {
                target: file.display().to_string(),
                source,
            })?;
        let body = std::sync::Mutex::new(Some(file_body(f, progress)));
        let make = move || {
            body.lock()
                .ok()
                .and_then(|mut b| b.take())
                .unwrap_or_else(|| {
                    Full::new(Bytes::new())
                        .map_err(|never| match never {})
                        .boxed()
                })
        };
        self.exchange(
            method,
            path,
            headers,
            Some("application/octet-stream"),
            make,
            false,
            None,
            None,
        )
        .await
    }

    /// One request, with the Candid login handled: a challenge is answered by logging in and
    /// the request repeated once (if its body can be sent again).
    #[allow(clippy::too_many_arguments)] // private: each caller names every part
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        make_body: impl Fn() -> ReqBody,
        repeatable: bool,
        received: Option<&Received>,
        sink: Option<&Sink>,
    ) -> Result<Reply, ClientError> {
        let Some(login) = self.candid.clone() else {
            return self
                .exchange_once(
                    method,
                    path,
                    headers,
                    content_type,
                    &make_body,
                    received,
                    sink,
                )
                .await;
        };
        let mut logged_in = false;
        loop {
            let extra = self.candid_headers(path);
            let all: Vec<(&str, &str)> = headers
                .iter()
                .copied()
                .chain(extra.iter().map(|(k, v)| (*k, v.as_str())))
                .collect();
            let reply = self
                .exchange_once(
                    method.clone(),
                    path,
                    &all,
                    content_type,
                    &make_body,
                    received,
                    sink,
                )
                .await?;
            let Some(challenge) = candid::challenge(&reply) else {
                return Ok(reply);
            };
            if logged_in {
                return Err(candid::CandidError::Rejected(challenge.message).into());
            }
            if !repeatable {
                return Err(candid::CandidError::NotRepeatable.into());
            }
            login.answer(&challenge, path_only(path)).await?;
            logged_in = true;
        }
    }

    #[allow(clippy::too_many_arguments)] // private: each caller names every part
    async fn exchange_once(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        make_body: &impl Fn() -> ReqBody,
        received: Option<&Received>,
        sink: Option<&Sink>,
    ) -> Result<Reply, ClientError> {
        let path = self.scoped(path);
        let mut guard = self.conn.lock().await;
        for attempt in 0..2 {
            let alive = match guard.as_mut() {
                Some(s) => s.ready().await.is_ok(),
                None => false,
            };
            if !alive {
                *guard = Some(self.connect().await?);
            }
            let Some(sender) = guard.as_mut() else {
                continue;
            };
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path.as_ref())
                .header("host", "rxd");
            // A content type the caller names replaces the default one (never a second header).
            let named = headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
            if let Some(ct) = content_type.filter(|_| !named) {
                req = req.header("content-type", ct);
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req
                .body(make_body())
                .map_err(|e| ClientError::Http(e.to_string()))?;
            match sender.send_request(req).await {
                Ok(resp) => {
                    let (parts, mut body) = resp.into_parts();
                    let length = parts
                        .headers
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                    // A success's body goes to the sink, if any, as it comes; anything else
                    // (an error envelope) is kept.
                    let mut file = match sink {
                        Some(sink) if parts.status.is_success() => Some(sink.lock().await),
                        _ => None,
                    };
                    let mut all = bytes::BytesMut::new();
                    let mut seen = 0u64;
                    while let Some(frame) = body.frame().await {
                        let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
                        if let Ok(data) = frame.into_data() {
                            seen += data.len() as u64;
                            match file.as_mut() {
                                Some(f) => {
                                    tokio::io::AsyncWriteExt::write_all(&mut **f, &data)
                                        .await
                                        .map_err(|e| ClientError::Http(format!("writing: {e}")))?;
                                }
                                None => all.extend_from_slice(&data),
                            }
                            if let Some(report) = received {
                                report(seen, length);
                            }
                        }
                    }
                    if let Some(f) = file.as_mut() {
                        tokio::io::AsyncWriteExt::flush(&mut **f)
                            .await
                            .map_err(|e| ClientError::Http(format!("writing: {e}")))?;
                    }
                    let body = all.freeze();
                    return Ok(Reply {
                        status: parts.status.as_u16(),
                        headers: parts.headers,
                        body,
                    });
                }
                // The server may close a kept-alive connection just as we reuse it; retry once, but
                // only requests that are safe to repeat (a POST may already have been acted on).
                Err(e)
                    if attempt == 0
                        && method.is_idempotent()
                        && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) =>
                {
                    *guard = None;
                }
                Err(e) => {
                    *guard = None;
                    return Err(ClientError::Http(e.to_string()));
                }
            }
        }
        Err(ClientError::Http("connection closed".into()))
    }

    /// Send a JSON request (or none) and return the raw reply.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let bytes = match body {
            Some(v) => {
                Bytes::from(serde_json::to_vec(v).map_err(|e| ClientError::Decode(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        self.send(method, path, &[], bytes).await
    }

    /// Send a typed body (an `rxd_api` request type) and return the raw reply.
    pub async fn request_json<B: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<Reply, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send(method, path, &[], bytes.into()).await
    }

    /// GET and return the metadata, or the API error.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.request(Method::GET, path, None).await?.metadata()
    }

    /// GET and return the metadata as an `rxd_api` type ([`Reply::metadata_as`]).
    pub async fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ClientError> {
        self.request(Method::GET, path, None).await?.metadata_as()
    }

    /// Drop the kept-alive connection.
    pub async fn disconnect(&self) {
        *self.conn.lock().await = None;
    }
}

/// The path of a request target, without its query or fragment.
fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// `path` with `project=NAME` (percent-encoded) added to its query, unless `project` is `None`
/// or the query already has a `project` parameter.
pub fn with_project<'a>(path: &'a str, project: Option<&str>) -> std::borrow::Cow<'a, str> {
    let Some(project) = project else {
        return path.into();
    };
    let (before_fragment, fragment) = match path.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (path, None),
    };
    let query = before_fragment.split_once('?').map(|(_, q)| q);
    let has_project = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.split_once('=').map_or(kv, |(k, _)| k) == "project")
    });
    if has_project {
        return path.into();
    }
    let sep = match query {
        None => "?",
        Some("") => "",
        Some(q) if q.ends_with('&') => "",
        Some(_) => "&",
    };
    let mut out = format!("{before_fragment}{sep}project={}", query_escape(project));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out.into()
}

pub use rxd_web::query_escape;

fn rustls_pki_types_name(host: &str) -> Result<rustls_pki_types::ServerName<'static>, ClientError> {
    rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| ClientError::Http(format!("invalid server name {host:?}: {e}")))
}

use tokio_rustls::rustls::pki_types as rustls_pki_types;

async fn handshake<S>(stream: S) -> Result<SendRequest<ReqBody>, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn classify_tls_error(
    e: std::io::Error,
    presented: Option<Vec<u8>>,
    target: String,
) -> ClientError {
    let text = e.to_string();
    if text.contains(CAPTURED) {
        match presented {
            Some(der) => ClientError::Captured { der },
            None => ClientError::Tls {
                target,
                reason: text,
                presented: None,
            },
        }
    } else if text.contains(PIN_MISMATCH) {
        ClientError::PinMismatch { presented }
    } else {
        ClientError::Tls {
            target,
            reason: text,
            presented,
        }
    }
}

/// Request bodies: a buffer, or a file streamed from disk.
pub type ReqBody = BoxBody<Bytes, std::io::Error>;

/// Stream `file` in 64 KiB frames, telling `progress` how much has been read.
/// A split image as LXD's clients upload it: `multipart/form-data` with a part `metadata`,
/// then a part `rootfs` (named after the root filesystem's file), streamed from the two files.
/// `progress` sees the bytes of both files sent so far.
fn split_image_body(
    boundary: &str,
    (meta, meta_name): (tokio::fs::File, &str),
    (rootfs, rootfs_name): (tokio::fs::File, &str),
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> ReqBody {
    use futures_util::StreamExt;
    let header = |part: &str, filename: &str, first: bool| {
        // Quotes and line breaks cannot be in a header's quoted string: replaced.
        let filename: String = filename
            .chars()
            .map(|c| if c == '"' || c.is_control() { '_' } else { c })
            .collect();
        let lead = if first { "" } else { "\r\n" };
        let text = format!(
            "{lead}--{boundary}\r\nContent-Disposition: form-data; name=\"{part}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(text)))
        })
    };
    let closing = format!("\r\n--{boundary}--\r\n");
    let sent_meta = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let meta_progress: Arc<dyn Fn(u64) + Send + Sync> = {
        let (sent_meta, progress) = (sent_meta.clone(), progress.clone());
        Arc::new(move |n| {
            sent_meta.store(n, std::sync::atomic::Ordering::Relaxed);
            progress(n);
        })
    };
    let rootfs_progress: Arc<dyn Fn(u64) + Send + Sync> =
        Arc::new(move |n| progress(sent_meta.load(std::sync::atomic::Ordering::Relaxed) + n));
    let stream = header("metadata", meta_name, true)
        .chain(
            file_body(meta, meta_progress)
                .into_data_stream()
                .map(|r| r.map(hyper::body::Frame::data)),
        )
        .chain(header("rootfs", rootfs_name, false))
        .chain(
            file_body(rootfs, rootfs_progress)
                .into_data_stream()
                .map(|r| r.map(hyper::body::Frame::data)),
        )
        .chain(futures_util::stream::once(async move {
            Ok(hyper::body::Frame::data(Bytes::from(closing)))
        }));
    BodyExt::boxed(StreamBody::new(stream))
}

fn file_body(file: tokio::fs::File, progress: Arc<dyn Fn(u64) + Send + Sync>) -> ReqBody {
    use tokio::io::AsyncReadExt;
    let stream = futures_util::stream::unfold(
        (file, 0u64, progress),
        |(mut file, sent, progress)| async move {
            let mut buf = vec![0u8; 64 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let sent = sent + n as u64;
                    progress(sent);
                    Some((
                        Ok(hyper::body::Frame::data(Bytes::from(buf))),
                        (file, sent, progress),
                    ))
                }
                Err(e) => Some((Err(e), (file, sent, progress))),
            }
        },
    );
    StreamBody::new(stream).boxed()
}

#[cfg(test)]
mod tests {
    use super::with_project;

    fn check(path: &str, project: Option<&str>, expected: &str) {
        assert_eq!(with_project(path, project), expected, "{path} {project:?}");
    }

    #[test]
    fn the_project_joins_the_query_once() {
        check("/1.0/instances", None, "/1.0/instances");
        check("/1.0/instances", Some("p1"), "/1.0/instances?project=p1");
        check(
            "/1.0/instances?recursion=2",
            Some("p1"),
            "/1.0/instances?recursion=2&project=p1",
        );
        check("/1.0/instances?", Some("p1"), "/1.0/instances?project=p1");
        check("/1.0/x?a=1&", Some("p1"), "/1.0/x?a=1&project=p1");
        check(
            "/1.0/instances?project=other",
            Some("p1"),
            "/1.0/instances?project=other",
        );
        check(
            "/1.0/x?recursion=1&project=",
            Some("p1"),
            "/1.0/x?recursion=1&project=",
        );
        check(
            "/1.0/x?myproject=a",
            Some("p1"),
            "/1.0/x?myproject=a&project=p1",
        );
        check(
            "/1.0/operations/abc/websocket?secret=s3",
            Some("a b/c&d=é"),
            "/1.0/operations/abc/websocket?secret=s3&project=a%20b%2Fc%26d%3D%C3%A9",
        );
        check("/1.0/x#frag", Some("p"), "/1.0/x?project=p#frag");
    }

    #[test]
    fn default_means_no_parameter() {
        let mut c = super::Client::unix("/nonexistent");
        for p in [None, Some(""), Some("default")] {
            c.set_project(p.map(str::to_owned));
            assert_eq!(c.project(), "default");
            assert_eq!(c.scoped("/1.0"), "/1.0");
        }
        c.set_project(Some("p1".into()));
        assert_eq!(c.project(), "p1");
        assert_eq!(c.scoped("/1.0"), "/1.0?project=p1");
    }
}
