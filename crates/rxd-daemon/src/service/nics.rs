//! NICs below HTTP: as a container starts, each `nic` device on a bridge gets its MAC, its
//! inside name, an address reservation on a managed network (the store is the source of truth;
//! dnsmasq's hosts files are rendered from it), its filters, and a veth pair planned here and
//! made by the container helper with its container end already inside (on hot-plug, made here
//! the same way), whose host end joins the bridge once the filters are in place; as it stops,
//! the filters go (the veth dies with the container's network namespace).

use crate::error::{ApiError, ApiResult};
use crate::networking::Held;
use crate::service::networks::{self, hosts_files, network_dir};
use crate::state::Daemon;
use rxd_core::devices::{Device, Devices};
use rxd_core::launch::{NicPlan, NicVeth};
use rxd_core::name::InstanceKey;
use rxd_core::network::config::{BridgeConfig, Family, FamilyConfig, IfName};
use rxd_core::network::{mac, nft};
use rxd_network::{IfaceSysctl, Netlink};
use rxd_store::{NetworkRow, NicRow};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

type Config = BTreeMap<String, String>;

/// What a start planned of its NICs: the plans for the container helper, and the host ends
/// to delete if the start goes no further (the helper may have made them).
#[derive(Default)]
pub struct Prepared {
    pub plans: Vec<NicPlan>,
    hosts: Vec<IfName>,
    /// Host ends on managed bridges, attached only once their filters are in place.
    pending: Vec<Pending>,
    /// Their filters.
    rules: Vec<nft::NicRules>,
}

/// A host end not yet a port of its bridge.
#[derive(Clone)]
struct Pending {
    host: IfName,
    bridge: IfName,
    isolated: bool,
    /// On a managed bridge: it waits for its filters.
    managed: bool,
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

fn is_nic(device: &Device) -> bool {
    device.get("type").map(String::as_str) == Some("nic")
}

fn set<'a>(device: &'a Device, key: &str) -> Option<&'a str> {
    device
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn flag(device: &Device, key: &str, default: bool) -> bool {
    set(device, key).map_or(default, |v| {
        matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
    })
}

/// `limits.ingress` and `limits.egress` (`limits.max` for both), in bits per second.
fn limits(device: &Device) -> (Option<u64>, Option<u64>) {
    let rate = |k: &str| set(device, k).and_then(rxd_core::devices::parse_bit_rate);
    let max = rate("limits.max");
    (
        rate("limits.ingress").or(max),
        rate("limits.egress").or(max),
    )
}

/// A random interface name, `veth` and eight hex digits (LXD's: short enough for old dhclients).
fn random_ifname() -> IfName {
    let n: u32 = rand::random();
    IfName::parse(&format!("veth{n:08x}")).expect("a valid interface name")
}

/// The network a NIC is on: `network=NAME`, or a bridged NIC whose parent is a managed network.
fn managed_network<'a>(
    device: &'a Device,
    managed: &BTreeMap<String, NetworkRow>,
) -> Option<&'a str> {
    if let Some(n) = set(device, "network") {
        return Some(n);
    }
    let parent = set(device, "parent")?;
    (set(device, "nictype") == Some("bridged") && managed.contains_key(parent)).then_some(parent)
}

/// The name inside: `name`, else the one chosen before (`volatile.<dev>.name`), else the first
/// `eth<N>` no other NIC takes.
fn inside_name(
    devices: &Devices,
    dev: &str,
    config: &mut Config,
    taken: &mut BTreeSet<String>,
) -> String {
    let device = &devices[dev];
    if let Some(n) = set(device, "name") {
        taken.insert(n.to_owned());
        return n.to_owned();
    }
    let key = format!("volatile.{dev}.name");
    if let Some(n) = config.get(&key).filter(|n| !taken.contains(*n)) {
        let n = n.clone();
        taken.insert(n.clone());
        return n;
    }
    let n = (0..)
        .map(|i| format!("eth{i}"))
        .find(|n| !taken.contains(n) && !devices.values().any(|d| set(d, "name") == Some(n)))
        .expect("an unused name");
    taken.insert(n.clone());
    config.insert(key, n.clone());
    n
}

/// The MACs a new instance's NICs get when it is created, as LXD gives them: each NIC of a
/// type rxd wires, without an `hwaddr` of its own, gets `volatile.<dev>.hwaddr` (a new
/// `00:16:3e` one unless the config brings a valid one, as a move does), so that it is known,
/// and can be reserved, before the first start. [`nic_mac`] then takes it.
pub fn fill_macs(expanded: &Devices, config: &mut Config) {
    for (dev, device) in expanded {
        let wired = matches!(
            set(device, "nictype").unwrap_or("bridged"),
            "bridged" | "macvlan" | "p2p" | "routed"
        );
        if !is_nic(device) || !wired || set(device, "hwaddr").is_some() {
            continue;
        }
        let key = format!("volatile.{dev}.hwaddr");
        if config
            .get(&key)
            .is_some_and(|h| h.parse::<mac::Mac>().is_ok())
        {
            continue;
        }
        config.insert(key, mac::random_mac(rand::random()).to_string());
    }
}

/// The NIC's MAC: `hwaddr`, else the one generated before (`volatile.<dev>.hwaddr`), else a new
/// `00:16:3e` one.
fn nic_mac(device: &Device, dev: &str, config: &mut Config) -> ApiResult<mac::Mac> {
    if let Some(h) = set(device, "hwaddr") {
        return h
            .parse()
            .map_err(|e| bad(format!("Device {dev:?}: hwaddr: {e}")));
    }
    let key = format!("volatile.{dev}.hwaddr");
    if let Some(m) = config.get(&key).and_then(|h| h.parse().ok()) {
        return Ok(m);
    }
    let m = mac::random_mac(rand::random());
    config.insert(key, m.to_string());
    Ok(m)
}

fn next_v4(a: Ipv4Addr) -> Option<Ipv4Addr> {
    u32::from(a).checked_add(1).map(Into::into)
}

fn next_v6(a: Ipv6Addr) -> Option<Ipv6Addr> {
    u128::from(a).checked_add(1).map(Into::into)
}

fn nic_v4(r: &NicRow) -> Option<&str> {
    r.ipv4.as_deref()
}

fn nic_v6(r: &NicRow) -> Option<&str> {
    r.ipv6.as_deref()
}

/// One family's addresses as a set, from what each reservation holds (`pick`), plus the gateway.
fn taken_of<A: Family>(
    others: &[&NicRow],
    pick: fn(&NicRow) -> Option<&str>,
    family: &FamilyConfig<A>,
) -> BTreeSet<A> {
    let mut taken: BTreeSet<A> = others
        .iter()
        .filter_map(|r| pick(r)?.parse().ok())
        .collect();
    taken.insert(A::host(&family.address));
    taken
}

/// A NIC's static address of one family (`ipv4.address`, `ipv6.address`): in the subnet, not
/// its gateway, held by no other NIC (409).
fn static_address<A: Family>(
    dev: &str,
    device: &Device,
    family: &FamilyConfig<A>,
    taken: &BTreeSet<A>,
    net: &str,
) -> ApiResult<Option<A>> {
    let key = format!("{}.address", A::KEY);
    let Some(text) = set(device, &key) else {
        return Ok(None);
    };
    let a: A = text
        .parse()
        .map_err(|_| bad(format!("Device {dev:?}: invalid {key} {text:?}")))?;
    if !A::contains(&family.address, &a) || a == A::host(&family.address) {
        return Err(bad(format!(
            "Device {dev:?}: IP address {a} is not within the network's subnet {}/{} or is its gateway",
            A::network(&family.address),
            A::prefix_len(&family.address)
        )));
    }
    if taken.contains(&a) {
        return Err(ApiError::Conflict(format!(
            "IP address {a} already allocated to another NIC on network {net:?}"
        )));
    }
    Ok(Some(a))
}

/// The address a NIC held before, if it is still in the subnet and free.
fn kept<A: Family>(
    held: Option<&NicRow>,
    pick: fn(&NicRow) -> Option<&str>,
    family: &FamilyConfig<A>,
    taken: &BTreeSet<A>,
) -> Option<A> {
    held.and_then(|r| pick(r)?.parse::<A>().ok())
        .filter(|a| A::contains(&family.address, a) && !taken.contains(a))
}

/// The reservation of NIC `dev` on `net`: a static address, the one it held, or the first free
/// one of the DHCP ranges; IPv6 likewise when DHCPv6 is stateful, else its SLAAC address.
fn reserve(
    key: &InstanceKey,
    dev: &str,
    device: &Device,
    mac: mac::Mac,
    net: &str,
    config: &BridgeConfig,
    others: &[NicRow],
) -> ApiResult<NicRow> {
    let (project, instance) = key.split();
    let mine = |r: &&NicRow| r.project == project && r.instance == instance && r.device == dev;
    let held = others.iter().find(mine);
    let others: Vec<&NicRow> = others.iter().filter(|r| !mine(r)).collect();
    let mut ipv4 = None;
    if let Some(v4) = &config.ipv4 {
        let taken = taken_of(&others, nic_v4, v4);
        ipv4 = match static_address(dev, device, v4, &taken, net)? {
            Some(a) => Some(a),
            None => match kept(held, nic_v4, v4, &taken) {
                Some(a) => Some(a),
                None if v4.dhcp => Some(
                    networks::first_free(&v4.dhcp_ranges_or_default(), &taken, next_v4)
                        .ok_or_else(|| {
                            bad(format!("No free IPv4 address left on network {net:?}"))
                        })?,
                ),
                None => None,
            },
        };
    }
    let mut ipv6 = None;
    if let Some(v6) = &config.ipv6 {
        let taken = taken_of(&others, nic_v6, v6);
        ipv6 = match static_address(dev, device, v6, &taken, net)? {
            Some(a) => Some(a),
            None if config.ipv6_dhcp_stateful => kept(held, nic_v6, v6, &taken)
                .or_else(|| networks::first_free(&v6.dhcp_ranges_or_default(), &taken, next_v6)),
            None => mac::eui64(v6.address.trunc(), mac),
        };
    }
    Ok(NicRow {
        network: net.to_owned(),
        project: project.to_owned(),
        instance: instance.to_owned(),
        device: dev.to_owned(),
        hwaddr: mac.to_string(),
        ipv4: ipv4.map(|a| a.to_string()),
        ipv6: ipv6.map(|a| a.to_string()),
    })
}

/// A NIC's filters: on by default (rxd is stricter than LXD); the allowed addresses are its
/// reservation (and, for IPv6, its link-local address).
fn rules(
    key: &InstanceKey,
    dev: &str,
    device: &Device,
    host: &IfName,
    mac: mac::Mac,
    row: &NicRow,
    config: &BridgeConfig,
) -> nft::NicRules {
    let v4: Option<Ipv4Addr> = row.ipv4.as_deref().and_then(|a| a.parse().ok());
    let v6: Option<Ipv6Addr> = row.ipv6.as_deref().and_then(|a| a.parse().ok());
    let ipv4 = flag(device, "security.ipv4_filtering", true).then(|| {
        v4.filter(|_| config.ipv4.is_some())
            .map(|a| ipnet::Ipv4Net::new_assert(a, 32))
            .into_iter()
            .collect()
    });
    let ipv6 = flag(device, "security.ipv6_filtering", true).then(|| {
        let mut allowed = Vec::new();
        if config.ipv6.is_some() {
            if let Some(a) = v6 {
                allowed.push(ipnet::Ipv6Net::new_assert(a, 128));
            }
            let link_local =
                ipnet::Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 64);
            if let Some(a) = mac::eui64(link_local, mac) {
                allowed.push(ipnet::Ipv6Net::new_assert(a, 128));
            }
        }
        allowed
    });
    nft::NicRules {
        instance: key.clone(),
        device: dev.to_owned(),
        host_name: host.clone(),
        mac,
        mac_filter: flag(device, "security.mac_filtering", true),
        ipv4,
        ipv6,
        egress_limit: limits(device).1,
    }
}

/// Everything a starting container's NICs need before its init runs; on an error nothing is
/// left behind (host ends deleted). `config` gets the `volatile.<dev>.*` keys to save.
pub async fn prepare(
    d: &Daemon,
    key: &InstanceKey,
    devices: &Devices,
    config: &mut Config,
) -> ApiResult<Prepared> {
    let nics: Vec<&String> = devices
        .iter()
        .filter(|(_, v)| is_nic(v))
        .map(|(k, _)| k)
        .collect();
    // Reservations of devices that are gone (or left their managed network) go first.
    prune(d, key, Some(devices)).await?;
    if nics.is_empty() {
        return Ok(Prepared::default());
    }
    let _guard = d.networks.lock.lock().await;
    let managed: BTreeMap<String, NetworkRow> = networks::list(d)
        .await?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let mut prepared = Prepared::default();
    let result = prepare_all(d, key, devices, &nics, config, &managed, &mut prepared).await;
    if let Err(e) = result {
        discard(std::mem::take(&mut prepared.hosts)).await;
        forget(d, key);
        return Err(e);
    }
    let key = key.to_string();
    prepared.rules = d
        .networks
        .nics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|((k, _), _)| *k == key)
        .map(|(_, rules)| rules.clone())
        .collect();
    Ok(prepared)
}

/// The firewall with the filters of the NICs `prepare` planned applied. Runs alongside the
/// container's start: the container helper makes their veth pairs meanwhile, and attaches
/// their host ends to their bridges only once this returned `Ok` (before that, nothing the
/// container sends reaches a bridge).
pub async fn activate(d: &Daemon, prepared: &Prepared) -> ApiResult<()> {
    if prepared.pending.is_empty() {
        return Ok(());
    }
    let guard = d.networks.lock.lock().await;
    networks::add_nic_filters(d, &guard, prepared.rules.clone())
        .await
        .map_err(|e| bad(format!("The NICs' filters could not be applied: {e}")))
}

/// Host ends attached to their bridges (port isolation set), up.
async fn attach(pending: Vec<Pending>) -> ApiResult<()> {
    tokio::task::spawn_blocking(move || -> rxd_network::Result<()> {
        let mut nl = Netlink::open()?;
        for p in pending {
            rxd_network::join_bridge(&mut nl, &p.host, &p.bridge, p.isolated)?;
        }
        Ok(())
    })
    .await?
    .map_err(|e| bad(format!("Attaching a NIC to its bridge: {e}")))
}

async fn prepare_all(
    d: &Daemon,
    key: &InstanceKey,
    devices: &Devices,
    nics: &[&String],
    config: &mut Config,
    managed: &BTreeMap<String, NetworkRow>,
    prepared: &mut Prepared,
) -> ApiResult<()> {
    let mut taken = BTreeSet::new();
    let mut entries = Vec::new();
    for dev in nics {
        let wired = wire(d, key, devices, dev, config, managed, &mut taken).await?;
        prepared.hosts.push(wired.host);
        prepared.plans.push(wired.plan);
        // The helper attaches every bridged NIC; those on managed bridges wait for their filters.
        if wired.network.is_some() {
            prepared.pending.extend(wired.pending);
        }
        entries.extend(wired.network.zip(wired.hosts));
    }
    // The NICs' names and addresses to dnsmasq.
    publish_hosts(d, key, entries).await
}

/// Writes NICs' hosts files (network, (file, line)) and tells each network's dnsmasq once;
/// the other NICs' files are left as they are.
async fn publish_hosts(
    d: &Daemon,
    key: &InstanceKey,
    entries: Vec<(String, (String, String))>,
) -> ApiResult<()> {
    let key_outside_default = key.split().0 != "default";
    if entries.is_empty() {
        return Ok(());
    }
    let nets: BTreeSet<String> = entries.iter().map(|(n, _)| n.clone()).collect();
    let dirs: Vec<(std::path::PathBuf, (String, String))> = entries
        .into_iter()
        .map(|(n, file)| (network_dir(d, &n), file))
        .collect();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        for (dir, (name, line)) in dirs {
            networks::write_hosts_file(&dir, &name, &line)?;
        }
        Ok(())
    })
    .await?
    .map_err(ApiError::internal)?;
    for net in nets {
        if key_outside_default {
            networks::refresh_names(d, &net).await?;
        } else {
            networks::reload_dnsmasq(d, &net).await;
        }
    }
    Ok(())
}

/// One NIC wired on the host: its veth pair made, the host end on its bridge.
struct Wired {
    plan: NicPlan,
    host: IfName,
    /// The managed network it is on.
    network: Option<String>,
    /// Its hosts file there (name, line).
    hosts: Option<(String, String)>,
    /// Its host end, when it waits for its filters before it joins its bridge.
    pending: Option<Pending>,
}

/// NIC `dev` of `devices` on the host side: MAC, inside name (`taken`: the names other NICs
/// have), reservation, filters, and a bridged NIC's veth pair planned (macvlan, p2p and routed
/// links are made here, to be moved in); `config` gets its `volatile.<dev>.*` keys. On an
/// error nothing of it is left but its reservation.
async fn wire(
    d: &Daemon,
    key: &InstanceKey,
    devices: &Devices,
    dev: &str,
    config: &mut Config,
    managed: &BTreeMap<String, NetworkRow>,
    taken: &mut BTreeSet<String>,
) -> ApiResult<Wired> {
    let device = &devices[dev];
    let nictype = set(device, "nictype").unwrap_or("bridged");
    match nictype {
        "bridged" => {}
        "macvlan" | "p2p" | "routed" => {
            return wire_plain(devices, dev, nictype, config, taken).await
        }
        _ => {
            return Err(bad(format!(
                "Device {dev:?}: NIC type {nictype:?} is not supported by rxd (bridged, macvlan, p2p and routed are)"
            )))
        }
    }
    let network = managed_network(device, managed);
    let (bridge, typed, row) = match network {
        Some(n) => {
            let row = managed
                .get(n)
                .ok_or_else(|| bad(format!("Device {dev:?}: network {n:?} not found")))?;
            if let Some(e) = d.networks.error(n) {
                return Err(ApiError::BadRequest(format!(
                    "Network {n:?} unavailable on this server: {e}"
                )));
            }
            let (_, typed) = networks::typed(row)?;
            (n.to_owned(), Some(typed), Some(row))
        }
        None => (
            set(device, "parent")
                .ok_or_else(|| bad(format!("Device {dev:?}: no network or parent")))?
                .to_owned(),
            None,
            None,
        ),
    };
    let bridge_if = IfName::parse(&bridge).map_err(bad)?;
    let mac = nic_mac(device, dev, config)?;
    let name = inside_name(devices, dev, config, taken);
    IfName::parse(&name).map_err(|e| bad(format!("Device {dev:?}: name: {e}")))?;
    let host = match set(device, "host_name") {
        Some(h) => IfName::parse(h).map_err(|e| bad(format!("Device {dev:?}: host_name: {e}")))?,
        None => random_ifname(),
    };
    // The pair is made later (by the container helper): a link of that name now is another's,
    // and must be neither taken nor, when the start fails, deleted.
    let h = host.clone();
    let existing = tokio::task::spawn_blocking(move || Netlink::open()?.link_info(&h))
        .await?
        .map_err(|e| bad(format!("Device {dev:?}: {e}")))?;
    if existing.is_some() {
        return Err(bad(format!(
            "Device {dev:?}: a host interface named {host} already exists"
        )));
    }
    let mtu = match set(device, "mtu") {
        Some(m) => m
            .parse::<u32>()
            .ok()
            .filter(|m| (68..=65535).contains(m))
            .ok_or_else(|| bad(format!("Device {dev:?}: invalid mtu {m:?}")))?,
        None => typed.as_ref().map_or(1500, |t| t.mtu),
    };
    if mtu < 1280 && typed.as_ref().is_some_and(|t| t.ipv6.is_some()) {
        return Err(bad(format!(
            "Device {dev:?}: mtu {mtu} is below IPv6's 1280, which the network uses"
        )));
    }
    // The reservation first: a conflict refuses the NIC before any link exists.
    let reservation = match (&typed, row) {
        (Some(t), Some(row)) => {
            let n = row.name.clone();
            let others = d.db(move |s| s.nic_allocations(&n)).await?;
            let r = reserve(key, dev, device, mac, &row.name, t, &others)?;
            let stored = r.clone();
            d.db(move |s| s.set_nic_allocation(&stored))
                .await
                .map_err(|e| match e {
                    ApiError::Conflict(_) => ApiError::Conflict(format!(
                        "Device {dev:?}: its MAC or address is already taken on network {:?}",
                        row.name
                    )),
                    e => e,
                })?;
            Some(r)
        }
        _ => None,
    };
    let isolated = flag(device, "security.port_isolation", false);
    // Egress on a managed network is policed by its filter chains (`NicRules`), not by tc.
    let (ingress, egress) = match row {
        Some(_) => (limits(device).0, None),
        None => limits(device),
    };
    // The pair is made where the container's end belongs (`materialize`, or the container
    // helper at start); its host end joins the bridge only after the firewall is applied.
    config.insert(format!("volatile.{dev}.host_name"), host.to_string());
    if let (Some(t), Some(r)) = (&typed, &reservation) {
        let rules = rules(key, dev, device, &host, mac, r, t);
        d.networks
            .nics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((key.to_string(), dev.to_owned()), rules);
    }
    Ok(Wired {
        plan: NicPlan {
            host: host.to_string(),
            name,
            routes: Vec::new(),
            veth: Some(NicVeth {
                mac: mac.to_string(),
                mtu,
                ingress,
                egress,
                bridge: bridge_if.to_string(),
                isolated,
            }),
        },
        host: host.clone(),
        network: row.map(|r| r.name.clone()),
        pending: Some(Pending {
            host: host.clone(),
            bridge: bridge_if.clone(),
            isolated,
            managed: row.is_some(),
        }),
        hosts: match (&typed, &reservation) {
            (Some(t), Some(r)) => hosts_files(std::slice::from_ref(r), t.dns_mode)
                .into_iter()
                .next(),
            _ => None,
        },
    })
}

/// A `macvlan` NIC (a macvlan of host interface `parent` in bridge mode, moved in whole) or a
/// `p2p` one (a veth pair whose host end is on no bridge and carries `ipv4.routes` and
/// `ipv6.routes` to the container). Neither is on a managed network: no reservation, no
/// filters (only a server administrator, or a project allowing any NIC, may have one).
async fn wire_plain(
    devices: &Devices,
    dev: &str,
    nictype: &str,
    config: &mut Config,
    taken: &mut BTreeSet<String>,
) -> ApiResult<Wired> {
    let device = &devices[dev];
    let mac = nic_mac(device, dev, config)?;
    let name = inside_name(devices, dev, config, taken);
    IfName::parse(&name).map_err(|e| bad(format!("Device {dev:?}: name: {e}")))?;
    let mtu = match set(device, "mtu") {
        Some(m) => Some(
            m.parse::<u32>()
                .ok()
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| bad(format!("Device {dev:?}: invalid mtu {m:?}")))?,
        ),
        None => None,
    };
    let mut routes = Vec::new();
    for key in ["ipv4.routes", "ipv6.routes"] {
        for r in set(device, key)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            routes.push(r.parse::<ipnet::IpNet>().map_err(|_| {
                bad(format!(
                    "Device {dev:?}: {key}: {r:?} is not a CIDR network"
                ))
            })?);
        }
    }
    let peer = random_ifname();
    if nictype == "macvlan" {
        if set(device, "network").is_some() {
            return Err(bad(format!(
                "Device {dev:?}: rxd's managed networks are bridges: a macvlan NIC names its host interface with parent"
            )));
        }
        let parent = set(device, "parent")
            .ok_or_else(|| bad(format!("Device {dev:?}: a macvlan NIC needs parent")))?;
        let parent =
            IfName::parse(parent).map_err(|e| bad(format!("Device {dev:?}: parent: {e}")))?;
        let p = peer.clone();
        tokio::task::spawn_blocking(move || -> rxd_network::Result<()> {
            let mut nl = Netlink::open()?;
            let mtu = match mtu {
                Some(m) => m,
                None => {
                    nl.link_info(&parent)?
                        .ok_or_else(|| rxd_network::NetworkError::NoSuchLink {
                            link: parent.to_string(),
                        })?
                        .mtu
                }
            };
            nl.create_macvlan(&p, &parent, mac, mtu).map(drop)
        })
        .await?
        .map_err(|e| bad(format!("Device {dev:?}: {e}")))?;
        return Ok(Wired {
            plan: NicPlan {
                host: peer.to_string(),
                name,
                routes: Vec::new(),
                veth: None,
            },
            host: peer,
            network: None,
            hosts: None,
            pending: None,
        });
    }
    let host = match set(device, "host_name") {
        Some(h) => IfName::parse(h).map_err(|e| bad(format!("Device {dev:?}: host_name: {e}")))?,
        None => random_ifname(),
    };
    // A routed NIC: its addresses on the container's end (the container helper moves them in
    // with the link), routed to it by the host end, which answers as its gateway.
    let mut inside = Vec::new();
    let mut host_addresses = Vec::new();
    let mut gateways = Vec::new();
    if nictype == "routed" {
        if set(device, "parent").is_some() {
            return Err(bad(format!(
                "Device {dev:?}: routed NICs with parent (proxy ARP/NDP on a host interface) are not supported by rxd yet; route the container's addresses to this host instead"
            )));
        }
        for (key, bits, gateway) in [
            ("ipv4.address", 32, "169.254.0.1"),
            ("ipv6.address", 128, "fe80::1"),
        ] {
            let list: Vec<&str> = set(device, key)
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect();
            if list.is_empty() {
                continue;
            }
            let host_key = format!("{}.host_address", &key[..4]);
            let gw: std::net::IpAddr = set(device, &host_key)
                .unwrap_or(gateway)
                .parse()
                .map_err(|_| bad(format!("Device {dev:?}: invalid {host_key}")))?;
            for a in list {
                let ip: std::net::IpAddr = a
                    .parse()
                    .map_err(|_| bad(format!("Device {dev:?}: {key}: invalid address {a:?}")))?;
                let net = ipnet::IpNet::new(ip, bits).map_err(bad)?;
                if net.addr().is_ipv4() != (bits == 32) {
                    return Err(bad(format!(
                        "Device {dev:?}: {key}: {a:?} is of the other family"
                    )));
                }
                inside.push(net);
                routes.push(net);
            }
            host_addresses.push(ipnet::IpNet::new(gw, bits).map_err(bad)?);
            gateways.push(rxd_core::launch::NicRoute {
                link: name.clone(),
                gateway: gw,
            });
        }
        if inside.is_empty() {
            return Err(bad(format!(
                "Device {dev:?}: a routed NIC needs ipv4.address or ipv6.address"
            )));
        }
    }
    let (h, p) = (host.clone(), peer.clone());
    let (ingress, egress) = limits(device);
    tokio::task::spawn_blocking(move || -> rxd_network::Result<()> {
        let mut nl = Netlink::open()?;
        nl.create_veth(&h, &p, mac, mtu.unwrap_or(1500))?;
        let rest = (|| {
            // The host end takes no router advertisement and no SLAAC address from the
            // container (its root would otherwise route the host); IPv6 only where it
            // routes IPv6 (a routed NIC's link-local gateway, a p2p NIC's IPv6 routes).
            if std::path::Path::new("/proc/sys/net/ipv6/conf")
                .join(h.as_str())
                .exists()
            {
                let v6 = host_addresses
                    .iter()
                    .chain(routes.iter())
                    .any(|a| a.addr().is_ipv6());
                rxd_network::set_iface_sysctl(&h, IfaceSysctl::Ipv6AcceptRa, 0)?;
                rxd_network::set_iface_sysctl(&h, IfaceSysctl::Ipv6Autoconf, 0)?;
                rxd_network::set_iface_sysctl(&h, IfaceSysctl::Ipv6DisableIpv6, u32::from(!v6))?;
            }
            for a in &inside {
                nl.add_address(&p, *a)?;
            }
            for a in &host_addresses {
                nl.add_address(&h, *a)?;
            }
            rxd_network::tc::set_limits(&h, ingress, egress)?;
            nl.set_up(&h)?;
            for r in routes {
                nl.add_link_route(&h, r)?;
            }
            Ok(())
        })();
        if rest.is_err() {
            let _ = nl.delete_link(&h);
        }
        rest
    })
    .await?
    .map_err(|e| bad(format!("Device {dev:?}: {e}")))?;
    config.insert(format!("volatile.{dev}.host_name"), host.to_string());
    Ok(Wired {
        plan: NicPlan {
            host: peer.to_string(),
            name,
            routes: gateways,
            veth: None,
        },
        host,
        network: None,
        hosts: None,
        pending: None,
    })
}

/// Brings a running container's NICs from expanded devices `old` to `new` (the container's
/// init is `pid`): NICs gone or changed are taken out (their host end deleted, which takes
/// the inside end with it), NICs new or changed are wired and moved into the container's
/// network namespace under their name, up. `config` (the instance's own, to be saved by the
/// caller) follows with the `volatile.<dev>.*` keys.
pub async fn hotplug(
    d: &Daemon,
    key: &InstanceKey,
    pid: i32,
    old: &Devices,
    new: &Devices,
    config: &mut Config,
) -> ApiResult<()> {
    let nic_changes = |a: &Devices, b: &Devices| -> Vec<String> {
        a.iter()
            .filter(|(n, dev)| is_nic(dev) && b.get(*n) != Some(*dev))
            .map(|(n, _)| n.clone())
            .collect()
    };
    let (gone, added) = (nic_changes(old, new), nic_changes(new, old));
    if gone.is_empty() && added.is_empty() {
        return Ok(());
    }
    // What would refuse a new NIC (an address another NIC holds, an unknown or errored network)
    // refuses the whole change before anything is taken out.
    precheck(d, key, new, &added, config).await?;
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| {
        ApiError::internal(format!("opening the container's network namespace: {e}"))
    })?;
    // Out first, so a changed NIC's new end can take its name. A veth goes with its host end;
    // a macvlan, which has none, is deleted inside by its name.
    let mut hosts = Vec::new();
    let mut inside = Vec::new();
    for dev in &gone {
        if let Some(h) = config.remove(&format!("volatile.{dev}.host_name")) {
            hosts.extend(IfName::parse(&h).ok());
        }
        let name = config.remove(&format!("volatile.{dev}.name"));
        if set(&old[dev], "nictype") == Some("macvlan") {
            let name = set(&old[dev], "name").map(str::to_owned).or(name);
            inside.extend(name.and_then(|n| IfName::parse(&n).ok()));
        }
        if !new.contains_key(dev) {
            config.remove(&format!("volatile.{dev}.hwaddr"));
        }
        d.networks
            .nics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(key.to_string(), dev.clone()));
    }
    discard(hosts).await;
    delete_inside(&netns, inside).await?;
    prune(d, key, Some(new)).await?;
    let guard = d.networks.lock.lock().await;
    let managed: BTreeMap<String, NetworkRow> = networks::list(d)
        .await?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    // Names the NICs that stay already have inside.
    let mut taken: BTreeSet<String> = new
        .iter()
        .filter(|(n, dev)| is_nic(dev) && !added.contains(n))
        .filter_map(|(n, dev)| {
            set(dev, "name")
                .map(str::to_owned)
                .or_else(|| config.get(&format!("volatile.{n}.name")).cloned())
        })
        .collect();
    let mut entries = Vec::new();
    let mut pending = Vec::new();
    let mut wired_hosts = Vec::new();
    let mut moved_macvlans = Vec::new();
    let mut result = Ok(());
    for dev in &added {
        let wired = match wire(d, key, new, dev, config, &managed, &mut taken).await {
            Ok(w) => w,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        entries.extend(wired.network.clone().zip(wired.hosts.clone()));
        pending.extend(wired.pending.clone());
        wired_hosts.push(wired.host.clone());
        if wired.pending.is_none() && !config.contains_key(&format!("volatile.{dev}.host_name")) {
            moved_macvlans.extend(IfName::parse(&wired.plan.name).ok());
        }
        let ns = netns.try_clone().map_err(ApiError::internal)?;
        let plan = wired.plan.clone();
        let moved = tokio::task::spawn_blocking(move || -> rxd_network::Result<()> {
            let ns = std::os::fd::AsFd::as_fd(&ns);
            let name = IfName::parse(&plan.name).expect("checked by wire");
            let mut nl = Netlink::open()?;
            match &plan.veth {
                // A bridged NIC's pair, its container end made inside.
                Some(v) => rxd_network::make_planned_veth(&mut nl, &plan, v, ns)?,
                None => {
                    let peer = IfName::parse(&plan.host).expect("made from a checked name");
                    nl.move_to_netns(&peer, ns, &name)?;
                }
            }
            rxd_network::in_netns(ns, move || Netlink::open()?.set_up(&name))?
        })
        .await?;
        if let Err(e) = moved {
            discard(vec![wired.host]).await;
            config.remove(&format!("volatile.{dev}.host_name"));
            forget_device(d, key, dev);
            let how = if wired.plan.veth.is_some() {
                "making it in the container as"
            } else {
                "moving it into the container as"
            };
            result = Err(bad(format!(
                "Device {dev:?}: {how} {}: {e}",
                wired.plan.name
            )));
            break;
        }
    }
    if result.is_err() {
        // Nothing half-plugged: the NICs wired by this change go again, with their filters
        // and reservations (a macvlan moved in is deleted inside by its name).
        for dev in &added {
            forget_device(d, key, dev);
            config.remove(&format!("volatile.{dev}.host_name"));
        }
        discard(wired_hosts.clone()).await;
        let _ = delete_inside(&netns, moved_macvlans.clone()).await;
        if let Ok(gone) = prune_rows(d, key, Some(old)).await {
            release_held(d, &guard, &gone).await;
        }
        pending.clear();
        entries.clear();
    }
    // Their filters, then their host ends on their bridges (those on a bridge rxd does not
    // manage, which it does not filter, whatever became of the filters).
    let filtered = networks::apply_firewall(d, &guard)
        .await
        .map_err(|e| bad(format!("The NICs' filters could not be applied: {e}")));
    let (managed, unmanaged): (Vec<Pending>, Vec<Pending>) =
        pending.into_iter().partition(|p| p.managed);
    let attached = attach(unmanaged).await.and(match filtered {
        Ok(()) => attach(managed).await,
        Err(e) => Err(e),
    });
    publish_hosts(d, key, entries).await?;
    drop(guard);
    result.and(attached)
}

/// The checks `wire` makes before it changes anything, for each of `added`.
async fn precheck(
    d: &Daemon,
    key: &InstanceKey,
    devices: &Devices,
    added: &[String],
    config: &Config,
) -> ApiResult<()> {
    let managed: BTreeMap<String, NetworkRow> = networks::list(d)
        .await?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let mut scratch = config.clone();
    for dev in added {
        let device = &devices[dev];
        if set(device, "nictype").is_some_and(|t| t != "bridged") {
            continue;
        }
        let Some(net) = managed_network(device, &managed) else {
            continue;
        };
        let row = managed
            .get(net)
            .ok_or_else(|| bad(format!("Device {dev:?}: network {net:?} not found")))?;
        if let Some(e) = d.networks.error(net) {
            return Err(bad(format!(
                "Network {net:?} unavailable on this server: {e}"
            )));
        }
        let (_, typed) = networks::typed(row)?;
        let mac = nic_mac(device, dev, &mut scratch)?;
        let n = row.name.clone();
        let others = d.db(move |s| s.nic_allocations(&n)).await?;
        reserve(key, dev, device, mac, &row.name, &typed, &others)?;
    }
    Ok(())
}

fn forget_device(d: &Daemon, key: &InstanceKey, dev: &str) {
    d.networks
        .nics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(key.to_string(), dev.to_owned()));
}

/// Deletes links by name inside a container's network namespace.
async fn delete_inside(netns: &std::fs::File, names: Vec<IfName>) -> ApiResult<()> {
    if names.is_empty() {
        return Ok(());
    }
    let ns = netns.try_clone().map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(move || {
        rxd_network::in_netns(
            std::os::fd::AsFd::as_fd(&ns),
            move || -> rxd_network::Result<()> {
                let mut nl = Netlink::open()?;
                for n in names {
                    nl.delete_link(&n)?;
                }
                Ok(())
            },
        )?
    })
    .await?
    .map_err(|e| bad(format!("Removing a NIC from the container: {e}")))
}

/// Deletes host ends (their peers go with them).
async fn discard(hosts: Vec<IfName>) {
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(mut nl) = Netlink::open() {
            for h in hosts {
                let _ = nl.delete_link(&h);
            }
        }
    })
    .await;
}

/// Forgets a container's NIC filters (without rebuilding the firewall).
fn forget(d: &Daemon, key: &InstanceKey) -> bool {
    let mut nics = d.networks.nics.lock().unwrap_or_else(|e| e.into_inner());
    let before = nics.len();
    nics.retain(|(k, _), _| k != key.as_str());
    nics.len() != before
}

/// A start that failed after `prepare`: its host ends deleted, its filters gone.
pub async fn abandon(d: &Daemon, key: &InstanceKey, prepared: Prepared) {
    discard(prepared.hosts).await;
    let guard = d.networks.lock.lock().await;
    if forget(d, key) {
        networks::rebuild_firewall(d, &guard).await;
    }
}

/// A container stopped: its filters go, and so do host ends that outlived it, if any;
/// `volatile.<dev>.host_name` is removed from `config`.
pub async fn stopped(d: &Daemon, key: &InstanceKey, config: &mut Config) {
    let hosts: Vec<IfName> = config
        .iter()
        .filter(|(k, _)| k.starts_with("volatile.") && k.ends_with(".host_name"))
        .filter_map(|(_, v)| IfName::parse(v).ok())
        .collect();
    config.retain(|k, _| !(k.starts_with("volatile.") && k.ends_with(".host_name")));
    if !hosts.is_empty() {
        discard(hosts).await;
    }
    if forget(d, key) {
        let guard = d.networks.lock.lock().await;
        networks::rebuild_firewall(d, &guard).await;
    }
}

/// A device change or a deletion: reservations of devices no longer NICs on a managed
/// network go, and their networks' dnsmasq frees their leases ([`release`]).
pub async fn prune(d: &Daemon, key: &InstanceKey, devices: Option<&Devices>) -> ApiResult<()> {
    let gone = prune_rows(d, key, devices).await?;
    release(d, &gone).await;
    Ok(())
}

/// [`prune`]'s rows: the reservations of devices no longer NICs on a managed network, deleted
/// and returned.
async fn prune_rows(
    d: &Daemon,
    key: &InstanceKey,
    devices: Option<&Devices>,
) -> ApiResult<Vec<NicRow>> {
    // Most instances hold no reservation: one read says so.
    if reservations_of(d, key).await.is_empty() {
        return Ok(Vec::new());
    }
    let managed: BTreeMap<String, NetworkRow> = networks::list(d)
        .await?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let keep: Vec<String> = devices
        .map(|devs| {
            devs.iter()
                .filter(|(_, v)| is_nic(v) && managed_network(v, &managed).is_some())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let (p, n) = key.split();
    let (p, n) = (p.to_owned(), n.to_owned());
    d.db(move |s| s.prune_nic_allocations(&p, &n, &keep)).await
}

/// The reservations an instance holds (before a delete or a rename).
pub async fn reservations_of(d: &Daemon, key: &InstanceKey) -> Vec<NicRow> {
    let (p, n) = key.split();
    let (p, n) = (p.to_owned(), n.to_owned());
    d.db(move |s| s.instance_nics(&p, &n))
        .await
        .unwrap_or_default()
}

/// Reservations went (`gone`: their rows, already deleted): their networks' hosts files are
/// rendered again and each departed NIC's lease released in the running dnsmasq
/// (`networks::release_leases`), before this returns, so the next start cannot be handed an
/// address or a name dnsmasq still leases to a NIC that is gone.
pub async fn release(d: &Daemon, gone: &[NicRow]) {
    if gone.is_empty() {
        return;
    }
    let guard = d.networks.lock.lock().await;
    release_held(d, &guard, gone).await;
}

/// An instance's reservations followed it to a new name (`rows`, as they are now): its
/// networks' hosts and names files are rendered again and their dnsmasq told.
pub async fn renamed(d: &Daemon, rows: &[NicRow]) {
    if rows.is_empty() {
        return;
    }
    let guard = d.networks.lock.lock().await;
    let nets: BTreeSet<&str> = rows.iter().map(|r| r.network.as_str()).collect();
    let mut restart = BTreeSet::new();
    for net in nets {
        if !refreshed(d, &guard, net, &BTreeSet::new()).await {
            restart.insert(net.to_owned());
        }
    }
    restart_later(d, restart);
}

/// [`release`] with the networks lock already held.
async fn release_held(d: &Daemon, held: &Held<'_>, gone: &[NicRow]) {
    let mut by_net: BTreeMap<&str, BTreeSet<mac::Mac>> = BTreeMap::new();
    for row in gone {
        let macs = by_net.entry(row.network.as_str()).or_default();
        macs.extend(row.hwaddr.parse::<mac::Mac>().ok());
    }
    let mut restart = BTreeSet::new();
    for (net, macs) in by_net {
        if !refreshed(d, held, net, &macs).await {
            restart.insert(net.to_owned());
        }
    }
    restart_later(d, restart);
}

/// `networks::release_leases` for one network; whether that was enough.
async fn refreshed(d: &Daemon, held: &Held<'_>, net: &str, gone: &BTreeSet<mac::Mac>) -> bool {
    match networks::release_leases(d, held, net, gone).await {
        Ok(freed) => freed,
        Err(e) => {
            tracing::warn!(network = net, error = %e, "leases not released; dnsmasq will be restarted");
            false
        }
    }
}

/// Networks whose dnsmasq must be restarted on a pruned lease file (a lease no DHCPRELEASE
/// frees), by `networks::refresher` right after, so the request that freed them does not wait
/// for dnsmasq's start; a failure marks the network errored and is logged.
fn restart_later(d: &Daemon, nets: BTreeSet<String>) {
    if nets.is_empty() {
        return;
    }
    d.networks
        .dirty
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(nets);
    d.networks.refresh.notify_one();
}

/// At daemon start: the filters of the NICs of containers still running, from their saved
/// `volatile.*` keys and reservations, so the rebuilt firewall keeps them.
pub async fn recover(d: &Daemon) {
    let Ok(rows) = d.db(|s| s.all_instances()).await else {
        return;
    };
    let managed: BTreeMap<String, NetworkRow> = match networks::list(d).await {
        Ok(rows) => rows.into_iter().map(|r| (r.name.clone(), r)).collect(),
        Err(_) => return,
    };
    for row in rows {
        let key = InstanceKey::new(&row.project, &row.name);
        if d.runtime.init(&key).is_none() {
            continue;
        }
        let Ok(expanded) = crate::service::expand::expanded(d, &row).await else {
            continue;
        };
        let config: Config = serde_json::from_str(&row.config).unwrap_or_default();
        let (p, n) = (row.project.clone(), row.name.clone());
        let Ok(reservations) = d.db(move |s| s.instance_nics(&p, &n)).await else {
            continue;
        };
        for (dev, device) in expanded.devices.iter().filter(|(_, v)| is_nic(v)) {
            let Some(net) = managed_network(device, &managed) else {
                continue;
            };
            let Some(Ok((_, typed))) = managed.get(net).map(networks::typed) else {
                continue;
            };
            let host = config
                .get(&format!("volatile.{dev}.host_name"))
                .and_then(|h| IfName::parse(h).ok());
            let r = reservations
                .iter()
                .find(|r| &r.device == dev && r.network == net);
            let (Some(host), Some(r)) = (host, r) else {
                continue;
            };
            let Ok(mac) = r.hwaddr.parse() else {
                continue;
            };
            let rules = rules(&key, dev, device, &host, mac, r, &typed);
            d.networks
                .nics
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((key.to_string(), dev.clone()), rules);
        }
    }
    cut_unfiltered(d, &managed).await;
}

/// Fail closed: a veth port of a managed bridge that no filter names (a NIC whose stored
/// config no longer matches what runs, after a failed edit) is deleted, with a warning,
/// rather than left on the bridge unfiltered.
async fn cut_unfiltered(d: &Daemon, managed: &BTreeMap<String, NetworkRow>) {
    let filtered: BTreeSet<String> = d
        .networks
        .nics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|r| r.host_name.to_string())
        .collect();
    let bridges: BTreeSet<String> = managed.keys().cloned().collect();
    let cut = tokio::task::spawn_blocking(move || -> rxd_network::Result<Vec<String>> {
        let mut nl = Netlink::open()?;
        let links = nl.list_links()?;
        let bridge_index: BTreeSet<u32> = links
            .iter()
            .filter(|l| l.is_bridge() && bridges.contains(&l.name))
            .map(|l| l.index)
            .collect();
        let mut cut = Vec::new();
        for l in links {
            let on_managed = l.master.is_some_and(|m| bridge_index.contains(&m));
            if on_managed && l.kind.as_deref() == Some("veth") && !filtered.contains(&l.name) {
                nl.delete_link(l.index)?;
                cut.push(l.name);
            }
        }
        Ok(cut)
    })
    .await;
    if let Ok(Ok(cut)) = cut {
        for name in cut {
            tracing::warn!(link = %name, "an unfiltered NIC on a managed bridge was cut off");
            d.warnings.lock().unwrap().record(
                rxd_core::warnings::WarningKind::NetworkUnavailable,
                format!("The host end {name:?} of a NIC on a managed bridge had no filters at start-up (its instance's config no longer describes it) and was deleted"),
            );
        }
    }
}
