//! rxd-network against the real kernel (root). Every scenario makes network namespaces of its
//! own (anonymous: held by a descriptor, gone with it, so a failing test leaves nothing), does
//! all its netlink work on a thread inside one, and first checks that thread is not in the
//! host's namespace. The last test runs every scenario between two snapshots of the host's
//! `ip -j link` and `ip -j addr` and requires them equal.

use ipnet::IpNet;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use rxd_core::network::config::IfName;
use rxd_core::network::mac::Mac;
use rxd_network::{
    iface_sysctl, in_netns, new_netns, set_iface_sysctl, AddrChanges, AddrScope, IfaceSysctl,
    Netlink, NetworkError, IFA_F_NODAD,
};
use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

fn name(s: &str) -> IfName {
    IfName::parse(s).unwrap()
}

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn netns_inode(path: &str) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// Runs `f` with a netlink socket inside `ns`, after making sure the thread really is outside
/// the host's namespace (the process's main thread never leaves it).
fn inside<T: Send>(ns: &OwnedFd, f: impl FnOnce(&mut Netlink) -> T + Send) -> T {
    let host = netns_inode("/proc/self/ns/net");
    in_netns(ns.as_fd(), || {
        assert_ne!(
            netns_inode("/proc/thread-self/ns/net"),
            host,
            "the netns thread is in the host's network namespace"
        );
        let mut nl = Netlink::open().unwrap();
        f(&mut nl)
    })
    .unwrap()
}

/// The host's view, read only: a socket opened on this (host) thread.
fn host_has_link(n: &IfName) -> bool {
    Netlink::open().unwrap().link_info(n).unwrap().is_some()
}

fn bridge_is_made_once_with_its_mtu_and_mac_and_up() {
    let ns = new_netns().unwrap();
    let br = name("rxdnl-br0");
    let (first, second, third, links) = inside(&ns, |nl| {
        let first = nl
            .ensure_bridge(&br, 1400, mac("00:16:3e:00:00:01"))
            .unwrap();
        let second = nl
            .ensure_bridge(&br, 1450, mac("00:16:3e:00:00:02"))
            .unwrap();
        let third = nl
            .ensure_bridge(&br, 1450, mac("00:16:3e:00:00:02"))
            .unwrap();
        (first, second, third, nl.list_links().unwrap())
    });
    assert!(first.created);
    assert!(first.link.is_bridge());
    assert_eq!(first.link.name, "rxdnl-br0");
    assert_eq!(first.link.mtu, 1400);
    assert_eq!(first.link.mac, Some(mac("00:16:3e:00:00:01")));
    assert!(first.link.up);

    assert!(!second.created, "an existing bridge is never recreated");
    assert_eq!(second.link.index, first.link.index);
    assert_eq!(second.link.mtu, 1450);
    assert_eq!(second.link.mac, Some(mac("00:16:3e:00:00:02")));
    assert!(second.link.up);
    assert_eq!(third.link, second.link);
    assert!(!third.created);

    let names: Vec<_> = links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["lo", "rxdnl-br0"]);
    assert!(links[0].loopback && links[0].kind.is_none());
    assert!(
        !host_has_link(&br),
        "the bridge leaked into the host's namespace"
    );
}

fn a_link_of_another_kind_is_never_taken_for_a_bridge() {
    let ns = new_netns().unwrap();
    let (err, before, after) = inside(&ns, |nl| {
        let before = nl
            .create_veth(
                &name("rxdnl-br1"),
                &name("rxdnl-p1"),
                mac("00:16:3e:00:00:11"),
                1500,
            )
            .unwrap();
        let err = nl
            .ensure_bridge(&name("rxdnl-br1"), 1500, mac("00:16:3e:00:00:12"))
            .unwrap_err();
        (err, before, nl.link_info(&name("rxdnl-br1")).unwrap())
    });
    assert!(
        matches!(&err, NetworkError::NotABridge { name, kind } if name == "rxdnl-br1" && kind == "veth"),
        "{err}"
    );
    assert_eq!(after, Some(before), "the veth was changed");
}

/// Address events from the kernel (`RTNLGRP_IPV4_IFADDR` = 5, `RTNLGRP_IPV6_IFADDR` = 9) for
/// the calling thread's namespace: every add and removal, in order.
struct AddrEvents(Socket);

impl AddrEvents {
    fn subscribe() -> AddrEvents {
        let mut socket = Socket::new(NETLINK_ROUTE).unwrap();
        socket.bind_auto().unwrap();
        socket.add_membership(5).unwrap();
        socket.add_membership(9).unwrap();
        socket.set_non_blocking(true).unwrap();
        AddrEvents(socket)
    }

    /// (added?, address) for every event queued so far.
    fn drain(&self) -> Vec<(bool, IpNet)> {
        let mut out = Vec::new();
        loop {
            let datagram = match self.0.recv_from_full() {
                Ok((d, _)) => d,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
                Err(e) => panic!("address events: {e}"),
            };
            let mut offset = 0;
            while offset < datagram.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                    .unwrap();
                offset += (msg.header.length as usize + 3) & !3;
                let (added, m) = match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => (true, m),
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => (false, m),
                    _ => continue,
                };
                use netlink_packet_route::address::AddressAttribute as A;
                let ip = m.attributes.iter().find_map(|a| match a {
                    A::Local(ip) => Some(*ip),
                    _ => None,
                });
                let ip = ip.or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        A::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
                out.push((added, IpNet::new(ip.unwrap(), m.header.prefix_len).unwrap()));
            }
        }
    }
}

fn set(nets: &[&str]) -> BTreeSet<IpNet> {
    nets.iter().map(|s| net(s)).collect()
}

fn addresses_change_by_difference_only() {
    let ns = new_netns().unwrap();
    let br = name("rxdnl-br2");
    inside(&ns, |nl| {
        nl.ensure_bridge(&br, 1500, mac("00:16:3e:00:00:21"))
            .unwrap();
        let events = AddrEvents::subscribe();

        let globals = |nl: &mut Netlink| -> BTreeSet<IpNet> {
            nl.addresses(&br)
                .unwrap()
                .into_iter()
                .filter(|a| a.scope == AddrScope::Global)
                .map(|a| a.net)
                .collect()
        };
        let kernel_reports = |added: &[&str], removed: &[&str]| {
            // The kernel's own account: exactly these changes, nothing removed and re-added.
            // IPv6 announces an address from a work queue, so wait for the expected events,
            // then a little longer for any unexpected one.
            let (want_added, want_removed) = (set(added), set(removed));
            let mut seen_added = BTreeSet::new();
            let mut seen_removed = BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut quiet_until = None;
            loop {
                for (is_add, n) in events.drain() {
                    if is_add {
                        seen_added.insert(n);
                    } else {
                        seen_removed.insert(n);
                    }
                }
                let complete =
                    seen_added.is_superset(&want_added) && seen_removed.is_superset(&want_removed);
                let now = Instant::now();
                if complete && quiet_until.is_none() {
                    quiet_until = Some(now + Duration::from_millis(300));
                }
                if quiet_until.is_some_and(|t| now >= t) || now >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(seen_added, want_added, "kernel add events");
            assert_eq!(seen_removed, want_removed, "kernel remove events");
        };
        let check = |changes: AddrChanges, added: &[&str], removed: &[&str]| {
            let got_added: BTreeSet<_> = changes.added.iter().copied().collect();
            let got_removed: BTreeSet<_> = changes.removed.iter().copied().collect();
            assert_eq!(got_added, set(added), "reported additions");
            assert_eq!(got_removed, set(removed), "reported removals");
            kernel_reports(added, removed);
        };

        // Unrelated, not global: must survive every sync, even to an empty set.
        nl.add_address(&br, net("fe80::1234/64")).unwrap();
        kernel_reports(&["fe80::1234/64"], &[]);

        let first = ["10.10.0.1/24", "fd42:1:2:3::1/64", "192.0.2.1/24"];
        let changes = nl.sync_addresses(&br, &first.map(net)).unwrap();
        check(changes, &first, &[]);
        assert_eq!(globals(nl), set(&first));
        let v6 = nl
            .addresses(&br)
            .unwrap()
            .into_iter()
            .find(|a| a.net == net("fd42:1:2:3::1/64"))
            .unwrap();
        assert_ne!(v6.flags & IFA_F_NODAD, 0, "IPv6 added without nodad");
        assert_eq!(v6.flags & 0x40, 0, "IPv6 address tentative");
        let stamp = v6.created;

        let changes = nl.sync_addresses(&br, &first.map(net)).unwrap();
        check(changes, &[], &[]);

        let second = [
            "10.10.0.1/24",
            "fd42:1:2:3::1/64",
            "198.51.100.1/24",
            "fd42:9::1/64",
        ];
        let changes = nl.sync_addresses(&br, &second.map(net)).unwrap();
        check(
            changes,
            &["198.51.100.1/24", "fd42:9::1/64"],
            &["192.0.2.1/24"],
        );
        assert_eq!(globals(nl), set(&second));
        let kept = nl
            .addresses(&br)
            .unwrap()
            .into_iter()
            .find(|a| a.net == net("fd42:1:2:3::1/64"))
            .unwrap();
        assert_eq!(kept.created, stamp, "a kept address was re-created");

        // Same IP, other prefix: a different address.
        let third = ["10.10.0.1/16"];
        let changes = nl.sync_addresses(&br, &third.map(net)).unwrap();
        check(changes, &third, &second);
        assert_eq!(globals(nl), set(&third));

        let changes = nl.sync_addresses(&br, &[]).unwrap();
        check(changes, &[], &third);
        let left: Vec<_> = nl
            .addresses(&br)
            .unwrap()
            .into_iter()
            .map(|a| (a.net, a.scope))
            .collect();
        assert!(
            left.contains(&(net("fe80::1234/64"), AddrScope::Link)),
            "the link-local address went: {left:?}"
        );
        assert!(
            left.iter().all(|(_, s)| *s != AddrScope::Global),
            "{left:?}"
        );
    });
}

fn ip_json_in_this_netns(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn veth_pair_joins_the_bridge_and_its_peer_moves_to_another_namespace() {
    let a = new_netns().unwrap();
    let b = new_netns().unwrap();
    let (br, host, peer) = (name("rxdnl-br3"), name("rxdnl-h3"), name("rxdnl-p3"));
    let peer_mac = mac("00:16:3e:00:00:31");

    // In b, a link already named as the peer's target name `taken`.
    inside(&b, |nl| {
        nl.create_veth(
            &name("taken"),
            &name("taken-p"),
            mac("00:16:3e:00:00:32"),
            1500,
        )
        .unwrap();
    });

    let (bridge, host_end, details) = inside(&a, |nl| {
        let bridge = nl
            .ensure_bridge(&br, 1400, mac("00:16:3e:00:00:30"))
            .unwrap()
            .link;
        let created = nl.create_veth(&host, &peer, peer_mac, 1400).unwrap();
        assert_eq!(created.kind.as_deref(), Some("veth"));
        assert!(!created.up);
        nl.set_master(&host, &br).unwrap();
        nl.set_up(&host).unwrap();
        nl.set_port_isolated(&host, true).unwrap();
        let host_end = nl.link_info(&host).unwrap().unwrap();
        let details = ip_json_in_this_netns(&["-j", "-d", "link", "show", "rxdnl-h3"]);
        let p = nl.link_info(&peer).unwrap().unwrap();
        assert_eq!((p.mac, p.mtu), (Some(peer_mac), 1400));

        // The move is atomic: a name taken in the target leaves the link where it was.
        let err = nl
            .move_to_netns(&peer, b.as_fd(), &name("taken"))
            .unwrap_err();
        assert_eq!(err.errno(), Some(17), "{err}");
        assert!(nl.link_info(&peer).unwrap().is_some());

        nl.move_to_netns(&peer, b.as_fd(), &name("eth0")).unwrap();
        assert_eq!(nl.link_info(&peer).unwrap(), None, "the peer is still here");
        assert_eq!(nl.link_info(&name("eth0")).unwrap(), None);
        (bridge, host_end, details)
    });
    assert_eq!(host_end.master, Some(bridge.index));
    assert!(host_end.up);
    assert_eq!(host_end.mtu, 1400);
    assert_eq!(
        details[0]["linkinfo"]["info_slave_kind"], "bridge",
        "{details}"
    );
    assert_eq!(
        details[0]["linkinfo"]["info_slave_data"]["isolated"], true,
        "{details}"
    );

    let moved = inside(&b, |nl| nl.link_info(&name("eth0")).unwrap());
    let moved = moved.expect("eth0 in the second namespace");
    assert_eq!(moved.mac, Some(peer_mac));
    assert_eq!(moved.mtu, 1400);
    assert!(!host_has_link(&peer) && !host_has_link(&host) && !host_has_link(&br));

    // Deleting the host end takes the moved peer with it; deleting again is no error.
    inside(&a, |nl| {
        assert!(nl.delete_link(&host).unwrap());
        assert!(!nl.delete_link(&host).unwrap());
        assert!(nl.delete_link(&br).unwrap());
        let names: Vec<_> = nl
            .list_links()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["lo"]);
    });
    let left = inside(&b, |nl| nl.link_info(&name("eth0")).unwrap());
    assert_eq!(left, None, "the peer outlived its host end");
}

fn sysctls_are_set_in_the_namespace_not_the_host() {
    let ns = new_netns().unwrap();
    let br = name("rxdnl-br4");
    let keys = [
        (IfaceSysctl::Ipv6DisableIpv6, 1),
        (IfaceSysctl::Ipv6Autoconf, 0),
        (IfaceSysctl::Ipv6AcceptDad, 0),
        (IfaceSysctl::Ipv6AcceptRa, 0),
        (IfaceSysctl::Ipv4Forwarding, 1),
    ];
    let read = inside(&ns, |nl| {
        nl.ensure_bridge(&br, 1500, mac("00:16:3e:00:00:41"))
            .unwrap();
        let mut read = Vec::new();
        for (key, value) in keys {
            set_iface_sysctl(&br, key, value).unwrap();
            let path = key.path(&br).unwrap();
            let raw = std::fs::read_to_string(&path).unwrap();
            read.push((key, iface_sysctl(&br, key).unwrap(), raw.trim().to_owned()));
        }
        read
    });
    for ((key, value), (k, got, raw)) in keys.iter().zip(read) {
        assert_eq!((*key, i64::from(*value)), (k, got));
        assert_eq!(raw, value.to_string());
    }
    // The host has no such interface, so no such sysctl either.
    let err = iface_sysctl(&br, IfaceSysctl::Ipv4Forwarding).unwrap_err();
    assert_eq!(err.errno(), Some(2), "{err}");
    assert_eq!(
        IfaceSysctl::Ipv6AcceptDad
            .path(&name("a.b"))
            .unwrap()
            .to_str(),
        Some("/proc/sys/net/ipv6/conf/a.b/accept_dad")
    );
}

fn delete_link_is_idempotent() {
    let ns = new_netns().unwrap();
    inside(&ns, |nl| {
        let br = name("rxdnl-br5");
        assert!(!nl.delete_link(&br).unwrap());
        let made = nl
            .ensure_bridge(&br, 1500, mac("00:16:3e:00:00:51"))
            .unwrap();
        assert!(nl.delete_link(made.link.index).unwrap());
        assert!(!nl.delete_link(&br).unwrap());
        assert_eq!(nl.link_info(&br).unwrap(), None);
        let err = nl.set_up(&br).unwrap_err();
        assert!(matches!(err, NetworkError::NoSuchLink { .. }), "{err}");
    });
}

const SCENARIOS: &[(&str, fn())] = &[
    (
        "bridge_is_made_once_with_its_mtu_and_mac_and_up",
        bridge_is_made_once_with_its_mtu_and_mac_and_up,
    ),
    (
        "a_link_of_another_kind_is_never_taken_for_a_bridge",
        a_link_of_another_kind_is_never_taken_for_a_bridge,
    ),
    (
        "addresses_change_by_difference_only",
        addresses_change_by_difference_only,
    ),
    (
        "veth_pair_joins_the_bridge_and_its_peer_moves_to_another_namespace",
        veth_pair_joins_the_bridge_and_its_peer_moves_to_another_namespace,
    ),
    (
        "sysctls_are_set_in_the_namespace_not_the_host",
        sysctls_are_set_in_the_namespace_not_the_host,
    ),
    ("delete_link_is_idempotent", delete_link_is_idempotent),
];

fn run(test: &str) {
    if !rxd_testkit::require_root(test) || !rxd_testkit::require_tool("ip", "iproute2", test) {
        return;
    }
    let (_, scenario) = SCENARIOS.iter().find(|(n, _)| *n == test).unwrap();
    scenario();
}

#[test]
fn bridge_is_made_once() {
    run("bridge_is_made_once_with_its_mtu_and_mac_and_up");
}

#[test]
fn non_bridge_refused() {
    run("a_link_of_another_kind_is_never_taken_for_a_bridge");
}

#[test]
fn addresses_by_difference() {
    run("addresses_change_by_difference_only");
}

#[test]
fn veth_and_netns_move() {
    run("veth_pair_joins_the_bridge_and_its_peer_moves_to_another_namespace");
}

#[test]
fn sysctls_in_the_namespace() {
    run("sysctls_are_set_in_the_namespace_not_the_host");
}

#[test]
fn delete_idempotent() {
    run("delete_link_is_idempotent");
}

/// The host's links and addresses as `ip -j` prints them, minus what changes by itself
/// (address lifetimes count down).
fn host_snapshot() -> (serde_json::Value, serde_json::Value) {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("valid_life_time");
                map.remove("preferred_life_time");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut link = ip_json_in_this_netns(&["-j", "link"]);
    let mut addr = ip_json_in_this_netns(&["-j", "addr"]);
    strip(&mut link);
    strip(&mut addr);
    (link, addr)
}

#[test]
fn host_network_unchanged_by_the_suite() {
    if !rxd_testkit::require_root("host_network_unchanged_by_the_suite")
        || !rxd_testkit::require_tool("ip", "iproute2", "host_network_unchanged_by_the_suite")
    {
        return;
    }
    let before = host_snapshot();
    for (_, scenario) in SCENARIOS {
        scenario();
    }
    let after = host_snapshot();
    assert_eq!(before.0, after.0, "the host's links changed");
    assert_eq!(before.1, after.1, "the host's addresses changed");
}
