//! Requests to the daemon's API from tests: one that must succeed, and one whose outcome
//! (after its operation, if it answers with one) is returned.

use rxd_client::{Client, Method};
use serde_json::Value;

/// `method path body`, which must succeed: its metadata.
pub async fn ok(c: &Client, method: Method, path: &str, body: Value) -> Value {
    let r = c.request(method, path, Some(&body)).await.unwrap();
    assert!(r.status < 300, "{path}: {} {:?}", r.status, r.envelope());
    r.metadata().unwrap_or(Value::Null)
}

/// `method path body` to its end (its operation's, if it answers with one): `Ok` or the error.
pub async fn outcome(c: &Client, method: Method, path: &str, body: Value) -> Result<(), String> {
    let r = c.request(method, path, Some(&body)).await.unwrap();
    if r.status >= 300 {
        return Err(r.envelope().unwrap().error);
    }
    let Some(id) = r
        .metadata()
        .ok()
        .and_then(|m| m["id"].as_str().map(str::to_owned))
    else {
        return Ok(());
    };
    let done = c
        .get(&format!("/1.0/operations/{id}/wait?timeout=60"))
        .await
        .unwrap();
    match done["status"].as_str() {
        Some("Success") => Ok(()),
        _ => Err(done["err"].as_str().unwrap_or_default().to_owned()),
    }
}

/// Trust `id` as a restricted client certificate of `projects` (LXD's restricted certificate:
/// the operator of those projects).
pub async fn trust_restricted(unix: &Client, id: &crate::KeyPairFiles, projects: &[&str]) {
    use base64::Engine;
    let cert = base64::engine::general_purpose::STANDARD.encode(&id.cert_der);
    ok(
        unix,
        Method::POST,
        "/1.0/certificates",
        serde_json::json!({"certificate": cert, "restricted": true, "projects": projects}),
    )
    .await;
}
