//! The daemon's shared state, handed to every handler.

use crate::error::{ApiError, ApiResult};
use crate::facts::HostFacts;
use crate::https::{self, Running};
use crate::tlsstate::TlsState;
use crate::warnings::Warnings;
use axum::Router;
use rxd_auth::throttle::Throttle;
use rxd_auth::{TrustStore, TrustedCert};
use rxd_core::config::StoredConfig;
use rxd_store::{CertificateRow, Store};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

pub struct Daemon {
    pub dir: std::path::PathBuf,
    pub store: Arc<Store>,
    /// The TLS identity and PKI state; replaced whole on reload.
    pub tls: Arc<RwLock<Arc<TlsState>>>,
    pub facts: HostFacts,
    /// The stored config (secrets hashed); written only under `config_update`.
    pub config: RwLock<StoredConfig>,
    /// Serializes config updates, so binding, storing and switching listeners happen as one step.
    pub config_update: tokio::sync::Mutex<()>,
    pub trust: RwLock<TrustStore>,
    pub https: Mutex<Option<Running>>,
    pub warnings: Mutex<Warnings>,
    pub throttle: Mutex<Throttle>,
    pub router: OnceLock<Router>,
    /// Open TLS connections by client certificate, closed on revocation.
    pub connections: Arc<crate::listener::ConnRegistry>,
    pub events: crate::events::Events,
    pub operations: crate::operations::Operations,
    /// The host id range for unprivileged containers (from /etc/subuid and /etc/subgid).
    pub hostids: Option<crate::hostids::HostIds>,
    /// Containers: started, signalled and cleaned up through the `rxd-shim` helper.
    pub runtime: crate::runtime::Runtime,
    /// Exec operations waiting for their websockets.
    pub exec_sessions: crate::routes::exec::Sessions,
    pub tracker: TaskTracker,
    pub shutdown: watch::Sender<bool>,
}

/// Poisoned locks only follow a panic in another request; the data is still consistent because
/// every critical section here is a single assignment or map operation.
pub fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
pub fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Daemon {
    pub fn tls_state(&self) -> Arc<TlsState> {
        read(&self.tls).clone()
    }

    /// Run a blocking store call off the async executor.
    pub async fn db<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, rxd_store::StoreError> + Send + 'static,
    ) -> ApiResult<R> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store)).await??)
    }

    pub fn router(&self) -> ApiResult<Router> {
        self.router
            .get()
            .cloned()
            .ok_or_else(|| ApiError::internal("router not ready"))
    }

    /// The addresses clients can reach the HTTPS listener on.
    pub fn addresses(&self) -> Vec<String> {
        lock(&self.https)
            .as_ref()
            .map(https::advertised_addresses)
            .unwrap_or_default()
    }

    pub fn trust_insert(&self, row: &CertificateRow) {
        if let Some(fp) = fingerprint_bytes(&row.fingerprint) {
            write(&self.trust).insert(fp, trusted_cert(row));
        }
    }

    /// Drop a certificate from the trust cache and close the connections it authenticated.
    /// Returns how many connections were closed.
    pub fn trust_remove(&self, fingerprint: &str) -> usize {
        match fingerprint_bytes(fingerprint) {
            Some(fp) => {
                write(&self.trust).remove(&fp);
                self.connections.close(&fp)
            }
            None => 0,
        }
    }
}

pub fn fingerprint_bytes(hex_fp: &str) -> Option<[u8; 32]> {
    hex::decode(hex_fp).ok()?.try_into().ok()
}

pub fn trusted_cert(row: &CertificateRow) -> TrustedCert {
    TrustedCert {
        fingerprint: row.fingerprint.clone(),
        name: row.name.clone(),
        restricted: row.restricted,
        projects: row.projects.clone(),
        not_before: row.not_before,
        not_after: row.not_after,
    }
}

pub fn trust_store(rows: &[CertificateRow]) -> TrustStore {
    TrustStore::new(
        rows.iter()
            .filter(|r| r.kind == "client")
            .filter_map(|r| Some((fingerprint_bytes(&r.fingerprint)?, trusted_cert(r)))),
    )
}
