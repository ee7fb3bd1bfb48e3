//! Request bodies: JSON with a per-endpoint size limit. Oversized bodies get 413 before they are
//! read in full; malformed JSON gets 400 with the decoder's message.

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
        if bytes.is_empty() {
            // LXD's decoder says this for an empty body.
            return Err(ApiError::BadRequest("unexpected EOF".into()));
        }
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}
