//! Candid logins (LXD 5.0's macaroon authentication): the daemon's bakery key pair and the root
//! keys of the login macaroons it mints, kept in the store so logins survive a restart and
//! rotated daily; which requests take the macaroon path; the 401 challenge; verification.

use crate::error::ApiError;
use crate::sync::{lock, read, write};
use http::HeaderMap;
use rxd_auth::candid::CandidRefusal;
use rxd_auth::Identity;
use rxd_bakery::codec::{parse_public_key, KeyPair};
use rxd_bakery::login::{self, RootKey, RootKeyId, ThirdParty};
use rxd_bakery::wire::{self, BakeryErrorBody, ErrorInfo};
use rxd_client::candid::agent::{Agent, AgentEntry};
use rxd_client::candid::web::WebClient;
use rxd_client::candid::NoInteraction;
use rxd_core::config::{
    domain_list, StoredConfig, CANDID_AGENT_KEY, CANDID_AGENT_USERNAME, CANDID_DEFAULT_EXPIRY,
    CANDID_DOMAINS, CANDID_EXPIRY, CANDID_KEY, CANDID_URL,
};
use rxd_store::{RootKeyRow, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// A root key mints login macaroons for this long, then a new one is made.
const ROTATE_AFTER: i64 = 24 * 3600;
pub const BAKERY_HEADER: &str = "bakery-protocol-version";
pub const AUTHENTICATED_HEADER: &str = "x-lxd-authenticated";

/// The authentication server as configured.
pub struct CandidConfig {
    pub third_party: ThirdParty,
    pub expiry: i64,
    pub domains: Vec<String>,
    /// Where users' groups come from, when an agent is configured.
    pub groups: Option<GroupSource>,
}

impl CandidConfig {
    /// From the server config; `None` when Candid is off or the key is not usable.
    pub fn from_config(config: &StoredConfig) -> Option<CandidConfig> {
        let url = config.get(CANDID_URL)?;
        let key = config.get(CANDID_KEY).and_then(|k| parse_public_key(k));
        let Some(public_key) = key else {
            tracing::error!(url, "Candid needs {CANDID_KEY}: logins are off");
            return None;
        };
        let location = url.trim_end_matches('/').to_owned();
        Some(CandidConfig {
            groups: GroupSource::new(config, &location),
            third_party: ThirdParty {
                location,
                public_key,
            },
            expiry: config
                .get(CANDID_EXPIRY)
                .and_then(|e| e.parse::<i64>().ok())
                .unwrap_or(CANDID_DEFAULT_EXPIRY as i64),
            domains: config
                .get(CANDID_DOMAINS)
                .map(|d| domain_list(d).map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }
}

#[derive(Default)]
struct RootKeys {
    by_id: HashMap<RootKeyId, (RootKey, i64)>,
    /// The newest key: it mints until it is `ROTATE_AFTER` old.
    current: Option<(RootKeyId, i64)>,
}

impl RootKeys {
    fn from_rows(rows: Vec<RootKeyRow>) -> RootKeys {
        let mut keys = RootKeys::default();
        for r in rows {
            let (Ok(id), Ok(key)) = (
                RootKeyId::try_from(r.id.as_slice()),
                RootKey::try_from(r.root_key.as_slice()),
            ) else {
                continue;
            };
            keys.by_id.insert(id, (key, r.created_at));
            if keys.current.is_none_or(|(_, at)| at <= r.created_at) {
                keys.current = Some((id, r.created_at));
            }
        }
        keys
    }
}

/// What a request's macaroons say.
#[derive(Debug)]
pub enum Login {
    /// Not a macaroon request (Candid off, no bakery header, or the unix socket).
    NotAsked,
    /// A verified login, accepted.
    Verified(Identity),
    /// A verified login whose user is refused (`candid.domains`).
    Refused(RefusedLogin),
    /// No valid macaroon: the client may be challenged; the bakery version it speaks, how
    /// many presented macaroons failed verification (an authentication failure when not 0),
    /// and why one of them failed (one that names a user, if any does).
    Missing {
        version: u8,
        rejected: usize,
        rejection: Option<Rejection>,
    },
}

/// Why a presented login did not verify, and whom it claimed to be, for the security log.
#[derive(Debug)]
pub struct Rejection {
    pub reason: String,
    /// The user its discharge declares, unverified.
    pub claimed_user: Option<String>,
}

/// A verified Candid user that `candid.domains` refuses; shown as the refusal (LXD's text).
#[derive(Debug)]
pub struct RefusedLogin {
    pub username: String,
    pub reason: CandidRefusal,
}

impl std::fmt::Display for RefusedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.reason.fmt(f)
    }
}

/// Candid state: the key pair (made on first use and kept), the configuration, the root keys.
pub struct Logins {
    /// Where new root keys are stored.
    store: Arc<Store>,
    keypair: RwLock<Option<KeyPair>>,
    config: RwLock<Option<Arc<CandidConfig>>>,
    root_keys: Mutex<RootKeys>,
}

impl Logins {
    /// Loads what the store holds (blocking; at start-up). Nothing is created while Candid is off.
    pub fn load(store: Arc<Store>, config: &StoredConfig) -> Result<Logins, StoreError> {
        let logins = Logins {
            store: store.clone(),
            keypair: RwLock::new(None),
            config: RwLock::new(None),
            root_keys: Mutex::new(RootKeys::default()),
        };
        logins.reconfigure(&store, config)?;
        Ok(logins)
    }

    /// Applies a config (blocking). The store already forgot the root keys if `candid.*`
    /// changed; the memory follows it.
    pub fn reconfigure(&self, store: &Store, config: &StoredConfig) -> Result<(), StoreError> {
        let candid = CandidConfig::from_config(config).map(Arc::new);
        if candid.is_some() && read(&self.keypair).is_none() {
            let secret = store.bakery_keypair_or(KeyPair::generate().secret_bytes())?;
            let secret: [u8; 32] = secret.try_into().map_err(|_| StoreError::NotFound {
                kind: "bakery key pair",
            })?;
            *write(&self.keypair) = Some(KeyPair::from_secret(secret));
        }
        *lock(&self.root_keys) = RootKeys::from_rows(store.login_root_keys()?);
        *write(&self.config) = candid;
        Ok(())
    }

    pub fn config(&self) -> Option<Arc<CandidConfig>> {
        read(&self.config).clone()
    }

    /// The macaroon path of authentication: only with Candid on and a bakery header present.
    pub fn authenticate(&self, headers: &HeaderMap, now: OffsetDateTime) -> Login {
        let Some(cfg) = self.config() else {
            return Login::NotAsked;
        };
        let Some(version) = headers.get(BAKERY_HEADER) else {
            return Login::NotAsked;
        };
        let version = version
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(0);
        let cookies = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let explicit = headers
            .get_all("macaroons")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let slices = rxd_bakery::cookie::slices(cookies, explicit);
        // The lock is held for one lookup, not for the verification's cryptography.
        let lookup = |id: &RootKeyId| {
            lock(&self.root_keys)
                .by_id
                .get(id)
                .copied()
                .filter(|(_, created)| now.unix_timestamp() < created + ROTATE_AFTER + cfg.expiry)
                .map(|(k, _)| k)
        };
        let mut rejected = 0;
        let mut rejection = None;
        for slice in &slices {
            match login::verify(slice, &lookup, now) {
                Ok(l) => {
                    return match rxd_auth::candid::identify(&l.username, Vec::new(), &cfg.domains) {
                        Ok(identity) => Login::Verified(identity),
                        Err(reason) => {
                            tracing::info!(user = %l.username, %reason, "Candid login refused");
                            Login::Refused(RefusedLogin {
                                username: l.username,
                                reason,
                            })
                        }
                    };
                }
                Err(e) => {
                    rejected += 1;
                    tracing::debug!(error = %e, "macaroon slice ignored");
                    let reason = match e {
                        rxd_bakery::BakeryError::UnknownRootKey => {
                            "unknown root key: the login was revoked (a candid.* change), is too \
                             old, or is not ours"
                                .to_owned()
                        }
                        e => e.to_string(),
                    };
                    let this = Rejection {
                        reason,
                        claimed_user: login::claimed_username(slice),
                    };
                    // Prefer one that names a user: a client sharing a host name with Candid
                    // also brings Candid's own cookie, which names no one here.
                    if rejection.as_ref().is_none_or(|r: &Rejection| {
                        r.claimed_user.is_none() && this.claimed_user.is_some()
                    }) {
                        rejection = Some(this);
                    }
                }
            }
        }
        Login::Missing {
            version,
            rejected,
            rejection,
        }
    }

    /// The current root key, making (and storing) a new one when there is none or it is due.
    async fn current_root_key(
        &self,
        now: i64,
        expiry: i64,
    ) -> Result<(RootKeyId, RootKey), ApiError> {
        {
            let keys = lock(&self.root_keys);
            if let Some((id, created)) = keys.current {
                if now - created < ROTATE_AFTER {
                    return Ok((id, keys.by_id[&id].0));
                }
            }
        }
        let (id, key): (RootKeyId, RootKey) = (rand::random(), rand::random());
        let row = RootKeyRow {
            id: id.to_vec(),
            root_key: key.to_vec(),
            created_at: now,
        };
        let purge_before = now - ROTATE_AFTER - expiry;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.rotate_login_root_key(&row, purge_before))
            .await??;
        let mut keys = lock(&self.root_keys);
        keys.by_id
            .retain(|_, (_, created)| *created >= purge_before);
        keys.by_id.insert(id, (key, now));
        keys.current = Some((id, now));
        tracing::info!("new Candid login root key");
        Ok((id, key))
    }

    /// A verified Candid identity completed with the user's groups, when an agent to read them
    /// is configured (other identities are returned as they are).
    pub async fn with_groups(&self, identity: Identity) -> Identity {
        let Identity::Candid { username, .. } = &identity else {
            return identity;
        };
        let Some(cfg) = self.config() else {
            return identity;
        };
        match &cfg.groups {
            Some(source) => Identity::Candid {
                groups: source.groups(username).await,
                username: username.clone(),
            },
            None => identity,
        }
    }

    /// The challenge for a request that needs a login: a fresh macaroon to discharge at
    /// Candid, in the bakery's error shape (not LXD's envelope).
    pub async fn challenge(&self, request_path: &str, version: u8) -> ApiError {
        let Some(cfg) = self.config() else {
            return ApiError::NotAuthorized;
        };
        let Some(keypair) = read(&self.keypair).clone() else {
            return ApiError::internal("Candid key pair missing");
        };
        let now = OffsetDateTime::now_utc();
        let (id, key) = match self
            .current_root_key(now.unix_timestamp(), cfg.expiry)
            .await
        {
            Ok(k) => k,
            Err(e) => return e,
        };
        let expires = now + time::Duration::seconds(cfg.expiry);
        let m = login::mint(&id, &key, &cfg.third_party, &keypair, expires);
        let body = BakeryErrorBody {
            code: wire::DISCHARGE_REQUIRED.into(),
            message: "authentication required".into(),
            info: Some(ErrorInfo {
                macaroon: Some(m.to_json()),
                macaroon_path: wire::macaroon_path(request_path),
                cookie_name_suffix: "auth".into(),
                ..Default::default()
            }),
        };
        ApiError::DischargeRequired {
            // Bakery clients older than version 1 expect 407 (go-macaroon-bakery's rule).
            proxy: version == 0,
            body: Box::new(body),
        }
    }
}

/// Fetches the authentication server's public key from `<url>/discharge/info` over HTTPS
/// verified against the system's roots (no way to skip it), for pinning into `candid.api.key`.
pub async fn fetch_public_key(url: &str) -> Result<String, ApiError> {
    let refuse = |why: String| {
        ApiError::BadRequest(format!(
            "cannot get the public key of {url}: {why}; set {CANDID_KEY}"
        ))
    };
    if !url.starts_with("https://") {
        return Err(refuse("only fetched over https".into()));
    }
    let info_url = format!("{}/discharge/info", url.trim_end_matches('/'));
    let reply = WebClient::default()
        .request(
            http::Method::GET,
            &info_url,
            &[(BAKERY_HEADER, "3")],
            None,
            WEB_TIMEOUT,
        )
        .await
        .map_err(|e| refuse(e.to_string()))?;
    if reply.status != 200 {
        return Err(refuse(format!("status {}", reply.status)));
    }
    let info: serde_json::Value =
        serde_json::from_slice(&reply.body).map_err(|e| refuse(e.to_string()))?;
    let key = info
        .get("PublicKey")
        .and_then(serde_json::Value::as_str)
        .and_then(parse_public_key)
        .ok_or_else(|| refuse("no usable PublicKey in the reply".into()))?;
    Ok(rxd_bakery::b64::std(&key))
}

/// How long a call to the authentication server may take.
const WEB_TIMEOUT: Duration = Duration::from_secs(10);
/// A user's groups are asked again after this long.
const GROUPS_TTL: Duration = Duration::from_secs(300);
/// After a failed lookup, the user has no groups for this long before the next try.
const GROUPS_RETRY: Duration = Duration::from_secs(30);
const MAX_CACHED_USERS: usize = 10_000;
const MAX_GROUPS: usize = 1024;

/// Reading users' groups from Candid's user-groups API, logged in as the configured agent.
pub struct GroupSource {
    location: String,
    login: rxd_client::candid::Login,
    web: WebClient,
    /// The agent's login cookie for the groups API, once it has one.
    cookie: tokio::sync::Mutex<Option<String>>,
    cache: Mutex<HashMap<String, (Vec<String>, Instant)>>,
}

impl GroupSource {
    fn new(cfg: &StoredConfig, location: &str) -> Option<GroupSource> {
        let username = cfg.get(CANDID_AGENT_USERNAME)?;
        let secret: [u8; 32] = cfg
            .get(CANDID_AGENT_KEY)
            .and_then(|k| parse_public_key(k))?;
        let agent = Agent {
            path: CANDID_AGENT_KEY.into(),
            key: KeyPair::from_secret(secret),
            agents: vec![AgentEntry {
                url: location.to_owned(),
                username: username.clone(),
            }],
        };
        Some(GroupSource {
            location: location.to_owned(),
            login: rxd_client::candid::Login::new("", Arc::new(NoInteraction)).with_agent(agent),
            web: WebClient::default(),
            cookie: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// `user`'s groups: cached, else asked of Candid. A failure is logged and gives no groups
    /// (fewer rights, never more).
    pub async fn groups(&self, user: &str) -> Vec<String> {
        if let Some((groups, until)) = lock(&self.cache).get(user) {
            if Instant::now() < *until {
                return groups.clone();
            }
        }
        let (groups, ttl) = match self.fetch(user).await {
            Ok(g) => (g, GROUPS_TTL),
            Err(e) => {
                tracing::warn!(user, error = %e, "cannot read the user's Candid groups");
                (Vec::new(), GROUPS_RETRY)
            }
        };
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED_USERS {
            cache.clear();
        }
        cache.insert(user.to_owned(), (groups.clone(), Instant::now() + ttl));
        groups
    }

    async fn fetch(&self, user: &str) -> Result<Vec<String>, String> {
        let url = format!(
            "{}/v1/u/{}/groups",
            self.location,
            rxd_client::query_escape(user)
        );
        let mut cookie = self.cookie.lock().await;
        for _ in 0..2 {
            let mut headers = vec![(BAKERY_HEADER, "3")];
            if let Some(c) = cookie.as_deref() {
                headers.push(("cookie", c));
            }
            let reply = self
                .web
                .request(http::Method::GET, &url, &headers, None, WEB_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            if reply.status == 200 {
                let groups: Vec<String> =
                    serde_json::from_slice(&reply.body).map_err(|e| format!("reply: {e}"))?;
                return Ok(groups
                    .into_iter()
                    .filter(|g| !g.is_empty() && g.len() <= 256)
                    .take(MAX_GROUPS)
                    .collect());
            }
            let challenge: BakeryErrorBody = serde_json::from_slice(&reply.body)
                .ok()
                .filter(|b: &BakeryErrorBody| {
                    b.code == wire::DISCHARGE_REQUIRED && reply.status == 401
                })
                .ok_or_else(|| format!("status {}", reply.status))?;
            // Log the agent in: discharge the API's macaroon through the agent interaction.
            let info = challenge.info.unwrap_or_default();
            let raw = info.macaroon.ok_or("challenge without a macaroon")?;
            let bm =
                rxd_bakery::wire::BakeryMacaroon::from_json(&raw).map_err(|e| e.to_string())?;
            let discharges = self
                .login
                .discharge_all(&bm)
                .await
                .map_err(|e| e.to_string())?;
            let suffix = if info.cookie_name_suffix.is_empty() {
                "auth".to_owned()
            } else {
                info.cookie_name_suffix
            };
            *cookie = Some(format!(
                "macaroon-{suffix}={}",
                rxd_bakery::cookie::encode_slice(&bm.macaroon, &discharges)
            ));
        }
        Err("the groups API refused the agent's login".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_root_key_mints_and_unusable_rows_are_skipped() {
        let row = |id: u8, at: i64, len: usize| RootKeyRow {
            id: vec![id; 16],
            root_key: vec![id; len],
            created_at: at,
        };
        let keys = RootKeys::from_rows(vec![
            row(1, 10, 32),
            row(2, 30, 32),
            row(3, 20, 32),
            row(4, 40, 5),
        ]);
        assert_eq!(keys.by_id.len(), 3);
        assert_eq!(keys.current, Some(([2; 16], 30)));
        assert!(RootKeys::from_rows(vec![]).current.is_none());
    }

    #[test]
    fn config_turns_candid_on_only_with_a_usable_key() {
        let mut c = StoredConfig::new();
        assert!(CandidConfig::from_config(&c).is_none());
        c.insert(CANDID_URL.into(), "https://candid.example/".into());
        assert!(CandidConfig::from_config(&c).is_none(), "no key yet");
        c.insert(CANDID_KEY.into(), rxd_bakery::b64::std(&[7; 32]));
        c.insert(CANDID_DOMAINS.into(), "a.example, b.example".into());
        let cfg = CandidConfig::from_config(&c).unwrap();
        assert_eq!(cfg.third_party.location, "https://candid.example");
        assert_eq!(cfg.third_party.public_key, [7; 32]);
        assert_eq!(cfg.expiry, 3600);
        assert_eq!(cfg.domains, ["a.example", "b.example"]);
    }
}
