//! Projects and role-based access control against the real daemon over real TLS.
//!
//! The big table walks every row of the daemon's own endpoint table (`rxd_auth::endpoints`) for
//! every kind of identity (each role on one project, on all projects and server-wide; a
//! restricted certificate; an unrestricted one; an untrusted client), in a project the identity
//! covers and in one it does not, and compares the answer with an expectation written
//! separately below from the security specification's role definitions. A mistake in either
//! table, or in the enforcement, shows as a mismatch.

use base64::Engine;
use rxd_auth::endpoints::{self, ProjectFrom};
use rxd_auth::rbac::Need;
use rxd_client::{Bytes, Client, Method, Reply};
use rxd_testkit::{client_identity, require_root, TestDaemon};
use rxd_tls::KeyPairFiles;
use serde_json::{json, Value};

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

async fn ok(c: &Client, method: Method, path: &str, body: Value) -> Value {
    let r = c.request(method, path, Some(&body)).await.unwrap();
    assert!(r.status < 300, "{path}: {} {:?}", r.status, r.envelope());
    r.metadata().unwrap_or(Value::Null)
}

/// Trust `id` as a restricted certificate with `projects`; returns its fingerprint.
async fn trust(unix: &Client, id: &KeyPairFiles, projects: &[&str]) -> String {
    ok(
        unix,
        Method::POST,
        "/1.0/certificates",
        json!({"certificate": b64(&id.cert_der), "restricted": true, "projects": projects}),
    )
    .await;
    rxd_tls::fingerprint(&id.cert_der)
}

async fn grant(unix: &Client, fp: &str, role: &str, scope: &str, project: &str) -> i64 {
    let md = ok(
        unix,
        Method::POST,
        "/1.0/auth/grants",
        json!({"identity_type": "certificate", "identity": fp, "role": role, "scope": scope, "project": project}),
    )
    .await;
    md["id"].as_i64().unwrap()
}

/// The least a caller needs, written from the seed's role definitions (independently of the
/// daemon's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Min {
    Anyone,
    AnyTrusted,
    Auditor,
    User,
    Operator,
    ProjectAdmin,
    ServerAdmin,
    /// The image GETs LXD opens to untrusted callers (public images, or a private one with its
    /// secret): untrusted callers are let through to the handler; trusted ones need `Auditor`.
    PublicImages,
}

fn expected_min(method: &str, path: &str) -> Min {
    use Min::*;
    let inst = path
        .strip_prefix("/1.0/instances")
        .or_else(|| path.strip_prefix("/1.0/containers"));
    if let Some(rest) = inst {
        return match (method, rest) {
            // A backup is the whole root filesystem: its download is the operator's.
            ("GET", "/{name}/backups/{backup}/export") => Operator,
            ("GET", _) if !rest.ends_with("/files") => Auditor,
            (_, "/{name}/backups" | "/{name}/backups/{backup}") => Operator,
            // Lifecycle, exec, console, files and snapshots: the user role.
            (_, "/{name}/state" | "/{name}/exec" | "/{name}/console" | "/{name}/files") => User,
            (_, "/{name}/snapshots" | "/{name}/snapshots/{snap}" | "/{name}/logs/{file}") => User,
            // Create, reconfigure, rename, delete: the operator role.
            (_, "" | "/{name}") => Operator,
            _ => panic!("no expectation written for {method} {path}"),
        };
    }
    if method == "GET"
        && matches!(
            path,
            "/1.0/images"
                | "/1.0/images/{fingerprint}"
                | "/1.0/images/{fingerprint}/export"
                | "/1.0/images/aliases/{name}"
        )
    {
        return PublicImages;
    }
    if path.starts_with("/1.0/profiles") {
        return if method == "GET" { Auditor } else { Operator };
    }
    // Networks live in `default` and serve every project's NICs; only the server
    // administrator makes or changes bridges.
    if path.starts_with("/1.0/networks") {
        return if method == "GET" {
            Auditor
        } else {
            ServerAdmin
        };
    }
    if path.starts_with("/1.0/images") {
        return if method == "GET" { Auditor } else { Operator };
    }
    // Custom volumes belong to a project: its operators make, change and delete them
    // (LXD's manage-storage-volumes).
    if path.starts_with("/1.0/storage-pools/{name}/volumes") && method != "GET" {
        return Operator;
    }
    // Storage pools are global, as in LXD 5.0: anyone who may view a project sees them (and
    // only its own volumes); only the server administrator makes, changes or deletes them.
    if path.starts_with("/1.0/storage-pools") {
        return if method == "GET" {
            Auditor
        } else {
            ServerAdmin
        };
    }
    match (method, path) {
        (_, "/") | ("GET", "/1.0") | ("POST", "/1.0/certificates") => Anyone,
        ("GET", "/1.0/operations/{id}/websocket") => Anyone,
        ("GET", "/1.0/certificates" | "/1.0/certificates/{fingerprint}") => AnyTrusted,
        ("PUT" | "PATCH", "/1.0/certificates/{fingerprint}") => AnyTrusted,
        ("GET", "/1.0/events" | "/1.0/operations" | "/1.0/operations/{id}") => AnyTrusted,
        ("GET", "/1.0/resources") => AnyTrusted,
        ("GET", "/1.0/operations/{id}/wait") | ("DELETE", "/1.0/operations/{id}") => AnyTrusted,
        ("GET", "/1.0/projects") => AnyTrusted,
        ("GET", "/1.0/projects/{name}" | "/1.0/projects/{name}/state") => Auditor,
        ("PUT" | "PATCH", "/1.0/projects/{name}") => ProjectAdmin,
        ("POST" | "DELETE", "/1.0/projects/{name}") | ("POST", "/1.0/projects") => ServerAdmin,
        (_, "/1.0") => ServerAdmin,
        _ if path.starts_with("/1.0/warnings") || path.starts_with("/1.0/auth/") => ServerAdmin,
        ("DELETE", "/1.0/certificates/{fingerprint}") => ServerAdmin,
        _ => panic!("no expectation written for {method} {path}"),
    }
}

/// Who is asking, as the seed describes them.
#[derive(Debug, Clone, Copy)]
enum Who {
    Untrusted,
    /// Unrestricted certificate: server admin, as LXD.
    Unrestricted,
    /// LXD's restricted certificate listing p1: operator on p1.
    RestrictedP1,
    /// A role (ordered as Min) on p1 only, on all projects, or server-wide.
    OnP1(Min),
    AllProjects(Min),
    Server(Min),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Outcome {
    Allowed,
    Forbidden,
    /// Answered as a missing project.
    Hidden,
}

/// What the seed says `who` gets for an endpoint needing `min`, in `project` (p1 or p2);
/// `project_scoped` is false for server endpoints.
fn expect(who: Who, min: Min, project_scoped: bool, project: &str) -> Outcome {
    use Outcome::*;
    let admin = matches!(who, Who::Unrestricted | Who::Server(Min::ServerAdmin));
    let trusted = !matches!(who, Who::Untrusted);
    let min = match min {
        Min::PublicImages if !trusted => return Allowed,
        Min::PublicImages => Min::Auditor,
        other => other,
    };
    match min {
        Min::Anyone => return Allowed,
        Min::AnyTrusted => return if trusted { Allowed } else { Forbidden },
        Min::ServerAdmin => return if admin { Allowed } else { Forbidden },
        _ => {}
    }
    assert!(project_scoped);
    if !trusted {
        return Forbidden;
    }
    if admin {
        return Allowed;
    }
    let role = match who {
        Who::RestrictedP1 if project == "p1" => Some(Min::Operator),
        Who::OnP1(r) if project == "p1" => Some(r),
        Who::AllProjects(r) | Who::Server(r) => Some(r),
        _ => None,
    };
    match role {
        None => Hidden,
        Some(r) if r >= min => Allowed,
        Some(_) => Forbidden,
    }
}

fn classify(need: Need, r: &Reply) -> Outcome {
    let message = r.envelope().map(|e| e.error).unwrap_or_default();
    match (need, r.status) {
        (_, 403) => Outcome::Forbidden,
        (Need::Project(_) | Need::Anyone, 404) if message == "Project not found" => Outcome::Hidden,
        _ => Outcome::Allowed,
    }
}

/// A concrete path for a route, naming nothing that exists except the project (so an allowed
/// request changes nothing: it fails on the missing resource or the malformed body).
fn concrete(path: &str, project_from: ProjectFrom, project: &str) -> String {
    let named = match project_from {
        ProjectFrom::PathName => project,
        ProjectFrom::Query if path.starts_with("/1.0/projects/") => "no-such-project",
        ProjectFrom::Query => "ghost",
    };
    let p = path
        .replace("{name}", named)
        .replace("{snap}", "s0")
        .replace("{file}", "exec_none.stdout")
        .replace("{fingerprint}", &"ab".repeat(32))
        .replace("{uuid}", "00000000-0000-0000-0000-000000000000")
        .replace("{id}", "999999");
    match project_from {
        ProjectFrom::Query => format!("{p}?project={project}"),
        ProjectFrom::PathName => p,
    }
}

#[tokio::test]
async fn every_endpoint_for_every_role_and_scope() {
    if !require_root("every_endpoint_for_every_role_and_scope") {
        return;
    }
    let mut d = TestDaemon::start().await;
    d.enable_https().await;
    let unix = d.unix();
    for p in ["p1", "p2"] {
        ok(&unix, Method::POST, "/1.0/projects", json!({"name": p})).await;
    }
    let roles = [
        ("auditor", Min::Auditor),
        ("user", Min::User),
        ("operator", Min::Operator),
        ("admin", Min::ProjectAdmin),
    ];
    let mut identities: Vec<(String, Who, Option<KeyPairFiles>)> = vec![
        (
            "untrusted".into(),
            Who::Untrusted,
            Some(client_identity("untrusted")),
        ),
        ("unrestricted".into(), Who::Unrestricted, None),
        ("restricted-p1".into(), Who::RestrictedP1, None),
    ];
    let unrestricted = client_identity("unrestricted");
    ok(
        &unix,
        Method::POST,
        "/1.0/certificates",
        json!({"certificate": b64(&unrestricted.cert_der)}),
    )
    .await;
    identities[1].2 = Some(unrestricted);
    let restricted = client_identity("restricted-p1");
    trust(&unix, &restricted, &["p1"]).await;
    identities[2].2 = Some(restricted);
    for (name, min) in roles {
        for (scope, who) in [
            ("project", Who::OnP1(min)),
            ("all-projects", Who::AllProjects(min)),
            (
                "server",
                Who::Server(if min == Min::ProjectAdmin {
                    Min::ServerAdmin
                } else {
                    min
                }),
            ),
        ] {
            let label = format!("{name}@{scope}");
            let id = client_identity(&label);
            let fp = trust(&unix, &id, &[]).await;
            let project = if scope == "project" { "p1" } else { "" };
            grant(&unix, &fp, name, scope, project).await;
            identities.push((label, who, Some(id)));
        }
    }

    let mut checked = 0;
    let mut failures = Vec::new();
    for (label, who, id) in &identities {
        let client = d.https(id.as_ref());
        for e in endpoints::all() {
            let min = expected_min(e.method, e.path);
            let scoped = matches!(e.need, Need::Project(_)) || min == Min::PublicImages;
            let projects: &[&str] = if scoped { &["p1", "p2"] } else { &["p1"] };
            for project in projects {
                let path = concrete(e.path, e.project_from, project);
                let method = Method::from_bytes(e.method.as_bytes()).unwrap();
                let body = if matches!(e.method, "GET" | "DELETE") {
                    Bytes::new()
                } else {
                    Bytes::from_static(b"{")
                };
                let r = client.send(method, &path, &[], body).await.unwrap();
                let got = classify(e.need, &r);
                let want = expect(*who, min, scoped, project);
                checked += 1;
                if got != want {
                    failures.push(format!(
                        "{label}: {} {path}: got {got:?} ({} {:?}), want {want:?}",
                        e.method,
                        r.status,
                        r.envelope().map(|e| e.error).unwrap_or_default()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 1000, "only {checked} requests checked");
}

/// Wait for the operation a 202 reply started; returns the finished operation.
async fn wait(c: &Client, r: &Reply) -> Value {
    assert_eq!(r.status, 202, "{:?}", r.envelope());
    let id = r.envelope().unwrap().metadata["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = c.get(&format!("/1.0/operations/{id}/wait")).await.unwrap();
    assert_eq!(done["status"], "Success", "{done}");
    done
}

/// Import the test busybox image into `project` with alias `bb`.
async fn image_in(unix: &Client, project: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("bb.tar.gz");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/make-busybox-image.sh");
    let made = std::process::Command::new("bash")
        .arg(script)
        .arg(&tarball)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let r = unix
        .send_file(
            Method::POST,
            &format!("/1.0/images?project={project}"),
            &[],
            &tarball,
            std::sync::Arc::new(|_| {}),
        )
        .await
        .unwrap();
    let done = wait(unix, &r).await;
    let fp = done["metadata"]["fingerprint"].as_str().unwrap().to_owned();
    ok(
        unix,
        Method::POST,
        &format!("/1.0/images/aliases?project={project}"),
        json!({"name": "bb", "target": fp}),
    )
    .await;
}

async fn create(c: &Client, project: &str, body: Value) -> Reply {
    c.request(
        Method::POST,
        &format!("/1.0/instances?project={project}"),
        Some(&body),
    )
    .await
    .unwrap()
}

fn error_of(r: &Reply) -> (u16, String) {
    (r.status, r.envelope().map(|e| e.error).unwrap_or_default())
}

#[tokio::test]
async fn projects_keep_listings_events_and_operations_apart() {
    if !require_root("projects_keep_listings_events_and_operations_apart") {
        return;
    }
    let mut d = TestDaemon::start().await;
    d.enable_https().await;
    let unix = d.unix();
    for p in ["p1", "p2"] {
        ok(&unix, Method::POST, "/1.0/projects", json!({"name": p})).await;
    }
    image_in(&unix, "p1").await;
    let r = create(
        &unix,
        "p1",
        json!({"name": "c1", "source": {"type": "image", "alias": "bb"}}),
    )
    .await;
    wait(&unix, &r).await;
    // The same name in another project is another instance.
    image_in(&unix, "p2").await;
    let r = create(
        &unix,
        "p2",
        json!({"name": "c1", "source": {"type": "image", "alias": "bb"}}),
    )
    .await;
    wait(&unix, &r).await;

    let (on1, on2) = (client_identity("on1"), client_identity("on2"));
    let fp1 = trust(&unix, &on1, &[]).await;
    let fp2 = trust(&unix, &on2, &[]).await;
    grant(&unix, &fp1, "auditor", "project", "p1").await;
    grant(&unix, &fp2, "auditor", "project", "p2").await;
    let (c1, c2) = (d.https(Some(&on1)), d.https(Some(&on2)));

    // Every listing form shows p2's auditor only p2.
    for q in ["", "&recursion=1", "&recursion=2", "&filter=name+eq+c1"] {
        let md = c2
            .get(&format!("/1.0/instances?project=p2{q}"))
            .await
            .unwrap();
        assert_eq!(md.as_array().unwrap().len(), 1, "{q}: {md}");
        assert!(!md.to_string().contains("p1"), "{q}: {md}");
    }
    for q in ["", "&recursion=1"] {
        let md = c2
            .get(&format!("/1.0/instances?all-projects=true{q}"))
            .await
            .unwrap();
        assert_eq!(md.as_array().unwrap().len(), 1, "{md}");
        assert!(!md.to_string().contains("p1"), "{md}");
    }
    let md = unix
        .get("/1.0/instances?all-projects=true&recursion=1")
        .await
        .unwrap();
    assert_eq!(md.as_array().unwrap().len(), 2, "the admin sees both: {md}");
    let projects = c2.get("/1.0/projects").await.unwrap();
    assert_eq!(projects, json!(["/1.0/projects/p2"]));
    // p1 and its instance answer exactly as a project that does not exist.
    for path in [
        "/1.0/instances?project=p1",
        "/1.0/instances/c1?project=p1",
        "/1.0/images?project=p1",
        "/1.0/projects/p1",
    ] {
        let hidden = c2.request(Method::GET, path, None).await.unwrap();
        let missing = c2
            .request(Method::GET, &path.replace("p1", "nothing-here"), None)
            .await
            .unwrap();
        assert_eq!(
            error_of(&hidden),
            (404, "Project not found".into()),
            "{path}"
        );
        assert_eq!(hidden.body, missing.body, "{path}");
    }

    // Events: each auditor receives its project's events only.
    let mut ev1 = c1.websocket("/1.0/events?all-projects=true").await.unwrap();
    let mut ev2 = c2.websocket("/1.0/events?all-projects=true").await.unwrap();
    for p in ["p1", "p2"] {
        ok(
            &unix,
            Method::PATCH,
            &format!("/1.0/projects/{p}"),
            json!({"description": format!("changed {p}")}),
        )
        .await;
    }
    use futures_util::StreamExt;
    for (ws, mine) in [(&mut ev1, "p1"), (&mut ev2, "p2")] {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        assert_eq!(
            event["project"], mine,
            "the first event seen is its own: {event}"
        );
    }

    // Operations: the creation in p1 is not among what p2's auditor may list or read.
    let ops = unix
        .get("/1.0/operations?all-projects=true&recursion=1")
        .await
        .unwrap();
    let ids: Vec<(String, String)> = ops["success"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_owned(),
                o["resources"].to_string(),
            )
        })
        .collect();
    assert!(ids.len() >= 4, "{ops}");
    let seen = c2
        .get("/1.0/operations?all-projects=true&recursion=1")
        .await
        .unwrap()
        .to_string();
    let mut hidden = 0;
    for (id, _) in &ids {
        let theirs = unix.get(&format!("/1.0/operations/{id}")).await.unwrap();
        let r = c2
            .request(Method::GET, &format!("/1.0/operations/{id}"), None)
            .await
            .unwrap();
        // Operations carry their project only in the registry; p2's auditor sees exactly those
        // whose listing it got.
        assert_eq!(r.status == 200, seen.contains(id.as_str()), "{theirs}");
        if r.status != 200 {
            hidden += 1;
            assert_eq!(error_of(&r).0, 404);
        }
    }
    assert!(
        hidden >= 2,
        "the p1 image import and instance creation are hidden"
    );
}

#[tokio::test]
async fn non_admins_cannot_escape_confinement_through_any_entry_path() {
    if !require_root("non_admins_cannot_escape_confinement_through_any_entry_path") {
        return;
    }
    let mut d = TestDaemon::start().await;
    d.enable_https().await;
    let unix = d.unix();
    ok(&unix, Method::POST, "/1.0/projects", json!({"name": "p1"})).await;
    image_in(&unix, "p1").await;
    let op_id = client_identity("operator");
    let fp = trust(&unix, &op_id, &[]).await;
    // A project admin, even: only a server administrator may.
    grant(&unix, &fp, "admin", "project", "p1").await;
    let op = d.https(Some(&op_id));
    let src = json!({"type": "image", "alias": "bb"});

    // create
    for config in [
        json!({"security.privileged": "true"}),
        json!({"security.idmap.base": "1065536"}),
    ] {
        let r = create(
            &op,
            "p1",
            json!({"name": "x", "source": src, "config": config}),
        )
        .await;
        let (status, message) = error_of(&r);
        assert_eq!(status, 403, "{config}: {message}");
        assert!(message.contains("server administrator"), "{message}");
    }
    let r = create(
        &op,
        "p1",
        json!({"name": "c1", "source": src, "config": {"security.idmap.isolated": "true"}}),
    )
    .await;
    wait(&op, &r).await;
    // Host devices: not in an unrestricted project, and the project admin cannot make the
    // project allow them (restrictions are the server administrator's).
    let host = json!({"devices": {"etc": {"type": "disk", "source": "/etc", "path": "/mnt"}}});
    let r = create(
        &op,
        "p1",
        json!({"name": "x", "source": src, "devices": host["devices"]}),
    )
    .await;
    let (status, message) = error_of(&r);
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("Only the server administrator may add disk devices"),
        "{message}"
    );
    for widen in [
        json!({"restricted": "true", "restricted.devices.disk": "allow", "restricted.devices.disk.paths": "/"}),
        json!({"restricted.devices.proxy": "allow"}),
        json!({"restricted.containers.privilege": "allow"}),
    ] {
        let r = op
            .request(
                Method::PATCH,
                "/1.0/projects/p1",
                Some(&json!({"config": widen})),
            )
            .await
            .unwrap();
        let (status, message) = error_of(&r);
        assert_eq!(status, 403, "{widen}: {message}");
        assert!(
            message.contains("Only the server administrator may change restricted"),
            "{message}"
        );
    }
    // PUT and PATCH
    let inst = "/1.0/instances/c1?project=p1";
    let current = op.get(inst).await.unwrap();
    let mut put = json!({"config": current["config"].clone(), "description": ""});
    put["config"]["security.privileged"] = json!("true");
    let r = op.request(Method::PUT, inst, Some(&put)).await.unwrap();
    assert_eq!(error_of(&r).0, 403, "PUT");
    let r = op
        .request(
            Method::PATCH,
            inst,
            Some(&json!({"config": {"security.privileged": "true"}})),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r).0, 403, "PATCH");
    let after = unix.get(inst).await.unwrap();
    assert_eq!(
        after["config"].get("security.privileged"),
        None,
        "unchanged"
    );

    // Profiles: an operator may not put a forbidden key in one, nor bring one an
    // administrator made into an instance (at create, by assignment, by editing a profile the
    // instance uses).
    let r = op
        .request(
            Method::POST,
            "/1.0/profiles?project=p1",
            Some(&json!({"name": "bad", "config": {"security.privileged": "true"}})),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r).0, 403, "profile create");
    ok(
        &unix,
        Method::POST,
        "/1.0/profiles?project=p1",
        json!({"name": "priv", "config": {"security.privileged": "true"}}),
    )
    .await;
    ok(
        &unix,
        Method::POST,
        "/1.0/profiles?project=p1",
        json!({"name": "plain"}),
    )
    .await;
    let r = create(
        &op,
        "p1",
        json!({"name": "y", "source": src, "profiles": ["default", "priv"]}),
    )
    .await;
    assert_eq!(error_of(&r).0, 403, "create with a profile");
    let r = op
        .request(
            Method::PATCH,
            inst,
            Some(&json!({"profiles": ["default", "priv"]})),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r).0, 403, "profile assignment");
    ok(
        &op,
        Method::PATCH,
        inst,
        json!({"profiles": ["default", "plain"]}),
    )
    .await;
    let r = op
        .request(
            Method::PATCH,
            "/1.0/profiles/plain?project=p1",
            Some(&json!({"config": {"security.idmap.base": "1065536"}})),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r).0, 403, "profile edit");
    let after = unix.get(inst).await.unwrap();
    assert_eq!(after["profiles"], json!(["default", "plain"]));
    assert_eq!(after["expanded_config"].get("security.idmap.base"), None);
    // The default project's profiles, once another project shares them, are the server
    // administrator's alone: an operator of `default` may not change them.
    grant(&unix, &fp, "operator", "project", "default").await;
    ok(
        &op,
        Method::PATCH,
        "/1.0/profiles/default",
        json!({"config": {"user.x": "1"}}),
    )
    .await;
    ok(
        &unix,
        Method::POST,
        "/1.0/projects",
        json!({"name": "nop", "config": {"features.profiles": "false"}}),
    )
    .await;
    let r = op
        .request(
            Method::PATCH,
            "/1.0/profiles/default",
            Some(&json!({"config": {"limits.memory": "8MiB"}})),
        )
        .await
        .unwrap();
    let (status, message) = error_of(&r);
    assert_eq!(status, 403, "shared default profile: {message}");
    assert!(message.contains("server administrator"), "{message}");

    // rename and restore of a container the administrator made privileged
    let r = create(
        &unix,
        "p1",
        json!({"name": "priv", "source": src, "config": {"security.privileged": "true"}}),
    )
    .await;
    wait(&unix, &r).await;
    let r = unix
        .request(
            Method::POST,
            "/1.0/instances/priv/snapshots?project=p1",
            Some(&json!({"name": "s0"})),
        )
        .await
        .unwrap();
    wait(&unix, &r).await;
    let r = op
        .request(
            Method::POST,
            "/1.0/instances/priv?project=p1",
            Some(&json!({"name": "renamed"})),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r).0, 403, "rename");
    let r = op
        .request(
            Method::PUT,
            "/1.0/instances/priv?project=p1",
            Some(&json!({"restore": "s0"})),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r).0, 403, "restore");
    assert_eq!(
        unix.request(Method::GET, "/1.0/instances/priv?project=p1", None)
            .await
            .unwrap()
            .status,
        200
    );

    // Project restrictions bind the server administrator too. New ones must hold for what
    // the project already has (LXD's rule): not while the privileged container is there.
    let r = op
        .request(
            Method::PATCH,
            "/1.0/projects/p1",
            Some(&json!({"config": {"restricted": "true"}})),
        )
        .await
        .unwrap();
    let (status, message) = error_of(&r);
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("Conflict detected") && message.contains("\"priv\""),
        "{message}"
    );
    let r = unix
        .request(Method::DELETE, "/1.0/instances/priv?project=p1", None)
        .await
        .unwrap();
    wait(&unix, &r).await;
    ok(
        &op,
        Method::PATCH,
        "/1.0/projects/p1",
        json!({"config": {"restricted": "true"}}),
    )
    .await;
    let r = create(
        &unix,
        "p1",
        json!({"name": "priv2", "source": src, "config": {"security.privileged": "true"}}),
    )
    .await;
    assert_eq!(error_of(&r).0, 403, "restricted project");
    // A snapshot ban for everyone.
    ok(
        &op,
        Method::PATCH,
        "/1.0/projects/p1",
        json!({"config": {"restricted.snapshots": "block"}}),
    )
    .await;
    let r = op
        .request(
            Method::POST,
            "/1.0/instances/c1/snapshots?project=p1",
            Some(&json!({})),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r).0, 403, "snapshots blocked");
    // The project admin tightened its project; loosening it again is the server's.
    for loosen in [
        json!({"restricted": "false"}),
        json!({"restricted.snapshots": "allow"}),
    ] {
        let r = op
            .request(
                Method::PATCH,
                "/1.0/projects/p1",
                Some(&json!({"config": loosen})),
            )
            .await
            .unwrap();
        assert_eq!(error_of(&r).0, 403, "{loosen}");
    }
}

#[tokio::test]
async fn grants_apply_to_the_next_request_on_a_kept_alive_connection() {
    if !require_root("grants_apply_to_the_next_request_on_a_kept_alive_connection") {
        return;
    }
    let mut d = TestDaemon::start().await;
    d.enable_https().await;
    let unix = d.unix();
    ok(&unix, Method::POST, "/1.0/projects", json!({"name": "p1"})).await;
    let id = client_identity("kept");
    let fp = trust(&unix, &id, &[]).await;
    let c = d.https(Some(&id));
    let status = |r: Reply| r.status;
    // No rights anywhere: refused outright (there is nothing to hide).
    assert_eq!(
        status(
            c.request(Method::GET, "/1.0/instances?project=p1", None)
                .await
                .unwrap()
        ),
        403
    );
    let g = grant(&unix, &fp, "auditor", "project", "p1").await;
    assert_eq!(
        status(
            c.request(Method::GET, "/1.0/instances?project=p1", None)
                .await
                .unwrap()
        ),
        200
    );
    let r = c
        .request(Method::POST, "/1.0/instances?project=p1", Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(
        error_of(&r),
        (403, "not authorized".into()),
        "auditors do not create"
    );
    let grants = unix.get("/1.0/auth/grants?recursion=1").await.unwrap();
    assert_eq!(grants[0]["identity"], fp.as_str());
    ok(
        &unix,
        Method::DELETE,
        &format!("/1.0/auth/grants/{g}"),
        Value::Null,
    )
    .await;
    // No rights anywhere: refused outright (there is nothing to hide).
    assert_eq!(
        status(
            c.request(Method::GET, "/1.0/instances?project=p1", None)
                .await
                .unwrap()
        ),
        403
    );
    // A server-wide admin grant makes a restricted certificate the administrator.
    let g = grant(&unix, &fp, "admin", "server", "").await;
    let r = c
        .request(Method::PATCH, "/1.0", Some(&json!({"config": {}})))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    ok(
        &unix,
        Method::DELETE,
        &format!("/1.0/auth/grants/{g}"),
        Value::Null,
    )
    .await;
    let r = c
        .request(Method::PATCH, "/1.0", Some(&json!({"config": {}})))
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    // Deleting the certificate deletes its grants.
    grant(&unix, &fp, "user", "all-projects", "").await;
    ok(
        &unix,
        Method::DELETE,
        &format!("/1.0/certificates/{fp}"),
        Value::Null,
    )
    .await;
    let grants = unix.get("/1.0/auth/grants").await.unwrap();
    assert_eq!(grants, json!([]));
}

#[tokio::test]
async fn restricted_certificates_cannot_widen_themselves() {
    if !require_root("restricted_certificates_cannot_widen_themselves") {
        return;
    }
    let mut d = TestDaemon::start().await;
    d.enable_https().await;
    let unix = d.unix();
    for p in ["p1", "p2"] {
        ok(&unix, Method::POST, "/1.0/projects", json!({"name": p})).await;
    }
    // Projects named in a certificate must exist.
    let ghost = client_identity("ghost");
    let r = unix
        .request(
            Method::POST,
            "/1.0/certificates",
            Some(&json!({"certificate": b64(&ghost.cert_der), "restricted": true, "projects": ["nope"]})),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r), (400, "Project \"nope\" not found".into()));
    let me = client_identity("me");
    let fp = trust(&unix, &me, &["p1"]).await;
    let c = d.https(Some(&me));
    let url = format!("/1.0/certificates/{fp}");
    let before = unix.get(&url).await.unwrap();
    for (method, body) in [
        (
            Method::PUT,
            json!({"name": before["name"], "type": "client", "restricted": false, "projects": []}),
        ),
        (
            Method::PUT,
            json!({"name": before["name"], "type": "client", "restricted": true, "projects": ["p1", "p2"]}),
        ),
        (Method::PATCH, json!({"restricted": false})),
        (Method::PATCH, json!({"projects": ["p1", "p2"]})),
        (Method::PATCH, json!({"type": "server"})),
    ] {
        let r = c.request(method.clone(), &url, Some(&body)).await.unwrap();
        assert!(
            matches!(r.status, 400 | 403),
            "{method} {body}: {:?}",
            r.envelope()
        );
    }
    let r = c
        .request(
            Method::POST,
            "/1.0/auth/grants",
            Some(&json!({"identity_type": "certificate", "identity": fp, "role": "admin", "scope": "server"})),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r), (403, "not authorized".into()));
    let after = unix.get(&url).await.unwrap();
    assert_eq!(before, after, "nothing changed");
    // It is an operator on p1 without manage-projects, and sees nothing of p2.
    let r = c
        .request(
            Method::PATCH,
            "/1.0/projects/p1",
            Some(&json!({"config": {"restricted": "false"}})),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r).0, 403);
    assert_eq!(
        c.request(Method::GET, "/1.0/projects/p2", None)
            .await
            .unwrap()
            .status,
        404
    );
    // Deleting a project drops it from the certificates that named it; default cannot go.
    ok(&unix, Method::DELETE, "/1.0/projects/p1", Value::Null).await;
    let after = unix.get(&url).await.unwrap();
    assert_eq!(after["projects"], json!([]));
    let r = unix
        .request(Method::DELETE, "/1.0/projects/default", None)
        .await
        .unwrap();
    assert_eq!(error_of(&r).0, 403);
}

/// Custom volumes stay in their project: an operator makes and attaches its own project's, but
/// cannot copy another project's it only views, reach `default`'s from a project that uses them
/// (`features.storage.volumes=false`) without rights there, nor attach one it cannot see.
#[tokio::test]
async fn storage_volumes_stay_in_their_project() {
    if !require_root("storage_volumes_stay_in_their_project") {
        return;
    }
    let mut d = TestDaemon::start().await;
    d.enable_https().await;
    let unix = d.unix();
    ok(&unix, Method::POST, "/1.0/projects", json!({"name": "p1"})).await;
    ok(
        &unix,
        Method::POST,
        "/1.0/projects",
        json!({"name": "p2", "config": {"features.storage.volumes": "false"}}),
    )
    .await;
    ok(&unix, Method::POST, "/1.0/projects", json!({"name": "p3"})).await;
    image_in(&unix, "p1").await;
    image_in(&unix, "p2").await;
    let vols =
        |project: &str| format!("/1.0/storage-pools/default/volumes/custom?project={project}");
    ok(&unix, Method::POST, &vols("p3"), json!({"name": "secret"})).await;
    ok(
        &unix,
        Method::POST,
        &vols("default"),
        json!({"name": "adm"}),
    )
    .await;
    let id = client_identity("volumes-operator");
    let fp = trust(&unix, &id, &[]).await;
    grant(&unix, &fp, "operator", "project", "p1").await;
    grant(&unix, &fp, "operator", "project", "p2").await;
    grant(&unix, &fp, "auditor", "project", "p3").await;
    let op = d.https(Some(&id));

    // Its own project's volume: made and attached.
    ok(&op, Method::POST, &vols("p1"), json!({"name": "mine"})).await;
    let src = json!({"type": "image", "alias": "bb"});
    let disk = |v: &str| json!({"type": "disk", "pool": "default", "source": v, "path": "/mnt"});
    let r = create(
        &op,
        "p1",
        json!({"name": "c1", "source": src, "devices": {"v": disk("mine")}}),
    )
    .await;
    wait(&op, &r).await;
    // Another project's, which it only views: neither copied nor attached.
    let r = op
        .request(
            Method::POST,
            &vols("p1"),
            Some(&json!({"name": "stolen", "source": {"type": "copy", "name": "secret", "pool": "default", "project": "p3"}})),
        )
        .await
        .unwrap();
    let (status, message) = error_of(&r);
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("manage-storage-volumes"), "{message}");
    let r = create(
        &op,
        "p1",
        json!({"name": "c2", "source": src, "devices": {"v": disk("secret")}}),
    )
    .await;
    let (status, message) = error_of(&r);
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("not found"), "{message}");
    // p2 uses default's volumes, where the operator has no rights.
    let listed = op.get(&vols("p2").replace("/custom?", "?")).await.unwrap();
    assert!(
        !listed.to_string().contains("adm"),
        "default's volumes listed: {listed}"
    );
    let r = op
        .request(Method::POST, &vols("p2"), Some(&json!({"name": "x"})))
        .await
        .unwrap();
    // Hidden, as the project `default` is from this operator.
    assert_eq!(error_of(&r).0, 404, "{:?}", error_of(&r));
    let r = op
        .request(
            Method::GET,
            "/1.0/storage-pools/default/volumes/custom/adm?project=p2",
            None,
        )
        .await
        .unwrap();
    assert_eq!(error_of(&r).0, 404);
    let r = create(
        &op,
        "p2",
        json!({"name": "c3", "source": src, "devices": {"v": disk("adm")}}),
    )
    .await;
    let (status, message) = error_of(&r);
    assert_eq!(status, 403, "{message}");
    // Nothing was made.
    let names = unix
        .get("/1.0/storage-pools/default/volumes/custom?project=p1")
        .await
        .unwrap();
    assert_eq!(
        names,
        json!(["/1.0/storage-pools/default/volumes/custom/mine?project=p1"])
    );
}
