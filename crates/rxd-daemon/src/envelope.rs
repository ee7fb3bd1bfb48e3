//! An envelope serialized into an HTTP response, with the headers every JSON reply carries:
//! the leaf both successful replies (`response`) and errors (`error`) are written through.

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};

pub fn json_response(status: StatusCode, envelope: &impl serde::Serialize) -> Response {
    let mut body = serde_json::to_vec(envelope).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    with_body(status, body)
}

pub(crate) fn with_body(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}
