//! Managed bridge networks below HTTP: their rows, the bridge, its addresses and sysctls, the
//! firewall (rxd's own `inet rxd` and `bridge rxd` tables, rebuilt whole from what the daemon
//! knows on every change) and one dnsmasq each. Every write is the server administrator's
//! (`AdminProof`); every change to a bridge, the firewall, dnsmasq or the hosts files holds
//! `Networks::lock`, so they happen one at a time in one order.

use crate::error::{ApiError, ApiResult};
use crate::networking::Held;
use crate::state::Daemon;
use rxd_auth::proof::AdminProof;
use rxd_core::name::InstanceKey;
use rxd_core::network::config::{self as netcfg, BridgeConfig, IfName, NetworkName};
use rxd_core::network::{dnsmasq as dm, mac, nft, subnet};
use rxd_core::profile::project_suffix;
use rxd_core::warnings::WarningKind;
use rxd_network::dnsmasq::Dnsmasq;
use rxd_network::{IfaceSysctl, Netlink};
use rxd_store::{NetworkRow, NicRow};
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The account dnsmasq drops to (Debian's `dnsmasq-base` makes it; else `nobody`), and the
/// group that reads the hosts files.
const DNSMASQ_GROUP: &str = "nogroup";

pub type Config = BTreeMap<String, String>;

pub fn config_of(row: &NetworkRow) -> Config {
    serde_json::from_str(&row.config).unwrap_or_else(|e| {
        tracing::error!(network = %row.name, error = %e, "unreadable network config");
        Config::new()
    })
}

pub fn network_dir(d: &Daemon, name: &str) -> PathBuf {
    d.dir.join("networks").join(name)
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// A network as the firewall, dnsmasq and the NICs on it see it.
pub fn typed(row: &NetworkRow) -> ApiResult<(NetworkName, BridgeConfig)> {
    let name = NetworkName::parse(&row.name).map_err(bad)?;
    let config = BridgeConfig::from_config(&config_of(row)).map_err(bad)?;
    Ok((name, config))
}

pub async fn get(d: &Daemon, name: &str) -> ApiResult<NetworkRow> {
    let name = name.to_owned();
    d.db(move |s| s.network(&name)).await.map_err(|e| match e {
        ApiError::NotFound(_) => ApiError::NotFound("Network not found".into()),
        e => e,
    })
}

/// The networks a restricted project's `restricted.networks.access` names; `None` when the
/// project may use every managed network.
pub fn usable_by(d: &Daemon, project: &str) -> Option<BTreeSet<String>> {
    let projects = d.projects.read().unwrap();
    let config = &projects.get(project)?.config;
    if config.get("restricted").map(String::as_str) != Some("true") {
        return None;
    }
    let access = config.get("restricted.networks.access")?;
    Some(
        access
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

pub async fn list(d: &Daemon) -> ApiResult<Vec<NetworkRow>> {
    d.db(|s| s.networks()).await
}

/// The profiles (of every project) and instances whose devices name network `name`, as
/// (project, `used_by` URL), profiles first; the caller shows each only to who may see its
/// project. An instance counts through its own devices and its
/// profiles'.
pub async fn used_by(d: &Daemon, name: &str) -> ApiResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    let projects: Vec<String> = d.projects.read().unwrap().keys().cloned().collect();
    for project in &projects {
        let p = project.clone();
        let profiles = d.db(move |s| s.profiles(&p)).await?;
        for row in profiles {
            let devices = crate::service::expand::devices_of(&row.devices);
            if devices.values().any(|dev| uses(dev, name)) {
                out.push((
                    project.clone(),
                    format!(
                        "/1.0/profiles/{}{}",
                        rxd_core::profile::url_segment(&row.name),
                        project_suffix(project)
                    ),
                ));
            }
        }
    }
    let instances = d.db(|s| s.all_instances()).await?;
    for row in instances {
        let Ok(expanded) = crate::service::expand::expanded(d, &row).await else {
            continue;
        };
        if expanded.devices.values().any(|dev| uses(dev, name)) {
            out.push((
                row.project.clone(),
                format!(
                    "/1.0/instances/{}{}",
                    row.name,
                    project_suffix(&row.project)
                ),
            ));
        }
    }
    Ok(out)
}

/// Whether a device is a NIC on network `name` (by `network`, or as a bridged NIC's parent).
pub fn uses(device: &BTreeMap<String, String>, name: &str) -> bool {
    device.get("type").map(String::as_str) == Some("nic")
        && (device.get("network").map(String::as_str) == Some(name)
            || (device.get("nictype").map(String::as_str) == Some("bridged")
                && device.get("parent").map(String::as_str) == Some(name)))
}

fn check_description(description: &str) -> ApiResult<()> {
    if description.len() > 4096 || description.contains('\0') {
        return Err(bad("Invalid description: at most 4096 bytes, no NUL"));
    }
    Ok(())
}

/// Whether the host has IPv6 (LXD's check before defaulting `ipv6.address` to `auto`).
fn host_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/default/disable_ipv6")
        .is_ok_and(|v| v.trim() == "0")
}

/// The networks already in use on this host: every address on every interface, the routes'
/// destinations, and the other managed networks' subnets (which may not be up yet).
fn in_use(others: &[NetworkRow]) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    if let Ok(mut nl) = Netlink::open() {
        if let Ok(links) = nl.list_links() {
            for link in links {
                if let Ok(addrs) = nl.addresses(link.index) {
                    nets.extend(addrs.into_iter().map(|a| a.net.trunc()));
                }
            }
        }
    }
    nets.extend(routes_v4());
    for row in others {
        let config = config_of(row);
        for key in ["ipv4.address", "ipv6.address"] {
            if let Some(net) = config.get(key).and_then(|v| v.parse::<ipnet::IpNet>().ok()) {
                nets.push(net.trunc());
            }
        }
    }
    nets
}

/// The destinations of `/proc/net/route` (the kernel's IPv4 table in this namespace).
fn routes_v4() -> Vec<ipnet::IpNet> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_le);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = hex(f.get(1)?)?;
            let mask = hex(f.get(7)?)?;
            let net = ipnet::Ipv4Net::with_netmask(dest.into(), mask.into()).ok()?;
            Some(ipnet::IpNet::V4(net))
        })
        .collect()
}

/// Whether something answers on `addr` port 22 within a second (LXD's probe for a subnet
/// reached only through the default route). A refusal is an answer too.
fn answers(addr: std::net::IpAddr) -> bool {
    match std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::new(addr, 22),
        std::time::Duration::from_secs(1),
    ) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// `auto` addresses replaced by free subnets, and a create's defaults (LXD's `FillConfig`).
fn fill(config: &mut Config, others: &[NetworkRow], create: bool) -> ApiResult<()> {
    let used = in_use(others);
    let random = |n: usize| {
        let mut bytes = vec![0u8; n];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
        bytes
    };
    let v4 = || {
        subnet::choose_v4(&random(subnet::V4_RANDOM_LEN), &used, |n| {
            let first = u32::from(n.network());
            !answers(std::net::Ipv4Addr::from(first + 1).into())
                && !answers(std::net::Ipv4Addr::from(first + 254).into())
        })
    };
    let v6 = || {
        subnet::choose_v6(&random(subnet::V6_RANDOM_LEN), &used, |n| {
            !answers(std::net::Ipv6Addr::from(u128::from(n.network()) + 1).into())
        })
    };
    if create {
        netcfg::fill_defaults(config, host_has_ipv6(), v4, v6).map_err(bad)
    } else {
        netcfg::populate_auto(config, v4, v6).map_err(bad)
    }
}

/// A network's config as it will be stored: keys checked, empty values removed, `auto`
/// resolved; then typed, which checks the rules between keys.
fn prepare(
    mut config: Config,
    others: &[NetworkRow],
    create: bool,
) -> ApiResult<(Config, BridgeConfig)> {
    config.retain(|_, v| !v.is_empty());
    netcfg::validate(&config).map_err(bad)?;
    fill(&mut config, others, create)?;
    let typed = BridgeConfig::from_config(&config).map_err(bad)?;
    Ok((config, typed))
}

/// Whether the host has an interface named `name` (a valid interface name).
async fn host_link_exists(name: &str) -> ApiResult<bool> {
    let ifname = IfName::parse(name).map_err(bad)?;
    tokio::task::spawn_blocking(move || -> rxd_network::Result<bool> {
        Ok(Netlink::open()?.link_info(&ifname)?.is_some())
    })
    .await?
    .map_err(ApiError::internal)
}

/// `POST /1.0/networks`: a managed bridge. The name must be free among host interfaces too
/// (LXD would adopt an existing bridge; rxd never takes over a link it did not make).
pub async fn create(
    d: &Daemon,
    _admin: &AdminProof,
    name: &str,
    kind: &str,
    description: String,
    config: Config,
) -> ApiResult<()> {
    let kind = if kind.is_empty() { "bridge" } else { kind };
    if kind != "bridge" {
        return Err(bad(format!(
            "Network type {kind:?} is not supported (rxd manages bridge networks only)"
        )));
    }
    NetworkName::parse(name).map_err(bad)?;
    check_description(&description)?;
    let guard = d.networks.lock.lock().await;
    let others = list(d).await?;
    if others.iter().any(|r| r.name == name) {
        return Err(ApiError::Conflict(format!(
            "Network {name:?} already exists"
        )));
    }
    if host_link_exists(name).await? {
        return Err(bad(format!(
            "A host interface named {name:?} already exists: rxd does not take over interfaces it did not make"
        )));
    }
    let (config, _) = tokio::task::spawn_blocking(move || prepare(config, &others, true)).await??;
    let mut row = NetworkRow {
        id: 0,
        name: name.to_owned(),
        description,
        kind: kind.to_owned(),
        config: serde_json::to_string(&config).map_err(ApiError::internal)?,
    };
    let stored = row.clone();
    row.id = d.db(move |s| s.create_network(&stored)).await?;
    if let Err(e) = bring_up(d, &row).await {
        // Nothing half-made: the bridge, its files and its row go again.
        let _ = tear_down(d, &row.name).await;
        let n = row.name.clone();
        d.db(move |s| s.delete_network(&n)).await?;
        rebuild_firewall(d, &guard).await;
        return Err(e);
    }
    rebuild_firewall(d, &guard).await;
    Ok(())
}

/// `PUT`/`PATCH /1.0/networks/<name>`: the new config applied (bridge, addresses, firewall,
/// dnsmasq restarted), then stored; a config that cannot be applied is put back.
pub async fn update(
    d: &Daemon,
    _admin: &AdminProof,
    name: &str,
    change: impl FnOnce(&NetworkRow) -> ApiResult<(String, Config)>,
) -> ApiResult<()> {
    let guard = d.networks.lock.lock().await;
    let row = get(d, name).await?;
    let (description, config) = change(&row)?;
    check_description(&description)?;
    let others: Vec<NetworkRow> = list(d)
        .await?
        .into_iter()
        .filter(|r| r.name != name)
        .collect();
    let (config, _) =
        tokio::task::spawn_blocking(move || prepare(config, &others, false)).await??;
    let new = NetworkRow {
        description,
        config: serde_json::to_string(&config).map_err(ApiError::internal)?,
        ..row.clone()
    };
    if let Err(e) = bring_up(d, &new).await {
        let _ = bring_up(d, &row).await;
        rebuild_firewall(d, &guard).await;
        return Err(e);
    }
    let stored = new.clone();
    d.db(move |s| s.update_network(&stored.name, &stored.description, &stored.config))
        .await?;
    rebuild_firewall(d, &guard).await;
    Ok(())
}

/// `POST /1.0/networks/<name>`: rename, only while nothing uses it (LXD's rule).
pub async fn rename(d: &Daemon, _admin: &AdminProof, old: &str, new: &str) -> ApiResult<()> {
    let guard = d.networks.lock.lock().await;
    let row = get(d, old).await?;
    NetworkName::parse(new).map_err(bad)?;
    if !used_by(d, old).await?.is_empty() {
        return Err(bad("Network is currently in use"));
    }
    if list(d).await?.iter().any(|r| r.name == new) {
        return Err(ApiError::Conflict(format!(
            "Network {new:?} already exists"
        )));
    }
    if host_link_exists(new).await? {
        return Err(bad(format!(
            "A host interface named {new:?} already exists"
        )));
    }
    tear_down(d, old).await?;
    let (o, n) = (old.to_owned(), new.to_owned());
    d.db(move |s| s.rename_network(&o, &n)).await?;
    let _ = std::fs::remove_dir_all(network_dir(d, old));
    let renamed = NetworkRow {
        name: new.to_owned(),
        ..row
    };
    let result = bring_up(d, &renamed).await;
    rebuild_firewall(d, &guard).await;
    result
}

/// `DELETE /1.0/networks/<name>`: only while no instance or profile uses it.
pub async fn delete(d: &Daemon, _admin: &AdminProof, name: &str) -> ApiResult<()> {
    let guard = d.networks.lock.lock().await;
    get(d, name).await?;
    if !used_by(d, name).await?.is_empty() {
        return Err(bad("The network is currently in use"));
    }
    tear_down(d, name).await?;
    let n = name.to_owned();
    d.db(move |s| s.delete_network(&n)).await?;
    let _ = std::fs::remove_dir_all(network_dir(d, name));
    d.networks.set_error(name, None);
    rebuild_firewall(d, &guard).await;
    Ok(())
}

/// The bridge's MAC: `bridge.hwaddr`, else stable per server and network.
fn bridge_mac(d: &Daemon, row: &NetworkRow, config: &BridgeConfig) -> mac::Mac {
    config.hwaddr.unwrap_or_else(|| {
        let fingerprint = d.tls.read().unwrap().keypair.fingerprint.clone();
        let digest: [u8; 32] =
            sha2::Sha256::digest(mac::bridge_mac_seed(&fingerprint, row.id).as_bytes()).into();
        mac::stable_bridge_mac(&digest)
    })
}

/// Each NIC's hosts file by name (`rxd_core::network::dnsmasq`'s names and lines).
pub fn hosts_files(nics: &[NicRow], mode: netcfg::DnsMode) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for nic in nics {
        let key = InstanceKey::new(&nic.project, &nic.instance);
        let Ok(mac) = nic.hwaddr.parse::<mac::Mac>() else {
            continue;
        };
        let Some(file) = dm::hosts_file_name(&key, &nic.device) else {
            continue;
        };
        let v4 = nic.ipv4.as_deref().and_then(|a| a.parse().ok());
        let v6 = nic.ipv6.as_deref().and_then(|a| a.parse().ok());
        if let Some(line) = dm::hosts_file(mac, v4, v6, &key, mode) {
            out.insert(file, line);
        }
    }
    out
}

fn dnsmasq_gid() -> nix::unistd::Gid {
    nix::unistd::Group::from_name(DNSMASQ_GROUP)
        .ok()
        .flatten()
        .map_or(nix::unistd::Gid::from_raw(65534), |g| g.gid)
}

fn dnsmasq_user() -> &'static str {
    match nix::unistd::User::from_name("dnsmasq") {
        Ok(Some(_)) => "dnsmasq",
        _ => "nobody",
    }
}

/// Writes the names of a network's instances outside `default` (`<dir>/dnsmasq.names`).
pub fn write_names(dir: &Path, nics: &[NicRow], domain: &netcfg::DnsName) -> std::io::Result<()> {
    let entries: Vec<_> = nics
        .iter()
        .map(|n| {
            (
                InstanceKey::new(&n.project, &n.instance),
                n.ipv4.as_deref().and_then(|a| a.parse().ok()),
                n.ipv6.as_deref().and_then(|a| a.parse().ok()),
            )
        })
        .collect();
    rxd_network::dnsmasq::write_names_file(dir, &dm::names(&entries, domain), dnsmasq_gid())
}

/// A network's names file rendered again from its reservations (after a NIC of a project other
/// than `default` came), and its dnsmasq told.
pub async fn refresh_names(d: &Daemon, name: &str) -> ApiResult<()> {
    let row = get(d, name).await?;
    let (_, config) = typed(&row)?;
    let n = row.name.clone();
    let nics = d.db(move |s| s.nic_allocations(&n)).await?;
    let dir = network_dir(d, &row.name);
    tokio::task::spawn_blocking(move || write_names(&dir, &nics, &config.dns_domain))
        .await?
        .map_err(ApiError::internal)?;
    reload_dnsmasq(d, &row.name).await;
    Ok(())
}

/// After NICs left `net` (`gone`: their MACs) or were renamed: its hosts and names files are
/// rendered again from its reservations and its dnsmasq told, then a DHCPRELEASE goes to it for
/// each IPv4 lease a departed NIC holds, as LXD does, so their addresses and names are free
/// before anyone else takes the networks lock, and dnsmasq is not restarted. `false` when that
/// is not enough: a departed NIC holds an IPv6 lease (releasing one takes the client's own DUID
/// in a DHCPv6 exchange) or no dnsmasq runs; the caller has it restarted on a pruned lease file.
pub async fn release_leases(
    d: &Daemon,
    _held: &Held<'_>,
    net: &str,
    gone: &BTreeSet<mac::Mac>,
) -> ApiResult<bool> {
    let row = get(d, net).await?;
    let (_, config) = typed(&row)?;
    let n = row.name.clone();
    let nics = d.db(move |s| s.nic_allocations(&n)).await?;
    let dir = network_dir(d, &row.name);
    let (mode, domain) = (config.dns_mode, config.dns_domain.clone());
    let leases = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<dm::Lease>> {
        write_hosts(&dir, &hosts_files(&nics, mode))?;
        write_names(&dir, &nics, &domain)?;
        Ok(dm::parse_leases(&rxd_network::dnsmasq::read_leases(&dir)?))
    })
    .await?
    .map_err(ApiError::internal)?;
    if !d.networks.has_dnsmasq(net) {
        return Ok(false);
    }
    reload_dnsmasq(d, net).await;
    let mut freed = true;
    for lease in &leases {
        let Some(mac) = lease.mac().filter(|m| gone.contains(m)) else {
            continue;
        };
        let (std::net::IpAddr::V4(address), Some(v4)) = (lease.address, &config.ipv4) else {
            freed = false;
            continue;
        };
        let server = v4.address.addr();
        let packet = dm::dhcp_release(mac, address, server, rand::random());
        if let Err(e) = rxd_network::dnsmasq::send_dhcp_release(server, &packet) {
            tracing::warn!(network = net, %address, error = %e, "DHCPRELEASE not sent");
            freed = false;
        }
    }
    Ok(freed)
}

/// Writes one NIC's hosts file into `<dir>/dnsmasq.hosts` (made if missing).
pub fn write_hosts_file(dir: &Path, name: &str, line: &str) -> std::io::Result<()> {
    let gid = dnsmasq_gid();
    rxd_network::dnsmasq::ensure_hosts_dir(dir, gid)?;
    rxd_network::dnsmasq::write_hosts_file(dir, name, line, gid)
}

/// Writes the hosts files of `nics` into `<dir>/dnsmasq.hosts` and removes the others.
pub fn write_hosts(dir: &Path, files: &BTreeMap<String, String>) -> std::io::Result<()> {
    let gid = dnsmasq_gid();
    let hosts = rxd_network::dnsmasq::ensure_hosts_dir(dir, gid)?;
    for entry in std::fs::read_dir(&hosts)? {
        let name = entry?.file_name();
        if let Some(name) = name.to_str() {
            if !name.starts_with('.') && !files.contains_key(name) {
                rxd_network::dnsmasq::remove_hosts_file(dir, name)?;
            }
        }
    }
    for (name, line) in files {
        rxd_network::dnsmasq::write_hosts_file(dir, name, line, gid)?;
    }
    Ok(())
}

/// Sets a network up as its row says (idempotent): bridge, sysctls, addresses, then a fresh
/// dnsmasq. A failure marks the network errored (and raises a warning) and is returned.
pub async fn bring_up(d: &Daemon, row: &NetworkRow) -> ApiResult<()> {
    bring_up_with(d, row, true).await
}

/// [`bring_up`]; without `confirm`, the fresh dnsmasq is not waited for: the caller calls
/// [`confirm_dnsmasq`] once [`rxd_network::dnsmasq::STARTUP_WAIT`] has passed.
async fn bring_up_with(d: &Daemon, row: &NetworkRow, confirm: bool) -> ApiResult<()> {
    let (name, config) = typed(row)?;
    let mac = bridge_mac(d, row, &config);
    let dir = network_dir(d, &row.name);
    let n = row.name.clone();
    let nics = d.db(move |s| s.nic_allocations(&n)).await?;
    let old = d.networks.take_dnsmasq(&row.name);
    let result =
        tokio::task::spawn_blocking(move || setup(&name, &config, mac, &dir, &nics, old, confirm))
            .await?;
    match result {
        Ok(dnsmasq) => {
            if let Some(dnsmasq) = dnsmasq {
                d.networks.put_dnsmasq(&row.name, dnsmasq);
            }
            d.networks.set_error(&row.name, None);
            tracing::info!(network = %row.name, "network up");
            warn_forwarding(d, row);
            Ok(())
        }
        Err(e) => Err(set_up_failed(d, &row.name, e)),
    }
}

/// A network that could not be set up: errored, with a warning.
fn set_up_failed(d: &Daemon, net: &str, e: String) -> ApiError {
    tracing::warn!(network = %net, error = %e, "network set-up failed");
    d.warnings.lock().unwrap().record(
        WarningKind::NetworkUnavailable,
        format!("Network {net:?} could not be set up: {e}"),
    );
    d.networks.set_error(net, Some(e.clone()));
    bad(format!("Failed to set up network {net:?}: {e}"))
}

/// `net`'s dnsmasq made to read its hosts files again; one the refresher has just started is
/// confirmed first (the rest of its start-up check), since it would ignore the signal while it
/// starts and serve a NIC whose file it has not read. Call it with the networks lock held.
pub async fn reload_dnsmasq(d: &Daemon, net: &str) {
    if d.networks.dnsmasq_unconfirmed(net) {
        confirm_dnsmasq(d, net).await;
    }
    d.networks.reload_dnsmasq(net);
}

/// The check [`bring_up_with`] left out for `net`'s dnsmasq (if it is still the one it
/// started; one started since was checked by whoever started it). Call it with the networks
/// lock held.
async fn confirm_dnsmasq(d: &Daemon, net: &str) {
    let Some(mut dnsmasq) = d.networks.take_dnsmasq(net) else {
        return;
    };
    let checked = tokio::task::spawn_blocking(move || {
        let r = dnsmasq.confirm();
        (dnsmasq, r)
    })
    .await;
    match checked {
        Ok((dnsmasq, Ok(()))) => d.networks.put_dnsmasq(net, dnsmasq),
        Ok((_, Err(e))) => {
            set_up_failed(d, net, e.to_string());
        }
        Err(e) => {
            set_up_failed(d, net, e.to_string());
        }
    }
}

/// rxd turns forwarding on only on its bridges: replies to NATed traffic come in on the uplink,
/// whose `forwarding` (and, for IPv6, the host-wide one) is the administrator's. Said as a
/// warning, never changed.
fn warn_forwarding(d: &Daemon, row: &NetworkRow) {
    let Ok((_, config)) = typed(row) else {
        return;
    };
    let off = |path: &str| std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "0");
    let mut missing = Vec::new();
    if config.ipv4.as_ref().is_some_and(|f| f.nat || f.routing)
        && off("/proc/sys/net/ipv4/conf/all/forwarding")
    {
        missing.push("net.ipv4.conf.all.forwarding");
    }
    if config.ipv6.as_ref().is_some_and(|f| f.nat || f.routing)
        && off("/proc/sys/net/ipv6/conf/all/forwarding")
    {
        missing.push("net.ipv6.conf.all.forwarding (with accept_ra=2 on an uplink that takes router advertisements)");
    }
    if missing.is_empty() {
        return;
    }
    let message = format!(
        "Network {:?}: instances cannot reach beyond this host until the host forwards: set {} (rxd changes no host-wide sysctl)",
        row.name,
        missing.join(" and ")
    );
    tracing::warn!("{message}");
    d.warnings
        .lock()
        .unwrap()
        .record(WarningKind::NetworkUnavailable, message);
}

fn setup(
    name: &NetworkName,
    config: &BridgeConfig,
    mac: mac::Mac,
    dir: &Path,
    nics: &[NicRow],
    old: Option<Dnsmasq>,
    confirm: bool,
) -> Result<Option<Dnsmasq>, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    if let Some(old) = old {
        old.stop().map_err(|e| s(&e))?;
    }
    let ifname = IfName::parse(name.as_str()).map_err(|e| s(&e))?;
    let mut nl = Netlink::open().map_err(|e| s(&e))?;
    nl.ensure_bridge(&ifname, config.mtu, mac)
        .map_err(|e| s(&e))?;
    // Set again on every set-up: a bridge whose MTU was never set follows its smallest port,
    // which one NIC's `mtu` would then impose on every neighbour.
    nl.set_mtu(&ifname, config.mtu).map_err(|e| s(&e))?;
    let sysctl = |key, value| rxd_network::set_iface_sysctl(&ifname, key, value).map_err(|e| s(&e));
    if config.ipv6.is_some() {
        sysctl(IfaceSysctl::Ipv6DisableIpv6, 0)?;
        sysctl(IfaceSysctl::Ipv6Autoconf, 0)?;
        sysctl(IfaceSysctl::Ipv6AcceptDad, 0)?;
        // An instance with filtering off must not route the host by advertising a router.
        sysctl(IfaceSysctl::Ipv6AcceptRa, 0)?;
    } else if host_has_ipv6() {
        sysctl(IfaceSysctl::Ipv6DisableIpv6, 1)?;
    }
    if config.ipv4.is_some() {
        sysctl(IfaceSysctl::Ipv4Forwarding, 1)?;
    }
    let mut desired = Vec::new();
    if let Some(v4) = &config.ipv4 {
        desired.push(ipnet::IpNet::V4(v4.address));
    }
    if let Some(v6) = &config.ipv6 {
        desired.push(ipnet::IpNet::V6(v6.address));
    }
    nl.sync_addresses(&ifname, &desired).map_err(|e| s(&e))?;
    if desired.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(dir).map_err(|e| s(&e))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))
        .map_err(|e| s(&e))?;
    write_hosts(dir, &hosts_files(nics, config.dns_mode)).map_err(|e| s(&e))?;
    write_names(dir, nics, &config.dns_domain).map_err(|e| s(&e))?;
    let keep: BTreeSet<mac::Mac> = nics.iter().filter_map(|n| n.hwaddr.parse().ok()).collect();
    rxd_network::dnsmasq::prune_leases(dir, &keep).map_err(|e| s(&e))?;
    let leases = dir.join("dnsmasq.leases");
    let hosts = dir.join("dnsmasq.hosts");
    let argv = dm::argv(
        name,
        config,
        &dm::Setup {
            user: dnsmasq_user(),
            group: DNSMASQ_GROUP,
            leases_file: &leases,
            hosts_dir: &hosts,
            quiet: true,
        },
    );
    let mut dnsmasq = Dnsmasq::spawn(name, argv, dir, None).map_err(|e| s(&e))?;
    if confirm {
        dnsmasq.confirm().map_err(|e| s(&e))?;
    }
    Ok(Some(dnsmasq))
}

/// Stops a network's dnsmasq (the running one or the one its pid file names) and deletes its
/// bridge.
async fn tear_down(d: &Daemon, name: &str) -> ApiResult<()> {
    let dir = network_dir(d, name);
    let held = d.networks.take_dnsmasq(name);
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let net = NetworkName::parse(&name).map_err(|e| e.to_string())?;
        if let Some(dnsmasq) = held.or_else(|| Dnsmasq::adopt(&dir, &net)) {
            dnsmasq.stop().map_err(|e| e.to_string())?;
        }
        let ifname = IfName::parse(&name).map_err(|e| e.to_string())?;
        Netlink::open()
            .and_then(|mut nl| nl.delete_link(&ifname))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
    .await?
    .map_err(|e| ApiError::internal(format!("tearing down the network: {e}")))
}

/// The whole ruleset from the networks' rows, the running NICs and NAT proxies, applied in one
/// transaction (or both tables removed when there is nothing to filter). A failure is logged
/// and raised as a warning: the previous ruleset stays whole.
pub async fn rebuild_firewall(d: &Daemon, held: &Held<'_>) {
    let _ = apply_firewall(d, held).await;
}

/// [`rebuild_firewall`], saying whether the ruleset is in place: a NIC is connected to its
/// bridge only once its filters are.
pub async fn apply_firewall(d: &Daemon, _held: &Held<'_>) -> Result<(), String> {
    let rows = match list(d).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "firewall not rebuilt: networks unreadable");
            d.networks.set_firewall_whole(false);
            return Err(e.to_string());
        }
    };
    let bridges: Vec<nft::BridgeRules> = rows
        .iter()
        .filter_map(|row| typed(row).ok())
        .map(|(name, config)| nft::BridgeRules::new(name, &config))
        .collect();
    let nics: Vec<nft::NicRules> = d
        .networks
        .nics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    let proxies: Vec<nft::ProxyNat> = d
        .networks
        .proxies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    let ruleset = nft::Ruleset {
        bridges,
        nics,
        proxies,
    };
    let empty = ruleset == nft::Ruleset::default();
    let result = tokio::task::spawn_blocking(move || {
        if empty {
            rxd_network::firewall::remove(None)
        } else {
            rxd_network::firewall::apply(&nft::ruleset(&ruleset), None)
        }
    })
    .await;
    d.networks.set_firewall_whole(matches!(result, Ok(Ok(()))));
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "firewall not applied");
            d.warnings.lock().unwrap().record(
                WarningKind::NetworkUnavailable,
                format!("rxd's firewall rules could not be applied: {e}"),
            );
            Err(e.to_string())
        }
        Err(e) => {
            tracing::warn!(error = %e, "firewall task failed");
            Err(e.to_string())
        }
    }
}

/// The chains of NICs `nics` (already among the running NICs' filters) added to the firewall
/// in place, when it holds the whole ruleset without them: far quicker than applying the whole
/// ruleset again, which deletes and re-adds every base chain. Otherwise, or when that fails,
/// the whole ruleset is applied. Call it with the networks lock held.
pub async fn add_nic_filters(
    d: &Daemon,
    held: &Held<'_>,
    nics: Vec<nft::NicRules>,
) -> Result<(), String> {
    if !nics.is_empty() && d.networks.firewall_whole() {
        let cmds = nft::nics_added(&nics);
        let added =
            tokio::task::spawn_blocking(move || rxd_network::firewall::apply(&cmds, None)).await;
        match added {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "NICs' filters not added in place: applying the whole ruleset")
            }
            Err(e) => tracing::warn!(error = %e, "firewall task failed"),
        }
    }
    apply_firewall(d, held).await
}

/// At daemon start, before instances are recovered or started: every network set up again
/// (a bridge lost with a reboot is made again; a dnsmasq left by the previous daemon is
/// replaced after its identity is checked), and other tables that would drop the bridges'
/// traffic reported. The caller then recovers the running NICs' filters and rebuilds the
/// firewall.
pub async fn reconcile(d: &Daemon) -> bool {
    let _guard = d.networks.lock.lock().await;
    let rows = match list(d).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "networks unreadable at start");
            return false;
        }
    };
    if rows.is_empty() {
        return false;
    }
    for row in &rows {
        let dir = network_dir(d, &row.name);
        if let Ok(net) = NetworkName::parse(&row.name) {
            let adopted = tokio::task::spawn_blocking(move || Dnsmasq::adopt(&dir, &net))
                .await
                .ok()
                .flatten();
            if let Some(dnsmasq) = adopted {
                d.networks.put_dnsmasq(&row.name, dnsmasq);
            }
        }
        let _ = bring_up(d, row).await;
    }
    check_other_firewalls(d, &rows).await;
    true
}

/// Other tables whose drop policy would cut the bridges off, as warnings naming the remedy.
async fn check_other_firewalls(d: &Daemon, rows: &[NetworkRow]) {
    let found = tokio::task::spawn_blocking(|| rxd_network::firewall::inspect(None)).await;
    let Ok(Ok(found)) = found else {
        return;
    };
    for warning in found {
        for row in rows {
            d.warnings
                .lock()
                .unwrap()
                .record(WarningKind::FirewallConflict, warning.message(&row.name));
        }
    }
}

/// The first free address of `ranges` not in `taken` (the gateway is always taken).
pub fn first_free<A: netcfg::Family>(
    ranges: &[netcfg::AddrRange<A>],
    taken: &BTreeSet<A>,
    next: impl Fn(A) -> Option<A>,
) -> Option<A> {
    for range in ranges {
        let mut a = range.first;
        loop {
            if !taken.contains(&a) {
                return Some(a);
            }
            if a >= range.last {
                break;
            }
            a = next(a)?;
        }
    }
    None
}

/// A network's leases as `/leases` lists them, (hostname, hwaddr, address, type): the gateway's
/// addresses, every NIC's reservation (of the projects `visible` accepts), then, for the server
/// administrator (`all`), dnsmasq's leases of clients that are no NIC rxd knows.
pub async fn leases(
    d: &Daemon,
    row: &NetworkRow,
    visible: impl Fn(&str) -> bool,
    all: bool,
) -> ApiResult<Vec<(String, String, String, &'static str)>> {
    let (_, config) = typed(row)?;
    let mut out = Vec::new();
    let gw_mac = bridge_mac(d, row, &config).to_string();
    let gw_name = format!("{}.gw", row.name);
    if let Some(v4) = &config.ipv4 {
        out.push((
            gw_name.clone(),
            gw_mac.clone(),
            v4.address.addr().to_string(),
            "gateway",
        ));
    }
    if let Some(v6) = &config.ipv6 {
        out.push((gw_name, gw_mac, v6.address.addr().to_string(), "gateway"));
    }
    let n = row.name.clone();
    let nics = d.db(move |s| s.nic_allocations(&n)).await?;
    let mut known = BTreeSet::new();
    for nic in &nics {
        known.insert(nic.hwaddr.clone());
        if !visible(&nic.project) {
            continue;
        }
        let host = dm::dns_name(&InstanceKey::new(&nic.project, &nic.instance));
        for address in [&nic.ipv4, &nic.ipv6].into_iter().flatten() {
            out.push((host.clone(), nic.hwaddr.clone(), address.clone(), "dynamic"));
        }
    }
    if all {
        let dir = network_dir(d, &row.name);
        let text = tokio::task::spawn_blocking(move || rxd_network::dnsmasq::read_leases(&dir))
            .await?
            .unwrap_or_default();
        for lease in dm::parse_leases(&text) {
            let mac = lease.mac().map(|m| m.to_string()).unwrap_or_default();
            if known.contains(&mac) {
                continue;
            }
            out.push((
                lease.hostname.clone().unwrap_or_default(),
                mac,
                lease.address.to_string(),
                "dynamic",
            ));
        }
    }
    Ok(out)
}

/// Restarts the dnsmasq of every network `nics::release` could not free leases on by
/// DHCPRELEASE, one batch at a time, until the daemon shuts down.
pub async fn refresher(
    d: std::sync::Arc<Daemon>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = d.networks.refresh.notified() => {}
            _ = shutdown.changed() => return,
        }
        let nets = std::mem::take(&mut *d.networks.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        // Each dnsmasq restarted under the networks lock, and checked half a second later
        // under it again: what changes the firewall meanwhile does not wait for that half
        // second; what must signal that dnsmasq (`reload_dnsmasq`) confirms it first.
        let mut started = Vec::new();
        {
            let _guard = d.networks.lock.lock().await;
            for net in nets {
                if let Ok(row) = get(&d, &net).await {
                    match bring_up_with(&d, &row, false).await {
                        Ok(()) => started.push(net),
                        Err(e) => {
                            tracing::warn!(network = %net, error = %e, "network not refreshed after a NIC went");
                        }
                    }
                }
            }
        }
        if started.is_empty() {
            continue;
        }
        tokio::time::sleep(rxd_network::dnsmasq::STARTUP_WAIT).await;
        let _guard = d.networks.lock.lock().await;
        for net in started {
            confirm_dnsmasq(&d, &net).await;
        }
    }
}
