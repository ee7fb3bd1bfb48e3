//! MAC addresses: parsing and printing, the `00:16:3e` addresses LXD gives NICs and bridges, and
//! the EUI-64 address SLAAC derives from a MAC. Random and hashed bytes are handed in: this module
//! never draws randomness and never hashes.

use ipnet::Ipv6Net;
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;
use thiserror::Error;

/// The prefix of every MAC LXD (and rxd) makes up: Xensource's OUI, as LXD uses it.
pub const OUI: [u8; 3] = [0x00, 0x16, 0x3e];

#[derive(Debug, Error, PartialEq, Eq)]
#[error("Invalid MAC address {0:?}: expected six hexadecimal bytes like 00:16:3e:12:ab:cd")]
pub struct MacError(pub String);

/// A 48-bit Ethernet address. Printed as lowercase colon-separated hex, the form dnsmasq's lease
/// file, nftables and LXD's API all use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A multicast (group) address: never a valid address for an interface.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Neither multicast nor all zeroes: an address a NIC or a bridge may carry.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && self.0 != [0; 6]
    }

    /// The six bytes as one integer, as nftables compares a raw payload (`@nh,528,48`).
    pub fn as_u64(&self) -> u64 {
        self.0.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b))
    }
}

/// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, either case (Go's `net.ParseMAC` for 48-bit
/// addresses, minus its dotted form).
impl FromStr for Mac {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Mac, MacError> {
        let err = || MacError(s.to_owned());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A NIC's MAC when it has no `hwaddr`: `00:16:3e` and three bytes the caller drew from a CSPRNG
/// (LXD's `randomHwaddr`).
pub fn random_mac(random: [u8; 3]) -> Mac {
    let [a, b, c] = OUI;
    let [x, y, z] = random;
    Mac([a, b, c, x, y, z])
}

/// What a bridge's stable MAC is derived from: LXD's seed, `<certificate fingerprint>.<cluster
/// member id>.<network id>` with member 0 (rxd has no clusters). The caller hashes this text
/// (SHA-256) and hands the digest to [`stable_bridge_mac`], so the MAC survives restarts and
/// differs between servers and networks. (LXD feeds the seed to Go's `math/rand`; the MAC differs
/// from LXD's, which only matters to a host that moves from LXD to rxd.)
pub fn bridge_mac_seed(cert_fingerprint: &str, network_id: i64) -> String {
    format!("{cert_fingerprint}.0.{network_id}")
}

/// A bridge's MAC when `bridge.hwaddr` is unset: `00:16:3e` and the first three bytes of a digest
/// of [`bridge_mac_seed`]. Without it the kernel gives the bridge its lowest port's MAC, which
/// changes as ports come and go and breaks neighbours' ARP caches.
pub fn stable_bridge_mac(digest: &[u8; 32]) -> Mac {
    random_mac([digest[0], digest[1], digest[2]])
}

/// The address SLAAC gives an interface with MAC `mac` in `prefix` (modified EUI-64, RFC 4291
/// appendix A): the MAC's universal/local bit flipped, `ff:fe` in the middle. `None` unless
/// the prefix is a /64: SLAAC makes no address in any other.
pub fn eui64(prefix: Ipv6Net, mac: Mac) -> Option<Ipv6Addr> {
    if prefix.prefix_len() != 64 {
        return None;
    }
    let [a, b, c, d, e, f] = mac.0;
    let mut octets = prefix.network().octets();
    octets[8..].copy_from_slice(&[a ^ 0x02, b, c, 0xff, 0xfe, d, e, f]);
    Some(Ipv6Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, want: Option<&str>) {
        let got = input.parse::<Mac>().ok().map(|m| m.to_string());
        assert_eq!(got.as_deref(), want, "{input:?}");
    }

    #[test]
    fn parse_and_print() {
        check("00:16:3e:aa:bb:cc", Some("00:16:3e:aa:bb:cc"));
        check("00:16:3E:AA:BB:CC", Some("00:16:3e:aa:bb:cc"));
        check("00-16-3e-aa-bb-cc", Some("00:16:3e:aa:bb:cc"));
        check("00:16:3e:aa:bb", None);
        check("00:16:3e:aa:bb:cc:dd", None);
        check("00:16:3e:aa:bb:c", None);
        check("00:16:3e:aa:bb:ccc", None);
        check("00:16-3e:aa:bb:cc", None);
        check("00:16:3e:aa:bb:+c", None);
        check("00:16:3e:aa:bb:gg", None);
        check("0016.3eaa.bbcc", None);
        check("", None);
        check("00:16:3e:aa:bb:cc\n", None);
    }

    #[test]
    fn kinds() {
        let mac = |s: &str| s.parse::<Mac>().unwrap();
        assert!(mac("00:16:3e:00:00:01").is_unicast());
        assert!(!mac("01:00:5e:00:00:01").is_unicast());
        assert!(!mac("ff:ff:ff:ff:ff:ff").is_unicast());
        assert!(!mac("00:00:00:00:00:00").is_unicast());
        assert_eq!(mac("00:16:3e:12:34:56").as_u64(), 0x0016_3e12_3456);
    }

    #[test]
    fn generated() {
        assert_eq!(random_mac([1, 0xab, 0xff]).to_string(), "00:16:3e:01:ab:ff");
        let mut digest = [0u8; 32];
        digest[..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(stable_bridge_mac(&digest).to_string(), "00:16:3e:de:ad:be");
        assert_eq!(bridge_mac_seed("3a1f", 7), "3a1f.0.7");
    }

    fn check_eui64(prefix: &str, mac: &str, want: Option<&str>) {
        let got = eui64(prefix.parse().unwrap(), mac.parse().unwrap());
        assert_eq!(got, want.map(|w| w.parse().unwrap()), "{prefix} {mac}");
    }

    #[test]
    fn slaac() {
        check_eui64(
            "fd42:1:2:3::/64",
            "00:16:3e:12:34:56",
            Some("fd42:1:2:3:216:3eff:fe12:3456"),
        );
        // The universal/local bit is flipped, not set.
        check_eui64(
            "2001:db8::/64",
            "02:00:00:00:00:01",
            Some("2001:db8::ff:fe00:1"),
        );
        // Host bits in the prefix are ignored.
        check_eui64(
            "2001:db8::1/64",
            "00:16:3e:00:00:01",
            Some("2001:db8::216:3eff:fe00:1"),
        );
        check_eui64("2001:db8::/56", "00:16:3e:00:00:01", None);
        check_eui64("2001:db8::/80", "00:16:3e:00:00:01", None);
    }
}
