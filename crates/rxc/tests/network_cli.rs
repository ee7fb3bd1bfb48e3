//! `rxc network ...` and Debian's `lxc network ...` (5.0.2) against the real daemon in a network
//! lab: a bridge is created, listed, shown, edited, renamed and deleted; an instance attached to
//! it gets a DHCP lease in its range, which `list-leases` and `info` report; refusals come in
//! LXD's words. Every output `rxc` prints is compared with what `lxc` prints for the same daemon.

use rxd_testkit::netlab::{NetLab, Ns};
use rxd_testkit::require_tool;
use rxd_testkit::session::Session;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Debian's `lxc` on the daemon's unix socket, with a config dir of its own.
struct Lxc<'a> {
    s: &'a Session,
    conf: tempfile::TempDir,
}

impl<'a> Lxc<'a> {
    fn new(s: &'a Session) -> Lxc<'a> {
        Lxc {
            s,
            conf: tempfile::tempdir().unwrap(),
        }
    }

    fn output(&self, args: &[&str]) -> Output {
        Command::new("lxc")
            .args(args)
            .env("LXD_DIR", self.s.d.dir())
            .env("LXD_CONF", self.conf.path())
            .env("HOME", self.conf.path())
            .stdin(Stdio::null())
            .output()
            .expect("run lxc")
    }

    /// `lxc ARGS`, which must succeed: its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "lxc {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.s.d.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `lxc ARGS`, which must fail: its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(!out.status.success(), "lxc {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `rxc ARGS` and `lxc ARGS` both succeed and print the same: that output.
    fn same(&self, args: &[&str]) -> String {
        let (ours, theirs) = (self.s.ok(args), self.ok(args));
        assert_eq!(ours, theirs, "{args:?}: rxc, then lxc");
        ours
    }

    /// `rxc ARGS` and `lxc ARGS` both fail with the same message: that message.
    fn same_refusal(&self, args: &[&str]) -> String {
        let (ours, theirs) = (self.s.fails(args), self.fails(args));
        assert_eq!(ours, theirs, "{args:?}: rxc, then lxc");
        ours
    }

    /// `rxc ARGS` and `lxc ARGS` print the same YAML document, keys in the same order (`rxc`
    /// quotes an empty string `''` where Go writes `""`: the same value): `rxc`'s, parsed.
    fn same_yaml(&self, args: &[&str]) -> Value {
        let (ours, theirs) = (self.s.ok(args), self.ok(args));
        let keys = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with([' ', '-']))
                .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_owned()))
                .collect()
        };
        assert_eq!(keys(&ours), keys(&theirs), "rxc:\n{ours}\nlxc:\n{theirs}");
        let parsed: Value = serde_norway::from_str(&ours).unwrap();
        assert_eq!(
            parsed,
            serde_norway::from_str::<Value>(&theirs).unwrap(),
            "rxc:\n{ours}\nlxc:\n{theirs}"
        );
        parsed
    }
}

/// On a failed assertion, the instances and networks a test made go before the lab does (on
/// success the test deletes them itself, and checks that it could).
struct Sweep<'a> {
    s: &'a Session,
    instances: &'static [&'static str],
    networks: &'static [&'static str],
}

impl Drop for Sweep<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for name in self.instances {
            let _ = self.s.rxc(&["delete", "-f", name]);
        }
        for name in self.networks {
            let _ = self.s.rxc(&["network", "delete", name]);
        }
    }
}

/// The instance's global IPv4 on eth0 (udhcpc asks for one at boot), within 30 s.
async fn ipv4(s: &Session, name: &str) -> Ipv4Addr {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = s.state(name).await;
        let found = state["network"]["eth0"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["family"] == "inet" && a["scope"] == "global")
            .and_then(|a| a["address"].as_str()?.parse().ok());
        if let Some(a) = found {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "{name} got no IPv4 lease: {state}\n{}",
            s.d.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn in_range(a: Ipv4Addr, first: [u8; 4], last: [u8; 4]) -> bool {
    (Ipv4Addr::from(first)..=Ipv4Addr::from(last)).contains(&a)
}

/// `lxc network info` without the traffic counters, which move between two runs.
fn without_counters(info: &str) -> String {
    info.lines()
        .filter(|l| !l.starts_with("  Bytes ") && !l.starts_with("  Packets "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rxc_network_commands_drive_a_bridge_as_lxc_shows_it() {
    let test = "rxc_network_commands_drive_a_bridge_as_lxc_shows_it";
    if !require_tool("lxc", "lxd-client", test) {
        return;
    }
    let Some(lab) = NetLab::new(test) else {
        return;
    };
    let Some(s) = lab.session(test).await else {
        return;
    };
    let _sweep = Sweep {
        s: &s,
        instances: &["c1"],
        networks: &["br1", "br2"],
    };
    let lxc = Lxc::new(&s);

    assert_eq!(
        s.ok(&[
            "network",
            "create",
            "br1",
            "ipv4.address=10.98.0.1/24",
            "ipv6.address=none"
        ]),
        "Network br1 created\n"
    );

    // The table and CSV leave out loopback and host interfaces of no type LXD knows (the lab's
    // uplink is a veth: `unknown`), as lxc does; JSON lists them all, unmanaged.
    let table = lxc.same(&["network", "list"]);
    assert!(
        table.contains(
            "| br1  | bridge | YES     | 10.98.0.1/24 | none |             | 0       | CREATED |"
        ),
        "{table}"
    );
    assert!(!table.contains("up0"), "{table}");
    assert_eq!(
        lxc.same(&["network", "list", "--format", "csv"]),
        "br1,bridge,YES,10.98.0.1/24,none,,0,CREATED\n"
    );
    let listed: Value =
        serde_json::from_str(&lxc.same(&["network", "list", "--format", "json"])).unwrap();
    let named = |n: &str| -> Value {
        let all = listed.as_array().unwrap();
        let found = all.iter().find(|x| x["name"] == n);
        found.cloned().unwrap_or_else(|| panic!("no {n}: {listed}"))
    };
    let (br1, up0) = (named("br1"), named("up0"));
    assert_eq!(br1["managed"], true, "{br1}");
    assert_eq!(br1["config"]["ipv4.address"], "10.98.0.1/24", "{br1}");
    assert_eq!(up0["managed"], false, "{up0}");
    assert_eq!(up0["config"], serde_json::json!({}), "{up0}");
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    // LXD 5.0's api.Network, in its field order (lxc re-encodes what it decoded).
    let lxd_keys = [
        "config",
        "description",
        "name",
        "type",
        "used_by",
        "managed",
        "status",
        "locations",
    ];
    assert_eq!(keys(&br1), lxd_keys);
    assert_eq!(keys(&up0), lxd_keys);

    let shown = lxc.same_yaml(&["network", "show", "br1"]);
    assert_eq!(shown["status"], "Created", "{shown:?}");
    assert_eq!(shown["config"]["ipv6.address"], "none", "{shown:?}");
    assert_eq!(lxc.same_yaml(&["network", "show", "up0"])["managed"], false);
    assert_eq!(
        lxc.same(&["network", "get", "br1", "ipv4.address"]),
        "10.98.0.1/24\n"
    );

    assert_eq!(
        s.ok(&[
            "network",
            "set",
            "br1",
            "ipv4.dhcp.ranges=10.98.0.50-10.98.0.60"
        ]),
        ""
    );
    // The older `KEY VALUE` form too.
    s.ok(&["network", "set", "br1", "ipv4.dhcp.expiry", "2h"]);
    assert_eq!(
        lxc.same(&["network", "get", "br1", "ipv4.dhcp.ranges"]),
        "10.98.0.50-10.98.0.60\n"
    );
    assert_eq!(
        lxc.same(&["network", "get", "br1", "ipv4.dhcp.expiry"]),
        "2h\n"
    );
    let refused = lxc.same_refusal(&["network", "set", "br1", "bogus.key=1"]);
    assert_eq!(refused, "Error: Invalid network config key \"bogus.key\"\n");
    let refused = lxc.same_refusal(&["network", "set", "up0", "mtu=1400"]);
    assert_eq!(refused, "Error: Only managed networks can be modified\n");

    // rxc's launch has no `--network`: a NIC is attached to the stopped instance.
    s.ok(&["init", "bb", "c1"]);
    s.ok(&["network", "attach", "br1", "c1", "eth0"]);
    assert_eq!(
        s.ok(&["config", "device", "show", "c1"]),
        "eth0:\n  network: br1\n  type: nic\n"
    );
    s.ok(&["start", "c1"]);
    let a1 = ipv4(&s, "c1").await;
    assert!(in_range(a1, [10, 98, 0, 50], [10, 98, 0, 60]), "{a1}");
    let eth0 = s.state("c1").await["network"]["eth0"].clone();
    let (mac, host_end) = (
        eth0["hwaddr"].as_str().unwrap().to_owned(),
        eth0["host_name"].as_str().unwrap().to_owned(),
    );

    let leases = lxc.same(&["network", "list-leases", "br1"]);
    let row = format!("| c1       | {mac} | {a1} | DYNAMIC |");
    assert!(leases.contains(&row), "{row} in:\n{leases}");
    let leases: Value =
        serde_json::from_str(&lxc.same(&["network", "list-leases", "br1", "--format", "json"]))
            .unwrap();
    assert!(
        leases
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["hostname"] == "c1"
                && l["address"] == a1.to_string()
                && l["hwaddr"] == mac.as_str()
                && l["type"] == "dynamic"),
        "{leases}"
    );

    let info = s.ok(&["network", "info", "br1"]);
    let bridge = s.get("/1.0/networks/br1/state").await;
    let head = format!(
        "Name: br1\nMAC address: {}\nMTU: 1500\nState: up\nType: broadcast\n\nIP addresses:\n  inet\t10.98.0.1/24 (global)\n",
        bridge["hwaddr"].as_str().unwrap()
    );
    assert!(info.starts_with(&head), "{info}");
    assert!(
        info.ends_with(&format!(
            "\nBridge:\n  ID: {}\n  STP: false\n  Forward delay: 1500\n  Default VLAN ID: 0\n  VLAN filtering: false\n  Upper devices: {host_end}\n",
            bridge["bridge"]["id"].as_str().unwrap()
        )),
        "{info}"
    );
    assert_eq!(
        without_counters(&info),
        without_counters(&lxc.ok(&["network", "info", "br1"]))
    );
    let table = lxc.same(&["network", "list"]);
    assert!(table.contains("| 1       | CREATED |"), "{table}");

    assert_eq!(s.ok(&["network", "unset", "br1", "ipv4.dhcp.ranges"]), "");
    assert_eq!(lxc.same(&["network", "get", "br1", "ipv4.dhcp.ranges"]), "");

    // Edit from standard input: the read-only fields are ignored, what is left out is unset.
    let yaml = "config:\n  ipv4.address: 10.98.0.1/24\n  ipv6.address: none\n  ipv4.dhcp.expiry: 3h\ndescription: edited by rxc\nname: elsewhere\nmanaged: false\n";
    let out =
        s.d.rxc_with_input(s.conf.path(), &["network", "edit", "br1"], yaml);
    assert!(out.status.success(), "{out:?}");
    let shown = lxc.same_yaml(&["network", "show", "br1"]);
    assert_eq!(shown["description"], "edited by rxc", "{shown:?}");
    assert_eq!(shown["name"], "br1", "{shown:?}");
    assert_eq!(
        shown["config"],
        serde_json::json!({"ipv4.address": "10.98.0.1/24", "ipv4.dhcp.expiry": "3h", "ipv6.address": "none"}),
        "{shown:?}"
    );
    assert_eq!(shown["used_by"], serde_json::json!(["/1.0/instances/c1"]));
    let out = s.d.rxc_with_input(
        s.conf.path(),
        &["network", "edit", "br1"],
        "config:\n  bogus: x\n",
    );
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: Invalid network config key \"bogus\"\n"
    );

    // In use: neither renamed nor deleted, in LXD's words.
    assert_eq!(
        lxc.same_refusal(&["network", "rename", "br1", "br2"]),
        "Error: Network is currently in use\n"
    );
    assert_eq!(
        lxc.same_refusal(&["network", "delete", "br1"]),
        "Error: The network is currently in use\n"
    );

    s.ok(&["stop", "-f", "c1"]);
    assert_eq!(s.ok(&["network", "detach", "br1", "c1"]), "");
    assert_eq!(s.ok(&["config", "device", "show", "c1"]), "{}\n");
    assert_eq!(
        lxc.same_yaml(&["network", "show", "br1"])["used_by"],
        serde_json::json!([])
    );
    assert_eq!(
        s.ok(&["network", "rename", "br1", "br2"]),
        "Network br1 renamed to br2\n"
    );
    // The kernel's bridge follows the name.
    let links = lab.links(Ns::Rxd);
    assert!(
        links.contains(&"br2".to_owned()) && !links.contains(&"br1".to_owned()),
        "{links:?}"
    );
    assert_eq!(
        lxc.same_refusal(&["network", "show", "br1"]),
        "Error: Network not found\n"
    );
    assert_eq!(
        lxc.same(&["network", "get", "br2", "ipv4.dhcp.expiry"]),
        "3h\n"
    );
    assert_eq!(s.ok(&["network", "delete", "br2"]), "Network br2 deleted\n");
    assert_eq!(
        lxc.same_refusal(&["network", "delete", "br2"]),
        "Error: Network not found\n"
    );
    assert_eq!(lxc.same(&["network", "list", "--format", "csv"]), "");
    s.ok(&["delete", "c1"]);
    assert!(!lab.links(Ns::Rxd).iter().any(|l| l == "br1" || l == "br2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn lxc_network_commands_drive_rxd_bridges() {
    let test = "lxc_network_commands_drive_rxd_bridges";
    if !require_tool("lxc", "lxd-client", test) {
        return;
    }
    let Some(lab) = NetLab::new(test) else {
        return;
    };
    let Some(s) = lab.session(test).await else {
        return;
    };
    let _sweep = Sweep {
        s: &s,
        instances: &["c2", "c3"],
        networks: &["br2"],
    };
    let lxc = Lxc::new(&s);

    assert_eq!(
        lxc.ok(&[
            "network",
            "create",
            "br2",
            "ipv4.address=10.97.0.1/24",
            "ipv6.address=none"
        ]),
        "Network br2 created\n"
    );
    lxc.ok(&[
        "network",
        "set",
        "br2",
        "ipv4.dhcp.ranges=10.97.0.100-10.97.0.110",
    ]);
    assert_eq!(
        s.ok(&["network", "get", "br2", "ipv4.dhcp.ranges"]),
        "10.97.0.100-10.97.0.110\n"
    );

    // Attached to a stopped instance, by the network's name (the server has
    // `instance_nic_network`), then started.
    lxc.ok(&["init", "bb", "c2"]);
    assert_eq!(lxc.ok(&["network", "attach", "br2", "c2", "eth0"]), "");
    assert_eq!(
        s.ok(&["config", "device", "show", "c2"]),
        "eth0:\n  network: br2\n  type: nic\n"
    );
    lxc.ok(&["start", "c2"]);
    let a2 = ipv4(&s, "c2").await;
    assert!(in_range(a2, [10, 97, 0, 100], [10, 97, 0, 110]), "{a2}");
    // `lxc launch --network` makes the NIC itself.
    lxc.ok(&["launch", "bb", "c3", "--network", "br2"]);
    let a3 = ipv4(&s, "c3").await;
    assert!(
        in_range(a3, [10, 97, 0, 100], [10, 97, 0, 110]) && a3 != a2,
        "{a3}"
    );
    let listed = lxc.ok(&["list", "-c", "n4", "--format", "csv"]);
    assert_eq!(listed, format!("c2,{a2} (eth0)\nc3,{a3} (eth0)\n"));
    let leases = lxc.ok(&["network", "list-leases", "br2", "--format", "csv"]);
    for (name, a) in [("c2", a2), ("c3", a3)] {
        let mac = s.state(name).await["network"]["eth0"]["hwaddr"].clone();
        let row = format!("{name},{},{a},DYNAMIC\n", mac.as_str().unwrap());
        assert!(leases.contains(&row), "{row} in:\n{leases}");
    }
    let shown = s.ok(&["network", "show", "br2"]);
    assert!(
        shown.contains("used_by:\n- /1.0/instances/c2\n- /1.0/instances/c3\n"),
        "{shown}"
    );

    assert_eq!(
        lxc.fails(&["network", "delete", "br2"]),
        "Error: The network is currently in use\n"
    );
    lxc.ok(&["delete", "-f", "c3"]);
    lxc.ok(&["stop", "-f", "c2"]);
    assert_eq!(lxc.ok(&["network", "detach", "br2", "c2"]), "");
    assert_eq!(lxc.ok(&["config", "device", "show", "c2"]), "{}\n");
    assert_eq!(
        lxc.ok(&["network", "delete", "br2"]),
        "Network br2 deleted\n"
    );
    assert_eq!(
        s.fails(&["network", "show", "br2"]),
        "Error: Network not found\n"
    );
    lxc.ok(&["delete", "c2"]);
    assert_eq!(lxc.ok(&["list", "--format", "csv"]), "");
    assert!(!lab.links(Ns::Rxd).contains(&"br2".to_owned()));
}
