//! Managed bridges end to end, with rxd in a network lab (its own network namespace, an uplink
//! to a pretend internet): two containers on a bridge get DHCP leases and SLAAC addresses,
//! reach each other by address and by name, reach the internet through NAT, are cut off when
//! they spoof, keep everything across an rxd restart; Debian's `lxc list` shows the addresses;
//! a network in use cannot be deleted; the host's own network is left as it was.

use rxd_client::Method;
use rxd_testkit::api::{ok, outcome};
use rxd_testkit::netlab::{NetLab, Ns, RXDT_V4, SERVER_V4};
use rxd_testkit::session::Session;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// The container's global IPv4 on eth0, once it has one (DHCP), within 30 s.
async fn ipv4(s: &Session, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = s.state(name).await;
        let found = state["network"]["eth0"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["family"] == "inet" && a["scope"] == "global")
            .and_then(|a| a["address"].as_str().map(str::to_owned));
        if let Some(a) = found {
            return a;
        }
        if Instant::now() > deadline {
            let log = (
                std::fs::read_to_string(s.d.dir().join("networks/br0/dnsmasq.leases")),
                Command::new("ls")
                    .arg("-laR")
                    .arg(s.d.dir().join("networks"))
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
                Command::new("ls")
                    .arg("-lad")
                    .arg(s.d.dir())
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
            );
            let (_, ps) = s.sh(name, "ls -la /usr/share/udhcpc; interface=eth0 ip=10.99.0.9 mask=24 router=10.99.0.1 sh -x /usr/share/udhcpc/default.script bound 2>&1; ip addr");
            let cmdlines: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .filter(|c| c.starts_with("/usr/sbin/dnsmasq"))
                .collect();
            let rules = std::fs::read_to_string("/proc/self/mounts").ok().map(|_| {
                String::from_utf8_lossy(
                    &Command::new("sh")
                        .arg("-c")
                        .arg("for n in $(ip netns list | grep -o 'rxdt-[0-9a-f-]*'); do ip netns exec $n nft list ruleset; ip -n $n -d link show; done")
                        .output()
                        .unwrap()
                        .stdout,
                )
                .into_owned()
            });
            panic!("{name} got no IPv4 lease: {state}\ndnsmasq: {log:?} {cmdlines:?}\ninside: {ps}\nrules: {}", rules.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A shell command in the container must succeed (retried for up to 10 s: ARP, DAD, leases).
fn eventually(s: &Session, name: &str, script: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out) = s.sh(name, script);
        if code == 0 {
            return out;
        }
        assert!(Instant::now() < deadline, "{name}: {script}: {code} {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn nft_rxd(lab: &NetLab) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.name(Ns::Rxd),
            "nft",
            "list",
            "ruleset",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The link events (`ip -o monitor link` lines, markers left out) of the daemon's namespace
/// while `f` ran. The monitor is known to listen before `f` starts, and to have seen all of
/// it after: a marker veth pair is made and deleted before and after, and waited for.
fn link_events(lab: &NetLab, f: impl FnOnce()) -> Vec<String> {
    use std::io::BufRead;
    let ns = lab.name(Ns::Rxd);
    let mut monitor = Command::new("ip")
        .args(["-n", &ns, "-o", "monitor", "link"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = monitor.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mark = |name: &str| -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let peer = format!("{name}p");
            for args in [
                &["link", "add", name, "type", "veth", "peer", "name", &peer][..],
                &["link", "del", name][..],
            ] {
                let st = Command::new("ip")
                    .args(["-n", &ns])
                    .args(args)
                    .status()
                    .unwrap();
                assert!(st.success(), "ip {args:?}");
            }
            // Its deletion, seen: everything before it was seen too.
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
                if line.starts_with("Deleted") && line.contains(name) {
                    return seen;
                }
                if !line.contains("rxdmark") {
                    seen.push(line);
                }
            }
            assert!(Instant::now() < deadline, "ip monitor saw no {name}");
        }
    };
    mark("rxdmark0");
    f();
    let events = mark("rxdmark1");
    let _ = monitor.kill();
    let _ = monitor.wait();
    let _ = reader.join();
    events
}

fn dnsmasqs(lab: &NetLab) -> Vec<i32> {
    lab.pids(Ns::Rxd)
        .into_iter()
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e.ends_with("dnsmasq"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_on_a_managed_bridge_get_addresses_names_nat_and_filtering() {
    let test = "containers_on_a_managed_bridge_get_addresses_names_nat_and_filtering";
    let Some(lab) = NetLab::new(test) else {
        return;
    };
    let Some(mut s) = lab.session(test).await else {
        return;
    };
    let c = s.d.unix();

    // Refusals: raw.dnsmasq runs code as root; an existing host interface is not taken over.
    let refused = outcome(
        &c,
        Method::POST,
        "/1.0/networks",
        json!({"name": "br0", "config": {"raw.dnsmasq": "dhcp-script=/bin/sh"}}),
    )
    .await
    .unwrap_err();
    assert!(refused.contains("raw.dnsmasq"), "{refused}");
    let refused = outcome(&c, Method::POST, "/1.0/networks", json!({"name": "up0"}))
        .await
        .unwrap_err();
    assert!(refused.contains("already exists"), "{refused}");

    ok(
        &c,
        Method::POST,
        "/1.0/networks",
        json!({"name": "br0", "config": {
            "ipv4.address": "10.99.0.1/24", "ipv4.nat": "true",
            "ipv6.address": "fd42:99::1/64", "ipv6.nat": "true"}}),
    )
    .await;
    let net = s.get("/1.0/networks/br0").await;
    assert_eq!(net["managed"], true, "{net}");
    assert_eq!(net["status"], "Created", "{net}");
    assert!(lab.links(Ns::Rxd).contains(&"br0".to_owned()));
    assert_eq!(dnsmasqs(&lab).len(), 1);
    let rules = nft_rxd(&lab);
    assert!(
        rules.contains("table inet rxd") && rules.contains("masquerade"),
        "{rules}"
    );
    // Host interfaces are listed, unmanaged, to the server administrator.
    let all = s.get("/1.0/networks?recursion=1").await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "up0" && n["managed"] == false),
        "{all}"
    );

    // The default profile gives every instance a NIC on the bridge, as `lxd init` makes it.
    ok(
        &c,
        Method::PATCH,
        "/1.0/profiles/default",
        json!({"devices": {"eth0": {"type": "nic", "network": "br0", "name": "eth0"}}}),
    )
    .await;
    // A NIC's container end is made inside the container's namespace: the daemon's sees its
    // host end come (and join br0), and no link made there and moved out.
    let events = link_events(&lab, || {
        s.ok(&["launch", "bb", "c1"]);
    });
    s.ok(&["launch", "bb", "c2"]);
    let (a1, a2) = (ipv4(&s, "c1").await, ipv4(&s, "c2").await);
    let host_end = s.state("c1").await["network"]["eth0"]["host_name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        events.iter().any(|e| e.contains(&format!(": {host_end}@"))),
        "{host_end}: {events:#?}"
    );
    for e in &events {
        let name = e
            .trim_start_matches("Deleted ")
            .split(':')
            .nth(1)
            .unwrap_or_default()
            .trim()
            .split('@')
            .next()
            .unwrap_or_default();
        assert!(
            !e.starts_with("Deleted") && (name == host_end || name == "br0"),
            "a link other than {host_end} came or went: {events:#?}"
        );
    }
    // A ruleset flushed behind rxd's back (a host firewall service restarting): the next
    // start puts back the whole of rxd's, every NIC's filters and the bridge's NAT with it,
    // not only its own chains.
    let flushed = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.name(Ns::Rxd),
            "nft",
            "flush",
            "ruleset",
        ])
        .status()
        .unwrap();
    assert!(flushed.success());
    s.ok(&["launch", "bb", "c9"]);
    let rules = nft_rxd(&lab);
    assert!(
        rules.contains("chain in.c1.eth0")
            && rules.contains("chain in.c9.eth0")
            && rules.contains("masquerade"),
        "{rules}"
    );
    s.ok(&["delete", "-f", "c9"]);
    assert!(a1.starts_with("10.99.0.") && a2.starts_with("10.99.0.") && a1 != a2);
    let state = s.state("c1").await;
    let eth0 = &state["network"]["eth0"];
    assert!(
        eth0["host_name"].as_str().unwrap().starts_with("veth"),
        "{eth0}"
    );
    assert_eq!(eth0["hwaddr"].as_str().unwrap()[..8].to_owned(), "00:16:3e");
    assert_eq!(state["network"]["lo"]["state"], "up", "{state}");
    let leases = s.get("/1.0/networks/br0/leases").await;
    assert!(
        leases
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["address"] == a1.as_str() && l["hostname"] == "c1"),
        "{leases}"
    );

    // Each other, by address and by name; the internet through NAT (the source it sees is
    // rxd's uplink address), once the lab's host forwards.
    eventually(&s, "c1", &format!("ping -c1 -W2 {a2}"));
    let looked_up = eventually(&s, "c1", "nslookup c2.lxd 10.99.0.1");
    assert!(looked_up.contains(&a2), "{looked_up}");
    // Another project's instance of the same name: `c1.p.lxd`, and `c1.lxd` stays ours.
    ok(
        &c,
        Method::POST,
        "/1.0/projects",
        json!({"name": "p", "config": {"features.profiles": "false"}}),
    )
    .await;
    let image = s.image();
    s.ok(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "--alias",
        "bb",
        "--project",
        "p",
    ]);
    s.ok(&["launch", "bb", "c1", "--project", "p"]);
    let pc1 = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = s.get("/1.0/instances/c1/state?project=p").await;
            let found = st["network"]["eth0"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["family"] == "inet" && a["scope"] == "global")
                .and_then(|a| a["address"].as_str().map(str::to_owned));
            if let Some(a) = found {
                break a;
            }
            assert!(Instant::now() < deadline, "p/c1 got no lease: {st}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let theirs = eventually(&s, "c2", "nslookup c1.p.lxd 10.99.0.1");
    assert!(theirs.contains(&pc1), "{theirs}");
    let ours = eventually(&s, "c2", "nslookup c1.lxd 10.99.0.1");
    assert!(ours.contains(&a1) && !ours.contains(&pc1), "{ours}");
    s.ok(&["delete", "-f", "c1", "--project", "p"]);
    let gateway = eventually(&s, "c1", "nslookup _gateway.lxd 10.99.0.1");
    assert!(gateway.contains("10.99.0.1"), "{gateway}");
    // IPv6: SLAAC addresses (EUI-64 of each MAC) that reach each other through the filters.
    let v6 = |state: &Value| -> String {
        state["network"]["eth0"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["family"] == "inet6" && a["scope"] == "global")
            .and_then(|a| a["address"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut b2 = String::new();
    while b2.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        b2 = v6(&s.state("c2").await);
    }
    assert!(b2.starts_with("fd42:99::"), "no SLAAC address: {b2:?}");
    eventually(&s, "c1", &format!("ping -6 -c1 -W2 {b2}"));
    // A static address another NIC holds: refused, nothing changed.
    let taken = outcome(
        &c,
        Method::PATCH,
        "/1.0/instances/c2",
        json!({"devices": {"eth0": {"type": "nic", "network": "br0", "name": "eth0", "ipv4.address": a1}}}),
    )
    .await;
    assert!(
        taken
            .as_ref()
            .is_err_and(|e| e.contains("already allocated")),
        "{taken:?}"
    );
    // ... and c2 kept its NIC: nothing was taken out before the refusal.
    eventually(&s, "c1", &format!("ping -c1 -W2 {a2}"));
    // The lab's host does not forward yet: rxd said so, and changed nothing host-wide.
    let warnings = s.get("/1.0/warnings?recursion=1").await;
    assert!(
        warnings
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["last_message"]
                .as_str()
                .unwrap_or("")
                .contains("net.ipv4.conf.all.forwarding")),
        "{warnings}"
    );
    let sysctl = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.name(Ns::Rxd),
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.forwarding=1",
        ])
        .status()
        .unwrap();
    assert!(sysctl.success());
    let body = eventually(&s, "c1", &format!("wget -qO- http://{SERVER_V4}/"));
    assert_eq!(body.trim(), RXDT_V4);

    // Spoofing is cut off by default: another address, another MAC.
    let (code, out) = s.sh(
        "c1",
        &format!("ip addr add 10.99.0.250/24 dev eth0 && ping -c1 -W2 -I 10.99.0.250 {a2}"),
    );
    assert_ne!(code, 0, "a spoofed source got through: {out}");
    s.sh("c1", "ip addr del 10.99.0.250/24 dev eth0");
    let (code, out) = s.sh(
        "c1",
        &format!("ip link set eth0 address 00:16:3e:aa:bb:cc && ping -c1 -W2 {a2}"),
    );
    assert_ne!(code, 0, "a spoofed MAC got through: {out}");
    let mac = eth0["hwaddr"].as_str().unwrap();
    s.sh("c1", &format!("ip link set eth0 address {mac}"));
    eventually(&s, "c1", &format!("ping -c1 -W2 {a2}"));
    // The probe is real: with IPv4 filtering turned off by the administrator (the NIC is
    // plugged again), the same extra address gets through.
    s.ok(&[
        "config",
        "device",
        "override",
        "c1",
        "eth0",
        "security.ipv4_filtering=false",
    ]);
    let dhcp = "udhcpc -q -n -t 5 -i eth0 -s /usr/share/udhcpc/default.script >/dev/null 2>&1";
    eventually(&s, "c1", dhcp);
    eventually(
        &s,
        "c1",
        &format!(
            "ip addr add 10.99.0.250/24 dev eth0 2>/dev/null; ping -c1 -W2 -I 10.99.0.250 {a2}"
        ),
    );
    s.ok(&["config", "device", "remove", "c1", "eth0"]);
    eventually(&s, "c1", dhcp);
    let (code, out) = s.sh(
        "c1",
        &format!(
            "ip addr add 10.99.0.250/24 dev eth0 2>/dev/null; ping -c1 -W2 -I 10.99.0.250 {a2}"
        ),
    );
    assert_ne!(code, 0, "filtering is back on: {out}");
    s.sh("c1", "ip addr del 10.99.0.250/24 dev eth0");
    assert_eq!(
        ipv4(&s, "c1").await,
        a1,
        "the same reservation after the re-plug"
    );

    // A NIC plugged into a running container: moved in under its name, up, with its lease;
    // unplugged: gone inside and on the host.
    let vethx = |lab: &NetLab| {
        lab.links(Ns::Rxd)
            .iter()
            .filter(|l| l.starts_with("veth"))
            .count()
    };
    assert_eq!(vethx(&lab), 2);
    s.ok(&[
        "config",
        "device",
        "add",
        "c1",
        "eth1",
        "nic",
        "network=br0",
        "name=eth1",
        "limits.ingress=10Mbit",
        "limits.egress=20Mbit",
    ]);
    let volatile = s.get("/1.0/instances/c1").await["config"]["volatile.eth1.host_name"].clone();
    let eth1_host = volatile.as_str().unwrap_or_default().to_owned();
    assert!(eth1_host.starts_with("veth"), "{volatile}");
    // Its bandwidth limits on the host end, as LXD sets them with tc.
    let tc = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.name(Ns::Rxd), "tc"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let classes = tc(&["class", "show", "dev", &eth1_host]);
    assert!(
        classes.contains("htb 1:10") && classes.contains("rate 10Mbit"),
        "{classes}"
    );
    // Egress is policed by the NIC's filter chain (20 Mbit/s = 2500 kbytes/s).
    let rules = nft_rxd(&lab);
    assert!(
        rules.contains(&format!(
            "iifname \"{eth1_host}\" limit rate over 2500000 bytes/second"
        )),
        "{rules}"
    );
    assert_eq!(vethx(&lab), 3);
    let out = eventually(
        &s,
        "c1",
        "udhcpc -q -n -t 5 -i eth1 -s /usr/share/udhcpc/default.script >/dev/null 2>&1; ip -4 addr show eth1",
    );
    assert!(out.contains("inet 10.99.0."), "{out}");
    s.ok(&["config", "device", "remove", "c1", "eth1"]);
    let (code, _) = s.sh("c1", "ip link show eth1");
    assert_ne!(code, 0, "eth1 is still inside");
    assert_eq!(vethx(&lab), 2);
    eventually(&s, "c1", &format!("ping -c1 -W2 {a2}"));

    // In use: neither deleted nor renamed.
    let refused = outcome(&c, Method::DELETE, "/1.0/networks/br0", json!({}))
        .await
        .unwrap_err();
    assert_eq!(refused, "The network is currently in use");
    let used_by = s.get("/1.0/networks/br0").await["used_by"].clone();
    assert!(
        used_by
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "/1.0/profiles/default"),
        "{used_by}"
    );

    // Debian's lxc shows the addresses.
    let conf = tempfile::tempdir().unwrap();
    let out = Command::new("lxc")
        .args(["list", "-c", "n4", "--format", "csv"])
        .env("LXD_DIR", s.d.dir())
        .env("LXD_CONF", conf.path())
        .env("HOME", conf.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&format!("c1,{a1} (eth0)")),
        "{listed} {out:?}"
    );

    // An rxd restart keeps addresses, the connectivity and one dnsmasq.
    let before = dnsmasqs(&lab);
    s.d.restart().await;
    assert_eq!(ipv4(&s, "c1").await, a1);
    let after = dnsmasqs(&lab);
    assert_eq!(after.len(), 1, "{before:?} {after:?}");
    eventually(&s, "c1", &format!("ping -c1 -W2 {a2}"));
    let looked_up = eventually(&s, "c2", "nslookup c1.lxd 10.99.0.1");
    assert!(looked_up.contains(&a1), "{looked_up}");
    let rules = nft_rxd(&lab);
    assert!(rules.contains("table bridge rxd"), "{rules}");

    // Stopping takes the NICs' filters and host ends away; the network then goes whole.
    let serving = dnsmasqs(&lab);
    s.ok(&["delete", "-f", "c1", "c2"]);
    ok(
        &c,
        Method::PUT,
        "/1.0/profiles/default",
        json!({"config": {}, "description": "Default LXD profile", "devices": {}}),
    )
    .await;
    assert!(!lab.links(Ns::Rxd).iter().any(|l| l.starts_with("veth")));
    // Deleted instances' leases go with them (a DHCPRELEASE to the running dnsmasq for each, as
    // LXD sends): their addresses and names are free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leases = s.get("/1.0/networks/br0/leases").await;
        if leases
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["type"] == "gateway")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{leases}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(s.d.dir().join("networks/br0/dnsmasq.leases")).unwrap();
    assert!(!text.contains(&a1) && !text.contains(&a2), "{text}");
    // The same dnsmasq freed them: it was not restarted, so DHCP and DNS never paused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(dnsmasqs(&lab), serving);
    ok(&c, Method::DELETE, "/1.0/networks/br0", Value::Null).await;
    assert!(!lab.links(Ns::Rxd).contains(&"br0".to_owned()));
    assert!(dnsmasqs(&lab).is_empty());
    assert!(!nft_rxd(&lab).contains("rxd"));
}

/// The other NIC types LXD 5.0 offers besides bridged: a macvlan of a host interface (the
/// container is then a host on that interface's network), a p2p veth whose host end routes
/// the container's addresses, and a routed one (addresses and default route set inside before
/// the init runs). All the server administrator's.
#[tokio::test(flavor = "multi_thread")]
async fn macvlan_p2p_and_routed_nics_reach_the_host_side() {
    let test = "macvlan_p2p_and_routed_nics_reach_the_host_side";
    let Some(lab) = NetLab::new(test) else {
        return;
    };
    let Some(s) = lab.session(test).await else {
        return;
    };
    // `-n` on a host interface that is no bridge: a macvlan on it, as `lxc launch -n` makes.
    s.ok(&["launch", "bb", "m1", "-n", "up0"]);
    let eth0 = s.get("/1.0/instances/m1").await["devices"]["eth0"].clone();
    assert_eq!(
        eth0,
        json!({"type": "nic", "nictype": "macvlan", "parent": "up0", "name": "eth0"})
    );
    // On the uplink's network with an address of its own, through to the internet.
    let out = eventually(
        &s,
        "m1",
        &format!("ip addr add 198.51.100.50/24 dev eth0 2>/dev/null; ip route replace default via 198.51.100.1; wget -qO- http://{SERVER_V4}/"),
    );
    assert_eq!(out.trim(), "198.51.100.50");

    s.ok(&["init", "bb", "p1"]);
    s.ok(&[
        "config",
        "device",
        "add",
        "p1",
        "eth0",
        "nic",
        "nictype=p2p",
        "ipv4.routes=192.0.2.2/32",
    ]);
    s.ok(&["start", "p1"]);
    let host_end = s.get("/1.0/instances/p1").await["config"]["volatile.eth0.host_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let routes = lab.ip(Ns::Rxd, &["-4", "route", "show", "dev", &host_end]);
    assert!(routes.contains("192.0.2.2"), "{routes}");
    eventually(
        &s,
        "p1",
        &format!("ip addr add 192.0.2.2/32 dev eth0 2>/dev/null; ip route replace default dev eth0; ping -c1 -W2 {RXDT_V4}"),
    );

    // Routed: its address and its default route set before its init runs, the host end
    // its gateway and its route.
    s.ok(&["init", "bb", "r1"]);
    s.ok(&[
        "config",
        "device",
        "add",
        "r1",
        "eth0",
        "nic",
        "nictype=routed",
        "ipv4.address=192.0.2.20",
        // Not eth0, which the image's DHCP client would flush.
        "name=net0",
    ]);
    s.ok(&["start", "r1"]);
    let (code, inside) = s.sh("r1", "ip -4 addr show net0; ip -4 route");
    assert_eq!(code, 0, "{inside}");
    assert!(
        inside.contains("inet 192.0.2.20/32") && inside.contains("default via 169.254.0.1"),
        "{inside}"
    );
    eventually(&s, "r1", &format!("ping -c1 -W2 {RXDT_V4}"));

    s.ok(&["delete", "-f", "m1", "p1", "r1"]);
    assert!(!lab.links(Ns::Rxd).contains(&host_end));
    assert_eq!(lab.links(Ns::Rxd), ["lo", "up0"]);
}

/// Runs `f` on a thread inside the lab's rxd namespace with a runtime of its own: HTTPS to
/// the daemon's loopback address only reaches it from there.
fn in_rxdt<T: Send>(lab: &NetLab, f: impl std::future::Future<Output = T> + Send) -> T {
    lab.in_ns(Ns::Rxd, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
}

/// Who may do what with NICs: an operator puts NICs on managed networks (filtered) and
/// nothing else; never host interfaces, host names, filtering off or network writes; a
/// restricted project's `restricted.networks.access` and `restricted.devices.nic` bind it.
#[tokio::test(flavor = "multi_thread")]
async fn operators_get_filtered_nics_on_managed_networks_only() {
    let test = "operators_get_filtered_nics_on_managed_networks_only";
    let Some(lab) = NetLab::new(test) else {
        return;
    };
    let Some(mut s) = lab.session(test).await else {
        return;
    };
    // HTTPS on the lab's loopback (the port is free in its namespace: it has nothing else).
    s.d.enable_https().await;
    let unix = s.d.unix();
    ok(
        &unix,
        Method::POST,
        "/1.0/networks",
        json!({"name": "br0", "config": {"ipv4.address": "10.95.0.1/24", "ipv6.address": "none"}}),
    )
    .await;
    s.ok(&["launch", "bb", "c1"]);
    let operator = rxd_testkit::client_identity("operator");
    rxd_testkit::api::trust_restricted(&unix, &operator, &["default"]).await;
    let nic = |extra: Value| {
        let mut dev = json!({"type": "nic"});
        for (k, v) in extra.as_object().unwrap() {
            dev[k] = v.clone();
        }
        json!({"devices": {"eth1": dev}})
    };
    let op_try = |body: Value| {
        let d = &s.d;
        let operator = &operator;
        in_rxdt(&lab, async move {
            let op = d.https(Some(operator));
            outcome(&op, Method::PATCH, "/1.0/instances/c1", body).await
        })
    };

    // An open project: a NIC on a managed network, filtered; nothing that reaches the host.
    op_try(nic(json!({"network": "br0", "name": "eth1"}))).unwrap();
    for (extra, says) in [
        (
            json!({"nictype": "bridged", "parent": "br0"}),
            "server administrator",
        ),
        (
            json!({"nictype": "macvlan", "parent": "up0"}),
            "server administrator",
        ),
        (
            json!({"network": "br0", "host_name": "vethmine"}),
            "host_name",
        ),
        (
            json!({"network": "br0", "hwaddr": "00:16:3e:00:00:99"}),
            "hwaddr",
        ),
        (
            json!({"network": "br0", "security.ipv4_filtering": "false"}),
            "security.ipv4_filtering",
        ),
        (
            json!({"network": "br0", "security.mac_filtering": "0"}),
            "security.mac_filtering",
        ),
    ] {
        let e = op_try(nic(extra.clone())).unwrap_err();
        assert!(e.contains(says), "{extra}: {e}");
    }
    let (listed, created) = in_rxdt(&lab, async {
        let op = s.d.https(Some(&operator));
        let listed = op.get("/1.0/networks?recursion=1").await.unwrap();
        let created = outcome(&op, Method::POST, "/1.0/networks", json!({"name": "br9"})).await;
        (listed, created)
    });
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["br0"],
        "no host interfaces for an operator: {listed}"
    );
    assert!(created.is_err(), "an operator made a network");
    // Another project's instance on br0: the administrator sees it in used_by, the operator
    // of `default` does not.
    ok(
        &unix,
        Method::POST,
        "/1.0/projects",
        json!({"name": "q", "config": {"features.profiles": "false"}}),
    )
    .await;
    let image = s.image();
    s.ok(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "--alias",
        "bb",
        "--project",
        "q",
    ]);
    s.ok(&["init", "bb", "c9", "-n", "br0", "--project", "q"]);
    let seen = s.get("/1.0/networks/br0").await["used_by"].clone();
    assert!(
        seen.to_string().contains("/1.0/instances/c9?project=q"),
        "{seen}"
    );
    let op_seen = in_rxdt(&lab, async {
        let op = s.d.https(Some(&operator));
        op.get("/1.0/networks/br0").await.unwrap()["used_by"].clone()
    });
    assert!(!op_seen.to_string().contains("c9"), "{op_seen}");
    s.ok(&["delete", "c9", "--project", "q"]);

    // Restricted to other networks: br0 is out of reach (and a project whose instances would
    // break the new restriction cannot take it: the NIC goes first).
    let e = outcome(
        &unix,
        Method::PATCH,
        "/1.0/projects/default",
        json!({"config": {"restricted": "true", "restricted.networks.access": "br7"}}),
    )
    .await
    .unwrap_err();
    assert!(e.contains("forbids network \"br0\""), "{e}");
    s.ok(&["config", "device", "remove", "c1", "eth1"]);
    ok(
        &unix,
        Method::PATCH,
        "/1.0/projects/default",
        json!({"config": {"restricted": "true", "restricted.networks.access": "br7"}}),
    )
    .await;
    let e = op_try(nic(json!({"network": "br0", "name": "eth2"}))).unwrap_err();
    assert!(e.contains("restricted.networks.access"), "{e}");
    // ... and br0 is no longer among the networks its members see.
    let listed = in_rxdt(&lab, async {
        let op = s.d.https(Some(&operator));
        op.get("/1.0/networks").await.unwrap()
    });
    assert_eq!(listed, json!([]), "{listed}");
    // Allowed any NIC and the uplink: a macvlan on it, but filtering stays on.
    ok(
        &unix,
        Method::PATCH,
        "/1.0/projects/default",
        json!({"config": {"restricted.devices.nic": "allow", "restricted.networks.access": "br0,up0"}}),
    )
    .await;
    op_try(nic(
        json!({"nictype": "macvlan", "parent": "up0", "name": "eth1"}),
    ))
    .unwrap();
    let (code, out) = s.sh("c1", "ip link show eth1");
    assert_eq!(code, 0, "{out}");
    let e = op_try(nic(
        json!({"network": "br0", "security.ipv6_filtering": "off"}),
    ))
    .unwrap_err();
    assert!(e.contains("security.ipv6_filtering"), "{e}");

    s.ok(&["delete", "-f", "c1"]);
    ok(&unix, Method::DELETE, "/1.0/networks/br0", Value::Null).await;
}

/// A crashed daemon (SIGKILL) comes back to the same addresses, one dnsmasq and a working
/// network; after a "reboot" (containers stopped, the bridge, rxd's tables and dnsmasq gone
/// while rxd was down) it makes them all again and the container gets its address back.
#[tokio::test(flavor = "multi_thread")]
async fn networks_survive_a_crash_and_come_back_after_a_reboot() {
    let test = "networks_survive_a_crash_and_come_back_after_a_reboot";
    let Some(lab) = NetLab::new(test) else {
        return;
    };
    let Some(mut s) = lab.session(test).await else {
        return;
    };
    let c = s.d.unix();
    ok(
        &c,
        Method::POST,
        "/1.0/networks",
        json!({"name": "br0", "config": {"ipv4.address": "10.94.0.1/24", "ipv6.address": "none"}}),
    )
    .await;
    ok(
        &c,
        Method::PATCH,
        "/1.0/profiles/default",
        json!({"devices": {"eth0": {"type": "nic", "network": "br0", "name": "eth0"}}}),
    )
    .await;
    s.ok(&["launch", "bb", "c1"]);
    s.ok(&["launch", "bb", "c2"]);
    let (a1, a2) = (ipv4(&s, "c1").await, ipv4(&s, "c2").await);
    let rules = nft_rxd(&lab);

    s.d.crash();
    s.d.spawn();
    s.d.wait_ready().await;
    assert_eq!(ipv4(&s, "c1").await, a1);
    assert_eq!(dnsmasqs(&lab).len(), 1);
    assert_eq!(nft_rxd(&lab), rules, "the ruleset is rebuilt the same");
    eventually(&s, "c1", &format!("ping -c1 -W2 {a2}"));

    // The reboot: everything of the network gone while rxd is down.
    s.ok(&["stop", "-f", "c1", "c2"]);
    s.d.stop();
    for pid in dnsmasqs(&lab) {
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dnsmasqs(&lab).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.ip(Ns::Rxd, &["link", "del", "br0"]);
    for family in ["inet", "bridge"] {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.name(Ns::Rxd),
                "nft",
                "delete",
                "table",
                family,
                "rxd",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    s.d.spawn();
    s.d.wait_ready().await;
    assert!(lab.links(Ns::Rxd).contains(&"br0".to_owned()));
    assert!(nft_rxd(&lab).contains("table inet rxd"));
    assert_eq!(dnsmasqs(&lab).len(), 1);
    s.ok(&["start", "c1", "c2"]);
    assert_eq!(ipv4(&s, "c1").await, a1, "the reservation is sticky");
    eventually(&s, "c1", &format!("ping -c1 -W2 {a2}"));

    s.ok(&["delete", "-f", "c1", "c2"]);
    s.ok(&["profile", "device", "remove", "default", "eth0"]);
    ok(&c, Method::DELETE, "/1.0/networks/br0", Value::Null).await;
    assert!(dnsmasqs(&lab).is_empty());
}
