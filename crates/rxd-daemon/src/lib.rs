//! The rxd daemon as a library: prepare the state directory and keypair, open the store, serve the
//! API on the unix socket and (when `core.https_address` is set) over HTTPS, and shut down cleanly.
#![forbid(unsafe_code)]

mod body;
mod caller;
mod config;
mod error;
mod facts;
mod https;
mod listener;
mod response;
mod routes;
mod state;
mod statedir;
mod tokens;
mod warnings;

use crate::state::{lock, Daemon};
use rxd_core::address::ListenAddress;
use rxd_core::config::HTTPS_ADDRESS;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// How long in-flight requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Options {
    /// The state directory (`$RXD_DIR`).
    pub dir: PathBuf,
    /// Group owning the unix socket; members get full control of rxd, i.e. root on this host.
    pub group: Option<String>,
}

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    StateDir(#[from] statedir::StateDirError),
    #[error("server keypair: {0}")]
    KeyPair(#[from] rxd_tls::KeyPairError),
    #[error("TLS: {0}")]
    Tls(#[from] rxd_tls::TlsError),
    #[error("database: {0}")]
    Store(#[from] rxd_store::StoreError),
    #[error("unix socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown group {0:?} for the unix socket")]
    UnknownGroup(String),
}

pub async fn run(
    opts: Options,
    shutdown_signal: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let dir = opts.dir.clone();
    let _lock = statedir::prepare(&dir)?;
    tracing::info!(dir = %dir.display(), "state directory ready");

    let gid = match &opts.group {
        None => 0,
        Some(name) => nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
            .ok_or_else(|| DaemonError::UnknownGroup(name.clone()))?,
    };

    let host = facts::host_name();
    let keypair = rxd_tls::KeyPairFiles::load_or_generate(
        &dir.join("server.crt"),
        &dir.join("server.key"),
        rxd_tls::Role::Server,
        &format!("root@{host}"),
        &host,
    )?;
    if keypair.generated {
        tracing::warn!(fingerprint = %keypair.fingerprint, "generated a new server certificate; clients that pinned an earlier one will refuse it until re-added");
    }
    tracing::info!(fingerprint = %keypair.fingerprint, "server certificate");
    let tls = rxd_tls::server::server_config(&keypair, Vec::new())?;

    let store = Arc::new(rxd_store::Store::open(&dir.join("rxd.db"))?);
    let config = store.config()?;
    let certificates = store.certificates()?;
    let trust = state::trust_store(&certificates);
    tracing::info!(certificates = trust.len(), "trust store loaded");

    let (shutdown, shutdown_rx) = watch::channel(false);
    let daemon = Arc::new(Daemon {
        store,
        keypair,
        tls,
        facts: facts::HostFacts::read(),
        config: RwLock::new(config.clone()),
        config_update: tokio::sync::Mutex::new(()),
        trust: RwLock::new(trust),
        https: Mutex::new(None),
        warnings: Mutex::new(warnings::Warnings::default()),
        throttle: Mutex::new(Default::default()),
        router: OnceLock::new(),
        connections: Default::default(),
        tracker: TaskTracker::new(),
        shutdown,
    });
    let router = routes::router(daemon.clone());
    let _ = daemon.router.set(router.clone());

    let socket_path = dir.join("unix.socket");
    let unix = listener::bind_unix(&socket_path, gid).map_err(|source| DaemonError::Socket {
        path: socket_path.clone(),
        source,
    })?;
    tracing::info!(path = %socket_path.display(), gid, mode = "0660", "unix socket listening (its users have full control of this host)");
    daemon.tracker.spawn(listener::run_unix(
        unix,
        router.clone(),
        shutdown_rx.clone(),
        daemon.tracker.clone(),
    ));

    if let Some(text) = config.get(HTTPS_ADDRESS) {
        match ListenAddress::parse(text) {
            Ok(addr) => match https::bind(&addr).await {
                Ok(bound) => {
                    let running = https::start(
                        bound,
                        daemon.tls.clone(),
                        router.clone(),
                        &daemon.tracker,
                        &daemon.connections,
                    );
                    *lock(&daemon.https) = Some(running);
                }
                Err(e) => {
                    tracing::error!(address = %text, error = %e, "cannot start the HTTPS listener; fix core.https_address")
                }
            },
            Err(e) => tracing::error!(address = %text, error = %e, "invalid core.https_address"),
        }
    }
    lock(&daemon.warnings).refresh(&config);
    tracing::info!(pid = std::process::id(), "rxd ready");

    shutdown_signal.await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    let _ = daemon.shutdown.send(true);
    if let Some(running) = lock(&daemon.https).take() {
        running.stop();
    }
    daemon.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, daemon.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; closing anyway");
    }
    let _ = std::fs::remove_file(&socket_path);
    tracing::info!("rxd stopped");
    Ok(())
}
