//! One-shot HTTP/1.1 requests to absolute URLs, for talking to ordinary web servers (a Candid
//! discharger, an image server): plain `http` where the caller allows it (a discharger on the
//! same host, or tests), or `https` verified against the system's root certificates. One
//! connection per request; bodies are bounded, or streamed to the caller with a stall timeout.
#![forbid(unsafe_code)]
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot reach {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("no reply from {url} in time")]
    Timeout { url: String },
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The TLS configuration could not be built (no trusted roots, say).
    #[error("{0}")]
    Tls(String),
    #[error("{url} sent more than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    /// What the downloaded bytes were handed to refused them.
    #[error("{url}: {reason}")]
    Sink { url: String, reason: String },
}

/// A websocket [`WebClient::websocket`] opened.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How long establishing a connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A discharger's answers are small JSON documents.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug)]
pub struct WebReply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Requests to web servers. The TLS configuration is built on first use of an `https` URL, so
/// a plain-`http` discharger works on a machine without system roots.
#[derive(Default)]
pub struct WebClient {
    /// Trusted in addition to the system's roots (DER).
    extra_cas: Vec<Vec<u8>>,
    tls: OnceLock<Result<Arc<ClientConfig>, String>>,
}

impl WebClient {
    /// Also trust these CA certificates (DER) for `https`.
    pub fn with_extra_cas(extra_cas: Vec<Vec<u8>>) -> WebClient {
        WebClient {
            extra_cas,
            tls: OnceLock::new(),
        }
    }

    /// Trust exactly the server certificate `cert_pem` (as an LXD client hands it over for a
    /// server it pinned), whatever names it carries and whatever roots the system has; `""`
    /// means the system's roots as [`WebClient::default`].
    pub fn pinned(cert_pem: &str) -> Result<WebClient, WebError> {
        let client = WebClient::default();
        if cert_pem.trim().is_empty() {
            return Ok(client);
        }
        let der = rxd_tls::cert::from_pem(cert_pem)
            .ok_or_else(|| WebError::Tls("the server certificate given is not PEM".into()))?;
        let (config, _) = rxd_tls::client::client_config(
            rxd_tls::client::ServerTrust::Pinned(rxd_tls::cert::fingerprint_bytes(&der)),
            None,
        )
        .map_err(|e| WebError::Tls(e.to_string()))?;
        let _ = client.tls.set(Ok(config));
        Ok(client)
    }

    fn tls(&self) -> Result<Arc<ClientConfig>, WebError> {
        self.tls
            .get_or_init(|| {
                rxd_tls::client::web_client_config(&self.extra_cas).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(WebError::Tls)
    }

    /// Send one request to `url` and read the whole reply, all within `timeout`.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
        timeout: Duration,
    ) -> Result<WebReply, WebError> {
        match tokio::time::timeout(timeout, self.exchange(method, url, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(WebError::Timeout { url: url.into() }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<WebReply, WebError> {
        let resp = self.send(method, url, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| WebError::Network {
                url: url.into(),
                reason: format!("reading the reply: {e}"),
            })?
            .to_bytes();
        Ok(WebReply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// `GET url`, its body handed to `each` chunk by chunk as it arrives: at most `limit`
    /// bytes, and no more than `stall` without one (the whole exchange has no other bound, so
    /// a large download may take as long as it keeps moving). The body of a reply that is not
    /// 2xx is not read. Returns the status, the headers and how many bytes were handed on.
    pub async fn download(
        &self,
        url: &str,
        limit: u64,
        stall: Duration,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(u16, HeaderMap, u64), WebError> {
        let resp = tokio::time::timeout(stall, self.send(Method::GET, url, &[], None))
            .await
            .map_err(|_| WebError::Timeout { url: url.into() })??;
        let (parts, mut body) = resp.into_parts();
        let status = parts.status.as_u16();
        if !(200..300).contains(&status) {
            return Ok((status, parts.headers, 0));
        }
        let mut size: u64 = 0;
        loop {
            let frame = match tokio::time::timeout(stall, body.frame()).await {
                Err(_) => return Err(WebError::Timeout { url: url.into() }),
                Ok(None) => break,
                Ok(Some(frame)) => frame.map_err(|e| WebError::Network {
                    url: url.into(),
                    reason: format!("reading the reply: {e}"),
                })?,
            };
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            size += chunk.len() as u64;
            if size > limit {
                return Err(WebError::TooLarge {
                    url: url.into(),
                    limit,
                });
            }
            each(&chunk).map_err(|reason| WebError::Sink {
                url: url.into(),
                reason,
            })?;
        }
        Ok((status, parts.headers, size))
    }

    /// Opens a websocket at `url`, an `https` URL (LXD's operation channels: `wss` on the
    /// server's own address): TCP and TLS as for a request, then the upgrade, each within the
    /// connect timeout; messages of at most `max_message` bytes. A refused upgrade says the
    /// status the server answered. Errors name the URL without its query, which holds the
    /// channel's secret.
    pub async fn websocket(&self, url: &str, max_message: usize) -> Result<WebSocket, WebError> {
        let shown = url.split('?').next().unwrap_or_default();
        let target = Target::parse(url).map_err(|e| match e {
            WebError::BadUrl { reason, .. } => WebError::BadUrl {
                url: shown.into(),
                reason,
            },
            other => other,
        })?;
        let net = |reason: String| WebError::Network {
            url: shown.into(),
            reason,
        };
        if !target.tls {
            return Err(WebError::BadUrl {
                url: shown.into(),
                reason: "websockets are opened over https only".into(),
            });
        }
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| WebError::Timeout { url: shown.into() })?
        .map_err(|e| net(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(target.host.clone()).map_err(|e| WebError::BadUrl {
            url: shown.into(),
            reason: e.to_string(),
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.tls()?);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| WebError::Timeout { url: shown.into() })?
            .map_err(|e| net(format!("TLS: {e}")))?;
        let request = Request::builder()
            .uri(format!(
                "wss://{}{}",
                target.authority, target.path_and_query
            ))
            .header("host", target.authority.as_str())
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header(
                "sec-websocket-key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            )
            .header("user-agent", concat!("rxd/", env!("CARGO_PKG_VERSION")))
            .body(())
            .map_err(|e| WebError::BadUrl {
                url: shown.into(),
                reason: e.to_string(),
            })?;
        let upgraded = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::client_async_with_config(
                request,
                stream,
                Some(
                    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                        .max_message_size(Some(max_message))
                        .max_frame_size(Some(max_message)),
                ),
            ),
        )
        .await
        .map_err(|_| WebError::Timeout { url: shown.into() })?;
        match upgraded {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(reply)) => Err(net(format!(
                "the websocket was refused ({})",
                reply.status()
            ))),
            Err(e) => Err(net(e.to_string())),
        }
    }

    /// Connect and send one request; the reply's head has been read.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<http::Response<hyper::body::Incoming>, WebError> {
        let target = Target::parse(url)?;
        let net = |reason: String| WebError::Network {
            url: url.into(),
            reason,
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| WebError::Timeout { url: url.into() })?
        .map_err(|e| net(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut sender = if target.tls {
            let name = ServerName::try_from(target.host.clone()).map_err(|e| WebError::BadUrl {
                url: url.into(),
                reason: e.to_string(),
            })?;
            let connector = tokio_rustls::TlsConnector::from(self.tls()?);
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| WebError::Timeout { url: url.into() })?
                .map_err(|e| net(format!("TLS: {e}")))?;
            handshake(stream).await.map_err(net)?
        } else {
            handshake(tcp).await.map_err(net)?
        };
        let mut req = Request::builder()
            .method(method)
            .uri(target.path_and_query.as_str())
            .header("host", target.authority.as_str())
            .header("user-agent", concat!("rxc/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let payload = match body {
            Some((content_type, data)) => {
                req = req.header("content-type", content_type);
                Bytes::from(data)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|e| WebError::BadUrl {
            url: url.into(),
            reason: e.to_string(),
        })?;
        sender
            .send_request(req)
            .await
            .map_err(|e| net(e.to_string()))
    }
}

async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Where an absolute `http`/`https` URL points.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// Without brackets, for connecting and for the TLS server name.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, WebError> {
        let bad = |reason: &str| WebError::BadUrl {
            url: url.into(),
            reason: reason.into(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("only http and https URLs are supported")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in URLs are not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Target {
            tls,
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            host,
            path_and_query: uri
                .path_and_query()
                .map(|p| p.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or("/")
                .to_owned(),
        })
    }
}

/// `reference` resolved against `base` as a browser would (RFC 3986 §5.2, enough for the URLs
/// dischargers hand out: absolute, host-absolute, or relative to the base's directory).
pub fn resolve(base: &str, reference: &str) -> String {
    if reference.contains("://") {
        return reference.to_owned();
    }
    let (origin, base_path) = match base.find("://").map(|i| i + 3) {
        Some(start) => match base[start..].find('/') {
            Some(j) => (&base[..start + j], &base[start + j..]),
            None => (base, "/"),
        },
        None => ("", base),
    };
    if reference.starts_with("//") {
        let scheme = base.split("://").next().unwrap_or("https");
        return format!("{scheme}:{reference}");
    }
    let (ref_path, ref_rest) = match reference.find(['?', '#']) {
        Some(i) => reference.split_at(i),
        None => (reference, ""),
    };
    let base_path = base_path.split(['?', '#']).next().unwrap_or("/");
    let path = if ref_path.is_empty() {
        base_path.to_owned()
    } else if ref_path.starts_with('/') {
        normalize(ref_path)
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        normalize(&format!("{dir}{ref_path}"))
    };
    let path = if path.is_empty() { "/".into() } else { path };
    format!("{origin}{path}{ref_rest}")
}

/// Removes `.` and `..` segments from an absolute path.
fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut p = format!("/{}", out.join("/"));
    if trailing && !p.ends_with('/') {
        p.push('/');
    }
    p
}

/// `url` with `key=value` pairs added to its query.
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let mut out = base.to_owned();
    let mut sep = if !out.contains('?') {
        "?"
    } else if out.ends_with('?') || out.ends_with('&') {
        ""
    } else {
        "&"
    };
    for (k, v) in pairs {
        out.push_str(sep);
        out.push_str(&query_escape(k));
        out.push('=');
        out.push_str(&query_escape(v));
        sep = "&";
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `application/x-www-form-urlencoded` of `fields`.
pub fn form_encode(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("https://candid.example/discharge?x=1").unwrap();
        assert_eq!(
            t,
            Target {
                tls: true,
                host: "candid.example".into(),
                port: 443,
                authority: "candid.example".into(),
                path_and_query: "/discharge?x=1".into(),
            }
        );
        let t = Target::parse("http://[::1]:8081").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 8081, false));
        assert_eq!(t.authority, "[::1]:8081");
        assert_eq!(t.path_and_query, "/");
        for bad in ["ftp://x/", "/relative", "local", "http://user:pw@host/", ""] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    fn check(base: &str, reference: &str, expected: &str) {
        assert_eq!(resolve(base, reference), expected, "{base} + {reference}");
    }

    #[test]
    fn resolving_references() {
        check("http://h:1/", "/login?did=x", "http://h:1/login?did=x");
        check("http://h:1", "login?did=x", "http://h:1/login?did=x");
        check("http://h:1/a/b", "c", "http://h:1/a/c");
        check("http://h:1/a/b/", "c", "http://h:1/a/b/c");
        check("http://h:1/x", "https://o/p", "https://o/p");
        check("https://h/x", "//o/p", "https://o/p");
        // The cookie path of a challenge: MacaroonPath against the request.
        check("https://h/1.0", ".", "https://h/");
        check("https://h/1.0/instances", "../", "https://h/");
        check(
            "https://h/1.0/instances/c1/state",
            "../../../",
            "https://h/",
        );
        check("https://h/1.0/instances", "..", "https://h/");
    }

    #[test]
    fn queries_and_forms() {
        assert_eq!(
            with_query("http://h/login?did=1", &[("domain", "a b")]),
            "http://h/login?did=1&domain=a%20b"
        );
        assert_eq!(
            with_query("http://h/login", &[("u", "x"), ("k", "+/=")]),
            "http://h/login?u=x&k=%2B%2F%3D"
        );
        assert_eq!(with_query("http://h/l?", &[("a", "1")]), "http://h/l?a=1");
        assert_eq!(
            form_encode(&[("id64".into(), "AwA".into()), ("t".into(), "a+b".into())]),
            "id64=AwA&t=a%2Bb"
        );
    }
}
