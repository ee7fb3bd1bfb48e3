//! The nftables ruleset of managed bridges, as the JSON `nft -j -f -` reads: tables `inet rxd`
//! (NAT, forwarding, the host's DNS/DHCP/ICMP accepts per bridge; the DNAT of `nat=true` proxy
//! devices) and `bridge rxd` (per-NIC MAC and IP filtering), each declared, deleted and declared again before its contents, so one
//! transaction replaces the whole ruleset atomically. It is built from a typed description the
//! daemon derives from the store; it must not know how the JSON reaches `nft`, and it never
//! names a table other than `rxd`.

use crate::name::InstanceKey;
use crate::network::config::{BridgeConfig, Family, IfName, NetworkName};
use crate::network::mac::Mac;
use crate::proxy::{ProxyAddress, ProxyDevice, ProxyError};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The name of both tables.
pub const TABLE: &str = "rxd";
/// nftables refuses longer chain names (NFT_CHAIN_MAXNAMELEN is 256 with the NUL).
pub const MAX_CHAIN_NAME: usize = 255;

/// How a family's traffic leaving the bridge's subnet is translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat<A> {
    Off,
    Masquerade,
    /// `ipv*.nat.address`.
    Snat(A),
}

/// One family of a managed bridge, as the firewall sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeFamily<A: Family> {
    /// The bridge's subnet (its address's network).
    pub subnet: A::Net,
    pub nat: Nat<A>,
    pub routing: bool,
    pub firewall: bool,
    pub dhcp: bool,
}

/// A managed bridge: the `pstrt`, `fwd`, `in` and `out` chains of `inet rxd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeRules {
    pub name: NetworkName,
    pub ipv4: Option<BridgeFamily<Ipv4Addr>>,
    pub ipv6: Option<BridgeFamily<Ipv6Addr>>,
}

impl BridgeRules {
    pub fn new(name: NetworkName, config: &BridgeConfig) -> BridgeRules {
        BridgeRules {
            name,
            ipv4: config.ipv4.as_ref().map(|f| BridgeFamily {
                subnet: f.address.trunc(),
                nat: nat(f.nat, f.nat_address),
                routing: f.routing,
                firewall: f.firewall,
                dhcp: f.dhcp,
            }),
            ipv6: config.ipv6.as_ref().map(|f| BridgeFamily {
                subnet: f.address.trunc(),
                nat: nat(f.nat, f.nat_address),
                routing: f.routing,
                firewall: f.firewall,
                dhcp: f.dhcp,
            }),
        }
    }
}

fn nat<A>(on: bool, address: Option<A>) -> Nat<A> {
    match (on, address) {
        (false, _) => Nat::Off,
        (true, None) => Nat::Masquerade,
        (true, Some(a)) => Nat::Snat(a),
    }
}

/// A NIC on a managed bridge: its filters in `bridge rxd` (`in.<key>`, `fwd.<key>`). Every rule
/// matches the NIC's host-side interface, so nothing here reaches another port's frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicRules {
    pub instance: InstanceKey,
    pub device: String,
    /// The host end of the veth.
    pub host_name: IfName,
    pub mac: Mac,
    /// `security.mac_filtering` (the MAC part is installed also when either IP filter is on).
    pub mac_filter: bool,
    /// `security.ipv4_filtering`: `None` off; else the addresses and networks the NIC may use
    /// (its address, its routes). Empty: all IPv4 and ARP dropped.
    pub ipv4: Option<Vec<ipnet::Ipv4Net>>,
    /// `security.ipv6_filtering`, likewise.
    pub ipv6: Option<Vec<ipnet::Ipv6Net>>,
    /// `limits.egress` in bits per second: what the NIC sends beyond it is dropped (policed
    /// here, as the kernel may lack tc's police action; each chain counts its own traffic).
    pub egress_limit: Option<u64>,
}

/// The transport a NAT proxy forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatProtocol {
    Tcp,
    Udp,
}

impl NatProtocol {
    fn as_str(self) -> &'static str {
        match self {
            NatProtocol::Tcp => "tcp",
            NatProtocol::Udp => "udp",
        }
    }
}

/// A `nat=true` proxy device of a running container: its DNAT chains in `inet rxd`
/// (`prert.<key>`, `out.<key>`, `pstrt.<key>`). Made only by [`ProxyNat::new`], so the
/// listen and target addresses are of one family, the listen address is a specific one and
/// the ports pair up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyNat {
    instance: InstanceKey,
    device: String,
    /// The host end of the NIC the target address is on (names the chains when the instance
    /// and device names are too long).
    host_name: IfName,
    protocol: NatProtocol,
    listen: IpAddr,
    listen_ports: Vec<u16>,
    target: IpAddr,
    /// One port (every listen port goes to it) or one per listen port.
    target_ports: Vec<u16>,
}

impl ProxyNat {
    /// The rules of proxy device `device` of `instance` (validated, `nat=true`), sending its
    /// traffic to `target`, the static address `proxy::nat_target` chose on the NIC whose
    /// host end is `host_name`; the connect side's ports are kept.
    pub fn new(
        instance: InstanceKey,
        device: &str,
        host_name: IfName,
        proxy: &ProxyDevice,
        target: IpAddr,
    ) -> Result<ProxyNat, ProxyError> {
        let (protocol, listen, listen_ports, target_ports) = match (&proxy.listen, &proxy.connect) {
            (ProxyAddress::Tcp { ip, ports }, ProxyAddress::Tcp { ports: to, .. }) => {
                (NatProtocol::Tcp, *ip, ports, to)
            }
            (ProxyAddress::Udp { ip, ports }, ProxyAddress::Udp { ports: to, .. }) => {
                (NatProtocol::Udp, *ip, ports, to)
            }
            _ => {
                return Err(ProxyError::NatProtocol {
                    listen: proxy.listen.kind(),
                    connect: proxy.connect.kind(),
                })
            }
        };
        if listen.is_unspecified() {
            return Err(ProxyError::NatWildcard(listen));
        }
        if listen.is_ipv4() != target.is_ipv4() || target.is_unspecified() {
            return Err(ProxyError::NatFamilies);
        }
        if listen_ports.is_empty()
            || target_ports.is_empty()
            || (target_ports.len() != 1 && target_ports.len() != listen_ports.len())
        {
            return Err(ProxyError::PortCount);
        }
        Ok(ProxyNat {
            instance,
            device: device.to_owned(),
            host_name,
            protocol,
            listen,
            listen_ports: listen_ports.clone(),
            target,
            target_ports: target_ports.clone(),
        })
    }

    pub fn instance(&self) -> &InstanceKey {
        &self.instance
    }

    pub fn device(&self) -> &str {
        &self.device
    }
}

/// Everything rxd puts in nftables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub bridges: Vec<BridgeRules>,
    pub nics: Vec<NicRules>,
    pub proxies: Vec<ProxyNat>,
}

/// A chain name part: ASCII letters, digits and `_` kept, every other byte `-` and two hex
/// digits, so parts never contain `.` and two names never meet.
fn encode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("-{b:02x}"));
        }
    }
    out
}

/// A NIC chain's name: `<kind>.<instance key>.<device>` (LXD's, encoded), or, if that would be
/// longer than nftables allows, `<kind>.@<host interface>` (unique on the host, and `@` never
/// appears in an encoded name).
pub fn nic_chain_name(kind: &str, nic: &NicRules) -> String {
    let name = format!("{kind}.{}.{}", encode(&nic.instance), encode(&nic.device));
    if name.len() <= MAX_CHAIN_NAME {
        name
    } else {
        format!("{kind}.@{}", nic.host_name)
    }
}

/// A bridge chain's name: `<kind>.<bridge>`, or `<kind>.@<bridge>` when the bridge's name has
/// a `.`, which could otherwise read as a proxy chain's `<kind>.<instance>.<device>` in the
/// same table (`@` appears in neither a bridge name nor an encoded part).
pub fn bridge_chain_name(kind: &str, bridge: &str) -> String {
    if bridge.contains('.') {
        format!("{kind}.@{bridge}")
    } else {
        format!("{kind}.{bridge}")
    }
}

/// A NAT proxy chain's name: `<kind>.<instance key>.<device>` (LXD's, encoded as a NIC
/// chain's), or, if that would be too long, `<kind>.%<host interface>.<device>` (the host end
/// belongs to this instance alone, and `%` appears in no other chain name).
pub fn proxy_chain_name(kind: &str, proxy: &ProxyNat) -> String {
    let name = format!(
        "{kind}.{}.{}",
        encode(&proxy.instance),
        encode(&proxy.device)
    );
    if name.len() <= MAX_CHAIN_NAME {
        name
    } else {
        format!("{kind}.%{}.{}", proxy.host_name, encode(&proxy.device))
    }
}

fn table(family: &str) -> Value {
    json!({"family": family, "name": TABLE})
}

fn chain(family: &str, name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({"add": {"chain": {
        "family": family, "table": TABLE, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept",
    }}})
}

fn rule(family: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn matches(op: &str, left: Value, right: impl Into<Value>) -> Value {
    json!({"match": {"op": op, "left": left, "right": right.into()}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn raw(offset: u32, len: u8) -> Value {
    json!({"payload": {"base": "nh", "offset": offset, "len": len}})
}

fn prefix<A: Family>(net: &A::Net) -> Value {
    json!({"prefix": {"addr": A::network(net).to_string(), "len": A::prefix_len(net)}})
}

fn verdict(v: &str) -> Value {
    json!({ v: null })
}

/// Names nftables gives a family: its payload protocol, `meta nfproto` value, ICMP protocol.
fn names<A: Family>() -> (&'static str, &'static str, &'static str) {
    if A::KEY == "ipv4" {
        ("ip", "ipv4", "icmp")
    } else {
        ("ip6", "ipv6", "icmpv6")
    }
}

/// ICMP types the host must send and receive on a bridge (LXD's lists): errors, and for IPv6
/// neighbour discovery, router solicitations in and advertisements out, MLDv2 reports.
fn icmp_types<A: Family>(input: bool) -> Vec<&'static str> {
    if A::KEY == "ipv4" {
        vec![
            "destination-unreachable",
            "time-exceeded",
            "parameter-problem",
        ]
    } else {
        let mut t = vec![
            "destination-unreachable",
            "packet-too-big",
            "time-exceeded",
            "parameter-problem",
        ];
        if input {
            t.extend([
                "nd-router-solicit",
                "nd-neighbor-solicit",
                "nd-neighbor-advert",
            ]);
        } else {
            t.extend([
                "echo-request",
                "nd-router-advert",
                "nd-neighbor-solicit",
                "nd-neighbor-advert",
            ]);
        }
        t.push("mld2-listener-report");
        t
    }
}

const DHCP_SERVER_V4: u16 = 67;
const DHCP_SERVER_V6: u16 = 547;

/// The bridge chains' rules for one family, appended to the four lists.
struct BridgeChains {
    pstrt: Vec<Vec<Value>>,
    fwd: Vec<Vec<Value>>,
    input: Vec<Vec<Value>>,
    output: Vec<Vec<Value>>,
}

fn bridge_family<A: Family>(br: &str, f: &BridgeFamily<A>, out: &mut BridgeChains) {
    let (ip, nfproto, icmp) = names::<A>();
    let family = || matches("==", meta("nfproto"), nfproto);
    match f.nat {
        Nat::Off => {}
        Nat::Masquerade | Nat::Snat(_) => {
            let action = match f.nat {
                Nat::Snat(a) => json!({"snat": {"family": ip, "addr": a.to_string()}}),
                _ => verdict("masquerade"),
            };
            out.pstrt.push(vec![
                matches("==", payload(ip, "saddr"), prefix::<A>(&f.subnet)),
                matches("!=", payload(ip, "daddr"), prefix::<A>(&f.subnet)),
                action,
            ]);
        }
    }
    let action = if f.routing { "accept" } else { "reject" };
    for dir in ["oifname", "iifname"] {
        out.fwd.push(vec![
            family(),
            matches("==", meta(dir), br),
            verdict(action),
        ]);
    }
    if !f.firewall {
        return;
    }
    let dhcp_port = if A::KEY == "ipv4" {
        DHCP_SERVER_V4
    } else {
        DHCP_SERVER_V6
    };
    for (chain, dir, port_field, input) in [
        (&mut out.input, "iifname", "dport", true),
        (&mut out.output, "oifname", "sport", false),
    ] {
        let on_bridge = || matches("==", meta(dir), br);
        for proto in ["tcp", "udp"] {
            chain.push(vec![
                on_bridge(),
                family(),
                matches("==", payload(proto, port_field), 53),
                verdict("accept"),
            ]);
        }
        chain.push(vec![
            on_bridge(),
            matches(
                "==",
                payload(icmp, "type"),
                json!({"set": icmp_types::<A>(input)}),
            ),
            verdict("accept"),
        ]);
        if f.dhcp {
            chain.push(vec![
                on_bridge(),
                family(),
                matches("==", payload("udp", port_field), dhcp_port),
                verdict("accept"),
            ]);
        }
    }
}

fn bridge_commands(b: &BridgeRules, cmds: &mut Vec<Value>) {
    let mut chains = BridgeChains {
        pstrt: Vec::new(),
        fwd: Vec::new(),
        input: Vec::new(),
        output: Vec::new(),
    };
    let br = b.name.as_str();
    if let Some(f) = &b.ipv4 {
        bridge_family(br, f, &mut chains);
    }
    if let Some(f) = &b.ipv6 {
        bridge_family(br, f, &mut chains);
    }
    for (kind, nat, hook, prio, rules) in [
        ("pstrt", true, "postrouting", 100, chains.pstrt),
        ("fwd", false, "forward", 0, chains.fwd),
        ("in", false, "input", 0, chains.input),
        ("out", false, "output", 0, chains.output),
    ] {
        if rules.is_empty() {
            continue;
        }
        let name = bridge_chain_name(kind, br);
        let kind = if nat { "nat" } else { "filter" };
        cmds.push(chain("inet", &name, kind, hook, prio));
        cmds.extend(rules.into_iter().map(|expr| rule("inet", &name, expr)));
    }
}

/// A set of networks as nftables' right-hand side: full-length ones as plain addresses.
fn net_set<A: Family>(nets: &[A::Net]) -> Value {
    let max = if A::KEY == "ipv4" { 32 } else { 128 };
    let items: Vec<Value> = nets
        .iter()
        .map(|n| {
            if A::prefix_len(n) == max {
                json!(A::network(n).to_string())
            } else {
                prefix::<A>(n)
            }
        })
        .collect();
    json!({ "set": items })
}

/// The top `len` bits of an IPv6 network, as nftables compares a raw payload of that length.
fn top_bits(net: &ipnet::Ipv6Net) -> String {
    let len = u32::from(net.prefix_len());
    let bits = u128::from(net.network())
        .checked_shr(128 - len)
        .unwrap_or(0);
    format!("0x{bits:x}")
}

/// The burst a NIC's egress limit allows (LXD's tc police burst: 1024k).
const EGRESS_BURST: u64 = 1 << 20;

/// A NIC's filter rules (LXD's bridge-family filters). `input`: the host-bound chain, which
/// also lets DHCP requests and router solicitations through.
fn nic_rules(nic: &NicRules, input: bool) -> Vec<Vec<Value>> {
    let host = || matches("==", meta("iifname"), nic.host_name.as_str());
    let mac = nic.mac.to_string();
    let mut rules = Vec::new();
    let mut add = |mut expr: Vec<Value>, action: &str| {
        expr.insert(0, host());
        expr.push(verdict(action));
        rules.push(expr);
    };
    if let Some(bits) = nic.egress_limit {
        add(
            vec![json!({"limit": {
                "rate": (bits / 8).max(1),
                "rate_unit": "bytes",
                "per": "second",
                "burst": EGRESS_BURST,
                "burst_unit": "bytes",
                "inv": true,
            }})],
            "drop",
        );
    }
    if !(nic.mac_filter || nic.ipv4.is_some() || nic.ipv6.is_some()) {
        return rules;
    }
    add(
        vec![matches("!=", payload("ether", "saddr"), mac.as_str())],
        "drop",
    );
    add(
        vec![matches("!=", payload("arp", "saddr ether"), mac.as_str())],
        "drop",
    );
    // No DHCP server on the bridge but rxd's: an instance's offers and replies (DHCPv4 from
    // port 67, DHCPv6 from 547) would make it its neighbours' gateway and resolver.
    add(
        vec![
            matches("==", payload("ip", "protocol"), "udp"),
            matches("==", payload("udp", "sport"), DHCP_SERVER_V4),
        ],
        "drop",
    );
    add(
        vec![
            matches("==", payload("ip6", "nexthdr"), "udp"),
            matches("==", payload("udp", "sport"), DHCP_SERVER_V6),
        ],
        "drop",
    );
    // A DHCPv4 request for another hardware address (the BOOTP `chaddr`, 28 bytes into the
    // message) would take leases, and so reservations, from the pool.
    add(
        vec![
            matches("==", payload("ip", "protocol"), "udp"),
            matches("==", payload("udp", "dport"), DHCP_SERVER_V4),
            matches(
                "!=",
                json!({"payload": {"base": "th", "offset": (8 + 28) * 8, "len": 48}}),
                format!("0x{:012x}", nic.mac.as_u64()),
            ),
        ],
        "drop",
    );
    // The target link-layer address option of a neighbour advertisement.
    add(
        vec![
            matches("==", payload("icmpv6", "type"), "nd-neighbor-advert"),
            matches("!=", raw(528, 48), format!("0x{:012x}", nic.mac.as_u64())),
        ],
        "drop",
    );
    if let Some(allowed) = &nic.ipv4 {
        if input {
            add(
                vec![
                    matches("==", payload("ip", "saddr"), "0.0.0.0"),
                    matches("==", payload("ip", "daddr"), "255.255.255.255"),
                    matches("==", payload("udp", "dport"), DHCP_SERVER_V4),
                ],
                "accept",
            );
        }
        if !allowed.is_empty() {
            let set = net_set::<Ipv4Addr>(allowed);
            add(
                vec![matches("==", payload("arp", "saddr ip"), set.clone())],
                "accept",
            );
            add(vec![matches("==", payload("ip", "saddr"), set)], "accept");
        }
        add(vec![matches("==", payload("ether", "type"), "arp")], "drop");
        add(vec![matches("==", payload("ether", "type"), "ip")], "drop");
    }
    if let Some(allowed) = &nic.ipv6 {
        let link_local = || json!({"prefix": {"addr": "fe80::", "len": 10}});
        if input {
            add(
                vec![
                    matches("==", payload("ip6", "saddr"), link_local()),
                    matches("==", payload("ip6", "daddr"), "ff02::1:2"),
                    matches("==", payload("udp", "dport"), DHCP_SERVER_V6),
                ],
                "accept",
            );
            add(
                vec![
                    matches("==", payload("ip6", "saddr"), link_local()),
                    matches("==", payload("ip6", "daddr"), "ff02::2"),
                    matches("==", payload("icmpv6", "type"), "nd-router-solicit"),
                ],
                "accept",
            );
        }
        let na = || matches("==", payload("icmpv6", "type"), "nd-neighbor-advert");
        add(
            vec![matches("==", payload("icmpv6", "type"), "nd-router-advert")],
            "drop",
        );
        for net in allowed {
            let mut expr = vec![na()];
            if net.prefix_len() > 0 {
                expr.push(matches("==", raw(384, net.prefix_len()), top_bits(net)));
            }
            add(expr, "accept");
        }
        add(vec![na()], "drop");
        if !allowed.is_empty() {
            add(
                vec![matches(
                    "==",
                    payload("ip6", "saddr"),
                    net_set::<Ipv6Addr>(allowed),
                )],
                "accept",
            );
        }
        add(vec![matches("==", payload("ether", "type"), "ip6")], "drop");
    }
    if nic.ipv4.is_some() || nic.ipv6.is_some() {
        add(
            vec![matches(
                "!=",
                payload("ether", "type"),
                json!({"set": ["arp", "ip", "ip6"]}),
            )],
            "drop",
        );
    }
    rules
}

fn nic_commands(nic: &NicRules, cmds: &mut Vec<Value>) {
    for (kind, hook, input) in [("in", "input", true), ("fwd", "forward", false)] {
        let rules = nic_rules(nic, input);
        if rules.is_empty() {
            continue;
        }
        let name = nic_chain_name(kind, nic);
        cmds.push(chain("bridge", &name, "filter", hook, -200));
        cmds.extend(rules.into_iter().map(|expr| rule("bridge", &name, expr)));
    }
}

/// Runs of consecutive ports, as (first, last), in order.
fn port_runs(ports: &[u16]) -> Vec<(u16, u16)> {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(p) => *last = p,
            _ => runs.push((p, p)),
        }
    }
    runs
}

/// Ports as nftables' right-hand side: one port, or a range.
fn ports_value((first, last): (u16, u16)) -> Value {
    if first == last {
        json!(first)
    } else {
        json!({"range": [first, last]})
    }
}

/// Where one DNAT rule sends its listen ports: to one target port, or to the same port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DnatPort {
    To(u16),
    Same,
}

/// A NAT proxy's DNAT rules, in listen port order (LXD's grouping): with one target port,
/// each run of listen ports goes to it; else a run whose ports map onto the very same
/// ports keeps its port (one rule), and every other port gets a rule of its own.
fn dnat_ranges(listen: &[u16], target: &[u16]) -> Vec<((u16, u16), DnatPort)> {
    if let [port] = target {
        return port_runs(listen)
            .into_iter()
            .map(|run| (run, DnatPort::To(*port)))
            .collect();
    }
    let mut out: Vec<((u16, u16), DnatPort)> = Vec::new();
    for (&l, &t) in listen.iter().zip(target) {
        if l == t {
            if let Some(((_, last), DnatPort::Same)) = out.last_mut() {
                if last.checked_add(1) == Some(l) {
                    *last = l;
                    continue;
                }
            }
            out.push(((l, l), DnatPort::Same));
        } else {
            out.push(((l, l), DnatPort::To(t)));
        }
    }
    // A single port kept is written with its port, as LXD writes it.
    for (run, port) in &mut out {
        if *port == DnatPort::Same && run.0 == run.1 {
            *port = DnatPort::To(run.0);
        }
    }
    out
}

fn proxy_commands(p: &ProxyNat, cmds: &mut Vec<Value>) {
    let ip = if p.listen.is_ipv4() { "ip" } else { "ip6" };
    let proto = p.protocol.as_str();
    let dnat: Vec<Vec<Value>> = dnat_ranges(&p.listen_ports, &p.target_ports)
        .into_iter()
        .map(|(run, port)| {
            let to = match port {
                DnatPort::To(port) => {
                    json!({"dnat": {"family": ip, "addr": p.target.to_string(), "port": port}})
                }
                DnatPort::Same => json!({"dnat": {"family": ip, "addr": p.target.to_string()}}),
            };
            vec![
                matches("==", payload(ip, "daddr"), p.listen.to_string()),
                matches("==", payload(proto, "dport"), ports_value(run)),
                to,
            ]
        })
        .collect();
    // Hairpin: the instance reaching itself through the listen address gets its answer
    // from the host, which it talked to, rather than from itself.
    let hairpin: Vec<Vec<Value>> = port_runs(&p.target_ports)
        .into_iter()
        .map(|run| {
            vec![
                matches("==", payload(ip, "saddr"), p.target.to_string()),
                matches("==", payload(ip, "daddr"), p.target.to_string()),
                matches("==", payload(proto, "dport"), ports_value(run)),
                verdict("masquerade"),
            ]
        })
        .collect();
    for (kind, hook, prio, rules) in [
        ("prert", "prerouting", -100, &dnat),
        ("out", "output", -100, &dnat),
        ("pstrt", "postrouting", 100, &hairpin),
    ] {
        let name = proxy_chain_name(kind, p);
        cmds.push(chain("inet", &name, "nat", hook, prio));
        cmds.extend(rules.iter().map(|expr| rule("inet", &name, expr.clone())));
    }
}

/// An empty set only a whole ruleset makes: [`nics_added`] flushes it, so its transaction
/// fails, and nothing of it is applied, if rxd's tables are not the ones the whole ruleset made
/// (someone flushed the ruleset since).
pub const WHOLE_MARK: &str = "whole";

fn whole_mark() -> Value {
    json!({"family": "bridge", "table": TABLE, "name": WHOLE_MARK})
}

/// The whole ruleset: both tables replaced, then every bridge's, NAT proxy's and NIC's chains.
pub fn ruleset(r: &Ruleset) -> Value {
    let mut cmds = Vec::new();
    for family in ["inet", "bridge"] {
        cmds.push(json!({"add": {"table": table(family)}}));
        cmds.push(json!({"delete": {"table": table(family)}}));
        cmds.push(json!({"add": {"table": table(family)}}));
    }
    let mut mark = whole_mark();
    mark["type"] = json!("ether_addr");
    cmds.push(json!({"add": {"set": mark}}));
    for b in &r.bridges {
        bridge_commands(b, &mut cmds);
    }
    for p in &r.proxies {
        proxy_commands(p, &mut cmds);
    }
    for nic in &r.nics {
        nic_commands(nic, &mut cmds);
    }
    json!({ "nftables": cmds })
}

/// NICs' chains added to a ruleset [`ruleset`] made without them, nothing else touched: the
/// bridge table declared, the whole ruleset's mark flushed (which fails the transaction if
/// the mark is gone), each chain declared, emptied (one left from an earlier run gets its
/// rules replaced) and filled. The kernel adds base chains quickly; replacing the whole
/// ruleset, which deletes every base chain, waits for RCU grace periods (tens of ms).
pub fn nics_added(nics: &[NicRules]) -> Value {
    let mut cmds = vec![
        json!({"add": {"table": table("bridge")}}),
        json!({"flush": {"set": whole_mark()}}),
    ];
    for nic in nics {
        let mut chains = Vec::new();
        nic_commands(nic, &mut chains);
        for cmd in chains {
            let declared = cmd["add"]["chain"]["name"].as_str().map(str::to_owned);
            cmds.push(cmd);
            if let Some(name) = declared {
                cmds.push(
                    json!({"flush": {"chain": {"family": "bridge", "table": TABLE, "name": name}}}),
                );
            }
        }
    }
    json!({ "nftables": cmds })
}

/// Both tables removed (the declaration first, so deleting a table that is not there succeeds).
pub fn teardown() -> Value {
    let mut cmds = Vec::new();
    for family in ["inet", "bridge"] {
        cmds.push(json!({"add": {"table": table(family)}}));
        cmds.push(json!({"delete": {"table": table(family)}}));
    }
    json!({ "nftables": cmds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::config::Config;
    use std::collections::BTreeSet;

    fn bridge(name: &str, pairs: &[(&str, &str)]) -> BridgeRules {
        let c: Config = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BridgeRules::new(
            NetworkName::parse(name).unwrap(),
            &BridgeConfig::from_config(&c).unwrap(),
        )
    }

    fn nic(
        project: &str,
        instance: &str,
        device: &str,
        v4: Option<&[&str]>,
        v6: Option<&[&str]>,
    ) -> NicRules {
        NicRules {
            instance: InstanceKey::new(project, instance),
            device: device.to_owned(),
            host_name: IfName::parse("veth1a2b3c4d").unwrap(),
            mac: "00:16:3e:12:34:56".parse().unwrap(),
            mac_filter: true,
            ipv4: v4.map(|l| l.iter().map(|s| s.parse().unwrap()).collect()),
            ipv6: v6.map(|l| l.iter().map(|s| s.parse().unwrap()).collect()),
            egress_limit: None,
        }
    }

    fn proxy(project: &str, instance: &str, device: &str, pairs: &str, target: &str) -> ProxyNat {
        let mut d: std::collections::BTreeMap<String, String> = [
            ("type".to_string(), "proxy".to_string()),
            ("nat".into(), "true".into()),
        ]
        .into();
        for pair in pairs.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap();
            d.insert(k.into(), v.into());
        }
        ProxyNat::new(
            InstanceKey::new(project, instance),
            device,
            IfName::parse("veth1a2b3c4d").unwrap(),
            &crate::proxy::validate(&d).unwrap(),
            target.parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn nics_added_declare_empty_and_fill_their_chains_and_touch_nothing_else() {
        let a = nic("default", "c1", "eth0", Some(&["10.97.0.2/32"]), None);
        let b = nic("p", "c2", "eth1", Some(&["10.97.0.3/32"]), Some(&[]));
        let v = nics_added(&[a.clone(), b.clone()]);
        let cmds = v["nftables"].as_array().unwrap();
        assert_eq!(
            cmds[0],
            json!({"add": {"table": {"family": "bridge", "name": "rxd"}}})
        );
        // The whole ruleset's mark, flushed: gone, it fails the whole transaction.
        assert_eq!(
            cmds[1],
            json!({"flush": {"set": {"family": "bridge", "table": "rxd", "name": WHOLE_MARK}}})
        );
        // Nothing deleted, no other table or chain named.
        for c in cmds {
            let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
            assert!(verb == "add" || verb == "flush", "{c}");
            let object = body.as_object().unwrap().values().next().unwrap();
            assert_eq!(object["family"], "bridge", "{c}");
        }
        // Each chain of the full ruleset's for these NICs, declared, flushed at once, then its
        // rules, as the full ruleset has them.
        let full = ruleset(&Ruleset {
            nics: vec![a.clone(), b.clone()],
            ..Ruleset::default()
        });
        let full: Vec<&Value> = full["nftables"].as_array().unwrap()[7..].iter().collect();
        let without_flushes: Vec<&Value> = cmds[1..]
            .iter()
            .filter(|c| c.get("flush").is_none())
            .collect();
        assert_eq!(without_flushes, full);
        let mut names = Vec::new();
        for (i, c) in cmds.iter().enumerate() {
            if let Some(name) = c["add"]["chain"]["name"].as_str() {
                assert_eq!(
                    cmds[i + 1],
                    json!({"flush": {"chain": {"family": "bridge", "table": "rxd", "name": name}}})
                );
                names.push(name.to_owned());
            }
        }
        let mut want: Vec<String> = [&a, &b]
            .iter()
            .flat_map(|n| [nic_chain_name("in", n), nic_chain_name("fwd", n)])
            .collect();
        want.sort();
        names.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn proxy_nat_pinned() {
        let r = Ruleset {
            proxies: vec![proxy(
                "default",
                "c1",
                "web",
                "listen=tcp:198.51.100.2:8080 connect=tcp:10.97.0.10:80",
                "10.97.0.10",
            )],
            ..Ruleset::default()
        };
        let dnat = |chain: &str| {
            json!({"add": {"rule": {"family": "inet", "table": "rxd", "chain": chain, "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "198.51.100.2"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080}},
                {"dnat": {"family": "ip", "addr": "10.97.0.10", "port": 80}}]}}})
        };
        let want = json!({"nftables": [
            {"add": {"table": {"family": "inet", "name": "rxd"}}},
            {"delete": {"table": {"family": "inet", "name": "rxd"}}},
            {"add": {"table": {"family": "inet", "name": "rxd"}}},
            {"add": {"table": {"family": "bridge", "name": "rxd"}}},
            {"delete": {"table": {"family": "bridge", "name": "rxd"}}},
            {"add": {"table": {"family": "bridge", "name": "rxd"}}},
            {"add": {"set": {"family": "bridge", "table": "rxd", "name": "whole", "type": "ether_addr"}}},
            {"add": {"chain": {"family": "inet", "table": "rxd", "name": "prert.c1.web",
                "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}},
            dnat("prert.c1.web"),
            {"add": {"chain": {"family": "inet", "table": "rxd", "name": "out.c1.web",
                "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}}},
            dnat("out.c1.web"),
            {"add": {"chain": {"family": "inet", "table": "rxd", "name": "pstrt.c1.web",
                "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}},
            {"add": {"rule": {"family": "inet", "table": "rxd", "chain": "pstrt.c1.web", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.97.0.10"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.97.0.10"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}},
                {"masquerade": null}]}}},
        ]});
        assert_eq!(ruleset(&r), want);
    }

    #[test]
    fn proxy_nat_ipv6_udp_and_port_ranges() {
        let p = proxy(
            "default",
            "c1",
            "dns",
            "listen=udp:[2001:db8::2]:53,5300-5301 connect=udp:[fd42::5]:53,5300-5301",
            "fd42::5",
        );
        let v = ruleset(&Ruleset {
            proxies: vec![p],
            ..Ruleset::default()
        });
        let text = v.to_string();
        // 53 → 53 keeps its port, written out as LXD writes a single port; the run keeps
        // its ports with one rule; the hairpin covers each run of target ports.
        for want in [
            r#"{"match":{"op":"==","left":{"payload":{"protocol":"ip6","field":"daddr"}},"right":"2001:db8::2"}},{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":53}},{"dnat":{"family":"ip6","addr":"fd42::5","port":53}}"#,
            r#"{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":{"range":[5300,5301]}}},{"dnat":{"family":"ip6","addr":"fd42::5"}}"#,
            r#"{"match":{"op":"==","left":{"payload":{"protocol":"ip6","field":"saddr"}},"right":"fd42::5"}},{"match":{"op":"==","left":{"payload":{"protocol":"ip6","field":"daddr"}},"right":"fd42::5"}},{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":{"range":[5300,5301]}}},{"masquerade":null}"#,
        ] {
            assert!(text.contains(want), "{want}\nnot in {text}");
        }
        assert_eq!(rule_count(&v, "prert.c1.dns"), 2);
        assert_eq!(rule_count(&v, "out.c1.dns"), 2);
        assert_eq!(rule_count(&v, "pstrt.c1.dns"), 2);
    }

    fn check_dnat(listen: &[u16], target: &[u16], expected: &str) {
        let got: Vec<String> = dnat_ranges(listen, target)
            .into_iter()
            .map(|((a, b), port)| {
                let ports = if a == b {
                    format!("{a}")
                } else {
                    format!("{a}-{b}")
                };
                match port {
                    DnatPort::To(p) => format!("{ports}>{p}"),
                    DnatPort::Same => format!("{ports}>="),
                }
            })
            .collect();
        assert_eq!(got.join(" "), expected, "{listen:?} → {target:?}");
    }

    #[test]
    fn dnat_port_grouping() {
        check_dnat(&[8080], &[80], "8080>80");
        check_dnat(&[80], &[80], "80>80");
        check_dnat(&[80, 81, 82], &[80, 81, 82], "80-82>=");
        check_dnat(&[80, 81, 82], &[8080], "80-82>8080");
        check_dnat(&[80, 81, 90], &[8080], "80-81>8080 90>8080");
        check_dnat(&[80, 81, 82], &[90, 91, 92], "80>90 81>91 82>92");
        // LXD's own example: two listen runs onto one target run.
        check_dnat(&[100, 101, 300], &[100, 101, 102], "100-101>= 300>102");
        check_dnat(&[80, 81, 82, 83], &[80, 81, 92, 83], "80-81>= 82>92 83>83");
        check_dnat(&[81, 80], &[81, 80], "81>81 80>80");
        check_dnat(&[65534, 65535], &[65534, 65535], "65534-65535>=");
    }

    #[test]
    fn proxy_nat_refuses_what_nat_mode_cannot_do() {
        let device = |pairs: &str| {
            let mut d: std::collections::BTreeMap<String, String> =
                [("type".to_string(), "proxy".to_string())].into();
            for pair in pairs.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap();
                d.insert(k.into(), v.into());
            }
            crate::proxy::validate(&d).unwrap()
        };
        let make = |pairs: &str, target: &str| {
            ProxyNat::new(
                InstanceKey::new("default", "c1"),
                "p",
                IfName::parse("veth0").unwrap(),
                &device(pairs),
                target.parse().unwrap(),
            )
            .map(drop)
            .map_err(|e| e.to_string())
        };
        let cases = [
            (
                "listen=tcp:198.51.100.2:80 connect=tcp:10.0.0.5:80",
                "10.0.0.5",
                Ok(()),
            ),
            (
                "listen=tcp:198.51.100.2:80 connect=tcp:0.0.0.0:80",
                "10.0.0.5",
                Ok(()),
            ),
            (
                "listen=tcp:198.51.100.2:80 connect=tcp:10.0.0.5:80",
                "fd42::5",
                Err("Cannot mix IP versions"),
            ),
            (
                "listen=tcp:198.51.100.2:80 connect=tcp:0.0.0.0:80",
                "0.0.0.0",
                Err("Cannot mix IP versions"),
            ),
            (
                "listen=tcp:0.0.0.0:80 connect=tcp:10.0.0.5:80",
                "10.0.0.5",
                Err("wildcard"),
            ),
            (
                "listen=unix:/a connect=tcp:10.0.0.5:80",
                "10.0.0.5",
                Err("Proxying unix <-> tcp"),
            ),
            (
                "listen=tcp:198.51.100.2:80 connect=unix:/a",
                "10.0.0.5",
                Err("Proxying tcp <-> unix"),
            ),
        ];
        for (pairs, target, want) in cases {
            match (make(pairs, target), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.contains(w), "{pairs}: {e}, wanted {w}"),
                (got, want) => panic!("{pairs} → {target}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn proxy_chains_never_meet_bridge_chains() {
        // A bridge named like an instance and device, the same kinds of chain in one table.
        let v = ruleset(&Ruleset {
            bridges: vec![bridge(
                "c1.web",
                &[("ipv4.address", "10.0.3.1/24"), ("ipv4.nat", "true")],
            )],
            proxies: vec![proxy(
                "default",
                "c1",
                "web",
                "listen=tcp:198.51.100.2:80 connect=tcp:10.0.3.5:80",
                "10.0.3.5",
            )],
            ..Ruleset::default()
        });
        check_structure(&v);
        let names = chain_names(&v);
        assert!(names.contains(&"pstrt.@c1.web".to_owned()), "{names:?}");
        assert!(names.contains(&"out.@c1.web".to_owned()), "{names:?}");
        assert!(names.contains(&"pstrt.c1.web".to_owned()), "{names:?}");
        assert_eq!(bridge_chain_name("fwd", "br-0_x"), "fwd.br-0_x");
    }

    #[test]
    fn small_ruleset_pinned() {
        let r = Ruleset {
            bridges: vec![bridge(
                "br0",
                &[
                    ("ipv4.address", "10.0.3.1/24"),
                    ("ipv4.nat", "true"),
                    ("ipv4.firewall", "false"),
                ],
            )],
            nics: vec![NicRules {
                mac_filter: true,
                ..nic("default", "c1", "eth0", None, None)
            }],
            proxies: vec![],
        };
        let iif = json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "veth1a2b3c4d"}});
        let mac_rules = |chain: &str| {
            vec![
                json!({"add": {"rule": {"family": "bridge", "table": "rxd", "chain": chain, "expr": [
                    iif,
                    {"match": {"op": "!=", "left": {"payload": {"protocol": "ether", "field": "saddr"}}, "right": "00:16:3e:12:34:56"}},
                    {"drop": null}]}}}),
                json!({"add": {"rule": {"family": "bridge", "table": "rxd", "chain": chain, "expr": [
                    iif,
                    {"match": {"op": "!=", "left": {"payload": {"protocol": "arp", "field": "saddr ether"}}, "right": "00:16:3e:12:34:56"}},
                    {"drop": null}]}}}),
                json!({"add": {"rule": {"family": "bridge", "table": "rxd", "chain": chain, "expr": [
                    iif,
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"}}, "right": "udp"}},
                    {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}}, "right": 67}},
                    {"drop": null}]}}}),
                json!({"add": {"rule": {"family": "bridge", "table": "rxd", "chain": chain, "expr": [
                    iif,
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "nexthdr"}}, "right": "udp"}},
                    {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}}, "right": 547}},
                    {"drop": null}]}}}),
                json!({"add": {"rule": {"family": "bridge", "table": "rxd", "chain": chain, "expr": [
                    iif,
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"}}, "right": "udp"}},
                    {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 67}},
                    {"match": {"op": "!=", "left": {"payload": {"base": "th", "offset": 288, "len": 48}}, "right": "0x00163e123456"}},
                    {"drop": null}]}}}),
                json!({"add": {"rule": {"family": "bridge", "table": "rxd", "chain": chain, "expr": [
                    iif,
                    {"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}}, "right": "nd-neighbor-advert"}},
                    {"match": {"op": "!=", "left": {"payload": {"base": "nh", "offset": 528, "len": 48}}, "right": "0x00163e123456"}},
                    {"drop": null}]}}}),
            ]
        };
        let v4 =
            json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}});
        let subnet = json!({"prefix": {"addr": "10.0.3.0", "len": 24}});
        let mut want = vec![
            json!({"add": {"table": {"family": "inet", "name": "rxd"}}}),
            json!({"delete": {"table": {"family": "inet", "name": "rxd"}}}),
            json!({"add": {"table": {"family": "inet", "name": "rxd"}}}),
            json!({"add": {"table": {"family": "bridge", "name": "rxd"}}}),
            json!({"delete": {"table": {"family": "bridge", "name": "rxd"}}}),
            json!({"add": {"table": {"family": "bridge", "name": "rxd"}}}),
            json!({"add": {"set": {"family": "bridge", "table": "rxd", "name": "whole", "type": "ether_addr"}}}),
            json!({"add": {"chain": {"family": "inet", "table": "rxd", "name": "pstrt.br0",
                "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}}),
            json!({"add": {"rule": {"family": "inet", "table": "rxd", "chain": "pstrt.br0", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": subnet}},
                {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": subnet}},
                {"masquerade": null}]}}}),
            json!({"add": {"chain": {"family": "inet", "table": "rxd", "name": "fwd.br0",
                "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}}),
            json!({"add": {"rule": {"family": "inet", "table": "rxd", "chain": "fwd.br0", "expr": [
                v4, {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "br0"}}, {"accept": null}]}}}),
            json!({"add": {"rule": {"family": "inet", "table": "rxd", "chain": "fwd.br0", "expr": [
                v4, {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "br0"}}, {"accept": null}]}}}),
            json!({"add": {"chain": {"family": "bridge", "table": "rxd", "name": "in.c1.eth0",
                "type": "filter", "hook": "input", "prio": -200, "policy": "accept"}}}),
        ];
        want.extend(mac_rules("in.c1.eth0"));
        want.push(
            json!({"add": {"chain": {"family": "bridge", "table": "rxd", "name": "fwd.c1.eth0",
            "type": "filter", "hook": "forward", "prio": -200, "policy": "accept"}}}),
        );
        want.extend(mac_rules("fwd.c1.eth0"));
        assert_eq!(ruleset(&r), json!({"nftables": want}));
    }

    /// Every rule's chain declared before it, every object in a table `rxd`, each table
    /// replaced (add, delete, add) before anything is put in it.
    fn check_structure(v: &Value) {
        let cmds = v["nftables"].as_array().unwrap();
        let mut tables = BTreeSet::new();
        let mut chains = BTreeSet::new();
        for (i, cmd) in cmds.iter().enumerate() {
            let (verb, body) = cmd.as_object().unwrap().iter().next().unwrap();
            let (what, obj) = body.as_object().unwrap().iter().next().unwrap();
            let family = obj["family"].as_str().unwrap().to_owned();
            match what.as_str() {
                "table" => {
                    assert_eq!(obj["name"], TABLE);
                    if verb == "add" && i >= 2 && cmds[i - 1]["delete"]["table"] == *obj {
                        tables.insert(family);
                    }
                }
                "set" => {
                    assert_eq!(obj["table"], TABLE);
                    assert_eq!(obj["name"], WHOLE_MARK);
                    assert!(tables.contains(&family), "set before its table: {cmd}");
                }
                "chain" => {
                    assert_eq!(obj["table"], TABLE);
                    assert!(tables.contains(&family), "chain before its table: {cmd}");
                    let name = obj["name"].as_str().unwrap().to_owned();
                    assert!(name.len() <= MAX_CHAIN_NAME, "{name}");
                    assert!(chains.insert((family, name)), "chain declared twice: {cmd}");
                }
                "rule" => {
                    assert_eq!(obj["table"], TABLE);
                    let chain = obj["chain"].as_str().unwrap().to_owned();
                    assert!(
                        chains.contains(&(family, chain)),
                        "rule of an undeclared chain: {cmd}"
                    );
                    let expr = obj["expr"].as_array().unwrap();
                    assert!(!expr.is_empty());
                }
                other => panic!("unexpected object {other}"),
            }
        }
    }

    fn chain_names(v: &Value) -> Vec<String> {
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"]["chain"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    fn rule_count(v: &Value, chain: &str) -> usize {
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["add"]["rule"]["chain"] == chain)
            .count()
    }

    #[test]
    fn structure() {
        let full = Ruleset {
            bridges: vec![
                bridge(
                    "br0",
                    &[
                        ("ipv4.address", "10.0.3.1/24"),
                        ("ipv4.nat", "true"),
                        ("ipv4.nat.address", "198.51.100.2"),
                        ("ipv6.address", "fd42::1/64"),
                        ("ipv6.nat", "true"),
                        ("ipv6.routing", "false"),
                    ],
                ),
                bridge(
                    "br1",
                    &[("ipv4.address", "10.0.4.1/24"), ("ipv4.dhcp", "false")],
                ),
                bridge("br2", &[]),
            ],
            nics: vec![
                nic(
                    "default",
                    "c1",
                    "eth0",
                    Some(&["10.0.3.5/32", "192.0.2.0/24"]),
                    Some(&["fd42::216:3eff:fe12:3456/128"]),
                ),
                nic("p.x", "c2", "a/b-c.d", Some(&[]), Some(&[])),
                NicRules {
                    mac_filter: false,
                    ..nic("default", "c3", "eth0", None, None)
                },
                nic(
                    &"p".repeat(63),
                    &"c".repeat(63),
                    &"/".repeat(63),
                    None,
                    None,
                ),
            ],
            proxies: vec![
                proxy(
                    "default",
                    "c1",
                    "web",
                    "listen=tcp:198.51.100.2:80 connect=tcp:10.0.3.5:80",
                    "10.0.3.5",
                ),
                proxy(
                    "p.x",
                    "c2",
                    "dns/udp",
                    "listen=udp:[2001:db8::2]:53 connect=udp:[fd42::5]:5353",
                    "fd42::5",
                ),
                proxy(
                    &"p".repeat(63),
                    &"c".repeat(63),
                    &"/".repeat(63),
                    "listen=tcp:198.51.100.2:81 connect=tcp:10.0.3.5:80",
                    "10.0.3.5",
                ),
            ],
        };
        let v = ruleset(&full);
        check_structure(&v);
        check_structure(&ruleset(&Ruleset::default()));
        assert_eq!(
            chain_names(&v),
            [
                "pstrt.br0",
                "fwd.br0",
                "in.br0",
                "out.br0",
                "fwd.br1",
                "in.br1",
                "out.br1",
                "prert.c1.web",
                "out.c1.web",
                "pstrt.c1.web",
                "prert.p-2ex_c2.dns-2fudp",
                "out.p-2ex_c2.dns-2fudp",
                "pstrt.p-2ex_c2.dns-2fudp",
                "prert.%veth1a2b3c4d.-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f",
                "out.%veth1a2b3c4d.-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f",
                "pstrt.%veth1a2b3c4d.-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f-2f",
                "in.c1.eth0",
                "fwd.c1.eth0",
                "in.p-2ex_c2.a-2fb-2dc-2ed",
                "fwd.p-2ex_c2.a-2fb-2dc-2ed",
                "in.@veth1a2b3c4d",
                "fwd.@veth1a2b3c4d",
            ]
        );
        // br0: SNAT for IPv4, masquerade for IPv6; IPv6 forwarding rejected.
        let text = v.to_string();
        assert!(
            text.contains(r#"{"snat":{"family":"ip","addr":"198.51.100.2"}}"#),
            "{text}"
        );
        let v6_out = r#"{"match":{"op":"==","left":{"meta":{"key":"nfproto"}},"right":"ipv6"}},{"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"br0"}},{"reject":null}"#;
        assert!(text.contains(v6_out), "{text}");
        assert_eq!(rule_count(&v, "pstrt.br0"), 2);
        assert_eq!(rule_count(&v, "fwd.br0"), 4);
        // in.br0: DNS tcp+udp, ICMP, DHCP per family.
        assert_eq!(rule_count(&v, "in.br0"), 8);
        // br1 without DHCP: DNS and ICMP only.
        assert_eq!(rule_count(&v, "in.br1"), 3);
        // c1: 3 MAC rules and 3 DHCP ones (no server replies, no foreign chaddr); v4: DHCP
        // discover, ARP and IP accepts, 2 drops; v6: DHCPv6, RS, RA drop, one NA accept per
        // allowed net, NA drop, saddr accept, drop; other ethertypes dropped.
        assert_eq!(rule_count(&v, "in.c1.eth0"), 6 + 5 + 7 + 1);
        assert_eq!(rule_count(&v, "fwd.c1.eth0"), 6 + 4 + 5 + 1);
        // c2 allowed nothing: no accepts but the input chain's DHCP and RS.
        assert_eq!(rule_count(&v, "in.p-2ex_c2.a-2fb-2dc-2ed"), 6 + 3 + 5 + 1);
    }

    #[test]
    fn nic_chain_names_never_meet() {
        let names = [
            ("default", "a", "b_c1.eth0"),
            ("a.b", "c1", "eth0"),
            ("default", "c1", "eth0"),
            ("default", "c1", "eth-0"),
            ("default", "c1", "eth-2d0"),
            ("default", "c1", "eth/0"),
            ("default", "c1", "eth.0"),
        ];
        let got: BTreeSet<String> = names
            .iter()
            .map(|(p, i, d)| nic_chain_name("in", &nic(p, i, d, None, None)))
            .collect();
        assert_eq!(got.len(), names.len(), "{got:?}");
        let long = nic(
            &"p".repeat(63),
            &"c".repeat(63),
            &"-".repeat(63),
            None,
            None,
        );
        assert_eq!(nic_chain_name("fwd", &long), "fwd.@veth1a2b3c4d");
    }

    #[test]
    fn na_targets() {
        let v = ruleset(&Ruleset {
            bridges: vec![],
            nics: vec![nic(
                "default",
                "c1",
                "eth0",
                None,
                Some(&["fd42:1::/64", "2001:db8::5/128", "::/0"]),
            )],
            proxies: vec![],
        });
        let text = v.to_string();
        assert!(text.contains(r#"{"match":{"op":"==","left":{"payload":{"base":"nh","offset":384,"len":64}},"right":"0xfd42000100000000"}}"#), "{text}");
        assert!(
            text.contains(r#""right":"0x20010db8000000000000000000000005""#),
            "{text}"
        );
        assert!(text.contains(r#""right":{"set":[{"prefix":{"addr":"fd42:1::","len":64}},"2001:db8::5",{"prefix":{"addr":"::","len":0}}]}"#), "{text}");
    }

    #[test]
    fn teardown_names_only_rxd() {
        assert_eq!(
            teardown(),
            json!({"nftables": [
                {"add": {"table": {"family": "inet", "name": "rxd"}}},
                {"delete": {"table": {"family": "inet", "name": "rxd"}}},
                {"add": {"table": {"family": "bridge", "name": "rxd"}}},
                {"delete": {"table": {"family": "bridge", "name": "rxd"}}},
            ]})
        );
    }
}
