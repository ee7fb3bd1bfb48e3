//! The Candid login client against an independent discharger: `tests/candid/discharger.py`,
//! built on Canonical's Python bakery, speaking the discharge side as Candid does. The daemon
//! is played by `rxd_bakery::login` (mint, then verify what the client brings back), so these
//! tests pin the client's half of the protocol on its own: discharge requests, the agent, form
//! and browser-window logins, tokens, the cookie, and https to the discharger.

use rxd_bakery::codec::{parse_public_key, KeyPair};
use rxd_bakery::login::{mint, verify, RootKeyId, ThirdParty};
use rxd_bakery::wire::BakeryErrorBody;
use rxd_bakery::{b64, cookie};
use rxd_client::candid::agent::Agent;
use rxd_client::candid::{CandidError, FormField, Interactor, Login, NoInteraction};
use rxd_testkit::candid::{require_python_bakery, Discharger};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// The daemon's half: a login macaroon addressed to the discharger, and its verification.
struct Daemon {
    key: KeyPair,
    kid: RootKeyId,
    root: [u8; 32],
}

impl Daemon {
    fn new() -> Daemon {
        Daemon {
            key: KeyPair::generate(),
            kid: [1; 16],
            root: [2; 32],
        }
    }

    /// The challenge, with third-party caveats for this discharger.
    fn challenge_from(&self, d: &Discharger) -> BakeryErrorBody {
        self.challenge(&d.url, parse_public_key(&d.public_key).unwrap())
    }

    /// The challenge the daemon answers a request to `/1.0/instances` with.
    fn challenge(&self, location: &str, candid_public: [u8; 32]) -> BakeryErrorBody {
        let tp = ThirdParty {
            location: location.into(),
            public_key: candid_public,
        };
        let bm = mint(
            &self.kid,
            &self.root,
            &tp,
            &self.key,
            OffsetDateTime::now_utc() + time::Duration::minutes(5),
        );
        serde_json::from_value(json!({
            "Code": "macaroon discharge required",
            "Message": "authentication required",
            "Info": {"Macaroon": bm.to_json(), "MacaroonPath": "../", "CookieNameSuffix": "auth"}
        }))
        .unwrap()
    }

    /// Who the `Cookie` header of a request logs in as.
    fn user(&self, cookie_header: &str) -> String {
        let slices = cookie::slices([cookie_header].into_iter(), std::iter::empty());
        assert_eq!(slices.len(), 1, "{cookie_header}");
        let keys = |id: &RootKeyId| (id == &self.kid).then_some(self.root);
        verify(&slices[0], &keys, OffsetDateTime::now_utc())
            .expect("the login verifies")
            .username
    }
}

/// Answers form fields from a table and records what was asked; `visit` logs in through the
/// page the way a person (or the tests' fake browser) would.
struct Scripted {
    answers: Vec<(&'static str, &'static str)>,
    asked: Mutex<Vec<FormField>>,
    terminal: bool,
    browser_login: Option<(&'static str, &'static str)>,
    visited: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(terminal: bool) -> Scripted {
        Scripted {
            answers: vec![],
            asked: Mutex::new(vec![]),
            terminal,
            browser_login: None,
            visited: Mutex::new(vec![]),
        }
    }
}

impl Interactor for Scripted {
    fn can_prompt(&self) -> bool {
        self.terminal
    }

    fn prompt(&self, field: &FormField) -> std::io::Result<String> {
        self.asked.lock().unwrap().push(field.clone());
        self.answers
            .iter()
            .find(|(k, _)| *k == field.name)
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| std::io::Error::other("unexpected field"))
    }

    fn visit(&self, url: &str) {
        self.visited.lock().unwrap().push(url.to_owned());
        if let Some((user, password)) = self.browser_login {
            let url = url.to_owned();
            tokio::spawn(async move {
                let body = format!("username={user}&password={password}");
                let _ = rxd_client::candid::web::WebClient::default()
                    .request(
                        http::Method::POST,
                        &url,
                        &[],
                        Some(("application/x-www-form-urlencoded", body.into_bytes())),
                        Duration::from_secs(10),
                    )
                    .await;
            });
        }
    }
}

fn agent_file(dir: &Path, key: &KeyPair, url: &str, user: &str) -> PathBuf {
    let path = dir.join("agent.json");
    std::fs::write(
        &path,
        json!({"key": {"public": b64::std(&key.public()), "private": b64::std(&key.secret_bytes())},
               "agents": [{"url": url, "username": user}]})
        .to_string(),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn agent_login_without_a_person() {
    if !require_python_bakery("agent_login_without_a_person") {
        return;
    }
    let key = KeyPair::generate();
    let d = Discharger::start(
        &json!({"bot": {"agent_public_key": b64::std(&key.public())}}),
        None,
    );
    let daemon = Daemon::new();
    let dir = tempfile::tempdir().unwrap();
    let file = agent_file(dir.path(), &key, &format!("{}/", d.url), "bot");
    let login =
        Login::new("127.0.0.1", Arc::new(NoInteraction)).with_agent(Agent::load(&file).unwrap());
    login
        .answer(&daemon.challenge_from(&d), "/1.0/instances")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let header = login.cookie_header("/1.0").expect("cookie for /");
    assert!(header.starts_with("macaroon-auth="), "{header}");
    assert_eq!(daemon.user(&header), "bot");
    assert_eq!(login.user().as_deref(), Some("bot"));

    // A key Candid does not know for the user: the discharger's refusal is shown.
    let stranger = KeyPair::generate();
    let file = agent_file(dir.path(), &stranger, &d.url, "bot");
    let login =
        Login::new("127.0.0.1", Arc::new(NoInteraction)).with_agent(Agent::load(&file).unwrap());
    let e = login
        .answer(&daemon.challenge_from(&d), "/1.0")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("no agent bot with that public key"),
        "{e}"
    );
    assert!(login.cookie_header("/1.0").is_none());
}

#[tokio::test]
async fn form_login_on_a_terminal() {
    if !require_python_bakery("form_login_on_a_terminal") {
        return;
    }
    let d = Discharger::start(&json!({"alice": {"password": "pw1"}}), None);
    let daemon = Daemon::new();
    let mut who = Scripted::new(true);
    who.answers = vec![("username", "alice"), ("password", "pw1")];
    let who = Arc::new(who);
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("jars").join("r");
    let login = Login::new("127.0.0.1", who.clone())
        .with_jar_file(&jar)
        .unwrap();
    login
        .answer(&daemon.challenge_from(&d), "/1.0")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let asked: Vec<(String, bool)> = who
        .asked
        .lock()
        .unwrap()
        .iter()
        .map(|f| (f.name.clone(), f.secret))
        .collect();
    assert_eq!(
        asked,
        [
            ("username".to_owned(), false),
            ("password".to_owned(), true)
        ]
    );
    assert_eq!(
        daemon.user(&login.cookie_header("/1.0/instances").unwrap()),
        "alice"
    );
    // The jar was saved with the cookie, for the next command.
    let again = Login::new("127.0.0.1", Arc::new(NoInteraction))
        .with_jar_file(&jar)
        .unwrap();
    assert_eq!(daemon.user(&again.cookie_header("/1.0").unwrap()), "alice");
    assert!(again.cookie_header("/1.0").is_some());
    assert!(
        Login::new("10.1.1.1", Arc::new(NoInteraction))
            .with_jar_file(&jar)
            .unwrap()
            .cookie_header("/1.0")
            .is_none(),
        "cookies stay with their host"
    );

    // A wrong password fails with the discharger's words, and nothing is stored.
    let mut wrong = Scripted::new(true);
    wrong.answers = vec![("username", "alice"), ("password", "nope")];
    let login = Login::new("127.0.0.1", Arc::new(wrong));
    let e = login
        .answer(&daemon.challenge_from(&d), "/1.0")
        .await
        .unwrap_err();
    assert!(matches!(e, CandidError::Interaction { .. }), "{e:?}");
    assert!(
        e.to_string().contains("invalid username or password"),
        "{e}"
    );
    assert!(login.cookie_header("/1.0").is_none());
}

#[tokio::test]
async fn browser_window_login_without_a_terminal() {
    if !require_python_bakery("browser_window_login_without_a_terminal") {
        return;
    }
    let d = Discharger::start(&json!({"carol": {"password": "pw2"}}), None);
    let daemon = Daemon::new();
    let mut who = Scripted::new(false);
    who.browser_login = Some(("carol", "pw2"));
    let who = Arc::new(who);
    let login = Login::new("127.0.0.1", who.clone()).with_domain("example.com");
    login
        .answer(&daemon.challenge_from(&d), "/1.0")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(daemon.user(&login.cookie_header("/1.0").unwrap()), "carol");
    let visited = who.visited.lock().unwrap().clone();
    assert_eq!(visited.len(), 1);
    assert!(
        visited[0].starts_with(&format!("{}/login?did=", d.url))
            && visited[0].ends_with("&domain=example.com"),
        "{visited:?}"
    );
    assert!(
        who.asked.lock().unwrap().is_empty(),
        "no form without a terminal"
    );

    // A failed browser login ends the wait with the discharger's reason.
    let mut bad = Scripted::new(false);
    bad.browser_login = Some(("carol", "wrong"));
    let e = Login::new("127.0.0.1", Arc::new(bad))
        .answer(&daemon.challenge_from(&d), "/1.0")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("invalid username or password"),
        "{e}"
    );
}

#[tokio::test]
async fn a_caveat_for_another_key_shows_the_dischargers_error() {
    if !require_python_bakery("a_caveat_for_another_key_shows_the_dischargers_error") {
        return;
    }
    let d = Discharger::start(&json!({}), None);
    let daemon = Daemon::new();
    let wrong_key = KeyPair::generate().public();
    let e = Login::new("127.0.0.1", Arc::new(NoInteraction))
        .answer(&daemon.challenge(&d.url, wrong_key), "/1.0")
        .await
        .unwrap_err();
    match &e {
        CandidError::Refused {
            status, message, ..
        } => {
            assert_eq!(*status, 500);
            assert!(message.contains("cannot decrypt caveat id"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn https_dischargers_are_verified() {
    if !require_python_bakery("https_dischargers_are_verified") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) =
        rxd_tls::keypair::generate(rxd_tls::Role::Server, "candid-test", "localhost").unwrap();
    std::fs::write(dir.path().join("c.pem"), &cert).unwrap();
    let agent_key = KeyPair::generate();
    let d = Discharger::start(
        &json!({"bot": {"agent_public_key": b64::std(&agent_key.public())}}),
        Some((cert.as_str(), key.as_str())),
    );
    assert!(d.url.starts_with("https://"), "{}", d.url);
    let daemon = Daemon::new();
    let file = agent_file(dir.path(), &agent_key, &d.url, "bot");

    // Not signed by anything this client trusts: refused before anything is sent.
    let login =
        Login::new("127.0.0.1", Arc::new(NoInteraction)).with_agent(Agent::load(&file).unwrap());
    let e = login
        .answer(&daemon.challenge_from(&d), "/1.0")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CandidError::Network { reason, .. } if reason.contains("TLS")),
        "{e:?}"
    );
    assert!(!d.log().contains("POST /discharge"), "{}", d.log());

    let ca = rxd_tls::cert::from_pem(&cert).unwrap();
    let login = Login::new("127.0.0.1", Arc::new(NoInteraction))
        .with_agent(Agent::load(&file).unwrap())
        .with_extra_cas(vec![ca]);
    login
        .answer(&daemon.challenge_from(&d), "/1.0")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(daemon.user(&login.cookie_header("/1.0").unwrap()), "bot");
}
