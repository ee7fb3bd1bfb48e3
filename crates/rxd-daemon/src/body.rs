//! Request bodies: JSON with a per-endpoint size limit, the one extractor every JSON body goes
//! through. Oversized bodies get 413 before they are read in full; a body that is not labelled
//! `application/json` gets 415 (a browser can send `text/plain` cross-site without asking first);
//! malformed JSON gets 400 with the decoder's message; unknown fields are ignored (and logged at
//! debug level) and `null` is a field left out, as in LXD. Raw uploads are streamed chunk by chunk
//! under their own limit ([`stream`]).

use crate::error::ApiError;
use axum::extract::{FromRequest, Request};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

/// The default limit for JSON bodies: configuration and trust-store requests are small.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

pub struct Json<T, const LIMIT: usize = DEFAULT_LIMIT>(pub T);

impl<S: Send + Sync, T: DeserializeOwned, const LIMIT: usize> FromRequest<S> for Json<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        decode(&read_json_bytes(req, LIMIT).await?).map(Json)
    }
}

/// A JSON body an endpoint may also be sent without (LXD's `POST /1.0/images/<fp>/refresh`
/// takes none): empty is `None`; anything else passes the same checks as [`Json`].
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_json_bytes(req, DEFAULT_LIMIT).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(None));
        }
        decode(&bytes).map(|v| OptionalJson(Some(v)))
    }
}

/// A JSON body's bytes, read within `limit` (413 beyond it), labelled JSON when not empty.
async fn read_json_bytes(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let json_labelled = is_json(req.headers());
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        // A body small enough to read and drop is read, so the client gets to see the 413
        // instead of a reset while it is still sending.
        if n <= DISCARD_LIMIT {
            discard(req.into_body()).await;
        }
        return Err(ApiError::TooLarge { limit });
    }
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if bytes.len() + chunk.len() > limit {
            // A declared (so small, see above) remainder is read; a chunked one is not
            // waited for.
            if declared.is_some() {
                discard(body).await;
            }
            return Err(ApiError::TooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    if !bytes.is_empty() && !json_labelled {
        return Err(ApiError::UnsupportedMediaType(
            "Request bodies here are JSON: send them as Content-Type: application/json".into(),
        ));
    }
    Ok(bytes)
}

/// A JSON body, once read within its limit (also the fuzz targets' entry, `fuzzing.rs`),
/// decoded as LXD's Go handlers decode it ([`rxd_api::decode`]): `null` is the zero value and
/// fields nothing reads are skipped, logged at debug level so a client sending a field rxd
/// does not act on can be seen.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        // LXD's decoder says this for an empty body.
        return Err(ApiError::BadRequest("unexpected EOF".into()));
    }
    let decoded = rxd_api::decode::<T>(bytes).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if !decoded.ignored.is_empty() {
        tracing::debug!(
            body = std::any::type_name::<T>(),
            ignored = ?decoded.ignored,
            "request body fields ignored"
        );
    }
    Ok(decoded.value)
}

/// Is the request's body labelled JSON (`application/json`, parameters such as `charset` allowed)?
/// Debian's `lxc`, pylxd and `rxc` all say so; HTML forms and `text/plain` fetches cannot.
fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Hand each chunk of a raw upload to `each`, refusing (413) once more than `limit` bytes have
/// come; returns the size. On an error the caller drops what it wrote.
pub async fn stream(
    mut body: axum::body::Body,
    limit: u64,
    mut each: impl FnMut(&[u8]) -> Result<(), ApiError>,
) -> Result<u64, ApiError> {
    let mut size: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("reading the upload: {e}")))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::TooLarge {
                limit: limit as usize,
            });
        }
        each(&chunk)?;
    }
    Ok(size)
}

/// Unread upload bytes read and dropped before an early refusal is sent (as Go's net/http does
/// for LXD), so a client still sending a small body gets to read the refusal.
pub const DISCARD_LIMIT: u64 = 256 * 1024;

/// Read and drop what is left of `body`, up to [`DISCARD_LIMIT`] bytes and 5 s. A larger or slower
/// body is left unread: the connection then closes after the answer.
pub async fn discard(body: axum::body::Body) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream(body, DISCARD_LIMIT, |_| Ok(())),
    )
    .await;
}

/// A request body shared between the handler and [`drain_unread`], which reads what the handler
/// left once the handler is done with it.
struct Shared(std::sync::Arc<std::sync::Mutex<Option<axum::body::Body>>>);

impl hyper::body::Body for Shared {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match inner.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| hyper::body::SizeHint::with_exact(0))
    }
}

/// The layer that reads and drops (within 5 s) what a handler left of a request body declared no
/// longer than [`DISCARD_LIMIT`] before its answer goes out, as Go's net/http does for LXD: a client
/// still sending a body the handler never wanted (a DELETE with a body, a refused request) then
/// reads the answer instead of a connection reset. A client waiting for `100 Continue` is not
/// asked for its body, a larger or chunked body is not waited for (the connection closes after the
/// answer), and a body a handler still holds (streamed elsewhere) is left alone.
pub async fn drain_unread(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use hyper::body::Body as _;
    let expects_continue = req.headers().contains_key(http::header::EXPECT);
    let small = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= DISCARD_LIMIT);
    let (parts, body) = req.into_parts();
    if expects_continue || !small || body.is_end_stream() {
        return next
            .run(axum::extract::Request::from_parts(parts, body))
            .await;
    }
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Some(body)));
    let handed = axum::body::Body::new(Shared(shared.clone()));
    let resp = next
        .run(axum::extract::Request::from_parts(parts, handed))
        .await;
    if std::sync::Arc::strong_count(&shared) == 1 {
        let rest = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rest) = rest.filter(|b| !b.is_end_stream()) {
            discard(rest).await;
        }
    }
    resp
}
