//! Changing the server config: validate the whole update, hash secrets, bind a new HTTPS address
//! before anything is stored, store atomically, then switch listeners and refresh warnings.
//! Any failure leaves the running daemon and the database as they were.

use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::https;
use crate::state::{lock, read, write, Daemon};
use rxd_auth::AdminProof;
use rxd_core::address::ListenAddress;
use rxd_core::config::{plan_update, public_view, Change, StoredConfig, UpdateMode, HTTPS_ADDRESS};
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

    // Bind the new HTTPS address first: a bad one is refused before anything changes.
    let listener_change = match changes.get(HTTPS_ADDRESS) {
        None => ListenerChange::Keep,
        Some(None) => ListenerChange::Stop,
        Some(Some(text)) => {
            let addr = ListenAddress::parse(text)?;
            if lock(&d.https).as_ref().is_some_and(|r| r.address == addr) {
                // The same address written differently ("127.0.0.1" and "127.0.0.1:8443").
                ListenerChange::Keep
            } else {
                ListenerChange::Start(https::bind(&addr).await.map_err(|e| {
                    ApiError::BadRequest(format!(
                        "cannot listen on {text}: {e}; the current listener is unchanged \
                         (to move to another address on the same port, unset core.https_address first)"
                    ))
                })?)
            }
        }
    };

    let to_store = changes.clone();
    d.db(move |s| s.update_config(&to_store)).await?;

    if !matches!(listener_change, ListenerChange::Keep) {
        if let Some(old) = lock(&d.https).take() {
            old.stop();
            tracing::info!(address = %old.address, "HTTPS listener stopped");
        }
    }
    if let ListenerChange::Start(bound) = listener_change {
        let running = https::start(bound, d.tls.clone(), d.router()?, &d.tracker);
        *lock(&d.https) = Some(running);
    }

    let mut new_config = current;
    for (k, v) in &changes {
        match v {
            Some(v) => new_config.insert(k.clone(), v.clone()),
            None => new_config.remove(k),
        };
    }
    lock(&d.warnings).refresh(&new_config);
    *write(&d.config) = new_config;
    for (key, value) in &changes {
        let action = if value.is_some() { "set" } else { "unset" };
        tracing::info!(key, action, by = %caller.identity.user_name(), peer = %caller.conn.peer(), "server config changed");
    }
    Ok(())
}

enum ListenerChange {
    Keep,
    Stop,
    Start(https::Bound),
}
