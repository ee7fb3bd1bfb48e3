//! Choosing a subnet for `ipv4.address=auto` / `ipv6.address=auto` (LXD's `randomSubnetV4/V6`):
//! candidates `10.<a>.<b>.0/24` and `fd42:<r>:<r>:<r>::/64` made from random bytes the caller
//! drew, minus those overlapping a network already in use. It must not know where the random
//! bytes, the networks in use (routes, other managed networks, interface addresses) or the
//! liveness probe (ping, TCP connect) come from: all three are handed in.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};
use thiserror::Error;

/// How many candidates LXD tries before it gives up.
pub const MAX_TRIES: usize = 100;
/// Random bytes per IPv4 candidate, and for all of [`MAX_TRIES`].
pub const V4_BYTES: usize = 2;
pub const V4_RANDOM_LEN: usize = V4_BYTES * MAX_TRIES;
/// Random bytes per IPv6 candidate, and for all of [`MAX_TRIES`].
pub const V6_BYTES: usize = 6;
pub const V6_RANDOM_LEN: usize = V6_BYTES * MAX_TRIES;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubnetError {
    #[error("Failed to automatically find an unused IPv4 subnet, manual configuration required")]
    NoFreeV4,
    #[error("Failed to automatically find an unused IPv6 subnet, manual configuration required")]
    NoFreeV6,
}

/// The IPv4 candidate two random bytes make: `10.<a>.<b>.0/24`.
pub fn candidate_v4(random: [u8; 2]) -> Ipv4Net {
    let [a, b] = random;
    Ipv4Net::new_assert(Ipv4Addr::new(10, a, b, 0), 24)
}

/// The IPv6 candidate six random bytes make: `fd42:<r>:<r>:<r>::/64`.
pub fn candidate_v6(random: [u8; 6]) -> Ipv6Net {
    let [a, b, c, d, e, f] = random;
    let word = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]);
    let addr = Ipv6Addr::new(0xfd42, word(a, b), word(c, d), word(e, f), 0, 0, 0, 0);
    Ipv6Net::new_assert(addr, 64)
}

/// Whether two networks share an address (one contains the other). Networks of different
/// families never overlap.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether `candidate` overlaps anything in `in_use`. Default routes (prefix length 0) are not
/// counted: they contain everything, and a network reached only through the default route is
/// what the caller's probe looks for.
fn taken(candidate: IpNet, in_use: &[IpNet]) -> bool {
    in_use
        .iter()
        .filter(|n| n.prefix_len() > 0)
        .any(|n| overlaps(n, &candidate))
}

/// The IPv4 candidates `random` makes (two bytes each, at most [`MAX_TRIES`]) that overlap no
/// network in `in_use`, in order. A caller probing concurrently takes these and probes them.
pub fn candidates_v4<'a>(
    random: &'a [u8],
    in_use: &'a [IpNet],
) -> impl Iterator<Item = Ipv4Net> + 'a {
    random
        .chunks_exact(V4_BYTES)
        .take(MAX_TRIES)
        .map(|c| candidate_v4([c[0], c[1]]))
        .filter(move |n| !taken(IpNet::V4(*n), in_use))
}

/// The IPv6 candidates `random` makes (six bytes each, at most [`MAX_TRIES`]) that overlap no
/// network in `in_use`, in order.
pub fn candidates_v6<'a>(
    random: &'a [u8],
    in_use: &'a [IpNet],
) -> impl Iterator<Item = Ipv6Net> + 'a {
    random
        .chunks_exact(V6_BYTES)
        .take(MAX_TRIES)
        .map(|c| candidate_v6([c[0], c[1], c[2], c[3], c[4], c[5]]))
        .filter(move |n| !taken(IpNet::V6(*n), in_use))
}

/// The first IPv4 candidate that overlaps nothing in use and that `is_free` (the caller's probe)
/// accepts. Hand in [`V4_RANDOM_LEN`] random bytes for LXD's hundred tries.
pub fn choose_v4(
    random: &[u8],
    in_use: &[IpNet],
    mut is_free: impl FnMut(&Ipv4Net) -> bool,
) -> Result<Ipv4Net, SubnetError> {
    candidates_v4(random, in_use)
        .find(|n| is_free(n))
        .ok_or(SubnetError::NoFreeV4)
}

/// The first IPv6 candidate that overlaps nothing in use and that `is_free` accepts. Hand in
/// [`V6_RANDOM_LEN`] random bytes for LXD's hundred tries.
pub fn choose_v6(
    random: &[u8],
    in_use: &[IpNet],
    mut is_free: impl FnMut(&Ipv6Net) -> bool,
) -> Result<Ipv6Net, SubnetError> {
    candidates_v6(random, in_use)
        .find(|n| is_free(n))
        .ok_or(SubnetError::NoFreeV6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn check_v4(random: &[u8], in_use: &[&str], busy: &[&str], want: Result<&str, SubnetError>) {
        let in_use = nets(in_use);
        let busy: Vec<Ipv4Net> = busy.iter().map(|s| s.parse().unwrap()).collect();
        let got = choose_v4(random, &in_use, |n| !busy.contains(n));
        assert_eq!(
            got,
            want.map(|w| w.parse().unwrap()),
            "{random:?} {in_use:?}"
        );
    }

    fn check_v6(random: &[u8], in_use: &[&str], want: Result<&str, SubnetError>) {
        let got = choose_v6(random, &nets(in_use), |_| true);
        assert_eq!(
            got,
            want.map(|w| w.parse().unwrap()),
            "{random:?} {in_use:?}"
        );
    }

    #[test]
    fn v4() {
        use SubnetError::NoFreeV4;
        check_v4(&[1, 2], &[], &[], Ok("10.1.2.0/24"));
        check_v4(&[0, 0], &[], &[], Ok("10.0.0.0/24"));
        check_v4(&[255, 255], &[], &[], Ok("10.255.255.0/24"));
        // Overlaps in either direction, and with any address on an interface.
        check_v4(&[1, 2, 3, 4], &["10.1.2.0/24"], &[], Ok("10.3.4.0/24"));
        check_v4(&[1, 2, 3, 4], &["10.1.0.0/16"], &[], Ok("10.3.4.0/24"));
        check_v4(&[1, 2, 3, 4], &["10.1.2.128/25"], &[], Ok("10.3.4.0/24"));
        check_v4(&[1, 2, 3, 4], &["10.1.2.77/32"], &[], Ok("10.3.4.0/24"));
        check_v4(&[1, 2, 3, 4], &["10.1.2.77/24"], &[], Ok("10.3.4.0/24"));
        check_v4(&[1, 2], &["10.0.0.0/8"], &[], Err(NoFreeV4));
        // Default routes and other families do not count.
        check_v4(&[1, 2], &["0.0.0.0/0", "::/0"], &[], Ok("10.1.2.0/24"));
        check_v4(&[1, 2], &["fd42::/16"], &[], Ok("10.1.2.0/24"));
        check_v4(
            &[1, 2],
            &["10.1.3.0/24", "192.168.0.0/16"],
            &[],
            Ok("10.1.2.0/24"),
        );
        // The probe's verdict.
        check_v4(&[1, 2, 3, 4], &[], &["10.1.2.0/24"], Ok("10.3.4.0/24"));
        check_v4(&[1, 2], &[], &["10.1.2.0/24"], Err(NoFreeV4));
        // Too few bytes: no candidate; an odd byte is not half a candidate.
        check_v4(&[], &[], &[], Err(NoFreeV4));
        check_v4(&[7], &[], &[], Err(NoFreeV4));
    }

    #[test]
    fn at_most_a_hundred_tries() {
        let mut random = vec![1u8; V4_RANDOM_LEN];
        random.extend([9, 9]);
        check_v4(&random, &["10.1.1.0/24"], &[], Err(SubnetError::NoFreeV4));
        let mut probed = 0;
        let _ = choose_v4(&[5u8; 1000], &[], |_| {
            probed += 1;
            false
        });
        assert_eq!(probed, MAX_TRIES);
    }

    #[test]
    fn v6() {
        use SubnetError::NoFreeV6;
        check_v6(&[0, 1, 0, 2, 0xab, 0xcd], &[], Ok("fd42:1:2:abcd::/64"));
        check_v6(
            &[0, 1, 0, 2, 0xab, 0xcd, 1, 1, 1, 1, 1, 1],
            &["fd42:1::/32"],
            Ok("fd42:101:101:101::/64"),
        );
        check_v6(&[0, 1, 0, 2, 0xab, 0xcd], &["fd00::/8"], Err(NoFreeV6));
        check_v6(
            &[0, 1, 0, 2, 0xab, 0xcd],
            &["::/0", "10.0.0.0/8"],
            Ok("fd42:1:2:abcd::/64"),
        );
        check_v6(&[1, 2, 3, 4, 5], &[], Err(NoFreeV6));
    }

    #[test]
    fn candidates_skip_what_is_in_use() {
        let in_use = nets(&["10.1.1.0/24"]);
        let got: Vec<String> = candidates_v4(&[1, 1, 2, 2, 1, 1, 3, 3], &in_use)
            .map(|n| n.to_string())
            .collect();
        assert_eq!(got, ["10.2.2.0/24", "10.3.3.0/24"]);
    }
}
