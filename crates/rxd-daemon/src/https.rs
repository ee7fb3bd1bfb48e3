//! The HTTPS listener's life: bound from `core.https_address` at start-up, and replaced, moved or
//! removed while running when the key changes. A new address is bound before the old listener is
//! stopped, so a bad address is refused and the old listener keeps serving. A change returns once
//! the old listening sockets are closed and its connections have finished (bounded by
//! [`DRAIN_LIMIT`]), so from then on nothing is served at the old address.

use crate::listener::{run_https, ConnRegistry, HttpsContext, OpenConnections};
use axum::Router;
use rxd_core::address::{Host, ListenAddress};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// Listening sockets for one configured address, not yet serving.
pub struct Bound {
    pub address: ListenAddress,
    listeners: Vec<TcpListener>,
}

impl Bound {
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Longest a configuration change waits for the old listener's requests in flight to finish.
/// Those still running afterwards finish and close on their own.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Identifies listeners, so a request can tell whether it arrived on the one being stopped.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A listener that is serving.
pub struct Running {
    pub address: ListenAddress,
    pub local_addrs: Vec<SocketAddr>,
    id: u64,
    stop: watch::Sender<bool>,
    open: Arc<OpenConnections>,
    accept_loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stop accepting; connections already open finish their request in flight and close.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stop, wait until the listening sockets are closed (so their port can be bound again), then
    /// until its connections have closed. `caller_listener` is the listener the request asking
    /// for this arrived on: if it is this one, its own connection is not waited for (it closes
    /// after the answer).
    pub async fn stop_and_drain(self, caller_listener: Option<u64>) {
        self.stop();
        for handle in self.accept_loops {
            let _ = handle.await;
        }
        let own = usize::from(caller_listener == Some(self.id));
        if tokio::time::timeout(DRAIN_LIMIT, self.open.at_most(own))
            .await
            .is_err()
        {
            tracing::warn!(address = %self.address, "HTTPS listener stopped; requests still in flight on it will finish");
        }
    }
}

/// Bind every address `addr` stands for. A wildcard binds `[::]` (which also takes IPv4 on Linux),
/// or `0.0.0.0` where IPv6 is off.
pub async fn bind(addr: &ListenAddress) -> std::io::Result<Bound> {
    let targets: Vec<SocketAddr> = match &addr.host {
        None => vec![SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            addr.port,
        )],
        Some(Host::Ip(ip)) => vec![SocketAddr::new(*ip, addr.port)],
        Some(Host::Name(name)) => {
            let mut v: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), addr.port))
                .await?
                .collect();
            v.sort();
            v.dedup();
            v
        }
    };
    let mut listeners = Vec::new();
    for target in targets {
        match bind_one(target) {
            Ok(l) => listeners.push(l),
            Err(_) if addr.host.is_none() => listeners.push(bind_one(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                addr.port,
            ))?),
            Err(e) => return Err(e),
        }
    }
    if listeners.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host name resolves to no address",
        ));
    }
    Ok(Bound {
        address: addr.clone(),
        listeners,
    })
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Start serving on `bound`.
pub fn start(
    bound: Bound,
    tls: crate::tlsstate::SharedTls,
    router: Router,
    tracker: &TaskTracker,
    registry: &Arc<ConnRegistry>,
) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let ctx = HttpsContext {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        stop: stop_rx,
        open: Arc::new(OpenConnections::default()),
    };
    let local_addrs = bound.local_addrs();
    let accept_loops = bound
        .listeners
        .into_iter()
        .map(|l| {
            tracker.spawn(run_https(
                l,
                tls.clone(),
                router.clone(),
                ctx.clone(),
                tracker.clone(),
                registry.clone(),
            ))
        })
        .collect();
    for a in &local_addrs {
        tracing::info!(address = %a, "HTTPS listener started");
    }
    Running {
        address: bound.address,
        local_addrs,
        id: ctx.id,
        stop,
        open: ctx.open,
        accept_loops,
    }
}

/// The addresses clients can use, for `environment.addresses` and tokens: the bound address, or
/// for a wildcard every non-link-local address of the host.
pub fn advertised_addresses(running: &Running) -> Vec<String> {
    let fmt = |ip: IpAddr, port: u16| match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    };
    let mut out = Vec::new();
    for a in &running.local_addrs {
        if a.ip().is_unspecified() {
            if let Ok(ifaces) = nix::ifaddrs::getifaddrs() {
                for iface in ifaces {
                    let Some(storage) = iface.address else {
                        continue;
                    };
                    let ip = if let Some(v4) = storage.as_sockaddr_in() {
                        IpAddr::V4(v4.ip())
                    } else if let Some(v6) = storage.as_sockaddr_in6() {
                        IpAddr::V6(v6.ip())
                    } else {
                        continue;
                    };
                    let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
                        || matches!(ip, IpAddr::V4(v4) if v4.is_link_local());
                    if !link_local && (a.is_ipv6() || ip.is_ipv4()) {
                        out.push(fmt(ip, a.port()));
                    }
                }
            }
        } else {
            out.push(fmt(a.ip(), a.port()));
        }
    }
    out.sort();
    out.dedup();
    out
}
