//! The helper's refusals, run as the daemon runs it. (Starting containers through it is tested
//! end to end in `crates/rxc/tests/containers.rs`.)

use std::io::Write;
use std::process::{Command, Stdio};

fn shim(root: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rxd-shim"))
        .arg("--root")
        .arg(root)
        .args(args)
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
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn names_are_checked_before_any_path_is_built() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["../etc", "a/b", "", "x-", "a.b"] {
        for cmd in ["state", "delete", "pause"] {
            let (ok, _, err) = shim(dir.path(), &[cmd, name], "");
            assert!(!ok, "{cmd} {name:?}");
            assert!(
                err.contains("invalid container name"),
                "{cmd} {name:?}: {err}"
            );
        }
    }
}

#[test]
fn unknown_containers_and_bad_plans_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = shim(dir.path(), &["state", "c1"], "");
    assert!(!ok && err.contains("not running"), "{err}");
    // Deleting what is not there is done already.
    assert!(shim(dir.path(), &["delete", "c1"], "").0);

    let bundle = dir.path().join("bundle");
    let log = dir.path().join("console.log");
    let args = [
        "start",
        "--bundle",
        bundle.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ];
    for (plan, why) in [
        ("not json", "parsing the plan"),
        (r#"{"name":"c1","surprise":1}"#, "unknown field"),
        (
            r#"{"name":"../x","hostname":"x","rootfs":"/","idmap":null,"cgroup":"/x","memory_limit":null,"process_limit":null,"environment":{}}"#,
            "invalid container name",
        ),
        (
            r#"{"name":"p1/x_c1","hostname":"c1","rootfs":"/","idmap":null,"cgroup":"/x","memory_limit":null,"process_limit":null,"environment":{}}"#,
            "invalid container name",
        ),
        (
            r#"{"name":"p1_c1","hostname":"other","rootfs":"/","idmap":null,"cgroup":"/x","memory_limit":null,"process_limit":null,"environment":{}}"#,
            "invalid host name",
        ),
    ] {
        let (ok, out, _) = shim(dir.path(), &args, plan);
        assert!(!ok, "{plan}");
        let reply: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(
            reply["error"].as_str().unwrap().contains(why),
            "{plan}: {reply}"
        );
    }
    assert!(!bundle.exists());
}
