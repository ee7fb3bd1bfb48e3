//! Instance records: creation from an image with the idmap allocated and the root filesystem
//! shifted to it on disk, refusals, deletion, and Debian's `lxc init`/`list`/`delete`. Running
//! containers are tested in `containers.rs`.

use rxd_client::{Client, Method};
use rxd_testkit::{bin, busybox_image, require_root, require_tool, succeeded, TestDaemon};
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};

async fn with_image(d: &TestDaemon) -> tempfile::TempDir {
    let conf = tempfile::tempdir().unwrap();
    let image = conf.path().join("bb.tar.gz");
    busybox_image(&image);
    let args = ["image", "import", image.to_str().unwrap(), "--alias", "bb"];
    succeeded(&args, d.rxc(conf.path(), &args));
    conf
}

/// POST an instance and wait for the operation; returns its final state.
async fn create(c: &Client, body: Value) -> Result<Value, (u16, String)> {
    let r = c
        .request(Method::POST, "/1.0/instances", Some(&body))
        .await
        .unwrap();
    if r.status != 202 {
        let e = r.envelope().unwrap();
        return Err((r.status, e.error));
    }
    let op = r.envelope().unwrap().metadata;
    let done = c
        .get(&format!(
            "/1.0/operations/{}/wait",
            op["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    if done["status"] == "Success" {
        Ok(c.get(&format!(
            "/1.0/instances/{}",
            body["name"].as_str().unwrap()
        ))
        .await
        .unwrap())
    } else {
        Err((400, done["err"].as_str().unwrap_or_default().to_owned()))
    }
}

fn rootfs(d: &TestDaemon, name: &str) -> PathBuf {
    d.dir()
        .join("storage-pools/default/containers")
        .join(name)
        .join("rootfs")
}

fn base(v: &Value) -> u32 {
    v["config"]["volatile.idmap.base"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn idmaps_are_allocated_and_the_rootfs_follows_them() {
    if !require_root("idmaps_are_allocated_and_the_rootfs_follows_them") {
        return;
    }
    let d = TestDaemon::start().await;
    let _conf = with_image(&d).await;
    let unix = d.unix();
    let src = json!({"type": "image", "alias": "bb"});
    let (host_base, _) =
        rxd_core::idmap::parse_subid(&std::fs::read_to_string("/etc/subuid").unwrap(), "root")
            .unwrap();

    let shared = create(&unix, json!({"name": "c1", "source": src}))
        .await
        .unwrap();
    let iso1 = create(
        &unix,
        json!({"name": "c2", "source": src, "config": {"security.idmap.isolated": "true"}}),
    )
    .await
    .unwrap();
    let iso2 = create(&unix, json!({"name": "c3", "source": src, "config": {"security.idmap.isolated": "true", "security.idmap.size": "100000"}})).await.unwrap();
    let privileged = create(
        &unix,
        json!({"name": "c4", "source": src, "config": {"security.privileged": "true"}}),
    )
    .await
    .unwrap();

    assert_eq!(
        base(&shared),
        host_base,
        "unprivileged containers share the first block"
    );
    assert_eq!(base(&privileged), 0);
    assert_eq!(privileged["config"]["volatile.idmap.next"], "[]");
    let next: Value =
        serde_json::from_str(shared["config"]["volatile.idmap.next"].as_str().unwrap()).unwrap();
    assert_eq!(
        next[0],
        json!({"Isuid": true, "Isgid": false, "Hostid": host_base, "Nsid": 0, "Maprange": 65536})
    );
    // Isolated blocks miss the shared block and each other.
    let blocks = [
        (base(&shared), 65536u32),
        (base(&iso1), 65536),
        (base(&iso2), 100_000),
    ];
    for (i, a) in blocks.iter().enumerate() {
        for b in &blocks[i + 1..] {
            assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "{a:?} overlaps {b:?}");
        }
    }
    // On disk, the files keep container ids whatever the map (the container sees them through
    // an idmapped mount: nothing is chowned at create), in a directory only root may enter.
    for (name, v) in [("c1", &shared), ("c2", &iso1), ("c3", &iso2)] {
        let m = std::fs::symlink_metadata(rootfs(&d, name).join("bin/busybox")).unwrap();
        assert_eq!(m.uid(), 0, "{name}");
        assert_eq!(v["config"]["volatile.last_state.idmap"], "[]", "{name}");
    }
    assert_eq!(
        std::fs::metadata(rootfs(&d, "c4").join("bin/busybox"))
            .unwrap()
            .uid(),
        0
    );
    assert_eq!(
        std::fs::metadata(d.dir().join("storage-pools/default/containers"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o711
    );
    assert_eq!(
        std::fs::metadata(d.dir().join("storage-pools/default/containers/c1"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    // A pinned base inside another container's block is refused, leaving nothing.
    let err = create(&unix, json!({"name": "c5", "source": src, "config": {"security.idmap.isolated": "true", "security.idmap.base": base(&iso1).to_string()}})).await.unwrap_err();
    assert!(err.1.contains("overlaps"), "{err:?}");
    assert!(!d.dir().join("storage-pools/default/containers/c5").exists());
    assert_eq!(
        unix.request(Method::GET, "/1.0/instances/c5", None)
            .await
            .unwrap()
            .status,
        404
    );

    // Deleting frees the block for the next isolated container.
    let r = unix
        .request(Method::DELETE, "/1.0/instances/c2", None)
        .await
        .unwrap();
    let op = r.envelope().unwrap().metadata;
    let done = unix
        .get(&format!(
            "/1.0/operations/{}/wait",
            op["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(done["status"], "Success");
    assert!(!d.dir().join("storage-pools/default/containers/c2").exists());
    let again = create(
        &unix,
        json!({"name": "c6", "source": src, "config": {"security.idmap.isolated": "true"}}),
    )
    .await
    .unwrap();
    assert_eq!(base(&again), base(&iso1));

    let list = unix
        .get("/1.0/instances?recursion=1&filter=name%20eq%20c6")
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        unix.get("/1.0/containers")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn bad_instance_requests_are_refused() {
    if !require_root("bad_instance_requests_are_refused") {
        return;
    }
    let d = TestDaemon::start().await;
    let _conf = with_image(&d).await;
    let unix = d.unix();
    let src = json!({"type": "image", "alias": "bb"});
    for (body, status, text) in [
        (
            json!({"name": "1bad", "source": src}),
            400,
            "Invalid instance name",
        ),
        (
            json!({"name": "bad_name", "source": src}),
            400,
            "Invalid instance name",
        ),
        (
            json!({"name": "c1", "source": src, "config": {"raw.lxc": "lxc.apparmor.profile=unconfined"}}),
            400,
            "raw.*",
        ),
        (
            json!({"name": "c1", "source": src, "config": {"volatile.idmap.next": "[]"}}),
            400,
            "managed by rxd",
        ),
        (
            json!({"name": "c1", "source": src, "config": {"limits.kernel.nofile": "1"}}),
            400,
            "unknown",
        ),
        (
            json!({"name": "c1", "source": src, "config": {"limits.cpu": "0"}}),
            400,
            "invalid value for limits.cpu",
        ),
        (
            json!({"name": "c1", "source": src, "devices": {"root": {"type": "disk", "path": "/", "source": "/"}}}),
            400,
            "Invalid devices: Device validation failed for \"root\": The root disk cannot have a \"source\"",
        ),
        (
            json!({"name": "c1", "source": src, "devices": {"ib0": {"type": "infiniband"}}}),
            400,
            "Device type \"infiniband\" is not supported by rxd",
        ),
        (
            json!({"name": "c1", "source": {"type": "image", "alias": "nope"}}),
            404,
            "not found",
        ),
        (
            json!({"name": "c1", "source": src, "type": "virtual-machine"}),
            400,
            "containers only",
        ),
        // `lxc launch REMOTE:bb`: the other server's image (here one that does not answer, on
        // loopback), never a local one of the same name.
        (
            json!({"name": "c1", "source": {"type": "image", "alias": "bb", "server": "https://127.0.0.1:9", "protocol": "simplestreams"}}),
            400,
            "image server",
        ),
        (
            json!({"name": "c1", "source": {"type": "image", "alias": "bb", "server": "http://127.0.0.1:9", "protocol": "simplestreams"}}),
            400,
            "only https",
        ),
        (
            json!({"name": "c1", "source": {"type": "image", "alias": "bb", "operation": "https://10.0.0.1:8443/1.0/operations/x", "secret": "s"}}),
            400,
            "migration or copy source",
        ),
        (
            json!({"name": "c1", "source": src, "profiles": ["default", "gpu"]}),
            400,
            "Requested profile \"gpu\" doesn't exist",
        ),
    ] {
        let (got, msg) = create(&unix, body.clone()).await.unwrap_err();
        assert_eq!(got, status, "{body}: {msg}");
        assert!(msg.contains(text), "{body}: {msg}");
    }
    assert_eq!(unix.get("/1.0/instances").await.unwrap(), json!([]));
    create(&unix, json!({"name": "c1", "source": src}))
        .await
        .unwrap();
    let (_, msg) = create(&unix, json!({"name": "c1", "source": src}))
        .await
        .unwrap_err();
    assert!(msg.contains("already exists"), "{msg}");
    // Untrusted callers cannot create.
    let r = d
        .https(None)
        .request(
            Method::POST,
            "/1.0/instances",
            Some(&json!({"name": "x", "source": src})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn debian_lxc_init_list_delete() {
    if !require_root("debian_lxc_init_list_delete")
        || !require_tool("lxc", "lxd-client", "debian_lxc_init_list_delete")
    {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = with_image(&d).await;
    let out = Command::new(bin("rxc"))
        .args(["config", "set", "core.trust_password", "pw"])
        .env("RXC_CONF", conf.path())
        .env("RXD_DIR", d.dir())
        .output()
        .unwrap();
    assert!(out.status.success());
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
    assert!(lxc(&[
        "remote",
        "add",
        "rxd",
        &d.https_address(),
        "--accept-certificate",
        "--password",
        "pw"
    ])
    .status
    .success());
    let out = lxc(&["init", "rxd:bb", "rxd:web1"]);
    assert!(out.status.success(), "{out:?}");
    let out = lxc(&["list", "rxd:", "--format", "csv", "-c", "ns"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "web1,STOPPED",
        "{out:?}"
    );
    let out = lxc(&["list", "rxd:"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("| web1 | STOPPED |"),
        "{out:?}"
    );
    let out = lxc(&["delete", "rxd:web1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.unix().get("/1.0/instances").await.unwrap(), json!([]));
}

/// `rxc config set|unset INSTANCE` with several keys changes them in one request: all or none.
#[tokio::test]
async fn instance_config_set_and_unset_several_keys_at_once() {
    if !require_root("instance_config_set_and_unset_several_keys_at_once")
        || !require_tool(
            "busybox",
            "busybox-static",
            "instance_config_set_and_unset_several_keys_at_once",
        )
    {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = with_image(&d).await;
    let rxc = |args: &[&str]| d.rxc(conf.path(), args);
    let ok = |args: &[&str]| succeeded(args, rxc(args));
    ok(&["init", "bb", "c1"]);
    let config = || async { d.unix().get("/1.0/instances/c1").await.unwrap()["config"].clone() };
    ok(&["config", "set", "c1", "user.a", "1", "user.b", "two words"]);
    ok(&["config", "set", "c1", "user.c=x=y", "limits.processes=50"]);
    let c = config().await;
    assert_eq!(
        (
            &c["user.a"],
            &c["user.b"],
            &c["user.c"],
            &c["limits.processes"]
        ),
        (
            &json!("1"),
            &json!("two words"),
            &json!("x=y"),
            &json!("50")
        ),
        "{c}"
    );
    // One invalid key refuses the whole request.
    let args = [
        "config",
        "set",
        "c1",
        "user.d",
        "4",
        "limits.processes",
        "many",
    ];
    let out = rxc(&args);
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(config().await["user.d"], Value::Null);
    assert_eq!(config().await["limits.processes"], "50");
    ok(&[
        "config",
        "unset",
        "c1",
        "user.a",
        "user.c",
        "limits.processes",
    ]);
    let c = config().await;
    assert_eq!(
        (
            &c["user.a"],
            &c["user.b"],
            &c["user.c"],
            &c["limits.processes"]
        ),
        (
            &Value::Null,
            &json!("two words"),
            &Value::Null,
            &Value::Null
        ),
        "{c}"
    );
}

/// `rxc list | head -1`, and any other reader that leaves early: the command ends quietly with
/// success instead of panicking on the closed pipe.
#[tokio::test]
async fn a_closed_stdout_ends_commands_quietly() {
    if !require_root("a_closed_stdout_ends_commands_quietly") {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = with_image(&d).await;
    create(
        &d.unix(),
        json!({"name": "c1", "source": {"type": "image", "alias": "bb"}}),
    )
    .await
    .unwrap();
    for args in [
        &["list"][..],
        &["list", "--format", "yaml"],
        &["info", "c1"],
        &["info"],
        &["config", "show", "c1"],
        &["image", "list"],
        &["project", "list"],
    ] {
        // The read end is closed before rxc writes anything.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(bin("rxc"))
            .args(args)
            .env("RXC_CONF", conf.path())
            .env("RXD_DIR", d.dir())
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "rxc {args:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An instance that cannot start says why, naming the missing part, in the operation's error
/// (never `internal error`).
#[tokio::test]
async fn an_instance_that_cannot_start_says_why() {
    if !require_root("an_instance_that_cannot_start_says_why") {
        return;
    }
    let d = TestDaemon::start().await;
    let conf = with_image(&d).await;
    for name in ["c1", "c2"] {
        create(
            &d.unix(),
            json!({"name": name, "source": {"type": "image", "alias": "bb"}}),
        )
        .await
        .unwrap();
    }
    std::fs::remove_file(rootfs(&d, "c1").join("sbin/init")).unwrap();
    rxd_image::remove::remove_tree(rootfs(&d, "c2")).unwrap();
    for (name, says) in [
        ("c1", "'/sbin/init' not found"),
        ("c2", "root filesystem is missing"),
    ] {
        let args = ["start", name];
        let out = Command::new(bin("rxc"))
            .args(args)
            .env("RXC_CONF", conf.path())
            .env("RXD_DIR", d.dir())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says) && !err.contains("internal error"),
            "rxc start {name}: {err}"
        );
    }
}
