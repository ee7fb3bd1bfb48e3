//! What the daemon keeps about its managed networks besides their rows (the rules are
//! `service::networks`', `service::nics`' and `service::proxy_nat`'s).

use rxd_core::network::nft;
use rxd_network::dnsmasq::Dnsmasq;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Proof that the caller holds [`Networks::lock`] (the firewall is only ever changed under it).
pub type Held<'a> = tokio::sync::MutexGuard<'a, ()>;

/// What the daemon keeps about its managed networks besides their rows.
#[derive(Default)]
pub struct Networks {
    /// Held by every change to a bridge, the firewall, dnsmasq or the hosts files.
    pub lock: tokio::sync::Mutex<()>,
    dnsmasq: Mutex<BTreeMap<String, Dnsmasq>>,
    /// Networks whose last set-up failed, with why.
    errors: Mutex<BTreeMap<String, String>>,
    /// Networks a released NIC left with a lease a DHCPRELEASE cannot free (IPv6) or no running
    /// dnsmasq: it is restarted on a pruned lease file by the refresher task, off the request
    /// that freed them.
    pub dirty: Mutex<std::collections::BTreeSet<String>>,
    pub refresh: tokio::sync::Notify,
    /// The filters of the NICs of running containers, by instance key and device.
    pub nics: Mutex<BTreeMap<(String, String), nft::NicRules>>,
    /// The DNAT rules of running containers' `nat=true` proxy devices, by instance key and
    /// device (`service::proxy_nat`).
    pub proxies: Mutex<BTreeMap<(String, String), nft::ProxyNat>>,
    /// Whether the last whole ruleset applied is in place (NICs' chains may be added to it).
    firewall_whole: std::sync::atomic::AtomicBool,
}

impl Networks {
    /// Whether the firewall holds the whole ruleset last applied (and the NICs' chains added
    /// to it since).
    pub fn firewall_whole(&self) -> bool {
        self.firewall_whole
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set_firewall_whole(&self, whole: bool) {
        self.firewall_whole
            .store(whole, std::sync::atomic::Ordering::SeqCst);
    }

    /// Why `name` is unusable, if its last set-up failed.
    pub fn error(&self, name: &str) -> Option<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn set_error(&self, name: &str, error: Option<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        match error {
            Some(e) => errors.insert(name.to_owned(), e),
            None => errors.remove(name),
        };
    }

    pub fn take_dnsmasq(&self, name: &str) -> Option<Dnsmasq> {
        self.dnsmasq
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    pub fn put_dnsmasq(&self, name: &str, dnsmasq: Dnsmasq) {
        self.dnsmasq
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), dnsmasq);
    }

    /// Whether the daemon holds a running dnsmasq for a network.
    pub fn has_dnsmasq(&self, name: &str) -> bool {
        self.dnsmasq
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// Whether a network's dnsmasq is one whose start is still to be confirmed.
    pub fn dnsmasq_unconfirmed(&self, name: &str) -> bool {
        self.dnsmasq
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .is_some_and(|d| !d.confirmed())
    }

    /// Signals a network's dnsmasq to read its hosts files again.
    pub fn reload_dnsmasq(&self, name: &str) {
        let guard = self.dnsmasq.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dnsmasq) = guard.get(name) {
            if let Err(e) = dnsmasq.reload() {
                tracing::warn!(network = name, error = %e, "dnsmasq not reloaded");
            }
        }
    }
}
