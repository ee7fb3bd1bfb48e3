//! `rxd init`: a preseed (and `--auto`) applied to a running daemon through its socket, again
//! without harm, and what rxd does not have refused by name.

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

    let out = init(&d, &["--auto", "--trust-password", "s3cret"], "");
    assert!(out.status.success(), "{out:?}");
    let info = c.get("/1.0").await.unwrap();
    assert_eq!(info["config"]["core.trust_password"], true);
    let out = init(&d, &[], "");
    assert!(!out.status.success());
}
