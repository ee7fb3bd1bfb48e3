//! `nat=true` proxy devices end to end, with rxd in a network lab: a container with a static
//! address on a managed bridge serves HTTP, and a NAT proxy makes it reachable on rxd's uplink
//! address from the pretend internet and from rxd's host itself, through DNAT rules in
//! `table inet rxd` and no forwarder process; the rules survive an rxd restart and go with the
//! device and with the container; what NAT mode cannot do is refused with LXD's messages.

use rxd_client::Method;
use rxd_testkit::api::ok;
use rxd_testkit::netlab::{NetLab, Ns, RXDT_V4};
use rxd_testkit::session::Session;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const STATIC_V4: &str = "10.97.0.10";

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
        assert!(Instant::now() < deadline, "{name} got no IPv4: {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET http://<addr>/` from `ns` until it answers (ARP, the server starting), within 10 s.
fn fetch(lab: &NetLab, ns: Ns, addr: &str) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lab.http_get_at(ns, addr) {
            Ok(body) => return body,
            Err(e) => assert!(Instant::now() < deadline, "GET {addr} from {ns:?}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether any process in rxd's namespace is a proxy forwarder (`rxd-shim proxy …`).
fn forwarders(lab: &NetLab) -> Vec<String> {
    lab.pids(Ns::Rxd)
        .into_iter()
        .filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
        .map(|c| {
            c.split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        })
        .filter(|argv| {
            argv.first().is_some_and(|a| a.ends_with("rxd-shim"))
                && argv.iter().any(|a| a == "proxy")
        })
        .map(|argv| argv.join(" "))
        .collect()
}

/// PATCH c1 with one more device, which must be refused with 400: the error.
async fn refused(s: &Session, name: &str, device: Value) -> String {
    let body = json!({"devices": {name: device}});
    let r =
        s.d.unix()
            .request(Method::PATCH, "/1.0/instances/c1", Some(&body))
            .await
            .unwrap();
    let error = r.envelope().map(|e| e.error).unwrap_or_default();
    assert_eq!(r.status, 400, "{device}: {error}");
    error
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_proxies_forward_through_dnat_rules_without_a_forwarder() {
    let test = "nat_proxies_forward_through_dnat_rules_without_a_forwarder";
    let Some(lab) = NetLab::new(test) else {
        return;
    };
    let Some(mut s) = lab.session(test).await else {
        return;
    };
    let c = s.d.unix();
    // Traffic from the internet to the container is forwarded by rxd's host, as the
    // administrator of a host running NAT proxies sets it.
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

    ok(
        &c,
        Method::POST,
        "/1.0/networks",
        json!({"name": "br0", "config": {
            "ipv4.address": "10.97.0.1/24", "ipv4.nat": "true", "ipv6.address": "none"}}),
    )
    .await;
    ok(
        &c,
        Method::PATCH,
        "/1.0/profiles/default",
        json!({"devices": {"eth0": {"type": "nic", "network": "br0", "name": "eth0",
            "ipv4.address": STATIC_V4}}}),
    )
    .await;
    s.ok(&["launch", "bb", "c1"]);
    assert_eq!(ipv4(&s, "c1").await, STATIC_V4);
    let (code, out) = s.sh(
        "c1",
        "mkdir -p /tmp/www && echo served-by-c1 > /tmp/www/index.html && busybox httpd -p 80 -h /tmp/www",
    );
    assert_eq!(code, 0, "{out}");

    // The device: DNAT rules, no forwarder.
    let listen = format!("{RXDT_V4}:8080");
    s.ok(&[
        "config",
        "device",
        "add",
        "c1",
        "web",
        "proxy",
        &format!("listen=tcp:{listen}"),
        &format!("connect=tcp:{STATIC_V4}:80"),
        "nat=true",
    ]);
    let rules = nft_rxd(&lab);
    for chain in ["prert.c1.web", "out.c1.web", "pstrt.c1.web"] {
        assert!(rules.contains(chain), "{chain} missing:\n{rules}");
    }
    assert!(
        rules.contains(&format!("dnat ip to {STATIC_V4}:80"))
            || rules.contains(&format!("dnat to {STATIC_V4}:80")),
        "{rules}"
    );
    assert!(forwarders(&lab).is_empty(), "{:?}", forwarders(&lab));
    assert!(!s.d.dir().join("runtime/bundles/c1/proxy.web.pid").exists());
    // From the internet (prerouting) and from rxd's host itself (output).
    assert_eq!(fetch(&lab, Ns::Internet, &listen).trim(), "served-by-c1");
    assert_eq!(fetch(&lab, Ns::Rxd, &listen).trim(), "served-by-c1");

    // A wildcard connect address is the instance's static address (LXD's rule).
    let wildcard = format!("{RXDT_V4}:8081");
    s.ok(&[
        "config",
        "device",
        "add",
        "c1",
        "web2",
        "proxy",
        &format!("listen=tcp:{wildcard}"),
        "connect=tcp:0.0.0.0:80",
        "nat=true",
    ]);
    assert_eq!(fetch(&lab, Ns::Internet, &wildcard).trim(), "served-by-c1");

    // What NAT mode cannot do, refused with LXD's messages; nothing changes.
    let before = nft_rxd(&lab);
    let e = refused(
        &s,
        "bad",
        json!({"type": "proxy", "listen": "tcp:198.51.100.2:8090",
            "connect": "tcp:10.97.0.99:80", "nat": "true"}),
    )
    .await;
    assert!(
        e.contains(
            r#"Connect IP "10.97.0.99" must be one of the instance's static IPv4 addresses"#
        ),
        "{e}"
    );
    let e = refused(
        &s,
        "bad",
        json!({"type": "proxy", "listen": "unix:/tmp/nat.sock",
            "connect": format!("tcp:{STATIC_V4}:80"), "nat": "true"}),
    )
    .await;
    assert!(
        e.contains("Proxying unix <-> tcp is not supported when using NAT"),
        "{e}"
    );
    let e = refused(
        &s,
        "bad",
        json!({"type": "proxy", "listen": "tcp:0.0.0.0:8090",
            "connect": format!("tcp:{STATIC_V4}:80"), "nat": "true"}),
    )
    .await;
    assert!(
        e.contains(r#"Cannot listen on wildcard address "0.0.0.0" when in nat mode"#),
        "{e}"
    );
    let devices = s.get("/1.0/instances/c1").await["devices"].clone();
    assert!(devices.get("bad").is_none(), "{devices}");
    assert_eq!(nft_rxd(&lab), before);

    // An rxd restart keeps the rules (recovered before the first rebuild) and still no
    // forwarder.
    s.d.restart().await;
    assert_eq!(fetch(&lab, Ns::Internet, &listen).trim(), "served-by-c1");
    assert!(forwarders(&lab).is_empty(), "{:?}", forwarders(&lab));

    // Unplugged: its chains go, the port answers no more; the other device stays.
    s.ok(&["config", "device", "remove", "c1", "web"]);
    let rules = nft_rxd(&lab);
    assert!(!rules.contains("c1.web "), "{rules}");
    assert!(rules.contains("prert.c1.web2"), "{rules}");
    let addr: SocketAddr = listen.parse().unwrap();
    assert!(lab.http_get_at(Ns::Internet, addr).is_err());
    assert_eq!(fetch(&lab, Ns::Internet, &wildcard).trim(), "served-by-c1");

    // Stopped: every NAT chain of the container goes.
    s.ok(&["stop", "c1", "--force"]);
    let rules = nft_rxd(&lab);
    assert!(!rules.contains("c1.web2"), "{rules}");
    let addr: SocketAddr = wildcard.parse().unwrap();
    assert!(lab.http_get_at(Ns::Internet, addr).is_err());

    // Everything made here goes before the lab does.
    s.ok(&["delete", "-f", "c1"]);
    ok(
        &c,
        Method::PUT,
        "/1.0/profiles/default",
        json!({"config": {}, "description": "Default LXD profile", "devices": {}}),
    )
    .await;
    ok(&c, Method::DELETE, "/1.0/networks/br0", Value::Null).await;
    assert!(!nft_rxd(&lab).contains("rxd"));
    assert!(!lab.links(Ns::Rxd).iter().any(|l| l.starts_with("veth")));
}
