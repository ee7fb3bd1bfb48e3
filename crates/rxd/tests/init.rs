//! `rxd init`: a preseed (and `--auto`) applied to a running daemon through its socket, again
//! without harm, and what rxd does not have refused by name.

use rxd_testkit::netlab::{NetLab, Ns};
use rxd_testkit::{bin, require_root, TestDaemon};
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn init(d: &TestDaemon, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin("rxd"))
        .arg("init")
        .args(args)
        .env("RXD_DIR", d.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn init_applies_a_preseed_and_auto_flags() {
    if !require_root("init_applies_a_preseed_and_auto_flags") {
        return;
    }
    let d = TestDaemon::start().await;
    let preseed = "config:\n  core.remote_token_expiry: 3d\nprojects:\n- name: web\n  description: sites\n  config:\n    limits.containers: '4'\nnetworks: []\n";
    for _ in 0..2 {
        let out = init(&d, &["--preseed"], preseed);
        assert!(out.status.success(), "{out:?}");
    }
    let c = d.unix();
    let info = c.get("/1.0").await.unwrap();
    assert_eq!(info["config"]["core.remote_token_expiry"], "3d");
    // The preseed merges: what was set before stays.
    assert!(info["config"]["core.https_address"].is_string(), "{info}");
    let web = c.get("/1.0/projects/web").await.unwrap();
    assert_eq!(web["description"], "sites");
    assert_eq!(web["config"]["limits.containers"], "4");

    let out = init(
        &d,
        &["--preseed"],
        "storage_pools:\n- name: default\n  driver: zfs\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no storage_pools"), "{err}");
    let out = init(&d, &["--preseed"], "config:\n  core.no_such_key: x\n");
    assert!(!out.status.success(), "{out:?}");

    // In the host's own namespace: no bridge (the lab test below checks the default one).
    let out = init(
        &d,
        &["--auto", "--no-network", "--trust-password", "s3cret"],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let info = c.get("/1.0").await.unwrap();
    assert_eq!(info["config"]["core.trust_password"], true);
    let out = init(&d, &[], "");
    assert!(!out.status.success());
}

/// `rxd init --auto`, as `lxd init --auto`: a managed bridge with addresses chosen for it and
/// NAT, and the default profile's `eth0` on it, so the next container has a network; run again,
/// it changes nothing. In a network lab: never on the host's own network.
#[tokio::test(flavor = "multi_thread")]
async fn init_auto_makes_the_default_bridge_and_nic() {
    let test = "init_auto_makes_the_default_bridge_and_nic";
    let Some(lab) = NetLab::new(test) else {
        return;
    };
    let Some(s) = lab.session(test).await else {
        return;
    };
    for _ in 0..2 {
        let out = init(&s.d, &["--auto"], "");
        assert!(out.status.success(), "{out:?}");
    }
    let net = s.get("/1.0/networks/rxdbr0").await;
    let v4 = net["config"]["ipv4.address"].as_str().unwrap().to_owned();
    assert!(v4.starts_with("10.") && v4.ends_with(".1/24"), "{net}");
    assert_eq!(net["config"]["ipv4.nat"], "true", "{net}");
    assert!(lab.links(Ns::Rxd).contains(&"rxdbr0".to_owned()));
    let profile = s.get("/1.0/profiles/default").await;
    assert_eq!(profile["devices"]["eth0"]["network"], "rxdbr0", "{profile}");
    assert_eq!(
        profile["devices"].as_object().unwrap().len(),
        1,
        "{profile}"
    );

    // A preseed names networks and profiles as LXD's do.
    let preseed = "networks:\n- name: br1\n  type: bridge\n  config:\n    ipv4.address: 10.96.0.1/24\n    ipv6.address: none\nprofiles:\n- name: web\n  devices:\n    eth0:\n      type: nic\n      network: br1\n";
    let out = init(&s.d, &["--preseed"], preseed);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        s.get("/1.0/networks/br1").await["config"]["ipv4.address"],
        "10.96.0.1/24"
    );
    assert_eq!(
        s.get("/1.0/profiles/web").await["devices"]["eth0"]["network"],
        "br1"
    );

    // Tidy: the profiles first, then the networks they used.
    s.ok(&["profile", "delete", "web"]);
    s.ok(&["profile", "device", "remove", "default", "eth0"]);
    s.ok(&["network", "delete", "br1"]);
    s.ok(&["network", "delete", "rxdbr0"]);
    assert!(!lab
        .links(Ns::Rxd)
        .iter()
        .any(|l| l == "rxdbr0" || l == "br1"));
}
