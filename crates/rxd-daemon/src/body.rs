//! Request bodies: JSON with a per-endpoint size limit. Oversized bodies get 413 before they are
//! read in full; malformed JSON gets 400 with the decoder's message. Raw uploads are streamed
//! chunk by chunk under their own limit ([`stream`]).

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
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > LIMIT as u64) {
            return Err(ApiError::TooLarge { limit: LIMIT });
        }
        let limited = http_body_util::Limited::new(req.into_body(), LIMIT);
        let bytes = match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::TooLarge { limit: LIMIT })
            }
            Err(e) => {
                return Err(ApiError::BadRequest(format!(
                    "reading the request body: {e}"
                )))
            }
        };
        decode(&bytes).map(Json)
    }
}

/// A JSON body, once read within its limit (also the fuzz targets' entry, `fuzzing.rs`).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        // LXD's decoder says this for an empty body.
        return Err(ApiError::BadRequest("unexpected EOF".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(e.to_string()))
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
