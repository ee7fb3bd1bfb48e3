//! `rxc` commands `lxc` users reach for daily, each compared with Debian's `lxc` 5.0.2 asking
//! the same daemon the same thing: `version`, `operation list`, `warning list`.

use rxd_testkit::{bin, require_root, require_tool, TestDaemon};
use serde_json::Value;
use std::process::{Command, Output, Stdio};

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A JSON list, sorted by `key` so the two clients' orders do not matter.
fn sorted(out: &Output, key: &str) -> Vec<Value> {
    let mut list: Vec<Value> = serde_json::from_str(&text(out)).unwrap();
    list.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
    list
}

#[tokio::test]
async fn version_operations_and_warnings_as_lxc_shows_them() {
    if !require_root("version_operations_and_warnings_as_lxc_shows_them")
        || !require_tool(
            "lxc",
            "lxd-client",
            "version_operations_and_warnings_as_lxc_shows_them",
        )
    {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = tempfile::tempdir().unwrap();
    let rxc = |args: &[&str]| d.rxc(conf.path(), args);
    let lxd_conf = tempfile::tempdir().unwrap();
    let lxc = |args: &[&str]| {
        Command::new("lxc")
            .args(args)
            .env("LXD_CONF", lxd_conf.path())
            .env("HOME", lxd_conf.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    // A trust password is a warning; a join token is an operation.
    text(&rxc(&["config", "set", "core.trust_password", "pw"]));
    text(&lxc(&[
        "remote",
        "add",
        "rxd",
        &d.https_address(),
        "--accept-certificate",
        "--password",
        "pw",
    ]));
    text(&rxc(&["config", "trust", "add", "--name", "joiner"]));

    let ours = text(&rxc(&["version"]));
    let theirs = text(&lxc(&["version", "rxd:"]));
    assert!(
        ours.starts_with(&format!("Client version: {}\n", env!("CARGO_PKG_VERSION"))),
        "{ours}"
    );
    let server = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Server version:"))
            .map(str::to_owned)
    };
    assert_eq!(
        server(&ours),
        server(&theirs),
        "rxc:\n{ours}\nlxc:\n{theirs}"
    );
    assert_eq!(server(&ours).as_deref(), Some("Server version: 5.0.2"));

    let ours = sorted(&rxc(&["operation", "list", "--format", "json"]), "id");
    let theirs = sorted(
        &lxc(&["operation", "list", "rxd:", "--format", "json"]),
        "id",
    );
    assert!(
        ours.iter()
            .any(|o| o["class"] == "token" && o["metadata"]["request"]["name"] == "joiner")
            || ours.iter().any(|o| o["class"] == "token"),
        "{ours:#?}"
    );
    assert_eq!(ours, theirs);
    let table = text(&rxc(&["operation", "list"]));
    assert!(
        table.contains("TOKEN") || table.contains("token"),
        "{table}"
    );

    let ours = sorted(&rxc(&["warning", "list", "--format", "json"]), "uuid");
    let theirs = sorted(
        &lxc(&["warning", "list", "rxd:", "--format", "json"]),
        "uuid",
    );
    assert!(
        ours.iter().any(|w| w["last_message"]
            .as_str()
            .is_some_and(|m| m.contains("core.trust_password"))),
        "{ours:#?}"
    );
    assert_eq!(ours, theirs);
    let csv = text(&rxc(&["warning", "list", "--format", "csv"]));
    assert!(csv.lines().count() >= 1 && csv.contains("NEW"), "{csv}");

    // An unreachable server is said so, as lxc says it, not an error.
    let out = Command::new(bin("rxc"))
        .args(["version"])
        .env("RXC_CONF", conf.path())
        .env("RXD_DIR", conf.path().join("nowhere"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(text(&out).contains("Server version: unreachable"));
}
