//! Smaller leaks the security review found, each replayed against the real daemon: a token's
//! operation event reaching a certificate restricted to `default`, and an exec's environment
//! readable from its operation by an auditor, an operator taking the whole host id range.

use rxd_client::{Client, Method};
use rxd_testkit::api::{ok, trust_restricted};
use rxd_testkit::{
    busybox_image, client_identity, require_root, require_tool, succeeded, TestDaemon,
};
use serde_json::{json, Value};
use std::time::Duration;

/// `ok`, then wait for the operation it started to succeed.
async fn finished(c: &Client, method: Method, path: &str, body: Value) {
    let op = ok(c, method, path, body).await;
    let id = op["id"].as_str().unwrap();
    let end = c
        .get(&format!("/1.0/operations/{id}/wait?timeout=30"))
        .await
        .unwrap();
    assert_eq!(end["status"], "Success", "{path}: {end}");
}

/// Next text message of an event stream, or `None` once `wait` has passed.
async fn next(ws: &mut rxd_client::WebSocket, wait: Duration) -> Option<Value> {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
                if let Ok(v) = serde_json::from_str(&text) {
                    return Some(v);
                }
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// A daemon with HTTPS and the busybox image `bb`, then `rxc` run with each of `then`.
async fn setup(then: &[&str]) -> (TestDaemon, tempfile::TempDir) {
    let mut d = TestDaemon::start().await;
    d.enable_https().await;
    let conf = tempfile::tempdir().unwrap();
    let image = conf.path().join("bb.tar.gz");
    busybox_image(&image);
    for args in [
        &["image", "import", image.to_str().unwrap(), "--alias", "bb"][..],
        then,
    ] {
        succeeded(args, d.rxc(conf.path(), args));
    }
    (d, conf)
}

#[tokio::test]
async fn tokens_and_exec_environments_stay_with_who_may_see_them() {
    let test = "tokens_and_exec_environments_stay_with_who_may_see_them";
    if !require_root(test) || !require_tool("busybox", "busybox-static", test) {
        return;
    }
    let (d, _conf) = setup(&["launch", "bb", "c1"]).await;
    let unix = d.unix();
    let operator = client_identity("operator");
    trust_restricted(&unix, &operator, &["default"]).await;
    let auditor = client_identity("auditor");
    trust_restricted(&unix, &auditor, &[]).await;
    ok(
        &unix,
        Method::POST,
        "/1.0/auth/grants",
        json!({"identity_type": "certificate", "identity": auditor.fingerprint, "role": "auditor", "scope": "project", "project": "default"}),
    )
    .await;
    let operator_c = d.https(Some(&operator));
    let auditor_c = d.https(Some(&auditor));
    let mut events = operator_c
        .websocket("/1.0/events?type=operation")
        .await
        .unwrap();

    // A token: a server-level operation, for administrators only.
    let issued = ok(
        &unix,
        Method::POST,
        "/1.0/certificates",
        json!({"name": "laptop-of-alice", "token": true}),
    )
    .await;
    assert_eq!(issued["class"], "token");

    // An exec with a secret in its environment.
    let op = ok(
        &unix,
        Method::POST,
        "/1.0/instances/c1/exec",
        json!({"command": ["true"], "environment": {"DB_PASSWORD": "hunter2-s3cret"}, "wait-for-websocket": false}),
    )
    .await;
    let id = op["id"].as_str().unwrap().to_owned();
    let done = unix
        .get(&format!("/1.0/operations/{id}/wait?timeout=20"))
        .await
        .unwrap();
    assert_eq!(done["status"], "Success", "{done}");

    // The operator's stream: the exec's events, never the token's, and no secret anywhere.
    let mut seen = Vec::new();
    while let Some(e) = next(&mut events, Duration::from_secs(2)).await {
        seen.push(e);
    }
    assert!(
        seen.iter().any(|e| e["metadata"]["id"] == id),
        "the exec's events reach the operator: {seen:?}"
    );
    for e in &seen {
        assert_ne!(e["metadata"]["class"], "token", "token event leaked: {e}");
        assert!(!e.to_string().contains("laptop-of-alice"), "{e}");
        assert!(!e.to_string().contains("hunter2-s3cret"), "{e}");
    }

    // The auditor reads the operation and the list: no environment either.
    for path in [
        format!("/1.0/operations/{id}"),
        "/1.0/operations?recursion=1".to_owned(),
    ] {
        let r = auditor_c.request(Method::GET, &path, None).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(!text.contains("hunter2-s3cret"), "{path}: {text}");
        assert!(!text.contains("laptop-of-alice"), "{path}: {text}");
    }
    ok(
        &unix,
        Method::PUT,
        "/1.0/instances/c1/state",
        json!({"action": "stop", "force": true}),
    )
    .await;
}

#[tokio::test]
async fn operators_cannot_take_the_host_id_range() {
    let test = "operators_cannot_take_the_host_id_range";
    if !require_root(test) || !require_tool("busybox", "busybox-static", test) {
        return;
    }
    let (d, _conf) = setup(&["image", "list"]).await;
    let unix = d.unix();
    let operator = client_identity("operator");
    trust_restricted(&unix, &operator, &["default"]).await;
    let op = d.https(Some(&operator));
    let create = |name: &str, size: &str| {
        json!({"name": name, "source": {"type": "image", "alias": "bb"},
               "config": {"security.idmap.isolated": "true", "security.idmap.size": size}})
    };
    let attempt = |body: Value| {
        let op = &op;
        async move {
            let r = op
                .request(Method::POST, "/1.0/instances", Some(&body))
                .await
                .unwrap();
            if r.status >= 300 {
                return Err(r.envelope().unwrap().error);
            }
            let id = r.metadata().unwrap()["id"].as_str().unwrap().to_owned();
            let done = op
                .get(&format!("/1.0/operations/{id}/wait?timeout=30"))
                .await
                .unwrap();
            match done["status"].as_str() {
                Some("Success") => Ok(()),
                _ => Err(done["err"].as_str().unwrap_or_default().to_owned()),
            }
        }
    };
    // The review's attack: nearly the whole range in one instance.
    let e = attempt(create("greedy", "2147483648")).await.unwrap_err();
    assert!(e.contains("limits.idmap.size"), "{e}");
    // Up to the project's default share, and no further, summed over its instances.
    attempt(create("c1", "1000000")).await.unwrap();
    let e = attempt(create("c2", "65536")).await.unwrap_err();
    assert!(e.contains("limits.idmap.size"), "{e}");
    // An edit that would grow a block is counted the same way.
    let r = op
        .request(
            Method::PATCH,
            "/1.0/instances/c1",
            Some(&json!({"config": {"security.idmap.size": "1048577"}})),
        )
        .await
        .unwrap();
    let refused = if r.status >= 300 {
        r.envelope().unwrap().error
    } else {
        let id = r.metadata().unwrap()["id"].as_str().unwrap().to_owned();
        let done = op
            .get(&format!("/1.0/operations/{id}/wait?timeout=30"))
            .await
            .unwrap();
        done["err"].as_str().unwrap_or_default().to_owned()
    };
    assert!(refused.contains("limits.idmap.size"), "{refused}");
    // The administrator widens the project's share; the operator cannot.
    let widen = json!({"config": {"limits.idmap.size": "2000000"}});
    let r = op
        .request(Method::PATCH, "/1.0/projects/default", Some(&widen))
        .await
        .unwrap();
    assert!(r.status >= 400);
    // Nor can the project's own administrator: the limit protects the host, not the project.
    let project_admin = client_identity("project-admin");
    trust_restricted(&unix, &project_admin, &[]).await;
    ok(
        &unix,
        Method::POST,
        "/1.0/auth/grants",
        json!({"identity_type": "certificate", "identity": project_admin.fingerprint, "role": "admin", "scope": "project", "project": "default"}),
    )
    .await;
    let pa = d.https(Some(&project_admin));
    for body in [widen.clone(), json!({"config": {"limits.disk": "1TiB"}})] {
        let r = pa
            .request(Method::PATCH, "/1.0/projects/default", Some(&body))
            .await
            .unwrap();
        assert_eq!(r.status, 403, "{body}");
        assert!(r.envelope().unwrap().error.contains("server administrator"));
    }
    ok(
        &pa,
        Method::PATCH,
        "/1.0/projects/default",
        json!({"config": {"user.owner": "team"}}),
    )
    .await;
    ok(&unix, Method::PATCH, "/1.0/projects/default", widen).await;
    attempt(create("c2", "65536")).await.unwrap();
    // Administrators are not held to the default share.
    let mut project = unix.get("/1.0/projects/default").await.unwrap();
    project["config"]
        .as_object_mut()
        .unwrap()
        .remove("limits.idmap.size");
    ok(&unix, Method::PUT, "/1.0/projects/default", project).await;
    let r = unix
        .request(
            Method::POST,
            "/1.0/instances",
            Some(&create("big", "2000000")),
        )
        .await
        .unwrap();
    let id = r.metadata().unwrap()["id"].as_str().unwrap().to_owned();
    let done = unix
        .get(&format!("/1.0/operations/{id}/wait?timeout=30"))
        .await
        .unwrap();
    assert_eq!(done["status"], "Success", "{done}");

    // A running container's block stays its own: its map cannot change until it stops (the
    // block used to be released at once and handed to the next isolated container).
    finished(
        &unix,
        Method::PUT,
        "/1.0/instances/c2/state",
        json!({"action": "start", "timeout": 30}),
    )
    .await;
    let r = unix
        .request(
            Method::PATCH,
            "/1.0/instances/c2",
            Some(&json!({"config": {"security.idmap.isolated": "false"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.envelope().unwrap().error.contains("stop it first"));
    finished(
        &unix,
        Method::PUT,
        "/1.0/instances/c2/state",
        json!({"action": "stop", "force": true}),
    )
    .await;
    finished(
        &unix,
        Method::PATCH,
        "/1.0/instances/c2",
        json!({"config": {"security.idmap.isolated": "false"}}),
    )
    .await;
}
