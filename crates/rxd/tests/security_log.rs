//! The security event log against the real daemon: each kind of event becomes one JSON line in
//! `<dir>/logs/security.log` with the right name and identity and no secret, administrators
//! receive them as `logging` events, and a restricted certificate's stream receives none.

use base64::Engine;
use futures_util::StreamExt;
use rxd_client::{Client, Method, Reply};
use rxd_testkit::{client_identity, require_root, TestDaemon};
use rxd_tls::KeyPairFiles;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

const PASSWORD: &str = "hunter2-do-not-log-me";
const GUESS: &str = "wrong-guess-do-not-log-me";

/// Open `/1.0/events{query}` over TLS as `id`.
async fn subscribe(d: &TestDaemon, id: &KeyPairFiles, query: &str) -> Ws {
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
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("wss://127.0.0.1/1.0/events{query}"),
    )
    .unwrap();
    tokio_tungstenite::client_async(req, tls).await.unwrap().0
}

async fn next_event(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                panic!("event stream closed")
            }
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("no event within 5 s"),
        }
    }
}

async fn call(c: &Client, method: Method, path: &str, body: Option<Value>) -> Reply {
    c.request(method, path, body.as_ref()).await.unwrap()
}

async fn trust(d: &TestDaemon, id: &KeyPairFiles, restricted: bool) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(&id.cert_der);
    let body = json!({"certificate": b64, "restricted": restricted, "projects": if restricted { json!(["default"]) } else { json!([]) }});
    let r = call(&d.unix(), Method::POST, "/1.0/certificates", Some(body)).await;
    assert_eq!(r.status, 201, "{:?}", r.envelope());
}

fn log_lines(d: &TestDaemon) -> Vec<Value> {
    let text = std::fs::read_to_string(d.dir().join("logs/security.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Wait (up to 10 s) until the file holds a line with `event` whose `field` is `value`.
async fn wait_line(d: &TestDaemon, event: &str, field: &str, value: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = log_lines(d)
            .into_iter()
            .find(|l| l["event"] == event && field_of(l, field) == value)
        {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no {event} line with {field}={value}; log:\n{:#?}",
            log_lines(d)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `identity`, or a `details.*` field, as text.
fn field_of(line: &Value, field: &str) -> String {
    let v = match field.strip_prefix("details.") {
        Some(k) => &line["details"][k],
        None => &line[field],
    };
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn security_events_are_logged_once_each_without_secrets() {
    if !require_root("security_events_are_logged_once_each_without_secrets") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    let admin = client_identity("admin");
    let limited = client_identity("limited");
    let stranger = client_identity("stranger");
    trust(&d, &admin, false).await;
    trust(&d, &limited, true).await;
    let created = wait_line(
        &d,
        "user_created",
        "details.fingerprint",
        &admin.fingerprint,
    )
    .await;
    assert_eq!(created["identity"], "uid=0");
    assert_eq!(created["auth_method"], "unix");
    assert_eq!(created["source"], "unix:uid=0");
    assert_eq!(created["level"], "info");
    assert_eq!(created["request"]["method"], "POST");
    assert_eq!(created["request"]["path"], "/1.0/certificates");
    assert_eq!(created["project"], "", "the trust store is server-wide");
    assert!(created["time"].as_str().unwrap().ends_with('Z'));

    let mut admin_ws = subscribe(&d, &admin, "?type=logging").await;
    let mut limited_ws = subscribe(&d, &limited, "?type=logging,lifecycle").await;

    // A server config change: the key is named, the password is not.
    let r = call(
        &unix,
        Method::PATCH,
        "/1.0",
        Some(json!({"config": {"core.trust_password": PASSWORD}})),
    )
    .await;
    assert_eq!(r.status, 200);
    let line = wait_line(
        &d,
        "sys_config_change",
        "details.key",
        "core.trust_password",
    )
    .await;
    assert_eq!(line["request"]["method"], "PATCH");
    assert!(line["details"].get("new").is_none(), "{line}");
    let e = next_event(&mut admin_ws).await;
    assert_eq!(e["type"], "logging");
    assert_eq!(e["project"], "");
    assert_eq!(e["location"], "none");
    assert_eq!(e["metadata"]["context"]["event"], "sys_config_change");
    assert_eq!(e["metadata"]["context"]["key"], "core.trust_password");
    assert_eq!(e["metadata"]["level"], "info");

    // A wrong trust password at enrolment.
    let s = d.https(Some(&stranger));
    let r = call(
        &s,
        Method::POST,
        "/1.0/certificates",
        Some(json!({"password": GUESS})),
    )
    .await;
    assert_eq!(r.status, 403);
    let line = wait_line(&d, "authn_login_fail", "identity", &stranger.fingerprint).await;
    assert_eq!(line["level"], "warn");
    assert!(line["source"].as_str().unwrap().starts_with("127.0.0.1:"));

    // An untrusted certificate on an endpoint that needs trust.
    let r = call(&s, Method::GET, "/1.0/instances", None).await;
    assert_eq!(r.status, 403);
    let line = wait_line(
        &d,
        "authn_certificate_fail",
        "identity",
        &stranger.fingerprint,
    )
    .await;
    assert_eq!(line["request"]["path"], "/1.0/instances");

    // A restricted certificate: refused outright (403) and hidden (404).
    let l = d.https(Some(&limited));
    let r = call(
        &l,
        Method::PATCH,
        "/1.0",
        Some(json!({"config": {"core.trust_password": "x"}})),
    )
    .await;
    assert_eq!(r.status, 403);
    let line = wait_line(&d, "authz_fail", "details.answer", "forbidden (403)").await;
    assert_eq!(line["identity"], limited.fingerprint.as_str());
    assert_eq!(line["auth_method"], "tls");
    let r = call(&l, Method::GET, "/1.0/instances?project=elsewhere", None).await;
    assert_eq!(r.status, 404);
    let line = wait_line(&d, "authz_fail", "details.answer", "hidden (404)").await;
    assert_eq!(line["project"], "elsewhere");
    assert_eq!(line["request"]["path"], "/1.0/instances");

    // A token issued, revoked, then tried: three events, none with the secret.
    let r = call(
        &unix,
        Method::POST,
        "/1.0/certificates",
        Some(json!({"name": "late", "token": true})),
    )
    .await;
    let md = r.envelope().unwrap().metadata["metadata"].clone();
    let secret = md["secret"].as_str().unwrap().to_owned();
    let id = r.envelope().unwrap().metadata["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_line(&d, "authn_token_created", "details.token", &id).await;
    let r = call(
        &unix,
        Method::DELETE,
        &format!("/1.0/operations/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    wait_line(&d, "authn_token_revoked", "details.token", &id).await;
    let token = rxd_api::certificate::CertificateAddToken {
        client_name: "late".into(),
        fingerprint: md["fingerprint"].as_str().unwrap().into(),
        addresses: vec![md["addresses"][0].as_str().unwrap().into()],
        secret: secret.clone(),
        expires_at: md["expiresAt"].as_str().unwrap().into(),
    }
    .encode();
    let r = call(
        &s,
        Method::POST,
        "/1.0/certificates",
        Some(json!({"password": token})),
    )
    .await;
    assert_eq!(r.status, 403);
    wait_line(&d, "authn_token_fail", "identity", &stranger.fingerprint).await;

    // A grant and its revocation.
    let r = call(
        &unix,
        Method::POST,
        "/1.0/auth/grants",
        Some(json!({"identity_type": "certificate", "identity": limited.fingerprint, "role": "auditor", "scope": "project", "project": "default"})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.envelope());
    let grant = r.metadata().unwrap()["id"].to_string();
    let line = wait_line(&d, "authz_change", "details.grant", &grant).await;
    assert_eq!(line["details"]["role"], "auditor");
    assert_eq!(line["project"], "default");
    let r = call(
        &unix,
        Method::DELETE,
        &format!("/1.0/auth/grants/{grant}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let lines = log_lines(&d);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_lines(&d)
        .iter()
        .filter(|l| l["event"] == "authz_change")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "revocation not logged: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Trust-store update and removal.
    let r = call(
        &unix,
        Method::PATCH,
        &format!("/1.0/certificates/{}", admin.fingerprint),
        Some(json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    wait_line(&d, "user_updated", "details.name", "renamed").await;
    let r = call(
        &unix,
        Method::DELETE,
        &format!("/1.0/certificates/{}", admin.fingerprint),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    wait_line(
        &d,
        "user_deleted",
        "details.fingerprint",
        &admin.fingerprint,
    )
    .await;

    // A project config change, last: it is also a lifecycle event the restricted certificate
    // may see, so the first thing its stream delivers must be that, and no logging event.
    let r = call(
        &unix,
        Method::PATCH,
        "/1.0/projects/default",
        Some(json!({"config": {"limits.instances": "5"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    let line = wait_line(&d, "sys_config_change", "details.key", "limits.instances").await;
    assert_eq!(line["project"], "default");
    assert_eq!(line["details"]["old"], "");
    assert_eq!(line["details"]["new"], "5");
    let first = next_event(&mut limited_ws).await;
    assert_eq!(first["type"], "lifecycle", "{first}");
    assert_eq!(first["metadata"]["action"], "project-updated");

    // Each event is one line: every request above produced exactly one.
    let lines = log_lines(&d);
    let count = |name: &str| lines.iter().filter(|l| l["event"] == name).count();
    for (name, n) in [
        ("user_created", 2),
        ("authn_login_fail", 1),
        ("authn_certificate_fail", 1),
        ("authz_fail", 2),
        ("authn_token_created", 1),
        ("authn_token_revoked", 1),
        ("authn_token_fail", 1),
        ("authz_change", 2),
        ("user_updated", 1),
        ("user_deleted", 1),
        // The test kit's own core.https_address, the password, the project key.
        ("sys_config_change", 3),
    ] {
        assert_eq!(count(name), n, "{name}: {lines:#?}");
    }
    let text = std::fs::read_to_string(d.dir().join("logs/security.log")).unwrap();
    for secret in [PASSWORD, GUESS, secret.as_str(), token.as_str()] {
        assert!(!text.contains(secret), "a secret reached the security log");
        assert!(
            !d.logs().contains(secret),
            "a secret reached the daemon log"
        );
    }
    let mode = std::fs::metadata(d.dir().join("logs/security.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The admin's stream got the same events, with no secret either. Updating the admin's own
    // certificate closed its stream: read what came before.
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), admin_ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                for secret in [PASSWORD, GUESS, secret.as_str()] {
                    assert!(!t.contains(secret));
                }
                let e: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(e["type"], "logging");
                seen.push(
                    e["metadata"]["context"]["event"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            Ok(Some(Ok(_))) => continue,
            _ => break,
        }
    }
    for name in [
        "authn_login_fail",
        "authn_certificate_fail",
        "authz_fail",
        "authn_token_created",
        "authn_token_revoked",
        "authn_token_fail",
        "authz_change",
    ] {
        assert!(
            seen.iter().any(|s| s == name),
            "{name} not streamed: {seen:?}"
        );
    }
}

/// Candid: a verified user from a domain `candid.domains` refuses, macaroons that do not
/// verify, and a login revoked by a `candid.*` change are authentication failures, logged with
/// the user's name (as claimed when it did not verify); a verified user without a grant is an
/// authorization failure, by name. No line holds the macaroons themselves.
#[tokio::test]
async fn candid_login_failures_are_logged_without_macaroons() {
    let test = "candid_login_failures_are_logged_without_macaroons";
    if !require_root(test) || !rxd_testkit::candid::require_python_bakery(test) {
        return;
    }
    const PW: &str = "correct horse";
    let users = json!({
        "alice@example.com": {"password": PW, "groups": []},
        "eve@evil.com": {"password": PW, "groups": []},
    });
    let dis = rxd_testkit::candid::Discharger::start(&users, None);
    let d = TestDaemon::start().await;
    let unix = d.unix();
    for cfg in [
        json!({"candid.api.key": dis.public_key}),
        json!({"candid.api.url": dis.url, "candid.domains": "example.com"}),
    ] {
        let r = call(&unix, Method::PATCH, "/1.0", Some(json!({ "config": cfg }))).await;
        assert_eq!(r.status, 200, "{:?}", r.envelope());
    }
    let url = format!("https://{}/1.0/instances", d.https_address());
    let ca = d.dir().join("server.crt").display().to_string();
    let login = |user: &str| {
        rxd_testkit::candid::py_client(&[
            "--url",
            &url,
            "--ca",
            &ca,
            "--user",
            user,
            "--password",
            PW,
        ])
    };

    let r = login("eve@evil.com");
    assert_eq!(r["status"], 403, "{r}");
    let line = wait_line(&d, "authn_login_fail", "identity", "eve@evil.com").await;
    assert_eq!(line["auth_method"], "candid");
    assert_eq!(line["request"]["path"], "/1.0/instances");
    assert!(line["description"]
        .as_str()
        .unwrap()
        .contains("Untrusted candid domain"));

    // Alice logs in but has no grant: refused by name.
    let r = login("alice@example.com");
    let cookie = r["cookie"].as_str().unwrap().to_owned();
    assert!(!cookie.is_empty(), "{r}");
    assert!(matches!(r["status"].as_u64(), Some(403 | 404)), "{r}");
    let line = wait_line(&d, "authz_fail", "identity", "alice@example.com").await;
    assert_eq!(line["auth_method"], "candid");

    // Alice's valid cookie with its discharge tampered with: it no longer verifies.
    let engine = base64::engine::general_purpose::STANDARD;
    let raw = engine
        .decode(&cookie)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&cookie))
        .unwrap();
    let mut slice: Vec<Value> = serde_json::from_slice(&raw).unwrap();
    let caveats = slice[1]["c"].as_array_mut().unwrap();
    let declared = caveats
        .iter_mut()
        .find(|c| c["i"].as_str().is_some_and(|i| i.starts_with("declared")))
        .unwrap();
    declared["i"] = json!("declared username root@example.com");
    let forged = engine.encode(Value::from(slice).to_string());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cookie");
    std::fs::write(&file, &forged).unwrap();
    let r = rxd_testkit::candid::py_client(&[
        "--url",
        &url,
        "--ca",
        &ca,
        "--user",
        "nobody",
        "--password",
        "x",
        "--cookie-in",
        file.to_str().unwrap(),
        "--no-interact",
    ]);
    assert_eq!(r["status"], 401, "{r}");
    let line = wait_line(&d, "authn_login_fail", "details.rejected_macaroons", "1").await;
    assert_eq!(line["auth_method"], "candid");
    assert_eq!(line["level"], "warn");
    // The name it claimed is a detail: unverified, it is never the line's identity.
    assert_eq!(line["details"]["claimed_user"], "root@example.com");
    assert_ne!(line["identity"], "root@example.com");
    assert_eq!(line["details"]["identity_verified"], false);
    assert_eq!(line["details"]["reason"], "signature mismatch");

    // A candid.* change revokes alice's untouched login: refused, and logged with her name.
    let r = call(
        &unix,
        Method::PATCH,
        "/1.0",
        Some(json!({"config": {"candid.expiry": "1800"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    std::fs::write(&file, &cookie).unwrap();
    let r = rxd_testkit::candid::py_client(&[
        "--url",
        &url,
        "--ca",
        &ca,
        "--user",
        "nobody",
        "--password",
        "x",
        "--cookie-in",
        file.to_str().unwrap(),
        "--no-interact",
    ]);
    assert_eq!(r["status"], 401, "{r}");
    let line = wait_line(
        &d,
        "authn_login_fail",
        "details.claimed_user",
        "alice@example.com",
    )
    .await;
    assert_eq!(line["auth_method"], "candid");
    assert_ne!(line["identity"], "alice@example.com");
    assert_eq!(line["details"]["identity_verified"], false);
    assert!(
        line["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{line}"
    );

    let text = std::fs::read_to_string(d.dir().join("logs/security.log")).unwrap();
    for secret in [cookie.as_str(), forged.as_str()] {
        assert!(
            !text.contains(secret),
            "a macaroon reached the security log"
        );
    }
}

/// Starting a privileged container is logged (its root is the host's root); an unprivileged
/// one is not.
#[tokio::test]
async fn a_privileged_start_is_logged() {
    let test = "a_privileged_start_is_logged";
    if !require_root(test) || !rxd_testkit::require_tool("busybox", "busybox-static", test) {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = tempfile::tempdir().unwrap();
    let image = conf.path().join("bb.tar.gz");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/make-busybox-image.sh");
    assert!(std::process::Command::new("bash")
        .arg(script)
        .arg(&image)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success());
    let rxc = |args: &[&str]| {
        let out = std::process::Command::new(rxd_testkit::bin("rxc"))
            .args(args)
            .env("RXC_CONF", conf.path())
            .env("RXD_DIR", d.dir())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rxc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rxc(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    rxc(&["launch", "bb", "plain"]);
    rxc(&["launch", "bb", "priv", "-c", "security.privileged=true"]);
    let line = wait_line(&d, "sys_privileged_start", "details.instance", "priv").await;
    assert_eq!(line["level"], "warn");
    assert_eq!(line["project"], "default");
    let lines = log_lines(&d);
    let starts: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "sys_privileged_start")
        .collect();
    assert_eq!(starts.len(), 1, "only the privileged one: {starts:#?}");
    rxc(&["stop", "--force", "plain"]);
    rxc(&["stop", "--force", "priv"]);
}
