//! A managed bridge's config: the name rule, the key registry (LXD 5.0's bridge keys, rxd's v1
//! subset: what rxd cannot do safely or at all is refused, never stored and ignored), the
//! defaults a create fills in (LXD's `FillConfig`), and the typed [`BridgeConfig`] the rest of
//! the network code reads instead of raw text. It must not know how an `auto` subnet is chosen
//! (a closure is handed in) or what a bridge looks like on the host.

use crate::network::mac::Mac;
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use thiserror::Error;

pub type Config = BTreeMap<String, String>;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("Invalid network name {name:?}: {reason}")]
    Name { name: String, reason: &'static str },
    #[error("Invalid interface name {name:?}: {reason}")]
    Interface { name: String, reason: &'static str },
    #[error("Invalid network config key {0:?}")]
    UnknownKey(String),
    #[error(
        "Network config key \"raw.dnsmasq\" is refused: raw dnsmasq options (dhcp-script, \
         conf-dir, ...) can run code as root; rxd does not pass raw options to dnsmasq"
    )]
    RawDnsmasq,
    #[error("Network config key {0:?} is not supported by rxd")]
    Unsupported(String),
    #[error("Invalid value for network config key {key:?}: {value:?}: {reason}")]
    Value {
        key: String,
        value: String,
        reason: String,
    },
    #[error("Network config key {0:?} is still \"auto\": fill in the defaults first")]
    Unresolved(&'static str),
}

fn bad(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// LXD's `IsInterfaceName` (and `ValidNetworkName`) with a minimum length: the characters
/// `[-_a-zA-Z0-9.]`, at most 15 bytes (IFNAMSIZ), not `.` or `..`, not starting with `-`.
fn interface_name_problem(name: &str, min: usize) -> Option<&'static str> {
    Some(if name.len() < min {
        if min == 2 {
            "too short (minimum 2 characters)"
        } else {
            "empty"
        }
    } else if name.len() > 15 {
        "too long (maximum 15 characters)"
    } else if name == "." || name == ".." {
        "not a valid interface name"
    } else if name.starts_with('-') {
        "may not start with a dash"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        "contains invalid characters (allowed: A-Z a-z 0-9 - _ .)"
    } else {
        return None;
    })
}

/// A managed network's name, which is also its bridge's interface name: 2 to 15 of
/// `[-_a-zA-Z0-9.]`, not `.`/`..`, not starting with `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkName(String);

impl NetworkName {
    pub fn parse(name: &str) -> Result<NetworkName, ConfigError> {
        match interface_name_problem(name, 2) {
            None => Ok(NetworkName(name.to_owned())),
            Some(reason) => Err(ConfigError::Name {
                name: name.to_owned(),
                reason,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host interface name (a NIC's host-side veth, an external interface): 1 to 15 of
/// `[-_a-zA-Z0-9.]`, not `.`/`..`, not starting with `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

impl IfName {
    pub fn parse(name: &str) -> Result<IfName, ConfigError> {
        match interface_name_problem(name, 1) {
            None => Ok(IfName(name.to_owned())),
            Some(reason) => Err(ConfigError::Interface {
                name: name.to_owned(),
                reason,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS name (`dns.domain`, each of `dns.search`): dot-separated labels of 1 to 63 letters,
/// digits and dashes, no label starting or ending with a dash, at most 253 bytes, no trailing dot.
/// LXD takes any text here; rxd checks it because it reaches dnsmasq's command line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    pub fn parse(name: &str) -> Option<DnsName> {
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        (name.len() <= 253 && name.split('.').all(label_ok)).then(|| DnsName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `dns.mode`: `managed` binds each instance's name to its NIC in the hosts files, `dynamic`
/// takes the names DHCP clients send, `none` serves no DNS at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsMode {
    Managed,
    Dynamic,
    None,
}

/// A DHCP lease time as dnsmasq takes it (`ipv4.dhcp.expiry`, `ipv6.dhcp.expiry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseTime {
    Seconds(u32),
    Infinite,
}

/// dnsmasq raises anything shorter to two minutes; rxd refuses it instead of storing a value
/// that does not mean what it says.
pub const MIN_LEASE_SECONDS: u32 = 120;

impl LeaseTime {
    /// dnsmasq's grammar: `infinite`, or a count of seconds with an optional unit
    /// (`s`, `m`, `h`, `d`, `w`), at least two minutes.
    pub fn parse(s: &str) -> Option<LeaseTime> {
        if s == "infinite" {
            return Some(LeaseTime::Infinite);
        }
        let (digits, unit) = match s.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
            _ => (s, 's'),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        let secs = digits.parse::<u32>().ok()?.checked_mul(scale)?;
        (secs >= MIN_LEASE_SECONDS).then_some(LeaseTime::Seconds(secs))
    }
}

/// The largest unit that says it exactly, so the default prints as LXD's `1h`.
impl fmt::Display for LeaseTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LeaseTime::Infinite => f.write_str("infinite"),
            LeaseTime::Seconds(s) if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            LeaseTime::Seconds(s) if s % 60 == 0 => write!(f, "{}m", s / 60),
            LeaseTime::Seconds(s) => write!(f, "{s}s"),
        }
    }
}

/// What the family-generic rules need of an address type and its network type.
pub trait Family: Copy + Ord + FromStr + fmt::Display + fmt::Debug {
    type Net: Copy + Eq + FromStr + fmt::Display + fmt::Debug;
    /// The config key prefix: `ipv4` or `ipv6`.
    const KEY: &'static str;
    fn contains(net: &Self::Net, addr: &Self) -> bool;
    /// The address a `gateway/prefix` value carries.
    fn host(net: &Self::Net) -> Self;
    fn network(net: &Self::Net) -> Self;
    fn prefix_len(net: &Self::Net) -> u8;
    /// Whether `net` is written as its network (no host bits set).
    fn canonical(net: &Self::Net) -> bool;
    /// Addresses no gateway may have: unspecified, loopback, multicast.
    fn special(addr: &Self) -> bool;
    /// Whether `addr` is `net`'s IPv4 broadcast address (never for IPv6).
    fn broadcast(net: &Self::Net, addr: &Self) -> bool;
    /// LXD's default DHCP range: host 2 to broadcast−1 (IPv4), `::2` to the last address (IPv6).
    fn default_range(net: &Self::Net) -> Option<AddrRange<Self>>;
}

impl Family for Ipv4Addr {
    type Net = Ipv4Net;
    const KEY: &'static str = "ipv4";
    fn contains(net: &Ipv4Net, addr: &Ipv4Addr) -> bool {
        net.contains(addr)
    }
    fn host(net: &Ipv4Net) -> Ipv4Addr {
        net.addr()
    }
    fn network(net: &Ipv4Net) -> Ipv4Addr {
        net.network()
    }
    fn prefix_len(net: &Ipv4Net) -> u8 {
        net.prefix_len()
    }
    fn canonical(net: &Ipv4Net) -> bool {
        net.addr() == net.network()
    }
    fn special(addr: &Ipv4Addr) -> bool {
        addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() || addr.is_broadcast()
    }
    fn broadcast(net: &Ipv4Net, addr: &Ipv4Addr) -> bool {
        net.prefix_len() < 31 && *addr == net.broadcast()
    }
    fn default_range(net: &Ipv4Net) -> Option<AddrRange<Ipv4Addr>> {
        let first = u32::from(net.network()).checked_add(2)?;
        let last = u32::from(net.broadcast()).checked_sub(1)?;
        (first <= last).then(|| AddrRange {
            first: first.into(),
            last: last.into(),
        })
    }
}

impl Family for Ipv6Addr {
    type Net = Ipv6Net;
    const KEY: &'static str = "ipv6";
    fn contains(net: &Ipv6Net, addr: &Ipv6Addr) -> bool {
        net.contains(addr)
    }
    fn host(net: &Ipv6Net) -> Ipv6Addr {
        net.addr()
    }
    fn network(net: &Ipv6Net) -> Ipv6Addr {
        net.network()
    }
    fn prefix_len(net: &Ipv6Net) -> u8 {
        net.prefix_len()
    }
    fn canonical(net: &Ipv6Net) -> bool {
        net.addr() == net.network()
    }
    fn special(addr: &Ipv6Addr) -> bool {
        addr.is_unspecified() || addr.is_loopback() || addr.is_multicast()
    }
    fn broadcast(_: &Ipv6Net, _: &Ipv6Addr) -> bool {
        false
    }
    fn default_range(net: &Ipv6Net) -> Option<AddrRange<Ipv6Addr>> {
        let first = u128::from(net.network()).checked_add(2)?;
        let last = u128::from(net.broadcast());
        (first <= last).then(|| AddrRange {
            first: first.into(),
            last: last.into(),
        })
    }
}

/// `FIRST-LAST`, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrRange<A> {
    pub first: A,
    pub last: A,
}

/// One family's settings on a bridge that has an address in that family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyConfig<A: Family> {
    /// The bridge's own address and the subnet's prefix length (`ipv4.address`).
    pub address: A::Net,
    pub nat: bool,
    /// SNAT to this address instead of masquerading.
    pub nat_address: Option<A>,
    pub dhcp: bool,
    pub dhcp_expiry: LeaseTime,
    /// As configured; empty means [`FamilyConfig::dhcp_ranges_or_default`]'s default.
    pub dhcp_ranges: Vec<AddrRange<A>>,
    /// Forwarding to and from the bridge accepted (`false`: rejected).
    pub routing: bool,
    /// rxd's input/output rules letting DNS, DHCP and ICMP reach the host.
    pub firewall: bool,
    pub routes: Vec<A::Net>,
}

impl<A: Family> FamilyConfig<A> {
    /// The ranges dnsmasq hands out: the configured ones, else LXD's default.
    pub fn dhcp_ranges_or_default(&self) -> Vec<AddrRange<A>> {
        if self.dhcp_ranges.is_empty() {
            A::default_range(&self.address).into_iter().collect()
        } else {
            self.dhcp_ranges.clone()
        }
    }
}

/// A bridge's config, typed. Made only by [`BridgeConfig::from_config`] from a config that
/// passed [`validate`] and has no `auto` left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    pub ipv4: Option<FamilyConfig<Ipv4Addr>>,
    /// DHCP option 3 (router) when it must not be the bridge's address.
    pub ipv4_dhcp_gateway: Option<Ipv4Addr>,
    pub ipv6: Option<FamilyConfig<Ipv6Addr>>,
    /// Addresses from DHCPv6 ranges instead of SLAAC plus stateless DHCPv6.
    pub ipv6_dhcp_stateful: bool,
    pub dns_domain: DnsName,
    pub dns_mode: DnsMode,
    pub dns_search: Vec<DnsName>,
    pub mtu: u32,
    pub hwaddr: Option<Mac>,
    pub external_interfaces: Vec<IfName>,
}

pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_DNS_DOMAIN: &str = "lxd";
const DEFAULT_EXPIRY: LeaseTime = LeaseTime::Seconds(3600);

/// The value of `key`, an empty value counting as absent (LXD's `validate.Optional`).
fn get<'a>(config: &'a Config, key: &str) -> Option<&'a str> {
    config
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad(key, value, "not a boolean")),
    }
}

fn parse_ip<A: Family>(key: &str, value: &str) -> Result<A, ConfigError> {
    value
        .parse::<A>()
        .map_err(|_| bad(key, value, format!("not an {} address", A::KEY)))
}

/// `ipv4.address` / `ipv6.address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddressSetting<N> {
    Auto,
    None,
    Cidr(N),
}

fn parse_address<A: Family>(key: &str, value: &str) -> Result<AddressSetting<A::Net>, ConfigError> {
    match value {
        "auto" => return Ok(AddressSetting::Auto),
        "none" => return Ok(AddressSetting::None),
        _ => {}
    }
    let net: A::Net = value.parse().map_err(|_| {
        bad(
            key,
            value,
            format!(
                "expected auto, none or an {} address with a prefix length",
                A::KEY
            ),
        )
    })?;
    let host = A::host(&net);
    if A::prefix_len(&net) == 0 {
        Err(bad(key, value, "a prefix length of 0 leaves no subnet"))
    } else if host == A::network(&net) {
        Err(bad(key, value, "the network's own address is not usable"))
    } else if A::broadcast(&net, &host) {
        Err(bad(key, value, "the broadcast address is not usable"))
    } else if A::special(&host) {
        Err(bad(key, value, "not a unicast address"))
    } else {
        Ok(AddressSetting::Cidr(net))
    }
}

fn parse_ranges<A: Family>(key: &str, value: &str) -> Result<Vec<AddrRange<A>>, ConfigError> {
    value
        .split(',')
        .map(|part| {
            let part = part.trim();
            let (first, last) = part
                .split_once('-')
                .ok_or_else(|| bad(key, value, format!("{part:?} is not FIRST-LAST")))?;
            let first = parse_ip::<A>(key, first.trim())?;
            let last = parse_ip::<A>(key, last.trim())?;
            if first > last {
                return Err(bad(key, value, format!("{part:?} ends before it starts")));
            }
            Ok(AddrRange { first, last })
        })
        .collect()
}

fn parse_nets<A: Family>(key: &str, value: &str) -> Result<Vec<A::Net>, ConfigError> {
    value
        .split(',')
        .map(|part| {
            let part = part.trim();
            let net: A::Net = part
                .parse()
                .map_err(|_| bad(key, value, format!("{part:?} is not an {} network", A::KEY)))?;
            if !A::canonical(&net) {
                return Err(bad(
                    key,
                    value,
                    format!(
                        "{part:?} has host bits set (write the network, e.g. its first address)"
                    ),
                ));
            }
            Ok(net)
        })
        .collect()
}

fn parse_expiry(key: &str, value: &str) -> Result<LeaseTime, ConfigError> {
    LeaseTime::parse(value).ok_or_else(|| {
        bad(
            key,
            value,
            "expected infinite or a duration like 1h, 30m or 3600 (s m h d w), at least 2m",
        )
    })
}

fn parse_dns_name(key: &str, value: &str) -> Result<DnsName, ConfigError> {
    DnsName::parse(value).ok_or_else(|| {
        bad(
            key,
            value,
            "not a DNS name (labels of letters, digits and dashes, separated by dots)",
        )
    })
}

fn parse_dns_search(key: &str, value: &str) -> Result<Vec<DnsName>, ConfigError> {
    value
        .split(',')
        .map(|part| parse_dns_name(key, part.trim()))
        .collect()
}

fn parse_dns_mode(key: &str, value: &str) -> Result<DnsMode, ConfigError> {
    match value {
        "managed" => Ok(DnsMode::Managed),
        "dynamic" => Ok(DnsMode::Dynamic),
        "none" => Ok(DnsMode::None),
        _ => Err(bad(key, value, "expected managed, dynamic or none")),
    }
}

fn parse_mtu(key: &str, value: &str) -> Result<u32, ConfigError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|m| (68..=65535).contains(m))
        .ok_or_else(|| bad(key, value, "expected a number from 68 to 65535"))
}

fn parse_hwaddr(key: &str, value: &str) -> Result<Mac, ConfigError> {
    let mac: Mac = value
        .parse()
        .map_err(|_| bad(key, value, "not a MAC address"))?;
    if !mac.is_unicast() {
        return Err(bad(
            key,
            value,
            "a multicast or all-zero MAC cannot be a bridge's",
        ));
    }
    Ok(mac)
}

fn parse_interfaces(key: &str, value: &str) -> Result<Vec<IfName>, ConfigError> {
    value
        .split(',')
        .map(|part| IfName::parse(part.trim()).map_err(|e| bad(key, value, e.to_string())))
        .collect()
}

/// Keys of LXD features rxd does not implement (ACLs, fan, tunnels, BGP, MAAS, OVN, zones).
fn unsupported(key: &str) -> bool {
    const PREFIXES: [&str; 6] = [
        "security.acls",
        "fan.",
        "tunnel.",
        "bgp.",
        "maas.",
        "dns.zone.",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
        || matches!(key, "ipv4.ovn.ranges" | "ipv6.ovn.ranges")
}

/// How one key's value is checked.
type Check = fn(&str, &str) -> Result<(), ConfigError>;

/// The check of a family key (`ipv4.*` or `ipv6.*` without the prefix), if it is one.
fn family_rule<A: Family>(rest: &str) -> Option<Check> {
    Some(match rest {
        "address" => |k, v| parse_address::<A>(k, v).map(drop),
        "nat" | "dhcp" | "routing" | "firewall" => |k, v| parse_bool(k, v).map(drop),
        "dhcp.stateful" if A::KEY == "ipv6" => |k, v| parse_bool(k, v).map(drop),
        "nat.address" => |k, v| parse_ip::<A>(k, v).map(drop),
        "dhcp.gateway" if A::KEY == "ipv4" => |k, v| parse_ip::<A>(k, v).map(drop),
        "nat.order" => |k, v| match v {
            "before" | "after" => Ok(()),
            _ => Err(bad(k, v, "expected before or after")),
        },
        "dhcp.expiry" => |k, v| parse_expiry(k, v).map(drop),
        "dhcp.ranges" => |k, v| parse_ranges::<A>(k, v).map(drop),
        "routes" => |k, v| parse_nets::<A>(k, v).map(drop),
        _ => return None,
    })
}

/// The registry: the check of every key rxd accepts (`user.*` aside).
fn rule(key: &str) -> Option<Check> {
    if let Some(rest) = key.strip_prefix("ipv4.") {
        return family_rule::<Ipv4Addr>(rest);
    }
    if let Some(rest) = key.strip_prefix("ipv6.") {
        return family_rule::<Ipv6Addr>(rest);
    }
    Some(match key {
        "dns.domain" => |k, v| parse_dns_name(k, v).map(drop),
        "dns.mode" => |k, v| parse_dns_mode(k, v).map(drop),
        "dns.search" => |k, v| parse_dns_search(k, v).map(drop),
        "bridge.mtu" => |k, v| parse_mtu(k, v).map(drop),
        "bridge.hwaddr" => |k, v| parse_hwaddr(k, v).map(drop),
        "bridge.external_interfaces" => |k, v| parse_interfaces(k, v).map(drop),
        "bridge.driver" => |k, v| match v {
            "native" => Ok(()),
            "openvswitch" => Err(ConfigError::Unsupported("bridge.driver=openvswitch".into())),
            _ => Err(bad(k, v, "expected native")),
        },
        "bridge.mode" => |k, v| match v {
            "standard" => Ok(()),
            "fan" => Err(ConfigError::Unsupported("bridge.mode=fan".into())),
            _ => Err(bad(k, v, "expected standard")),
        },
        _ => return None,
    })
}

/// One key and its value, on their own. An empty value means "unset" and passes for every key
/// rxd knows.
pub fn validate_key(key: &str, value: &str) -> Result<(), ConfigError> {
    if key.starts_with("user.") {
        return Ok(());
    }
    if key == "raw.dnsmasq" {
        return Err(ConfigError::RawDnsmasq);
    }
    if unsupported(key) {
        return Err(ConfigError::Unsupported(key.to_owned()));
    }
    let check = rule(key).ok_or_else(|| ConfigError::UnknownKey(key.to_owned()))?;
    if value.is_empty() {
        return Ok(());
    }
    check(key, value)
}

/// Rules between one family's keys: DHCP ranges inside the bridge's subnet. An absent address
/// is not judged here (a create fills it in); `none` is.
fn check_family<A: Family>(config: &Config) -> Result<(), ConfigError> {
    let key = |rest: &str| format!("{}.{rest}", A::KEY);
    let address_key = key("address");
    let address = match get(config, &address_key) {
        Some(v) => Some(parse_address::<A>(&address_key, v)?),
        None => None,
    };
    let ranges_key = key("dhcp.ranges");
    if let Some(value) = get(config, &ranges_key) {
        let ranges = parse_ranges::<A>(&ranges_key, value)?;
        match address {
            Some(AddressSetting::Cidr(net)) => {
                if let Some(r) = ranges
                    .iter()
                    .find(|r| !A::contains(&net, &r.first) || !A::contains(&net, &r.last))
                {
                    return Err(bad(
                        &ranges_key,
                        value,
                        format!("{}-{} is not inside {net}", r.first, r.last),
                    ));
                }
            }
            Some(AddressSetting::None) => {
                return Err(bad(
                    &ranges_key,
                    value,
                    format!("{address_key} is none: there is no subnet to serve"),
                ));
            }
            Some(AddressSetting::Auto) | None => {}
        }
    }
    Ok(())
}

/// A whole config: every key, then the rules between keys.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    for (key, value) in config {
        validate_key(key, value)?;
    }
    check_family::<Ipv4Addr>(config)?;
    check_family::<Ipv6Addr>(config)?;
    let has_v6 = matches!(get(config, "ipv6.address"), Some(v) if v != "none");
    if let (true, Some(mtu)) = (has_v6, get(config, "bridge.mtu")) {
        if parse_mtu("bridge.mtu", mtu)? < 1280 {
            return Err(bad(
                "bridge.mtu",
                mtu,
                "IPv6 needs an MTU of at least 1280 (the kernel turns it off below)",
            ));
        }
    }
    Ok(())
}

fn family<A: Family>(config: &Config) -> Result<Option<FamilyConfig<A>>, ConfigError> {
    let key = |rest: &str| format!("{}.{rest}", A::KEY);
    let address_key = key("address");
    let address = match get(config, &address_key) {
        None => return Ok(None),
        Some(v) => match parse_address::<A>(&address_key, v)? {
            AddressSetting::None => return Ok(None),
            AddressSetting::Auto => {
                return Err(ConfigError::Unresolved(if A::KEY == "ipv4" {
                    "ipv4.address"
                } else {
                    "ipv6.address"
                }))
            }
            AddressSetting::Cidr(net) => net,
        },
    };
    let flag = |rest: &str, default: bool| -> Result<bool, ConfigError> {
        let k = key(rest);
        get(config, &k).map_or(Ok(default), |v| parse_bool(&k, v))
    };
    let optional = |rest: &str| get(config, &key(rest)).map(|v| (key(rest), v));
    Ok(Some(FamilyConfig {
        address,
        nat: flag("nat", false)?,
        nat_address: optional("nat.address")
            .map(|(k, v)| parse_ip::<A>(&k, v))
            .transpose()?,
        dhcp: flag("dhcp", true)?,
        dhcp_expiry: optional("dhcp.expiry")
            .map(|(k, v)| parse_expiry(&k, v))
            .transpose()?
            .unwrap_or(DEFAULT_EXPIRY),
        dhcp_ranges: optional("dhcp.ranges")
            .map(|(k, v)| parse_ranges::<A>(&k, v))
            .transpose()?
            .unwrap_or_default(),
        routing: flag("routing", true)?,
        firewall: flag("firewall", true)?,
        routes: optional("routes")
            .map(|(k, v)| parse_nets::<A>(&k, v))
            .transpose()?
            .unwrap_or_default(),
    }))
}

impl BridgeConfig {
    /// The typed config of a stored (or about to be stored) network. An absent or `none`
    /// address means no such family; `auto` must have been replaced ([`fill_defaults`]).
    pub fn from_config(config: &Config) -> Result<BridgeConfig, ConfigError> {
        validate(config)?;
        let ipv4 = family::<Ipv4Addr>(config)?;
        if ipv4.is_none() {
            if let Some(v) = get(config, "ipv4.dhcp.ranges") {
                return Err(bad("ipv4.dhcp.ranges", v, "ipv4.address is unset"));
            }
        }
        let ipv6 = family::<Ipv6Addr>(config)?;
        if ipv6.is_none() {
            if let Some(v) = get(config, "ipv6.dhcp.ranges") {
                return Err(bad("ipv6.dhcp.ranges", v, "ipv6.address is unset"));
            }
        }
        let opt = |k: &'static str| get(config, k).map(|v| (k, v));
        Ok(BridgeConfig {
            ipv4,
            ipv4_dhcp_gateway: opt("ipv4.dhcp.gateway")
                .map(|(k, v)| parse_ip::<Ipv4Addr>(k, v))
                .transpose()?,
            ipv6,
            ipv6_dhcp_stateful: opt("ipv6.dhcp.stateful")
                .map(|(k, v)| parse_bool(k, v))
                .transpose()?
                .unwrap_or(false),
            dns_domain: match opt("dns.domain") {
                Some((k, v)) => parse_dns_name(k, v)?,
                None => DnsName(DEFAULT_DNS_DOMAIN.to_owned()),
            },
            dns_mode: opt("dns.mode")
                .map(|(k, v)| parse_dns_mode(k, v))
                .transpose()?
                .unwrap_or(DnsMode::Managed),
            dns_search: opt("dns.search")
                .map(|(k, v)| parse_dns_search(k, v))
                .transpose()?
                .unwrap_or_default(),
            mtu: opt("bridge.mtu")
                .map(|(k, v)| parse_mtu(k, v))
                .transpose()?
                .unwrap_or(DEFAULT_MTU),
            hwaddr: opt("bridge.hwaddr")
                .map(|(k, v)| parse_hwaddr(k, v))
                .transpose()?,
            external_interfaces: opt("bridge.external_interfaces")
                .map(|(k, v)| parse_interfaces(k, v))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// A create's defaults (LXD's `FillConfig`): an absent `ipv4.address` becomes `auto`, and so
/// does an absent `ipv6.address` when the host has IPv6 (`ipv6_enabled`: the caller reads
/// `/proc/sys/net/ipv6/conf/default/disable_ipv6`); an `auto` family without `nat` gets
/// `nat=true`; then [`populate_auto`]. The closures are called only for an `auto` address.
pub fn fill_defaults<E>(
    config: &mut Config,
    ipv6_enabled: bool,
    choose_v4: impl FnOnce() -> Result<Ipv4Net, E>,
    choose_v6: impl FnOnce() -> Result<Ipv6Net, E>,
) -> Result<(), E> {
    let mut default = |key: &str, value: &str| {
        if get(config, key).is_none() {
            config.insert(key.to_owned(), value.to_owned());
        }
    };
    default("ipv4.address", "auto");
    if ipv6_enabled {
        default("ipv6.address", "auto");
    }
    for family in ["ipv4", "ipv6"] {
        if get(config, &format!("{family}.address")) == Some("auto")
            && get(config, &format!("{family}.nat")).is_none()
        {
            config.insert(format!("{family}.nat"), "true".to_owned());
        }
    }
    populate_auto(config, choose_v4, choose_v6)
}

/// Every `auto` address replaced by the first host address of the subnet its closure chooses
/// (`10.x.y.1/24`, `fd42:…::1/64`), as a create and an update store it (LXD's
/// `populateAutoConfig`).
pub fn populate_auto<E>(
    config: &mut Config,
    choose_v4: impl FnOnce() -> Result<Ipv4Net, E>,
    choose_v6: impl FnOnce() -> Result<Ipv6Net, E>,
) -> Result<(), E> {
    if get(config, "ipv4.address") == Some("auto") {
        let net = choose_v4()?;
        let host = Ipv4Addr::from(u32::from(net.network()).wrapping_add(1));
        config.insert(
            "ipv4.address".into(),
            format!("{host}/{}", net.prefix_len()),
        );
    }
    if get(config, "ipv6.address") == Some("auto") {
        let net = choose_v6()?;
        let host = Ipv6Addr::from(u128::from(net.network()).wrapping_add(1));
        config.insert(
            "ipv6.address".into(),
            format!("{host}/{}", net.prefix_len()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Config {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `want`: `Ok(())` or `Err(text the error message contains)`.
    fn check(pairs: &[(&str, &str)], want: Result<(), &str>) {
        let got = validate(&map(pairs)).map_err(|e| e.to_string());
        match (got, want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(w)) => assert!(e.contains(w), "{pairs:?}: {e:?} (wanted {w:?})"),
            (got, want) => panic!("{pairs:?}: got {got:?}, wanted {want:?}"),
        }
    }

    fn check_name(name: &str, want: Result<(), &str>) {
        let got = NetworkName::parse(name)
            .map(drop)
            .map_err(|e| e.to_string());
        match (got, want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(w)) => assert!(e.contains(w), "{name:?}: {e:?} (wanted {w:?})"),
            (got, want) => panic!("{name:?}: got {got:?}, wanted {want:?}"),
        }
    }

    #[test]
    fn names() {
        check_name("lxdbr0", Ok(()));
        check_name("br", Ok(()));
        check_name("a.b_c-d", Ok(()));
        check_name("fifteen-chars-x", Ok(()));
        check_name("sixteen-chars-xx", Err("too long"));
        check_name("b", Err("too short"));
        check_name("", Err("too short"));
        check_name("..", Err("not a valid"));
        check_name("-br0", Err("dash"));
        check_name("br 0", Err("invalid characters"));
        check_name("br/0", Err("invalid characters"));
        check_name("br:0", Err("invalid characters"));
        check_name("brü", Err("invalid characters"));
        check_name("br0\n", Err("invalid characters"));
        assert!(IfName::parse("v").is_ok());
        assert!(IfName::parse("").is_err());
        assert!(IfName::parse(".").is_err());
    }

    #[test]
    fn keys() {
        let ok = Ok(());
        check(&[], ok);
        check(&[("ipv4.address", "auto")], ok);
        check(&[("ipv4.address", "none")], ok);
        check(&[("ipv4.address", "")], ok);
        check(&[("ipv4.address", "10.0.3.1/24")], ok);
        check(&[("ipv4.address", "10.0.3.1")], Err("with a prefix length"));
        check(
            &[("ipv4.address", "10.0.3.0/24")],
            Err("network's own address"),
        );
        check(&[("ipv4.address", "10.0.3.255/24")], Err("broadcast"));
        check(&[("ipv4.address", "10.0.3.1/0")], Err("prefix length of 0"));
        check(&[("ipv4.address", "127.0.0.1/8")], Err("not a unicast"));
        check(&[("ipv4.address", "224.0.0.1/8")], Err("not a unicast"));
        check(
            &[("ipv4.address", "10.0.3.1/33")],
            Err("with a prefix length"),
        );
        check(&[("ipv4.address", "fd42::1/64")], Err("ipv4 address"));
        check(&[("ipv4.address", "AUTO")], Err("with a prefix length"));
        check(&[("ipv6.address", "fd42:1:2:3::1/64")], ok);
        check(
            &[("ipv6.address", "fd42:1:2:3::/64")],
            Err("network's own address"),
        );
        check(&[("ipv6.address", "::1/64")], Err("not a unicast"));
        check(&[("ipv6.address", "ff02::1/64")], Err("not a unicast"));
        check(&[("ipv6.address", "10.0.3.1/24")], Err("ipv6 address"));
        check(&[("ipv4.nat", "true")], ok);
        check(&[("ipv4.nat", "Yes")], ok);
        check(&[("ipv4.nat", "off")], ok);
        check(&[("ipv4.nat", "maybe")], Err("not a boolean"));
        check(&[("ipv6.dhcp.stateful", "true")], ok);
        check(
            &[("ipv4.dhcp.stateful", "true")],
            Err("Invalid network config key"),
        );
        check(&[("ipv4.dhcp.gateway", "10.0.3.254")], ok);
        check(
            &[("ipv6.dhcp.gateway", "fd42::1")],
            Err("Invalid network config key"),
        );
        check(&[("ipv4.nat.address", "198.51.100.2")], ok);
        check(
            &[("ipv4.nat.address", "2001:db8::1")],
            Err("not an ipv4 address"),
        );
        check(&[("ipv6.nat.address", "2001:db8::1")], ok);
        check(&[("ipv4.nat.order", "before")], ok);
        check(&[("ipv4.nat.order", "first")], Err("before or after"));
        check(&[("ipv4.dhcp.expiry", "1h")], ok);
        check(&[("ipv4.dhcp.expiry", "30m")], ok);
        check(&[("ipv4.dhcp.expiry", "2m")], ok);
        check(&[("ipv4.dhcp.expiry", "infinite")], ok);
        check(&[("ipv4.dhcp.expiry", "600")], ok);
        check(&[("ipv4.dhcp.expiry", "1m")], Err("at least 2m"));
        check(&[("ipv4.dhcp.expiry", "1y")], Err("at least 2m"));
        check(&[("ipv4.dhcp.expiry", "h")], Err("at least 2m"));
        check(&[("ipv4.dhcp.expiry", "-1h")], Err("at least 2m"));
        check(&[("ipv4.dhcp.expiry", "1h,foo")], Err("at least 2m"));
        check(&[("ipv6.dhcp.expiry", "99999999999h")], Err("at least 2m"));
        check(&[("ipv4.routing", "false")], ok);
        check(&[("ipv4.firewall", "false")], ok);
        check(&[("ipv4.routes", "192.0.2.0/24, 198.51.100.0/25")], ok);
        check(&[("ipv4.routes", "192.0.2.1/24")], Err("host bits"));
        check(
            &[("ipv4.routes", "192.0.2.0/24,")],
            Err("not an ipv4 network"),
        );
        check(&[("ipv6.routes", "2001:db8::/48")], ok);
        check(
            &[("ipv6.routes", "192.0.2.0/24")],
            Err("not an ipv6 network"),
        );
        check(&[("dns.domain", "lxd")], ok);
        check(&[("dns.domain", "my-lab.example")], ok);
        check(&[("dns.domain", "a..b")], Err("not a DNS name"));
        check(&[("dns.domain", "-a")], Err("not a DNS name"));
        check(&[("dns.domain", "a b")], Err("not a DNS name"));
        check(
            &[("dns.domain", "x,--conf-file=/etc/passwd")],
            Err("not a DNS name"),
        );
        check(&[("dns.domain", "lxd.")], Err("not a DNS name"));
        check(&[("dns.domain", &"a".repeat(64))], Err("not a DNS name"));
        check(&[("dns.mode", "managed")], ok);
        check(&[("dns.mode", "dynamic")], ok);
        check(&[("dns.mode", "none")], ok);
        check(&[("dns.mode", "off")], Err("managed, dynamic or none"));
        check(&[("dns.search", "lxd, example.com")], ok);
        check(&[("dns.search", "lxd,,x")], Err("not a DNS name"));
        check(&[("bridge.mtu", "1500")], ok);
        check(&[("bridge.mtu", "68")], ok);
        check(&[("bridge.mtu", "65535")], ok);
        check(&[("bridge.mtu", "67")], Err("68 to 65535"));
        check(&[("bridge.mtu", "65536")], Err("68 to 65535"));
        check(&[("bridge.mtu", "1e3")], Err("68 to 65535"));
        check(&[("bridge.mtu", "1000"), ("ipv6.address", "none")], ok);
        check(
            &[("bridge.mtu", "1000"), ("ipv6.address", "auto")],
            Err("at least 1280"),
        );
        check(&[("bridge.hwaddr", "00:16:3e:00:00:01")], ok);
        check(&[("bridge.hwaddr", "01:00:5e:00:00:01")], Err("multicast"));
        check(&[("bridge.hwaddr", "00:16:3e")], Err("not a MAC"));
        check(&[("bridge.driver", "native")], ok);
        check(
            &[("bridge.driver", "openvswitch")],
            Err("not supported by rxd"),
        );
        check(&[("bridge.driver", "ovs")], Err("expected native"));
        check(&[("bridge.mode", "standard")], ok);
        check(&[("bridge.mode", "fan")], Err("not supported by rxd"));
        check(&[("bridge.external_interfaces", "eth1,eth2")], ok);
        check(
            &[("bridge.external_interfaces", "eth1,/x")],
            Err("invalid characters"),
        );
        check(&[("user.anything", "goes ; here")], ok);
        check(&[("user.", "")], ok);
    }

    #[test]
    fn refusals() {
        check(
            &[("raw.dnsmasq", "dhcp-script=/tmp/x")],
            Err("can run code as root"),
        );
        check(&[("raw.dnsmasq", "")], Err("can run code as root"));
        check(
            &[("security.acls", "a")],
            Err("\"security.acls\" is not supported by rxd"),
        );
        check(
            &[("security.acls.default.ingress.action", "drop")],
            Err("not supported by rxd"),
        );
        check(
            &[("fan.underlay_subnet", "auto")],
            Err("not supported by rxd"),
        );
        check(
            &[("tunnel.t1.protocol", "vxlan")],
            Err("not supported by rxd"),
        );
        check(
            &[("bgp.peers.p.address", "10.0.0.1")],
            Err("not supported by rxd"),
        );
        check(&[("maas.subnet.ipv4", "x")], Err("not supported by rxd"));
        check(
            &[("ipv4.ovn.ranges", "10.0.0.2-10.0.0.9")],
            Err("not supported by rxd"),
        );
        check(&[("ipv6.ovn.ranges", "")], Err("not supported by rxd"));
        check(&[("dns.zone.forward", "x")], Err("not supported by rxd"));
        check(&[("foo", "bar")], Err("Invalid network config key \"foo\""));
        check(
            &[("ipv4.bogus", "")],
            Err("Invalid network config key \"ipv4.bogus\""),
        );
        check(
            &[("bridge.bogus", "")],
            Err("Invalid network config key \"bridge.bogus\""),
        );
        check(
            &[("bridge.bogus", "1")],
            Err("Invalid network config key \"bridge.bogus\""),
        );
        check(&[("volatile.x", "")], Err("Invalid network config key"));
    }

    #[test]
    fn ranges() {
        let ok = Ok(());
        let net = ("ipv4.address", "10.0.3.1/24");
        check(&[net, ("ipv4.dhcp.ranges", "10.0.3.2-10.0.3.100")], ok);
        check(
            &[
                net,
                ("ipv4.dhcp.ranges", "10.0.3.2-10.0.3.9, 10.0.3.20-10.0.3.30"),
            ],
            ok,
        );
        check(&[net, ("ipv4.dhcp.ranges", "10.0.3.9-10.0.3.9")], ok);
        check(
            &[net, ("ipv4.dhcp.ranges", "10.0.3.9-10.0.3.2")],
            Err("ends before it starts"),
        );
        check(
            &[net, ("ipv4.dhcp.ranges", "10.0.3.2-10.0.4.2")],
            Err("not inside 10.0.3.1/24"),
        );
        check(
            &[net, ("ipv4.dhcp.ranges", "10.0.3.2")],
            Err("not FIRST-LAST"),
        );
        check(
            &[net, ("ipv4.dhcp.ranges", "10.0.3.2-fd42::9")],
            Err("not an ipv4 address"),
        );
        check(&[("ipv4.dhcp.ranges", "10.0.3.2-10.0.3.9")], ok);
        check(
            &[
                ("ipv4.address", "auto"),
                ("ipv4.dhcp.ranges", "10.0.3.2-10.0.3.9"),
            ],
            ok,
        );
        check(
            &[
                ("ipv4.address", "none"),
                ("ipv4.dhcp.ranges", "10.0.3.2-10.0.3.9"),
            ],
            Err("none"),
        );
        let net6 = ("ipv6.address", "fd42:1::1/64");
        check(&[net6, ("ipv6.dhcp.ranges", "fd42:1::10-fd42:1::ff")], ok);
        check(
            &[net6, ("ipv6.dhcp.ranges", "fd42:2::10-fd42:2::ff")],
            Err("not inside"),
        );
    }

    fn config(pairs: &[(&str, &str)]) -> BridgeConfig {
        BridgeConfig::from_config(&map(pairs)).unwrap()
    }

    #[test]
    fn typed() {
        let c = config(&[
            ("ipv4.address", "10.0.3.1/24"),
            ("ipv4.nat", "true"),
            ("ipv6.address", "fd42::1/64"),
            ("ipv6.dhcp", "false"),
            ("ipv4.dhcp.expiry", "30m"),
            ("dns.search", "a.b,c"),
        ]);
        let v4 = c.ipv4.as_ref().unwrap();
        assert_eq!(v4.address.to_string(), "10.0.3.1/24");
        assert!(v4.nat && v4.dhcp && v4.routing && v4.firewall);
        assert_eq!(v4.dhcp_expiry.to_string(), "30m");
        let v6 = c.ipv6.as_ref().unwrap();
        assert!(!v6.nat && !v6.dhcp);
        assert_eq!(v6.dhcp_expiry.to_string(), "1h");
        assert_eq!(c.dns_domain.as_str(), "lxd");
        assert_eq!(c.dns_mode, DnsMode::Managed);
        assert_eq!(c.dns_search.len(), 2);
        assert_eq!(c.mtu, 1500);

        assert_eq!(config(&[]).ipv4, None);
        assert_eq!(config(&[("ipv4.address", "none")]).ipv4, None);
        let auto = BridgeConfig::from_config(&map(&[("ipv6.address", "auto")]));
        assert_eq!(auto, Err(ConfigError::Unresolved("ipv6.address")));
        let no_subnet = BridgeConfig::from_config(&map(&[("ipv4.dhcp.ranges", "1.1.1.1-1.1.1.2")]));
        assert!(no_subnet.is_err());
    }

    fn check_range(address: &str, want: Option<(&str, &str)>) {
        let c = if address.contains(':') {
            config(&[("ipv6.address", address)])
                .ipv6
                .unwrap()
                .dhcp_ranges_or_default()
                .iter()
                .map(|r| (r.first.to_string(), r.last.to_string()))
                .next()
        } else {
            config(&[("ipv4.address", address)])
                .ipv4
                .unwrap()
                .dhcp_ranges_or_default()
                .iter()
                .map(|r| (r.first.to_string(), r.last.to_string()))
                .next()
        };
        let want = want.map(|(a, b)| (a.to_owned(), b.to_owned()));
        assert_eq!(c, want, "{address}");
    }

    #[test]
    fn default_ranges() {
        check_range("10.0.3.1/24", Some(("10.0.3.2", "10.0.3.254")));
        check_range("10.0.3.1/16", Some(("10.0.0.2", "10.0.255.254")));
        check_range("10.0.3.1/30", Some(("10.0.3.2", "10.0.3.2")));
        check_range("10.0.3.1/31", None);
        check_range(
            "fd42:1::1/64",
            Some(("fd42:1::2", "fd42:1::ffff:ffff:ffff:ffff")),
        );
        check_range("fd42:1::1/127", None);
    }

    #[test]
    fn lease_times() {
        let show = |s: &str| LeaseTime::parse(s).map(|t| t.to_string());
        assert_eq!(show("3600").as_deref(), Some("1h"));
        assert_eq!(show("90m").as_deref(), Some("90m"));
        assert_eq!(show("121").as_deref(), Some("121s"));
        assert_eq!(show("1d").as_deref(), Some("24h"));
        assert_eq!(show("1w").as_deref(), Some("168h"));
        assert_eq!(show("infinite").as_deref(), Some("infinite"));
        assert_eq!(show("119s"), None);
        assert_eq!(show("1H"), None);
        assert_eq!(show("+5h"), None);
    }

    fn fill(pairs: &[(&str, &str)], ipv6: bool) -> Config {
        let mut c = map(pairs);
        let v4 = || Ok::<_, ()>("10.1.2.0/24".parse().unwrap());
        let v6 = || Ok::<_, ()>("fd42:1:2:3::/64".parse().unwrap());
        fill_defaults(&mut c, ipv6, v4, v6).unwrap();
        c
    }

    #[test]
    fn defaults() {
        let both = map(&[
            ("ipv4.address", "10.1.2.1/24"),
            ("ipv4.nat", "true"),
            ("ipv6.address", "fd42:1:2:3::1/64"),
            ("ipv6.nat", "true"),
        ]);
        assert_eq!(fill(&[], true), both);
        assert_eq!(
            fill(&[], false),
            map(&[("ipv4.address", "10.1.2.1/24"), ("ipv4.nat", "true")])
        );
        assert_eq!(
            fill(&[("ipv4.nat", "false"), ("ipv6.address", "none")], true),
            map(&[
                ("ipv4.address", "10.1.2.1/24"),
                ("ipv4.nat", "false"),
                ("ipv6.address", "none")
            ])
        );
        // An explicit address gets no NAT default, and its closure is never called.
        let mut c = map(&[("ipv4.address", "192.0.2.1/24"), ("ipv6.address", "none")]);
        fill_defaults(&mut c, true, || Err("called"), || Err("called")).unwrap();
        assert_eq!(
            c,
            map(&[("ipv4.address", "192.0.2.1/24"), ("ipv6.address", "none")])
        );
        // The chooser's error is the caller's.
        let mut c = map(&[]);
        let got = fill_defaults(&mut c, false, || Err("no subnet"), || Err("unused"));
        assert_eq!(got, Err("no subnet"));
        // Filled configs are valid and typed.
        assert!(BridgeConfig::from_config(&fill(&[], true)).is_ok());
    }
}
