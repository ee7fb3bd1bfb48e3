//! The trust store over the real API: enrolment by password and token, admin adds, certificate
//! checks, visibility, updates, revocation, and the enrolment back-off.

use base64::Engine;
use rxd_client::{Client, Method, Reply};
use rxd_testkit::{client_identity, require_root, TestDaemon};
use rxd_tls::KeyPairFiles;
use serde_json::{json, Value};
use std::time::Duration;

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn err(r: &Reply) -> (u16, String) {
    let e = r.envelope().unwrap();
    (r.status, e.error)
}

async fn set(d: &TestDaemon, config: Value) {
    let r = d
        .unix()
        .request(Method::PATCH, "/1.0", Some(&json!({ "config": config })))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
}

/// Build the join token from a token operation's metadata, as LXD's client does.
fn token_from(md: &Value) -> String {
    rxd_api::certificate::CertificateAddToken {
        client_name: md["request"]["name"].as_str().unwrap().into(),
        fingerprint: md["fingerprint"].as_str().unwrap().into(),
        addresses: vec![md["addresses"][0].as_str().unwrap().into()],
        secret: md["secret"].as_str().unwrap().into(),
        expires_at: md["expiresAt"].as_str().unwrap().into(),
    }
    .encode()
}

/// Projects named in a certificate must exist.
async fn make_project(unix: &Client, name: &str) {
    let r = unix
        .request(
            Method::POST,
            "/1.0/projects",
            Some(&json!({ "name": name })),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.envelope());
}

async fn post(c: &Client, body: Value) -> Reply {
    c.request(Method::POST, "/1.0/certificates", Some(&body))
        .await
        .unwrap()
}

/// A certificate with chosen validity, made with rcgen (P-256, SHA-256).
fn cert_with_validity(
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
    p.not_before = not_before;
    p.not_after = not_after;
    p.self_signed(&key).unwrap().der().to_vec()
}

fn openssl_cert(args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.der");
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-nodes", "-subj", "/CN=weak", "-days", "2", "-outform", "DER",
            "-keyout",
        ])
        .arg(dir.path().join("k.pem"))
        .arg("-out")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    std::fs::read(out).unwrap()
}

#[tokio::test]
async fn password_enrolment_rules() {
    if !require_root("password_enrolment_rules") {
        return;
    }
    let d = TestDaemon::start().await;
    let me = client_identity("me@laptop");
    let c = d.https(Some(&me));

    // No password configured: nothing can be enrolled.
    assert_eq!(
        err(&post(&c, json!({"type": "client", "password": "x"})).await),
        (403, "not authorized".into())
    );
    set(&d, json!({"core.trust_password": "correct horse"})).await;

    assert_eq!(
        err(&post(&c, json!({"password": "wrong"})).await),
        (403, "not authorized".into())
    );
    assert_eq!(
        err(&post(&c, json!({"password": ""})).await),
        (403, "not authorized".into())
    );
    // A password holder may not pick what it becomes, nor enrol someone else's certificate.
    let r = post(&c, json!({"type": "server", "password": "correct horse"})).await;
    assert_eq!(r.status, 400, "{:?}", r.envelope());
    let other = client_identity("other");
    let r = post(
        &c,
        json!({"password": "correct horse", "certificate": b64(&other.cert_der)}),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.envelope());
    let r = post(&c, json!({"password": "correct horse", "projects": ["p"]})).await;
    assert_eq!(
        r.status,
        400,
        "projects without restricted: {:?}",
        r.envelope()
    );
    // Without a client certificate there is nothing to enrol.
    let anon = d.https(None);
    assert_eq!(
        err(&post(&anon, json!({"password": "correct horse"})).await),
        (400, "No client certificate provided".into())
    );

    let r = post(&c, json!({"type": "client", "password": "correct horse"})).await;
    assert_eq!(r.status, 201, "{:?}", r.envelope());
    assert_eq!(
        r.header("location"),
        Some(format!("/1.0/certificates/{}", me.fingerprint).as_str())
    );
    assert_eq!(r.envelope().unwrap().status_code, 200);
    let v = c.get("/1.0").await.unwrap();
    assert_eq!(v["auth"], "trusted");
    assert_eq!(v["auth_user_name"], me.fingerprint);
    assert!(
        v["config"].is_object(),
        "an unrestricted certificate is an admin"
    );

    assert_eq!(
        err(&post(&c, json!({"password": "correct horse"})).await),
        (400, "Client is already trusted".into())
    );
    let entry = d
        .unix()
        .get(&format!("/1.0/certificates/{}", me.fingerprint))
        .await
        .unwrap();
    assert_eq!(entry["name"], "me@laptop", "name defaults to the CN");
    assert_eq!(entry["type"], "client");
    assert_eq!(entry["restricted"], false);
    assert_eq!(
        rxd_tls::cert::from_pem(entry["certificate"].as_str().unwrap()).unwrap(),
        me.cert_der
    );

    // Survives a restart.
    let mut d = d;
    d.restart().await;
    assert_eq!(
        d.https(Some(&me)).get("/1.0").await.unwrap()["auth"],
        "trusted"
    );
    let logs = d.logs();
    assert!(
        logs.contains("certificate-enrolled") && logs.contains(&me.fingerprint),
        "trust change logged"
    );
    assert!(logs.contains("failed enrolment attempt"), "failures logged");
    assert!(
        !logs.contains("correct horse") && !logs.contains("wrong\""),
        "no secret in logs"
    );
}

#[tokio::test]
async fn admin_adds_and_certificate_checks() {
    if !require_root("admin_adds_and_certificate_checks") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "expired",
            cert_with_validity(now - day * 10, now - day),
            400,
            "The provided certificate is expired",
        ),
        (
            "not yet valid",
            cert_with_validity(now + day, now + day * 10),
            400,
            "The provided certificate isn't valid yet",
        ),
        (
            "RSA 1024",
            openssl_cert(&["-newkey", "rsa:1024", "-sha256"]),
            400,
            "RSA key is too weak (minimum of 2048bit)",
        ),
        (
            "SHA-1 signed",
            openssl_cert(&[
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-sha1",
            ]),
            400,
            "SHA-1",
        ),
        (
            "garbage",
            b"not a certificate".to_vec(),
            400,
            "Invalid certificate material",
        ),
        (
            "RSA 2048",
            openssl_cert(&["-newkey", "rsa:2048", "-sha256"]),
            201,
            "",
        ),
    ];
    for (what, der, status, text) in cases {
        let r = post(&unix, json!({"type": "client", "certificate": b64(&der)})).await;
        assert_eq!(r.status, status, "{what}: {:?}", r.envelope());
        assert!(
            r.envelope().unwrap().error.contains(text),
            "{what}: {:?}",
            r.envelope()
        );
    }
    let r = post(&unix, json!({"certificate": "%%%"})).await;
    assert_eq!(r.status, 400);
    assert!(r
        .envelope()
        .unwrap()
        .error
        .starts_with("Invalid certificate material"));

    let id = client_identity("added");
    let r = post(
        &unix,
        json!({"name": "laptop", "certificate": b64(&id.cert_der)}),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        err(&post(&unix, json!({"certificate": b64(&id.cert_der)})).await),
        (409, "Certificate already in trust store".into())
    );
    assert_eq!(
        d.https(Some(&id)).get("/1.0").await.unwrap()["auth"],
        "trusted"
    );
    let r = post(
        &unix,
        json!({"name": "bad\nname", "certificate": b64(&client_identity("x").cert_der)}),
    )
    .await;
    assert_eq!(
        r.status, 400,
        "control characters in names would forge log lines"
    );
    let r = post(
        &unix,
        json!({"type": "metrics", "certificate": b64(&client_identity("y").cert_der)}),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = post(&unix, json!({})).await;
    assert_eq!(err(&r), (400, "Client is already trusted".into()));
}

#[tokio::test]
async fn fingerprint_lookup_prefixes_and_visibility() {
    if !require_root("fingerprint_lookup_prefixes_and_visibility") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    // Add certificates until two share a first hex digit, to get an ambiguous prefix.
    let mut ids: Vec<KeyPairFiles> = Vec::new();
    let shared = loop {
        let id = client_identity("c");
        let r = post(
            &unix,
            json!({"certificate": b64(&id.cert_der), "name": format!("c{}", ids.len())}),
        )
        .await;
        assert_eq!(r.status, 201);
        let first = id.fingerprint[..1].to_owned();
        ids.push(id);
        if ids[..ids.len() - 1]
            .iter()
            .any(|o| o.fingerprint.starts_with(&first))
        {
            break first;
        }
    };
    let r = unix
        .request(Method::GET, &format!("/1.0/certificates/{shared}"), None)
        .await
        .unwrap();
    assert_eq!(err(&r), (400, "More than one certificate matches".into()));
    for bad in ["%25", "_", "ABC", "zz", &"a".repeat(65)] {
        let r = unix
            .request(Method::GET, &format!("/1.0/certificates/{bad}"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{bad}");
    }
    let one = &ids[0];
    let got = unix
        .get(&format!("/1.0/certificates/{}", &one.fingerprint[..12]))
        .await
        .unwrap();
    assert_eq!(got["fingerprint"], one.fingerprint);
    let missing = "0".repeat(64);
    let r = unix
        .request(Method::GET, &format!("/1.0/certificates/{missing}"), None)
        .await
        .unwrap();
    assert_eq!(err(&r), (404, "Certificate not found".into()));

    // A restricted certificate sees only itself, in every form of the listing.
    make_project(&unix, "p1").await;
    let limited = client_identity("limited");
    let r = post(
        &unix,
        json!({"certificate": b64(&limited.cert_der), "restricted": true, "projects": ["p1"]}),
    )
    .await;
    assert_eq!(r.status, 201);
    let lc = d.https(Some(&limited));
    assert_eq!(
        lc.get("/1.0/certificates").await.unwrap(),
        json!([format!("/1.0/certificates/{}", limited.fingerprint)])
    );
    let full = lc.get("/1.0/certificates?recursion=1").await.unwrap();
    assert_eq!(full.as_array().unwrap().len(), 1);
    assert_eq!(full[0]["projects"], json!(["p1"]));
    // Someone else's entry answers exactly as a missing one.
    let hidden = lc
        .request(
            Method::GET,
            &format!("/1.0/certificates/{}", one.fingerprint),
            None,
        )
        .await
        .unwrap();
    let absent = lc
        .request(Method::GET, &format!("/1.0/certificates/{missing}"), None)
        .await
        .unwrap();
    assert_eq!(
        (hidden.status, hidden.body.clone()),
        (absent.status, absent.body.clone())
    );
    let v = lc.get("/1.0").await.unwrap();
    assert_eq!(v["auth"], "trusted");
    assert_eq!(v["config"], Value::Null, "config only for admins");
    // Non-admins cannot change the server or delete certificates.
    let r = lc
        .request(Method::PATCH, "/1.0", Some(&json!({"config": {}})))
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let r = lc
        .request(
            Method::DELETE,
            &format!("/1.0/certificates/{}", one.fingerprint),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        unix.get("/1.0/certificates")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        ids.len() + 1
    );
}

#[tokio::test]
async fn updates_and_self_renewal() {
    if !require_root("updates_and_self_renewal") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    let old = client_identity("renewer");
    make_project(&unix, "p1").await;
    assert_eq!(post(&unix, json!({"certificate": b64(&old.cert_der), "restricted": true, "projects": ["p1"], "name": "renewer"})).await.status, 201);
    let c = d.https(Some(&old));
    let path = format!("/1.0/certificates/{}", old.fingerprint);

    // The holder cannot escalate: not the name, restriction, projects or type (CVE-2026-34179's class).
    for (body, status, text) in [
        (
            json!({"restricted": false}),
            403,
            "Only the certificate can be changed",
        ),
        (
            json!({"projects": ["p1", "p2"]}),
            403,
            "Only the certificate can be changed",
        ),
        (
            json!({"name": "mine"}),
            403,
            "Only the certificate can be changed",
        ),
        (json!({"type": "server"}), 400, "cannot be changed"),
    ] {
        let r = c.request(Method::PATCH, &path, Some(&body)).await.unwrap();
        assert_eq!(r.status, status, "{body}: {:?}", r.envelope());
        assert!(r.envelope().unwrap().error.contains(text), "{body}");
    }
    // Admins cannot change the type either.
    let r = unix
        .request(Method::PATCH, &path, Some(&json!({"type": "metrics"})))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    // If-Match guards against lost updates.
    let r = unix
        .send(
            Method::PATCH,
            &path,
            &[("if-match", "\"stale\"")],
            r#"{"name":"x"}"#.into(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 412);

    // Self-renewal: swap the PEM only; the old certificate stops working, the new one works.
    let new = client_identity("renewer");
    let r = c
        .request(
            Method::PATCH,
            &path,
            Some(&json!({"certificate": new.cert_pem})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    assert_eq!(
        d.https(Some(&old)).get("/1.0").await.unwrap()["auth"],
        "untrusted"
    );
    let renewed = d.https(Some(&new));
    let entry = renewed
        .get(&format!("/1.0/certificates/{}", new.fingerprint))
        .await
        .unwrap();
    assert_eq!(
        (
            entry["name"].clone(),
            entry["restricted"].clone(),
            entry["projects"].clone()
        ),
        (json!("renewer"), json!(true), json!(["p1"]))
    );

    // Admin PUT replaces; PUT without restricted lifts it (LXD's semantics), name validated.
    let new_path = format!("/1.0/certificates/{}", new.fingerprint);
    let r = unix
        .request(
            Method::PUT,
            &new_path,
            Some(&json!({"name": "desk", "type": "client"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    let entry = unix.get(&new_path).await.unwrap();
    assert_eq!(
        (entry["name"].clone(), entry["restricted"].clone()),
        (json!("desk"), json!(false))
    );
}

#[tokio::test]
async fn tokens_single_use_expiry_restart_and_secrecy() {
    if !require_root("tokens_single_use_expiry_restart_and_secrecy") {
        return;
    }
    let mut d = TestDaemon::start().await;
    let unix = d.unix();
    let r = post(
        &unix,
        json!({"name": "laptop", "type": "client", "token": true}),
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.envelope());
    let env = r.envelope().unwrap();
    assert_eq!(r.header("location"), Some(env.operation.as_str()));
    let md = &env.metadata["metadata"];
    let secret = md["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    assert_eq!(md["fingerprint"], d.server_fingerprint());
    assert_eq!(md["addresses"], json!([d.https_address()]));
    assert_eq!(md["request"]["name"], "laptop");
    assert_eq!(env.metadata["class"], "token");
    let token = token_from(md);

    // The secret is never readable again, nor stored in clear.
    let ops = unix.get("/1.0/operations?recursion=1").await.unwrap();
    assert_eq!(ops["running"][0]["metadata"]["secret"], "");
    let op = unix.get(&env.operation).await.unwrap();
    assert!(!serde_json::to_string(&op).unwrap().contains(&secret));
    for f in ["rxd.db", "rxd.db-wal"] {
        let bytes = std::fs::read(d.dir().join(f)).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains(&secret), "{f}");
    }

    // Tokens survive a restart.
    d.restart().await;
    let a = client_identity("a");
    let ca = d.https(Some(&a));
    // The bare secret is not a password.
    assert_eq!(
        err(&post(&ca, json!({"password": secret})).await),
        (403, "not authorized".into())
    );
    // A token cannot choose what it becomes: the stored request wins.
    let r = post(
        &ca,
        json!({"password": token, "name": "evil", "certificate": ""}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.envelope());
    assert_eq!(
        d.unix()
            .get(&format!("/1.0/certificates/{}", a.fingerprint))
            .await
            .unwrap()["name"],
        "laptop"
    );
    // Single use.
    let b = client_identity("b");
    let r = post(&d.https(Some(&b)), json!({"password": token})).await;
    assert_eq!(
        err(&r),
        (403, "No matching certificate add operation found".into())
    );
    assert_eq!(d.unix().get("/1.0/operations").await.unwrap(), json!({}));

    // Expiry.
    set(&d, json!({"core.remote_token_expiry": "1S"})).await;
    let r = post(&d.unix(), json!({"name": "late", "token": true})).await;
    let md = r.envelope().unwrap().metadata["metadata"].clone();
    let late = token_from(&md);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let c = client_identity("c");
    assert_eq!(
        err(&post(&d.https(Some(&c)), json!({"password": late})).await),
        (403, "Token has expired".into())
    );

    // Revoking a token (deleting its operation) makes it useless.
    set(&d, json!({"core.remote_token_expiry": ""})).await;
    let r = post(&d.unix(), json!({"name": "revoked", "token": true})).await;
    let env = r.envelope().unwrap();
    let md = env.metadata["metadata"].clone();
    let revoked = token_from(&md);
    let r = d
        .unix()
        .request(Method::DELETE, &env.operation, None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        post(&d.https(Some(&c)), json!({"password": revoked}))
            .await
            .status,
        403
    );
    let logs = d.logs();
    assert!(
        logs.contains("token-issued")
            && logs.contains("token-redeemed")
            && logs.contains("token-revoked")
    );
}

#[tokio::test]
async fn tokens_are_for_admins_only() {
    if !require_root("tokens_are_for_admins_only") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    let limited = client_identity("limited");
    post(
        &unix,
        json!({"certificate": b64(&limited.cert_der), "restricted": true}),
    )
    .await;
    let lc = d.https(Some(&limited));
    assert_eq!(
        post(&lc, json!({"name": "x", "token": true})).await.status,
        403
    );
    let r = post(&unix, json!({"name": "for-admin", "token": true})).await;
    let op = r.envelope().unwrap().operation;
    assert_eq!(
        lc.get("/1.0/operations?recursion=1").await.unwrap(),
        json!({}),
        "token operations hidden"
    );
    assert_eq!(
        lc.request(Method::GET, &op, None).await.unwrap().status,
        404
    );
    // Hidden operations answer as missing ones, for DELETE too; the token survives.
    assert_eq!(
        lc.request(Method::DELETE, &op, None).await.unwrap().status,
        404
    );
    assert_eq!(unix.get(&op).await.unwrap()["class"], "token");
    let stranger = d.https(Some(&client_identity("s")));
    assert_eq!(
        post(&stranger, json!({"name": "x", "token": true}))
            .await
            .status,
        403
    );
    // Without an HTTPS listener there is nowhere to redeem a token.
    let r = unix
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.https_address": ""}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = post(&unix, json!({"name": "x", "token": true})).await;
    assert_eq!(
        err(&r),
        (
            400,
            "Can't issue token when server isn't listening on network".into()
        )
    );
}

#[tokio::test]
async fn revocation_applies_to_the_next_request_on_a_kept_alive_connection() {
    if !require_root("revocation_applies_to_the_next_request_on_a_kept_alive_connection") {
        return;
    }
    let d = TestDaemon::start().await;
    let id = client_identity("soon-revoked");
    post(&d.unix(), json!({"certificate": b64(&id.cert_der)})).await;
    let c = d.https(Some(&id));
    assert_eq!(c.get("/1.0").await.unwrap()["auth"], "trusted");
    assert!(c.get("/1.0/certificates").await.is_ok());

    // Hold a raw kept-alive TLS connection too, to see the server close it.
    let r = d
        .unix()
        .request(
            Method::DELETE,
            &format!("/1.0/certificates/{}", &id.fingerprint[..16]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = c
        .request(Method::GET, "/1.0/certificates", None)
        .await
        .unwrap();
    assert_eq!(err(&r), (403, "not authorized".into()));
    assert_eq!(
        c.get("/1.0").await.unwrap()["auth"],
        "untrusted",
        "GET /1.0 still answers, untrusted"
    );
    let logs = d.logs();
    assert!(logs.contains("certificate-deleted"), "{logs}");
    assert!(
        logs.contains("closed_connections=1"),
        "the kept-alive connection was closed: {logs}"
    );
}

#[tokio::test]
async fn failed_enrolments_back_off_without_slowing_trusted_clients() {
    if !require_root("failed_enrolments_back_off_without_slowing_trusted_clients") {
        return;
    }
    let d = TestDaemon::start().await;
    set(&d, json!({"core.trust_password": "right"})).await;
    let admin = client_identity("admin");
    post(&d.unix(), json!({"certificate": b64(&admin.cert_der)})).await;
    let ac = d.https(Some(&admin));
    let attacker = d.https(Some(&client_identity("attacker")));
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = post(&attacker, json!({"password": format!("guess{i}")})).await;
        statuses.push(r.status);
        if r.status == 429 {
            let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=900).contains(&retry));
            assert!(r.envelope().unwrap().error.contains("retry in"));
        }
    }
    assert_eq!(
        statuses,
        [403, 403, 403, 403, 429, 429],
        "bounded guesses, then back-off"
    );
    // Even the right password waits out the back-off...
    assert_eq!(
        post(&attacker, json!({"password": "right"})).await.status,
        429
    );
    // ...while trusted clients are not slowed at all.
    for _ in 0..20 {
        assert!(ac.get("/1.0/certificates").await.is_ok());
    }
    assert!(d.logs().contains("failed enrolment attempt"));
}

/// `GET /1.0/certificates?filter=` selects as every other listing does (it was ignored).
#[tokio::test]
async fn certificate_listings_honour_filters() {
    if !require_root("certificate_listings_honour_filters") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    let mut alice = String::new();
    for name in ["alice", "bob"] {
        let id = client_identity(name);
        if name == "alice" {
            alice = rxd_tls::fingerprint(&id.cert_der);
        }
        let r = post(
            &unix,
            json!({"certificate": b64(&id.cert_der), "name": name, "restricted": name == "bob"}),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let names = |v: Value| -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    let all = unix.get("/1.0/certificates?recursion=1").await.unwrap();
    assert_eq!(names(all), ["alice", "bob"]);
    let only = unix
        .get("/1.0/certificates?recursion=1&filter=name%20eq%20bob")
        .await
        .unwrap();
    assert_eq!(names(only), ["bob"]);
    let urls = unix
        .get("/1.0/certificates?filter=restricted%20eq%20false")
        .await
        .unwrap();
    assert_eq!(urls, json!([format!("/1.0/certificates/{alice}")]));
    let r = unix
        .request(
            Method::GET,
            "/1.0/certificates?filter=name%20is%20bob",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
}

/// `certificate` as pylxd sends it: the body of the PEM block, in 64-character lines.
fn pem_body(der: &[u8]) -> String {
    let pem = rxd_tls::cert::to_pem(der);
    let lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(lines.len() > 1, "a PEM body has several lines");
    lines.join("\n")
}

/// pylxd's `client.authenticate(secret)` names the certificate of its own TLS connection in the
/// request, with a password or (as the password, on LXD 5.0) a join token. That is the same
/// request as leaving it out; any other certificate is still refused to a non-admin.
#[tokio::test]
async fn enrolment_may_name_the_connections_own_certificate() {
    if !require_root("enrolment_may_name_the_connections_own_certificate") {
        return;
    }
    let d = TestDaemon::start().await;
    set(&d, json!({"core.trust_password": "s3cret"})).await;
    let me = client_identity("me");
    let other = client_identity("other");
    let c = d.https(Some(&me));

    // Someone else's certificate, in either spelling, is refused before the password counts.
    for foreign in [b64(&other.cert_der), pem_body(&other.cert_der)] {
        let r = post(
            &c,
            json!({"type": "client", "password": "s3cret", "certificate": foreign}),
        )
        .await;
        assert_eq!(r.status, 400, "{:?}", r.envelope());
    }
    // Text that is no certificate is not this connection's either.
    let r = post(
        &c,
        json!({"password": "s3cret", "certificate": "not base64"}),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.envelope());
    assert_eq!(c.get("/1.0").await.unwrap()["auth"], "untrusted");

    // The connection's own certificate, as pylxd sends it, with the wrong password, then the right.
    let body = |password: &str| {
        json!({"type": "client", "certificate": pem_body(&me.cert_der), "password": password,
               "name": "", "restricted": false})
    };
    assert_eq!(
        err(&post(&c, body("wrong")).await),
        (403, "not authorized".into())
    );
    let r = post(&c, body("s3cret")).await;
    assert_eq!(r.status, 201, "{:?}", r.envelope());
    assert_eq!(
        r.header("location"),
        Some(format!("/1.0/certificates/{}", me.fingerprint).as_str())
    );
    assert_eq!(c.get("/1.0").await.unwrap()["auth"], "trusted");

    // A join token, sent as the password with the own certificate in single-line base64.
    let r = post(&d.unix(), json!({"name": "tok", "token": true})).await;
    let token = token_from(&r.envelope().unwrap().metadata["metadata"]);
    let t = client_identity("t");
    let ct = d.https(Some(&t));
    let r = post(
        &ct,
        json!({"password": token, "certificate": b64(&other.cert_der)}),
    )
    .await;
    assert_eq!(
        r.status, 400,
        "a token does not enrol a foreign certificate"
    );
    let r = post(
        &ct,
        json!({"password": token, "certificate": b64(&t.cert_der)}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.envelope());
    assert_eq!(ct.get("/1.0").await.unwrap()["auth"], "trusted");
    assert!(
        !d.unix()
            .get("/1.0/certificates?recursion=1")
            .await
            .unwrap()
            .to_string()
            .contains(&other.fingerprint),
        "the foreign certificate was never added"
    );

    // An admin adding a certificate in pylxd's spelling (line breaks in the base64).
    let r = post(&c, json!({"certificate": pem_body(&other.cert_der)})).await;
    assert_eq!(r.status, 201, "{:?}", r.envelope());
}
