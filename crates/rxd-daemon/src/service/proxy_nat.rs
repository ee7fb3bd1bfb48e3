//! `nat=true` proxy devices below HTTP: no forwarder, but DNAT rules in rxd's own firewall
//! (`rxd_core::network::nft::ProxyNat`), kept in `Networks::proxies` while their container
//! runs, so every rebuild of the ruleset carries them. Each time they are worked out, the
//! connect address is checked against the instance's static NIC addresses on managed bridges
//! (LXD's rule, `rxd_core::proxy::nat_target`): the rules never reach another instance.

use crate::error::{ApiError, ApiResult};
use crate::service::networks;
use crate::state::Daemon;
use rxd_core::devices::{Device, Devices};
use rxd_core::name::InstanceKey;
use rxd_core::network::config::IfName;
use rxd_core::network::nft::ProxyNat;
use rxd_store::NetworkRow;
use std::collections::BTreeMap;

type Config = BTreeMap<String, String>;

fn is_proxy(device: &Device) -> bool {
    device.get("type").map(String::as_str) == Some("proxy")
}

/// Whether a device is a valid `nat=true` proxy (an invalid one is refused by whoever starts
/// its forwarder).
fn is_nat(device: &Device) -> bool {
    is_proxy(device) && rxd_core::proxy::validate(device).is_ok_and(|p| p.nat)
}

/// The NAT rules of the `nat=true` proxies among `devices` (expanded) of the container `key`,
/// whose config (with its NICs' `volatile.<dev>.host_name`) is `config`.
fn rules(
    key: &InstanceKey,
    devices: &Devices,
    config: &Config,
    managed: &[NetworkRow],
) -> ApiResult<Vec<ProxyNat>> {
    let nics: Vec<(&str, &Device)> = devices
        .iter()
        .filter(|(_, dev)| managed.iter().any(|row| networks::uses(dev, &row.name)))
        .map(|(name, dev)| (name.as_str(), dev))
        .collect();
    let mut out = Vec::new();
    for (name, device) in devices.iter().filter(|(_, dev)| is_proxy(dev)) {
        let failed = |e: &dyn std::fmt::Display| {
            ApiError::BadRequest(format!("Failed to start device {name:?}: {e}"))
        };
        let proxy = rxd_core::proxy::validate(device).map_err(|e| {
            ApiError::BadRequest(format!("Device validation failed for {name:?}: {e}"))
        })?;
        if !proxy.nat {
            continue;
        }
        let target =
            rxd_core::proxy::nat_target(&proxy, nics.iter().copied()).map_err(|e| failed(&e))?;
        let host = config
            .get(&format!("volatile.{}.host_name", target.nic))
            .and_then(|h| IfName::parse(h).ok())
            .ok_or_else(|| {
                failed(&format!(
                    "Proxy cannot find the host interface of NIC {:?}",
                    target.nic
                ))
            })?;
        let rules =
            ProxyNat::new(key.clone(), name, host, &proxy, target.ip).map_err(|e| failed(&e))?;
        out.push(rules);
    }
    Ok(out)
}

/// Puts `rules` in place of the container `key`'s NAT proxies; says whether anything changed.
fn replace(d: &Daemon, key: &InstanceKey, rules: Vec<ProxyNat>) -> bool {
    let mut proxies = d.networks.proxies.lock().unwrap_or_else(|e| e.into_inner());
    let before: Vec<ProxyNat> = proxies
        .iter()
        .filter(|((k, _), _)| k == key.as_str())
        .map(|(_, p)| p.clone())
        .collect();
    proxies.retain(|(k, _), _| k != key.as_str());
    let changed = before != rules;
    for p in rules {
        proxies.insert((key.to_string(), p.device().to_owned()), p);
    }
    changed
}

/// The running container `key`'s NAT proxies made those of `devices` (its expanded devices,
/// all of them), and the firewall rebuilt if they changed: at start, on a device change, when
/// the daemon restarts their forwarders. A target that is not the instance's refuses the
/// whole change, leaving the rules as they were.
pub async fn sync(d: &Daemon, key: &str, devices: &Devices) -> ApiResult<()> {
    let held = d
        .networks
        .proxies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .any(|(k, _)| k == key);
    if !held && !devices.values().any(is_nat) {
        return Ok(());
    }
    let key = InstanceKey::parse(key)
        .ok_or_else(|| ApiError::internal(format!("not an instance key: {key}")))?;
    let guard = d.networks.lock.lock().await;
    let managed = networks::list(d).await?;
    let (p, n) = key.split();
    let (p, n) = (p.to_owned(), n.to_owned());
    let row = d.db(move |s| s.instance(&p, &n)).await?;
    let config: Config = serde_json::from_str(&row.config).unwrap_or_default();
    let rules = rules(&key, devices, &config, &managed)?;
    if replace(d, &key, rules) {
        networks::rebuild_firewall(d, &guard).await;
    }
    Ok(())
}

/// The container `key` stopped (or did not start): its NAT proxies go.
pub async fn clear(d: &Daemon, key: &InstanceKey) {
    let guard = d.networks.lock.lock().await;
    if replace(d, key, Vec::new()) {
        networks::rebuild_firewall(d, &guard).await;
    }
}

/// At daemon start, before the first rebuild: the NAT proxies of containers still running, so
/// the rebuilt firewall keeps them.
pub async fn recover(d: &Daemon) {
    let Ok(rows) = d.db(|s| s.all_instances()).await else {
        return;
    };
    let Ok(managed) = networks::list(d).await else {
        return;
    };
    for row in rows {
        let key = InstanceKey::new(&row.project, &row.name);
        if d.runtime.init(&key).is_none() {
            continue;
        }
        let Ok(expanded) = crate::service::expand::expanded(d, &row).await else {
            continue;
        };
        if !expanded.devices.values().any(is_nat) {
            continue;
        }
        let config: Config = serde_json::from_str(&row.config).unwrap_or_default();
        match rules(&key, &expanded.devices, &config, &managed) {
            Ok(rules) => {
                replace(d, &key, rules);
            }
            Err(e) => {
                tracing::warn!(instance = %key, error = %e, "NAT proxies not recovered")
            }
        }
    }
}
