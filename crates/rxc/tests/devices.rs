//! Devices that reach the host, on a real daemon with real unprivileged containers: a host
//! folder shared into two containers (owners shown as `nobody` without `shift`, as they are with
//! `shift=true`, host owners untouched either way), read-only mounts the container's root cannot
//! make writable, `nosuid,nodev`, hot-plug and unplug of a disk and of a character device, and
//! who may add which device: an operator refused a host path in a plain project, allowed under
//! `restricted.devices.disk.paths`, refused through a symlink or `..` that leaves it, and a
//! profile edit that would give a restricted project's instances a forbidden device refused
//! whole.

use rxd_client::Method;
use rxd_testkit::api::{ok, outcome, trust_restricted};
use rxd_testkit::cgroup::cgroup_file;
use rxd_testkit::client_identity;
use rxd_testkit::session::{lxc_ok, Session};
use serde_json::json;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::Path;

/// A host folder with files of three owners, one of them setuid.
fn shared_folder(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("root-file"), b"root's\n").unwrap();
    std::fs::write(dir.join("user-file"), b"user's\n").unwrap();
    chown(dir.join("user-file"), Some(1000), Some(1000)).unwrap();
    std::fs::write(dir.join("suid"), b"#!/bin/sh\nid -u\n").unwrap();
    std::fs::set_permissions(dir.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
}

fn owners(dir: &Path) -> Vec<(String, u32, u32)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.uid(),
                m.gid(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_host_folder_shared_into_two_containers_with_and_without_shift() {
    let Some(mut s) =
        Session::new("a_host_folder_shared_into_two_containers_with_and_without_shift").await
    else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let shared = host.path().join("shared");
    shared_folder(&shared);
    let before = owners(&shared);
    let src = format!("source={}", shared.display());

    // Without shift: a plain bind; host root's files are nobody's inside.
    s.ok(&["init", "bb", "plain"]);
    s.ok(&[
        "config",
        "device",
        "add",
        "plain",
        "data",
        "disk",
        &src,
        "path=/mnt/data",
    ]);
    s.ok(&["start", "plain"]);
    let (code, out) = s.sh(
        "plain",
        "stat -c '%n %u %g' /mnt/data/root-file /mnt/data/user-file && cat /mnt/data/root-file",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/mnt/data/root-file 65534 65534"), "{out}");
    assert!(out.contains("/mnt/data/user-file 65534 65534"), "{out}");
    assert!(out.contains("root's"), "{out}");
    // Container root is nobody to host root's directory: no writes into it.
    let (code, out) = s.sh("plain", "touch /mnt/data/new");
    assert_ne!(code, 0, "{out}");
    // nosuid,nodev unless an administrator says otherwise.
    let (_, mounts) = s.sh("plain", "grep ' /mnt/data ' /proc/self/mountinfo");
    assert!(
        mounts.contains("nosuid") && mounts.contains("nodev"),
        "{mounts}"
    );

    // With shift=true (an administrator's choice): the container's ids are the host's there.
    s.ok(&["init", "bb", "shifted"]);
    s.ok(&[
        "config",
        "device",
        "add",
        "shifted",
        "data",
        "disk",
        &src,
        "path=/mnt/data",
        "shift=true",
    ]);
    s.ok(&["start", "shifted"]);
    let (code, out) = s.sh(
        "shifted",
        "stat -c '%n %u %g' /mnt/data/root-file /mnt/data/user-file && echo hi > /mnt/data/from-shifted",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/mnt/data/root-file 0 0"), "{out}");
    assert!(out.contains("/mnt/data/user-file 1000 1000"), "{out}");
    // What the container's root wrote is host root's; nothing else changed owner.
    let written = std::fs::metadata(shared.join("from-shifted")).unwrap();
    assert_eq!((written.uid(), written.gid()), (0, 0));
    std::fs::remove_file(shared.join("from-shifted")).unwrap();
    assert_eq!(owners(&shared), before);
    // The setuid file stays setuid on the host, and does not run setuid inside (nosuid).
    let (_, out) = s.sh("shifted", "grep ' /mnt/data ' /proc/self/mountinfo");
    assert!(out.contains("nosuid"), "{out}");

    // Read-only: no writes, and the container's root cannot remount it writable.
    s.ok(&["stop", "shifted", "--force"]);
    s.ok(&[
        "config",
        "device",
        "set",
        "shifted",
        "data",
        "readonly=true",
    ]);
    s.ok(&["start", "shifted"]);
    let (code, out) = s.sh("shifted", "touch /mnt/data/x");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let (code, out) = s.sh(
        "shifted",
        "mount -o remount,bind,rw /mnt/data && touch /mnt/data/x",
    );
    assert_ne!(code, 0, "{out}");
    assert!(!shared.join("x").exists());

    // Hot-plug into the running container, read-only and locked as at start; then unplug.
    s.ok(&[
        "config",
        "device",
        "add",
        "plain",
        "hot",
        "disk",
        &src,
        "path=/srv/hot",
        "readonly=true",
    ]);
    let (code, out) = s.sh("plain", "cat /srv/hot/user-file");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("user's"), "{out}");
    let (code, out) = s.sh("plain", "mount -o remount,bind,rw /srv/hot");
    assert_ne!(code, 0, "{out}");
    s.ok(&["config", "device", "remove", "plain", "hot"]);
    let (code, out) = s.sh("plain", "ls /srv/hot");
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("user-file"), "{out}");
    // A writable one keeps nosuid,nodev too; and whatever the container stacks over it goes
    // with it on unplug.
    s.ok(&[
        "config",
        "device",
        "add",
        "plain",
        "rw",
        "disk",
        &src,
        "path=/srv/rw",
    ]);
    let (code, out) = s.sh("plain", "mount -o remount,bind,suid,dev /srv/rw");
    assert_ne!(code, 0, "{out}");
    let (code, out) = s.sh("plain", "mount -t tmpfs cover /srv/rw");
    assert_eq!(code, 0, "{out}");
    s.ok(&["config", "device", "remove", "plain", "rw"]);
    let (_, out) = s.sh("plain", "grep ' /srv/rw ' /proc/self/mountinfo; ls /srv/rw");
    assert!(
        !out.contains("/srv/rw") && !out.contains("user-file"),
        "{out}"
    );
    // Nor can the container's root hide it by moving what its path leads to: the unplug says
    // the mount stays rather than report it gone.
    s.ok(&[
        "config",
        "device",
        "add",
        "plain",
        "moved",
        "disk",
        &src,
        "path=/srv/in/x",
    ]);
    let (code, out) = s.sh(
        "plain",
        "mv /srv/in /srv/away && mkdir -p /srv/other/x && ln -s /srv/other /srv/in && cat /srv/away/x/root-file",
    );
    assert_eq!(code, 0, "{out}");
    let e = s.fails(&["config", "device", "remove", "plain", "moved"]);
    assert!(e.contains("was moved inside the container"), "{e}");
    // A disk the container started with comes out of the running container too (its flags
    // stay locked, as checked above, but the mount is not locked to its parent).
    let (code, out) = s.sh("plain", "cat /mnt/data/root-file");
    assert_eq!(code, 0, "{out}");
    s.ok(&["config", "device", "remove", "plain", "data"]);
    assert!(!s
        .ok(&["config", "device", "show", "plain"])
        .contains("data:"));
    let (_, out) = s.sh(
        "plain",
        "grep ' /mnt/data ' /proc/self/mountinfo; ls /mnt/data",
    );
    assert!(
        !out.contains("/mnt/data") && !out.contains("root-file"),
        "{out}"
    );

    // A character device, hot-plugged and unplugged (its cgroup rule with it).
    let (code, _) = s.sh("plain", "test -e /dev/fuse");
    assert_ne!(code, 0);
    let pid = s.pid("plain").await;
    let allowed = || cgroup_file(pid, "devices", "devices.list");
    s.ok(&[
        "config",
        "device",
        "add",
        "plain",
        "fuse",
        "unix-char",
        "source=/dev/fuse",
        "mode=0666",
    ]);
    // `<` opens without creating (`<>` would make a plain file where the node was).
    let (code, out) = s.sh(
        "plain",
        "stat -c '%t:%T %a' /dev/fuse && exec 3</dev/fuse && echo opened",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("a:e5 666") && out.contains("opened"), "{out}");
    assert!(allowed().contains("c 10:229 rwm"), "{}", allowed());
    s.ok(&["config", "device", "remove", "plain", "fuse"]);
    let (code, out) = s.sh("plain", "test -e /dev/fuse");
    assert_ne!(code, 0, "{out}");
    assert!(!allowed().contains("c 10:229"), "{}", allowed());
    // A block device, under another name (a loop device node: nothing is attached to it).
    s.ok(&[
        "config",
        "device",
        "add",
        "plain",
        "disk0",
        "unix-block",
        "source=/dev/loop0",
        "path=/dev/xvdb",
    ]);
    let (code, out) = s.sh("plain", "stat -c '%F %t:%T' /dev/xvdb");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("block special file 7:0"), "{out}");
    assert!(allowed().contains("b 7:0 rwm"), "{}", allowed());
    s.ok(&["config", "device", "remove", "plain", "disk0"]);
    assert!(!allowed().contains("b 7:0"), "{}", allowed());
    let e = s.fails(&[
        "config",
        "device",
        "add",
        "plain",
        "wrong",
        "unix-block",
        "source=/dev/fuse",
    ]);
    assert!(e.contains("is not a block device"), "{e}");
    // At start, from a profile: the same device, cold-plugged.
    s.ok(&["profile", "create", "fuse"]);
    s.ok(&[
        "profile",
        "device",
        "add",
        "fuse",
        "fuse",
        "unix-char",
        "source=/dev/fuse",
    ]);
    s.ok(&["launch", "bb", "withfuse", "-p", "default", "-p", "fuse"]);
    let (code, out) = s.sh("withfuse", "exec 3</dev/fuse && echo opened");
    assert_eq!(code, 0, "{out}");
    // A profile's new device reaches the running instances using it.
    s.ok(&[
        "profile",
        "device",
        "add",
        "fuse",
        "share",
        "disk",
        &src,
        "path=/mnt/share",
    ]);
    let (code, out) = s.sh("withfuse", "cat /mnt/share/root-file");
    assert_eq!(code, 0, "{out}");
    s.ok(&["profile", "device", "remove", "fuse", "share"]);
    let (code, _) = s.sh("withfuse", "test -e /mnt/share/root-file");
    assert_ne!(code, 0);

    // A missing source: skipped when not required, the start refused when required.
    let missing = format!("source={}", host.path().join("missing").display());
    s.ok(&["init", "bb", "optional"]);
    s.ok(&[
        "config",
        "device",
        "add",
        "optional",
        "m",
        "disk",
        &missing,
        "path=/mnt/m",
        "required=false",
    ]);
    s.ok(&["start", "optional"]);
    s.ok(&["stop", "optional", "--force"]);
    s.ok(&["config", "device", "set", "optional", "m", "required=true"]);
    let e = s.fails(&["start", "optional"]);
    assert!(e.contains("Missing source path"), "{e}");
    assert_eq!(s.state("optional").await["status"], "Stopped");

    // Host owners untouched by all of it.
    assert_eq!(owners(&shared), before);

    // Sources that are refused whoever asks: the state dir, a symlink planted by a user.
    let state = s.d.dir();
    let e = s.fails(&[
        "config",
        "device",
        "add",
        "plain",
        "state",
        "disk",
        &format!("source={}", state.display()),
        "path=/mnt/state",
    ]);
    assert!(e.contains("which no device may reach"), "{e}");
    let planted = host.path().join("planted");
    std::os::unix::fs::symlink(&state, &planted).unwrap();
    std::os::unix::fs::lchown(&planted, Some(1000), Some(1000)).unwrap();
    let e = s.fails(&[
        "config",
        "device",
        "add",
        "plain",
        "planted",
        "disk",
        &format!("source={}", planted.display()),
        "path=/mnt/p",
    ]);
    assert!(e.contains("not owned by root"), "{e}");
    let e = s.fails(&[
        "config",
        "device",
        "add",
        "plain",
        "proc",
        "disk",
        &src,
        "path=/proc/sys",
    ]);
    assert!(e.contains("under /proc or /sys"), "{e}");

    // Debian's lxc adds and lists devices the same way.
    s.d.enable_https().await;
    s.ok(&["config", "set", "core.trust_password", "s3cret"]);
    let c = tempfile::tempdir().unwrap();
    let conf = c.path();
    let address = s.d.https_address();
    let remote = [
        "remote",
        "add",
        "rxd",
        &address,
        "--accept-certificate",
        "--password",
        "s3cret",
    ];
    lxc_ok(conf, &remote);
    let add = [
        "config",
        "device",
        "add",
        "rxd:plain",
        "fromlxc",
        "disk",
        &src,
        "path=/mnt/lxc",
    ];
    lxc_ok(conf, &add);
    let shown = lxc_ok(conf, &["config", "device", "show", "rxd:plain"]);
    assert!(
        shown.contains("fromlxc:") && shown.contains("path: /mnt/lxc"),
        "{shown}"
    );
    let (code, out) = s.sh("plain", "cat /mnt/lxc/root-file");
    assert_eq!(code, 0, "{out}");
    lxc_ok(
        conf,
        &["config", "device", "remove", "rxd:plain", "fromlxc"],
    );
}

/// Unmounts (lazily) what a test mounted on the host, however the test ends.
struct HostMount(std::path::PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn recursive_and_unbindable_disks_mount_at_start_and_come_out_while_running() {
    let test = "recursive_and_unbindable_disks_mount_at_start_and_come_out_while_running";
    let Some(s) = Session::new(test).await else {
        return;
    };
    // A host folder with a tmpfs mounted inside it.
    let host = tempfile::tempdir().unwrap();
    let top = host.path().join("top");
    std::fs::create_dir_all(top.join("sub")).unwrap();
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(top.join("top-file"), b"top\n").unwrap();
    let made = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "rxd-test-sub"])
        .arg(top.join("sub"))
        .status()
        .unwrap();
    assert!(made.success());
    let _mounted = HostMount(top.join("sub"));
    std::fs::write(top.join("sub/sub-file"), b"sub\n").unwrap();
    let src = format!("source={}", top.display());

    // At start (mounted into the container's locked namespace, each with its flags locked).
    s.ok(&["init", "bb", "c"]);
    for (name, path, how) in [
        ("r", "path=/mnt/r", "recursive=true"),
        ("u", "path=/mnt/u", "propagation=unbindable"),
    ] {
        s.ok(&[
            "config", "device", "add", "c", name, "disk", &src, path, how,
        ]);
    }
    s.ok(&["start", "c"]);
    let (code, out) = s.sh(
        "c",
        "cat /mnt/r/top-file /mnt/r/sub/sub-file /mnt/u/top-file",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["top", "sub", "top"]
    );
    let (_, mounts) = s.sh("c", "grep ' /mnt/u ' /proc/self/mountinfo");
    assert!(mounts.contains("unbindable"), "{mounts}");
    let (code, out) = s.sh("c", "mount -o remount,bind,suid,dev /mnt/r/sub");
    assert_ne!(code, 0, "the submount's flags are locked too: {out}");
    // Both come out of the running container, the submount with its parent.
    s.ok(&["config", "device", "remove", "c", "r"]);
    s.ok(&["config", "device", "remove", "c", "u"]);
    let (_, mounts) = s.sh("c", "grep -E ' /mnt/(r|u)[ /]' /proc/self/mountinfo");
    assert!(mounts.trim().is_empty(), "{mounts}");

    // Hot-plugged the same way.
    s.ok(&[
        "config",
        "device",
        "add",
        "c",
        "r2",
        "disk",
        &src,
        "path=/mnt/r2",
        "recursive=true",
    ]);
    s.ok(&[
        "config",
        "device",
        "add",
        "c",
        "u2",
        "disk",
        &src,
        "path=/mnt/u2",
        "propagation=unbindable",
    ]);
    let (code, out) = s.sh("c", "cat /mnt/r2/sub/sub-file /mnt/u2/top-file");
    assert_eq!(code, 0, "{out}");
    s.ok(&["delete", "c", "--force"]);
}

#[tokio::test]
async fn operators_get_host_paths_only_beneath_their_projects_prefixes() {
    let Some(s) =
        Session::new("operators_get_host_paths_only_beneath_their_projects_prefixes").await
    else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let allowed = host.path().join("allowed");
    shared_folder(&allowed.join("data"));
    let outside = host.path().join("outside");
    shared_folder(&outside);
    // Root's own symlink inside the prefix that leads out of it, and a relative one that stays.
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
    std::os::unix::fs::symlink("data", allowed.join("inner")).unwrap();

    let unix = s.d.unix();
    let operator = client_identity("operator");
    trust_restricted(&unix, &operator, &["default"]).await;
    let op = s.d.https(Some(&operator));
    s.ok(&["launch", "bb", "c1"]);
    let disk = |src: &Path, path: &str| json!({"devices": {"d": {"type": "disk", "source": src.to_str().unwrap(), "path": path}}});

    // A plain project: host paths are the administrator's alone.
    let e = outcome(
        &op,
        Method::PATCH,
        "/1.0/instances/c1",
        disk(&allowed.join("data"), "/mnt"),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("Only the server administrator may add disk devices"),
        "{e}"
    );

    // Restricted, with host paths allowed beneath one prefix.
    ok(
        &unix,
        Method::PATCH,
        "/1.0/projects/default",
        json!({"config": {
            "restricted": "true",
            "restricted.devices.disk": "allow",
            "restricted.devices.disk.paths": allowed.to_str().unwrap(),
        }}),
    )
    .await;
    outcome(
        &op,
        Method::PATCH,
        "/1.0/instances/c1",
        disk(&allowed.join("data"), "/mnt"),
    )
    .await
    .unwrap();
    let (code, out) = s.sh("c1", "cat /mnt/user-file");
    assert_eq!(code, 0, "{out}");
    // Through a symlink that stays beneath: fine; one that leaves: refused, root's or not.
    outcome(
        &op,
        Method::PATCH,
        "/1.0/instances/c1",
        disk(&allowed.join("inner"), "/mnt"),
    )
    .await
    .unwrap();
    let e = outcome(
        &op,
        Method::PATCH,
        "/1.0/instances/c1",
        disk(&allowed.join("escape"), "/mnt"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("leaves"), "{e}");
    // `..` never reaches the walk: a source must be a normal path.
    let dotdot = allowed.join("data/../../outside");
    let e = outcome(
        &op,
        Method::PATCH,
        "/1.0/instances/c1",
        disk(&dotdot, "/mnt"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("Invalid source"), "{e}");
    let e = outcome(
        &op,
        Method::PATCH,
        "/1.0/instances/c1",
        disk(&outside, "/mnt"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("outside its allowed prefixes"), "{e}");
    // shift stays the administrator's, and LXD refuses it under restricted paths anyway.
    let mut shifted = disk(&allowed.join("data"), "/mnt");
    shifted["devices"]["d"]["shift"] = json!("true");
    let e = outcome(&op, Method::PATCH, "/1.0/instances/c1", shifted)
        .await
        .unwrap_err();
    assert!(e.contains("shift"), "{e}");
    // Unix devices: blocked in restricted projects unless allowed.
    let fuse = json!({"devices": {"f": {"type": "unix-char", "source": "/dev/fuse"}}});
    let e = outcome(&op, Method::PATCH, "/1.0/instances/c1", fuse)
        .await
        .unwrap_err();
    assert!(e.contains("restricted.devices.unix-char"), "{e}");

    // A profile edit that would give the project's instances a forbidden device: refused
    // whole, for an administrator too (restrictions bind everyone).
    let e = s.fails(&[
        "profile",
        "device",
        "add",
        "default",
        "out",
        "disk",
        &format!("source={}", outside.display()),
        "path=/mnt/out",
    ]);
    assert!(e.contains("outside its allowed prefixes"), "{e}");
    let profile = s.get("/1.0/profiles/default").await;
    assert!(profile["devices"].get("out").is_none(), "{profile}");
}

/// A TCP server on the host's loopback that answers every connection with `reply`.
fn host_server(reply: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = std::io::Write::write_all(&mut conn, reply.as_bytes());
        }
    });
    port
}

fn read_all(mut stream: impl std::io::Read + std::io::Write, send: &[u8]) -> String {
    stream.write_all(send).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

fn http_get(port: u16) -> Result<String, std::io::Error> {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    Ok(read_all(stream, b"GET /index.html HTTP/1.0\r\n\r\n"))
}

#[tokio::test]
async fn proxies_forward_tcp_and_unix_both_ways_and_outlive_a_daemon_restart() {
    let Some(mut s) =
        Session::new("proxies_forward_tcp_and_unix_both_ways_and_outlive_a_daemon_restart").await
    else {
        return;
    };
    s.ok(&["launch", "bb", "c1"]);
    let (code, out) = s.sh(
        "c1",
        "ip link set lo up && mkdir -p /srv && echo served-from-c1 > /srv/index.html && httpd -p 127.0.0.1:80 -h /srv",
    );
    assert_eq!(code, 0, "{out}");

    // Host TCP port -> the container's web server.
    let port = rxd_testkit::free_port();
    let listen = format!("listen=tcp:127.0.0.1:{port}");
    s.ok(&[
        "config",
        "device",
        "add",
        "c1",
        "web",
        "proxy",
        &listen,
        "connect=tcp:127.0.0.1:80",
    ]);
    let page = http_get(port).unwrap();
    assert!(page.contains("served-from-c1"), "{page}");

    // The container -> a host TCP server (bind=instance).
    let host_port = host_server("hello-from-host\n");
    let connect = format!("connect=tcp:127.0.0.1:{host_port}");
    s.ok(&[
        "config",
        "device",
        "add",
        "c1",
        "out",
        "proxy",
        "listen=tcp:127.0.0.1:9000",
        &connect,
        "bind=instance",
    ]);
    let (code, out) = s.sh("c1", "nc 127.0.0.1 9000 </dev/null");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello-from-host"), "{out}");

    // Unix sockets both ways: a host socket -> a socket inside the container, which another
    // proxy forwards back out to a host TCP server.
    let sockets = tempfile::tempdir().unwrap();
    let host_sock = sockets.path().join("app.sock");
    let back_port = host_server("through-two-unix-sockets\n");
    s.ok(&[
        "config",
        "device",
        "add",
        "c1",
        "inner",
        "proxy",
        "listen=unix:/run/app.sock",
        &format!("connect=tcp:127.0.0.1:{back_port}"),
        "bind=instance",
    ]);
    s.ok(&[
        "config",
        "device",
        "add",
        "c1",
        "sock",
        "proxy",
        &format!("listen=unix:{}", host_sock.display()),
        "connect=unix:/run/app.sock",
    ]);
    let got = read_all(
        std::os::unix::net::UnixStream::connect(&host_sock).unwrap(),
        b"",
    );
    assert!(got.contains("through-two-unix-sockets"), "{got}");
    // The forwarder of a TCP-only proxy runs as nobody, with no capability.
    let bundle = s.d.dir().join("runtime/bundles/c1");
    let pid_of = |device: &str| -> i32 {
        let dir = &bundle;
        let text = std::fs::read_to_string(dir.join(format!("proxy.{device}.pid"))).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["pid"]
            .as_i64()
            .unwrap() as i32
    };
    let web = pid_of("web");
    let status = std::fs::read_to_string(format!("/proc/{web}/status")).unwrap();
    assert!(
        status.contains("Uid:\t65534\t65534\t65534\t65534"),
        "{status}"
    );
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");

    // A daemon restart leaves the forwarders running and in use.
    s.d.restart().await;
    assert_eq!(pid_of("web"), web);
    let page = http_get(port).unwrap();
    assert!(page.contains("served-from-c1"), "{page}");
    let got = read_all(
        std::os::unix::net::UnixStream::connect(&host_sock).unwrap(),
        b"",
    );
    assert!(got.contains("through-two-unix-sockets"), "{got}");

    // Unplugged: the forwarder goes, the port is closed.
    s.ok(&["config", "device", "remove", "c1", "web"]);
    for _ in 0..50 {
        if !std::path::Path::new(&format!("/proc/{web}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!std::path::Path::new(&format!("/proc/{web}")).exists());
    assert!(http_get(port).is_err());

    // And with the container: a stop ends every forwarder.
    let sock = pid_of("sock");
    s.ok(&["stop", "c1", "--force"]);
    for _ in 0..50 {
        if !std::path::Path::new(&format!("/proc/{sock}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!std::path::Path::new(&format!("/proc/{sock}")).exists());
    // Started again with the container.
    s.ok(&["start", "c1"]);
    assert_ne!(pid_of("sock"), sock);
}
