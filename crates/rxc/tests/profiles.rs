//! Profiles on a real daemon with real containers: the `default` profile every project with
//! profiles of its own has, `rxc profile ...` and Debian's `lxc profile ...`, expansion order
//! (`launch -p a -p b`: later profiles win, the instance's own keys win over all), a profile's
//! limits reaching a running container when the profile changes, renames followed by the
//! instances using a profile, deletes refused while one does, and a profile change that would
//! give an instance something its project forbids refused whole.

use rxd_client::Method;
use rxd_testkit::cgroup::cgroup_file;
use rxd_testkit::require_tool;
use rxd_testkit::session::{lxc, lxc_ok, Session};
use serde_json::json;
use std::process::{Command, Stdio};

#[tokio::test]
async fn profiles_expand_in_order_apply_live_and_follow_renames() {
    let Some(s) = Session::new("profiles_expand_in_order_apply_live_and_follow_renames").await
    else {
        return;
    };
    // `default` exists from the first start, and cannot go.
    let list = s.ok(&["profile", "list", "--format", "csv"]);
    assert!(list.starts_with("default,"), "{list}");
    let e = s.fails(&["profile", "delete", "default"]);
    assert!(
        e.contains("The \"default\" profile cannot be deleted"),
        "{e}"
    );
    let e = s.fails(&["profile", "rename", "default", "other"]);
    assert!(e.contains("cannot be renamed"), "{e}");

    s.ok(&[
        "profile",
        "create",
        "small",
        "--description",
        "few processes",
    ]);
    s.ok(&["profile", "set", "small", "limits.processes", "100"]);
    s.ok(&[
        "profile",
        "set",
        "small",
        "user.who=small",
        "user.only-small=1",
    ]);
    // From YAML on standard input, as `lxc profile create p < p.yaml`.
    s.ok_with(
        &["profile", "create", "tiny"],
        "config:\n  limits.processes: \"50\"\n  user.who: tiny\ndescription: fewer\n",
    );
    assert_eq!(
        s.ok(&["profile", "get", "tiny", "limits.processes"]).trim(),
        "50"
    );
    let e = s.fails(&["profile", "create", "tiny"]);
    assert!(e.contains("already exists"), "{e}");
    let long = "d".repeat(5000);
    let e = s.fails(&["profile", "create", "wordy", "--description", &long]);
    assert!(e.contains("Invalid description"), "{e}");
    let e = s.fails(&["profile", "set", "tiny", "volatile.x", "1"]);
    assert!(
        e.contains("Volatile keys can only be set on instances"),
        "{e}"
    );
    let e = s.fails(&["profile", "set", "tiny", "limits.processes", "lots"]);
    assert!(e.contains("limits.processes"), "{e}");
    let e = s.fails(&["launch", "bb", "c0", "-p", "nope"]);
    assert!(
        e.contains("Requested profile \"nope\" doesn't exist"),
        "{e}"
    );
    let e = s.fails(&["launch", "bb", "c0", "-p", "tiny", "-p", "tiny"]);
    assert!(e.contains("Duplicate profile found in request"), "{e}");

    // Later profiles win per key, the instance's own keys over all.
    s.ok(&[
        "launch",
        "bb",
        "c1",
        "-p",
        "default",
        "-p",
        "small",
        "-p",
        "tiny",
        "-c",
        "user.who=c1",
    ]);
    let c1 = s.get("/1.0/instances/c1").await;
    assert_eq!(c1["profiles"], json!(["default", "small", "tiny"]));
    assert_eq!(c1["expanded_config"]["limits.processes"], "50", "{c1}");
    assert_eq!(c1["expanded_config"]["user.who"], "c1");
    assert_eq!(c1["expanded_config"]["user.only-small"], "1");
    assert!(c1["config"].get("limits.processes").is_none(), "{c1}");
    let shown = s.ok(&["config", "show", "c1", "--expanded"]);
    assert!(
        shown.contains("limits.processes: '50'") || shown.contains("limits.processes: \"50\""),
        "{shown}"
    );
    let pid = s.pid("c1").await;
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "50");

    // `used_by`, and a delete refused while it is in use.
    let tiny = s.get("/1.0/profiles/tiny").await;
    assert_eq!(tiny["used_by"], json!(["/1.0/instances/c1"]));
    let e = s.fails(&["profile", "delete", "tiny"]);
    assert!(e.contains("Profile is currently in use"), "{e}");

    // A change that would give an instance using the profile another id map is refused.
    let e = s.fails(&["profile", "set", "tiny", "security.idmap.isolated", "true"]);
    assert!(
        e.contains("for instance \"c1\"") && e.contains("another id map"),
        "{e}"
    );
    assert_eq!(
        s.ok(&["profile", "get", "tiny", "security.idmap.isolated"])
            .trim(),
        ""
    );

    // A profile's limit reaches the running container at once.
    s.ok(&["profile", "set", "tiny", "limits.processes", "40"]);
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "40");
    // Order: with tiny removed, small's limit is the one left.
    s.ok(&["profile", "remove", "c1", "tiny"]);
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "100");
    s.ok(&["profile", "add", "c1", "tiny"]);
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "40");
    s.ok(&["profile", "assign", "c1", "tiny,small"]);
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "100");
    let c1 = s.get("/1.0/instances/c1").await;
    assert_eq!(c1["profiles"], json!(["tiny", "small"]));
    // A snapshot keeps the list, and shows its config expanded over those profiles.
    s.ok(&["snapshot", "c1", "s0"]);
    let snap = s.get("/1.0/instances/c1/snapshots/s0").await;
    assert_eq!(snap["profiles"], json!(["tiny", "small"]));
    assert_eq!(snap["expanded_config"]["limits.processes"], "100", "{snap}");
    assert!(snap["config"].get("limits.processes").is_none(), "{snap}");

    // A rename is followed by the instances using it; copies are independent.
    s.ok(&["profile", "rename", "small", "medium"]);
    let c1 = s.get("/1.0/instances/c1").await;
    assert_eq!(c1["profiles"], json!(["tiny", "medium"]));
    s.ok(&["profile", "copy", "medium", "medium2"]);
    s.ok(&["profile", "set", "medium2", "limits.processes", "7"]);
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "100");
    assert_eq!(
        s.ok(&["profile", "get", "medium", "limits.processes"])
            .trim(),
        "100"
    );

    // The root disk and `none` are the devices rxd takes today; others are refused.
    s.ok(&[
        "profile",
        "device",
        "add",
        "medium2",
        "root",
        "disk",
        "path=/",
        "pool=default",
    ]);
    assert_eq!(
        s.ok(&["profile", "device", "list", "medium2"]).trim(),
        "root"
    );
    let e = s.fails(&["profile", "device", "add", "medium2", "card", "gpu"]);
    assert!(e.contains("\"gpu\" is not supported by rxd"), "{e}");
    s.ok(&["profile", "device", "remove", "medium2", "root"]);

    // An instance's own devices, and one copied from a profile (`override`).
    s.ok(&[
        "profile",
        "device",
        "add",
        "tiny",
        "root",
        "disk",
        "path=/",
        "pool=default",
    ]);
    let c1 = s.get("/1.0/instances/c1").await;
    assert_eq!(c1["expanded_devices"]["root"]["pool"], "default", "{c1}");
    assert_eq!(c1["devices"], json!({}));
    let e = s.fails(&["config", "device", "remove", "c1", "root"]);
    assert!(
        e.contains("Device from profile(s) cannot be removed"),
        "{e}"
    );
    s.ok(&["config", "device", "override", "c1", "root"]);
    assert_eq!(
        s.get("/1.0/instances/c1").await["devices"]["root"],
        json!({"type": "disk", "path": "/", "pool": "default"})
    );
    s.ok(&["config", "device", "add", "c1", "hide", "none"]);
    assert_eq!(s.ok(&["config", "device", "list", "c1"]), "hide\nroot\n");
    assert_eq!(
        s.ok(&["config", "device", "get", "c1", "root", "pool"])
            .trim(),
        "default"
    );
    let e = s.fails(&["config", "device", "add", "c1", "card", "gpu"]);
    assert!(e.contains("\"gpu\" is not supported by rxd"), "{e}");
    s.ok(&["config", "device", "remove", "c1", "hide", "root"]);
    s.ok(&["profile", "device", "remove", "tiny", "root"]);
    assert_eq!(
        s.get("/1.0/instances/c1").await["expanded_devices"],
        json!({})
    );

    // Two profiles' root disks together are one too many.
    s.ok(&["profile", "create", "r1"]);
    s.ok(&[
        "profile",
        "device",
        "add",
        "r1",
        "root",
        "disk",
        "path=/",
        "pool=default",
    ]);
    s.ok(&["profile", "create", "r2"]);
    s.ok(&[
        "profile",
        "device",
        "add",
        "r2",
        "rootfs",
        "disk",
        "path=/",
        "pool=default",
    ]);
    let e = s.fails(&["launch", "bb", "tworoots", "-p", "r1", "-p", "r2"]);
    assert!(e.contains("More than one root disk"), "{e}");

    // No profiles at all.
    s.ok(&["launch", "bb", "bare", "--no-profiles"]);
    let bare = s.get("/1.0/instances/bare").await;
    assert_eq!(bare["profiles"], json!([]));

    // The instance's own config keeps its place after all this; delete frees the profile.
    s.ok(&["delete", "-f", "c1"]);
    s.ok(&["profile", "delete", "tiny"]);
    let list = s.ok(&["profile", "list", "--format", "csv"]);
    assert!(!list.contains("tiny"), "{list}");
}

/// A restricted project has profiles of its own; a profile change that would give one of its
/// instances what the project forbids is refused whole, nothing saved; a project's features
/// change only while it is empty.
#[tokio::test]
async fn profile_changes_are_confined_per_instance_and_projects_keep_their_own() {
    let Some(s) =
        Session::new("profile_changes_are_confined_per_instance_and_projects_keep_their_own").await
    else {
        return;
    };
    let unix = s.d.unix();
    let r = unix
        .request_json(
            Method::POST,
            "/1.0/projects",
            &json!({"name": "locked", "config": {"restricted": "true"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.envelope());
    let profiles = s.get("/1.0/profiles?project=locked&recursion=1").await;
    assert_eq!(profiles[0]["name"], "default", "{profiles}");
    assert_eq!(
        profiles[0]["description"],
        "Default LXD profile for project locked"
    );
    let project = s.get("/1.0/projects/locked").await;
    assert!(
        project["used_by"]
            .as_array()
            .unwrap()
            .contains(&json!("/1.0/profiles/default?project=locked")),
        "{project}"
    );
    s.ok(&["project", "switch", "locked"]);
    let image = s.image();
    s.ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    s.ok(&["profile", "create", "web"]);
    s.ok(&["init", "bb", "w1", "-p", "default", "-p", "web"]);
    // Nesting is forbidden in this project: the change would give w1 nesting.
    let e = s.fails(&["profile", "set", "web", "security.nesting", "true"]);
    assert!(
        e.contains("for instance \"w1\"") && e.contains("Container nesting is forbidden"),
        "{e}"
    );
    assert_eq!(
        s.ok(&["profile", "get", "web", "security.nesting"]).trim(),
        ""
    );
    // Features do not change on a project that holds anything; a restricted project keeps
    // profiles of its own.
    let e = s.fails(&[
        "project",
        "set",
        "locked",
        "features.storage.volumes",
        "false",
    ]);
    assert!(
        e.contains("Features can only be changed on empty projects"),
        "{e}"
    );
    let e = s.fails(&["project", "set", "locked", "features.profiles", "false"]);
    assert!(
        e.contains("Projects without their own profiles cannot be restricted"),
        "{e}"
    );
    let e = s.fails(&["project", "set", "default", "features.profiles", "false"]);
    assert!(
        e.contains("You can't change the features of the default project"),
        "{e}"
    );

    // New restrictions must hold for what a project already has (LXD's rule).
    s.ok(&["project", "create", "loose"]);
    s.ok(&["project", "switch", "loose"]);
    s.ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    s.ok(&["init", "bb", "n1", "-c", "security.nesting=true"]);
    let e = s.fails(&["project", "set", "loose", "restricted", "true"]);
    assert!(
        e.contains("Conflict detected") && e.contains("\"n1\"") && e.contains("nesting"),
        "{e}"
    );
    assert_eq!(s.ok(&["project", "get", "loose", "restricted"]).trim(), "");
    s.ok(&["config", "unset", "n1", "security.nesting"]);
    s.ok(&["project", "set", "loose", "restricted", "true"]);

    // A project without profiles of its own uses default's: an empty project may switch.
    s.ok(&["project", "switch", "default"]);
    let r = unix
        .request_json(Method::POST, "/1.0/projects", &json!({"name": "shared"}))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.envelope());
    s.ok(&["project", "set", "shared", "features.profiles", "false"]);
    let shared = s.get("/1.0/profiles?project=shared&recursion=1").await;
    let default = s.get("/1.0/profiles?recursion=1").await;
    assert_eq!(shared, default, "project shared reads default's profiles");
    assert_eq!(
        s.get("/1.0/profiles?project=locked")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// Debian's `lxc` 5.0.2 against rxd: `lxc profile ...`, `lxc launch -p`, `lxc profile
/// add|remove|assign` and `lxc config show --expanded`.
#[tokio::test]
async fn debian_lxc_manages_profiles() {
    if !require_tool("lxc", "lxd-client", "debian_lxc_manages_profiles") {
        return;
    }
    let Some(mut s) = Session::new("debian_lxc_manages_profiles").await else {
        return;
    };
    s.d.enable_https().await;
    s.ok(&["config", "set", "core.trust_password", "s3cret"]);
    let c = tempfile::tempdir().unwrap();
    let conf = c.path();
    lxc_ok(
        conf,
        &[
            "remote",
            "add",
            "rxd",
            &s.d.https_address(),
            "--accept-certificate",
            "--password",
            "s3cret",
        ],
    );
    lxc_ok(conf, &["profile", "create", "rxd:lim"]);
    lxc_ok(
        conf,
        &["profile", "set", "rxd:lim", "limits.processes", "30"],
    );
    lxc_ok(conf, &["profile", "set", "rxd:lim", "user.tag=from-lxc"]);
    assert_eq!(
        lxc_ok(conf, &["profile", "get", "rxd:lim", "limits.processes"]).trim(),
        "30"
    );
    let shown = lxc_ok(conf, &["profile", "show", "rxd:lim"]);
    assert!(
        shown.contains("user.tag: from-lxc") && shown.contains("name: lim"),
        "{shown}"
    );
    let list = lxc_ok(conf, &["profile", "list", "rxd:", "--format", "csv"]);
    assert!(list.contains("default,") && list.contains("lim,"), "{list}");
    lxc_ok(
        conf,
        &[
            "profile",
            "device",
            "add",
            "rxd:lim",
            "root",
            "disk",
            "path=/",
            "pool=default",
        ],
    );
    assert!(lxc_ok(conf, &["profile", "device", "show", "rxd:lim"]).contains("pool: default"));
    lxc_ok(conf, &["profile", "device", "remove", "rxd:lim", "root"]);
    lxc_ok(conf, &["profile", "copy", "rxd:lim", "rxd:lim2"]);
    lxc_ok(conf, &["profile", "rename", "rxd:lim2", "lim3"]);
    lxc_ok(conf, &["profile", "unset", "rxd:lim3", "user.tag"]);
    assert_eq!(
        lxc_ok(conf, &["profile", "get", "rxd:lim3", "user.tag"]).trim(),
        ""
    );

    lxc_ok(
        conf,
        &["launch", "rxd:bb", "rxd:l1", "-p", "default", "-p", "lim"],
    );
    let expanded = lxc_ok(conf, &["config", "show", "rxd:l1", "--expanded"]);
    assert!(expanded.contains("limits.processes: \"30\""), "{expanded}");
    let pid = s.get("/1.0/instances/l1/state").await["pid"]
        .as_i64()
        .unwrap() as i32;
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "30");
    // `lxc profile edit` from standard input.
    let mut child = Command::new("lxc")
        .args(["profile", "edit", "rxd:lim"])
        .env("LXD_CONF", conf)
        .env("HOME", conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"config:\n  limits.processes: \"20\"\ndescription: edited\ndevices: {}\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "20");
    lxc_ok(conf, &["config", "device", "add", "rxd:l1", "hide", "none"]);
    assert_eq!(
        lxc_ok(conf, &["config", "device", "list", "rxd:l1"]).trim(),
        "hide"
    );
    lxc_ok(conf, &["config", "device", "remove", "rxd:l1", "hide"]);
    lxc_ok(conf, &["profile", "add", "rxd:l1", "lim3"]);
    lxc_ok(conf, &["profile", "remove", "rxd:l1", "lim3"]);
    lxc_ok(conf, &["profile", "assign", "rxd:l1", "default"]);
    let l1 = s.get("/1.0/instances/l1").await;
    assert_eq!(l1["profiles"], json!(["default"]));
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "max");
    let out = lxc(conf, &["profile", "delete", "rxd:default"]);
    assert!(!out.status.success());
    lxc_ok(conf, &["profile", "delete", "rxd:lim"]);
    lxc_ok(conf, &["delete", "-f", "rxd:l1"]);
}
