//! The Python Candid stand-in (`tests/candid/discharger.py`, built on PyPI's macaroonbakery, an
//! implementation independent of ours) and the Python macaroon client (`tests/candid/client.py`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The repository root (where `tests/candid/` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

pub fn script(name: &str) -> PathBuf {
    repo_root().join("tests/candid").join(name)
}

/// True when python3 can import macaroonbakery. Outside CI a missing module skips the test with
/// a message; under `CI=true` it is a failure.
pub fn require_python_bakery(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import macaroonbakery, pymacaroons, nacl"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let msg = format!(
        "{test}: needs python3 with macaroonbakery (python3 -m pip install -r tests/candid/requirements.txt), skipping"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; under CI=true a skip is a failure");
    }
    eprintln!("SKIP {msg}");
    false
}

/// A running discharger on loopback; stopped when dropped.
pub struct Discharger {
    child: Child,
    dir: TempDir,
    pub url: String,
    /// Standard base64 of its curve25519 public key.
    pub public_key: String,
}

impl Discharger {
    /// Starts one serving `users` (`{"name": {"password", "groups", "agent_public_key"}}`),
    /// over HTTPS with `tls` (certificate and key PEM) if given.
    pub fn start(users: &Value, tls: Option<(&str, &str)>) -> Discharger {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("users.json"), users.to_string()).expect("users");
        let ready = dir.path().join("ready.json");
        let mut cmd = Command::new("python3");
        cmd.arg(script("discharger.py"))
            .arg("--users")
            .arg(dir.path().join("users.json"))
            .arg("--ready-file")
            .arg(&ready);
        if let Some((cert, key)) = tls {
            std::fs::write(dir.path().join("tls.crt"), cert).expect("cert");
            std::fs::write(dir.path().join("tls.key"), key).expect("key");
            cmd.arg("--tls-cert")
                .arg(dir.path().join("tls.crt"))
                .arg("--tls-key")
                .arg(dir.path().join("tls.key"));
        }
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let mut child = cmd.spawn().expect("start the discharger");
        let deadline = Instant::now() + Duration::from_secs(30);
        let info: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str(&text) {
                    break v;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "discharger exited ({status}): {}",
                    std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "discharger did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Discharger {
            child,
            url: info["url"].as_str().expect("url").to_owned(),
            public_key: info["public_key"].as_str().expect("key").to_owned(),
            dir,
        }
    }

    /// Replaces the user table (read again on every request).
    pub fn set_users(&self, users: &Value) {
        let tmp = self.dir.path().join("users.json.new");
        std::fs::write(&tmp, users.to_string()).expect("users");
        std::fs::rename(tmp, self.dir.path().join("users.json")).expect("users");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Discharger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `client.py` printed: `{"status", "body", "cookie"}`.
pub fn py_client(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(script("client.py"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run client.py");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client.py {args:?}: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
