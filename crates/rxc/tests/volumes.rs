//! Custom storage volumes, as root against the real daemon: a volume on a btrfs loop pool
//! attached to two containers with different isolated maps (idmapped: right owners inside,
//! container ids on disk, no shift), the one-instance rule until `security.shared`, a quota
//! that fills, snapshots (read-only subvolumes), restore, copy and move, deletion refused while
//! attached; and Debian's `lxc storage volume` against rxd on a `dir` pool.

use rxd_testkit::require_tool;
use rxd_testkit::session::{lxc, lxc_ok, Session};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn tools(test: &str) -> bool {
    require_tool("btrfs", "btrfs-progs", test) && require_tool("losetup", "mount", test)
}

fn subvolume_field(path: &Path, field: &str) -> String {
    let out = Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .find(|(k, _)| k.trim() == field)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

fn readonly(path: &Path) -> bool {
    let out = Command::new("btrfs")
        .args(["property", "get", "-ts"])
        .arg(path)
        .arg("ro")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "ro=true"
}

#[tokio::test]
async fn custom_volumes_attach_idmapped_snapshot_copy_and_fill() {
    let test = "custom_volumes_attach_idmapped_snapshot_copy_and_fill";
    if !tools(test) {
        return;
    }
    let Some(s) = Session::new(test).await else {
        return;
    };
    let pool = s.d.dir().join("storage-pools/b");
    s.ok(&["storage", "create", "b", "btrfs", "size=2GiB"]);
    s.ok(&["storage", "volume", "create", "b", "data", "size=64MiB"]);
    let vol = pool.join("custom/data");
    // Files in container ids, setuid ones too: no host user may reach them.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&pool.join("custom")), 0o700);
    assert_eq!(mode(&pool.join("custom-snapshots")), 0o700);
    assert_eq!(mode(&s.d.dir().join("storage-pools/default/custom")), 0o700);
    assert!(!subvolume_field(&vol, "UUID").is_empty(), "a subvolume");
    let shown: serde_json::Value = s.get("/1.0/storage-pools/b/volumes/custom/data").await;
    assert_eq!(shown["type"], "custom");
    assert_eq!(shown["content_type"], "filesystem");
    assert_eq!(shown["config"]["size"], "64MiB");
    assert_eq!(shown["used_by"], serde_json::json!([]));
    let bad = s.fails(&["storage", "volume", "create", "b", "no_underscores"]);
    assert!(bad.contains("Invalid storage volume name"), "{bad}");
    let dup = s.fails(&["storage", "volume", "create", "b", "data"]);
    assert!(dup.contains("already exists"), "{dup}");

    // Two containers with different isolated maps.
    for c in ["c1", "c2"] {
        s.ok(&[
            "launch",
            "bb",
            c,
            "-s",
            "b",
            "-c",
            "security.idmap.isolated=true",
        ]);
    }
    let (p1, p2) = (s.pid("c1").await, s.pid("c2").await);
    let map = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_ne!(map(p1), map(p2), "different maps");

    s.ok(&[
        "storage",
        "volume",
        "attach",
        "b",
        "data",
        "c1",
        "/mnt/data",
    ]);
    let inst = s.get("/1.0/instances/c1").await;
    assert_eq!(
        inst["devices"]["data"],
        serde_json::json!({"type": "disk", "pool": "b", "source": "data", "path": "/mnt/data"})
    );
    // Hot-plugged into the running c1: owners inside are container ids, and so on disk.
    let (code, out) = s.sh(
        "c1",
        "echo hello > /mnt/data/f && chown 1000:1001 /mnt/data/f && stat -c %u:%g /mnt/data /mnt/data/f",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0:0", "1000:1001"]
    );
    let meta = std::fs::metadata(vol.join("f")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1000, 1001),
        "container ids on disk"
    );

    // One instance until the volume is shared.
    let refused = s.fails(&[
        "storage",
        "volume",
        "attach",
        "b",
        "data",
        "c2",
        "/mnt/data",
    ]);
    assert!(
        refused.contains("already attached to instance \"c1\"")
            && refused.contains("security.shared"),
        "{refused}"
    );
    s.ok(&[
        "storage",
        "volume",
        "set",
        "b",
        "data",
        "security.shared=true",
    ]);
    s.ok(&["storage", "volume", "attach", "b", "data", "c2", "/srv"]);
    let (code, out) = s.sh("c2", "cat /srv/f && stat -c %u:%g /srv/f");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["hello", "1000:1001"]
    );
    let used_by = s.get("/1.0/storage-pools/b/volumes/custom/data").await["used_by"].clone();
    assert_eq!(
        used_by,
        serde_json::json!(["/1.0/instances/c1", "/1.0/instances/c2"])
    );
    let unshare = s.fails(&[
        "storage",
        "volume",
        "set",
        "b",
        "data",
        "security.shared=false",
    ]);
    assert!(unshare.contains("attached to 2 instances"), "{unshare}");
    let del = s.fails(&["storage", "volume", "delete", "b", "data"]);
    assert!(del.contains("still in use"), "{del}");

    // The quota: a write past 64 MiB fails inside, the pool is fine.
    let (code, out) = s.sh(
        "c1",
        "dd if=/dev/zero of=/mnt/data/big bs=1M count=100 2>&1; sync",
    );
    assert!(
        code != 0 || out.contains("Disk quota exceeded") || out.contains("No space"),
        "{code} {out}"
    );
    assert!(out.contains("quota") || out.contains("space"), "{out}");
    s.sh("c1", "rm -f /mnt/data/big");

    // Snapshots are read-only subvolumes; a restore waits for the users to stop.
    s.ok(&["storage", "volume", "snapshot", "b", "data", "s0"]);
    let snap = pool.join("custom-snapshots/data/s0");
    assert!(readonly(&snap));
    assert_eq!(
        subvolume_field(&snap, "Parent UUID"),
        subvolume_field(&vol, "UUID")
    );
    let snaps = s
        .get("/1.0/storage-pools/b/volumes/custom/data/snapshots?recursion=1")
        .await;
    assert_eq!(snaps[0]["name"], "s0", "{snaps}");
    s.sh("c1", "echo changed > /mnt/data/f");
    let busy = s.fails(&["storage", "volume", "restore", "b", "data", "s0"]);
    assert!(busy.contains("running instances"), "{busy}");
    s.ok(&["stop", "c1", "c2", "--force"]);
    s.ok(&["storage", "volume", "restore", "b", "data", "s0"]);
    assert_eq!(std::fs::read_to_string(vol.join("f")).unwrap(), "hello\n");
    // A restart mounts it again, idmapped.
    s.ok(&["start", "c1"]);
    let (code, out) = s.sh("c1", "cat /mnt/data/f && stat -c %u /mnt/data/f");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["hello", "1000"]
    );

    // A copy (with its snapshot) is a btrfs snapshot; a move to a dir pool copies it.
    s.ok(&["storage", "volume", "copy", "b/data", "b/data2"]);
    let copy = pool.join("custom/data2");
    assert_eq!(std::fs::read_to_string(copy.join("f")).unwrap(), "hello\n");
    assert!(pool.join("custom-snapshots/data2/s0").exists());
    assert_eq!(
        s.ok(&["storage", "volume", "get", "b", "data2", "size"])
            .trim(),
        "64MiB"
    );
    // Attached to the running c1 and detached from it again.
    s.ok(&[
        "storage", "volume", "attach", "b", "data2", "c1", "/mnt/two",
    ]);
    let (code, out) = s.sh("c1", "cat /mnt/two/f");
    assert_eq!((code, out.trim()), (0, "hello"));
    s.ok(&["storage", "volume", "detach", "b", "data2", "c1"]);
    let (code, _) = s.sh("c1", "test -e /mnt/two/f");
    assert_ne!(code, 0, "unmounted from the running c1");
    s.ok(&["storage", "create", "d", "dir"]);
    s.ok(&["storage", "volume", "unset", "b", "data2", "size"]);
    s.ok(&["storage", "volume", "move", "b/data2", "d/moved"]);
    let moved = s.d.dir().join("storage-pools/d/custom/moved");
    assert_eq!(std::fs::read_to_string(moved.join("f")).unwrap(), "hello\n");
    assert_eq!(std::fs::metadata(moved.join("f")).unwrap().uid(), 1000);
    assert!(!copy.exists());
    assert!(s
        .d
        .dir()
        .join("storage-pools/d/custom-snapshots/moved/s0/f")
        .exists());
    s.ok(&["storage", "volume", "rename", "d", "moved", "renamed"]);
    assert!(s.d.dir().join("storage-pools/d/custom/renamed/f").exists());
    assert!(s
        .d
        .dir()
        .join("storage-pools/d/custom-snapshots/renamed/s0/f")
        .exists());
    // A pool holding a volume stays.
    let busy_pool = s.fails(&["storage", "delete", "d"]);
    assert!(busy_pool.contains("in use"), "{busy_pool}");
    s.ok(&["storage", "volume", "delete", "d", "renamed"]);
    s.ok(&["storage", "delete", "d"]);

    // A project's limits.disk counts its volumes by their sizes.
    s.ok(&["project", "create", "lim", "-c", "limits.disk=100MiB"]);
    let lim = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["--project".to_owned(), "lim".to_owned()];
        v.extend(args.iter().map(|a| (*a).to_owned()));
        v
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        s.rxc(&refs)
    };
    let err = |o: std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let o = run(lim(&["storage", "volume", "create", "b", "nosize"]));
    assert!(
        !o.status.success() && err(o.clone()).contains("need a size"),
        "{}",
        err(o)
    );
    assert!(run(lim(&[
        "storage",
        "volume",
        "create",
        "b",
        "v",
        "size=50MiB"
    ]))
    .status
    .success());
    let o = run(lim(&[
        "storage",
        "volume",
        "create",
        "b",
        "v2",
        "size=60MiB",
    ]));
    assert!(
        !o.status.success() && err(o.clone()).contains("limits.disk"),
        "{}",
        err(o)
    );
    let o = run(lim(&["storage", "volume", "set", "b", "v", "size=90MiB"]));
    assert!(o.status.success(), "{}", err(o));
    let o = run(lim(&["storage", "volume", "set", "b", "v", "size=200MiB"]));
    assert!(
        !o.status.success() && err(o.clone()).contains("limits.disk"),
        "{}",
        err(o)
    );
    assert!(run(lim(&["storage", "volume", "delete", "b", "v"]))
        .status
        .success());

    // Detached from the running c1, which mounted it at start, then deleted with its
    // snapshots.
    let (code, out) = s.sh("c1", "cat /mnt/data/f");
    assert_eq!((code, out.trim()), (0, "hello"));
    s.ok(&["storage", "volume", "detach", "b", "data", "c1"]);
    let (_, out) = s.sh("c1", "grep ' /mnt/data ' /proc/self/mountinfo");
    assert!(!out.contains("/mnt/data"), "{out}");
    let (code, _) = s.sh("c1", "test -e /mnt/data/f");
    assert_ne!(code, 0, "unmounted from the running c1");
    s.ok(&["stop", "c1", "--force"]);
    s.ok(&["storage", "volume", "detach", "b", "data", "c2"]);
    s.ok(&["storage", "volume", "delete", "b", "data"]);
    assert!(!vol.exists() && !snap.exists());
    assert!(!pool.join("custom-snapshots/data").exists());
    s.ok(&["delete", "c1", "c2", "--force"]);
    s.ok(&["storage", "delete", "b"]);
}

#[tokio::test]
async fn debian_lxc_manages_custom_volumes() {
    let test = "debian_lxc_manages_custom_volumes";
    if !require_tool("lxc", "lxd-client", test) {
        return;
    }
    let Some(mut s) = Session::new(test).await else {
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
    lxc_ok(conf, &["storage", "volume", "create", "rxd:default", "v1"]);
    let list = lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "list",
            "rxd:default",
            "--format",
            "csv",
        ],
    );
    assert!(list.contains("custom,v1,,filesystem,0"), "{list}");
    lxc_ok(conf, &["launch", "rxd:bb", "rxd:x1"]);
    lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "attach",
            "rxd:default",
            "v1",
            "x1",
            "/data",
        ],
    );
    let out = lxc_ok(
        conf,
        &[
            "exec",
            "rxd:x1",
            "--",
            "sh",
            "-c",
            "echo ok > /data/t && cat /data/t",
        ],
    );
    assert_eq!(out.trim(), "ok");
    let shown = lxc_ok(conf, &["storage", "volume", "show", "rxd:default", "v1"]);
    assert!(shown.contains("- /1.0/instances/x1"), "{shown}");
    lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "set",
            "rxd:default",
            "v1",
            "user.note=hi",
        ],
    );
    assert_eq!(
        lxc_ok(
            conf,
            &["storage", "volume", "get", "rxd:default", "v1", "user.note"]
        )
        .trim(),
        "hi"
    );
    lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "set",
            "rxd:default",
            "v1",
            "snapshots.schedule=@daily",
        ],
    );
    assert_eq!(
        lxc_ok(
            conf,
            &[
                "storage",
                "volume",
                "get",
                "rxd:default",
                "v1",
                "snapshots.schedule"
            ]
        )
        .trim(),
        "@daily"
    );
    // A size needs quotas, which a dir pool does not have.
    let refused = lxc(
        conf,
        &["storage", "volume", "set", "rxd:default", "v1", "size=1GiB"],
    );
    assert!(!refused.status.success());
    lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "snapshot",
            "rxd:default",
            "v1",
            "snap0",
        ],
    );
    assert!(s
        .d
        .dir()
        .join("storage-pools/default/custom-snapshots/v1/snap0/t")
        .exists());
    lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "copy",
            "rxd:default/v1",
            "rxd:default/v2",
        ],
    );
    let refused = lxc(conf, &["storage", "volume", "delete", "rxd:default", "v1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("still in use"));
    // Mounted by the start after a restart, and detached from the running x1 all the same.
    lxc_ok(conf, &["restart", "rxd:x1", "--force"]);
    lxc_ok(
        conf,
        &["storage", "volume", "detach", "rxd:default", "v1", "x1"],
    );
    let gone = lxc(conf, &["exec", "rxd:x1", "--", "test", "-e", "/data/t"]);
    assert!(!gone.status.success(), "unmounted from the running x1");
    lxc_ok(
        conf,
        &["storage", "volume", "delete", "rxd:default", "v1/snap0"],
    );
    lxc_ok(conf, &["storage", "volume", "delete", "rxd:default", "v1"]);
    // To another project, with its snapshot (copied there, then deleted here).
    lxc_ok(conf, &["project", "create", "rxd:p2"]);
    let moved = lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "move",
            "rxd:default/v2",
            "rxd:default/v3",
            "--target-project",
            "p2",
        ],
    );
    assert!(moved.contains("moved"), "{moved}");
    let pool_dir = s.d.dir().join("storage-pools/default");
    assert!(pool_dir.join("custom/p2_v3/t").exists());
    assert!(pool_dir.join("custom-snapshots/p2_v3/snap0/t").exists());
    assert!(!pool_dir.join("custom/v2").exists());
    let there = lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "list",
            "rxd:default",
            "--project",
            "p2",
            "--format",
            "csv",
        ],
    );
    assert!(there.contains("custom,v3,"), "{there}");
    // And copied back into default.
    lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "copy",
            "rxd:default/v3",
            "rxd:default/v4",
            "--project",
            "p2",
            "--target-project",
            "default",
        ],
    );
    assert!(pool_dir.join("custom/v4/t").exists());
    lxc_ok(conf, &["storage", "volume", "delete", "rxd:default", "v4"]);
    lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "delete",
            "rxd:default",
            "v3",
            "--project",
            "p2",
        ],
    );
    let list = lxc_ok(
        conf,
        &[
            "storage",
            "volume",
            "list",
            "rxd:default",
            "--format",
            "csv",
        ],
    );
    assert!(!list.contains("custom,"), "{list}");
    assert!(!s.d.dir().join("storage-pools/default/custom/v1").exists());
}

#[tokio::test]
async fn volume_snapshots_follow_their_schedule_and_expire() {
    let test = "volume_snapshots_follow_their_schedule_and_expire";
    // The scheduler's minute lasts 400 ms here (a test-only knob of the daemon, compiled in with
    // the `failpoints` feature the suite builds with; see rxd-daemon's danger.rs).
    let opts = rxd_testkit::Options {
        env: vec![("RXD_DANGER_SCHEDULER_MINUTE_MS".into(), "400".into())],
        ..Default::default()
    };
    let Some(s) = Session::new_with(test, opts).await else {
        return;
    };
    // `@startup` is an instance's alone; a schedule that does not parse is refused.
    let e = s.fails(&[
        "storage",
        "volume",
        "create",
        "default",
        "bad",
        "snapshots.schedule=@startup",
    ]);
    assert!(e.contains("snapshots.schedule"), "{e}");
    let e = s.fails(&[
        "storage",
        "volume",
        "create",
        "default",
        "bad",
        "snapshots.schedule=not a schedule",
    ]);
    assert!(e.contains("snapshots.schedule"), "{e}");
    s.ok(&[
        "storage",
        "volume",
        "create",
        "default",
        "busy",
        "snapshots.schedule=* * * * *",
        "snapshots.expiry=3M",
        "snapshots.pattern=auto-%d",
    ]);
    // Not due: 00:00 on the 29th of February.
    s.ok(&[
        "storage",
        "volume",
        "create",
        "default",
        "rare",
        "snapshots.schedule=0 0 29 2 *",
    ]);
    let s = &s;
    let names = |volume: &'static str| async move {
        s.get(&format!(
            "/1.0/storage-pools/default/volumes/custom/{volume}/snapshots?recursion=1"
        ))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
    };
    // Taken each minute, each deleted three minutes later: auto-0 goes once auto-4 is there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let list = names("busy").await;
        if list.iter().any(|n| n == "auto-4") && !list.iter().any(|n| n == "auto-0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "busy has {list:?}\n{}",
            s.d.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let list = names("busy").await;
    assert!(list.len() <= 5, "{list:?}");
    // Each one a copy of the volume with an expiry, its pruned ones gone from disk too.
    let dir =
        s.d.dir()
            .join("storage-pools/default/custom-snapshots/busy");
    assert!(dir.join(list.last().unwrap()).is_dir(), "taken on disk");
    assert!(!dir.join("auto-0").exists(), "pruned from disk");
    let shown: serde_json::Value = s
        .get(&format!(
            "/1.0/storage-pools/default/volumes/custom/busy/snapshots/{}",
            list.last().unwrap()
        ))
        .await;
    assert_ne!(shown["expires_at"], "0001-01-01T00:00:00Z", "{shown}");
    assert!(names("rare").await.is_empty());
    // Its schedule unset, no more are taken.
    s.ok(&[
        "storage",
        "volume",
        "unset",
        "default",
        "busy",
        "snapshots.schedule",
    ]);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = names("busy").await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let after = names("busy").await;
    assert!(
        after.iter().all(|n| before.contains(n)),
        "{before:?} then {after:?}"
    );
}
