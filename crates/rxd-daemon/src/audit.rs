//! The security event log: every authentication failure, authorization refusal, trust-store,
//! grant and config change and privileged-container start becomes one JSON line in
//! `<dir>/logs/security.log` (0600, rotated at a bound, one previous file kept) and an LXD
//! `logging` event that only server administrators receive. Event names follow OWASP's logging
//! vocabulary. A line never holds a secret: callers pass key names and non-secret values only,
//! and request paths are recorded without their query string.

use crate::caller::Caller;
use crate::candid::Login;
use crate::events::Events;
use rxd_auth::rbac::Decision;
use rxd_auth::Identity;
use serde_json::{json, Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

/// Where the log goes under the state directory.
pub const LOG_DIR: &str = "logs";
pub const LOG_FILE: &str = "security.log";
/// The live file is rotated once it reaches this size; with the one previous file kept, the log
/// never takes more than twice this.
pub const MAX_BYTES: u64 = 8 << 20;
/// Lines waiting for the writer thread. A burst beyond this is dropped (and said so in the
/// daemon's log) rather than slowing requests down.
const QUEUE: usize = 4096;

/// The security events rxd records, named with OWASP's logging vocabulary (and, where OWASP has
/// no word, in its style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityEvent {
    /// A wrong or missing trust password at enrolment, or a Candid login that did not verify or
    /// whose user is refused.
    AuthnLoginFail,
    /// An enrolment token that is unknown, already used or expired.
    AuthnTokenFail,
    /// A TLS client certificate that is not trusted (unknown, expired, refused by the CA) on an
    /// endpoint that needs a trusted caller.
    AuthnCertificateFail,
    /// Enrolment refused because the address failed too often (the back-off is running).
    AuthnLoginLock,
    /// A trusted caller refused by the authorization layer (403, or the hidden 404).
    AuthzFail,
    /// A certificate added to the trust store.
    UserCreated,
    /// A trust-store entry changed (name, restriction, projects, renewed certificate).
    UserUpdated,
    /// A certificate removed from the trust store.
    UserDeleted,
    /// An enrolment token issued.
    AuthnTokenCreated,
    /// An enrolment token revoked.
    AuthnTokenRevoked,
    /// A role granted or revoked.
    AuthzChange,
    /// A server or project config key changed.
    SysConfigChange,
    /// A privileged container started: root inside it is root on the host.
    SysPrivilegedStart,
}

impl SecurityEvent {
    pub fn name(self) -> &'static str {
        match self {
            SecurityEvent::AuthnLoginFail => "authn_login_fail",
            SecurityEvent::AuthnTokenFail => "authn_token_fail",
            SecurityEvent::AuthnCertificateFail => "authn_certificate_fail",
            SecurityEvent::AuthnLoginLock => "authn_login_lock",
            SecurityEvent::AuthzFail => "authz_fail",
            SecurityEvent::UserCreated => "user_created",
            SecurityEvent::UserUpdated => "user_updated",
            SecurityEvent::UserDeleted => "user_deleted",
            SecurityEvent::AuthnTokenCreated => "authn_token_created",
            SecurityEvent::AuthnTokenRevoked => "authn_token_revoked",
            SecurityEvent::AuthzChange => "authz_change",
            SecurityEvent::SysConfigChange => "sys_config_change",
            SecurityEvent::SysPrivilegedStart => "sys_privileged_start",
        }
    }

    /// Failures and privileged starts warn; changes made by an administrator are information.
    pub fn level(self) -> &'static str {
        match self {
            SecurityEvent::AuthnLoginFail
            | SecurityEvent::AuthnTokenFail
            | SecurityEvent::AuthnCertificateFail
            | SecurityEvent::AuthnLoginLock
            | SecurityEvent::AuthzFail
            | SecurityEvent::SysPrivilegedStart => "warn",
            _ => "info",
        }
    }
}

/// One security event, before it is written.
pub struct Record {
    event: SecurityEvent,
    identity: String,
    auth_method: &'static str,
    source: String,
    project: String,
    method: String,
    path: String,
    description: String,
    details: Map<String, Value>,
}

impl Record {
    /// An event caused by `caller`'s request `method path` (a path, never a query string: that
    /// is where websocket secrets travel).
    pub fn new(
        event: SecurityEvent,
        caller: &Caller,
        method: &str,
        path: &str,
        description: impl Into<String>,
    ) -> Record {
        Record {
            event,
            identity: caller.identity.user_name(),
            auth_method: caller.identity.method(),
            source: caller.conn.peer(),
            // Server-level unless the event is about a project (`Record::project`).
            project: String::new(),
            method: method.to_owned(),
            path: without_query(path),
            description: description.into(),
            details: Map::new(),
        }
    }

    /// An event the daemon itself observes, outside a request it can attribute.
    pub fn daemon(event: SecurityEvent, description: impl Into<String>) -> Record {
        Record {
            event,
            identity: String::new(),
            auth_method: "",
            source: String::new(),
            project: String::new(),
            method: String::new(),
            path: String::new(),
            description: description.into(),
            details: Map::new(),
        }
    }

    pub fn project(mut self, project: &str) -> Record {
        self.project = project.to_owned();
        self
    }

    /// Who, when the caller's identity is not the subject (say, an untrusted certificate's
    /// fingerprint).
    pub fn identity(mut self, identity: &str) -> Record {
        self.identity = identity.to_owned();
        self
    }

    /// How the identity authenticated, when not as the caller's identity says (a Candid user
    /// whose login was refused is, as a caller, untrusted).
    pub fn via(mut self, auth_method: &'static str) -> Record {
        self.auth_method = auth_method;
        self
    }

    /// A fact about the event. Never a secret: callers pass names, fingerprints, ids and
    /// non-secret values only.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Record {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    fn line(&self, time: &str) -> Value {
        json!({
            "time": time,
            "event": self.event.name(),
            "level": self.event.level(),
            "identity": self.identity,
            "auth_method": self.auth_method,
            "source": self.source,
            "project": self.project,
            "request": {"method": self.method, "path": self.path},
            "description": self.description,
            "details": self.details,
        })
    }

    /// LXD's `logging` metadata: a message, a level and string-valued context.
    fn logging_metadata(&self) -> Value {
        let mut context: Map<String, Value> = [
            ("event", self.event.name().to_owned()),
            ("identity", self.identity.clone()),
            ("auth_method", self.auth_method.to_owned()),
            ("source", self.source.clone()),
            ("project", self.project.clone()),
            ("method", self.method.clone()),
            ("path", self.path.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
        for (k, v) in &self.details {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            context.insert(k.clone(), Value::String(text));
        }
        json!({
            "message": self.description,
            "level": self.event.level(),
            "context": context,
        })
    }
}

/// A request path as logged: the query string (where websocket secrets travel) cut off.
fn without_query(path: &str) -> String {
    path.split('?').next().unwrap_or_default().to_owned()
}

/// Authentication failures on the macaroon path, seen by the authorization layer: a verified
/// Candid user that `candid.domains` refuses, or presented macaroons that do not verify (bad
/// signature, expired, unknown root key).
pub fn login_failure(log: &AuditLog, caller: &Caller, parts: &http::request::Parts, login: &Login) {
    let (method, path) = (parts.method.as_str(), parts.uri.path());
    match login {
        Login::Refused(refused) => log.record(
            Record::new(
                SecurityEvent::AuthnLoginFail,
                caller,
                method,
                path,
                format!("Candid login refused: {refused}"),
            )
            .identity(&refused.username)
            .project(&caller.project)
            .via("candid"),
        ),
        Login::Missing {
            rejected,
            rejection,
            ..
        } if *rejected > 0 => {
            let mut rec = Record::new(
                SecurityEvent::AuthnLoginFail,
                caller,
                method,
                path,
                "Candid login failed: no presented macaroon verified",
            )
            .via("candid")
            .project(&caller.project)
            .detail("rejected_macaroons", *rejected);
            if let Some(r) = rejection {
                // Both come from the unverified macaroons: bounded and made printable, so a
                // forged login can neither flush the log with long lines nor forge its layout.
                rec = rec.detail("reason", printable(&r.reason, MAX_CLAIMED));
                // The name the login claims (OWASP logs the user id a failed login tried). It
                // did not verify, so it is a detail, never the line's `identity`: anyone can
                // claim any name.
                if let Some(user) = &r.claimed_user {
                    rec = rec
                        .detail("claimed_user", printable(user, MAX_CLAIMED))
                        .detail("identity_verified", false);
                }
            }
            log.record(rec)
        }
        _ => {}
    }
}

/// How much of a text taken from an unverified request a line keeps.
const MAX_CLAIMED: usize = 160;

/// `text` as a log line may carry it when it comes from an unverified request: control and
/// bidirectional-override characters escaped (`\u{..}`), at most `max` characters kept, and a
/// cut said with `…`.
fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
        if c.is_control() || bidi {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// A request the authorization layer refused: an untrusted certificate (or none) on an
/// endpoint that needs trust is an authentication failure; a trusted caller without the right
/// is an authorization failure, whether answered 403 or as a hidden project.
pub fn refusal(
    log: &AuditLog,
    caller: &Caller,
    parts: &http::request::Parts,
    decision: Decision,
    project: &str,
) {
    let (method, path) = (parts.method.as_str(), parts.uri.path());
    let answer = match decision {
        Decision::Hidden => "hidden (404)",
        _ => "forbidden (403)",
    };
    let rec = match &caller.identity {
        Identity::Untrusted {
            fingerprint: Some(_),
        } => Record::new(
            SecurityEvent::AuthnCertificateFail,
            caller,
            method,
            path,
            "client certificate not trusted (unknown, expired, or refused by the CA)",
        ),
        Identity::Untrusted { fingerprint: None } => Record::new(
            SecurityEvent::AuthzFail,
            caller,
            method,
            path,
            "request without credentials refused",
        ),
        _ => Record::new(
            SecurityEvent::AuthzFail,
            caller,
            method,
            path,
            format!("not authorized: {answer}"),
        ),
    };
    log.record(rec.project(project).detail("answer", answer));
}

/// One server config key changed by `caller` (PUT or PATCH `/1.0`). Secret keys are logged by
/// name only: neither the value given nor the stored hash appears.
pub fn server_config_change(
    log: &AuditLog,
    caller: &Caller,
    method: &str,
    key: &str,
    old: Option<&str>,
    new: Option<&str>,
) {
    let action = if new.is_some() { "set" } else { "unset" };
    let mut rec = Record::new(
        SecurityEvent::SysConfigChange,
        caller,
        method,
        "/1.0",
        format!("server config key {key} {action}"),
    )
    .detail("key", key)
    .detail("action", action);
    if !rxd_core::config::is_secret(key) {
        rec = rec
            .detail("old", old.unwrap_or_default())
            .detail("new", new.unwrap_or_default());
    }
    log.record(rec);
}

/// A project's config changed (`PUT`/`PATCH /1.0/projects/<name>`): one line per key that
/// changed. `user.*` values are free text the owner may consider private: only their names.
pub fn project_config_change(
    log: &AuditLog,
    caller: &Caller,
    project: &str,
    old: &std::collections::BTreeMap<String, String>,
    new: &std::collections::BTreeMap<String, String>,
    replace: bool,
) {
    let method = if replace { "PUT" } else { "PATCH" };
    let path = format!("/1.0/projects/{project}");
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (before, after) = (old.get(key), new.get(key));
        if before == after {
            continue;
        }
        let action = if after.is_some() { "set" } else { "unset" };
        let mut rec = Record::new(
            SecurityEvent::SysConfigChange,
            caller,
            method,
            &path,
            format!("project {project} config key {key} {action}"),
        )
        .project(project)
        .detail("key", key.as_str())
        .detail("action", action);
        if !key.starts_with("user.") {
            rec = rec
                .detail("old", before.map(String::as_str).unwrap_or_default())
                .detail("new", after.map(String::as_str).unwrap_or_default());
        }
        log.record(rec);
    }
}

/// A privileged container is starting: root inside it is root on the host.
pub fn privileged_start(log: &AuditLog, project: &str, instance: &str) {
    log.record(
        Record::daemon(
            SecurityEvent::SysPrivilegedStart,
            format!("starting privileged container {instance}: root inside it is root on the host"),
        )
        .project(project)
        .detail("instance", instance),
    );
}

/// The file side: a bounded queue drained by one thread that owns the file.
pub struct AuditLog {
    tx: Option<SyncSender<String>>,
    /// Where the `logging` events go.
    events: Events,
}

impl AuditLog {
    /// Start the writer for `<dir>/logs/security.log`. If the directory cannot be made, events
    /// still reach the event stream and the failure is in the daemon's log.
    pub fn start(dir: &Path, max_bytes: u64, events: Events) -> AuditLog {
        let logs = dir.join(LOG_DIR);
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&logs)
        {
            tracing::error!(dir = %logs.display(), error = %e, "cannot create the security log directory; security events go to the event stream only");
            return AuditLog { tx: None, events };
        }
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let mut writer = RotatingFile::new(logs.join(LOG_FILE), max_bytes);
        let spawned = std::thread::Builder::new()
            .name("rxd-audit".into())
            .spawn(move || {
                // Ends when the daemon (the last sender) is dropped.
                for line in rx {
                    if let Err(e) = writer.append(&line) {
                        tracing::error!(path = %writer.path.display(), error = %e, "cannot write the security log");
                    }
                }
            });
        match spawned {
            Ok(_) => AuditLog {
                tx: Some(tx),
                events,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the security log writer");
                AuditLog { tx: None, events }
            }
        }
    }

    /// The one way a security event is recorded: a line in the file (through the writer
    /// thread, never blocking the request) and a `logging` event for administrators.
    pub fn record(&self, rec: Record) {
        let time = crate::sync::now_rfc3339();
        self.write(&rec.line(&time));
        self.events.logging(rec.logging_metadata(), time);
    }

    fn write(&self, line: &Value) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(line.to_string()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(event = %line["event"], "security log queue full: event not written to the file")
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!(event = %line["event"], "security log writer stopped: event not written to the file")
            }
        }
    }
}

/// An append-only file rotated to `<name>.1` when a line would take it past `max_bytes`.
struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    file: Option<(File, u64)>,
}

impl RotatingFile {
    fn new(path: PathBuf, max_bytes: u64) -> RotatingFile {
        RotatingFile {
            path,
            max_bytes,
            file: None,
        }
    }

    fn previous(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".1");
        PathBuf::from(name)
    }

    fn open(&self) -> std::io::Result<(File, u64)> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&self.path)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    fn append(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        let (mut file, mut size) = match self.file.take() {
            Some(open) => open,
            None => self.open()?,
        };
        if size > 0 && size + len > self.max_bytes {
            drop(file);
            // Replaces the previous `.1`: one older file is kept, so the log stays bounded.
            std::fs::rename(&self.path, self.previous())?;
            (file, size) = self.open()?;
        }
        let result = file.write_all(format!("{line}\n").as_bytes());
        // After a failed write the size is unknown: reopen (and read it again) next time.
        if result.is_ok() {
            self.file = Some((file, size + len));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A private directory removed at the end of the test.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let p = std::env::temp_dir().join(format!("rxd-audit-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir(&p).unwrap();
            TempDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn rotates_at_the_bound_and_keeps_one_previous_file() {
        let dir = TempDir::new();
        let path = dir.path().join(LOG_FILE);
        let mut f = RotatingFile::new(path.clone(), 100);
        let line = "x".repeat(39); // 40 bytes with its newline
        for _ in 0..2 {
            f.append(&line).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 80);
        assert!(!f.previous().exists(), "not rotated below the bound");
        f.append(&line).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 40);
        assert_eq!(std::fs::read_to_string(f.previous()).unwrap().len(), 80);
        for _ in 0..5 {
            f.append(&line).unwrap();
        }
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 200, "two files at most, each within the bound");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_line_longer_than_the_bound_is_still_written() {
        let dir = TempDir::new();
        let mut f = RotatingFile::new(dir.path().join(LOG_FILE), 10);
        f.append(&"y".repeat(50)).unwrap();
        f.append(&"z".repeat(50)).unwrap();
        assert!(std::fs::read_to_string(f.previous())
            .unwrap()
            .starts_with('y'));
        assert!(std::fs::read_to_string(&f.path).unwrap().starts_with('z'));
    }

    #[test]
    fn event_names_are_distinct() {
        use SecurityEvent::*;
        let all = [
            AuthnLoginFail,
            AuthnTokenFail,
            AuthnCertificateFail,
            AuthnLoginLock,
            AuthzFail,
            UserCreated,
            UserUpdated,
            UserDeleted,
            AuthnTokenCreated,
            AuthnTokenRevoked,
            AuthzChange,
            SysConfigChange,
            SysPrivilegedStart,
        ];
        let names: std::collections::BTreeSet<_> = all.iter().map(|e| e.name()).collect();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn paths_lose_their_query_string() {
        assert_eq!(
            without_query("/1.0/operations/x/websocket?secret=abc"),
            "/1.0/operations/x/websocket"
        );
        let r = Record::daemon(SecurityEvent::AuthzFail, "x");
        let line = r.detail("key", "core.https_address").line("t");
        assert_eq!(line["event"], "authz_fail");
        assert_eq!(line["details"]["key"], "core.https_address");
    }

    #[test]
    fn unverified_text_is_bounded_and_printable() {
        for (text, want) in [
            ("alice@example.com", "alice@example.com"),
            ("eve\nadmin", "eve\\u{a}admin"),
            ("\u{202e}moc.elpmaxe@ecila", "\\u{202e}moc.elpmaxe@ecila"),
            ("signature mismatch", "signature mismatch"),
        ] {
            assert_eq!(printable(text, MAX_CLAIMED), want, "{text:?}");
        }
        let long = "x".repeat(50_000);
        let kept = printable(&long, MAX_CLAIMED);
        assert_eq!(kept.chars().count(), MAX_CLAIMED + 1);
        assert!(kept.ends_with('…'));
    }
}
