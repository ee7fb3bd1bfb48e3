//! The `proxy` device: LXD's address grammar (`tcp:<addr>:<ports>`, `udp:…`, `unix:<path>`,
//! `unix:@<abstract>`), LXD 5.0's validation of a device's keys, the plan the daemon hands to
//! the forwarder (`rxd-shim proxy`) and the PROXY protocol v2 header it sends, and for
//! `nat=true` (no forwarder: DNAT rules, `network::nft::ProxyNat`) LXD's choice of the
//! instance address the rules may send traffic to. No IO: the forwarder and the firewall act
//! only on the typed values made here, never on the device's text.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use thiserror::Error;

/// The keys LXD 5.0 accepts on a proxy device.
pub const KEYS: &[&str] = &[
    "type",
    "listen",
    "connect",
    "bind",
    "nat",
    "proxy_protocol",
    "uid",
    "gid",
    "mode",
    "security.uid",
    "security.gid",
];

/// `sun_path` holds 108 bytes, one of which ends a path (or starts an abstract name).
const MAX_UNIX_PATH: usize = 107;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("Invalid device option {0:?}")]
    UnknownKey(String),
    #[error("Not a proxy device (type {0:?})")]
    NotProxy(String),
    #[error("Missing required device option {0:?}")]
    Missing(&'static str),
    #[error("Invalid value for device option {key:?}: {reason}")]
    Value { key: &'static str, reason: String },
    #[error("Invalid proxy address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("Cannot map a single port to multiple ports")]
    SingleToMany,
    #[error("Mismatch between listen port(s) and connect port(s) count")]
    PortCount,
    #[error("The PROXY header can only be sent to tcp servers in non-nat mode")]
    ProxyProtocol,
    #[error(
        "Only proxy devices for non-abstract unix sockets can carry uid, gid, or mode properties"
    )]
    Ownership,
    #[error("Only host-bound proxies can use NAT")]
    NatBind,
    #[error("Proxying {listen} <-> {connect} is not supported when using NAT")]
    NatProtocol {
        listen: &'static str,
        connect: &'static str,
    },
    #[error("Cannot listen on wildcard address \"{0}\" when in nat mode")]
    NatWildcard(IpAddr),
    #[error("Cannot mix IP versions between listen and connect in nat mode")]
    NatFamilies,
    #[error("Instance has no static IPv{0} address assigned to be used as the connect IP (set ipv{0}.address on a NIC of a managed bridge)")]
    NatNoStaticAddress(u8),
    #[error("Connect IP \"{ip}\" must be one of the instance's static IPv{version} addresses (ipv{version}.address of a NIC on a managed bridge)")]
    NatNotStatic { ip: IpAddr, version: u8 },
    #[error("Forwarding between udp and {0} is not supported by rxd: udp forwards to udp only")]
    UdpMix(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bind {
    /// Listen on the host, connect inside the instance (LXD's default).
    Host,
    /// Listen inside the instance, connect on the host.
    Instance,
}

/// One side of a proxy, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProxyAddress {
    Tcp {
        ip: IpAddr,
        ports: Vec<u16>,
    },
    Udp {
        ip: IpAddr,
        ports: Vec<u16>,
    },
    /// A path in the file system of the side it is on.
    Unix {
        path: PathBuf,
    },
    /// A name in the abstract namespace (of the side's network namespace), without the `@`.
    Abstract {
        name: String,
    },
}

impl ProxyAddress {
    /// The ports of a tcp or udp address; a unix socket counts as one.
    pub fn port_count(&self) -> usize {
        match self {
            ProxyAddress::Tcp { ports, .. } | ProxyAddress::Udp { ports, .. } => ports.len(),
            ProxyAddress::Unix { .. } | ProxyAddress::Abstract { .. } => 1,
        }
    }

    /// `tcp`, `udp` or `unix` (abstract sockets included), as LXD names a connection type.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyAddress::Tcp { .. } => "tcp",
            ProxyAddress::Udp { .. } => "udp",
            ProxyAddress::Unix { .. } | ProxyAddress::Abstract { .. } => "unix",
        }
    }

    /// The socket address of port `i` of a tcp or udp address.
    pub fn socket_addr(&self, i: usize) -> Option<SocketAddr> {
        match self {
            ProxyAddress::Tcp { ip, ports } | ProxyAddress::Udp { ip, ports } => {
                ports.get(i).map(|p| SocketAddr::new(*ip, *p))
            }
            _ => None,
        }
    }
}

/// A validated proxy device: what the daemon hands to the forwarder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyDevice {
    pub listen: ProxyAddress,
    pub connect: ProxyAddress,
    pub bind: Bind,
    /// Send a PROXY protocol v2 header to the connect side first (tcp connect only).
    pub proxy_protocol: bool,
    /// Owner and mode of a listening unix socket file (ids of the listen side).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    /// `security.uid`/`security.gid`: whom the forwarder runs as on the host (default 0).
    pub security_uid: u32,
    pub security_gid: u32,
    /// `nat=true`: DNAT rules in rxd's firewall instead of a forwarder (host-bound tcp or udp
    /// between addresses of one family only).
    #[serde(default)]
    pub nat: bool,
}

impl ProxyDevice {
    /// How many listeners the forwarder opens: one per listen port (one for unix).
    pub fn listeners(&self) -> usize {
        self.listen.port_count()
    }

    /// Which connect port listener `i` forwards to: its own index, or the single one.
    pub fn connect_index(&self, i: usize) -> usize {
        if self.connect.port_count() == 1 {
            0
        } else {
            i
        }
    }
}

fn address_error(address: &str, reason: impl Into<String>) -> ProxyError {
    ProxyError::Address {
        address: address.to_owned(),
        reason: reason.into(),
    }
}

/// Parse one LXD proxy address.
pub fn parse_address(text: &str) -> Result<ProxyAddress, ProxyError> {
    let err = |reason: &str| address_error(text, reason);
    let (kind, rest) = text
        .split_once(':')
        .ok_or_else(|| err("expected <tcp|udp|unix>:<address>"))?;
    match kind {
        "unix" => {
            if rest.contains('\0') {
                return Err(err("NUL byte in a unix socket address"));
            }
            if let Some(name) = rest.strip_prefix('@') {
                if name.is_empty() || name.len() > MAX_UNIX_PATH {
                    return Err(err("an abstract socket name is 1 to 107 bytes"));
                }
                return Ok(ProxyAddress::Abstract {
                    name: name.to_owned(),
                });
            }
            if !rest.starts_with('/') {
                return Err(err("a unix socket path must be absolute"));
            }
            if rest.len() > MAX_UNIX_PATH {
                return Err(err("a unix socket path is at most 107 bytes"));
            }
            if rest.split('/').any(|c| c == "..") {
                return Err(err("a unix socket path may not contain '..'"));
            }
            Ok(ProxyAddress::Unix {
                path: PathBuf::from(rest),
            })
        }
        "tcp" | "udp" => {
            let (host, ports) = split_host_port(rest)
                .ok_or_else(|| err("expected <address>:<ports> (an IPv6 address in brackets)"))?;
            let ip = parse_host(host).ok_or_else(|| {
                address_error(
                    text,
                    format!("{host:?} is not an IP address (or localhost)"),
                )
            })?;
            let ports = parse_ports(ports).map_err(|reason| address_error(text, reason))?;
            Ok(if kind == "tcp" {
                ProxyAddress::Tcp { ip, ports }
            } else {
                ProxyAddress::Udp { ip, ports }
            })
        }
        other => Err(address_error(
            text,
            format!("Unknown connection type {other:?}"),
        )),
    }
}

/// Go's `net.SplitHostPort`, for the forms LXD accepts: `a.b.c.d:p`, `[v6]:p`, `name:p`.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let ports = after.strip_prefix(':')?;
        host.contains(':').then_some((host, ports))
    } else {
        let (host, ports) = s.split_once(':')?;
        (!ports.contains(':')).then_some((host, ports))
    }
}

/// IP literals, and `localhost` as 127.0.0.1; no other name is resolved.
fn parse_host(host: &str) -> Option<IpAddr> {
    if host == "localhost" {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.parse().ok()
}

/// A comma list of ports and `a-b` ranges, 1..=65535, none twice (so at most 65535 in all).
fn parse_ports(s: &str) -> Result<Vec<u16>, String> {
    let port = |p: &str| -> Result<u16, String> {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{p:?} is not a port"));
        }
        match p.parse::<u16>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("port {p} is outside 1-65535")),
        }
    };
    let mut seen = vec![false; 65536];
    let mut out = Vec::new();
    for item in s.split(',') {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(item)?;
                (p, p)
            }
        };
        if first > last {
            return Err(format!("port range {item} runs backwards"));
        }
        for p in first..=last {
            if std::mem::replace(&mut seen[usize::from(p)], true) {
                return Err(format!("port {p} is listed twice"));
            }
            out.push(p);
        }
    }
    Ok(out)
}

/// Go's `strconv.ParseBool`-style values LXD's `validate.IsBool` accepts.
fn parse_bool(key: &'static str, v: &str) -> Result<bool, ProxyError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ProxyError::Value {
            key,
            reason: format!("{v:?} is not a boolean"),
        }),
    }
}

fn parse_u32(key: &'static str, v: &str) -> Result<u32, ProxyError> {
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::Value {
            key,
            reason: format!("{v:?} is not a number"),
        });
    }
    v.parse().map_err(|_| ProxyError::Value {
        key,
        reason: format!("{v:?} is not a 32-bit number"),
    })
}

fn parse_mode(v: &str) -> Result<u32, ProxyError> {
    let bad = || ProxyError::Value {
        key: "mode",
        reason: format!("{v:?} is not an octal file mode"),
    };
    if v.is_empty() || v.len() > 5 || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    let mode = u32::from_str_radix(v, 8).map_err(|_| bad())?;
    if mode > 0o7777 {
        return Err(bad());
    }
    Ok(mode)
}

/// Check a proxy device as LXD 5.0 does and make its typed form. An empty value is an unset
/// key, as in LXD.
pub fn validate(device: &BTreeMap<String, String>) -> Result<ProxyDevice, ProxyError> {
    if let Some(key) = device.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(ProxyError::UnknownKey(key.clone()));
    }
    let get = |k: &str| device.get(k).map(String::as_str).filter(|v| !v.is_empty());
    match get("type") {
        Some("proxy") => {}
        other => return Err(ProxyError::NotProxy(other.unwrap_or_default().to_owned())),
    }
    let bind = match get("bind") {
        None | Some("host") => Bind::Host,
        Some("instance") => Bind::Instance,
        Some(other) => {
            return Err(ProxyError::Value {
                key: "bind",
                reason: format!("{other:?} is not one of host, instance"),
            })
        }
    };
    let nat = get("nat").map(|v| parse_bool("nat", v)).transpose()?;
    let proxy_protocol = get("proxy_protocol")
        .map(|v| parse_bool("proxy_protocol", v))
        .transpose()?
        .unwrap_or(false);
    let uid = get("uid").map(|v| parse_u32("uid", v)).transpose()?;
    let gid = get("gid").map(|v| parse_u32("gid", v)).transpose()?;
    let mode = get("mode").map(parse_mode).transpose()?;
    let security_uid = get("security.uid")
        .map(|v| parse_u32("security.uid", v))
        .transpose()?
        .unwrap_or(0);
    let security_gid = get("security.gid")
        .map(|v| parse_u32("security.gid", v))
        .transpose()?
        .unwrap_or(0);

    let listen = parse_address(get("listen").ok_or(ProxyError::Missing("listen"))?)?;
    let connect = parse_address(get("connect").ok_or(ProxyError::Missing("connect"))?)?;

    let (l, c) = (listen.port_count(), connect.port_count());
    let listen_unix = listen.kind() == "unix";
    if (!listen_unix && c > l) || (listen_unix && c > 1) {
        return Err(ProxyError::SingleToMany);
    }
    if connect.kind() == "unix" && l > 1 {
        return Err(ProxyError::SingleToMany);
    }
    if c != 1 && c != l {
        return Err(ProxyError::PortCount);
    }
    if proxy_protocol && connect.kind() != "tcp" {
        return Err(ProxyError::ProxyProtocol);
    }
    if (uid.is_some() || gid.is_some() || mode.is_some())
        && !matches!(listen, ProxyAddress::Unix { .. })
    {
        return Err(ProxyError::Ownership);
    }
    let nat = nat.unwrap_or(false);
    if nat {
        check_nat(bind, proxy_protocol, &listen, &connect)?;
    }
    match (listen.kind(), connect.kind()) {
        ("udp", "udp") => {}
        ("udp", other) | (other, "udp") => return Err(ProxyError::UdpMix(other)),
        _ => {}
    }
    Ok(ProxyDevice {
        listen,
        connect,
        bind,
        proxy_protocol,
        uid,
        gid,
        mode,
        security_uid,
        security_gid,
        nat,
    })
}

/// LXD 5.0's rules for `nat=true`, in its order: the host side listens (the rules live in the
/// host's firewall), tcp to tcp or udp to udp, a specific listen address (a wildcard would
/// take the port from every address of the host, and from traffic passing through it), one
/// IP family on both sides (DNAT does not translate between them).
fn check_nat(
    bind: Bind,
    proxy_protocol: bool,
    listen: &ProxyAddress,
    connect: &ProxyAddress,
) -> Result<(), ProxyError> {
    if proxy_protocol {
        return Err(ProxyError::ProxyProtocol);
    }
    if bind != Bind::Host {
        return Err(ProxyError::NatBind);
    }
    let (listen_ip, connect_ip) = match (listen, connect) {
        (ProxyAddress::Tcp { ip: l, .. }, ProxyAddress::Tcp { ip: c, .. })
        | (ProxyAddress::Udp { ip: l, .. }, ProxyAddress::Udp { ip: c, .. }) => (*l, *c),
        _ => {
            return Err(ProxyError::NatProtocol {
                listen: listen.kind(),
                connect: connect.kind(),
            })
        }
    };
    if listen_ip.is_unspecified() {
        return Err(ProxyError::NatWildcard(listen_ip));
    }
    if listen_ip.is_ipv4() != connect_ip.is_ipv4() {
        return Err(ProxyError::NatFamilies);
    }
    Ok(())
}

/// Where a NAT proxy's rules send traffic: a static address of one of the instance's NICs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatTarget<'a> {
    /// The NIC device holding the address.
    pub nic: &'a str,
    pub ip: IpAddr,
}

/// LXD's choice of a NAT proxy's target (`setupNAT`): the connect address must be a static
/// address (`ipv4.address`, `ipv6.address`) of one of the instance's NICs, so the rules can
/// only ever reach this instance (the address is reserved for it on its bridge, and its
/// filters keep others from taking it); a wildcard connect address stands for the first such
/// address of the listen address's family. `nics` are the instance's NICs on managed
/// bridges, by device name, in order; `device` is a validated NAT-mode proxy.
pub fn nat_target<'a>(
    device: &ProxyDevice,
    nics: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> Result<NatTarget<'a>, ProxyError> {
    let connect = match &device.connect {
        ProxyAddress::Tcp { ip, .. } | ProxyAddress::Udp { ip, .. } => *ip,
        other => {
            return Err(ProxyError::NatProtocol {
                listen: device.listen.kind(),
                connect: other.kind(),
            })
        }
    };
    let (key, version) = if connect.is_ipv4() {
        ("ipv4.address", 4)
    } else {
        ("ipv6.address", 6)
    };
    for (nic, config) in nics {
        let Some(ip) = config
            .get(key)
            .and_then(|a| a.parse::<IpAddr>().ok())
            .filter(|ip| ip.is_ipv4() == connect.is_ipv4())
        else {
            continue;
        };
        if connect == ip || connect.is_unspecified() {
            return Ok(NatTarget { nic, ip });
        }
    }
    Err(if connect.is_unspecified() {
        ProxyError::NatNoStaticAddress(version)
    } else {
        ProxyError::NatNotStatic {
            ip: connect,
            version,
        }
    })
}

/// The PROXY protocol v2 header for a stream from `source` accepted at `destination` (both
/// tcp, same family), or the `LOCAL` form when the listener is a unix socket (`None`).
pub fn proxy_v2_header(addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let mut out = SIGNATURE.to_vec();
    match addrs {
        Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
            // Version 2, PROXY; TCP over IPv4; 12 bytes of addresses.
            out.extend_from_slice(&[0x21, 0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        Some((SocketAddr::V6(s), SocketAddr::V6(d))) => {
            out.extend_from_slice(&[0x21, 0x21, 0, 36]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        // A unix listener, or (not made by a listener) mixed families: version 2, LOCAL,
        // no address: the receiver uses the connection's own.
        _ => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(pairs: &str) -> BTreeMap<String, String> {
        let mut d: BTreeMap<String, String> = [("type".to_string(), "proxy".to_string())].into();
        for pair in pairs.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap();
            d.insert(k.into(), v.into());
        }
        d
    }

    /// `expected`: `ok` or a piece of the error message.
    fn check(input: &str, expected: &str) {
        match (validate(&device(input)), expected) {
            (Ok(_), "ok") => {}
            (Ok(d), _) => panic!("{input}: accepted ({d:?}), wanted {expected:?}"),
            (Err(e), "ok") => panic!("{input}: refused: {e}"),
            (Err(e), want) => assert!(
                e.to_string().contains(want),
                "{input}: {e}, wanted {want:?}"
            ),
        }
    }

    #[test]
    fn devices() {
        let cases = [
            ("listen=tcp:0.0.0.0:80 connect=tcp:127.0.0.1:80", "ok"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 bind=host", "ok"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 bind=instance", "ok"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 bind=", "ok"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 bind=both", "not one of host, instance"),
            ("listen=tcp:[::1]:80 connect=tcp:[::1]:8080", "ok"),
            ("listen=tcp:localhost:80 connect=tcp:localhost:80", "ok"),
            ("listen=tcp:127.0.0.1:80-82 connect=tcp:127.0.0.1:80", "ok"),
            ("listen=tcp:127.0.0.1:80-82 connect=tcp:127.0.0.1:90-92", "ok"),
            ("listen=tcp:127.0.0.1:80,81 connect=tcp:127.0.0.1:90,91", "ok"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:90-92", "Cannot map a single port to multiple ports"),
            ("listen=tcp:127.0.0.1:80-83 connect=tcp:127.0.0.1:90-92", "Mismatch between listen port(s) and connect port(s) count"),
            ("listen=udp:127.0.0.1:53 connect=udp:127.0.0.1:53", "ok"),
            ("listen=udp:127.0.0.1:53 connect=tcp:127.0.0.1:53", "udp forwards to udp only"),
            ("listen=tcp:127.0.0.1:53 connect=udp:127.0.0.1:53", "udp forwards to udp only"),
            ("listen=unix:/run/a.sock connect=tcp:127.0.0.1:80", "ok"),
            ("listen=unix:/run/a.sock connect=tcp:127.0.0.1:80,81", "Cannot map a single port to multiple ports"),
            ("listen=tcp:127.0.0.1:80,81 connect=unix:/run/a.sock", "Cannot map a single port to multiple ports"),
            ("listen=tcp:127.0.0.1:80 connect=unix:/run/a.sock", "ok"),
            ("listen=unix:@abc connect=unix:/run/a.sock", "ok"),
            ("listen=unix:/run/a.sock connect=unix:@abc", "ok"),
            ("connect=tcp:127.0.0.1:80", "Missing required device option \"listen\""),
            ("listen=tcp:127.0.0.1:80", "Missing required device option \"connect\""),
            ("listen= connect=tcp:127.0.0.1:80", "Missing required device option \"listen\""),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 colour=red", "Invalid device option \"colour\""),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 security.uid=1000 security.gid=1000", "ok"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 security.uid=-1", "not a number"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 security.gid=4294967296", "not a 32-bit number"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 proxy_protocol=true", "ok"),
            ("listen=unix:/a connect=tcp:127.0.0.1:80 proxy_protocol=yes", "ok"),
            ("listen=tcp:127.0.0.1:80 connect=unix:/a proxy_protocol=true", "PROXY header can only be sent to tcp"),
            ("listen=udp:127.0.0.1:80 connect=udp:127.0.0.1:80 proxy_protocol=true", "PROXY header can only be sent to tcp"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 proxy_protocol=maybe", "not a boolean"),
            ("listen=unix:/run/a.sock connect=tcp:127.0.0.1:80 uid=1000 gid=1000 mode=0660", "ok"),
            ("listen=unix:/run/a.sock connect=tcp:127.0.0.1:80 mode=660", "ok"),
            ("listen=unix:/run/a.sock connect=tcp:127.0.0.1:80 mode=0689", "not an octal file mode"),
            ("listen=unix:/run/a.sock connect=tcp:127.0.0.1:80 mode=17777", "not an octal file mode"),
            ("listen=unix:/run/a.sock connect=tcp:127.0.0.1:80 uid=x", "not a number"),
            ("listen=unix:@abc connect=tcp:127.0.0.1:80 uid=1000", "non-abstract unix sockets"),
            ("listen=tcp:127.0.0.1:80 connect=unix:/a mode=0600", "non-abstract unix sockets"),
            ("listen=tcp:127.0.0.1:80 connect=unix:/a gid=1", "non-abstract unix sockets"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:10.0.0.2:80 nat=false", "ok"),
            ("listen=tcp:127.0.0.1:80 connect=tcp:10.0.0.2:80 nat=sometimes", "not a boolean"),
            // nat=true: LXD 5.0's rules.
            ("listen=tcp:198.51.100.2:8080 connect=tcp:10.0.0.2:80 nat=true", "ok"),
            ("listen=tcp:198.51.100.2:8080 connect=tcp:10.0.0.2:80 nat=1 bind=host", "ok"),
            ("listen=udp:198.51.100.2:53 connect=udp:10.0.0.2:5353 nat=true", "ok"),
            ("listen=tcp:[2001:db8::2]:80 connect=tcp:[fd42::10]:80 nat=true", "ok"),
            ("listen=tcp:198.51.100.2:80-82 connect=tcp:10.0.0.2:80-82 nat=true", "ok"),
            ("listen=tcp:198.51.100.2:80-82 connect=tcp:10.0.0.2:8080 nat=true", "ok"),
            ("listen=tcp:198.51.100.2:80 connect=tcp:0.0.0.0:80 nat=true", "ok"),
            ("listen=tcp:198.51.100.2:80-82 connect=tcp:10.0.0.2:80-81 nat=true", "Mismatch between listen port(s) and connect port(s) count"),
            ("listen=tcp:198.51.100.2:80 connect=tcp:10.0.0.2:80 nat=true bind=instance", "Only host-bound proxies can use NAT"),
            ("listen=tcp:198.51.100.2:80 connect=tcp:10.0.0.2:80 nat=true proxy_protocol=true", "PROXY header can only be sent to tcp servers in non-nat mode"),
            ("listen=unix:/run/a.sock connect=tcp:10.0.0.2:80 nat=true", "Proxying unix <-> tcp is not supported when using NAT"),
            ("listen=tcp:198.51.100.2:80 connect=unix:/run/a.sock nat=true", "Proxying tcp <-> unix is not supported when using NAT"),
            ("listen=unix:@a connect=unix:@b nat=true", "Proxying unix <-> unix is not supported when using NAT"),
            ("listen=tcp:198.51.100.2:53 connect=udp:10.0.0.2:53 nat=true", "Proxying tcp <-> udp is not supported when using NAT"),
            ("listen=udp:198.51.100.2:53 connect=tcp:10.0.0.2:53 nat=true", "Proxying udp <-> tcp is not supported when using NAT"),
            ("listen=tcp:0.0.0.0:80 connect=tcp:10.0.0.2:80 nat=true", "Cannot listen on wildcard address \"0.0.0.0\" when in nat mode"),
            ("listen=tcp:[::]:80 connect=tcp:[fd42::10]:80 nat=true", "Cannot listen on wildcard address \"::\" when in nat mode"),
            ("listen=tcp:198.51.100.2:80 connect=tcp:[fd42::10]:80 nat=true", "Cannot mix IP versions between listen and connect in nat mode"),
            ("listen=tcp:[2001:db8::2]:80 connect=tcp:10.0.0.2:80 nat=true", "Cannot mix IP versions"),
            ("listen=unix:/run/a.sock connect=tcp:10.0.0.2:80 nat=true uid=1", "Proxying unix <-> tcp"),
            ("listen=tcp:198.51.100.2:80 connect=tcp:10.0.0.2:80 nat=true mode=0600", "non-abstract unix sockets"),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
        let mut other = device("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80");
        other.insert("type".into(), "disk".into());
        assert_eq!(validate(&other), Err(ProxyError::NotProxy("disk".into())));
    }

    fn nic(pairs: &str) -> BTreeMap<String, String> {
        let mut d: BTreeMap<String, String> = [("type".to_string(), "nic".to_string())].into();
        for pair in pairs.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap();
            d.insert(k.into(), v.into());
        }
        d
    }

    /// `expected`: `<nic> <ip>` chosen, or a piece of the error message.
    fn check_target(connect: &str, nics: &[(&str, &str)], expected: &str) {
        let listen = if connect.contains('[') {
            "tcp:[2001:db8::2]:80"
        } else {
            "tcp:198.51.100.2:80"
        };
        let proxy = validate(&device(&format!(
            "listen={listen} connect={connect} nat=true"
        )))
        .unwrap();
        let nics: Vec<(&str, BTreeMap<String, String>)> =
            nics.iter().map(|(n, p)| (*n, nic(p))).collect();
        let got = nat_target(&proxy, nics.iter().map(|(n, c)| (*n, c)))
            .map(|t| format!("{} {}", t.nic, t.ip))
            .map_err(|e| e.to_string());
        match got {
            Ok(t) => assert_eq!(t, expected, "{connect} {nics:?}"),
            Err(e) => assert!(
                e.contains(expected),
                "{connect} {nics:?}: {e}, wanted {expected:?}"
            ),
        }
    }

    #[test]
    fn nat_targets() {
        let both = [
            ("eth0", "network=br0 ipv4.address=10.0.0.5"),
            (
                "eth1",
                "network=br1 ipv4.address=10.1.0.5 ipv6.address=fd42::5",
            ),
        ];
        // (connect address, the instance's NICs, expected)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 10] = [
            ("tcp:10.0.0.5:80", &both, "eth0 10.0.0.5"),
            ("tcp:10.1.0.5:80", &both, "eth1 10.1.0.5"),
            // A wildcard means the first static address of the family.
            ("tcp:0.0.0.0:80", &both, "eth0 10.0.0.5"),
            ("tcp:[::]:80", &both, "eth1 fd42::5"),
            ("tcp:[fd42:0::5]:80", &both, "eth1 fd42::5"),
            // Another instance's address, or a dynamic one, is never a target.
            (
                "tcp:10.0.0.6:80",
                &both,
                "Connect IP \"10.0.0.6\" must be one of the instance's static IPv4 addresses",
            ),
            (
                "tcp:[fd42::6]:80",
                &both,
                "must be one of the instance's static IPv6 addresses",
            ),
            (
                "tcp:10.0.0.5:80",
                &[("eth0", "network=br0")],
                "Connect IP \"10.0.0.5\" must be one of",
            ),
            (
                "tcp:0.0.0.0:80",
                &[("eth0", "network=br0 ipv6.address=fd42::5")],
                "Instance has no static IPv4 address assigned to be used as the connect IP",
            ),
            ("tcp:[::]:80", &[], "Instance has no static IPv6 address"),
        ];
        for (connect, nics, expected) in cases {
            check_target(connect, nics, expected);
        }
        // A value of the wrong family under a key is no address of that family.
        check_target(
            "tcp:0.0.0.0:80",
            &[
                ("eth0", "ipv4.address=fd42::5"),
                ("eth1", "ipv4.address=10.0.0.9"),
            ],
            "eth1 10.0.0.9",
        );
    }

    /// `expected`: the address's `Debug` form, or a piece of the error message.
    fn check_address(input: &str, expected: &str) {
        match parse_address(input) {
            Ok(a) => assert_eq!(format!("{a:?}"), expected, "{input}"),
            Err(e) => assert!(
                e.to_string().contains(expected),
                "{input}: {e}, wanted {expected:?}"
            ),
        }
    }

    #[test]
    fn addresses() {
        let cases = [
            ("tcp:127.0.0.1:80", "Tcp { ip: 127.0.0.1, ports: [80] }"),
            ("udp:10.1.2.3:53", "Udp { ip: 10.1.2.3, ports: [53] }"),
            ("tcp:[::1]:80", "Tcp { ip: ::1, ports: [80] }"),
            (
                "tcp:[fd00::1]:80-82,90",
                "Tcp { ip: fd00::1, ports: [80, 81, 82, 90] }",
            ),
            ("tcp:localhost:8080", "Tcp { ip: 127.0.0.1, ports: [8080] }"),
            ("tcp:0.0.0.0:1", "Tcp { ip: 0.0.0.0, ports: [1] }"),
            ("tcp:0.0.0.0:65535", "Tcp { ip: 0.0.0.0, ports: [65535] }"),
            ("unix:/run/x.sock", "Unix { path: \"/run/x.sock\" }"),
            ("unix:@my-name", "Abstract { name: \"my-name\" }"),
            ("sctp:1.2.3.4:80", "Unknown connection type \"sctp\""),
            ("tcp", "expected <tcp|udp|unix>:<address>"),
            ("tcp:1.2.3.4", "expected <address>:<ports>"),
            ("tcp:::1:80", "expected <address>:<ports>"),
            ("tcp:[1.2.3.4]:80", "expected <address>:<ports>"),
            ("tcp:[::1]80", "expected <address>:<ports>"),
            ("tcp:example.com:80", "not an IP address"),
            ("tcp::80", "not an IP address"),
            ("tcp:1.2.3.4:0", "outside 1-65535"),
            ("tcp:1.2.3.4:65536", "outside 1-65535"),
            ("tcp:1.2.3.4:100000", "is not a port"),
            ("tcp:1.2.3.4:", "is not a port"),
            ("tcp:1.2.3.4:80,", "is not a port"),
            ("tcp:1.2.3.4:+80", "is not a port"),
            ("tcp:1.2.3.4:90-80", "runs backwards"),
            ("tcp:1.2.3.4:80-", "is not a port"),
            ("tcp:1.2.3.4:80-90-100", "is not a port"),
            ("tcp:1.2.3.4:80,80", "listed twice"),
            ("tcp:1.2.3.4:80-90,85", "listed twice"),
            ("unix:run/x.sock", "must be absolute"),
            ("unix:", "must be absolute"),
            ("unix:@", "1 to 107 bytes"),
            ("unix:/run/../etc/x", "may not contain '..'"),
            ("unix:/a\0b", "NUL byte"),
        ];
        for (input, expected) in cases {
            check_address(input, expected);
        }
        let long = format!("unix:/{}", "a".repeat(107));
        check_address(&long, "at most 107 bytes");
        // Every port, once: the bound.
        let all = parse_address("tcp:127.0.0.1:1-65535").unwrap();
        assert_eq!(all.port_count(), 65535);
    }

    #[test]
    fn listeners_map_to_their_own_or_the_single_connect_port() {
        let d = validate(&device(
            "listen=tcp:127.0.0.1:80-82 connect=tcp:127.0.0.1:90-92",
        ))
        .unwrap();
        assert_eq!(d.listeners(), 3);
        assert_eq!(
            d.connect.socket_addr(d.connect_index(2)),
            Some("127.0.0.1:92".parse().unwrap())
        );
        let d = validate(&device(
            "listen=tcp:127.0.0.1:80-82 connect=tcp:127.0.0.1:90",
        ))
        .unwrap();
        assert_eq!(
            d.connect.socket_addr(d.connect_index(2)),
            Some("127.0.0.1:90".parse().unwrap())
        );
    }

    #[test]
    fn proxy_v2_headers() {
        let sig = b"\r\n\r\n\0\r\nQUIT\n";
        let v4 = proxy_v2_header(Some((
            "10.0.0.1:4000".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        )));
        let mut want = sig.to_vec();
        want.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 0, 0, 1, 10, 0, 0, 2, 0x0f, 0xa0, 0, 80,
        ]);
        assert_eq!(v4, want);
        let v6 = proxy_v2_header(Some((
            "[::1]:1".parse().unwrap(),
            "[::2]:2".parse().unwrap(),
        )));
        assert_eq!(v6.len(), 16 + 36);
        assert_eq!(&v6[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(v6[16 + 15], 1);
        assert_eq!(v6[16 + 31], 2);
        assert_eq!(&v6[48..], &[0, 1, 0, 2]);
        let local = proxy_v2_header(None);
        assert_eq!(&local[12..], &[0x20, 0, 0, 0]);
    }
}
