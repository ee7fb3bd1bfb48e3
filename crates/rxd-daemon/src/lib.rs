//! The rxd daemon as a library: prepare the state directory and keypair, open the store, serve the
//! API on the unix socket and (when `core.https_address` is set) over HTTPS, and shut down cleanly.
#![forbid(unsafe_code)]

mod audit;
mod authorize;
mod body;
mod caller;
mod candid;
mod channels;
mod config;
mod danger;
mod envelope;
mod environment;
mod error;
mod events;
mod facts;
mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
mod hostids;
mod https;
mod listener;
mod listing;
mod networking;
mod operations;
mod origin;
mod patch;
mod pools;
mod response;
mod routes;
mod service;
mod state;
mod statedir;
mod sync;
mod tlsstate;
mod tokens;
mod views;
mod warnings;

use crate::state::Daemon;
use crate::sync::lock;
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
    #[error("container runtime directories: {0}")]
    Runtime(std::io::Error),
    #[error("storage pools: {0}")]
    Storage(String),
}

/// Why the daemon is stopping, which decides what happens to running containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// The daemon alone stops (SIGTERM, `systemctl restart rxd`): containers keep running and
    /// the next daemon finds them.
    Daemon,
    /// The host is going down (SIGPWR, `rxd shutdown`): instances are halted cleanly first
    /// (`boot.host_shutdown_timeout`, `boot.stop.priority`).
    Host,
}

pub async fn run(
    opts: Options,
    shutdown_signal: impl Future<Output = Shutdown>,
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
    let tls = Arc::new(RwLock::new(Arc::new(tlsstate::load(&dir, &host)?)));

    let store = Arc::new(rxd_store::Store::open(&dir.join("rxd.db"))?);
    let config = store.config()?;
    let trust = state::load_trust(&store)?;
    tracing::info!(certificates = trust.len(), "trust store loaded");
    let projects = state::projects_map(store.projects()?);
    let grants = state::grants_list(store.grants()?);
    let logins = candid::Logins::load(store.clone(), &config)?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let events = events::Events::default();
    let daemon = Arc::new(Daemon {
        dir: dir.clone(),
        store,
        tls,
        facts: facts::HostFacts::read(),
        config: RwLock::new(config.clone()),
        config_update: tokio::sync::Mutex::new(()),
        trust: RwLock::new(trust),
        projects: RwLock::new(Arc::new(projects)),
        grants: RwLock::new(Arc::new(grants)),
        logins,
        environment_cache: Default::default(),
        https: Mutex::new(None),
        warnings: Mutex::new(warnings::Warnings::default()),
        throttle: Mutex::new(Default::default()),
        profiles_lock: tokio::sync::RwLock::new(()),
        image_secrets: Default::default(),
        router: OnceLock::new(),
        connections: Default::default(),
        audit: audit::AuditLog::start(&dir, audit::MAX_BYTES, events.clone()),
        events,
        operations: Default::default(),
        hostids: match hostids::load() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "no usable subordinate ids for root: only privileged containers will be able to run");
                None
            }
        },
        runtime: rxd_runtime::Runtime::new(&dir).map_err(DaemonError::Runtime)?,
        networks: Default::default(),
        pools: Default::default(),
        exec_sessions: Default::default(),
        tracker: TaskTracker::new(),
        shutdown,
    });
    // Bridges and their dnsmasq first, so recovered and autostarted containers find them;
    // then the filters of the NICs and the NAT proxies of containers still running, and the
    // whole firewall.
    let has_networks = service::networks::reconcile(&daemon).await;
    // Pools mounted (and what rxd kept before pools moved into `default`) before recovery
    // looks at any instance's files.
    service::pools::start(&daemon).await?;
    service::recovery::recover(&daemon).await;
    if has_networks {
        service::nics::recover(&daemon).await;
        service::proxy_nat::recover(&daemon).await;
        let guard = daemon.networks.lock.lock().await;
        service::networks::rebuild_firewall(&daemon, &guard).await;
    }
    service::images::prune(&daemon).await;
    daemon
        .tracker
        .spawn(service::images::upkeep(daemon.clone(), shutdown_rx.clone()));
    daemon.tracker.spawn(service::networks::refresher(
        daemon.clone(),
        shutdown_rx.clone(),
    ));
    daemon.tracker.spawn(service::instances::watch(
        daemon.clone(),
        shutdown_rx.clone(),
    ));
    daemon
        .tracker
        .spawn(service::schedule::run(daemon.clone(), shutdown_rx.clone()));
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
    // Once the listeners hold their addresses (a container's proxy never takes the API's port
    // first): the forwarders of running containers that ended while the daemon was away, then
    // autostart, after recovery adopted what still runs, so only stopped instances are
    // started; told to stop before a host shutdown halts instances, so it starts none behind it.
    daemon
        .tracker
        .spawn(service::recovery::restart_proxies(daemon.clone()));
    let (stop_autostart, autostart_stopping) = watch::channel(false);
    let autostart = daemon
        .tracker
        .spawn(service::autostart::run(daemon.clone(), autostart_stopping));
    daemon
        .tracker
        .spawn(watch_tls_files(daemon.clone(), shutdown_rx.clone()));
    tracing::info!(pid = std::process::id(), "rxd ready");

    let why = shutdown_signal.await;
    // An autostart in progress finishes the start it is in, then starts nothing more.
    stop_autostart.send_replace(true);
    let _ = autostart.await;
    if why == Shutdown::Host {
        service::instances::stop_all_for_host(&daemon).await;
    }
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    daemon.shutdown.send_replace(true);
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
    daemon.runtime.prune_cgroup_parents();
    tracing::info!("rxd stopped");
    Ok(())
}

/// How often the TLS and PKI files are checked for changes.
const TLS_POLL: Duration = Duration::from_secs(2);

/// Reload the keypair, CA and CRL on SIGHUP or when one of their files changes.
async fn watch_tls_files(daemon: Arc<Daemon>, mut stop: watch::Receiver<bool>) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = tlsstate::stamp(&daemon.dir);
    loop {
        let forced = tokio::select! {
            _ = listener::stopped(&mut stop) => return,
            _ = tokio::time::sleep(TLS_POLL) => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = tlsstate::stamp(&daemon.dir);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        let current = daemon.tls_state();
        match tlsstate::reload(&daemon.dir, &current) {
            Ok(new) => {
                *sync::write(&daemon.tls) = Arc::new(new);
                tracing::info!(
                    trigger = if forced { "SIGHUP" } else { "file change" },
                    "TLS and PKI state reloaded"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "refusing the changed TLS/PKI files; the previous state stays in force")
            }
        }
    }
}
