//! PKI mode end to end: a CA made in the test issues the server's and the clients' certificates;
//! `rxd` has `server.ca` (and later `ca.crl`), `rxc` and Debian's `lxc` have `client.ca`.

use rxd_client::Method;
use rxd_testkit::ca::{Issued, TestCa};
use rxd_testkit::{bin, require_root, require_tool, TestDaemon};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn rxc(d: &TestDaemon, conf: &Path, args: &[&str]) -> Output {
    Command::new(bin("rxc"))
        .args(args)
        .env("RXC_CONF", conf)
        .env("RXD_DIR", d.dir())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(d: &TestDaemon, conf: &Path, args: &[&str]) -> String {
    let out = rxc(d, conf, args);
    assert!(
        out.status.success(),
        "rxc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(d: &TestDaemon, conf: &Path, args: &[&str]) -> String {
    let out = rxc(d, conf, args);
    assert!(!out.status.success(), "rxc {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A client machine in PKI mode: `client.ca` and a CA-issued client keypair.
fn pki_client(ca: &TestCa, issued: &Issued) -> tempfile::TempDir {
    let conf = tempfile::tempdir().unwrap();
    issued.write(conf.path(), "client.crt", "client.key");
    std::fs::write(conf.path().join("client.ca"), &ca.pem).unwrap();
    conf
}

async fn patch(d: &TestDaemon, config: Value) {
    let r = d
        .unix()
        .request(Method::PATCH, "/1.0", Some(&json!({ "config": config })))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
}

async fn pki_daemon(ca: &TestCa) -> TestDaemon {
    let mut d = TestDaemon::start().await;
    d.install_pki(ca, &ca.server(1)).await;
    d
}

/// Wait (bounded) until `check` holds, nudging the daemon to reload.
async fn eventually(d: &TestDaemon, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    d.sighup();
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 10 s; log:\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ca_signed_server_needs_no_fingerprint_but_a_password() {
    if !require_root("ca_signed_server_needs_no_fingerprint_but_a_password") {
        return;
    }
    let ca = TestCa::new("Test Root CA");
    let d = pki_daemon(&ca).await;
    patch(&d, json!({"core.trust_password": "pw"})).await;
    assert!(d.logs().contains("PKI mode"), "PKI mode is announced");

    // The CertificateRequest names the CA.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &d.https_address(),
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Acceptable client certificate CA names") && text.contains("Test Root CA"),
        "{text}"
    );

    let conf = pki_client(&ca, &ca.client("ana", 10));
    // No terminal and no --accept-certificate: this only works because no prompt is needed.
    let out = ok(
        &d,
        conf.path(),
        &[
            "remote",
            "add",
            "prod",
            &d.https_address(),
            "--password",
            "pw",
        ],
    );
    assert!(
        out.contains("Client certificate now trusted by server: prod"),
        "{out}"
    );
    assert!(
        !conf.path().join("servercerts").exists(),
        "no pin in CA mode"
    );
    let list = ok(&d, conf.path(), &["remote", "list", "--format", "json"]);
    let remotes: Value = serde_json::from_str(&list).unwrap();
    assert!(
        remotes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "prod" && r["trust"] == "ca"),
        "{remotes}"
    );
    let info = ok(&d, conf.path(), &["info", "prod:"]);
    assert!(
        info.contains("auth: trusted") && info.contains("server trusted by CA (client.ca)"),
        "{info}"
    );

    // Without the password a CA-signed client is not trusted (the option is off).
    let other = pki_client(&ca, &ca.client("ben", 11));
    let err = fails(
        &d,
        other.path(),
        &["remote", "add", "prod", &d.https_address()],
    );
    assert!(err.contains("--password"), "{err}");
}

#[tokio::test]
async fn trust_ca_certificates_trusts_ca_clients_without_password_or_entry() {
    if !require_root("trust_ca_certificates_trusts_ca_clients_without_password_or_entry") {
        return;
    }
    let ca = TestCa::new("Test Root CA");
    let d = pki_daemon(&ca).await;
    patch(&d, json!({"core.trust_ca_certificates": true})).await;
    let conf = pki_client(&ca, &ca.client("carla", 20));
    ok(
        &d,
        conf.path(),
        &["remote", "add", "prod", &d.https_address()],
    );
    let q: Value = serde_json::from_str(&ok(&d, conf.path(), &["query", "prod:/1.0"])).unwrap();
    assert_eq!(q["auth"], "trusted");
    assert!(
        q["config"].is_object(),
        "CA-trusted clients are admins, as in LXD"
    );
    let entries = d.unix().get("/1.0/certificates").await.unwrap();
    assert_eq!(entries, json!([]), "no trust-store entry was needed");

    // A certificate the CA did not issue cannot be added in PKI mode: it could never be trusted.
    let stray = rxd_testkit::client_identity("stray");
    let body = json!({"certificate": base64_std(&stray.cert_der)});
    let r = d
        .unix()
        .request(Method::POST, "/1.0/certificates", Some(&body))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.envelope().unwrap().error,
        "The certificate is not trusted by the CA or has been revoked"
    );
}

fn base64_std(der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(der)
}

#[tokio::test]
async fn crl_revokes_without_restart_and_bad_files_keep_the_last_good_state() {
    if !require_root("crl_revokes_without_restart_and_bad_files_keep_the_last_good_state") {
        return;
    }
    let ca = TestCa::new("Test Root CA");
    let d = pki_daemon(&ca).await;
    patch(&d, json!({"core.trust_ca_certificates": true})).await;
    let (dana_cert, erik_cert) = (ca.client("dana", 30), ca.client("erik", 31));
    let (dana, erik) = (pki_client(&ca, &dana_cert), pki_client(&ca, &erik_cert));
    ok(
        &d,
        dana.path(),
        &["remote", "add", "prod", &d.https_address()],
    );
    ok(
        &d,
        erik.path(),
        &["remote", "add", "prod", &d.https_address()],
    );
    let pid = d.pid().unwrap();

    // Revoke dana's serial: picked up without a restart.
    std::fs::write(
        d.dir().join("ca.crl"),
        ca.crl(&[30], time::Duration::days(7)),
    )
    .unwrap();
    eventually(&d, "revocation applied", || {
        !rxc(&d, dana.path(), &["config", "trust", "list", "prod:"])
            .status
            .success()
    })
    .await;
    let err = fails(&d, dana.path(), &["config", "trust", "list", "prod:"]);
    assert!(err.contains("no longer trusted"), "{err}");
    ok(&d, erik.path(), &["config", "trust", "list", "prod:"]);
    assert_eq!(d.pid(), Some(pid), "no restart");

    // A malformed CRL is refused loudly; the last good one stays in force.
    std::fs::write(
        d.dir().join("ca.crl"),
        b"-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n",
    )
    .unwrap();
    eventually(&d, "malformed CRL refused", || {
        d.logs().contains("refusing the changed TLS/PKI files")
    })
    .await;
    assert!(
        !rxc(&d, dana.path(), &["config", "trust", "list", "prod:"])
            .status
            .success(),
        "still revoked"
    );
    ok(&d, erik.path(), &["config", "trust", "list", "prod:"]);

    // An expired CRL fails closed: no CA-signed certificate is trusted.
    std::fs::write(
        d.dir().join("ca.crl"),
        ca.crl(&[30], time::Duration::days(-1)),
    )
    .unwrap();
    eventually(&d, "expired CRL applied", || {
        !rxc(&d, erik.path(), &["config", "trust", "list", "prod:"])
            .status
            .success()
    })
    .await;
    // A current CRL without dana brings both back.
    std::fs::write(d.dir().join("ca.crl"), ca.crl(&[], time::Duration::days(7))).unwrap();
    eventually(&d, "new CRL applied", || {
        rxc(&d, dana.path(), &["config", "trust", "list", "prod:"])
            .status
            .success()
    })
    .await;
    ok(&d, erik.path(), &["config", "trust", "list", "prod:"]);
}

#[tokio::test]
async fn pki_mode_distrusts_self_signed_entries_and_foreign_cas() {
    if !require_root("pki_mode_distrusts_self_signed_entries_and_foreign_cas") {
        return;
    }
    let ca = TestCa::new("Test Root CA");
    let other_ca = TestCa::new("Some Other CA");
    let mut d = TestDaemon::start().await;
    // A self-signed client trusted before the switch to PKI mode...
    let old = rxd_testkit::client_identity("before-pki");
    let body = json!({"certificate": base64_std(&old.cert_der)});
    assert_eq!(
        d.unix()
            .request(Method::POST, "/1.0/certificates", Some(&body))
            .await
            .unwrap()
            .status,
        201
    );
    assert_eq!(
        d.https(Some(&old)).get("/1.0").await.unwrap()["auth"],
        "trusted"
    );
    d.install_pki(&ca, &ca.server(1)).await;
    // ...is not trusted in PKI mode (LXD kept trusting it: CVE-2024-6156).
    let pin = rxd_tls::cert::fingerprint_bytes(&d.server_cert_der());
    let c = rxd_client::Client::https(
        "127.0.0.1",
        d.https_port(),
        rxd_tls::client::ServerTrust::Pinned(pin),
        Some(&old),
    )
    .unwrap();
    assert_eq!(c.get("/1.0").await.unwrap()["auth"], "untrusted");

    // A client whose certificate comes from another CA is not trusted, even with the option on.
    patch(&d, json!({"core.trust_ca_certificates": true})).await;
    let foreign = pki_client(&other_ca, &other_ca.client("mallory", 40));
    // Its client.ca does not vouch for this server either: the fingerprint flow applies, and
    // without a terminal it stops there, clearly.
    let err = fails(
        &d,
        foreign.path(),
        &["remote", "add", "prod", &d.https_address()],
    );
    assert!(
        err.contains("Certificate fingerprint") || err.contains("without a terminal"),
        "{err}"
    );
    let err = fails(
        &d,
        foreign.path(),
        &[
            "remote",
            "add",
            "prod",
            &d.https_address(),
            "--accept-certificate",
        ],
    );
    assert!(
        err.contains("--password"),
        "not trusted, so a password is asked for: {err}"
    );

    // A malformed client.ca is reported, not ignored.
    let broken = pki_client(&ca, &ca.client("x", 41));
    std::fs::write(broken.path().join("client.ca"), "garbage").unwrap();
    let err = fails(
        &d,
        broken.path(),
        &["remote", "add", "prod", &d.https_address()],
    );
    assert!(err.contains("client.ca"), "{err}");
}

#[tokio::test]
async fn self_signed_server_with_client_ca_falls_back_to_the_fingerprint() {
    if !require_root("self_signed_server_with_client_ca_falls_back_to_the_fingerprint") {
        return;
    }
    let ca = TestCa::new("Test Root CA");
    let d = TestDaemon::start().await; // self-signed server certificate
    patch(&d, json!({"core.trust_password": "pw"})).await;
    let conf = pki_client(&ca, &ca.client("fay", 50));
    let mut cmd = Command::new(bin("rxc"));
    cmd.args([
        "remote",
        "add",
        "prod",
        &d.https_address(),
        "--password",
        "pw",
    ])
    .env("RXC_CONF", conf.path())
    .env("RXD_DIR", d.dir());
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    p.exp_string(&format!(
        "Certificate fingerprint: {}",
        d.server_fingerprint()
    ))
    .unwrap();
    p.exp_string("ok (y/n/[fingerprint])? ").unwrap();
    p.send_line("y").unwrap();
    p.exp_string("Client certificate now trusted by server: prod")
        .unwrap();
    p.exp_eof().unwrap();
    assert!(
        conf.path().join("servercerts/prod.crt").exists(),
        "pinned, as without PKI"
    );
}

#[tokio::test]
async fn debian_lxc_with_client_ca_adds_without_fingerprint_prompt() {
    if !require_root("debian_lxc_with_client_ca_adds_without_fingerprint_prompt")
        || !require_tool(
            "lxc",
            "lxd-client",
            "debian_lxc_with_client_ca_adds_without_fingerprint_prompt",
        )
    {
        return;
    }
    let ca = TestCa::new("Test Root CA");
    let d = pki_daemon(&ca).await;
    patch(&d, json!({"core.trust_password": "pw"})).await;
    let conf = pki_client(&ca, &ca.client("gus", 60));
    // No --accept-certificate and no terminal: lxc would fail with EOF at a fingerprint prompt.
    let out = Command::new("lxc")
        .args([
            "remote",
            "add",
            "prod",
            &d.https_address(),
            "--password",
            "pw",
        ])
        .env("LXD_CONF", conf.path())
        .env("HOME", conf.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let info = Command::new("lxc")
        .args(["info", "prod:"])
        .env("LXD_CONF", conf.path())
        .env("HOME", conf.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("auth: trusted"),
        "{info:?}"
    );
}
