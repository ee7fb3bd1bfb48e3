//! The review's critical finding, replayed against the real daemon: while `start` re-shifts a
//! container's files to a new id map, the files API swaps a file and a directory the shift has
//! planned for symlinks to host entries. No host entry may change owner or mode.

use rxd_client::{Client, Method};
use rxd_testkit::{require_root, require_tool, succeeded, TestDaemon};
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// An image whose rootfs has `files` entries under /many: enough to make a shift take a while.
fn big_image(dir: &Path, files: usize) -> std::path::PathBuf {
    let work = dir.join("work");
    let root = work.join("rootfs");
    for d in ["bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "many"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/init")).unwrap();
    std::fs::write(root.join("etc/inittab"), "::sysinit:/bin/true\n").unwrap();
    for i in 0..files {
        std::fs::write(root.join(format!("many/f{i:05}")), "").unwrap();
    }
    std::fs::write(
        work.join("metadata.yaml"),
        format!(
            "architecture: {}\ncreation_date: 1700000000\nproperties:\n  os: busybox\n",
            std::env::consts::ARCH
        ),
    )
    .unwrap();
    let out = dir.join("many.tar.gz");
    let status = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&work)
        .arg("-czf")
        .arg(&out)
        .args(["metadata.yaml", "rootfs"])
        .status()
        .unwrap();
    assert!(status.success());
    out
}

async fn push(unix: &Client, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    let r = unix
        .send(
            Method::POST,
            &format!("/1.0/instances/c1/files?path={path}"),
            headers,
            body.to_vec().into(),
        )
        .await
        .unwrap();
    r.status
}

async fn remove(unix: &Client, path: &str) -> u16 {
    let r = unix
        .send(
            Method::DELETE,
            &format!("/1.0/instances/c1/files?path={path}"),
            &[],
            Default::default(),
        )
        .await
        .unwrap();
    r.status
}

fn owner(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[tokio::test]
async fn a_reshift_raced_through_the_files_api_never_reaches_host_files() {
    let test = "a_reshift_raced_through_the_files_api_never_reaches_host_files";
    if !require_root(test) || !require_tool("busybox", "busybox-static", test) {
        return;
    }
    // The chown walk runs only where files are shifted on disk (a filesystem that cannot be
    // mounted idmapped): make this daemon act so.
    let d = TestDaemon::start_with(rxd_testkit::Options {
        env: vec![("RXD_DANGER_NO_IDMAPPED_MOUNTS".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let image = big_image(tmp.path(), 40_000);
    let conf = tmp.path().join("conf");
    let rxc = |args: &[&str]| {
        succeeded(args, d.rxc(&conf, args));
    };
    rxc(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "--alias",
        "many",
    ]);
    rxc(&["init", "many", "c1"]);

    // Host entries an attacker would like to own: a root-only file and a directory.
    let host = tmp.path().join("host");
    std::fs::create_dir_all(host.join("dir")).unwrap();
    for f in ["victim", "dir/f"] {
        std::fs::write(host.join(f), "host secret").unwrap();
        std::fs::set_permissions(host.join(f), PermissionsExt::from_mode(0o600)).unwrap();
    }
    let victim = host.join("victim").display().to_string();
    let host_dir = host.join("dir").display().to_string();

    let unix = d.unix();
    // Two rounds: to an isolated map and back, each raced the same way.
    for (round, isolated) in [(0, "true"), (1, "false")] {
        let file = format!("/many/zz-victim{round}");
        let dir = format!("/many/zz-dir{round}");
        let file_h = [("x-lxd-mode", "06777"), ("x-lxd-type", "file")];
        assert_eq!(push(&unix, &file, &file_h, b"x").await, 200);
        assert_eq!(
            push(&unix, &dir, &[("x-lxd-type", "directory")], b"").await,
            200
        );
        assert_eq!(push(&unix, &format!("{dir}/f"), &file_h, b"x").await, 200);
        let r = unix
            .request(
                Method::PATCH,
                "/1.0/instances/c1",
                Some(&json!({"config": {"security.idmap.isolated": isolated}})),
            )
            .await
            .unwrap();
        assert!(r.status < 300, "{:?}", r.envelope());
        let root_uid = |r: rxd_client::Reply| r.header("x-lxd-uid").map(str::to_owned);
        let before = root_uid(
            unix.send(
                Method::GET,
                "/1.0/instances/c1/files?path=/",
                &[],
                Default::default(),
            )
            .await
            .unwrap(),
        );

        let op = unix
            .request(
                Method::PUT,
                "/1.0/instances/c1/state",
                Some(&json!({"action": "start", "timeout": 30})),
            )
            .await
            .unwrap()
            .metadata()
            .unwrap();
        let id = op["id"].as_str().unwrap().to_owned();
        // The shift has begun once the root directory's owner changes.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = root_uid(
                unix.send(
                    Method::GET,
                    "/1.0/instances/c1/files?path=/",
                    &[],
                    Default::default(),
                )
                .await
                .unwrap(),
            );
            if now != before || Instant::now() > deadline {
                break;
            }
        }
        // The swaps: answered only once the shift is over, or refused; either way harmless.
        let target = [("x-lxd-type", "symlink")];
        remove(&unix, &file).await;
        push(&unix, &file, &target, victim.as_bytes()).await;
        remove(&unix, &format!("{dir}/f")).await;
        remove(&unix, &dir).await;
        push(&unix, &dir, &target, host_dir.as_bytes()).await;

        let done = unix
            .get(&format!("/1.0/operations/{id}/wait?timeout=60"))
            .await
            .unwrap();
        assert_eq!(done["status"], "Success", "round {round}: {done}");
        for f in ["victim", "dir/f"] {
            assert_eq!(
                owner(&host.join(f)),
                (0, 0, 0o600),
                "round {round}: the host's {f} changed"
            );
        }
        let r = unix
            .request(
                Method::PUT,
                "/1.0/instances/c1/state",
                Some(&json!({"action": "stop", "force": true})),
            )
            .await
            .unwrap();
        let id = r.metadata().unwrap()["id"].as_str().unwrap().to_owned();
        unix.get(&format!("/1.0/operations/{id}/wait?timeout=30"))
            .await
            .unwrap();
    }
    assert_eq!(
        d.logs().matches("container filesystem remapped").count(),
        2,
        "each round shifted the files"
    );
    rxc(&["delete", "-f", "c1"]);
}
