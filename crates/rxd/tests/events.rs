//! `/1.0/events`: a websocket stream of lifecycle and operation events, visible by permission,
//! closed on revocation, refused to foreign web origins.

use base64::Engine;
use futures_util::StreamExt;
use rxd_client::Method;
use rxd_testkit::{client_identity, require_root, TestDaemon};
use rxd_tls::KeyPairFiles;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Open `/1.0/events` over TLS as `id`, with an optional Origin header.
async fn subscribe(
    d: &TestDaemon,
    id: &KeyPairFiles,
    query: &str,
    origin: Option<&str>,
) -> Result<Ws, String> {
    let pin = rxd_tls::cert::fingerprint_bytes(&d.server_cert_der());
    let (config, _) =
        rxd_tls::client::client_config(rxd_tls::client::ServerTrust::Pinned(pin), Some(id))
            .unwrap();
    let tcp = tokio::net::TcpStream::connect(d.https_address())
        .await
        .unwrap();
    let name = rxd_tls::client::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("wss://127.0.0.1/1.0/events{query}"),
    )
    .unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::client_async(req, tls).await {
        Ok((ws, _)) => Ok(ws),
        Err(e) => Err(e.to_string()),
    }
}

async fn next_event(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("no event within 5 s"),
        }
    }
}

async fn trust(d: &TestDaemon, id: &KeyPairFiles, restricted: bool) {
    let body = json!({"certificate": base64::engine::general_purpose::STANDARD.encode(&id.cert_der), "restricted": restricted});
    let r = d
        .unix()
        .request(Method::POST, "/1.0/certificates", Some(&body))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn lifecycle_events_stream_to_admins_and_close_on_revocation() {
    if !require_root("lifecycle_events_stream_to_admins_and_close_on_revocation") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = client_identity("admin");
    let limited = client_identity("limited");
    trust(&d, &admin, false).await;
    trust(&d, &limited, true).await;
    let mut admin_ws = subscribe(&d, &admin, "?type=lifecycle", None)
        .await
        .unwrap();
    let mut limited_ws = subscribe(&d, &limited, "", None).await.unwrap();

    let newcomer = client_identity("newcomer");
    trust(&d, &newcomer, false).await;
    let e = next_event(&mut admin_ws).await.unwrap();
    assert_eq!(e["type"], "lifecycle");
    assert_eq!(e["metadata"]["action"], "certificate-created");
    assert_eq!(
        e["metadata"]["source"],
        format!("/1.0/certificates/{}", newcomer.fingerprint)
    );
    assert_eq!(e["metadata"]["requestor"]["protocol"], "unix");

    // A token operation is an operation event, without its secret; this subscriber asked for
    // lifecycle events only, so the next one it sees is the deletion below.
    let r = d
        .unix()
        .request(
            Method::POST,
            "/1.0/certificates",
            Some(&json!({"name": "t", "token": true})),
        )
        .await
        .unwrap();
    let secret = r.envelope().unwrap().metadata["metadata"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = d
        .unix()
        .request(
            Method::DELETE,
            &format!("/1.0/certificates/{}", newcomer.fingerprint),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let e = next_event(&mut admin_ws).await.unwrap();
    assert_eq!(e["metadata"]["action"], "certificate-deleted");

    // The restricted certificate saw none of it: its first message is the close below.
    // Revoking the admin's own certificate closes its stream.
    d.unix()
        .request(
            Method::DELETE,
            &format!("/1.0/certificates/{}", admin.fingerprint),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut admin_ws).await,
        None,
        "stream closed on revocation"
    );
    d.unix()
        .request(
            Method::DELETE,
            &format!("/1.0/certificates/{}", limited.fingerprint),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut limited_ws).await,
        None,
        "saw no event, then closed on revocation"
    );
    assert!(
        !d.logs().contains(&secret),
        "token secrets never reach logs"
    );
}

#[tokio::test]
async fn operation_events_hide_token_secrets() {
    if !require_root("operation_events_hide_token_secrets") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = client_identity("admin");
    trust(&d, &admin, false).await;
    let mut ws = subscribe(&d, &admin, "?type=operation", None)
        .await
        .unwrap();
    let r = d
        .unix()
        .request(
            Method::POST,
            "/1.0/certificates",
            Some(&json!({"name": "t", "token": true})),
        )
        .await
        .unwrap();
    let secret = r.envelope().unwrap().metadata["metadata"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = next_event(&mut ws).await.unwrap();
    assert_eq!(e["type"], "operation");
    assert_eq!(e["metadata"]["class"], "token");
    assert_eq!(e["metadata"]["metadata"]["secret"], "");
    assert!(!e.to_string().contains(&secret));
}

#[tokio::test]
async fn events_endpoint_refusals() {
    if !require_root("events_endpoint_refusals") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = client_identity("admin");
    trust(&d, &admin, false).await;
    // Not a websocket: LXD's envelope, 400.
    let r = d
        .https(Some(&admin))
        .request(Method::GET, "/1.0/events", None)
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.envelope().unwrap().error_code, 400);
    // Untrusted: 403 before any upgrade.
    let stranger = client_identity("stranger");
    assert!(subscribe(&d, &stranger, "", None)
        .await
        .unwrap_err()
        .contains("403"));
    // A foreign web origin is refused; our own clients and pylxd's origin are not.
    assert!(subscribe(&d, &admin, "", Some("https://evil.example"))
        .await
        .unwrap_err()
        .contains("403"));
    assert!(subscribe(&d, &admin, "", Some("ws+unix://localhost"))
        .await
        .is_ok());
    // Unknown event types.
    assert!(subscribe(&d, &admin, "?type=gossip", None)
        .await
        .unwrap_err()
        .contains("400"));
}
