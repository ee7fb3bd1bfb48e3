//! The HTTP layer's guards against the real daemon: cross-site requests (a browser holding the
//! admin's client certificate) are refused before they reach a handler, JSON bodies need a JSON
//! content type, and every route answers oversized and malformed bodies in LXD's error envelope
//! without changing anything.

use base64::Engine;
use rxd_client::{Bytes, Client, Method, Reply};
use rxd_testkit::{client_identity, require_root, TestDaemon};
use serde_json::{json, Value};

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// The reply is LXD's error envelope with `status`, whose text contains `needle`.
fn refused(r: &Reply, status: u16, needle: &str) {
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&r.body)));
    assert_eq!(r.status, status, "{v}");
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error_code"], status, "{v}");
    let text = v["error"].as_str().unwrap_or("");
    assert!(
        text.to_lowercase().contains(&needle.to_lowercase()),
        "{text:?} should say {needle:?}"
    );
}

/// The exact headers of a cross-site `fetch()` from a page on evil.example.
const CROSS_SITE: &[(&str, &str)] = &[
    ("content-type", "text/plain"),
    ("origin", "https://evil.example"),
    ("sec-fetch-site", "cross-site"),
];

async fn fingerprints(unix: &Client) -> Value {
    unix.get("/1.0/certificates").await.unwrap()
}

/// The admin's client, over HTTPS with a trusted certificate.
async fn admin(d: &TestDaemon) -> Client {
    let id = client_identity("admin");
    d.trust(&id).await;
    d.https(Some(&id))
}

#[tokio::test]
async fn cross_site_certificate_add_is_refused() {
    if !require_root("cross_site_certificate_add_is_refused") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = admin(&d).await;
    let before = fingerprints(&d.unix()).await;
    let attacker = client_identity("attacker");
    let body = json!({"type": "client", "certificate": b64(&attacker.cert_der)});
    let r = admin
        .send(
            Method::POST,
            "/1.0/certificates",
            CROSS_SITE,
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    refused(&r, 403, "cross-site");
    assert_eq!(fingerprints(&d.unix()).await, before, "nothing trusted");
    // The attacker's certificate is still untrusted.
    let v = d.https(Some(&attacker)).get("/1.0").await.unwrap();
    assert_eq!(v["auth"], "untrusted");
}

#[tokio::test]
async fn cross_site_instance_create_and_exec_are_refused() {
    if !require_root("cross_site_instance_create_and_exec_are_refused") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = admin(&d).await;
    let headers = [
        ("content-type", "application/json"),
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ];
    let create = json!({"name": "c1", "source": {"type": "image", "alias": "x"}});
    let r = admin
        .send(
            Method::POST,
            "/1.0/instances",
            &headers,
            serde_json::to_vec(&create).unwrap().into(),
        )
        .await
        .unwrap();
    refused(&r, 403, "cross-site");
    let exec = json!({"command": ["id"], "wait-for-websocket": false, "interactive": false});
    let r = admin
        .send(
            Method::POST,
            "/1.0/instances/c1/exec",
            &headers,
            serde_json::to_vec(&exec).unwrap().into(),
        )
        .await
        .unwrap();
    refused(&r, 403, "cross-site");
    assert_eq!(d.unix().get("/1.0/instances").await.unwrap(), json!([]));
}

#[tokio::test]
async fn same_site_and_foreign_origins_are_refused() {
    if !require_root("same_site_and_foreign_origins_are_refused") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = admin(&d).await;
    let before = d.unix().get("/1.0/projects").await.unwrap();
    let project = |name: &str| serde_json::to_vec(&json!({ "name": name })).unwrap();
    let json_ct = ("content-type", "application/json");
    for (headers, what) in [
        (
            vec![json_ct, ("sec-fetch-site", "same-site")],
            "Sec-Fetch-Site: same-site",
        ),
        (
            vec![json_ct, ("sec-fetch-site", "cross-site")],
            "Sec-Fetch-Site: cross-site",
        ),
        (
            vec![json_ct, ("origin", "https://evil.example")],
            "a foreign Origin",
        ),
        (vec![json_ct, ("origin", "null")], "an opaque Origin"),
        (
            vec![json_ct, ("origin", "https://rxd.evil.example")],
            "an Origin that only starts like ours",
        ),
    ] {
        let r = admin
            .send(
                Method::POST,
                "/1.0/projects",
                &headers,
                project("p1").into(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 403, "{what}: {:?}", r.envelope());
        refused(&r, 403, "cross-site");
    }
    assert_eq!(d.unix().get("/1.0/projects").await.unwrap(), before);

    // A page of this very server, a same-origin fetch and a request the user typed are fine.
    for (i, headers) in [
        vec![
            json_ct,
            ("origin", "https://rxd"),
            ("sec-fetch-site", "same-origin"),
        ],
        vec![json_ct, ("sec-fetch-site", "none")],
        vec![json_ct],
    ]
    .into_iter()
    .enumerate()
    {
        let r = admin
            .send(
                Method::POST,
                "/1.0/projects",
                &headers,
                project(&format!("ok{i}")).into(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{headers:?}: {:?}", r.envelope());
    }
    // Reads from another site are not state changes; CORS keeps their answers from the page.
    let r = admin
        .send(
            Method::GET,
            "/1.0/projects",
            &[("sec-fetch-site", "cross-site")],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn json_bodies_need_a_json_content_type() {
    if !require_root("json_bodies_need_a_json_content_type") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = admin(&d).await;
    let before = fingerprints(&d.unix()).await;
    let other = client_identity("other");
    let body: Bytes =
        serde_json::to_vec(&json!({"type": "client", "certificate": b64(&other.cert_der)}))
            .unwrap()
            .into();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ] {
        for client in [&admin, &d.unix()] {
            let r = client
                .send(
                    Method::POST,
                    "/1.0/certificates",
                    &[("content-type", ct)],
                    body.clone(),
                )
                .await
                .unwrap();
            refused(&r, 415, "application/json");
        }
    }
    assert_eq!(fingerprints(&d.unix()).await, before);
    // No content type at all, with a body: refused the same way.
    let reply = raw_unix(
        &d.socket(),
        format!(
            "PATCH /1.0 HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{}",
            r#"{"config":{}}"#
        )
        .as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 415"), "{reply}");
    assert!(reply.contains("\"error_code\":415"), "{reply}");
    // An empty body without a content type answers as it always did.
    let r = d
        .unix()
        .send(Method::PUT, "/1.0", &[], Default::default())
        .await
        .unwrap();
    refused(&r, 400, "unexpected EOF");
    // JSON with parameters, as some clients send it, is JSON.
    let r = admin
        .send(
            Method::POST,
            "/1.0/certificates",
            &[("content-type", "application/json; charset=utf-8")],
            body,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.envelope());
}

/// Our clients and pylxd's websocket Origin keep working.
#[tokio::test]
async fn clients_without_a_browser_origin_keep_working() {
    if !require_root("clients_without_a_browser_origin_keep_working") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = admin(&d).await;
    let r = admin
        .request(Method::POST, "/1.0/projects", Some(&json!({"name": "p1"})))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.envelope());
    // Websocket upgrades: pylxd's Origin over the unix socket, none, and a foreign one.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    for (origin, ok) in [
        (Some("ws+unix://localhost"), true),
        (None, true),
        (Some("https://evil.example"), false),
    ] {
        let stream = tokio::net::UnixStream::connect(d.socket()).await.unwrap();
        let mut req = "ws://x/1.0/events".into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let res = tokio_tungstenite::client_async(req, stream).await;
        match (res, ok) {
            (Ok(_), true) => {}
            (Err(tokio_tungstenite::tungstenite::Error::Http(resp)), false) => {
                assert_eq!(resp.status(), 403, "{origin:?}");
            }
            (res, _) => panic!("{origin:?}: {:?}", res.map(|_| ())),
        }
    }
}

/// A path for every parameter of a route template: the default project where a project is named
/// (the one object every daemon has), otherwise names that do not exist.
fn concrete(template: &str) -> String {
    let project_route = template.starts_with("/1.0/projects/");
    template
        .split('/')
        .map(|seg| match seg {
            "{name}" if project_route => "default",
            "{name}" => "nosuch",
            "{fingerprint}" => "0000000000000000",
            "{uuid}" | "{id}" => "00000000-0000-0000-0000-000000000000",
            "{snap}" => "snap0",
            "{file}" => "nosuch.log",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Routes whose body is a raw upload, not JSON, with their own limit (documented in
/// ARCHITECTURE.md): an image tarball, a file's content.
const RAW_UPLOADS: &[(&str, &str)] = &[
    ("/1.0/images", "POST"),
    ("/1.0/instances/{name}/files", "POST"),
    ("/1.0/containers/{name}/files", "POST"),
];

/// What must not change whatever the bodies.
async fn state(unix: &Client) -> Value {
    let mut out = serde_json::Map::new();
    for path in [
        "/1.0",
        "/1.0/projects?recursion=1",
        "/1.0/projects/default",
        "/1.0/certificates?recursion=1",
        "/1.0/auth/grants?recursion=1",
        "/1.0/images?recursion=1",
        "/1.0/images/aliases?recursion=1",
        "/1.0/instances?recursion=1",
        "/1.0/warnings?recursion=1",
    ] {
        let mut v = unix.get(path).await.unwrap();
        // What changes by itself.
        if path == "/1.0" {
            v["environment"] = Value::Null;
        }
        out.insert(path.into(), v);
    }
    Value::Object(out)
}

#[tokio::test]
async fn every_route_answers_oversized_and_malformed_bodies_in_the_envelope() {
    if !require_root("every_route_answers_oversized_and_malformed_bodies_in_the_envelope") {
        return;
    }
    let d = TestDaemon::start().await;
    let id = client_identity("admin");
    d.trust(&id).await;
    let before = state(&d.unix()).await;
    // Well-formed JSON over the 64 KiB limit, which an unbounded decoder would accept (and, for
    // a project, store as its description).
    let oversized = serde_json::to_vec(&json!({
        "name": "big", "description": "a".repeat(70 * 1024), "config": {},
    }))
    .unwrap();
    let malformed = br#"{"config": {"#.to_vec();
    let mut checked = 0;
    for e in rxd_auth::endpoints::all() {
        let path = concrete(e.path);
        let method: Method = e.method.parse().unwrap();
        let raw = RAW_UPLOADS.contains(&(e.path, e.method));
        for (body, what) in [(&oversized, "oversized"), (&malformed, "malformed")] {
            // A raw upload is also sent as one (a tarball that is not one, a file into a
            // container that does not exist): refused under its own rules, nothing stored.
            let types: &[&str] = if raw {
                &["application/json", "application/octet-stream"]
            } else {
                &["application/json"]
            };
            // A fresh connection each time: one whose body was refused unread is closed.
            for (client, ct) in types
                .iter()
                .flat_map(|ct| [(d.https(Some(&id)), *ct), (d.unix(), *ct)])
            {
                let r = client
                    .send(
                        method.clone(),
                        &path,
                        &[("content-type", ct)],
                        body.clone().into(),
                    )
                    .await
                    .unwrap_or_else(|err| panic!("{} {path} ({what}): {err}", e.method));
                let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|err| {
                    panic!(
                        "{} {path} ({what}): {} not in the envelope ({err}): {:?}",
                        e.method,
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )
                });
                let ctx = format!(
                    "{} {path} ({what} as {ct}, raw upload: {raw}): {v}",
                    e.method
                );
                assert_eq!(r.header("content-type"), Some("application/json"), "{ctx}");
                if e.method == "GET" {
                    // A GET reads no body: any answer, but in the envelope.
                    assert!(
                        v["type"].is_string() && v.get("error_code").is_some(),
                        "{ctx}"
                    );
                    continue;
                }
                if raw && ct == "application/octet-stream" && r.status == 202 {
                    // An image upload is unpacked in an operation, as LXD does: it must fail.
                    let op = v["operation"].as_str().unwrap_or_default();
                    let done = d.unix().get(&format!("{op}/wait")).await.unwrap();
                    assert_eq!(done["status"], "Failure", "{ctx}: {done}");
                    checked += 1;
                    continue;
                }
                assert!(!(200..300).contains(&r.status), "{ctx}");
                assert_eq!(v["type"], "error", "{ctx}");
                assert_eq!(v["error_code"], r.status, "{ctx}");
                assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()), "{ctx}");
                // A JSON body's size is judged before its content, and a malformed one is 400.
                if !raw && what == "oversized" && e.method != "DELETE" {
                    assert_eq!(r.status, 413, "{ctx}");
                }
                if !raw && what == "malformed" && e.method != "DELETE" {
                    assert_eq!(r.status, 400, "{ctx}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "walked {checked} requests");
    // Healthy, and nothing changed.
    let admin = d.https(Some(&id));
    assert_eq!(admin.get("/1.0").await.unwrap()["auth"], "trusted");
    assert_eq!(state(&d.unix()).await, before);
}

/// Axum's own extractor rejections (path, query) reach clients in LXD's envelope.
#[tokio::test]
async fn extractor_rejections_use_the_envelope() {
    if !require_root("extractor_rejections_use_the_envelope") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    for (method, path, status) in [
        (Method::GET, "/1.0/instances?recursion=many", 400),
        (Method::GET, "/1.0/projects?recursion=-1", 400),
        (Method::GET, "/1.0/operations/%FF%FE", 400),
        (Method::GET, "/1.0/events", 400),
        (Method::GET, "/1.0/operations/x/wait?timeout=soon", 400),
    ] {
        let r = unix
            .send(method.clone(), path, &[], Default::default())
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: {} ({e}) {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )
        });
        assert_eq!(
            (r.status, &v["type"]),
            (status, &json!("error")),
            "{path}: {v}"
        );
        assert_eq!(v["error_code"], status, "{path}: {v}");
    }
}

/// Write raw bytes to the unix socket and read the answer until the server closes or goes quiet.
async fn raw_unix(socket: &std::path::Path, request: &[u8]) -> String {
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

/// Go clients (LXD's own, and pylxd, which sends `"user": null` to exec) write `null` for a
/// field they leave at its zero value and may send fields rxd does not know: LXD's decoder reads
/// `null` as "left out" and ignores unknown fields, so every request body here must too. Each
/// body below has every optional field `null` plus a field no version of LXD has; the answer must
/// be the handler's own (the instance does not exist, the project is made), not a decoder error.
#[tokio::test]
async fn request_bodies_read_null_as_left_out_and_ignore_unknown_fields() {
    if !require_root("request_bodies_read_null_as_left_out_and_ignore_unknown_fields") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = admin(&d).await;
    let fp = rxd_tls::fingerprint(&client_identity("granted").cert_der);
    let cases: Vec<(Method, &str, Value, u16)> = vec![
        (
            Method::POST,
            "/1.0/instances/nope/exec",
            json!({"command": ["true"], "environment": null, "wait-for-websocket": null,
                   "interactive": null, "width": null, "height": null, "record-output": null,
                   "user": null, "group": null, "cwd": null}),
            404,
        ),
        (
            Method::POST,
            "/1.0/instances/nope/console",
            json!({"width": null, "height": null, "type": null}),
            404,
        ),
        (
            Method::PUT,
            "/1.0/instances/nope/state",
            json!({"action": "stop", "timeout": null, "force": null, "stateful": null}),
            404,
        ),
        (
            Method::POST,
            "/1.0/instances/nope/snapshots",
            json!({"name": null, "stateful": null, "expires_at": null}),
            404,
        ),
        (
            Method::POST,
            "/1.0/instances/nope/snapshots/s",
            json!({"name": "t", "migration": null}),
            404,
        ),
        (
            Method::POST,
            "/1.0/instances/nope",
            json!({"name": "other", "migration": null, "live": null}),
            404,
        ),
        (
            Method::PUT,
            "/1.0/instances/nope",
            json!({"architecture": null, "config": null, "devices": null, "ephemeral": null,
                   "profiles": null, "restore": null, "stateful": null, "description": null}),
            404,
        ),
        (
            Method::POST,
            "/1.0/projects",
            json!({"name": "p1", "description": null, "config": null}),
            201,
        ),
        (
            Method::PUT,
            "/1.0/projects/p1",
            json!({"description": null, "config": null, "name": null, "used_by": null}),
            200,
        ),
        (
            Method::POST,
            "/1.0/auth/grants",
            json!({"identity_type": "certificate", "identity": fp, "role": "auditor",
                   "scope": "server", "project": null}),
            404,
        ),
    ];
    for (method, path, mut body, status) in cases {
        body["field_from_a_later_lxd"] = json!({"any": "thing"});
        let r = admin
            .request(method.clone(), path, Some(&body))
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, status, "{method} {path} {body}: {v}");
    }
    let p = d.unix().get("/1.0/projects/p1").await.unwrap();
    assert_eq!((&p["description"], &p["config"]), (&json!(""), &json!({})));
}

/// Request bodies are read with LXD's Go types: exec's `width` and `height` are Go `int`s (a
/// value outside `u32` is clamped where a terminal is made, not refused by the decoder), and a
/// project PUT that sends back a `name` has it ignored, as LXD's `ProjectPut` has no such field.
#[tokio::test]
async fn request_bodies_take_lxd_types_not_stricter_ones() {
    if !require_root("request_bodies_take_lxd_types_not_stricter_ones") {
        return;
    }
    let d = TestDaemon::start().await;
    let unix = d.unix();
    let r = unix
        .request(
            Method::POST,
            "/1.0/projects",
            Some(&json!({"name": "p1", "description": "", "config": {}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let cases: Vec<(Method, &str, Value, u16)> = vec![
        (
            Method::POST,
            "/1.0/instances/nope/exec",
            json!({"command": ["true"], "wait-for-websocket": true, "interactive": true,
                   "width": -1, "height": 4_294_967_296_i64}),
            404,
        ),
        (
            Method::POST,
            "/1.0/instances/nope/console",
            json!({"width": -80, "height": 1_i64 << 40, "type": "console"}),
            404,
        ),
        (
            Method::PUT,
            "/1.0/projects/p1",
            json!({"name": "not-p1", "description": "edited", "config": {}}),
            200,
        ),
    ];
    for (method, path, body, status) in cases {
        let r = unix
            .request(method.clone(), path, Some(&body))
            .await
            .unwrap();
        assert_eq!(
            r.status,
            status,
            "{method} {path} {body}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let p = unix.get("/1.0/projects/p1").await.unwrap();
    assert_eq!(p["description"], json!("edited"));
    assert_eq!(p["name"], json!("p1"));
}
