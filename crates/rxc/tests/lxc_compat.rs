//! Debian's own LXD 5.0.2 client (`lxc`, package lxd-client) against `rxd`: the seed's trust
//! workflow must work unchanged.

use rxd_testkit::session::lxc;
use rxd_testkit::{bin, require_root, require_tool, TestDaemon};
use std::path::Path;
use std::process::{Command, Stdio};

fn ok(conf: &Path, args: &[&str]) -> String {
    let out = lxc(conf, args);
    assert!(
        out.status.success(),
        "lxc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rxc(d: &TestDaemon, conf: &Path, args: &[&str]) -> String {
    let out = Command::new(bin("rxc"))
        .args(args)
        .env("RXC_CONF", conf)
        .env("RXD_DIR", d.dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rxc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn debian_lxc_client_trust_workflow() {
    if !require_root("debian_lxc_client_trust_workflow")
        || !require_tool("lxc", "lxd-client", "debian_lxc_client_trust_workflow")
    {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = tempfile::tempdir().unwrap();
    rxc(
        &d,
        admin.path(),
        &["config", "set", "core.trust_password", "s3cret"],
    );
    let addr = d.https_address();

    // Password enrolment, as the seed describes it.
    let a = tempfile::tempdir().unwrap();
    let out = lxc(
        a.path(),
        &[
            "remote",
            "add",
            "rxd",
            &addr,
            "--accept-certificate",
            "--password",
            "wrong",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not authorized"),
        "{out:?}"
    );
    let out = ok(
        a.path(),
        &[
            "remote",
            "add",
            "rxd",
            &addr,
            "--accept-certificate",
            "--password",
            "s3cret",
        ],
    );
    assert!(
        out.contains("Client certificate now trusted by server: rxd"),
        "{out}"
    );
    let info = ok(a.path(), &["info", "rxd:"]);
    assert!(
        info.contains("auth: trusted") && info.contains(&d.server_fingerprint()),
        "{info}"
    );

    // Token enrolment: the token comes from rxc; lxc redeems it.
    let out = rxc(
        &d,
        admin.path(),
        &["config", "trust", "add", "--name", "from-token"],
    );
    let token = out.lines().last().unwrap();
    let b = tempfile::tempdir().unwrap();
    // lxc prints nothing on success here; the checks below show the result.
    ok(b.path(), &["remote", "add", "rxd", token]);
    let list = ok(a.path(), &["config", "trust", "list", "rxd:"]);
    assert!(list.contains("from-token"), "{list}");
    assert!(ok(b.path(), &["info", "rxd:"]).contains("auth: trusted"));

    // Add a certificate file, then remove it by fingerprint prefix.
    let id = rxd_testkit::client_identity("from-file");
    let f = a.path().join("extra.crt");
    std::fs::write(&f, &id.cert_pem).unwrap();
    ok(
        a.path(),
        &["config", "trust", "add", "rxd:", f.to_str().unwrap()],
    );
    assert!(ok(a.path(), &["config", "trust", "list", "rxd:"]).contains(&id.fingerprint[..12]));
    ok(
        a.path(),
        &["config", "trust", "remove", "rxd:", &id.fingerprint[..12]],
    );
    assert!(!ok(a.path(), &["config", "trust", "list", "rxd:"]).contains(&id.fingerprint[..12]));

    // Pending tokens are listed (their secret is never shown again, by design).
    rxc(
        &d,
        admin.path(),
        &["config", "trust", "add", "--name", "pending"],
    );
    assert!(ok(a.path(), &["config", "trust", "list-tokens", "rxd:"]).contains("pending"));

    // Revoke client b: it gets LXD's "not authorized".
    let b_fp = {
        let v: serde_json::Value =
            serde_json::from_str(&ok(b.path(), &["query", "rxd:/1.0"])).unwrap();
        v["auth_user_name"].as_str().unwrap().to_owned()
    };
    ok(a.path(), &["config", "trust", "remove", "rxd:", &b_fp]);
    let out = lxc(b.path(), &["config", "trust", "list", "rxd:"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Error: not authorized"),
        "{out:?}"
    );
}

#[tokio::test]
async fn debian_lxc_client_projects() {
    if !require_root("debian_lxc_client_projects")
        || !require_tool("lxc", "lxd-client", "debian_lxc_client_projects")
    {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = tempfile::tempdir().unwrap();
    rxc(
        &d,
        admin.path(),
        &["config", "set", "core.trust_password", "s3cret"],
    );
    let a = tempfile::tempdir().unwrap();
    ok(
        a.path(),
        &[
            "remote",
            "add",
            "rxd",
            &d.https_address(),
            "--accept-certificate",
            "--password",
            "s3cret",
        ],
    );
    ok(a.path(), &["project", "create", "rxd:p1"]);
    ok(a.path(), &["project", "set", "rxd:p1", "user.team", "web"]);
    assert!(ok(a.path(), &["project", "show", "rxd:p1"]).contains("user.team: web"));
    let list = ok(a.path(), &["project", "list", "rxd:"]);
    assert!(list.contains("p1") && list.contains("default"), "{list}");
    ok(a.path(), &["project", "switch", "rxd:p1"]);
    assert!(ok(a.path(), &["project", "list", "rxd:"]).contains("p1 (current)"));
    ok(a.path(), &["list", "rxd:"]);
    let out = lxc(a.path(), &["project", "delete", "rxd:default"]);
    assert!(!out.status.success(), "{out:?}");
    ok(a.path(), &["project", "switch", "rxd:default"]);
    ok(a.path(), &["project", "rename", "rxd:p1", "p2"]);
    ok(a.path(), &["project", "delete", "rxd:p2"]);
    assert!(!ok(a.path(), &["project", "list", "rxd:"]).contains("p2"));
}
