//! Copying instances on one server (`source.type: copy`), as `rxc copy` and Debian's `lxc copy`
//! ask it: the root filesystem (a running source frozen while read) and the snapshots, each
//! copy with its own isolated ids applied at its first start; a snapshot as the source;
//! `--instance-only`; and the confinement of the copy *and of every snapshot it brings* in the
//! target project (a snapshot's config is live again once restored), with the source readable
//! only by who may operate its project.

use rxd_client::Method;
use rxd_testkit::api::{ok, trust_restricted};
use rxd_testkit::session::Session;
use serde_json::{json, Value};

/// Host uid of an instance's init.
async fn host_uid(s: &Session, name: &str) -> u32 {
    let pid =
        s.d.unix()
            .get(&format!("/1.0/instances/{name}/state"))
            .await
            .unwrap()["pid"]
            .as_i64()
            .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// Debian's `lxc ARGS` on the daemon's unix socket, which must succeed.
fn lxc(s: &Session, args: &[&str]) -> String {
    let conf = s.conf.path().join("lxc");
    let out = std::process::Command::new("lxc")
        .args(args)
        .env("LXD_DIR", s.d.dir())
        .env("LXD_CONF", &conf)
        .env("HOME", &conf)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "lxc {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A request's end: refused at once, or its operation's outcome.
async fn outcome(c: &rxd_client::Client, r: rxd_client::Reply) -> Result<(), String> {
    let env = r.envelope().unwrap();
    if r.status >= 300 {
        return Err(env.error);
    }
    let done = c
        .get(&format!("{}/wait?timeout=60", env.operation))
        .await
        .unwrap();
    match done["status"].as_str() {
        Some("Success") => Ok(()),
        _ => Err(done["err"].as_str().unwrap_or_default().to_owned()),
    }
}

fn snapshots(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().rsplit('/').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn copies_bring_snapshots_and_get_their_own_ids() {
    let test = "copies_bring_snapshots_and_get_their_own_ids";
    if !rxd_testkit::require_tool("lxc", "lxd-client", test) {
        return;
    }
    let Some(s) = Session::new(test).await else {
        return;
    };
    let c = s.d.unix();
    s.ok(&[
        "launch",
        "bb",
        "c1",
        "-c",
        "security.idmap.isolated=true",
        "-c",
        "user.tag=one",
    ]);
    s.ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "echo hello > /root/f && chown 1000:1001 /root/f",
    ]);
    s.ok(&["snapshot", "c1", "s0"]);
    s.ok(&["exec", "c1", "--", "sh", "-c", "echo world >> /root/f"]);

    // A running source: copied as it is, with its snapshot; the copy is stopped.
    s.ok(&["copy", "c1", "c2", "-c", "user.extra=2"]);
    let c2 = c.get("/1.0/instances/c2").await.unwrap();
    assert_eq!(c2["status"], "Stopped");
    assert_eq!(c2["config"]["user.tag"], "one", "{c2}");
    assert_eq!(c2["config"]["user.extra"], "2");
    assert_eq!(
        snapshots(&c.get("/1.0/instances/c2/snapshots").await.unwrap()),
        ["s0"]
    );
    // Its own isolated block, applied when it starts; the files keep their owners inside.
    s.ok(&["start", "c2"]);
    assert_eq!(
        s.ok(&["exec", "c2", "--", "cat", "/root/f"]),
        "hello\nworld\n"
    );
    assert_eq!(
        s.ok(&["exec", "c2", "--", "stat", "-c", "%u:%g", "/root/f"]),
        "1000:1001\n"
    );
    let (u1, u2) = (host_uid(&s, "c1").await, host_uid(&s, "c2").await);
    assert_ne!(u1, u2, "the copy shares its source's isolated ids");
    // Its snapshot restores to what it holds, with the copy's ids.
    s.ok(&["restore", "c2", "s0"]);
    assert_eq!(s.ok(&["exec", "c2", "--", "cat", "/root/f"]), "hello\n");
    assert_eq!(
        s.ok(&["exec", "c2", "--", "stat", "-c", "%u:%g", "/root/f"]),
        "1000:1001\n"
    );

    // Debian's lxc: a snapshot as the source (no snapshots come), and --instance-only.
    lxc(&s, &["copy", "c1/s0", "c3"]);
    s.ok(&["start", "c3"]);
    assert_eq!(s.ok(&["exec", "c3", "--", "cat", "/root/f"]), "hello\n");
    assert!(snapshots(&c.get("/1.0/instances/c3/snapshots").await.unwrap()).is_empty());
    lxc(&s, &["copy", "c1", "c4", "--instance-only"]);
    assert!(snapshots(&c.get("/1.0/instances/c4/snapshots").await.unwrap()).is_empty());
    lxc(&s, &["copy", "c1", "c5"]);
    assert_eq!(
        snapshots(&c.get("/1.0/instances/c5/snapshots").await.unwrap()),
        ["s0"]
    );
    // The source keeps running and is not left frozen.
    let state = c.get("/1.0/instances/c1/state").await.unwrap();
    assert_eq!(state["status"], "Running");
    let out = s.rxc(&["copy", "c1", "c2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{out:?}"
    );
    for n in ["c1", "c2", "c3", "c4", "c5"] {
        s.ok(&["delete", "--force", n]);
    }
}

#[tokio::test]
async fn a_copy_and_every_snapshot_it_brings_are_confined_in_the_target_project() {
    let Some(mut s) =
        Session::new("a_copy_and_every_snapshot_it_brings_are_confined_in_the_target_project")
            .await
    else {
        return;
    };
    s.d.enable_https().await;
    let c = s.d.unix();
    // p1 allows nesting (unrestricted); p2 is restricted (no nesting).
    for (name, config) in [("p1", json!({})), ("p2", json!({"restricted": "true"}))] {
        ok(
            &c,
            Method::POST,
            "/1.0/projects",
            json!({"name": name, "config": config}),
        )
        .await;
    }
    let image = s.image();
    s.ok(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "--alias",
        "bb",
        "--project",
        "p1",
    ]);
    // A snapshot taken while nesting was on; the instance itself no longer has it.
    s.ok(&[
        "init",
        "bb",
        "c1",
        "--project",
        "p1",
        "-c",
        "security.nesting=true",
    ]);
    s.ok(&["snapshot", "c1", "s0", "--project", "p1"]);
    // The flag after the values, as lxc users write it.
    s.ok(&[
        "config",
        "set",
        "c1",
        "security.nesting",
        "false",
        "--project",
        "p1",
    ]);

    let operator = rxd_testkit::client_identity("copy-operator");
    trust_restricted(&c, &operator, &["p1", "p2"]).await;
    let op = s.d.https(Some(&operator));
    let copy = |name: &str, instance_only: bool| {
        json!({
            "name": name,
            "source": {"type": "copy", "source": "c1", "project": "p1", "instance_only": instance_only},
        })
    };
    // Into p2 with its snapshot: the snapshot's nesting is refused there.
    let r = op
        .request(
            Method::POST,
            "/1.0/instances?project=p2",
            Some(&copy("c9", false)),
        )
        .await
        .unwrap();
    let e = outcome(&op, r).await.unwrap_err();
    assert!(
        e.contains("Snapshot \"s0\"") && e.contains("security.nesting"),
        "{e}"
    );
    assert!(c.get("/1.0/instances/c9?project=p2").await.is_err());
    // Without it, the copy is what p2 allows.
    let r = op
        .request(
            Method::POST,
            "/1.0/instances?project=p2",
            Some(&copy("c9", true)),
        )
        .await
        .unwrap();
    outcome(&op, r).await.unwrap();
    assert_eq!(
        c.get("/1.0/instances/c9?project=p2").await.unwrap()["config"]["security.nesting"],
        "false"
    );
    // Nor may a copy turn nesting on in p2.
    let mut with_nesting = copy("c8", true);
    with_nesting["config"] = json!({"security.nesting": "true"});
    let r = op
        .request(
            Method::POST,
            "/1.0/instances?project=p2",
            Some(&with_nesting),
        )
        .await
        .unwrap();
    assert!(outcome(&op, r).await.is_err());

    // A client of p2 alone cannot copy out of p1: to it, c1 does not exist.
    let outsider = rxd_testkit::client_identity("copy-outsider");
    trust_restricted(&c, &outsider, &["p2"]).await;
    let r =
        s.d.https(Some(&outsider))
            .request(
                Method::POST,
                "/1.0/instances?project=p2",
                Some(&copy("c7", true)),
            )
            .await
            .unwrap();
    assert_eq!(r.status, 404, "{:?}", r.envelope());
    assert_eq!(r.envelope().unwrap().error, "Instance not found");

    s.ok(&["delete", "c9", "--project", "p2"]);
    s.ok(&["delete", "c1", "--project", "p1"]);
}

/// `rxc move --target-project` and Debian's `lxc move --target-project`: a stopped instance
/// and its snapshots go to another project (its files to the new key in the same pool, its
/// isolated ids chosen again there), confined there with every snapshot.
#[tokio::test]
async fn instances_move_between_projects_confined_there() {
    let test = "instances_move_between_projects_confined_there";
    if !rxd_testkit::require_tool("lxc", "lxd-client", test) {
        return;
    }
    let Some(mut s) = Session::new(test).await else {
        return;
    };
    let containers = s.d.dir().join("storage-pools/default/containers");
    for (p, extra) in [("q", None), ("r", Some("restricted=true"))] {
        let mut args = vec!["project", "create", p];
        if let Some(e) = extra {
            args.extend(["-c", e]);
        }
        s.ok(&args);
        s.ok(&[
            "profile",
            "device",
            "add",
            "default",
            "root",
            "disk",
            "path=/",
            "pool=default",
            "--project",
            p,
        ]);
    }
    s.ok(&["launch", "bb", "c1", "-c", "security.idmap.isolated=true"]);
    s.sh("c1", "echo kept > /root/f && chown 1000 /root/f");
    s.ok(&["snapshot", "c1", "s0"]);
    s.ok(&["stop", "c1", "--force"]);
    let running = s.fails(&["move", "c1", "--target-project", "nope"]);
    assert!(
        running.contains("not found") || running.contains("Not found"),
        "{running}"
    );

    s.ok(&["move", "c1", "--target-project", "q"]);
    assert!(
        s.rxc(&["info", "c1"]).status.code() != Some(0),
        "gone from default"
    );
    let moved = s.get("/1.0/instances/c1?project=q").await;
    assert_eq!(moved["project"], "q");
    assert!(containers.join("q_c1/rootfs").is_dir() && !containers.join("c1").exists());
    let snaps = s.get("/1.0/instances/c1/snapshots?project=q").await;
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "{snaps}");
    assert!(
        snaps[0].as_str().unwrap().contains("/snapshots/s0"),
        "{snaps}"
    );
    s.ok(&["start", "c1", "--project", "q"]);
    let out = s.ok(&[
        "exec",
        "c1",
        "--project",
        "q",
        "--",
        "sh",
        "-c",
        "cat /root/f; stat -c %u /root/f",
    ]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["kept", "1000"]);
    s.ok(&["stop", "c1", "--project", "q", "--force"]);

    // A restricted project refuses what it refuses at create, in the instance or a snapshot.
    s.ok(&["init", "bb", "p1", "-c", "security.privileged=true"]);
    let refused = s.fails(&["move", "p1", "--target-project", "r"]);
    assert!(refused.contains("privileged"), "{refused}");
    s.ok(&["snapshot", "p1", "s0"]);
    s.ok(&["config", "unset", "p1", "security.privileged"]);
    let refused = s.fails(&["move", "p1", "--target-project", "r"]);
    assert!(
        refused.contains("Snapshot \"s0\"") && refused.contains("privileged"),
        "{refused}"
    );
    assert!(containers.join("p1").is_dir() && !containers.join("r_p1").exists());

    // A name taken in the target stays where it is.
    s.ok(&["init", "bb", "dup"]);
    s.ok(&["move", "dup", "--target-project", "q"]);
    s.ok(&["init", "bb", "dup"]);
    let taken = s.fails(&["move", "dup", "--target-project", "q"]);
    assert!(taken.contains("already exists"), "{taken}");
    assert!(containers.join("dup/rootfs").is_dir() && containers.join("q_dup/rootfs").is_dir());

    // Between two projects that both use the default project's volumes, an instance takes its
    // (unshared) volume along: it is the same instance, not a second user of the volume; a
    // second instance still may not attach it.
    for p in ["vp1", "vp2"] {
        s.ok(&[
            "project",
            "create",
            p,
            "-c",
            "features.storage.volumes=false",
        ]);
        s.ok(&[
            "profile",
            "device",
            "add",
            "default",
            "root",
            "disk",
            "path=/",
            "pool=default",
            "--project",
            p,
        ]);
    }
    s.ok(&["storage", "volume", "create", "default", "data"]);
    let image = s.image();
    s.ok(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "--alias",
        "bb",
        "--project",
        "vp1",
    ]);
    s.ok(&["init", "bb", "v1", "--project", "vp1"]);
    s.ok(&[
        "config",
        "device",
        "add",
        "v1",
        "data",
        "disk",
        "pool=default",
        "source=data",
        "path=/mnt",
        "--project",
        "vp1",
    ]);
    s.ok(&["snapshot", "v1", "s0", "--project", "vp1"]);
    s.ok(&["move", "v1", "--project", "vp1", "--target-project", "vp2"]);
    let moved = s.get("/1.0/instances/v1?project=vp2").await;
    assert_eq!(moved["devices"]["data"]["source"], "data", "{moved}");
    s.ok(&["init", "bb", "v2", "--project", "vp1"]);
    let second = s.fails(&[
        "config",
        "device",
        "add",
        "v2",
        "data",
        "disk",
        "pool=default",
        "source=data",
        "path=/mnt",
        "--project",
        "vp1",
    ]);
    assert!(second.contains("already attached"), "{second}");

    // Debian's lxc moves it back.
    s.d.enable_https().await;
    s.ok(&["config", "set", "core.trust_password", "s3cret"]);
    let c = tempfile::tempdir().unwrap();
    let conf = c.path();
    rxd_testkit::session::lxc_ok(
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
    rxd_testkit::session::lxc_ok(
        conf,
        &[
            "move",
            "rxd:c1",
            "--project",
            "q",
            "--target-project",
            "default",
        ],
    );
    let back = s.get("/1.0/instances/c1").await;
    assert_eq!(back["project"], "default");
    assert!(containers.join("c1/rootfs").is_dir() && !containers.join("q_c1").exists());
    s.ok(&["start", "c1"]);
    let (_, out) = s.sh("c1", "cat /root/f");
    assert_eq!(out.trim(), "kept");
}

/// An instance's `volatile.eth0.hwaddr`, which must be one of LXD's (`00:16:3e`).
async fn eth0_mac(c: &rxd_client::Client, name: &str) -> String {
    let i = c.get(&format!("/1.0/instances/{name}")).await.unwrap();
    let mac = i["config"]["volatile.eth0.hwaddr"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no MAC before its first start: {i}"))
        .to_owned();
    assert!(mac.starts_with("00:16:3e:"), "{mac}");
    mac
}

#[tokio::test]
async fn a_nic_gets_its_mac_when_created_and_a_copy_or_an_import_gets_another() {
    let test = "a_nic_gets_its_mac_when_created_and_a_copy_or_an_import_gets_another";
    if !rxd_testkit::require_tool("lxc", "lxd-client", test) {
        return;
    }
    let Some(s) = Session::new(test).await else {
        return;
    };
    let c = s.d.unix();
    // Never started: the NICs are not wired, their MACs are known (LXD's `lxc config show`).
    lxc(&s, &["profile", "create", "nic"]);
    lxc(
        &s,
        &[
            "profile",
            "device",
            "add",
            "nic",
            "eth0",
            "nic",
            "nictype=p2p",
        ],
    );
    lxc(&s, &["init", "bb", "m1", "-p", "default", "-p", "nic"]);
    let m1 = eth0_mac(&c, "m1").await;
    lxc(&s, &["copy", "m1", "m2"]);
    let m2 = eth0_mac(&c, "m2").await;
    assert_ne!(m1, m2, "a copy shares its source's MAC");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("m1.tar.gz");
    s.ok(&["export", "m1", file.to_str().unwrap()]);
    s.ok(&["import", file.to_str().unwrap(), "m3"]);
    let m3 = eth0_mac(&c, "m3").await;
    assert_ne!(m1, m3, "an import shares the backup's MAC");
    // A NIC with its own hwaddr gets no other.
    lxc(
        &s,
        &[
            "init",
            "bb",
            "m4",
            "-p",
            "default",
            "-p",
            "nic",
            "-d",
            "eth0,hwaddr=00:16:3e:aa:bb:cc",
        ],
    );
    let m4 = c.get("/1.0/instances/m4").await.unwrap();
    assert!(m4["config"].get("volatile.eth0.hwaddr").is_none(), "{m4}");
    // A NIC added later, to a stopped instance, gets its MAC then; the others keep theirs.
    lxc(
        &s,
        &[
            "config",
            "device",
            "add",
            "m1",
            "eth1",
            "nic",
            "nictype=p2p",
        ],
    );
    let after = c.get("/1.0/instances/m1").await.unwrap();
    let eth1 = after["config"]["volatile.eth1.hwaddr"]
        .as_str()
        .unwrap_or_else(|| panic!("no MAC for eth1: {after}"));
    assert!(eth1.starts_with("00:16:3e:"), "{eth1}");
    assert_ne!(eth1, m1);
    assert_eq!(eth0_mac(&c, "m1").await, m1, "eth0's MAC changed");
    // As does one a profile gives it.
    lxc(
        &s,
        &[
            "profile",
            "device",
            "add",
            "nic",
            "eth2",
            "nic",
            "nictype=p2p",
        ],
    );
    let after = c.get("/1.0/instances/m2").await.unwrap();
    let eth2 = after["config"]["volatile.eth2.hwaddr"]
        .as_str()
        .unwrap_or_else(|| panic!("no MAC for eth2: {after}"));
    assert!(eth2.starts_with("00:16:3e:"), "{eth2}");
    assert_eq!(eth0_mac(&c, "m2").await, m2, "eth0's MAC changed");
    for n in ["m1", "m2", "m3", "m4"] {
        s.ok(&["delete", n]);
    }
}
