//! The daemon's shared state, handed to every handler.

use crate::error::{ApiError, ApiResult};
use crate::facts::HostFacts;
use crate::https::{self, Running};
use crate::sync::{lock, read, write};
use crate::tlsstate::TlsState;
use crate::warnings::Warnings;
use axum::Router;
use rxd_auth::rbac::{Grant, Scope, Subject};
use rxd_auth::throttle::Throttle;
use rxd_auth::{TrustStore, TrustedCert};
use rxd_core::config::StoredConfig;
use rxd_store::{CertificateRow, Store};
use std::collections::BTreeMap;
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
    /// Projects by name, replaced whole after every change.
    pub projects: RwLock<Arc<BTreeMap<String, Project>>>,
    /// Role grants, replaced whole after every change, so a grant or revocation applies to the
    /// next request.
    pub grants: RwLock<Arc<Vec<Grant>>>,
    /// Candid logins: key pair, configuration and login root keys.
    pub logins: crate::candid::Logins,
    /// `GET /1.0`'s environment, serialized once per TLS identity and listener addresses.
    pub environment_cache: crate::environment::EnvironmentCache,
    pub https: Mutex<Option<Running>>,
    pub warnings: Mutex<Warnings>,
    pub throttle: Mutex<Throttle>,
    /// Profile writes hold it to write, and every change to which profiles an instance uses
    /// or to its own config holds it to read: a profile's check of the instances using it
    /// sees them as they will be when it is written.
    pub profiles_lock: tokio::sync::RwLock<()>,
    /// One-time secrets that open one private image to another server (`lxc image copy`).
    pub image_secrets: crate::service::image_secrets::ImageSecrets,
    pub router: OnceLock<Router>,
    /// Open TLS connections by client certificate, closed on revocation.
    pub connections: Arc<crate::listener::ConnRegistry>,
    pub events: crate::events::Events,
    /// The security log: its file writer and its `logging` events.
    pub audit: crate::audit::AuditLog,
    pub operations: crate::operations::Operations,
    /// The host id range for unprivileged containers (from /etc/subuid and /etc/subgid).
    pub hostids: Option<crate::hostids::HostIds>,
    /// Containers: started, signalled and cleaned up through the `rxd-shim` helper.
    pub runtime: rxd_runtime::Runtime,
    /// Managed networks' dnsmasq processes, errors and running NICs' filters.
    pub networks: crate::networking::Networks,
    /// Storage pools, mounted.
    pub pools: crate::pools::PoolSet,
    /// Exec operations waiting for their websockets.
    pub exec_sessions: crate::channels::Sessions,
    pub tracker: TaskTracker,
    pub shutdown: watch::Sender<bool>,
}

/// A project as the daemon keeps it in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub description: String,
    pub config: BTreeMap<String, String>,
}

/// Projects from their rows (a row with unreadable config keeps an empty one, logged).
pub fn projects_map(rows: Vec<rxd_store::ProjectRow>) -> BTreeMap<String, Project> {
    rows.into_iter()
        .map(|r| {
            let config = serde_json::from_str(&r.config).unwrap_or_else(|e| {
                tracing::error!(project = %r.name, error = %e, "unreadable project config");
                BTreeMap::new()
            });
            (
                r.name,
                Project {
                    description: r.description,
                    config,
                },
            )
        })
        .collect()
}

/// Grants from their rows; a row that does not parse is skipped (and logged), never widened.
pub fn grants_list(rows: Vec<rxd_store::GrantRow>) -> Vec<Grant> {
    rows.into_iter()
        .filter_map(|r| {
            let parsed = (|| {
                Ok::<_, String>(Grant {
                    id: r.id,
                    subject: Subject::parse(&r.identity_type, &r.identity)?,
                    role: r.role.parse()?,
                    scope: Scope::parse(&r.scope, &r.project)?,
                })
            })();
            parsed
                .map_err(|e| tracing::error!(grant = r.id, error = %e, "unreadable grant skipped"))
                .ok()
        })
        .collect()
}

impl Daemon {
    /// The rights of `identity` under the current grants.
    pub fn rights(&self, identity: &rxd_auth::Identity) -> rxd_auth::rbac::Rights {
        rxd_auth::rbac::rights(identity, &read(&self.grants))
    }

    pub fn project(&self, name: &str) -> Option<Project> {
        read(&self.projects).get(name).cloned()
    }

    /// Every project, as the daemon holds them now.
    pub fn projects(&self) -> Arc<BTreeMap<String, Project>> {
        read(&self.projects).clone()
    }

    /// Reload projects, grants and the trust cache (whose project lists follow project renames
    /// and deletions) from the store.
    pub async fn reload_access(&self) -> ApiResult<()> {
        let (projects, grants, certs) = self
            .db(|s| Ok((s.projects()?, s.grants()?, load_trust(s)?)))
            .await?;
        *write(&self.projects) = Arc::new(projects_map(projects));
        *write(&self.grants) = Arc::new(grants_list(grants));
        *write(&self.trust) = certs;
        Ok(())
    }

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

/// The trust cache, built from the store row by row (client entries only).
pub fn load_trust(store: &Store) -> Result<TrustStore, rxd_store::StoreError> {
    let mut trust = TrustStore::default();
    store.each_trust_entry(|r| {
        if let (true, Some(fp)) = (r.kind == "client", fingerprint_bytes(&r.fingerprint)) {
            trust.insert(fp, trusted_cert(&r));
        }
    })?;
    Ok(trust)
}
