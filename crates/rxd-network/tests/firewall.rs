//! rxd-network's firewall against Debian's real `nft` (root), NAT proxies' DNAT included. Every
//! scenario makes an anonymous network namespace of its own (gone with its descriptor, tables
//! and all), runs `nft` only from a thread inside it, and checks that thread is not in the
//! host's namespace. The last test runs every scenario between two snapshots of the host's
//! network (its `nft -j list ruleset` included, read only) and requires them equal.

use rxd_core::name::InstanceKey;
use rxd_core::network::config::{BridgeConfig, Config, IfName, NetworkName};
use rxd_core::network::nft::{self, BridgeRules, NicRules, ProxyNat, Ruleset};
use rxd_network::firewall::{self, FirewallError, FirewallWarning, Hook, Owner, NFT};
use rxd_network::{in_netns, new_netns, Netlink};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

fn netns_inode(path: &str) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// `nft ARGS` (stdin `input`) inside `ns`, from a thread checked to be outside the host's
/// namespace; the test's own view, independent of the module under test.
fn nft_in(ns: &OwnedFd, args: &[&str], input: &str) -> (bool, String, String) {
    let host = netns_inode("/proc/self/ns/net");
    in_netns(ns.as_fd(), || {
        assert_ne!(
            netns_inode("/proc/thread-self/ns/net"),
            host,
            "the nft thread is in the host's network namespace"
        );
        let mut child = Command::new(NFT)
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    })
    .unwrap()
}

fn nft_ok(ns: &OwnedFd, args: &[&str]) -> String {
    let (ok, out, err) = nft_in(ns, args, "");
    assert!(ok, "nft {args:?}: {err}");
    out
}

/// What `nft -j list ruleset` shows inside `ns`: tables and chains as (family, table[, chain]).
struct Listed {
    tables: BTreeSet<(String, String)>,
    chains: BTreeSet<(String, String, String)>,
}

fn listed(ns: &OwnedFd) -> Listed {
    let out = nft_ok(ns, &["-j", "list", "ruleset"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut tables = BTreeSet::new();
    let mut chains = BTreeSet::new();
    for item in v["nftables"].as_array().unwrap() {
        let s = |o: &Value, k: &str| o[k].as_str().unwrap().to_owned();
        if let Some(t) = item.get("table") {
            tables.insert((s(t, "family"), s(t, "name")));
        }
        if let Some(c) = item.get("chain") {
            chains.insert((s(c, "family"), s(c, "table"), s(c, "name")));
        }
    }
    Listed { tables, chains }
}

fn rxd_tables() -> BTreeSet<(String, String)> {
    [("bridge", "rxd"), ("inet", "rxd")]
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect()
}

/// The chains a ruleset declares, as (family, table, chain).
fn declared(ruleset: &Value) -> BTreeSet<(String, String, String)> {
    ruleset["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            let c = c["add"].get("chain")?;
            Some((
                c["family"].as_str()?.to_owned(),
                c["table"].as_str()?.to_owned(),
                c["name"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn chain_names(chains: &BTreeSet<(String, String, String)>) -> BTreeSet<&str> {
    chains.iter().map(|(_, _, n)| n.as_str()).collect()
}

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

fn nic(instance: &str, host_name: &str, v4: &str, v6: &str) -> NicRules {
    NicRules {
        instance: InstanceKey::new("default", instance),
        device: "eth0".into(),
        host_name: IfName::parse(host_name).unwrap(),
        mac: "00:16:3e:12:34:56".parse().unwrap(),
        mac_filter: true,
        ipv4: Some(vec![v4.parse().unwrap()]),
        ipv6: Some(vec![v6.parse().unwrap()]),
        egress_limit: None,
    }
}

/// A bridge with NAT, DHCP and the firewall on both families, and one filtered NIC. `iifname`
/// and `oifname` match by name, so neither interface has to exist.
fn first() -> Value {
    nft::ruleset(&Ruleset {
        bridges: vec![bridge(
            "br0",
            &[
                ("ipv4.address", "10.0.3.1/24"),
                ("ipv4.nat", "true"),
                ("ipv6.address", "fd42:0:0:3::1/64"),
                ("ipv6.nat", "true"),
            ],
        )],
        nics: vec![nic(
            "c1",
            "veth1a2b3c4d",
            "10.0.3.5/32",
            "fd42:0:0:3::5/128",
        )],
        proxies: vec![],
    })
}

/// Another bridge and NIC, so nothing of `first` survives a replace by it.
fn second() -> Value {
    nft::ruleset(&Ruleset {
        bridges: vec![bridge(
            "br1",
            &[("ipv4.address", "10.0.4.1/24"), ("ipv4.nat", "true")],
        )],
        nics: vec![nic(
            "c2",
            "veth5e6f7a8b",
            "10.0.4.7/32",
            "fd42:0:0:4::7/128",
        )],
        proxies: vec![],
    })
}

fn apply_in(ns: &OwnedFd, ruleset: &Value) -> Result<(), FirewallError> {
    firewall::apply(ruleset, Some(ns.as_fd()))
}

fn apply_makes_exactly_rxds_tables_and_chains() {
    let ns = new_netns().unwrap();
    let r = first();
    apply_in(&ns, &r).unwrap();
    let l = listed(&ns);
    assert_eq!(l.tables, rxd_tables());
    assert_eq!(l.chains, declared(&r));
    for name in [
        "pstrt.br0",
        "fwd.br0",
        "in.br0",
        "out.br0",
        "in.c1.eth0",
        "fwd.c1.eth0",
    ] {
        assert!(chain_names(&l.chains).contains(name), "{name} missing");
    }
    // The NIC's filters are in the bridge family, the bridge's chains in inet.
    assert!(l
        .chains
        .contains(&("bridge".into(), "rxd".into(), "in.c1.eth0".into())));
    assert!(l
        .chains
        .contains(&("inet".into(), "rxd".into(), "fwd.br0".into())));
    // Applying the same ruleset again yields the same tables (no duplicated rules).
    let once = nft_ok(&ns, &["list", "ruleset"]);
    apply_in(&ns, &r).unwrap();
    assert_eq!(nft_ok(&ns, &["list", "ruleset"]), once);
}

fn apply_again_replaces_the_whole_ruleset() {
    let ns = new_netns().unwrap();
    apply_in(&ns, &first()).unwrap();
    let r = second();
    apply_in(&ns, &r).unwrap();
    let l = listed(&ns);
    assert_eq!(l.tables, rxd_tables());
    assert_eq!(
        l.chains,
        declared(&r),
        "old chains left or new ones missing"
    );
    let names = chain_names(&l.chains);
    assert!(names.contains("fwd.br1") && names.contains("in.c2.eth0"));
    assert!(!names.contains("fwd.br0") && !names.contains("in.c1.eth0"));
    // And back to an empty ruleset: both tables stay, empty.
    apply_in(&ns, &nft::ruleset(&Ruleset::default())).unwrap();
    let l = listed(&ns);
    assert_eq!(l.tables, rxd_tables());
    assert!(l.chains.is_empty(), "{:?}", l.chains);
}

/// A table of someone else's (an administrator's `inet other` and Docker's iptables-nft shape),
/// each with a forward base chain that drops by default.
const FOREIGN: &str = "
table inet other {
    chain forward_drop {
        type filter hook forward priority 0; policy drop;
        iifname \"eth9\" counter accept
    }
    chain input_ok {
        type filter hook input priority 0; policy accept;
    }
}
table ip filter {
    chain FORWARD {
        type filter hook forward priority 0; policy drop;
        counter jump DOCKER-USER
    }
    chain DOCKER-USER {
        return
    }
}
";

fn foreign(ns: &OwnedFd) -> String {
    let a = nft_ok(ns, &["-j", "list", "table", "inet", "other"]);
    let b = nft_ok(ns, &["-j", "list", "table", "ip", "filter"]);
    format!("{a}\n{b}")
}

fn other_tables_are_left_alone_and_reported() {
    let ns = new_netns().unwrap();
    let (ok, _, err) = nft_in(&ns, &["-f", "-"], FOREIGN);
    assert!(ok, "{err}");
    let before = foreign(&ns);

    // Nothing of rxd's yet: only the two foreign forward drops are reported.
    let want = vec![
        FirewallWarning::DropPolicy {
            family: "inet".into(),
            table: "other".into(),
            chain: "forward_drop".into(),
            hook: Hook::Forward,
            owner: Owner::Other,
        },
        FirewallWarning::DropPolicy {
            family: "ip".into(),
            table: "filter".into(),
            chain: "FORWARD".into(),
            hook: Hook::Forward,
            owner: Owner::Docker,
        },
    ];
    let got = firewall::inspect(Some(ns.as_fd())).unwrap();
    assert_eq!(got, want);
    assert!(got[1]
        .message("rxdbr0")
        .contains("iptables -I DOCKER-USER -i rxdbr0 -j ACCEPT"));

    apply_in(&ns, &first()).unwrap();
    apply_in(&ns, &second()).unwrap();
    assert_eq!(foreign(&ns), before, "apply changed another table");
    // rxd's own chains (policy accept) add nothing; inspecting changes nothing.
    assert_eq!(firewall::inspect(Some(ns.as_fd())).unwrap(), want);
    assert_eq!(foreign(&ns), before, "inspect changed another table");

    firewall::remove(Some(ns.as_fd())).unwrap();
    assert_eq!(foreign(&ns), before, "remove changed another table");
    let l = listed(&ns);
    let others: BTreeSet<_> = [("inet", "other"), ("ip", "filter")]
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(l.tables, others, "remove left rxd's tables or took others");
}

fn remove_deletes_only_rxds_tables_and_tolerates_their_absence() {
    let ns = new_netns().unwrap();
    // Absent tables: not an error.
    firewall::remove(Some(ns.as_fd())).unwrap();
    assert!(listed(&ns).tables.is_empty());
    // A table named rxd in a family rxd does not use is not rxd's.
    nft_ok(&ns, &["add", "table", "ip", "rxd"]);
    apply_in(&ns, &first()).unwrap();
    firewall::remove(Some(ns.as_fd())).unwrap();
    let l = listed(&ns);
    assert_eq!(
        l.tables,
        BTreeSet::from([("ip".to_owned(), "rxd".to_owned())])
    );
    firewall::remove(Some(ns.as_fd())).unwrap();
}

fn a_refused_ruleset_leaves_the_previous_one() {
    let ns = new_netns().unwrap();
    let r = first();
    apply_in(&ns, &r).unwrap();
    let before = nft_ok(&ns, &["list", "ruleset"]);

    // Refused by the kernel half-way through the transaction: a rule of a chain that does
    // not exist, after the tables were deleted and redeclared.
    let mut bad = second();
    bad["nftables"]
        .as_array_mut()
        .unwrap()
        .push(json!({"add": {"rule": {
            "family": "inet", "table": "rxd", "chain": "no-such-chain", "expr": [{"accept": null}]
        }}}));
    let err = apply_in(&ns, &bad).unwrap_err();
    match &err {
        FirewallError::Refused { stderr, .. } => {
            assert!(
                !stderr.is_empty() && stderr.len() <= firewall::MAX_STDERR,
                "{err}"
            );
        }
        other => panic!("not a refusal: {other}"),
    }
    assert_eq!(nft_ok(&ns, &["list", "ruleset"]), before);

    // Refused by nft's parser: an object it does not know.
    let mut bad = second();
    bad["nftables"]
        .as_array_mut()
        .unwrap()
        .push(json!({"add": {"bogus": {}}}));
    let err = apply_in(&ns, &bad).unwrap_err();
    assert!(matches!(err, FirewallError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("nft"), "{err}");
    assert_eq!(nft_ok(&ns, &["list", "ruleset"]), before);
    assert_eq!(listed(&ns).chains, declared(&r));
}

/// A `nat=true` proxy of `instance`'s device `device` (default project), validated as the
/// daemon validates it, to `target`.
fn proxy(instance: &str, device: &str, listen: &str, connect: &str, target: &str) -> ProxyNat {
    let d = [
        ("type", "proxy"),
        ("listen", listen),
        ("connect", connect),
        ("nat", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    ProxyNat::new(
        InstanceKey::new("default", instance),
        device,
        IfName::parse("veth1a2b3c4d").unwrap(),
        &rxd_core::proxy::validate(&d).unwrap(),
        target.parse().unwrap(),
    )
    .unwrap()
}

/// NAT proxies' chains as the kernel takes them (IPv4 and IPv6, tcp and udp, port ranges, a
/// name too long for the usual form, a bridge whose dotted name reads like a proxy's), and
/// their DNAT at work: in the namespace, a connection to the listen address from a local
/// process (the `out` chain) reaches a server on the target address.
fn proxy_nat_chains_apply_and_forward() {
    let ns = new_netns().unwrap();
    let r = nft::ruleset(&Ruleset {
        bridges: vec![bridge(
            "c1.web",
            &[("ipv4.address", "10.0.3.1/24"), ("ipv4.nat", "true")],
        )],
        nics: vec![],
        proxies: vec![
            proxy(
                "c1",
                "web",
                "tcp:198.51.100.2:8080",
                "tcp:10.0.3.5:80",
                "10.0.3.5",
            ),
            proxy(
                "c1",
                "dns",
                "udp:[2001:db8::2]:53,5300-5301",
                "udp:[::]:53,5300-5301",
                "fd42::5",
            ),
            proxy(
                &"c".repeat(63),
                &"/".repeat(63),
                "tcp:198.51.100.2:9000-9002",
                "tcp:10.0.3.5:80",
                "10.0.3.5",
            ),
        ],
    });
    apply_in(&ns, &r).unwrap();
    let l = listed(&ns);
    assert_eq!(l.chains, declared(&r));
    let names = chain_names(&l.chains);
    for name in [
        "prert.c1.web",
        "out.c1.web",
        "pstrt.c1.web",
        "pstrt.@c1.web",
        "out.@c1.web",
    ] {
        assert!(names.contains(name), "{name} missing: {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("prert.%veth1a2b3c4d.")),
        "{names:?}"
    );
    let text = nft_ok(&ns, &["list", "table", "inet", "rxd"]);
    for want in [
        "ip daddr 198.51.100.2 tcp dport 8080 dnat ip to 10.0.3.5:80",
        "ip6 daddr 2001:db8::2 udp dport 5300-5301 dnat ip6 to fd42::5",
        "ip6 daddr 2001:db8::2 udp dport 53 dnat ip6 to [fd42::5]:53",
        "ip saddr 10.0.3.5 ip daddr 10.0.3.5 tcp dport 80 masquerade",
        "ip daddr 198.51.100.2 tcp dport 9000-9002 dnat ip to 10.0.3.5:80",
        "type nat hook prerouting priority dstnat; policy accept;",
        "type nat hook output priority -100; policy accept;",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }

    let served = in_netns(ns.as_fd(), || {
        let mut nl = Netlink::open().unwrap();
        let lo = IfName::parse("lo").unwrap();
        nl.set_up(&lo).unwrap();
        nl.sync_addresses(
            &lo,
            &[
                "198.51.100.2/32".parse().unwrap(),
                "10.0.3.5/32".parse().unwrap(),
            ],
        )
        .unwrap();
        let server = std::net::TcpListener::bind("10.0.3.5:80").unwrap();
        let answer = std::thread::spawn(move || {
            let (mut conn, _) = server.accept().unwrap();
            conn.write_all(b"reached through dnat").unwrap();
        });
        let mut client = std::net::TcpStream::connect_timeout(
            &"198.51.100.2:8080".parse().unwrap(),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        answer.join().unwrap();
        // Nothing listens on the listen address itself: without the rules, a refusal.
        apply_in(&ns, &nft::ruleset(&Ruleset::default())).unwrap();
        let refused = std::net::TcpStream::connect_timeout(
            &"198.51.100.2:8080".parse().unwrap(),
            std::time::Duration::from_secs(5),
        );
        (got, refused.map_err(|e| e.kind()))
    })
    .unwrap();
    assert_eq!(served.0, "reached through dnat");
    assert_eq!(served.1.unwrap_err(), std::io::ErrorKind::ConnectionRefused);
}

const SCENARIOS: &[(&str, fn())] = &[
    ("apply", apply_makes_exactly_rxds_tables_and_chains),
    ("replace", apply_again_replaces_the_whole_ruleset),
    ("foreign", other_tables_are_left_alone_and_reported),
    (
        "remove",
        remove_deletes_only_rxds_tables_and_tolerates_their_absence,
    ),
    ("refused", a_refused_ruleset_leaves_the_previous_one),
    ("proxy_nat", proxy_nat_chains_apply_and_forward),
];

/// Root and Debian's `nft` at its fixed path; outside CI their absence skips, under `CI=true`
/// it fails.
fn can_run(test: &str) -> bool {
    if !rxd_testkit::require_root(test) {
        return false;
    }
    if std::path::Path::new(NFT).is_file() {
        return true;
    }
    let msg = format!("{test}: needs {NFT} (apt-get install -y nftables), skipping");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; under CI=true a skip is a failure");
    }
    eprintln!("SKIP {msg}");
    false
}

fn run(test: &str) {
    if !can_run(test) {
        return;
    }
    let (_, scenario) = SCENARIOS.iter().find(|(n, _)| *n == test).unwrap();
    scenario();
}

#[test]
fn apply_makes_rxds_tables() {
    run("apply");
}

#[test]
fn apply_replaces_atomically() {
    run("replace");
}

#[test]
fn foreign_tables_untouched_and_reported() {
    run("foreign");
}

#[test]
fn remove_only_rxds_tables() {
    run("remove");
}

#[test]
fn refused_ruleset_keeps_the_previous() {
    run("refused");
}

#[test]
fn proxy_nat_chains_forward() {
    run("proxy_nat");
}

#[test]
fn host_network_unchanged_by_the_suite() {
    let test = "host_network_unchanged_by_the_suite";
    if !can_run(test) || !rxd_testkit::require_tool("ip", "iproute2", test) {
        return;
    }
    // Read only: links, addresses, routes, `nft -j list ruleset`, forwarding sysctls.
    let before = rxd_testkit::netlab::HostSnapshot::take();
    for (_, scenario) in SCENARIOS {
        scenario();
    }
    before.assert_same(&rxd_testkit::netlab::HostSnapshot::take());
}
