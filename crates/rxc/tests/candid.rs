//! Candid logins through the real `rxc` against the real `rxd`, with an independent
//! authentication server: `tests/candid/discharger.py`, built on PyPI's macaroonbakery. Each
//! interaction a person or a script would use (a form on the terminal, an agent file, a
//! browser window), what a remote keeps (`jars/<remote>`), a login that expires between
//! commands, a user without a role, and a refused login that leaves nothing behind.

use rxd_bakery::b64;
use rxd_bakery::codec::KeyPair;
use rxd_testkit::candid::{require_python_bakery, Discharger};
use rxd_testkit::{bin, require_root, require_tool, TestDaemon};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const PW: &str = "hunter2";

/// One client machine: its own `$RXC_CONF`, `local` pointing at the test daemon's socket.
struct Machine {
    conf: TempDir,
    rxd_dir: PathBuf,
    /// Put first in `PATH` (for a fake `xdg-open`).
    path_prefix: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Machine {
    fn new(d: &TestDaemon) -> Machine {
        Machine {
            conf: tempfile::tempdir().unwrap(),
            rxd_dir: d.dir(),
            path_prefix: None,
            env: vec![],
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
        // No real browser may open during a test, whatever the machine has.
        let system = std::env::var("PATH").unwrap_or_default();
        let path = match &self.path_prefix {
            Some(p) => format!("{}:{system}", p.display()),
            None => system,
        };
        c.env("PATH", path)
            .env_remove("DISPLAY")
            .env_remove("BROWSER");
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Run without a terminal (stdin closed), killed if it takes over a minute.
    fn run(&self, args: &[&str]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "rxc {args:?} did not finish in 60 s: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        rxd_testkit::succeeded(args, self.run(args))
    }

    fn fails(&self, args: &[&str]) -> String {
        rxd_testkit::failed(args, self.run(args))
    }

    fn spawn_pty(&self, args: &[&str]) -> rexpect::session::PtySession {
        rexpect::session::spawn_command(self.command(args), Some(30_000)).unwrap()
    }

    fn jar(&self, remote: &str) -> PathBuf {
        self.conf().join("jars").join(remote)
    }

    fn jar_cookies(&self, remote: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.jar(remote)).unwrap();
        serde_json::from_str::<Vec<Value>>(&text).unwrap()
    }

    fn login_cookie(&self, remote: &str) -> String {
        self.jar_cookies(remote)
            .iter()
            .find(|c| c["Name"] == "macaroon-auth")
            .and_then(|c| c["Value"].as_str())
            .unwrap_or_else(|| panic!("no macaroon-auth in the jar of {remote}"))
            .to_owned()
    }

    /// Nothing of remote `name` was written: no pin, no config entry, no jar.
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
        assert!(!self.jar(name).exists(), "jar left behind");
    }

    /// An agent file for `user` at the discharger, with a fresh key (returned, public part
    /// base64, for the discharger's user table).
    fn agent_file(&self, dis: &Discharger, user: &str) -> (PathBuf, String) {
        let key = KeyPair::generate();
        let public = b64::std(&key.public());
        let tag: String = public
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        let path = self.conf().join(format!("agent-{user}-{tag}.json"));
        std::fs::write(
            &path,
            json!({"key": {"public": public, "private": b64::std(&key.secret_bytes())},
                   "agents": [{"url": dis.url, "username": user}]})
            .to_string(),
        )
        .unwrap();
        (path, public)
    }
}

fn exit_code(p: &rexpect::session::PtySession) -> i32 {
    match p.process.wait().unwrap() {
        rexpect::process::wait::WaitStatus::Exited(_, code) => code,
        other => panic!("{other:?}"),
    }
}

fn ready(test: &str) -> bool {
    require_root(test) && require_python_bakery(test)
}

/// A daemon that sends logins to `dis` (configured as an administrator would, with `rxc` over
/// the unix socket), and a client machine for it.
async fn candid_setup(dis: &Discharger, extra: &[(&str, &str)]) -> (TestDaemon, Machine) {
    let d = TestDaemon::start().await;
    let m = Machine::new(&d);
    m.ok(&["config", "set", "candid.api.key", &dis.public_key]);
    m.ok(&["config", "set", "candid.api.url", &dis.url]);
    for (k, v) in extra {
        m.ok(&["config", "set", k, v]);
    }
    let info: Value = serde_json::from_str(&m.ok(&["query", "/1.0"])).unwrap();
    assert_eq!(
        info["auth_methods"],
        json!(["tls", "candid"]),
        "the daemon offers Candid: {info}"
    );
    (d, m)
}

fn grant(m: &Machine, user: &str, role: &str) {
    m.ok(&[
        "auth",
        "grant",
        user,
        role,
        "--type",
        "candid-user",
        "--project",
        "default",
    ]);
}

#[tokio::test]
async fn form_login_on_a_terminal_then_commands_use_the_jar() {
    let test = "form_login_on_a_terminal_then_commands_use_the_jar";
    if !ready(test) {
        return;
    }
    let dis = Discharger::start(&json!({"alice": {"password": PW}}), None);
    let (d, m) = candid_setup(&dis, &[]).await;
    grant(&m, "alice", "operator");
    let addr = d.https_address();

    // No --auth-type: the server offers Candid, so (as with LXD 5.0's client) that is used.
    let mut p = m.spawn_pty(&["remote", "add", "c", &addr]);
    p.exp_string(&format!(
        "Certificate fingerprint: {}",
        d.server_fingerprint()
    ))
    .unwrap();
    p.exp_string("ok (y/n/[fingerprint])? ").unwrap();
    p.send_line("y").unwrap();
    p.exp_string("username").unwrap();
    p.send_line("alice").unwrap();
    p.exp_string("password").unwrap();
    p.send_line(PW).unwrap();
    let rest = p
        .exp_string("Logged in to c as alice (Candid)")
        .unwrap_or_else(|e| panic!("{e}\n{}", dis.log()));
    assert!(!rest.contains(PW), "the password is not echoed: {rest}");
    p.exp_eof().unwrap();
    assert_eq!(exit_code(&p), 0);

    let config = std::fs::read_to_string(m.conf().join("config.yml")).unwrap();
    assert!(config.contains("auth_type: candid"), "{config}");
    let jar = std::fs::metadata(m.jar("c")).expect("the jar is written");
    assert_eq!(jar.permissions().mode() & 0o777, 0o600);
    let cookies = m.jar_cookies("c");
    let cookie = cookies
        .iter()
        .find(|c| c["Name"] == "macaroon-auth")
        .unwrap_or_else(|| panic!("{cookies:?}"));
    assert_eq!(cookie["Domain"], "127.0.0.1");
    assert_eq!(cookie["Path"], "/");
    assert!(cookie["Expires"].as_str().is_some_and(|e| !e.is_empty()));

    // Later commands log in with the cookie: no prompt, no discharger.
    let before = dis.log().matches("POST /discharge").count();
    let info = m.ok(&["info", "c:"]);
    for line in [
        "auth: trusted",
        "auth_user_name: alice",
        "auth_user_method: candid",
        "# authenticated as alice (candid)",
    ] {
        assert!(info.contains(line), "{line:?} in {info}");
    }
    let list: Value = serde_json::from_str(&m.ok(&["list", "c:", "--format", "json"])).unwrap();
    assert_eq!(list, json!([]));
    m.ok(&["query", "c:/1.0/instances"]);
    assert_eq!(
        dis.log().matches("POST /discharge").count(),
        before,
        "the jar's cookie was enough"
    );

    // Removing the remote removes its jar.
    m.ok(&["remote", "remove", "c"]);
    m.assert_no_trace("c");
}

#[tokio::test]
async fn agent_login_without_a_terminal() {
    let test = "agent_login_without_a_terminal";
    if !ready(test) {
        return;
    }
    let dis = Discharger::start(&json!({}), None);
    let (d, m) = candid_setup(&dis, &[]).await;
    let (agent, public) = m.agent_file(&dis, "bot");
    dis.set_users(&json!({"bot": {"agent_public_key": public}}));
    grant(&m, "bot", "auditor");
    let addr = d.https_address();
    let agent_arg = agent.to_str().unwrap();

    let out = m.ok(&[
        "remote",
        "add",
        "b",
        &addr,
        "--auth-type=candid",
        "--candid-agent",
        agent_arg,
        "--accept-certificate",
    ]);
    assert!(out.contains("Logged in to b as bot"), "{out}");
    assert!(
        !m.conf().join("client.crt").exists(),
        "a Candid remote needs no client certificate"
    );
    let info = m.ok(&["info", "b:"]);
    assert!(
        info.contains("auth_user_name: bot") && info.contains("auth_user_method: candid"),
        "{info}"
    );
    m.ok(&["list", "b:"]);
    let config = std::fs::read_to_string(m.conf().join("config.yml")).unwrap();
    assert!(config.contains("candid_agent:"), "{config}");

    // A key the authentication server does not know: a clear error, nothing saved.
    let (stranger, _) = m.agent_file(&dis, "bot");
    let err = m.fails(&[
        "remote",
        "add",
        "b2",
        &addr,
        "--candid-agent",
        stranger.to_str().unwrap(),
        "--accept-certificate",
    ]);
    assert!(
        err.contains("no agent bot with that public key") && err.contains("not added"),
        "{err}"
    );
    m.assert_no_trace("b2");
}

#[tokio::test]
async fn browser_window_login_with_a_fake_browser() {
    let test = "browser_window_login_with_a_fake_browser";
    if !ready(test) || !require_tool("curl", "curl", test) {
        return;
    }
    let dis = Discharger::start(&json!({"carol": {"password": PW}}), None);
    let (d, mut m) = candid_setup(&dis, &[]).await;
    grant(&m, "carol", "user");
    // The "browser" logs in by posting the page's form, as a person would.
    let bin_dir = m.conf().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let opener = bin_dir.join("xdg-open");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\nexec curl -s -o /dev/null -d username=carol -d password={PW} \"$1\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
    m.path_prefix = Some(bin_dir);

    let out = m.run(&[
        "remote",
        "add",
        "w",
        &d.https_address(),
        "--auth-type=candid",
        "--accept-certificate",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}\n{}", dis.log());
    assert!(
        err.contains(&format!(
            "Opening an authorization web page in your browser. If it does not open, please open this URL: {}/login?did=",
            dis.url
        )),
        "{err}"
    );
    let info = m.ok(&["info", "w:"]);
    assert!(info.contains("auth_user_name: carol"), "{info}");
}

#[tokio::test]
async fn an_expired_login_is_renewed_transparently() {
    let test = "an_expired_login_is_renewed_transparently";
    if !ready(test) {
        return;
    }
    let dis = Discharger::start(&json!({}), None);
    let (d, m) = candid_setup(&dis, &[("candid.expiry", "2")]).await;
    let (agent, public) = m.agent_file(&dis, "bot");
    dis.set_users(&json!({"bot": {"agent_public_key": public}}));
    grant(&m, "bot", "auditor");
    m.ok(&[
        "remote",
        "add",
        "e",
        &d.https_address(),
        "--candid-agent",
        agent.to_str().unwrap(),
        "--accept-certificate",
    ]);
    let first = m.login_cookie("e");

    // The cookie has expired: the next command logs in again by itself.
    std::thread::sleep(Duration::from_secs(3));
    m.ok(&["list", "e:"]);
    let second = m.login_cookie("e");
    assert_ne!(first, second, "a new login was stored");

    // Even when the client still believes in the cookie (its clock behind, say), the server's
    // refusal leads to a new login, and the command succeeds.
    std::thread::sleep(Duration::from_secs(3));
    let mut cookies = m.jar_cookies("e");
    for c in &mut cookies {
        c["Expires"] = json!("2999-01-01T00:00:00Z");
    }
    std::fs::write(m.jar("e"), serde_json::to_vec(&cookies).unwrap()).unwrap();
    let info = m.ok(&["info", "e:"]);
    assert!(info.contains("auth_user_name: bot"), "{info}");
    assert_ne!(
        m.login_cookie("e"),
        second,
        "the refused cookie was replaced"
    );
    assert_eq!(
        std::fs::metadata(m.jar("e")).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test]
async fn a_user_without_a_role_is_refused() {
    let test = "a_user_without_a_role_is_refused";
    if !ready(test) {
        return;
    }
    let dis = Discharger::start(&json!({}), None);
    let (d, m) = candid_setup(&dis, &[]).await;
    let (agent, public) = m.agent_file(&dis, "dave");
    dis.set_users(&json!({"dave": {"agent_public_key": public}}));
    m.ok(&[
        "remote",
        "add",
        "n",
        &d.https_address(),
        "--candid-agent",
        agent.to_str().unwrap(),
        "--accept-certificate",
    ]);
    let info = m.ok(&["info", "n:"]);
    assert!(info.contains("auth_user_name: dave"), "{info}");
    let err = m.fails(&["list", "n:"]);
    assert!(
        err.contains("not authorized") && err.contains("Candid user dave has no role"),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_password_saves_nothing() {
    let test = "a_wrong_password_saves_nothing";
    if !ready(test) {
        return;
    }
    let dis = Discharger::start(&json!({"alice": {"password": PW}}), None);
    let (d, m) = candid_setup(&dis, &[]).await;
    grant(&m, "alice", "operator");

    let mut p = m.spawn_pty(&[
        "remote",
        "add",
        "c",
        &d.https_address(),
        "--auth-type=candid",
    ]);
    p.exp_string("ok (y/n/[fingerprint])? ").unwrap();
    p.send_line("y").unwrap();
    p.exp_string("username").unwrap();
    p.send_line("alice").unwrap();
    p.exp_string("password").unwrap();
    p.send_line("wrong").unwrap();
    p.exp_string("invalid username or password").unwrap();
    p.exp_string("not added").unwrap();
    p.exp_eof().unwrap();
    assert_eq!(exit_code(&p), 1);
    m.assert_no_trace("c");

    // --auth-type=candid against a server without Candid.
    let plain = TestDaemon::start().await;
    let m2 = Machine::new(&plain);
    let err = m2.fails(&[
        "remote",
        "add",
        "p",
        &plain.https_address(),
        "--auth-type=candid",
        "--accept-certificate",
    ]);
    assert!(
        err.contains("Authentication type 'candid' not supported by server"),
        "{err}"
    );
    m2.assert_no_trace("p");
}

#[tokio::test]
async fn an_https_authentication_server_must_be_trusted() {
    let test = "an_https_authentication_server_must_be_trusted";
    if !ready(test) {
        return;
    }
    let ca = rxd_testkit::ca::TestCa::new("candid-test-ca");
    let cert = ca.server(7);
    let dis = Discharger::start(&json!({}), Some((&cert.cert_pem, &cert.key_pem)));
    assert!(dis.url.starts_with("https://"), "{}", dis.url);
    let (d, mut m) = candid_setup(&dis, &[]).await;
    let (agent, public) = m.agent_file(&dis, "bot");
    dis.set_users(&json!({"bot": {"agent_public_key": public}}));
    let add = [
        "remote",
        "add",
        "s",
        &d.https_address(),
        "--candid-agent",
        agent.to_str().unwrap(),
        "--accept-certificate",
    ];

    // Signed by a CA the system does not trust: refused, nothing saved.
    let other = m.conf().join("other-roots.pem");
    std::fs::write(&other, rxd_testkit::ca::TestCa::new("another-ca").pem).unwrap();
    m.env = vec![("SSL_CERT_FILE".into(), other.display().to_string())];
    let err = m.fails(&add);
    assert!(
        err.contains("not added") && err.contains("TLS") && err.contains(&dis.url),
        "{err}"
    );
    m.assert_no_trace("s");
    assert!(!dis.log().contains("POST /discharge"), "{}", dis.log());

    // Trusted through SSL_CERT_FILE, as a system CA would be.
    let roots = m.conf().join("roots.pem");
    std::fs::write(&roots, &ca.pem).unwrap();
    m.env = vec![("SSL_CERT_FILE".into(), roots.display().to_string())];
    let out = m.ok(&add);
    assert!(out.contains("Logged in to s as bot"), "{out}");
}

/// Makes the jar's login cookie worthless (an empty macaroon list) without the client noticing:
/// the server refuses it, and the next request must log in again.
fn spoil_jar(m: &Machine, remote: &str) {
    let mut cookies = m.jar_cookies(remote);
    for c in &mut cookies {
        c["Value"] = json!("W10=");
    }
    std::fs::write(m.jar(remote), serde_json::to_vec(&cookies).unwrap()).unwrap();
}

#[tokio::test]
async fn exec_and_files_on_a_candid_remote() {
    let test = "exec_and_files_on_a_candid_remote";
    if !ready(test) || !require_tool("busybox", "busybox-static", test) {
        return;
    }
    let dis = Discharger::start(&json!({}), None);
    let (d, m) = candid_setup(&dis, &[]).await;
    let image = m.conf().join("bb.tar.gz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-busybox-image.sh");
    let built = Command::new("bash")
        .arg(script)
        .arg(&image)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(built.success());
    m.ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    m.ok(&["launch", "bb", "c1"]);

    let (agent, public) = m.agent_file(&dis, "ops");
    dis.set_users(&json!({"ops": {"agent_public_key": public}}));
    grant(&m, "ops", "operator");
    m.ok(&[
        "remote",
        "add",
        "x",
        &d.https_address(),
        "--candid-agent",
        agent.to_str().unwrap(),
        "--accept-certificate",
    ]);

    // exec: the operation is created with the login; its websockets carry the cookie too.
    let out = m.ok(&["exec", "x:c1", "--", "echo", "hello from c1"]);
    assert_eq!(out.trim(), "hello from c1");

    // An upload cannot be replayed after a challenge, so the login is renewed before it starts.
    spoil_jar(&m, "x");
    let local = m.conf().join("note.txt");
    std::fs::write(&local, "pushed by a Candid user\n").unwrap();
    m.ok(&["file", "push", local.to_str().unwrap(), "x:c1/tmp/note.txt"]);
    assert_ne!(m.login_cookie("x"), "W10=", "a new login was stored");
    let pulled = m.ok(&["file", "pull", "x:c1/tmp/note.txt", "-"]);
    assert_eq!(pulled, "pushed by a Candid user\n");

    // A spoiled cookie on exec is renewed as well.
    spoil_jar(&m, "x");
    let out = m.ok(&["exec", "x:c1", "--", "cat", "/tmp/note.txt"]);
    assert_eq!(out, "pushed by a Candid user\n");
    m.ok(&["delete", "--force", "c1"]);
}
