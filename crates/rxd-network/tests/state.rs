//! Interface state read from the real kernel (root), as `GET /1.0/instances/NAME/state` and
//! `GET /1.0/networks/NAME/state` will report it. Every scenario makes network namespaces of
//! its own (anonymous, gone with their descriptors): one stands for the host, another for a
//! container. All netlink work runs on threads inside them, after checking the thread is not in
//! the host's namespace; the last test runs every scenario between two snapshots of the host's
//! `ip -j link` and `ip -j addr` and requires them equal.

use ipnet::IpNet;
use rxd_core::network::config::IfName;
use rxd_core::network::mac::Mac;
use rxd_network::{
    in_netns, instance_interfaces, new_netns, scope_of, IfaceState, InstanceIface, LinkType,
    Netlink, NetworkError, Scope, MAX_LINKS,
};
use std::ffi::OsStr;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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

/// `ip` run from the calling thread, so inside its namespace.
fn ip(args: &[&OsStr]) -> Vec<u8> {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    out.stdout
}

fn ip_str(args: &[&str]) -> Vec<u8> {
    ip(&args.iter().map(OsStr::new).collect::<Vec<_>>())
}

fn ip_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&ip_str(args)).unwrap()
}

fn find<'a>(ifaces: &'a [InstanceIface], n: &str) -> &'a InstanceIface {
    ifaces
        .iter()
        .find(|i| i.state.name == n)
        .unwrap_or_else(|| panic!("no {n} in {ifaces:?}"))
}

/// (address, scope) pairs of an interface, as LXD lists them.
fn addresses(state: &IfaceState) -> Vec<(IpNet, Scope)> {
    state
        .addresses
        .iter()
        .map(|a| (*a, scope_of(a.addr())))
        .collect()
}

fn instance_interfaces_are_read_inside_the_container() {
    let host = new_netns().unwrap();
    let ct = new_netns().unwrap();
    let (br, h0, p0) = (name("rxdst-br0"), name("rxdst-h0"), name("rxdst-p0"));
    let eth0_mac = mac("00:16:3e:00:00:a1");

    let (h0_index, receiver) = inside(&host, |nl| {
        nl.ensure_bridge(&br, 1500, mac("00:16:3e:00:00:a0"))
            .unwrap();
        nl.add_address(&br, net("10.77.0.1/24")).unwrap();
        let host_end = nl.create_veth(&h0, &p0, eth0_mac, 1450).unwrap();
        nl.set_master(&h0, &br).unwrap();
        nl.set_up(&h0).unwrap();
        nl.move_to_netns(&p0, ct.as_fd(), &name("eth0")).unwrap();
        // A socket belongs to the namespace it was made in, whichever thread reads it later.
        let receiver = UdpSocket::bind("10.77.0.1:0").unwrap();
        (host_end.index, receiver)
    });

    let (sender, inner_peer) = inside(&ct, |nl| {
        nl.set_up(&name("lo")).unwrap();
        nl.set_up(&name("eth0")).unwrap();
        for a in ["10.77.0.2/24", "fd77::2/64", "169.254.7.7/16"] {
            nl.add_address(&name("eth0"), net(a)).unwrap();
        }
        // A veth pair made inside the container: its IFLA_LINK is an index in the container,
        // which the host also has for some link of its own.
        nl.create_veth(&name("ct-a"), &name("ct-b"), mac("00:16:3e:00:00:a2"), 1500)
            .unwrap();
        let inner_peer = nl.link_info(&name("ct-b")).unwrap().unwrap().index;
        (UdpSocket::bind("10.77.0.2:0").unwrap(), inner_peer)
    });
    let host_has_inner_peer_index = inside(&host, |nl| nl.link_name(inner_peer).unwrap());
    assert!(
        host_has_inner_peer_index.is_some(),
        "the host namespace has no link #{inner_peer}: the spoofing check below proves nothing"
    );

    // Traffic across the veth, so its counters move: datagrams to the host's bridge address,
    // sent until one arrives (the first waits for ARP).
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let to: SocketAddr = receiver.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    loop {
        sender.send_to(b"rxd state", to).unwrap();
        if let Ok((n, from)) = receiver.recv_from(&mut buf) {
            assert_eq!(
                (&buf[..n], from),
                (&b"rxd state"[..], sender.local_addr().unwrap())
            );
            break;
        }
        assert!(Instant::now() < deadline, "no datagram crossed the veth");
    }

    // Read from a thread in the stand-in host, as the daemon will from the real one.
    let ifaces = inside(&host, |_| instance_interfaces(ct.as_fd()).unwrap());
    let names: Vec<_> = ifaces.iter().map(|i| i.state.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for n in ["lo", "eth0", "ct-a", "ct-b"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }

    let lo = find(&ifaces, "lo");
    assert_eq!(
        LinkType::of_instance_iface(lo.state.flags),
        LinkType::Loopback
    );
    assert_eq!(lo.state.flags.state(), "up");
    assert_eq!(lo.state.mtu, 65536);
    assert_eq!(lo.state.hwaddr_string(), "");
    assert_eq!((lo.state.peer, &lo.host_name), (None, &None));
    let lo_addrs = addresses(&lo.state);
    assert!(
        lo_addrs.contains(&(net("127.0.0.1/8"), Scope::Local)),
        "{lo_addrs:?}"
    );
    assert!(
        lo_addrs.contains(&(net("::1/128"), Scope::Local)),
        "{lo_addrs:?}"
    );

    let eth0 = find(&ifaces, "eth0");
    assert_eq!(eth0.state.kind.as_deref(), Some("veth"));
    assert_eq!(
        LinkType::of_instance_iface(eth0.state.flags),
        LinkType::Broadcast
    );
    assert_eq!(eth0.state.flags.state(), "up");
    assert_eq!(eth0.state.mtu, 1450);
    assert_eq!(eth0.state.mac(), Some(eth0_mac));
    assert_eq!(eth0.state.hwaddr_string(), "00:16:3e:00:00:a1");
    assert_eq!(eth0.state.peer.map(|p| p.ifindex), Some(h0_index));
    assert!(eth0.state.peer.and_then(|p| p.netnsid).is_some());
    assert_eq!(eth0.host_name.as_deref(), Some("rxdst-h0"));
    let eth0_addrs = addresses(&eth0.state);
    for (a, scope) in [
        ("10.77.0.2/24", Scope::Global),
        ("fd77::2/64", Scope::Global),
        ("169.254.7.7/16", Scope::Link),
        // The kernel's own, from the MAC (EUI-64).
        ("fe80::216:3eff:fe00:a1/64", Scope::Link),
    ] {
        assert!(eth0_addrs.contains(&(net(a), scope)), "{a}: {eth0_addrs:?}");
    }
    let c = eth0.state.counters;
    assert!(c.packets_sent > 0 && c.bytes_sent > 0, "{c:?}");
    assert!(c.packets_received > 0 && c.bytes_received > 0, "{c:?}");
    assert_eq!((c.errors_sent, c.errors_received), (0, 0), "{c:?}");

    for n in ["ct-a", "ct-b"] {
        let end = find(&ifaces, n);
        assert_eq!(end.state.flags.state(), "down");
        let peer = end.state.peer.expect("a veth has a peer");
        assert_eq!(peer.netnsid, None, "{n}: the peer is in the container");
        assert_eq!(end.host_name, None, "{n} named a host interface");
    }
    assert_eq!(
        find(&ifaces, "ct-a").state.peer.unwrap().ifindex,
        inner_peer
    );
}

fn bridge_state_lists_its_ports_and_attributes() {
    let ns = new_netns().unwrap();
    let br = name("rxdst-br1");
    inside(&ns, |nl| {
        nl.ensure_bridge(&br, 1400, mac("00:16:3e:00:00:b0"))
            .unwrap();
        nl.add_address(&br, net("10.78.0.1/24")).unwrap();
        // Ports made in the opposite order to their names: the list is sorted by name.
        for (port, peer, m) in [
            ("rxdst-pb", "rxdst-qb", "00:16:3e:00:00:b2"),
            ("rxdst-pa", "rxdst-qa", "00:16:3e:00:00:b1"),
        ] {
            nl.create_veth(&name(port), &name(peer), mac(m), 1400)
                .unwrap();
            nl.set_master(&name(port), &br).unwrap();
        }

        let state = nl.link_state(&br).unwrap();
        let iface = &state.iface;
        assert_eq!(iface.kind.as_deref(), Some("bridge"));
        assert_eq!(LinkType::of_network(iface.flags), LinkType::Broadcast);
        assert_eq!(iface.flags.state(), "up");
        assert_eq!(iface.mtu, 1400);
        assert_eq!(iface.mac(), Some(mac("00:16:3e:00:00:b0")));
        assert!(iface.addresses.contains(&net("10.78.0.1/24")));
        let bridge = state.bridge.expect("a bridge's state has its bridge part");
        assert_eq!(
            bridge.id.map(|id| id.to_string()).as_deref(),
            Some("8000.00163e0000b0")
        );
        // Without CONFIG_BRIDGE_VLAN_FILTERING the kernel sends no default pvid and refuses
        // VLAN filtering; LXD then reads no sysfs file and reports 0 and false, as we do.
        let shown = ip_json(&["-j", "-d", "link", "show", "rxdst-br1"]);
        let vlans = shown[0]["linkinfo"]["info_data"]
            .get("vlan_default_pvid")
            .is_some();
        assert!(!bridge.stp);
        assert_eq!(bridge.forward_delay, 1500, "the kernel's 15 s");
        assert_eq!(bridge.vlan_default, if vlans { 1 } else { 0 });
        assert!(!bridge.vlan_filtering);
        assert_eq!(bridge.ports, ["rxdst-pa", "rxdst-pb"]);

        let mut set = vec![
            "link",
            "set",
            "dev",
            "rxdst-br1",
            "type",
            "bridge",
            "stp_state",
            "1",
            "forward_delay",
            "400",
        ];
        if vlans {
            set.extend(["vlan_filtering", "1", "vlan_default_pvid", "7"]);
        }
        ip_str(&set);
        nl.clear_master(&name("rxdst-pb")).unwrap();
        let bridge = nl.link_state(&br).unwrap().bridge.unwrap();
        assert!(bridge.stp, "kernel STP (a namespace other than the host's)");
        assert_eq!(bridge.forward_delay, 400);
        assert_eq!(bridge.vlan_default, if vlans { 7 } else { 0 });
        assert_eq!(bridge.vlan_filtering, vlans);
        assert_eq!(bridge.ports, ["rxdst-pa"]);
        // The same values as iproute2 reads them.
        let shown = ip_json(&["-j", "-d", "link", "show", "rxdst-br1"]);
        let data = &shown[0]["linkinfo"]["info_data"];
        assert_eq!(data["stp_state"], 1, "{data}");
        assert_eq!(data["forward_delay"], 400, "{data}");
        assert_eq!(data["vlan_filtering"], u8::from(vlans), "{data}");
        if vlans {
            assert_eq!(data["vlan_default_pvid"], 7, "{data}");
        }

        // A port is no bridge; a missing link is an error naming it.
        let port = nl.link_state(&name("rxdst-pa")).unwrap();
        assert_eq!(port.bridge, None);
        assert_eq!(port.iface.master, Some(iface.index));
        let err = nl.link_state(&name("rxdst-none")).unwrap_err();
        assert!(
            matches!(&err, NetworkError::NoSuchLink { link } if link == "rxdst-none"),
            "{err}"
        );
    });
}

fn a_link_named_in_non_utf8_bytes_is_left_out() {
    let ns = new_netns().unwrap();
    let names = inside(&ns, |nl| {
        let bad = OsStr::from_bytes(b"rxdst-\xff");
        let s = OsStr::new;
        ip(&[
            s("link"),
            s("add"),
            bad,
            s("type"),
            s("veth"),
            s("peer"),
            s("name"),
            s("rxdst-ok"),
        ]);
        // An IPv4 address carries its link's name as a label: that message is undecodable too.
        ip(&[s("addr"), s("add"), s("10.79.0.1/24"), s("dev"), bad]);
        nl.add_address(&name("rxdst-ok"), net("10.79.1.1/24"))
            .unwrap();
        let ifaces = nl.interfaces().unwrap();
        let ok = ifaces.iter().find(|i| i.name == "rxdst-ok").unwrap();
        assert_eq!(ok.addresses, [net("10.79.1.1/24")]);
        // Its peer is the link left out, in the same namespace.
        assert_eq!(ok.peer.map(|p| p.netnsid), Some(None));
        ifaces.into_iter().map(|i| i.name).collect::<Vec<_>>()
    });
    assert_eq!(names, ["lo", "rxdst-ok"]);
}

fn more_links_than_the_bound_are_refused_and_the_socket_still_works() {
    let ns = new_netns().unwrap();
    inside(&ns, |nl| {
        // lo and MAX_LINKS veth ends: one more than the bound.
        for i in 0..MAX_LINKS / 2 {
            nl.create_veth(
                &name(&format!("rxdst-x{i}")),
                &name(&format!("rxdst-y{i}")),
                mac("00:16:3e:00:00:c0"),
                1500,
            )
            .unwrap();
        }
        let err = nl.interfaces().unwrap_err();
        assert!(
            matches!(&err, NetworkError::Reply { detail, .. } if detail.contains("4096")),
            "{err}"
        );
        // The rest of the dump cut short is still queued on the socket; the next requests skip
        // it and read their own answers.
        assert_eq!(nl.link_name(1).unwrap().as_deref(), Some("lo"));
        assert_eq!(nl.list_links().unwrap().len(), MAX_LINKS + 1);
    });
}

const SCENARIOS: &[(&str, fn())] = &[
    (
        "instance_interfaces_are_read_inside_the_container",
        instance_interfaces_are_read_inside_the_container,
    ),
    (
        "bridge_state_lists_its_ports_and_attributes",
        bridge_state_lists_its_ports_and_attributes,
    ),
    (
        "a_link_named_in_non_utf8_bytes_is_left_out",
        a_link_named_in_non_utf8_bytes_is_left_out,
    ),
    (
        "more_links_than_the_bound_are_refused_and_the_socket_still_works",
        more_links_than_the_bound_are_refused_and_the_socket_still_works,
    ),
];

fn run(test: &str) {
    if !rxd_testkit::require_root(test) || !rxd_testkit::require_tool("ip", "iproute2", test) {
        return;
    }
    let (_, scenario) = SCENARIOS.iter().find(|(n, _)| *n == test).unwrap();
    scenario();
}

#[test]
fn instance_ifaces() {
    run("instance_interfaces_are_read_inside_the_container");
}

#[test]
fn bridge_state() {
    run("bridge_state_lists_its_ports_and_attributes");
}

#[test]
fn non_utf8_link_left_out() {
    run("a_link_named_in_non_utf8_bytes_is_left_out");
}

#[test]
fn link_bound() {
    run("more_links_than_the_bound_are_refused_and_the_socket_still_works");
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
    let mut link = ip_json(&["-j", "link"]);
    let mut addr = ip_json(&["-j", "addr"]);
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
