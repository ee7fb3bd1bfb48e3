//! Changing the server config: validate the whole update, hash secrets, bind a new HTTPS address
//! before anything is stored, store atomically, then switch listeners and refresh warnings.
//! Any failure leaves the running daemon and the database as they were.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::https;
use crate::state::Daemon;
use crate::sync::{lock, read, write};
use rxd_auth::AdminProof;
use rxd_core::address::ListenAddress;
use rxd_core::config::{
    plan_update, public_view, Change, StoredConfig, UpdateMode, CANDID_KEY, CANDID_URL,
    HTTPS_ADDRESS,
};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The config as admins see it; also what the ETag covers.
#[derive(Serialize)]
pub struct ConfigView(pub Map<String, Value>);

impl ConfigView {
    pub fn of(stored: &StoredConfig) -> ConfigView {
        ConfigView(public_view(stored))
    }
}

pub async fn update_config(
    d: &Arc<Daemon>,
    _proof: &AdminProof,
    caller: &Caller,
    body: Map<String, Value>,
    mode: UpdateMode,
) -> ApiResult<()> {
    let _serial = d.config_update.lock().await;
    let current = read(&d.config).clone();
    let plan = plan_update(&current, &body, mode)?;
    if plan.is_empty() {
        return Ok(());
    }

    let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (key, change) in plan {
        let stored = match change {
            Change::Set(v) => Some(v),
            Change::Unset => None,
            Change::SetSecret(plain) => Some(
                tokio::task::spawn_blocking(move || rxd_auth::password::hash_password(&plain))
                    .await?
                    .map_err(ApiError::internal)?,
            ),
        };
        changes.insert(key, stored);
    }

    let mut new_config = current.clone();
    for (k, v) in &changes {
        match v {
            Some(v) => new_config.insert(k.clone(), v.clone()),
            None => new_config.remove(k),
        };
    }
    rxd_core::config::check_whole(&new_config)?;
    // A changed authentication server invalidates every login made with the old one.
    let forget_logins = changes.keys().any(|k| k.starts_with("candid."));
    // An https authentication server without a key: fetch its key over verified TLS once and
    // pin it in the config (LXD fetches it at every start).
    if forget_logins && !new_config.contains_key(CANDID_KEY) {
        if let Some(url) = new_config.get(CANDID_URL).cloned() {
            let key = crate::candid::fetch_public_key(&url).await?;
            tracing::info!(%url, %key, "pinned the Candid public key");
            changes.insert(CANDID_KEY.into(), Some(key.clone()));
            new_config.insert(CANDID_KEY.into(), key);
        }
    }

    // Bind the new HTTPS address first: a bad one is refused before anything changes.
    let listener_change = match changes.get(HTTPS_ADDRESS) {
        None => ListenerChange::Keep,
        Some(None) => ListenerChange::Stop,
        Some(Some(text)) => plan_listener(d, caller, text).await?,
    };

    let to_store = changes.clone();
    if let Err(e) = d
        .db(move |s| s.update_config(&to_store, forget_logins))
        .await
    {
        if let ListenerChange::Replaced { old, .. } = listener_change {
            restart_listener(d, &old).await;
        }
        return Err(e);
    }

    match listener_change {
        ListenerChange::Keep => {}
        ListenerChange::Stop => {
            let old = lock(&d.https).take();
            retire(old, caller).await;
        }
        ListenerChange::Start(bound) => {
            // The new listener serves before the old one drains.
            let old = lock(&d.https).take();
            let started = start_listener(d, bound);
            retire(old, caller).await;
            started?;
        }
        ListenerChange::Replaced { bound, .. } => start_listener(d, bound)?,
    }

    if forget_logins {
        let (daemon, cfg) = (d.clone(), new_config.clone());
        tokio::task::spawn_blocking(move || daemon.logins.reconfigure(&daemon.store, &cfg))
            .await?
            .map_err(ApiError::from)?;
    }
    lock(&d.warnings).refresh(&new_config);
    *write(&d.config) = new_config;
    let method = match mode {
        UpdateMode::Replace => "PUT",
        UpdateMode::Merge => "PATCH",
    };
    for (key, value) in &changes {
        let old = current.get(key).map(String::as_str);
        crate::audit::server_config_change(&d.audit, caller, method, key, old, value.as_deref());
        let action = if value.is_some() { "set" } else { "unset" };
        tracing::info!(key, action, by = %caller.identity.user_name(), peer = %caller.conn.peer(), "server config changed");
    }
    Ok(())
}

enum ListenerChange {
    Keep,
    Stop,
    /// Serve on these new sockets, then stop the current listener.
    Start(https::Bound),
    /// The current listener (at `old`) was already stopped to free its port for `bound`.
    Replaced {
        bound: https::Bound,
        old: ListenAddress,
    },
}

async fn plan_listener(d: &Daemon, caller: &Caller, text: &str) -> ApiResult<ListenerChange> {
    let addr = ListenAddress::parse(text)?;
    let refused = |e: std::io::Error| {
        ApiError::BadRequest(format!(
            "cannot listen on {text}: {e}; the current listener is unchanged"
        ))
    };
    let current_port = lock(&d.https)
        .as_ref()
        .map(|r| (r.address.clone(), r.address.port));
    match current_port {
        // The same address written differently ("127.0.0.1" and "127.0.0.1:8443").
        Some((current, _)) if current == addr => return Ok(ListenerChange::Keep),
        _ => {}
    }
    match https::bind(&addr).await {
        Ok(bound) => Ok(ListenerChange::Start(bound)),
        Err(e)
            if e.kind() == std::io::ErrorKind::AddrInUse
                && current_port.as_ref().is_some_and(|(_, p)| *p == addr.port) =>
        {
            // Another address on our own port (say ":8443" to "127.0.0.1:8443"): the kernel
            // refuses both at once, so release the old one first and put it back on failure.
            let Some(old) = lock(&d.https).take() else {
                return Err(refused(e));
            };
            let old_address = old.address.clone();
            old.stop_and_drain(caller.conn.listener).await;
            match https::bind(&addr).await {
                Ok(bound) => Ok(ListenerChange::Replaced {
                    bound,
                    old: old_address,
                }),
                Err(e) => {
                    restart_listener(d, &old_address).await;
                    Err(refused(e))
                }
            }
        }
        Err(e) => Err(refused(e)),
    }
}

/// Stop a listener that was taken out of service, and wait for it to drain.
async fn retire(old: Option<https::Running>, caller: &Caller) {
    if let Some(old) = old {
        let address = old.address.clone();
        old.stop_and_drain(caller.conn.listener).await;
        tracing::info!(%address, "HTTPS listener stopped");
    }
}

fn start_listener(d: &Daemon, bound: https::Bound) -> ApiResult<()> {
    let running = https::start(
        bound,
        d.tls.clone(),
        d.router()?,
        &d.tracker,
        &d.connections,
    );
    *lock(&d.https) = Some(running);
    Ok(())
}

/// Put a listener that was released for a change back, after the change failed.
async fn restart_listener(d: &Daemon, address: &ListenAddress) {
    match https::bind(address).await {
        Ok(bound) => {
            if let Err(e) = start_listener(d, bound) {
                tracing::error!(%address, error = %e, "could not restore the HTTPS listener");
            }
        }
        Err(e) => tracing::error!(%address, error = %e, "could not restore the HTTPS listener"),
    }
}
