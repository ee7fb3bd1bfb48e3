//! The client side of Candid (macaroon) logins, as LXD 5.0's `lxc` does them: recognising the
//! server's `macaroon discharge required` challenge, getting each third-party caveat discharged
//! by the authentication server (logging in there by the agent protocol, a form, or a browser
//! window), and keeping the resulting `macaroon-auth` cookie in the remote's jar.
//!
//! What needs a person (prompting for a form field, pointing them at a web page) goes through
//! [`Interactor`], which the binary implements; this crate does no terminal IO.

pub mod agent;
pub mod jar;
pub use rxd_web as web;

use crate::Reply;
use ::http::Method;
use agent::Agent;
use bytes::Bytes;
use jar::{Cookie, Jar};
use rxd_bakery::client::{
    declared_user, discharge_form, expiry, is_local, local_discharge, pending,
};
use rxd_bakery::macaroon::Macaroon;
use rxd_bakery::wire::{
    BakeryErrorBody, BakeryMacaroon, DischargeToken, ErrorInfo, DISCHARGE_REQUIRED,
    INTERACTION_REQUIRED,
};
use rxd_bakery::{b64, BakeryError};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use time::OffsetDateTime;
use web::{resolve, with_query, WebClient, WebReply};

/// The header that makes a request take the macaroon path, and the version we speak.
pub const BAKERY_PROTOCOL_HEADER: &str = "Bakery-Protocol-Version";
pub const BAKERY_PROTOCOL_VERSION: &str = "3";
/// Asks the server to challenge rather than answer as to an untrusted client.
pub const AUTHENTICATED_HEADER: &str = "X-LXD-authenticated";

/// A discharge request or a form exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a browser login may take in all.
const BROWSER_WAIT: Duration = Duration::from_secs(300);
/// Bounds the discharges one challenge may lead to (caveats of discharges included).
const MAX_DISCHARGES: usize = 7;

#[derive(Debug, Error)]
pub enum CandidError {
    #[error("cannot reach {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("no reply from {url} in time")]
    Timeout { url: String },
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("TLS for the authentication server: {0}")]
    Tls(String),
    /// The authentication server refused, with its own words.
    #[error("{url} answered {status}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("unexpected reply from {url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("cannot log in to {location}: {reason}")]
    Interaction { location: String, reason: String },
    #[error("invalid macaroon: {0}")]
    Bakery(#[from] BakeryError),
    #[error("agent file {path}: {reason}")]
    AgentFile { path: PathBuf, reason: String },
    #[error("cookie jar {path}: {reason}")]
    Jar { path: PathBuf, reason: String },
    /// The server still challenged after a fresh login.
    #[error("the server did not accept the Candid login{}", message_suffix(.0))]
    Rejected(String),
    /// A challenge arrived for a request whose body cannot be sent again.
    #[error("the Candid login expired during the request; run the command again")]
    NotRepeatable,
}

impl From<rxd_web::WebError> for CandidError {
    fn from(e: rxd_web::WebError) -> Self {
        use rxd_web::WebError;
        match e {
            WebError::Network { url, reason } => CandidError::Network { url, reason },
            WebError::Timeout { url } => CandidError::Timeout { url },
            WebError::BadUrl { url, reason } => CandidError::BadUrl { url, reason },
            WebError::Tls(m) => CandidError::Tls(m),
            e @ (WebError::TooLarge { .. } | WebError::Sink { .. }) => CandidError::Decode {
                url: String::new(),
                reason: e.to_string(),
            },
        }
    }
}

fn message_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({m})")
    }
}

/// One field of a login form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormField {
    pub name: String,
    /// What to ask (the schema's description, else the name).
    pub label: String,
    /// Must not be echoed.
    pub secret: bool,
}

/// What a login needs from a person.
pub trait Interactor: Send + Sync {
    /// Whether questions can be asked (a terminal is attached).
    fn can_prompt(&self) -> bool;
    /// Ask for one form field's value.
    fn prompt(&self, field: &FormField) -> std::io::Result<String>;
    /// Point the user at `url`, where they log in with a browser.
    fn visit(&self, url: &str);
}

/// An interactor for programs with nobody to ask: only agent logins can succeed.
pub struct NoInteraction;

impl Interactor for NoInteraction {
    fn can_prompt(&self) -> bool {
        false
    }
    fn prompt(&self, _: &FormField) -> std::io::Result<String> {
        Err(std::io::Error::other("no terminal"))
    }
    fn visit(&self, _: &str) {}
}

/// The server's challenge in `reply`, if it is one: 401 (or 407) with the bakery's
/// `macaroon discharge required` body and a macaroon to discharge.
pub fn challenge(reply: &Reply) -> Option<BakeryErrorBody> {
    if reply.status != 401 && reply.status != 407 {
        return None;
    }
    let body: BakeryErrorBody = serde_json::from_slice(&reply.body).ok()?;
    let has_macaroon = body.info.as_ref().is_some_and(|i| i.macaroon.is_some());
    (body.code == DISCHARGE_REQUIRED && has_macaroon).then_some(body)
}

/// The Candid login state of one remote: its cookie jar and how to log in again.
pub struct Login {
    /// The server's host name, the cookies' domain.
    host: String,
    jar: Mutex<Jar>,
    /// Where the jar is saved after each login (`None`: kept in memory, e.g. until `remote add`
    /// has succeeded).
    jar_path: Option<PathBuf>,
    agent: Option<Agent>,
    /// Added to a browser login's URL (`--domain` of `remote add`).
    domain: String,
    interactor: Arc<dyn Interactor>,
    web: WebClient,
}

impl Login {
    pub fn new(host: &str, interactor: Arc<dyn Interactor>) -> Login {
        Login {
            host: host.to_owned(),
            jar: Mutex::new(Jar::default()),
            jar_path: None,
            agent: None,
            domain: String::new(),
            interactor,
            web: WebClient::default(),
        }
    }

    pub fn with_agent(mut self, agent: Agent) -> Login {
        self.agent = Some(agent);
        self
    }

    /// Also trust these CA certificates (DER) for an `https` authentication server.
    pub fn with_extra_cas(mut self, cas: Vec<Vec<u8>>) -> Login {
        self.web = WebClient::with_extra_cas(cas);
        self
    }

    pub fn with_domain(mut self, domain: &str) -> Login {
        self.domain = domain.to_owned();
        self
    }

    /// Load the jar at `path`, and save it there after every new login.
    pub fn with_jar_file(mut self, path: &Path) -> Result<Login, CandidError> {
        self.jar = Mutex::new(Jar::load(path)?);
        self.jar_path = Some(path.to_owned());
        Ok(self)
    }

    fn jar(&self) -> std::sync::MutexGuard<'_, Jar> {
        // A panic while holding the lock cannot leave a jar half-changed: recover it.
        self.jar.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `Cookie` header for a request to `path` on the server.
    pub fn cookie_header(&self, path: &str) -> Option<String> {
        self.jar()
            .header(&self.host, path, true, OffsetDateTime::now_utc())
    }

    /// Save the jar to `path` (for `remote add`, once the login worked).
    pub fn save_jar(&self, path: &Path) -> Result<(), CandidError> {
        self.jar().save(path)
    }

    /// The user the current login cookie names (for display; the server decides).
    pub fn user(&self) -> Option<String> {
        let jar = self.jar();
        let now = OffsetDateTime::now_utc();
        jar.cookies()
            .iter()
            .filter(|c| c.name.starts_with("macaroon-"))
            .filter_map(|c| rxd_bakery::cookie::parse_slice(&c.value).ok())
            .filter(|s| rxd_bakery::client::still_valid(s, now))
            .find_map(|s| declared_user(&s))
    }

    /// Answer a challenge met at `request_path`: discharge its macaroon, store the cookie (and
    /// save the jar if it has a file).
    pub async fn answer(
        &self,
        challenge: &BakeryErrorBody,
        request_path: &str,
    ) -> Result<(), CandidError> {
        let info = challenge.info.clone().unwrap_or_default();
        let raw = info
            .macaroon
            .as_ref()
            .ok_or(CandidError::Bakery(BakeryError::Malformed(
                "challenge without a macaroon",
            )))?;
        let bm = BakeryMacaroon::from_json(raw)?;
        let discharges = self.discharge_all(&bm).await?;
        let value = rxd_bakery::cookie::encode_slice(&bm.macaroon, &discharges);
        let slice: Vec<Macaroon> = std::iter::once(bm.macaroon.clone())
            .chain(discharges)
            .collect();
        let suffix = if info.cookie_name_suffix.is_empty() {
            "auth"
        } else {
            info.cookie_name_suffix.as_str()
        };
        let base = format!("https://{}{}", self.host, request_path);
        let path = cookie_path(&base, &info.macaroon_path);
        let cookie = Cookie {
            name: format!("macaroon-{suffix}"),
            value,
            domain: self.host.clone(),
            path,
            secure: true,
            http_only: false,
            persistent: true,
            host_only: true,
            expires: expiry(&slice).map(jar::format_time).unwrap_or_default(),
        };
        let mut jar = self.jar();
        jar.set(cookie);
        if let Some(p) = &self.jar_path {
            jar.save(p)?;
        }
        Ok(())
    }

    /// Discharges every third-party caveat of `bm`, and those of the discharges in turn.
    pub async fn discharge_all(&self, bm: &BakeryMacaroon) -> Result<Vec<Macaroon>, CandidError> {
        let mut need: VecDeque<_> = pending(bm).into();
        let mut out = Vec::new();
        while let Some(p) = need.pop_front() {
            if out.len() >= MAX_DISCHARGES {
                return Err(CandidError::Bakery(BakeryError::Malformed(
                    "too many third-party caveats",
                )));
            }
            let dm = if is_local(&p.location) {
                let agent = self
                    .agent
                    .as_ref()
                    .ok_or_else(|| CandidError::Interaction {
                        location: p.location.clone(),
                        reason:
                            "the server asks for proof of an agent key, and no agent file was given"
                                .into(),
                    })?;
                BakeryMacaroon {
                    macaroon: local_discharge(&p, &agent.key)?,
                    version: 3,
                    namespace: String::new(),
                    caveat_data: Default::default(),
                }
            } else {
                self.acquire(&p).await?
            };
            need.extend(pending(&dm));
            out.push(dm.macaroon);
        }
        Ok(out)
    }

    /// One discharge from the caveat's location, logging in there if it asks.
    async fn acquire(
        &self,
        p: &rxd_bakery::client::Pending,
    ) -> Result<BakeryMacaroon, CandidError> {
        let url = format!("{}/discharge", p.location.trim_end_matches('/'));
        let info = match self.post_discharge(&url, p, None).await? {
            Discharge::Macaroon(m) => return Ok(m),
            Discharge::Interaction(info) => info,
        };
        let token = self.interact(&p.location, &info).await?;
        match self.post_discharge(&url, p, Some(&token)).await? {
            Discharge::Macaroon(m) => Ok(m),
            Discharge::Interaction(_) => Err(CandidError::Interaction {
                location: p.location.clone(),
                reason: "the authentication server asked for a login again after one succeeded"
                    .into(),
            }),
        }
    }

    async fn post_discharge(
        &self,
        url: &str,
        p: &rxd_bakery::client::Pending,
        token: Option<&DischargeToken>,
    ) -> Result<Discharge, CandidError> {
        let form = web::form_encode(&discharge_form(p, token));
        let reply = self
            .web
            .request(
                Method::POST,
                url,
                &[
                    (BAKERY_PROTOCOL_HEADER, BAKERY_PROTOCOL_VERSION),
                    ("accept", "application/json"),
                ],
                Some(("application/x-www-form-urlencoded", form.into_bytes())),
                REQUEST_TIMEOUT,
            )
            .await?;
        if reply.status == 200 {
            let v = json_of(url, &reply.body)?;
            let m = v.get("Macaroon").ok_or_else(|| CandidError::Decode {
                url: url.into(),
                reason: "no Macaroon in the discharge".into(),
            })?;
            return Ok(Discharge::Macaroon(BakeryMacaroon::from_json(m)?));
        }
        let body: BakeryErrorBody = serde_json::from_slice(&reply.body).unwrap_or_default();
        if body.code == INTERACTION_REQUIRED {
            if let Some(info) = body.info {
                return Ok(Discharge::Interaction(info));
            }
        }
        Err(refused(url, &reply, body.message))
    }

    /// Log in at the authentication server by the first method that fits: the agent protocol
    /// when this remote has an agent for it, a form when someone can answer it, else a browser.
    async fn interact(
        &self,
        location: &str,
        info: &ErrorInfo,
    ) -> Result<DischargeToken, CandidError> {
        let methods = info.interaction_methods.clone().unwrap_or_default();
        let base = format!("{}/", location.trim_end_matches('/'));
        if let (Some(agent), Some(p)) = (&self.agent, methods.get("agent")) {
            if let Some(user) = agent.username_for(location) {
                return self.agent_login(location, &base, agent, user, p).await;
            }
        }
        if self.interactor.can_prompt() {
            if let Some(p) = methods.get("form") {
                return self.form_login(location, &base, p).await;
            }
        }
        if let Some(p) = methods.get("browser-window") {
            return self.browser_login(location, &base, p).await;
        }
        let offered: Vec<&str> = methods.keys().map(String::as_str).collect();
        let mut reason = format!(
            "no usable login method (the server offers: {})",
            if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            }
        );
        if methods.contains_key("agent") && self.agent.is_none() {
            reason.push_str("; for a login without a person, pass --candid-agent FILE");
        } else if let (Some(agent), true) = (&self.agent, methods.contains_key("agent")) {
            reason.push_str(&format!(
                "; the agent file {} has no entry for {location}",
                agent.path.display()
            ));
        }
        Err(CandidError::Interaction {
            location: location.into(),
            reason,
        })
    }

    async fn agent_login(
        &self,
        location: &str,
        base: &str,
        agent: &Agent,
        user: &str,
        params: &Value,
    ) -> Result<DischargeToken, CandidError> {
        let login_url = str_param(location, params, "login-url")?;
        let url = with_query(
            &resolve(base, login_url),
            &[("username", user), ("public-key", &agent.public_key_text())],
        );
        let reply = self
            .web
            .request(
                Method::GET,
                &url,
                &[
                    (BAKERY_PROTOCOL_HEADER, BAKERY_PROTOCOL_VERSION),
                    ("accept", "application/json"),
                ],
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        if reply.status != 200 {
            let message = bakery_message(&reply);
            return Err(CandidError::Interaction {
                location: location.into(),
                reason: format!(
                    "agent login as {user} refused ({}): {message}",
                    reply.status
                ),
            });
        }
        let v = json_of(&url, &reply.body)?;
        let m = v.get("macaroon").ok_or_else(|| CandidError::Decode {
            url: url.clone(),
            reason: "no macaroon in the agent login reply".into(),
        })?;
        agent.token(&BakeryMacaroon::from_json(m)?)
    }

    async fn form_login(
        &self,
        location: &str,
        base: &str,
        params: &Value,
    ) -> Result<DischargeToken, CandidError> {
        let url = resolve(base, str_param(location, params, "url")?);
        let headers = [
            (BAKERY_PROTOCOL_HEADER, BAKERY_PROTOCOL_VERSION),
            ("accept", "application/json"),
        ];
        let reply = self
            .web
            .request(Method::GET, &url, &headers, None, REQUEST_TIMEOUT)
            .await?;
        if reply.status != 200 {
            return Err(refused(&url, &reply, bakery_message(&reply)));
        }
        let schema = json_of(&url, &reply.body)?;
        let fields = form_fields(&schema).ok_or_else(|| CandidError::Decode {
            url: url.clone(),
            reason: "no form schema".into(),
        })?;
        let mut form = Map::new();
        for f in &fields {
            let value = self
                .interactor
                .prompt(f)
                .map_err(|e| CandidError::Interaction {
                    location: location.into(),
                    reason: format!("reading {}: {e}", f.label),
                })?;
            form.insert(f.name.clone(), Value::String(value));
        }
        let body = serde_json::json!({ "form": form }).to_string();
        let reply = self
            .web
            .request(
                Method::POST,
                &url,
                &headers,
                Some(("application/json", body.into_bytes())),
                REQUEST_TIMEOUT,
            )
            .await?;
        if reply.status != 200 {
            return Err(CandidError::Interaction {
                location: location.into(),
                reason: bakery_message(&reply),
            });
        }
        let v = json_of(&url, &reply.body)?;
        token_of(&url, v.get("token").unwrap_or(&Value::Null))
    }

    async fn browser_login(
        &self,
        location: &str,
        base: &str,
        params: &Value,
    ) -> Result<DischargeToken, CandidError> {
        let mut visit = resolve(base, str_param(location, params, "VisitURL")?);
        let wait = resolve(base, str_param(location, params, "WaitTokenURL")?);
        if !self.domain.is_empty() {
            visit = with_query(&visit, &[("domain", &self.domain)]);
        }
        self.interactor.visit(&visit);
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CandidError::Interaction {
                    location: location.into(),
                    reason: format!(
                        "no login at {visit} within {} minutes",
                        BROWSER_WAIT.as_secs() / 60
                    ),
                });
            }
            let reply = match self
                .web
                .request(
                    Method::GET,
                    &wait,
                    &[(BAKERY_PROTOCOL_HEADER, BAKERY_PROTOCOL_VERSION)],
                    None,
                    left,
                )
                .await
            {
                Err(rxd_web::WebError::Timeout { .. }) => continue,
                r => r?,
            };
            match reply.status {
                200 => return token_of(&wait, &json_of(&wait, &reply.body)?),
                // The server's own long-poll limit: ask again.
                408 | 502 | 503 | 504 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                _ => {
                    return Err(CandidError::Interaction {
                        location: location.into(),
                        reason: bakery_message(&reply),
                    })
                }
            }
        }
    }
}

enum Discharge {
    Macaroon(BakeryMacaroon),
    Interaction(ErrorInfo),
}

/// The path a challenge's cookie belongs to: `MacaroonPath` resolved against the request URL.
fn cookie_path(request_url: &str, macaroon_path: &str) -> String {
    let reference = if macaroon_path.is_empty() {
        "/"
    } else {
        macaroon_path
    };
    let resolved = resolve(request_url, reference);
    let after_scheme = resolved.split_once("://").map_or("", |(_, r)| r);
    let path = after_scheme
        .find('/')
        .map_or("/", |i| &after_scheme[i..])
        .split(['?', '#'])
        .next()
        .unwrap_or("/");
    if path.is_empty() {
        "/".into()
    } else {
        path.into()
    }
}

fn str_param<'a>(location: &str, params: &'a Value, key: &str) -> Result<&'a str, CandidError> {
    params
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CandidError::Interaction {
            location: location.into(),
            reason: format!("the server's login method lacks {key}"),
        })
}

fn json_of(url: &str, body: &Bytes) -> Result<Value, CandidError> {
    serde_json::from_slice(body).map_err(|e| CandidError::Decode {
        url: url.into(),
        reason: e.to_string(),
    })
}

/// What a refusal says: the bakery body's `Message`, else the text of the body.
fn bakery_message(reply: &WebReply) -> String {
    let body: BakeryErrorBody = serde_json::from_slice(&reply.body).unwrap_or_default();
    if !body.message.is_empty() {
        return body.message;
    }
    let text = String::from_utf8_lossy(&reply.body);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {}", reply.status)
    } else {
        text.chars().take(200).collect()
    }
}

fn refused(url: &str, reply: &WebReply, message: String) -> CandidError {
    CandidError::Refused {
        url: url.into(),
        status: reply.status,
        message: if message.is_empty() {
            bakery_message(reply)
        } else {
            message
        },
    }
}

/// A token as dischargers hand them out: `{"kind", "value"}` (form logins, base64 value) or
/// go-macaroon-bakery's wait response `{"kind", "token" | "token64"}`. The value is normalised
/// to URL-safe base64 without padding, as Go sends it.
fn token_of(url: &str, v: &Value) -> Result<DischargeToken, CandidError> {
    let bad = |reason: &str| CandidError::Decode {
        url: url.into(),
        reason: reason.into(),
    };
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| bad("no token kind"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let bytes = if let Some(t) = text("token64").or_else(|| text("value")) {
        b64::decode(t).ok_or_else(|| bad("token is not base64"))?
    } else if let Some(t) = text("token") {
        t.as_bytes().to_vec()
    } else {
        return Err(bad("no token"));
    };
    Ok(DischargeToken {
        kind: kind.to_owned(),
        value: b64::url(&bytes),
    })
}

/// The fields of a form schema (`{"schema": {name: {description, is-secret, ...}}}`), in the
/// schema's order but with secrets last, so a user name is asked before its password.
fn form_fields(v: &Value) -> Option<Vec<FormField>> {
    let schema = v.get("schema")?.as_object()?;
    let mut fields: Vec<FormField> = schema
        .iter()
        .map(|(name, f)| FormField {
            name: name.clone(),
            label: f
                .get("description")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
                .unwrap_or(name)
                .to_owned(),
            secret: f.get("is-secret").and_then(Value::as_bool).unwrap_or(false),
        })
        .collect();
    fields.sort_by_key(|f| f.secret);
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn challenges_are_recognised() {
        let reply = |status: u16, body: Value| Reply {
            status,
            headers: Default::default(),
            body: Bytes::from(body.to_string()),
        };
        let good = json!({"Code": DISCHARGE_REQUIRED, "Message": "m",
                          "Info": {"Macaroon": {"m": {}}, "MacaroonPath": "../", "CookieNameSuffix": "auth"}});
        let c = challenge(&reply(401, good.clone())).unwrap();
        assert_eq!(c.info.unwrap().macaroon_path, "../");
        assert!(challenge(&reply(407, good.clone())).is_some());
        assert!(challenge(&reply(403, good)).is_none());
        // LXD's own 401/403 envelope is not a challenge, nor is a challenge with nothing to
        // discharge.
        assert!(challenge(&reply(
            401,
            json!({"type": "error", "error": "x", "error_code": 401})
        ))
        .is_none());
        assert!(challenge(&reply(401, json!({"Code": DISCHARGE_REQUIRED}))).is_none());
        assert!(challenge(&Reply {
            status: 401,
            headers: Default::default(),
            body: Bytes::from_static(b"not json"),
        })
        .is_none());
    }

    #[test]
    fn cookie_paths() {
        for (url, mp, expected) in [
            ("https://h/1.0", ".", "/"),
            ("https://h/1.0/instances", "../", "/"),
            ("https://h/1.0/instances/c1", "../../", "/"),
            ("https://h/1.0", "", "/"),
            ("https://h/1.0/instances", "/", "/"),
            ("https://h/1.0/instances/", "x", "/1.0/instances/x"),
        ] {
            assert_eq!(cookie_path(url, mp), expected, "{url} {mp}");
        }
    }

    #[test]
    fn tokens() {
        let t = token_of("u", &json!({"kind": "form", "value": "dG9r"})).unwrap();
        assert_eq!((t.kind.as_str(), t.value.as_str()), ("form", "dG9r"));
        let t = token_of("u", &json!({"kind": "browser-window", "token64": "+/8="})).unwrap();
        assert_eq!(t.value, "-_8");
        let t = token_of("u", &json!({"kind": "browser-window", "token": "tok"})).unwrap();
        assert_eq!(b64::decode(&t.value).unwrap(), b"tok");
        assert!(token_of("u", &json!({"kind": "x"})).is_err());
        assert!(token_of("u", &json!({"value": "dG9r"})).is_err());
        assert!(token_of("u", &json!({"kind": "x", "token64": "!!"})).is_err());
    }

    #[test]
    fn form_schemas() {
        let schema = json!({"schema": {
            "password": {"description": "Password", "is-secret": true},
            "username": {"description": "Username", "type": "string"},
            "otp": {}
        }});
        let f = form_fields(&schema).unwrap();
        let names: Vec<_> = f
            .iter()
            .map(|f| (f.name.as_str(), f.label.as_str(), f.secret))
            .collect();
        assert_eq!(
            names,
            [
                ("username", "Username", false),
                ("otp", "otp", false),
                ("password", "Password", true)
            ]
        );
        assert!(form_fields(&json!({})).is_none());
    }
}
