//! Storage pools, as root against the real daemon: a btrfs pool on a loop file rxd makes,
//! instances as snapshots of one read-only image volume (idmapped, so containers with
//! different maps share it and the files keep the image's ids on disk), snapshots, restores
//! and copies as btrfs snapshots, a root disk quota that fills, `dir` pools, deletion that
//! leaves no mount and no loop device, the move of rxd's pre-pool directories into `default`,
//! and Debian's `lxc storage` against rxd.

use rxd_testkit::session::{lxc, lxc_ok, Session};
use rxd_testkit::{require_tool, Options};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `btrfs subvolume show PATH` as key → value.
fn subvolume(path: &Path) -> std::collections::BTreeMap<String, String> {
    let out = Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn is_subvolume(path: &Path) -> bool {
    Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
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

/// Loop devices backed by `file`.
fn loops_of(file: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = e.path().join("loop/backing_file");
        if let Ok(text) = std::fs::read_to_string(backing) {
            if Path::new(text.trim()) == file {
                found.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(path.to_str().unwrap()))
}

fn uid_map(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap()
}

fn tools(test: &str) -> bool {
    require_tool("btrfs", "btrfs-progs", test) && require_tool("losetup", "mount", test)
}

#[tokio::test]
async fn btrfs_pools_share_one_image_volume_and_snapshot_instantly() {
    let test = "btrfs_pools_share_one_image_volume_and_snapshot_instantly";
    if !tools(test) {
        return;
    }
    let Some(s) = Session::new(test).await else {
        return;
    };
    let state = s.d.dir();
    // The default pool holds what rxd had: a `dir` pool in the state directory.
    let list = s.ok(&["storage", "list", "--format", "csv"]);
    assert!(list.contains("default,dir,"), "{list}");

    s.ok(&["storage", "create", "b", "btrfs", "size=2GiB"]);
    let img = state.join("disks/b.img");
    let pool = state.join("storage-pools/b");
    assert!(img.is_file());
    assert_eq!(loops_of(&img).len(), 1, "one loop device");
    assert!(mounted(&pool));
    assert_eq!(s.ok(&["storage", "get", "b", "size"]).trim(), "2GiB");
    let shown: serde_json::Value = s.get("/1.0/storage-pools/b").await;
    assert_eq!(shown["driver"], "btrfs");
    // The drivers in use, as LXD joins them.
    let env = s.get("/1.0").await["environment"].clone();
    assert_eq!(env["storage"], "btrfs | dir", "{env}");
    assert_eq!(
        env["storage_version"]
            .as_str()
            .unwrap()
            .matches(" | ")
            .count(),
        1,
        "{env}"
    );
    assert_eq!(shown["status"], "Created");
    assert_eq!(shown["config"]["source"], img.display().to_string());
    let res = s.get("/1.0/storage-pools/b/resources").await;
    assert!(res["space"]["total"].as_u64().unwrap() > 1 << 30, "{res}");

    // Two containers with different maps from one image: one image volume, read-only; each
    // root filesystem a snapshot of it, in the image's ids on disk.
    s.ok(&["launch", "bb", "c1", "-s", "b"]);
    s.ok(&[
        "launch",
        "bb",
        "c2",
        "-s",
        "b",
        "-c",
        "security.idmap.isolated=true",
    ]);
    let fp = s.get("/1.0/images/aliases/bb").await["target"]
        .as_str()
        .unwrap()
        .to_owned();
    let image_root = pool.join("images").join(&fp).join("rootfs");
    assert!(readonly(&image_root), "the image volume is read-only");
    let image_uuid = subvolume(&image_root)["UUID"].clone();
    for c in ["c1", "c2"] {
        let rootfs = pool.join("containers").join(c).join("rootfs");
        assert_eq!(
            subvolume(&rootfs)["Parent UUID"],
            image_uuid,
            "{c} is a snapshot of the image volume"
        );
        assert!(!readonly(&rootfs));
        // The image's metadata beside it (a clone of the image volume's).
        assert_eq!(
            std::fs::read(pool.join("containers").join(c).join("metadata.yaml")).unwrap(),
            std::fs::read(pool.join("images").join(&fp).join("metadata.yaml")).unwrap(),
            "{c}: the image's metadata.yaml"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(rootfs.join("bin/busybox")).unwrap().uid(),
            0,
            "{c}: the image's ids on disk"
        );
        assert_eq!(
            s.ok(&["exec", c, "--", "stat", "-c", "%u", "/bin/busybox"]),
            "0\n"
        );
    }
    let (m1, m2) = (uid_map(s.pid("c1").await), uid_map(s.pid("c2").await));
    assert_ne!(m1, m2, "different maps");
    assert_eq!(
        s.ok(&[
            "exec",
            "c2",
            "--",
            "sh",
            "-c",
            "echo hi > /root/f; stat -c %u /root/f"
        ]),
        "0\n"
    );
    let used: serde_json::Value = s.get("/1.0/storage-pools/b").await;
    let used_by = used["used_by"].to_string();
    assert!(
        used_by.contains("/1.0/instances/c1") && used_by.contains(&format!("/1.0/images/{fp}")),
        "{used_by}"
    );
    let volumes = s.get("/1.0/storage-pools/b/volumes").await;
    let volumes = volumes.to_string();
    assert!(
        volumes.contains("/1.0/storage-pools/b/volumes/container/c1")
            && volumes.contains(&format!("/1.0/storage-pools/b/volumes/image/{fp}")),
        "{volumes}"
    );

    // A snapshot of a running container: a read-only btrfs snapshot; a restore puts it back.
    s.ok(&["exec", "c1", "--", "sh", "-c", "echo v1 > /root/state"]);
    s.ok(&["snapshot", "c1", "s0"]);
    let snap = pool.join("containers-snapshots/c1/s0/rootfs");
    let c1_root = pool.join("containers/c1/rootfs");
    assert!(readonly(&snap));
    assert_eq!(
        subvolume(&snap)["Parent UUID"],
        subvolume(&c1_root)["UUID"],
        "the snapshot is c1's"
    );
    s.ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "echo v2 > /root/state; touch /root/new",
    ]);
    s.ok(&["restore", "c1", "s0"]);
    assert_eq!(
        s.ok(&["exec", "c1", "--", "sh", "-c", "cat /root/state; ls /root"]),
        "v1\nstate\n"
    );
    assert_eq!(
        subvolume(&pool.join("containers/c1/rootfs"))["Parent UUID"],
        subvolume(&snap)["UUID"],
        "the restored root filesystem is a snapshot of s0"
    );
    assert!(!readonly(&pool.join("containers/c1/rootfs")));

    // A copy in the same pool: snapshots again, the copy's own snapshot read-only.
    s.ok(&["copy", "c1", "c3"]);
    let c3_root = pool.join("containers/c3/rootfs");
    assert_eq!(
        subvolume(&c3_root)["Parent UUID"],
        subvolume(&pool.join("containers/c1/rootfs"))["UUID"]
    );
    assert!(readonly(&pool.join("containers-snapshots/c3/s0/rootfs")));
    s.ok(&["start", "c3"]);
    assert_eq!(s.ok(&["exec", "c3", "--", "cat", "/root/state"]), "v1\n");
    // Moved (stopped) to the default pool and back, with its snapshot: the files follow, the
    // old ones go, and on btrfs the snapshot is read-only again.
    assert!(s
        .fails(&["move", "c3", "-s", "default"])
        .contains("stopped"));
    s.ok(&["stop", "c3", "--force"]);
    s.ok(&["move", "c3", "-s", "default"]);
    let dir_pool = state.join("storage-pools/default");
    assert!(dir_pool.join("containers/c3/rootfs/root/state").exists());
    assert!(dir_pool
        .join("containers-snapshots/c3/s0/rootfs/bin")
        .exists());
    assert!(!pool.join("containers/c3").exists() && !pool.join("containers-snapshots/c3").exists());
    let inst = s.get("/1.0/instances/c3").await;
    assert_eq!(inst["devices"]["root"]["pool"], "default", "{inst}");
    s.ok(&["move", "c3", "-s", "b"]);
    assert!(is_subvolume(&pool.join("containers/c3/rootfs")));
    assert!(readonly(&pool.join("containers-snapshots/c3/s0/rootfs")));
    assert!(!dir_pool.join("containers/c3").exists());
    s.ok(&["start", "c3"]);
    assert_eq!(s.ok(&["exec", "c3", "--", "cat", "/root/state"]), "v1\n");
    // Copied to the default (dir) pool: a plain copy.
    s.ok(&["copy", "c1", "d1", "-s", "default", "--instance-only"]);
    assert!(state
        .join("storage-pools/default/containers/d1/rootfs/bin/busybox")
        .exists());
    s.ok(&["start", "d1"]);
    assert_eq!(s.ok(&["exec", "d1", "--", "cat", "/root/state"]), "v1\n");

    // A root disk size is a quota: writing past it fails inside, and the pool stays usable.
    s.ok(&["config", "device", "set", "c3", "root", "size=40MiB"]);
    s.ok(&["restart", "c3", "--force"]);
    let (code, out) = s.sh(
        "c3",
        "dd if=/dev/zero of=/root/big bs=1M count=80 2>&1; sync",
    );
    assert!(
        code != 0 || out.contains("quota") || out.contains("space"),
        "{code} {out}"
    );
    assert!(
        out.contains("Disk quota exceeded") || out.contains("No space left"),
        "{out}"
    );
    s.ok(&["exec", "c3", "--", "rm", "-f", "/root/big"]);
    s.ok(&["exec", "c1", "--", "sh", "-c", "echo still > /root/ok"]);
    // A size on a pool without quotas is refused; so is moving the root disk by an edit.
    assert!(s
        .fails(&["config", "device", "set", "d1", "root", "size=10MiB"])
        .contains("cannot limit"));
    assert!(s
        .fails(&["config", "device", "set", "d1", "root", "pool=b"])
        .contains("Cannot update root disk device pool name"));
    // Restored from a snapshot taken before it had a size, the instance keeps its size (a
    // btrfs snapshot carries its source's quota, here none).
    s.ok(&["snapshot", "c1", "before-size"]);
    s.ok(&["config", "device", "set", "c1", "root", "size=40MiB"]);
    s.ok(&["restart", "c1", "--force"]);
    s.ok(&["restore", "c1", "before-size"]);
    let (code, out) = s.sh(
        "c1",
        "dd if=/dev/zero of=/root/big bs=1M count=80 2>&1; sync",
    );
    assert!(
        out.contains("Disk quota exceeded") || out.contains("No space left"),
        "the size holds after the restore: {code} {out}"
    );
    s.ok(&["exec", "c1", "--", "rm", "-f", "/root/big"]);
    s.ok(&["stop", "d1", "--force"]);

    // In use: no delete. Emptied: the pool, its mount and its loop device go.
    assert!(s.fails(&["storage", "delete", "b"]).contains("in use"));
    s.ok(&["delete", "-f", "c1", "c2", "c3", "d1"]);
    assert!(!pool.join("containers/c1").exists());
    assert!(!pool.join("containers-snapshots/c1").exists());
    s.ok(&["storage", "delete", "b"]);
    assert!(!mounted(&pool));
    assert!(loops_of(&img).is_empty(), "no loop device left");
    assert!(!img.exists() && !pool.exists());
    // Non-admin writes are refused by the endpoint table (checked for every role elsewhere);
    // unknown drivers and options get LXD's errors.
    assert!(s
        .fails(&["storage", "create", "z", "zfs"])
        .contains("isn't supported"));
    assert!(s
        .fails(&["storage", "create", "z", "dir", "bogus=1"])
        .contains("Invalid option"));
}

#[tokio::test]
async fn dir_pools_and_debian_lxc_storage() {
    let test = "dir_pools_and_debian_lxc_storage";
    if !tools(test) || !require_tool("lxc", "lxd-client", test) {
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
    lxc_ok(conf, &["storage", "create", "rxd:d2", "dir"]);
    lxc_ok(conf, &["storage", "create", "rxd:bt", "btrfs", "size=1GiB"]);
    let list = lxc_ok(conf, &["storage", "list", "rxd:", "--format", "csv"]);
    assert!(list.contains("d2,dir,"), "{list}");
    assert!(list.contains("bt,btrfs,"), "{list}");
    let shown = lxc_ok(conf, &["storage", "show", "rxd:bt"]);
    assert!(
        shown.contains("driver: btrfs") && shown.contains("size: 1GiB"),
        "{shown}"
    );
    lxc_ok(conf, &["storage", "set", "rxd:bt", "volume.size=100MiB"]);
    assert_eq!(
        lxc_ok(conf, &["storage", "get", "rxd:bt", "volume.size"]).trim(),
        "100MiB"
    );
    let refused = lxc(conf, &["storage", "set", "rxd:bt", "size=5GiB"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot be changed"));
    let info = lxc_ok(conf, &["storage", "info", "rxd:bt"]);
    assert!(info.contains("total space:"), "{info}");
    // lxc launch -s on both pools.
    lxc_ok(conf, &["launch", "rxd:bb", "rxd:x1", "-s", "d2"]);
    lxc_ok(conf, &["launch", "rxd:bb", "rxd:x2", "-s", "bt"]);
    let inst = s.get("/1.0/instances/x1").await;
    assert_eq!(inst["expanded_devices"]["root"]["pool"], "d2");
    assert!(s
        .d
        .dir()
        .join("storage-pools/d2/containers/x1/rootfs/bin/busybox")
        .exists());
    let vols = lxc_ok(
        conf,
        &["storage", "volume", "list", "rxd:bt", "--format", "csv"],
    );
    assert!(vols.contains("container,x2,"), "{vols}");
    // lxc move -s: to the btrfs pool, stopped.
    lxc_ok(conf, &["stop", "rxd:x1", "--force"]);
    lxc_ok(conf, &["move", "rxd:x1", "-s", "bt"]);
    assert!(s
        .d
        .dir()
        .join("storage-pools/bt/containers/x1/rootfs/bin/busybox")
        .exists());
    assert!(!s.d.dir().join("storage-pools/d2/containers/x1").exists());
    lxc_ok(conf, &["start", "rxd:x1"]);
    let del = lxc(conf, &["storage", "delete", "rxd:bt"]);
    assert!(!del.status.success(), "bt holds x1 and x2");
    lxc_ok(conf, &["delete", "-f", "rxd:x1", "rxd:x2"]);
    lxc_ok(conf, &["storage", "delete", "rxd:d2"]);
    lxc_ok(conf, &["storage", "delete", "rxd:bt"]);
    assert!(!s.d.dir().join("storage-pools/d2").exists());
    assert!(loops_of(&s.d.dir().join("disks/bt.img")).is_empty());
    s.d.stop();
}

/// A state directory from before pools (`containers/`, `snapshots/` at its top): moved into
/// the `default` pool at the next start, with nothing lost.
#[tokio::test]
async fn directories_from_before_pools_move_into_the_default_pool() {
    let test = "directories_from_before_pools_move_into_the_default_pool";
    let Some(mut s) = Session::new_with(test, Options::default()).await else {
        return;
    };
    s.ok(&["launch", "bb", "old"]);
    s.ok(&["exec", "old", "--", "sh", "-c", "echo kept > /root/f"]);
    s.ok(&["snapshot", "old", "s"]);
    s.ok(&["stop", "old", "--force"]);
    s.d.stop();
    let state: PathBuf = s.d.dir();
    let pool = state.join("storage-pools/default");
    std::fs::rename(pool.join("containers"), state.join("containers")).unwrap();
    std::fs::rename(pool.join("containers-snapshots"), state.join("snapshots")).unwrap();
    s.d.spawn();
    s.d.wait_ready().await;
    assert!(!state.join("containers").exists() && !state.join("snapshots").exists());
    s.ok(&["start", "old"]);
    assert_eq!(s.ok(&["exec", "old", "--", "cat", "/root/f"]), "kept\n");
    s.ok(&["restore", "old", "s"]);
    assert_eq!(s.ok(&["exec", "old", "--", "cat", "/root/f"]), "kept\n");
    s.ok(&["delete", "-f", "old"]);
}

/// A pool on a host directory: its source must be root's all the way up, and no host-path
/// disk reaches the instances' files there, as none reaches the state directory.
#[tokio::test]
async fn pool_sources_and_their_files_stay_out_of_reach() {
    let test = "pool_sources_and_their_files_stay_out_of_reach";
    let Some(s) = Session::new(test).await else {
        return;
    };
    // A source a host user owns (or could swap) is refused.
    let host = tempfile::Builder::new()
        .prefix("rxd-pool-src-")
        .tempdir()
        .unwrap();
    let users = host.path().join("user");
    std::fs::create_dir(&users).unwrap();
    std::os::unix::fs::chown(&users, Some(65534), Some(65534)).unwrap();
    let src = format!("source={}", users.display());
    assert!(s
        .fails(&["storage", "create", "u", "dir", &src])
        .contains("must be root's"));
    let link = host.path().join("link");
    std::os::unix::fs::symlink(host.path().join("real"), &link).unwrap();
    std::fs::create_dir(host.path().join("real")).unwrap();
    assert!(s
        .fails(&[
            "storage",
            "create",
            "l",
            "dir",
            &format!("source={}", link.display())
        ])
        .contains("symlink"));
    assert!(!s.d.dir().join("storage-pools/u").exists());

    // A root-owned source is taken; its instances' files are out of every disk's reach.
    let good = host.path().join("pool");
    std::fs::create_dir(&good).unwrap();
    s.ok(&[
        "storage",
        "create",
        "h",
        "dir",
        &format!("source={}", good.display()),
    ]);
    s.ok(&["launch", "bb", "c1", "-s", "h"]);
    assert!(good.join("containers/c1/rootfs/bin/busybox").exists());
    s.ok(&["launch", "bb", "spy"]);
    for source in [
        good.join("containers/c1/rootfs"),
        good.clone(),
        host.path().to_path_buf(),
    ] {
        let err = s.fails(&[
            "config",
            "device",
            "add",
            "spy",
            "peek",
            "disk",
            &format!("source={}", source.display()),
            "path=/mnt",
        ]);
        assert!(
            err.contains("Invalid devices"),
            "{}: {err}",
            source.display()
        );
    }
    s.ok(&["delete", "-f", "c1", "spy"]);
    s.ok(&["storage", "delete", "h"]);
    assert!(!mounted(&s.d.dir().join("storage-pools/h")));
    // The administrator's directory is left as it was (only rxd's empty layout went).
    assert!(good.is_dir());
}
