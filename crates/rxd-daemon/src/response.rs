//! Successful replies in LXD's envelope: sync, created (201 + Location), async (202).

use axum::response::IntoResponse;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};
use rxd_api::{Envelope, ResponseType};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::envelope::{json_response, with_body};

/// LXD's sync envelope around borrowed metadata, serialized in one pass (no intermediate
/// `Value`: building one was a fifth of the CPU time of a `GET /1.0`). Same fields, same order
/// as [`Envelope`].
#[derive(Serialize)]
struct SyncEnvelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: ResponseType,
    status: &'static str,
    status_code: u16,
    operation: &'static str,
    error_code: u16,
    error: &'static str,
    metadata: &'a T,
}

pub fn sync(metadata: impl Serialize) -> Response {
    let envelope = SyncEnvelope {
        kind: ResponseType::Sync,
        status: rxd_api::StatusCode::Success.text(),
        status_code: rxd_api::StatusCode::Success.code(),
        operation: "",
        error_code: 0,
        error: "",
        metadata: &metadata,
    };
    match serde_json::to_vec(&envelope) {
        Ok(mut body) => {
            body.push(b'\n');
            with_body(StatusCode::OK, body)
        }
        Err(e) => crate::error::ApiError::internal(e).into_response(),
    }
}

/// An empty sync reply (`metadata: {}`), as LXD answers DELETE and PUT.
pub fn empty() -> Response {
    sync(serde_json::Map::new())
}

/// A sync reply carrying an ETag computed over `etag_of`.
pub fn sync_with_etag(metadata: impl Serialize, etag_of: &impl Serialize) -> Response {
    let mut resp = sync(metadata);
    if let Ok(v) = HeaderValue::from_str(&etag(etag_of)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// 201 with `Location`, body `metadata: null`, as LXD answers a created resource.
pub fn created(location: &str) -> Response {
    let mut resp = json_response(
        StatusCode::CREATED,
        &Envelope::sync(serde_json::Value::Null),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// 201 with `Location` and the created object as metadata.
pub fn created_with(location: &str, metadata: impl Serialize) -> Response {
    let value = serde_json::to_value(metadata).unwrap_or(serde_json::Value::Null);
    let mut resp = json_response(StatusCode::CREATED, &Envelope::sync(value));
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// 202 for a new operation.
pub fn operation(url: String, metadata: impl Serialize) -> Response {
    let value = serde_json::to_value(metadata).unwrap_or(serde_json::Value::Null);
    let mut resp = json_response(
        StatusCode::ACCEPTED,
        &Envelope::async_op(url.clone(), value),
    );
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Quoted lowercase hex SHA-256 of the JSON of `value`.
pub fn etag(value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    format!("\"{}\"", hex::encode(Sha256::digest(json)))
}

/// `If-Match` must name the current ETag when present.
pub fn check_if_match(
    headers: &http::HeaderMap,
    current: &impl Serialize,
) -> Result<(), crate::error::ApiError> {
    match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        None => Ok(()),
        Some(given) if given.trim() == "*" || given.trim() == etag(current) => Ok(()),
        Some(_) => Err(crate::error::ApiError::PreconditionFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// The one-pass envelope is byte for byte the one built through `Envelope`.
    #[tokio::test]
    async fn sync_matches_the_envelope_type() {
        #[derive(Serialize)]
        struct Meta {
            b: u8,
            a: Vec<&'static str>,
            c: Option<String>,
        }
        let meta = Meta {
            b: 1,
            a: vec!["x\"y", "z"],
            c: None,
        };
        let fast = sync(&meta).into_body().collect().await.unwrap().to_bytes();
        let slow = json_response(
            StatusCode::OK,
            &Envelope::sync(serde_json::to_value(&meta).unwrap()),
        )
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
        assert_eq!(fast, slow);
    }
}
