//! Black-box tests of the daemon's foundation: state dir, keypair, unix socket, config, HTTPS
//! listener life, envelope and limits. Every test runs the real `rxd` binary.

use rxd_client::Method;
use rxd_testkit::{client_identity, require_root, Options, TestDaemon};
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn keypair_has_lxd_shape_and_tight_modes() {
    if !require_root("keypair_has_lxd_shape_and_tight_modes") {
        return;
    }
    let d = TestDaemon::start_with(Options {
        no_https: true,
        ..Default::default()
    })
    .await;
    let dir = d.dir();
    assert_eq!(mode(&dir), 0o711);
    assert_eq!(mode(&dir.join("server.crt")), 0o644);
    assert_eq!(mode(&dir.join("server.key")), 0o600);
    assert_eq!(mode(&dir.join("rxd.db")), 0o600);
    let key = std::fs::read_to_string(dir.join("server.key")).unwrap();
    assert!(
        key.starts_with("-----BEGIN EC PRIVATE KEY-----"),
        "SEC1 key like LXD's"
    );

    let der = d.server_cert_der();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.10045.4.3.3",
        "ecdsa-with-SHA384"
    );
    let spki = cert.public_key();
    assert_eq!(
        spki.algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1",
        "EC key"
    );
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap()
        .to_id_string();
    assert_eq!(curve, "1.3.132.0.34", "P-384");
    let v = cert.validity();
    let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400;
    assert_eq!(days, 3650);
    assert_eq!(cert.subject(), cert.issuer(), "self-signed");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    use x509_parser::extensions::GeneralName;
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let names = &san.general_names;
    assert!(names.contains(&GeneralName::DNSName(&host)), "{names:?}");
    assert!(
        names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])),
        "{names:?}"
    );
    let v6_loopback = std::net::Ipv6Addr::LOCALHOST.octets();
    assert!(
        names.contains(&GeneralName::IPAddress(&v6_loopback)),
        "{names:?}"
    );
    assert!(
        d.logs().contains(&d.server_fingerprint()),
        "fingerprint logged at start-up"
    );
}

#[tokio::test]
async fn keypair_regenerates_only_when_both_files_are_gone() {
    if !require_root("keypair_regenerates_only_when_both_files_are_gone") {
        return;
    }
    let mut d = TestDaemon::start_with(Options {
        no_https: true,
        ..Default::default()
    })
    .await;
    let first = d.server_fingerprint();
    d.restart().await;
    assert_eq!(d.server_fingerprint(), first, "kept across restarts");

    d.stop();
    std::fs::remove_file(d.dir().join("server.crt")).unwrap();
    std::fs::remove_file(d.dir().join("server.key")).unwrap();
    d.spawn();
    d.wait_ready().await;
    let second = d.server_fingerprint();
    assert_ne!(second, first, "a new pair after removing both");

    // Key missing: refuse to start, never overwrite the certificate.
    d.stop();
    let key = std::fs::read(d.dir().join("server.key")).unwrap();
    std::fs::remove_file(d.dir().join("server.key")).unwrap();
    let out = Command::new(rxd_testkit::bin("rxd"))
        .arg("--dir")
        .arg(d.dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.key is missing"), "{err}");
    assert_eq!(d.server_fingerprint(), second, "certificate untouched");

    // A key that does not match the certificate: refuse.
    let other = client_identity("other");
    std::fs::write(d.dir().join("server.key"), other.key_pem.as_bytes()).unwrap();
    let out = Command::new(rxd_testkit::bin("rxd"))
        .arg("--dir")
        .arg(d.dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match"), "{err}");

    // The right key back: starts again with the same identity.
    std::fs::write(d.dir().join("server.key"), key).unwrap();
    d.spawn();
    d.wait_ready().await;
    assert_eq!(d.server_fingerprint(), second);
}

/// Run a tiny client as another user: connect to the socket and send GET /1.0.
fn connect_as(user: &str, group: &str, socket: &std::path::Path) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={group}"),
            "--clear-groups",
            "--",
        ])
        .args(["curl", "-sS", "--max-time", "5", "--unix-socket"])
        .arg(socket)
        .arg("http://rxd/1.0")
        .output()
        .unwrap()
}

#[tokio::test]
async fn unix_socket_mode_group_and_access() {
    if !require_root("unix_socket_mode_group_and_access") {
        return;
    }
    let d = TestDaemon::start_with(Options {
        no_https: true,
        ..Default::default()
    })
    .await;
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let out = connect_as("nobody", "nogroup", &d.socket());
    assert!(!out.status.success(), "nobody must not connect");
    // curl's words for EACCES on connect(); the --group case below proves the path is reachable.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Couldn't connect"),
        "{out:?}"
    );
    let root = d.unix().get("/1.0").await.unwrap();
    assert_eq!(root["auth"], "trusted");
    assert_eq!(root["auth_user_method"], "unix");

    // With --group, members of that group get in (and are fully trusted).
    let d = TestDaemon::start_with(Options {
        no_https: true,
        group: Some("nogroup".into()),
        ..Default::default()
    })
    .await;
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(meta.gid(), 65534);
    let out = connect_as("nobody", "nogroup", &d.socket());
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata"]["auth"], "trusted");
    assert_eq!(v["metadata"]["auth_user_name"], "uid=65534");
}

#[tokio::test]
async fn one_daemon_per_state_dir_and_stale_socket_replaced() {
    if !require_root("one_daemon_per_state_dir_and_stale_socket_replaced") {
        return;
    }
    let mut d = TestDaemon::start_with(Options {
        no_https: true,
        ..Default::default()
    })
    .await;
    let out = Command::new(rxd_testkit::bin("rxd"))
        .arg("--dir")
        .arg(d.dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{out:?}"
    );
    assert!(
        d.unix().get("/1.0").await.is_ok(),
        "the first daemon is unaffected"
    );

    d.crash();
    assert!(d.socket().exists(), "a crash leaves the socket behind");
    d.spawn();
    d.wait_ready().await;

    // Something that is not a socket at the path is never removed.
    d.stop();
    std::fs::write(d.socket(), b"not a socket").unwrap();
    let out = Command::new(rxd_testkit::bin("rxd"))
        .arg("--dir")
        .arg(d.dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a socket"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(d.socket()).unwrap(), b"not a socket");
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    if !require_root("sigterm_shuts_down_cleanly") {
        return;
    }
    let mut d = TestDaemon::start().await;
    let status = d.stop().unwrap();
    assert!(status.success(), "{status}");
    assert!(!d.socket().exists(), "socket removed");
    let logs = d.logs();
    assert!(
        logs.contains("SIGTERM received") && logs.contains("rxd stopped"),
        "{logs}"
    );
}

#[tokio::test]
async fn discovery_untrusted_and_trusted_views() {
    if !require_root("discovery_untrusted_and_trusted_views") {
        return;
    }
    let d = TestDaemon::start().await;
    let stranger = client_identity("stranger");
    for client in [d.https(None), d.https(Some(&stranger))] {
        let root = client.request(Method::GET, "/", None).await.unwrap();
        assert_eq!(root.status, 200);
        assert_eq!(root.metadata().unwrap(), json!(["/1.0"]));
        let v = client.get("/1.0").await.unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "api_extensions",
                "api_status",
                "api_version",
                "auth",
                "public",
                "auth_methods"
            ]
        );
        assert_eq!(v["auth"], "untrusted");
        assert_eq!(v["auth_methods"], json!(["tls"]));
        assert_eq!(v["api_version"], "1.0");
        // Everything else is refused to untrusted callers, with LXD's text.
        let r = client
            .request(Method::GET, "/1.0/warnings", None)
            .await
            .unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.envelope().unwrap().error, "not authorized");
        let r = client
            .request(Method::PATCH, "/1.0", Some(&json!({"config": {}})))
            .await
            .unwrap();
        assert_eq!(r.status, 403);
    }
    assert!(
        d.logs().contains(&stranger.fingerprint),
        "refusal logged with the fingerprint"
    );

    let v = d.unix().get("/1.0").await.unwrap();
    assert_eq!(v["auth"], "trusted");
    let env = &v["environment"];
    assert_eq!(env["certificate_fingerprint"], d.server_fingerprint());
    assert_eq!(env["server"], "lxd");
    assert_eq!(env["server_version"], "5.0.2");
    assert_eq!(env["addresses"], json!([d.https_address()]));
    assert_eq!(env["server_pid"], d.pid().unwrap());
    assert!(env["certificate"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(env["kernel_version"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    assert_eq!(v["config"]["core.https_address"], d.https_address());
}

#[tokio::test]
async fn config_round_trip_with_write_only_password() {
    if !require_root("config_round_trip_with_write_only_password") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    let patch = |body: Value| {
        let unix = &unix;
        async move { unix.request(Method::PATCH, "/1.0", Some(&body)).await }
    };

    let r = patch(json!({"config": {"core.trust_password": "sekret-horse"}}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    let v = unix.get("/1.0").await.unwrap();
    assert_eq!(
        v["config"]["core.trust_password"],
        json!(true),
        "write-only: read back as true"
    );
    let raw = String::from_utf8_lossy(&r.body).to_string() + &serde_json::to_string(&v).unwrap();
    assert!(!raw.contains("sekret-horse"));
    let db = std::fs::read(d.dir().join("rxd.db")).unwrap();
    let wal = std::fs::read(d.dir().join("rxd.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !String::from_utf8_lossy(bytes).contains("sekret-horse"),
            "never stored in clear"
        );
    }
    assert!(
        String::from_utf8_lossy(&wal).contains("$argon2id$")
            || String::from_utf8_lossy(&db).contains("$argon2id$")
    );

    // PUT of what GET returned keeps the password (true = unchanged).
    let config = v["config"].clone();
    let r = unix
        .request(Method::PUT, "/1.0", Some(&json!({"config": config})))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        unix.get("/1.0").await.unwrap()["config"]["core.trust_password"],
        json!(true)
    );

    // Unknown keys and bad values: 400, and nothing changes.
    let before = unix.get("/1.0").await.unwrap()["config"].clone();
    for body in [
        json!({"config": {"core.no_such_key": "1"}}),
        json!({"config": {"core.https_address": "not an address"}}),
        json!({"config": {"core.remote_token_expiry": "soon"}}),
        json!({"config": {"core.https_address": "127.0.0.1:1", "core.bogus": "x"}}),
        json!({"config": {"core.trust_password": false}}),
    ] {
        let r = patch(body.clone()).await.unwrap();
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.envelope().unwrap().error_code, 400);
    }
    assert_eq!(unix.get("/1.0").await.unwrap()["config"], before);

    // Unset with "".
    let r = patch(json!({"config": {"core.trust_password": ""}}))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(unix.get("/1.0").await.unwrap()["config"]
        .get("core.trust_password")
        .is_none());

    // If-Match: a stale ETag is refused with 412.
    let r = unix.request(Method::GET, "/1.0", None).await.unwrap();
    let etag = r.header("etag").unwrap().to_owned();
    let body = bytes_of(&json!({"config": {"core.remote_token_expiry": "1d"}}));
    let ok = unix
        .send(Method::PATCH, "/1.0", &[("if-match", &etag)], body.clone())
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let stale = unix
        .send(Method::PATCH, "/1.0", &[("if-match", &etag)], body)
        .await
        .unwrap();
    assert_eq!(stale.status, 412);
}

/// Stopping the HTTPS listener lets a request in flight on it finish, and the change is answered
/// only after that; websockets on it are cut. When `core.https_address` is unset, nothing is
/// still being served over TCP.
#[tokio::test]
async fn https_address_change_waits_for_requests_in_flight() {
    if !require_root("https_address_change_waits_for_requests_in_flight") {
        return;
    }
    use std::io::Write;
    let d = TestDaemon::start().await;
    let id = client_identity("uploader");
    d.trust(&id).await;

    // A client moving the listener it is talking over is answered at once: its own connection
    // is not waited for.
    let at = |port| d.https_at(port, Some(&id));
    let port = rxd_testkit::free_port();
    let r = d
        .https(Some(&id))
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.https_address": format!("127.0.0.1:{port}")}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    assert!(!d.logs().contains("still in flight"), "{}", d.logs());

    // An event stream: a websocket, which outlives its HTTP exchange.
    let mut events = at(port).websocket("/1.0/events").await.unwrap();

    // An upload whose body comes from a pipe the test holds open: the request stays in flight.
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("body");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let client = at(port);
    let path = fifo.clone();
    let upload = tokio::spawn(async move {
        client
            .send_file(
                Method::POST,
                "/1.0/images",
                &[],
                &path,
                std::sync::Arc::new(|_| {}),
            )
            .await
    });
    let mut writer = tokio::task::spawn_blocking(move || std::fs::File::create(fifo).unwrap())
        .await
        .unwrap();
    writer.write_all(b"not an image yet").unwrap();
    // The daemon is receiving the body once its upload file exists.
    let images = d.dir().join("images");
    let receiving = || {
        std::fs::read_dir(&images).is_ok_and(|mut it| {
            it.any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".upload-")
            })
        })
    };
    for _ in 0..500 {
        if receiving() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(receiving(), "the upload never reached the daemon");

    let unix = d.unix();
    let patch = tokio::spawn(async move {
        unix.request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.https_address": ""}})),
        )
        .await
        .unwrap()
    });
    // The change cannot be answered while the upload's body is still coming.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !patch.is_finished(),
        "unset answered with a request still in flight"
    );
    drop(writer);
    let uploaded = upload.await.unwrap().unwrap();
    assert_eq!(uploaded.status, 202, "{:?}", uploaded.envelope());
    assert_eq!(patch.await.unwrap().status, 200);
    // The event stream is cut too (the bound only turns a hang into a failure).
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        use futures_util::StreamExt;
        loop {
            match events.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(m)) if m.is_close() => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream outlived its listener");
    assert!(matches!(
        at(port).get("/1.0").await,
        Err(rxd_client::ClientError::Connect { .. })
    ));
}

fn bytes_of(v: &Value) -> rxd_client::Bytes {
    rxd_client::Bytes::from(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn https_address_changes_live() {
    if !require_root("https_address_changes_live") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    let first = d.https_port();
    // A client whose kept-alive connection to the old address stays open across the change.
    let kept = d.https(None);
    assert!(kept.get("/1.0").await.is_ok());

    // Move to another port: the old one stops, the new one answers, no restart. Once the change
    // is answered, nothing is served at the old address, not even on a connection already open.
    let second = rxd_testkit::free_port();
    let r = unix
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.https_address": format!("127.0.0.1:{second}")}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    let at = |port| d.https_at(port, None);
    assert!(at(second).get("/1.0").await.is_ok());
    assert!(matches!(
        kept.get("/1.0").await,
        Err(rxd_client::ClientError::Connect { .. })
    ));
    assert!(matches!(
        at(first).get("/1.0").await,
        Err(rxd_client::ClientError::Connect { .. })
    ));

    // An address that cannot be bound is refused; the current listener keeps running.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let r = unix
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.https_address": format!("127.0.0.1:{taken_port}")}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.envelope().unwrap().error.contains("cannot listen"),
        "{:?}",
        r.envelope()
    );
    assert!(at(second).get("/1.0").await.is_ok());
    assert_eq!(
        unix.get("/1.0").await.unwrap()["config"]["core.https_address"],
        format!("127.0.0.1:{second}")
    );

    // IPv6 loopback form.
    let third = rxd_testkit::free_port();
    let r = unix
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.https_address": format!("[::1]:{third}")}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    let pin = rxd_tls::cert::fingerprint_bytes(&d.server_cert_der());
    let v6 = rxd_client::Client::https(
        "::1",
        third,
        rxd_tls::client::ServerTrust::Pinned(pin),
        None,
    )
    .unwrap();
    assert_eq!(v6.get("/1.0").await.unwrap()["auth"], "untrusted");

    // Unset: no TCP listener at all, and the connection `v6` kept open is closed.
    let r = unix
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.https_address": ""}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(matches!(
        v6.get("/1.0").await,
        Err(rxd_client::ClientError::Connect { .. })
    ));
    assert_eq!(
        unix.get("/1.0").await.unwrap()["environment"]["addresses"],
        json!([])
    );
}

#[tokio::test]
async fn envelope_errors_and_body_limits() {
    if !require_root("envelope_errors_and_body_limits") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    let https = d.https(None);
    for client in [&unix, &https] {
        let r = client
            .request(Method::GET, "/1.0/nope", None)
            .await
            .unwrap();
        assert_eq!(r.status, 404, "unknown routes are 404 to anyone");
        assert_eq!(
            serde_json::from_slice::<Value>(&r.body).unwrap(),
            json!({"type":"error","status":"","status_code":0,"operation":"","error_code":404,"error":"not found","metadata":null})
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let r = unix.request(Method::POST, "/1.0", None).await.unwrap();
    assert_eq!(r.status, 501, "known route, unsupported method");
    assert_eq!(r.envelope().unwrap().error, "not implemented");

    let r = unix
        .send(Method::PUT, "/1.0", &[], "{\"config\":".into())
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.envelope().unwrap().kind, rxd_api::ResponseType::Error);
    let r = unix
        .send(Method::PUT, "/1.0", &[], "".into())
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.envelope().unwrap().error, "unexpected EOF");
    let r = unix
        .send(Method::PUT, "/1.0", &[], "{\"config\": 5}".into())
        .await
        .unwrap();
    assert_eq!(r.status, 400);

    // A declared length over the limit is refused before the body is read...
    let reply = raw_exchange(
        &d.socket(),
        b"PUT /1.0 HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"error_code\":413"), "{reply}");
    // ...and so is a chunked body that grows past it.
    let mut req = b"PUT /1.0 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(format!("{:x}\r\n", 100_000).as_bytes());
    req.extend(std::iter::repeat_n(b' ', 100_000));
    req.extend_from_slice(b"\r\n");
    let reply = raw_exchange(&d.socket(), &req).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    // The connection and the daemon are fine afterwards, and nothing changed.
    let v = d.unix().get("/1.0").await.unwrap();
    assert_eq!(v["config"]["core.https_address"], d.https_address());
}

#[tokio::test]
async fn production_advice_becomes_warnings() {
    if !require_root("production_advice_becomes_warnings") {
        return;
    }
    let mut d = TestDaemon::start_with(Options {
        no_https: true,
        ..Default::default()
    })
    .await;
    let unix = d.unix();
    assert_eq!(unix.get("/1.0/warnings").await.unwrap(), json!([]));
    let port = rxd_testkit::free_port();
    let r = unix
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.https_address": format!(":{port}"), "core.trust_password": "pw"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    let list = unix.get("/1.0/warnings?recursion=1").await.unwrap();
    let types: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "HTTPS listener bound to all addresses",
            "Trust password set"
        ]
    );
    for w in list.as_array().unwrap() {
        assert_eq!(w["status"], "new");
        assert!(
            w["last_message"].as_str().unwrap().contains("core."),
            "says why and what to do"
        );
        let one = unix
            .get(&format!("/1.0/warnings/{}", w["uuid"].as_str().unwrap()))
            .await
            .unwrap();
        assert_eq!(&one, w);
    }
    let urls = unix.get("/1.0/warnings").await.unwrap();
    assert_eq!(urls.as_array().unwrap().len(), 2);

    // At start-up too, in the log.
    d.restart().await;
    let logs = d.logs();
    let after_restart = logs.rsplit("state directory ready").next().unwrap();
    assert!(
        after_restart.contains("accepts connections on every address"),
        "{after_restart}"
    );
    assert!(
        after_restart.contains("core.trust_password is set"),
        "{after_restart}"
    );

    // Fixing the config resolves them.
    let unix = d.unix();
    let r = unix
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.https_address": format!("127.0.0.1:{port}"), "core.trust_password": ""}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    let list = unix.get("/1.0/warnings?recursion=1").await.unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|w| w["status"] == "resolved"),
        "{list}"
    );
}

/// Write raw bytes to the socket and read what comes back until the server closes or goes quiet.
async fn raw_exchange(socket: &std::path::Path, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), s.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}
