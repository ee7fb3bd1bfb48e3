//! `core.https_address`: `host:port`, `[v6]:port`, `:port`, or a bare host (port 8443).

use std::fmt;
use std::net::IpAddr;
use thiserror::Error;

pub const DEFAULT_PORT: u16 = 8443;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    /// `None` means every address of the host.
    pub host: Option<Host>,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("invalid port in {0:?}")]
    Port(String),
    #[error("invalid host in {0:?}: expected an IP address, [IPv6]:port or a host name")]
    Host(String),
}

impl ListenAddress {
    pub fn parse(s: &str) -> Result<ListenAddress, AddressError> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| AddressError::Host(s.into()))?;
            let ip: std::net::Ipv6Addr = h.parse().map_err(|_| AddressError::Host(s.into()))?;
            let port = match after {
                "" => DEFAULT_PORT,
                p => parse_port(
                    p.strip_prefix(':')
                        .ok_or_else(|| AddressError::Host(s.into()))?,
                    s,
                )?,
            };
            (Some(Host::Ip(IpAddr::V6(ip))), port)
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            // A bare IPv6 address contains colons: it can only be taken whole.
            (Some(Host::Ip(ip)), DEFAULT_PORT)
        } else {
            let (h, p) = match s.rsplit_once(':') {
                Some((h, p)) => (h, parse_port(p, s)?),
                None => (s, DEFAULT_PORT),
            };
            let host = if h.is_empty() {
                None
            } else if let Ok(ip) = h.parse::<IpAddr>() {
                if ip.is_ipv6() {
                    // "::1:8443" is ambiguous; LXD requires brackets too.
                    return Err(AddressError::Host(s.into()));
                }
                Some(Host::Ip(ip))
            } else if is_host_name(h) {
                Some(Host::Name(h.to_owned()))
            } else {
                return Err(AddressError::Host(s.into()));
            };
            (host, p)
        };
        Ok(ListenAddress { host, port })
    }

    /// True when the listener would accept connections on every address of the host, which the
    /// production advice says to avoid.
    pub fn is_wildcard(&self) -> bool {
        match &self.host {
            None => true,
            Some(Host::Ip(ip)) => ip.is_unspecified(),
            Some(Host::Name(_)) => false,
        }
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            None => write!(f, ":{}", self.port),
            Some(Host::Ip(IpAddr::V6(ip))) => write!(f, "[{ip}]:{}", self.port),
            Some(Host::Ip(IpAddr::V4(ip))) => write!(f, "{ip}:{}", self.port),
            Some(Host::Name(n)) => write!(f, "{n}:{}", self.port),
        }
    }
}

fn parse_port(p: &str, whole: &str) -> Result<u16, AddressError> {
    // Port 0 would bind a random port the clients cannot know; LXD refuses it too.
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(AddressError::Port(whole.into())),
        Ok(n) => Ok(n),
    }
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
fn is_host_name(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, ()>, wildcard: bool) {
        let got = ListenAddress::parse(input);
        match (got, expected) {
            (Ok(a), Ok(shown)) => {
                assert_eq!(a.to_string(), shown, "{input}");
                assert_eq!(a.is_wildcard(), wildcard, "{input}");
            }
            (Err(_), Err(())) => {}
            (got, _) => panic!("{input}: unexpected {got:?}"),
        }
    }

    #[test]
    fn parses_lxd_address_forms() {
        check("127.0.0.1:8443", Ok("127.0.0.1:8443"), false);
        check("127.0.0.1", Ok("127.0.0.1:8443"), false);
        check("[::1]:9443", Ok("[::1]:9443"), false);
        check("[::1]", Ok("[::1]:8443"), false);
        check("::1", Ok("[::1]:8443"), false);
        check(":8443", Ok(":8443"), true);
        check("0.0.0.0:8443", Ok("0.0.0.0:8443"), true);
        check("[::]:8443", Ok("[::]:8443"), true);
        check("localhost:8443", Ok("localhost:8443"), false);
        check("host.example:1", Ok("host.example:1"), false);
        check("127.0.0.1:0", Err(()), false);
        check("127.0.0.1:65536", Err(()), false);
        check("127.0.0.1:x", Err(()), false);
        check("[::1", Err(()), false);
        check("[nope]:1", Err(()), false);
        check("bad host:1", Err(()), false);
        check("-bad:1", Err(()), false);
        check("a/b:1", Err(()), false);
        check("::1:8443", Ok("[::1:8443]:8443"), false);
    }
}
