//! Candid (macaroon) logins against the real daemon over real TLS, with an independent
//! implementation on the other side: a discharger and a client built on PyPI's macaroonbakery
//! and pymacaroons (`tests/candid/`), and curl for the raw exchanges.

use base64::Engine;
use rxd_client::{Client, Method};
use rxd_testkit::candid::{py_client, require_python_bakery, Discharger};
use rxd_testkit::{client_identity, require_tool, Options, TestDaemon};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const PW: &str = "correct horse";

fn users() -> Value {
    json!({
        "alice@example.com": {"password": PW, "groups": ["devs"]},
        "bob@example.com": {"password": PW, "groups": []},
        "eve@evil.com": {"password": PW, "groups": []},
    })
}

fn ready(test: &str) -> bool {
    require_python_bakery(test) && require_tool("curl", "curl", test)
}

async fn ok(c: &Client, method: Method, path: &str, body: Value) -> Value {
    let r = c.request(method, path, Some(&body)).await.unwrap();
    assert!(r.status < 300, "{path}: {} {:?}", r.status, r.envelope());
    r.metadata().unwrap_or(Value::Null)
}

async fn try_config(d: &TestDaemon, config: Value) -> (u16, Value) {
    let r = d
        .unix()
        .request(Method::PATCH, "/1.0", Some(&json!({ "config": config })))
        .await
        .unwrap();
    (
        r.status,
        r.envelope().map(|e| json!(e.error)).unwrap_or(Value::Null),
    )
}

async fn configure(d: &TestDaemon, config: Value) {
    let (status, err) = try_config(d, config).await;
    assert_eq!(status, 200, "{err}");
}

async fn candid_daemon(dis: &Discharger, extra: Value) -> TestDaemon {
    let d = TestDaemon::start().await;
    let mut cfg = json!({"candid.api.key": dis.public_key});
    configure(&d, cfg.clone()).await;
    cfg = json!({"candid.api.url": dis.url});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    configure(&d, cfg).await;
    d
}

async fn grant_user(d: &TestDaemon, user: &str, role: &str) -> i64 {
    let md = ok(
        &d.unix(),
        Method::POST,
        "/1.0/auth/grants",
        json!({"identity_type": "candid-user", "identity": user, "role": role, "scope": "project", "project": "default"}),
    )
    .await;
    md["id"].as_i64().unwrap()
}

fn url(d: &TestDaemon, path: &str) -> String {
    format!("https://{}{path}", d.https_address())
}

fn ca(d: &TestDaemon) -> String {
    d.dir().join("server.crt").display().to_string()
}

/// Logs `user` in through the discharger's form interaction; returns the reply and the cookie.
fn login(d: &TestDaemon, user: &str, password: &str) -> (Value, String) {
    let r = py_client(&[
        "--url",
        &url(d, "/1.0"),
        "--ca",
        &ca(d),
        "--user",
        user,
        "--password",
        password,
    ]);
    let cookie = r["cookie"].as_str().unwrap_or_default().to_owned();
    (r, cookie)
}

/// One request presenting `cookie` and never discharging: `(status, body)`.
fn with_cookie(d: &TestDaemon, path: &str, cookie: &str, dir: &Path) -> (u64, Value) {
    let file = dir.join("cookie");
    std::fs::write(&file, cookie).unwrap();
    let r = py_client(&[
        "--url",
        &url(d, path),
        "--ca",
        &ca(d),
        "--user",
        "nobody",
        "--password",
        "x",
        "--cookie-in",
        file.to_str().unwrap(),
        "--no-interact",
    ]);
    (r["status"].as_u64().unwrap_or(0), r["body"].clone())
}

/// A raw request with curl: `(status, headers, body)`.
fn curl(d: &TestDaemon, path: &str, args: &[&str]) -> (u16, String, Value) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20", "--cacert", &ca(d)])
        .args(args)
        .arg(url(d, path))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn decode_slice(cookie: &str) -> Vec<Value> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(cookie)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(cookie))
        .expect("cookie base64");
    serde_json::from_slice(&raw).expect("cookie JSON")
}

fn encode_slice(slice: &[Value]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Value::from(slice.to_vec()).to_string())
}

fn challenged(status: u64, body: &Value) -> bool {
    status == 401 && body["Code"] == "macaroon discharge required"
}

#[tokio::test]
async fn login_challenge_grants_and_forgeries() {
    if !ready("login_challenge_grants_and_forgeries") {
        return;
    }
    let dis = Discharger::start(&users(), None);
    let d = candid_daemon(&dis, json!({})).await;
    let tmp = tempfile::tempdir().unwrap();
    let bakery = ["-H", "Bakery-Protocol-Version: 3"];

    let info = ok(&d.unix(), Method::GET, "/1.0", json!({})).await;
    assert_eq!(info["auth_methods"], json!(["tls", "candid"]));

    // The challenge, exactly as bakery clients read it.
    let (status, head, body) = curl(&d, "/1.0/instances", &bakery);
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("www-authenticate: macaroon"), "{head}");
    assert_eq!(body["Code"], "macaroon discharge required");
    assert_eq!(body["Info"]["MacaroonPath"], "../");
    assert_eq!(body["Info"]["CookieNameSuffix"], "auth");
    let m = &body["Info"]["Macaroon"];
    assert_eq!(m["v"], 3);
    assert_eq!(m["ns"], "http:http std:");
    assert!(m["cdata"]["AwA"].is_string(), "{m}");
    assert_eq!(m["m"]["l"], dis.url.as_str());
    assert_eq!(m["m"]["c"][0]["l"], dis.url.as_str());
    assert!(m["m"]["c"][1]["i"]
        .as_str()
        .unwrap()
        .starts_with("time-before "));
    // `GET /1.0` stays open to anyone unless the client insists on authentication; a client
    // certificate is ignored on the macaroon path, even a trusted one.
    let (status, _, body) = curl(&d, "/1.0", &bakery);
    assert_eq!(
        (status, body["metadata"]["auth"].clone()),
        (200, json!("untrusted"))
    );
    let (status, _, _) = curl(
        &d,
        "/1.0",
        &[bakery[0], bakery[1], "-H", "X-LXD-authenticated: true"],
    );
    assert_eq!(status, 401);
    let admin = client_identity("admin");
    ok(
        &d.unix(),
        Method::POST,
        "/1.0/certificates",
        json!({"certificate": base64::engine::general_purpose::STANDARD.encode(&admin.cert_der)}),
    )
    .await;
    std::fs::write(tmp.path().join("c.crt"), &admin.cert_pem).unwrap();
    std::fs::write(tmp.path().join("c.key"), &admin.key_pem).unwrap();
    let cert = tmp.path().join("c.crt").display().to_string();
    let key = tmp.path().join("c.key").display().to_string();
    let (status, _, _) = curl(&d, "/1.0/instances", &["--cert", &cert, "--key", &key]);
    assert_eq!(
        status, 200,
        "the certificate path is unchanged without the bakery header"
    );
    let (status, _, _) = curl(
        &d,
        "/1.0/instances",
        &[bakery[0], bakery[1], "--cert", &cert, "--key", &key],
    );
    assert_eq!(status, 401);

    // Alice logs in through the form interaction of an independent client and discharger.
    let alice_grant = grant_user(&d, "alice@example.com", "operator").await;
    let (r, alice) = login(&d, "alice@example.com", PW);
    assert_eq!(r["status"], 200, "{r}\n{}", dis.log());
    let md = &r["body"]["metadata"];
    assert_eq!(md["auth"], "trusted");
    assert_eq!(md["auth_user_name"], "alice@example.com");
    assert_eq!(md["auth_user_method"], "candid");
    let (status, body) = with_cookie(&d, "/1.0/instances", &alice, tmp.path());
    assert_eq!(status, 200, "{body}");

    // Bob is authenticated but holds no grant.
    let (r, bob) = login(&d, "bob@example.com", PW);
    assert_eq!(r["body"]["metadata"]["auth"], "trusted", "{r}");
    let (status, body) = with_cookie(&d, "/1.0/instances", &bob, tmp.path());
    assert_eq!(
        (status, body["error"].clone()),
        (403, json!("not authorized"))
    );

    // A wrong password gets no cookie and no trust.
    let (r, none) = login(&d, "alice@example.com", "wrong");
    assert!(none.is_empty() && r["status"] != 200, "{r}");

    // Forgeries are ignored (challenged again), never an error and never trusted.
    let slice = decode_slice(&alice);
    assert_eq!(slice.len(), 2);
    let mut renamed = slice.clone();
    let c = renamed[1]["c"].as_array_mut().unwrap();
    let declared = c
        .iter_mut()
        .find(|c| c["i"].as_str().is_some_and(|i| i.starts_with("declared")))
        .unwrap();
    declared["i"] = json!("declared username bob@example.com");
    let mut primary_only = slice.clone();
    primary_only.truncate(1);
    let mut attenuated = slice.clone();
    attenuated[0]["c"]
        .as_array_mut()
        .unwrap()
        .push(json!({"i": "declared username root"}));
    let bob_slice = decode_slice(&bob);
    let swapped = vec![slice[0].clone(), bob_slice[1].clone()];
    // Another service using the same Candid: its discharge is for its own caveat.
    let other = candid_daemon(&dis, json!({})).await;
    let (_, elsewhere) = login(&other, "alice@example.com", PW);
    let foreign = vec![slice[0].clone(), decode_slice(&elsewhere)[1].clone()];
    let (status, _) = with_cookie(&other, "/1.0", &elsewhere, tmp.path());
    assert_eq!(status, 200);
    for (what, forged) in [
        ("discharge renamed", encode_slice(&renamed)),
        ("discharge missing", encode_slice(&primary_only)),
        ("caveat appended to the primary", encode_slice(&attenuated)),
        ("another login's discharge", encode_slice(&swapped)),
        ("another service's discharge", encode_slice(&foreign)),
        ("another service's whole login", elsewhere.clone()),
        ("garbage", "bm90IGEgbWFjYXJvb24=".to_owned()),
    ] {
        let (status, body) = with_cookie(&d, "/1.0/instances", &forged, tmp.path());
        assert!(challenged(status, &body), "{what}: {status} {body}");
    }

    // A revoked grant applies to the next request with the same cookie.
    let r = d
        .unix()
        .request(
            Method::DELETE,
            &format!("/1.0/auth/grants/{alice_grant}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let (status, _) = with_cookie(&d, "/1.0/instances", &alice, tmp.path());
    assert_eq!(status, 403);
    let (status, body) = with_cookie(&d, "/1.0", &alice, tmp.path());
    assert_eq!(
        (status, body["metadata"]["auth"].clone()),
        (200, json!("trusted"))
    );
}

/// What macaroonbakery's own v3 identifier decoder (the one Go's bakery, and so Candid, shares)
/// reads in a challenge macaroon's identifier (`tests/candid/decode_id.py`).
fn python_decodes_id(macaroon: &Value) -> Value {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg(rxd_testkit::candid::script("decode_id.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("decode_id.py");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(macaroon.to_string().as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).expect("decode_id.py output")
}

/// Issue 17: Candid reads every `0x03` identifier it is shown (`lxc` shows it the daemon's
/// cookie when both share a host name), so ours are go-macaroon-bakery's v3 ids: Python's
/// decoder finds a 16-byte nonce, the login operation, and a storage id that follows the root
/// key (the same while it mints, another once a `candid.*` change forgot it).
#[tokio::test]
async fn login_macaroon_ids_are_readable_by_go_and_python_bakeries() {
    if !ready("login_macaroon_ids_are_readable_by_go_and_python_bakeries") {
        return;
    }
    let dis = Discharger::start(&users(), None);
    let d = candid_daemon(&dis, json!({})).await;
    let bakery = ["-H", "Bakery-Protocol-Version: 3"];
    let challenge_id = || {
        let (status, head, body) = curl(&d, "/1.0/instances", &bakery);
        assert_eq!(status, 401, "{head}");
        python_decodes_id(&body["Info"]["Macaroon"])
    };
    let first = challenge_id();
    assert_eq!(first["version"], 3, "{first}");
    assert_eq!(first["ops"], json!([["login", "login"]]), "{first}");
    assert_eq!(first["nonce_hex"].as_str().unwrap().len(), 32, "{first}");
    assert_eq!(
        first["storage_id_hex"].as_str().unwrap().len(),
        32,
        "{first}"
    );
    let second = challenge_id();
    assert_eq!(second["storage_id_hex"], first["storage_id_hex"]);
    assert_ne!(second["nonce_hex"], first["nonce_hex"]);
    configure(&d, json!({"candid.expiry": "600"})).await;
    let third = challenge_id();
    assert_eq!(third["ops"], json!([["login", "login"]]), "{third}");
    assert_ne!(third["storage_id_hex"], first["storage_id_hex"]);
}

#[tokio::test]
async fn domains_expiry_and_config_changes() {
    if !ready("domains_expiry_and_config_changes") {
        return;
    }
    let dis = Discharger::start(&users(), None);
    let d = candid_daemon(&dis, json!({"candid.domains": "example.com"})).await;
    let tmp = tempfile::tempdir().unwrap();
    grant_user(&d, "alice@example.com", "user").await;

    let (r, alice) = login(&d, "alice@example.com", PW);
    assert_eq!(
        r["body"]["metadata"]["auth_user_name"], "alice@example.com",
        "{r}"
    );
    // A verified user from a domain not listed is refused outright (LXD: 500).
    let (r, _) = login(&d, "eve@evil.com", PW);
    assert_eq!(r["status"], 403, "{r}");
    assert_eq!(r["body"]["error"], "Untrusted candid domain");

    // Changing the authentication settings ends every login made under the old ones.
    configure(&d, json!({"candid.expiry": "2"})).await;
    let (status, body) = with_cookie(&d, "/1.0/instances", &alice, tmp.path());
    assert!(challenged(status, &body), "{status} {body}");

    // Logins expire after candid.expiry (the discharge lives a day: the primary's caveat counts).
    let (_, alice) = login(&d, "alice@example.com", PW);
    let (status, _) = with_cookie(&d, "/1.0/instances", &alice, tmp.path());
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (status, body) = with_cookie(&d, "/1.0/instances", &alice, tmp.path());
    assert!(challenged(status, &body), "{status} {body}");

    // Bad settings are refused whole: http without a key, bad keys, bad domains.
    let (status, err) = try_config(&d, json!({"candid.api.key": null})).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err.as_str().unwrap().contains("needs candid.api.key"),
        "{err}"
    );
    for bad in [
        json!({"candid.api.key": "AAAA"}),
        json!({"candid.api.url": "ftp://x"}),
        json!({"candid.domains": "a b"}),
        json!({"candid.expiry": "0"}),
    ] {
        assert_eq!(try_config(&d, bad.clone()).await.0, 400, "{bad}");
    }
    let cfg = ok(&d.unix(), Method::GET, "/1.0", json!({})).await["config"].clone();
    assert_eq!(cfg["candid.expiry"], "2");
    assert_eq!(cfg["candid.api.key"], dis.public_key.as_str());
}

#[tokio::test]
async fn logins_survive_a_restart() {
    if !ready("logins_survive_a_restart") {
        return;
    }
    let dis = Discharger::start(&users(), None);
    let mut d = candid_daemon(&dis, json!({})).await;
    let tmp = tempfile::tempdir().unwrap();
    grant_user(&d, "alice@example.com", "auditor").await;
    let (_, alice) = login(&d, "alice@example.com", PW);
    assert_eq!(with_cookie(&d, "/1.0/instances", &alice, tmp.path()).0, 200);
    d.restart().await;
    let (status, body) = with_cookie(&d, "/1.0/instances", &alice, tmp.path());
    assert_eq!(
        status, 200,
        "LXD forgets logins on restart; rxd keeps them: {body}"
    );
}

/// An https authentication server without a configured key: its key is fetched over TLS
/// verified against the system roots (here `SSL_CERT_FILE`) and pinned; an untrusted
/// certificate is refused and nothing is stored.
#[tokio::test]
async fn https_candid_key_is_fetched_only_over_verified_tls() {
    if !ready("https_candid_key_is_fetched_only_over_verified_tls") {
        return;
    }
    let test_ca = rxd_testkit::ca::TestCa::new("candid test CA");
    let issued = test_ca.server(7);
    let dis = Discharger::start(&users(), Some((&issued.cert_pem, &issued.key_pem)));
    assert!(dis.url.starts_with("https://"));
    let tmp = tempfile::tempdir().unwrap();
    let bundle: PathBuf = tmp.path().join("roots.pem");
    std::fs::write(&bundle, &test_ca.pem).unwrap();
    std::fs::write(tmp.path().join("empty.pem"), "").unwrap();

    // Not trusted by the system roots: refused, nothing stored.
    let plain = TestDaemon::start_with(Options {
        env: vec![(
            "SSL_CERT_FILE".into(),
            tmp.path().join("empty.pem").display().to_string(),
        )],
        ..Default::default()
    })
    .await;
    let (status, err) = try_config(&plain, json!({"candid.api.url": dis.url})).await;
    assert_eq!(status, 400, "{err}");
    let cfg = ok(&plain.unix(), Method::GET, "/1.0", json!({})).await["config"].clone();
    assert!(cfg.get("candid.api.url").is_none(), "{cfg}");

    let d = TestDaemon::start_with(Options {
        env: vec![("SSL_CERT_FILE".into(), bundle.display().to_string())],
        ..Default::default()
    })
    .await;
    configure(&d, json!({"candid.api.url": dis.url})).await;
    let cfg = ok(&d.unix(), Method::GET, "/1.0", json!({})).await["config"].clone();
    assert_eq!(
        cfg["candid.api.key"],
        dis.public_key.as_str(),
        "pinned: {cfg}"
    );
    grant_user(&d, "bob@example.com", "auditor").await;
    let r = py_client(&[
        "--url",
        &url(&d, "/1.0/instances"),
        "--ca",
        &ca(&d),
        "--user",
        "bob@example.com",
        "--password",
        PW,
        "--discharger-ca",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(r["status"], 200, "{r}");
}

/// Debian's own `lxc` (LXD 5.0.2's client, Go's macaroon bakery) logs in through the form
/// interaction, keeps the cookie in its jar and is trusted as the Candid user.
#[tokio::test]
async fn debian_lxc_logs_in_with_candid() {
    let test = "debian_lxc_logs_in_with_candid";
    if !ready(test) || !require_tool("lxc", "lxd-client", test) {
        return;
    }
    let dis = Discharger::start(&users(), None);
    let d = candid_daemon(&dis, json!({})).await;
    grant_user(&d, "alice@example.com", "operator").await;
    let conf = tempfile::tempdir().unwrap();
    let lxc = |args: &[&str], input: &str| lxc(conf.path(), args, input);
    let remote = format!("https://{}", d.https_address());
    let out = lxc(
        &[
            "remote",
            "add",
            "t",
            &remote,
            "--auth-type=candid",
            "--accept-certificate",
        ],
        &format!("alice@example.com\n{PW}\n"),
    );
    assert!(out.status.success(), "{out:?}\n{}", dis.log());
    let out = lxc(&["query", "t:/1.0"], "");
    let v: Value = serde_json::from_slice(&out.stdout).expect("lxc query");
    assert_eq!(v["auth"], "trusted", "{v}");
    assert_eq!(v["auth_user_name"], "alice@example.com");
    assert_eq!(v["auth_user_method"], "candid");
    let out = lxc(&["query", "t:/1.0/instances"], "");
    assert!(out.status.success(), "{out:?}");
    // A wrong password leaves no remote behind.
    let out = lxc(
        &[
            "remote",
            "add",
            "u",
            &remote,
            "--auth-type=candid",
            "--accept-certificate",
        ],
        "alice@example.com\nwrong\n",
    );
    assert!(!out.status.success(), "{out:?}");
    let out = lxc(&["remote", "list", "--format", "csv"], "");
    let list = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = list.lines().filter_map(|l| l.split(',').next()).collect();
    assert!(names.contains(&"t") && !names.contains(&"u"), "{list}");
}

/// Debian's `lxc` with `LXD_CONF` in `conf`: runs `args` with `input` on stdin, at most 60 s (a
/// failed login makes it wait forever).
fn lxc(conf: &Path, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("60")
        .arg("lxc")
        .args(args)
        .env("LXD_CONF", conf)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lxc");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Issue 17: after a `candid.*` change ended its login, `lxc` logs in again although the
/// discharger shares the daemon's host name (both on 127.0.0.1), so that `lxc` presents the
/// daemon's stale `macaroon-auth` cookie to it. The discharger reads identifiers as Candid
/// (Go's bakery) does: a `0x03` identifier that is not go-macaroon-bakery's v3 layout fails
/// the discharge.
#[tokio::test]
async fn debian_lxc_logs_in_again_after_a_candid_change() {
    let test = "debian_lxc_logs_in_again_after_a_candid_change";
    if !ready(test) || !require_tool("lxc", "lxd-client", test) {
        return;
    }
    let dis = Discharger::start(&users(), None);
    assert!(dis.url.starts_with("http://127.0.0.1:"), "{}", dis.url);
    let d = candid_daemon(&dis, json!({})).await;
    assert!(d.https_address().starts_with("127.0.0.1:"));
    grant_user(&d, "alice@example.com", "operator").await;
    let conf = tempfile::tempdir().unwrap();
    let login = format!("alice@example.com\n{PW}\n");
    let remote = format!("https://{}", d.https_address());
    let add = [
        "remote",
        "add",
        "t",
        &remote,
        "--auth-type=candid",
        "--accept-certificate",
    ];
    let out = lxc(conf.path(), &add, &login);
    assert!(out.status.success(), "{out:?}\n{}", dis.log());
    let jar = std::fs::read_to_string(conf.path().join("jars/t")).unwrap_or_default();
    assert!(jar.contains("macaroon-auth"), "{jar}");

    configure(&d, json!({"candid.expiry": "1800"})).await;
    let before = dis.log().matches("carries 1 macaroon").count();
    let out = lxc(conf.path(), &["query", "t:/1.0"], &login);
    assert!(out.status.success(), "{out:?}\ndischarger:\n{}", dis.log());
    // The form's prompts come first on stdout, then the reply.
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = text
        .find('{')
        .and_then(|i| serde_json::from_str(&text[i..]).ok())
        .unwrap_or_else(|| panic!("lxc query printed no JSON: {text}"));
    assert_eq!(v["auth"], "trusted", "{v}");
    assert_eq!(v["auth_user_name"], "alice@example.com");
    // The stale cookie did reach the discharger, which read it and went on.
    assert!(
        dis.log().matches("carries 1 macaroon").count() > before,
        "{}",
        dis.log()
    );
    let out = lxc(conf.path(), &["query", "t:/1.0/instances"], "");
    assert!(out.status.success(), "{out:?}");
}

/// Candid groups are identities for grants: with an agent configured, the daemon logs in to
/// Candid's user-groups API by the agent protocol and reads each user's groups; without one (or
/// when the lookup fails) a user has no groups, so fewer rights, never more.
#[tokio::test]
async fn group_grants_through_the_user_groups_api() {
    if !ready("group_grants_through_the_user_groups_api") {
        return;
    }
    let agent = rxd_bakery::codec::KeyPair::generate();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut table = users();
    table["rxd-agent@candid"] = json!({
        "agent_public_key": b64(&agent.public()),
        "groups_reader": true,
        "groups": [],
    });
    let dis = Discharger::start(&table, None);
    let d = candid_daemon(&dis, json!({})).await;
    let tmp = tempfile::tempdir().unwrap();
    ok(
        &d.unix(),
        Method::POST,
        "/1.0/auth/grants",
        json!({"identity_type": "candid-group", "identity": "devs", "role": "user", "scope": "project", "project": "default"}),
    )
    .await;

    // No agent yet: alice's group is unknown to the daemon, so she has no rights.
    let (_, alice) = login(&d, "alice@example.com", PW);
    assert_eq!(with_cookie(&d, "/1.0/instances", &alice, tmp.path()).0, 403);

    // With the agent, her group counts; bob's does not exist.
    configure(
        &d,
        json!({"candid.agent.username": "rxd-agent@candid", "candid.agent.private_key": b64(&agent.secret_bytes())}),
    )
    .await;
    let cfg = ok(&d.unix(), Method::GET, "/1.0", json!({})).await["config"].clone();
    assert_eq!(cfg["candid.agent.private_key"], true, "never shown: {cfg}");
    let (_, alice) = login(&d, "alice@example.com", PW);
    let (status, body) = with_cookie(&d, "/1.0/instances", &alice, tmp.path());
    assert_eq!(status, 200, "{body}\n{}", dis.log());
    assert!(
        dis.log().contains("/login/agent"),
        "the daemon logged in as the agent"
    );
    let (_, bob) = login(&d, "bob@example.com", PW);
    assert_eq!(with_cookie(&d, "/1.0/instances", &bob, tmp.path()).0, 403);

    // An agent key Candid does not know: the lookup fails, alice has no groups again.
    let stranger = rxd_bakery::codec::KeyPair::generate();
    configure(
        &d,
        json!({"candid.agent.private_key": b64(&stranger.secret_bytes())}),
    )
    .await;
    let (_, alice) = login(&d, "alice@example.com", PW);
    assert_eq!(with_cookie(&d, "/1.0/instances", &alice, tmp.path()).0, 403);
    assert!(
        d.logs().contains("cannot read the user's Candid groups"),
        "logged"
    );

    // The agent settings go together.
    let (status, _) = try_config(&d, json!({"candid.agent.username": null})).await;
    assert_eq!(status, 400);
}
