//! The seed's workflow through the real `rxc` against a real `rxd` over loopback HTTPS: adding a
//! remote (interactive prompts driven through a pseudo-terminal, and with flags), managing trust,
//! and every failure scenario, with the promise that a failed add leaves nothing behind.

use rxd_testkit::{bin, require_root, TestDaemon};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tempfile::TempDir;

/// One client machine: its own `$RXC_CONF`, pointing `local` at the test daemon's socket.
struct Machine {
    conf: TempDir,
    rxd_dir: PathBuf,
}

impl Machine {
    fn new(d: &TestDaemon) -> Machine {
        Machine {
            conf: tempfile::tempdir().unwrap(),
            rxd_dir: d.dir(),
        }
    }

    fn conf(&self) -> &Path {
        self.conf.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("rxc"));
        c.args(args)
            .env("RXC_CONF", self.conf())
            .env("RXD_DIR", &self.rxd_dir)
            .env("HOME", self.conf());
        c
    }

    /// Run without a terminal (stdin closed), as in a script.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        rxd_testkit::succeeded(args, self.run(args))
    }

    fn fails(&self, args: &[&str]) -> String {
        rxd_testkit::failed(args, self.run(args))
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// Nothing of remote `name` was written.
    fn assert_no_trace(&self, name: &str) {
        assert!(
            !self
                .conf()
                .join("servercerts")
                .join(format!("{name}.crt"))
                .exists(),
            "pin left behind"
        );
        let config = std::fs::read_to_string(self.conf().join("config.yml")).unwrap_or_default();
        assert!(
            !config.contains(&format!("{name}:")),
            "remote saved: {config}"
        );
    }

    fn spawn_pty(&self, args: &[&str]) -> rexpect::session::PtySession {
        rexpect::session::spawn_command(self.command(args), Some(20_000)).unwrap()
    }
}

fn exit_code(p: &rexpect::session::PtySession) -> i32 {
    match p.process.wait().unwrap() {
        rexpect::process::wait::WaitStatus::Exited(_, code) => code,
        other => panic!("{other:?}"),
    }
}

async fn with_password(password: &str) -> TestDaemon {
    let d = TestDaemon::start().await;
    let r = d
        .unix()
        .request(
            rxd_client::Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.trust_password": password}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    d
}

#[tokio::test]
async fn interactive_remote_add_confirms_fingerprint_then_password() {
    if !require_root("interactive_remote_add_confirms_fingerprint_then_password") {
        return;
    }
    let d = with_password("s3cret").await;
    let m = Machine::new(&d);
    let addr = d.https_address();

    let mut p = m.spawn_pty(&["remote", "add", "prod", &addr]);
    p.exp_string("Generating a client certificate").unwrap();
    p.exp_string(&format!(
        "Certificate fingerprint: {}",
        d.server_fingerprint()
    ))
    .unwrap();
    p.exp_string("ok (y/n/[fingerprint])? ").unwrap();
    p.send_line("y").unwrap();
    p.exp_string("Admin password (or token) for prod:").unwrap();
    p.send_line("s3cret").unwrap();
    let rest = p
        .exp_string("Client certificate now trusted by server: prod")
        .unwrap();
    assert!(
        !rest.contains("s3cret"),
        "the password is not echoed: {rest}"
    );
    p.exp_eof().unwrap();
    assert_eq!(exit_code(&p), 0);

    // The pin is the server's certificate, byte for byte; the remote works without prompts.
    let pin = std::fs::read_to_string(m.conf().join("servercerts/prod.crt")).unwrap();
    assert_eq!(rxd_tls::cert::from_pem(&pin).unwrap(), d.server_cert_der());
    let info = m.ok(&["info", "prod:"]);
    assert!(info.contains("auth: trusted"), "{info}");
    assert!(
        info.contains(&d.server_fingerprint()),
        "info shows the fingerprint to compare out of band"
    );
    let list = m.json(&["remote", "list", "--format", "json"]);
    let prod = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "prod")
        .unwrap()
        .clone();
    assert_eq!(
        (prod["addr"].clone(), prod["trust"].clone()),
        (json!(format!("https://{addr}")), json!("pinned"))
    );
    let mode = std::fs::metadata(m.conf()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o700
    );
    let key = std::fs::metadata(m.conf().join("client.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );

    // Typing the fingerprint itself also confirms.
    let m2 = Machine::new(&d);
    let mut p = m2.spawn_pty(&["remote", "add", "prod", &addr, "--password", "s3cret"]);
    p.exp_string("ok (y/n/[fingerprint])? ").unwrap();
    p.send_line(&d.server_fingerprint()).unwrap();
    p.exp_string("now trusted").unwrap();
    p.exp_eof().unwrap();
    assert_eq!(exit_code(&p), 0);
}

#[tokio::test]
async fn refused_adds_leave_nothing_behind() {
    if !require_root("refused_adds_leave_nothing_behind") {
        return;
    }
    let d = with_password("s3cret").await;
    let addr = d.https_address();
    let m = Machine::new(&d);

    // NACK at the fingerprint prompt.
    let mut p = m.spawn_pty(&["remote", "add", "prod", &addr]);
    p.exp_string("ok (y/n/[fingerprint])? ").unwrap();
    p.send_line("n").unwrap();
    p.exp_string("Server certificate NACKed by user").unwrap();
    p.exp_eof().unwrap();
    assert_eq!(exit_code(&p), 1);
    m.assert_no_trace("prod");

    // Something else at the prompt.
    let mut p = m.spawn_pty(&["remote", "add", "prod", &addr]);
    p.exp_string("ok (y/n/[fingerprint])? ").unwrap();
    p.send_line("maybe").unwrap();
    p.exp_string("Please type 'y', 'n' or the fingerprint")
        .unwrap();
    p.exp_eof().unwrap();
    m.assert_no_trace("prod");

    // No terminal and no flags: a clear refusal, not a hang.
    let err = m.fails(&["remote", "add", "prod", &addr]);
    assert!(
        err.contains("without a terminal") && err.contains("--accept-certificate"),
        "{err}"
    );
    m.assert_no_trace("prod");
    // A certificate accepted, but no terminal for the password.
    let err = m.fails(&["remote", "add", "prod", &addr, "--accept-certificate"]);
    assert!(err.contains("--password"), "{err}");
    m.assert_no_trace("prod");

    // A wrong password.
    let err = m.fails(&[
        "remote",
        "add",
        "prod",
        &addr,
        "--accept-certificate",
        "--password",
        "nope",
    ]);
    assert!(err.contains("Error: not authorized"), "{err}");
    assert!(
        err.contains("Warning"),
        "warns that the fingerprint was not confirmed: {err}"
    );
    m.assert_no_trace("prod");

    // Nothing listening: a network error, not a fingerprint prompt.
    let closed = rxd_testkit::free_port();
    let err = m.fails(&["remote", "add", "gone", &format!("127.0.0.1:{closed}")]);
    assert!(
        err.contains("cannot reach") && !err.contains("fingerprint"),
        "{err}"
    );
    m.assert_no_trace("gone");

    // Bad names and schemes.
    assert!(m
        .fails(&["remote", "add", "a:b", &addr])
        .contains("Remote names may not contain colons"));
    assert!(m
        .fails(&["remote", "add", "x", "ftp://127.0.0.1"])
        .contains("Invalid URL scheme"));
    // Finally the right password works, and a second add of the name is refused.
    m.ok(&[
        "remote",
        "add",
        "prod",
        &addr,
        "--accept-certificate",
        "--password",
        "s3cret",
    ]);
    assert!(m
        .fails(&["remote", "add", "prod", &addr])
        .contains("Remote prod exists as"));
}

#[tokio::test]
async fn changed_server_certificate_is_refused_before_anything_is_sent() {
    if !require_root("changed_server_certificate_is_refused_before_anything_is_sent") {
        return;
    }
    let mut d = with_password("s3cret").await;
    let addr = d.https_address();
    let m = Machine::new(&d);
    m.ok(&[
        "remote",
        "add",
        "prod",
        &addr,
        "--accept-certificate",
        "--password",
        "s3cret",
    ]);
    let old_fp = d.server_fingerprint();

    // The server is "reinstalled": a new keypair on the same address.
    d.stop();
    std::fs::remove_file(d.dir().join("server.crt")).unwrap();
    std::fs::remove_file(d.dir().join("server.key")).unwrap();
    d.spawn();
    d.wait_ready().await;
    let new_fp = d.server_fingerprint();
    assert_ne!(old_fp, new_fp);

    let err = m.fails(&["config", "trust", "list", "prod:"]);
    assert!(
        err.contains("certificate of remote prod") && err.contains("has changed"),
        "{err}"
    );
    assert!(err.contains(&format!("pinned:    {old_fp}")), "{err}");
    assert!(err.contains(&format!("presented: {new_fp}")), "{err}");
    assert!(
        err.contains("intercepting"),
        "names the possible interception: {err}"
    );
    assert!(
        err.contains("rxc remote remove prod && rxc remote add prod"),
        "says how to recover: {err}"
    );
    assert!(!err.contains("ok (y/n"), "never falls through to a prompt");
    // The server saw a handshake abort, never a request.
    // The server logs the abort after the client has given up, so wait for the line.
    let since_restart = d.wait_for_log("rxd ready", "TLS handshake failed").await;
    assert!(
        !since_restart.contains("/1.0/certificates"),
        "no request reached the server: {since_restart}"
    );

    // Recovery as the message says: the client certificate is still trusted, no password needed.
    m.ok(&["remote", "remove", "prod"]);
    m.ok(&["remote", "add", "prod", &addr, "--accept-certificate"]);
    assert!(m.ok(&["info", "prod:"]).contains("auth: trusted"));
}

#[tokio::test]
async fn revoked_client_is_told_so() {
    if !require_root("revoked_client_is_told_so") {
        return;
    }
    let d = with_password("s3cret").await;
    let m = Machine::new(&d);
    m.ok(&[
        "remote",
        "add",
        "prod",
        &d.https_address(),
        "--accept-certificate",
        "--password",
        "s3cret",
    ]);
    let fp = m.json(&["query", "prod:/1.0"])["auth_user_name"]
        .as_str()
        .unwrap()
        .to_owned();

    // The administrator removes it (through the local socket, by prefix).
    let admin = Machine::new(&d);
    let list = admin.ok(&["config", "trust", "list"]);
    assert!(list.contains(&fp[..12]), "{list}");
    admin.ok(&["config", "trust", "remove", &fp[..12]]);
    assert!(!admin.ok(&["config", "trust", "list"]).contains(&fp[..12]));

    let err = m.fails(&["config", "trust", "list", "prod:"]);
    assert!(err.contains("no longer trusted by remote prod"), "{err}");
    assert!(
        err.contains("rxc remote add prod TOKEN"),
        "says how to re-enrol: {err}"
    );
    let info = m.run(&["info", "prod:"]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("auth: untrusted"));
}

#[tokio::test]
async fn token_enrolment_and_management() {
    if !require_root("token_enrolment_and_management") {
        return;
    }
    let d = TestDaemon::start().await;
    let admin = Machine::new(&d);
    let out = admin.ok(&["config", "trust", "add", "--name", "laptop"]);
    assert!(
        out.starts_with("Client laptop certificate add token:"),
        "{out}"
    );
    let token = out.lines().last().unwrap().to_owned();
    let tokens = admin.json(&["config", "trust", "list-tokens", "--format", "json"]);
    assert_eq!(tokens.as_array().unwrap().len(), 1);

    // The token carries the fingerprint: no prompt, no password, no terminal needed.
    let laptop = Machine::new(&d);
    let out = laptop.ok(&["remote", "add", "prod", &token]);
    assert!(
        out.contains("Client certificate now trusted by server: prod"),
        "{out}"
    );
    assert!(laptop.ok(&["info", "prod:"]).contains("auth: trusted"));
    let certs = admin.json(&["config", "trust", "list", "--format", "json"]);
    assert_eq!(certs[0]["name"], "laptop");
    assert_eq!(
        admin.json(&["config", "trust", "list-tokens", "--format", "json"]),
        json!([])
    );

    // Single use.
    let other = Machine::new(&d);
    let err = other.fails(&["remote", "add", "prod", &token]);
    assert!(
        err.contains("No matching certificate add operation found"),
        "{err}"
    );
    other.assert_no_trace("prod");

    // A token naming another server's fingerprint: refused before the secret is sent.
    let mut forged: rxd_api::certificate::CertificateAddToken =
        rxd_api::certificate::CertificateAddToken::decode(&token).unwrap();
    forged.fingerprint = "ab".repeat(32);
    let err = other.fails(&["remote", "add", "prod", &forged.encode()]);
    assert!(err.contains("Certificate fingerprint mismatch"), "{err}");
    other.assert_no_trace("prod");

    // Revoking a token by name.
    let out = admin.ok(&["config", "trust", "add", "--name", "phone"]);
    let phone_token = out.lines().last().unwrap().to_owned();
    admin.ok(&["config", "trust", "revoke-token", "phone"]);
    assert!(other
        .fails(&["remote", "add", "prod", &phone_token])
        .contains("No matching certificate add operation found"));

    // Adding a certificate file.
    let file_id = rxd_testkit::client_identity("from-file");
    let f = admin.conf().join("other.crt");
    std::fs::write(&f, &file_id.cert_pem).unwrap();
    admin.ok(&[
        "config",
        "trust",
        "add",
        f.to_str().unwrap(),
        "--name",
        "imported",
    ]);
    let certs = admin.json(&["config", "trust", "list", "--format", "json"]);
    assert!(certs
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "imported" && c["fingerprint"] == file_id.fingerprint));
    let csv = admin.ok(&["config", "trust", "list", "--format", "csv"]);
    assert!(
        csv.contains("imported") && csv.contains(&file_id.fingerprint[..12]),
        "{csv}"
    );
}

#[tokio::test]
async fn remotes_and_server_config_commands() {
    if !require_root("remotes_and_server_config_commands") {
        return;
    }
    let d = TestDaemon::start().await;
    let m = Machine::new(&d);
    assert_eq!(m.ok(&["remote", "get-default"]).trim(), "local");
    let out = m.ok(&["config", "trust", "add", "--name", "self"]);
    let token = out.lines().last().unwrap().to_owned();
    m.ok(&["remote", "add", "prod", &token]);
    m.ok(&["remote", "switch", "prod"]);
    assert_eq!(m.ok(&["remote", "get-default"]).trim(), "prod");
    m.ok(&["remote", "rename", "prod", "live"]);
    assert_eq!(m.ok(&["remote", "get-default"]).trim(), "live");
    assert!(m.conf().join("servercerts/live.crt").exists());
    // Server config through the remote (an unrestricted certificate is an admin).
    m.ok(&["config", "set", "core.remote_token_expiry", "2H"]);
    assert_eq!(
        m.ok(&["config", "get", "core.remote_token_expiry"]).trim(),
        "2H"
    );
    m.ok(&["config", "set", "local:", "core.trust_password", "pw"]);
    assert_eq!(
        m.ok(&["config", "get", "live:", "core.trust_password"])
            .trim(),
        "true"
    );
    assert!(m
        .ok(&["config", "show"])
        .contains("core.trust_password: true"));
    m.ok(&["config", "unset", "core.trust_password"]);
    assert_eq!(m.ok(&["config", "get", "core.trust_password"]).trim(), "");
    let err = m.fails(&["config", "set", "core.nope", "1"]);
    assert!(err.contains("unknown configuration key"), "{err}");
    // Keys that only go together are set, and unset, in one request.
    let key = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    m.ok(&[
        "config",
        "set",
        "candid.api.url",
        "https://candid.example",
        "candid.api.key",
        key,
    ]);
    let err = m.fails(&["config", "set", "candid.agent.username", "bot"]);
    assert!(err.contains("go together"), "{err}");
    m.ok(&[
        "config",
        "set",
        "live:",
        "candid.agent.username",
        "bot",
        "candid.agent.private_key",
        key,
    ]);
    assert_eq!(
        m.ok(&["config", "get", "candid.agent.username"]).trim(),
        "bot"
    );
    let err = m.fails(&["config", "unset", "candid.agent.username"]);
    assert!(err.contains("go together"), "{err}");
    m.ok(&[
        "config",
        "unset",
        "candid.agent.private_key",
        "candid.agent.username",
    ]);
    assert_eq!(m.ok(&["config", "get", "candid.agent.username"]).trim(), "");
    // Later lxc's KEY=VALUE form, several at once; a value may hold '=' and ':'.
    m.ok(&[
        "config",
        "set",
        "candid.agent.username=bot=2",
        &format!("candid.agent.private_key={key}"),
        "core.remote_token_expiry=3H",
    ]);
    assert_eq!(
        m.ok(&["config", "get", "candid.agent.username"]).trim(),
        "bot=2"
    );
    assert_eq!(
        m.ok(&["config", "get", "core.remote_token_expiry"]).trim(),
        "3H"
    );
    let err = m.fails(&[
        "config",
        "set",
        "core.remote_token_expiry",
        "1H",
        "candid.api.key",
    ]);
    assert!(err.contains("without a value"), "{err}");
    m.ok(&[
        "config",
        "unset",
        "candid.agent.private_key",
        "candid.agent.username",
        "candid.api.url",
        "candid.api.key",
    ]);
    // Raw queries.
    let v = m.json(&["query", "live:/1.0/certificates"]);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert!(m.fails(&["query", "/1.0/nope"]).contains("not found"));
    let raw = m.ok(&["query", "--raw", "local:/"]);
    assert!(raw.contains("\"metadata\":[\"/1.0\"]"), "{raw}");
    m.ok(&["remote", "remove", "live"]);
    assert_eq!(m.ok(&["remote", "get-default"]).trim(), "local");
    assert!(!m.conf().join("servercerts/live.crt").exists());
    assert!(m.fails(&["remote", "remove", "local"]).contains("static"));
}
