//! A real distribution, as root: Debian 12 (systemd 252, built by
//! `scripts/make-debian-image.sh` and cached under `target/`) launched unprivileged through
//! `rxc` and through Debian's `lxc`. systemd reaches `running` (or `degraded`, reported), its
//! init runs as an unprivileged host uid, `stop` halts it cleanly (SIGRTMIN+3, no kill, no
//! cgroup left behind), it starts again, `reboot` inside restarts it, an init that ignores the
//! halt signal is killed when an explicit `--timeout` runs out (with a warning), and
//! `security.protection.delete` fails the delete while snapshots and renames go on. With lxcfs
//! running (a private one, in a mount namespace of the test's own), the container sees its
//! limits in /proc and `rxc info` says so. The Debian package, installed in such a container,
//! runs rxd as a systemd service whose restart leaves its containers running.

use rxd_testkit::{debian_image, require_root, require_tool, Options, TestDaemon};
use serde_json::{json, Value};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Setup {
    d: TestDaemon,
    conf: tempfile::TempDir,
}

impl Setup {
    async fn new(test: &str) -> Option<Setup> {
        Self::with(test, Options::default()).await
    }

    async fn with(test: &str, opts: Options) -> Option<Setup> {
        if !require_root(test) {
            return None;
        }
        // Built (mmdebstrap installed if need be) unless cached: never a skip.
        let image = debian_image();
        let d = TestDaemon::start_with(opts).await;
        let conf = tempfile::tempdir().unwrap();
        let s = Setup { d, conf };
        s.ok(&["image", "import", image.to_str().unwrap(), "--alias", "d12"]);
        Some(s)
    }

    fn rxc(&self, args: &[&str]) -> Output {
        self.d.rxc(self.conf.path(), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.rxc(args);
        assert!(
            out.status.success(),
            "rxc {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.d.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn pid(&self, name: &str) -> i32 {
        let s = self
            .d
            .unix()
            .get(&format!("/1.0/instances/{name}/state"))
            .await
            .unwrap();
        assert_eq!(s["status"], "Running", "{s}");
        s["pid"].as_i64().unwrap() as i32
    }

    /// Wait (up to 60 s) until `systemctl is-system-running` says `running` or `degraded`;
    /// returns what it said. A `degraded` boot lists its failed units on stderr.
    fn wait_booted(&self, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.rxc(&["exec", name, "--", "systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                if state == "degraded" {
                    let failed = self.rxc(&["exec", name, "--", "systemctl", "--failed"]);
                    eprintln!(
                        "{name} degraded:\n{}",
                        String::from_utf8_lossy(&failed.stdout)
                    );
                }
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: systemd did not finish booting within 60 s (last: {state:?}, {});\nconsole:\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.console(name),
                self.d.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn console(&self, name: &str) -> String {
        std::fs::read_to_string(self.d.dir().join("logs").join(name).join("console.log"))
            .unwrap_or_default()
    }

    /// Set `security.protection.delete` (PATCH, and its operation waited for).
    async fn protect(&self, name: &str, on: bool) {
        let r = self
            .d
            .unix()
            .request(
                rxd_client::Method::PATCH,
                &format!("/1.0/instances/{name}"),
                Some(&json!({"config": {"security.protection.delete": on.to_string()}})),
            )
            .await
            .unwrap();
        let envelope = r.envelope().unwrap();
        assert!(r.status == 200 || r.status == 202, "{envelope:?}");
        if r.status == 202 {
            let done = self
                .d
                .unix()
                .get(&format!("{}/wait?timeout=30", envelope.operation))
                .await
                .unwrap();
            assert_eq!(done["status"], "Success", "{done}");
        }
    }

    async fn warnings(&self) -> Vec<Value> {
        self.d
            .unix()
            .get("/1.0/warnings?recursion=1")
            .await
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn stop_kills(&self) -> Vec<String> {
        self.warnings()
            .await
            .into_iter()
            .filter(|w| w["type"] == "Instance killed after its stop timeout")
            .map(|w| w["last_message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Where the container's own cgroup is in every hierarchy, from its init's memberships (the
/// freezer, which systemd leaves alone on v1; the unified one on v2).
fn container_cgroup(pid: i32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let line = text
        .lines()
        .find(|l| l.split(':').nth(1) == Some("freezer"))
        .or_else(|| text.lines().find(|l| l.starts_with("0::")))
        .unwrap();
    let path = line.splitn(3, ':').nth(2).unwrap();
    path.trim_end_matches("/init.scope").to_owned()
}

/// Directories of `cgroup` that exist in any cgroup hierarchy mounted on the host.
fn cgroups_left(cgroup: &str) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            if fstype != "cgroup" && fstype != "cgroup2" || left.split(' ').nth(3)? != "/" {
                return None;
            }
            let dir = Path::new(left.split(' ').nth(4)?).join(cgroup.trim_start_matches('/'));
            dir.exists().then_some(dir)
        })
        .collect()
}

fn host_uid(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Whether lxcfs is mounted and answering where the helper looks for it.
fn lxcfs_live() -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo.lines().any(|l| {
        l.split_once(" - ").is_some_and(|(left, right)| {
            left.split(' ').nth(4) == Some("/var/lib/lxcfs") && right.starts_with("fuse.lxcfs ")
        })
    }) && std::fs::metadata("/var/lib/lxcfs/proc/uptime").is_ok()
}

#[tokio::test]
async fn debian_boots_unprivileged_stops_cleanly_reboots_and_is_protected() {
    let Some(s) =
        Setup::new("debian_boots_unprivileged_stops_cleanly_reboots_and_is_protected").await
    else {
        return;
    };
    let launched = Instant::now();
    s.ok(&["launch", "d12", "d1"]);
    let started = Instant::now();
    let state = s.wait_booted("d1");
    eprintln!(
        "d1: launch (unpack + start) {:?}, then {state} after {:?}",
        started - launched,
        started.elapsed()
    );
    let pid = s.pid("d1").await;
    let uid = host_uid(pid);
    assert_ne!(uid, 0, "the init runs as host root");
    let base: u32 = s.d.unix().get("/1.0/instances/d1").await.unwrap()["config"]
        ["volatile.idmap.base"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(uid, base, "container root is the start of its block");
    // systemd saw a container and has its own cgroups, and the mounts it expects.
    let virt = s.ok(&["exec", "d1", "--", "systemd-detect-virt"]);
    assert_eq!(virt.trim(), "lxc");
    assert_eq!(s.ok(&["exec", "d1", "--", "hostname"]).trim(), "d1");
    let mounts = s.ok(&["exec", "d1", "--", "cat", "/proc/self/mounts"]);
    for (point, fstype) in [
        ("/sys/fs/cgroup/systemd", "cgroup"),
        ("/run", "tmpfs"),
        ("/run/lock", "tmpfs"),
    ] {
        assert!(
            mounts
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(point) && l.split(' ').nth(2) == Some(fstype)),
            "{point} {fstype}:\n{mounts}"
        );
    }
    let inside = s.ok(&["exec", "d1", "--", "cat", "/proc/1/cgroup"]);
    assert!(inside.contains("name=systemd:/init.scope"), "{inside}");
    let info = s.ok(&["info", "d1"]);
    let lxcfs = if lxcfs_live() { "yes" } else { "no" };
    assert!(info.contains(&format!("LXCFS: {lxcfs}")), "{info}");
    let cgroup = container_cgroup(pid);
    assert!(cgroup.ends_with("/d1"), "{cgroup}");
    assert!(!cgroups_left(&cgroup).is_empty());

    // A clean stop: systemd halts by itself (SIGRTMIN+3 → SIGINT from its reboot(2)); a kill
    // would have recorded a warning. The timeout only bounds the test.
    let stopping = Instant::now();
    s.ok(&["stop", "d1", "--timeout", "60"]);
    eprintln!("d1: clean stop: {:?}", stopping.elapsed());
    assert!(s.stop_kills().await.is_empty(), "{:?}", s.warnings().await);
    assert!(
        s.console("d1")
            .trim_end()
            .ends_with("rxd-shim: init ended by SIGINT"),
        "{}",
        s.console("d1")
    );
    assert!(
        s.d.logs().contains("signal=37"),
        "the daemon did not send SIGRTMIN+3"
    );
    // Nothing left: no cgroup (systemd's own sub-cgroups included), no process.
    assert_eq!(cgroups_left(&cgroup), Vec::<PathBuf>::new());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());

    // It starts again.
    let starting = Instant::now();
    s.ok(&["start", "d1"]);
    let state = s.wait_booted("d1");
    eprintln!("d1: start to {state}: {:?}", starting.elapsed());

    // A restart asked from outside: a clean halt, then a start.
    s.ok(&["restart", "d1", "--timeout", "60"]);
    assert!(s.stop_kills().await.is_empty(), "{:?}", s.warnings().await);
    s.wait_booted("d1");
    let before = s.pid("d1").await;

    // `reboot` inside: the init ends by SIGHUP, rxd starts the container again.
    let _ = s.rxc(&["exec", "d1", "--", "systemctl", "reboot"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = s.d.unix().get("/1.0/instances/d1/state").await.unwrap();
        if st["status"] == "Running" && st["pid"].as_i64() != Some(i64::from(before)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "d1 did not come back after reboot: {st}\n{}\n{}",
            s.console("d1"),
            s.d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.wait_booted("d1");
    assert!(
        s.d.logs()
            .contains("the container rebooted: starting it again"),
        "{}",
        s.d.logs()
    );

    // --force kills a booted systemd: its sub-cgroups go all the same.
    s.ok(&["stop", "d1", "--force"]);
    assert_eq!(cgroups_left(&cgroup), Vec::<PathBuf>::new());

    // security.protection.delete: the delete is accepted (202) and its operation fails with
    // LXD's words; snapshots and renames are not affected.
    s.protect("d1", true).await;
    let r =
        s.d.unix()
            .request(rxd_client::Method::DELETE, "/1.0/instances/d1", None)
            .await
            .unwrap();
    assert_eq!(r.status, 202, "{:?}", r.envelope());
    let op = r.envelope().unwrap().operation;
    let done =
        s.d.unix()
            .get(&format!("{op}/wait?timeout=30"))
            .await
            .unwrap();
    assert_eq!(done["status"], "Failure", "{done}");
    assert_eq!(done["err"], "Container is protected", "{done}");
    let err = s.rxc(&["delete", "d1"]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("Container is protected"),
        "{err:?}"
    );
    s.ok(&["snapshot", "d1", "s1"]);
    s.ok(&["rename", "d1", "d2"]);
    s.ok(&["rename", "d2", "d1"]);
    assert!(s
        .d
        .dir()
        .join("storage-pools/default/containers/d1/rootfs/sbin")
        .exists());

    // An init that ignores the halt signal (pid 1 ignores what it has no handler for): an
    // explicit timeout that runs out kills it and says so in a warning.
    let init = s.conf.path().join("init");
    std::fs::write(&init, "#!/bin/sh\nexec sleep infinity\n").unwrap();
    s.ok(&[
        "file",
        "push",
        init.to_str().unwrap(),
        "d1/sbin/init",
        "--mode",
        "0755",
    ]);
    s.ok(&["start", "d1"]);
    let stopping = Instant::now();
    s.ok(&["stop", "d1", "--timeout", "2"]);
    let took = stopping.elapsed();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    let list = s.ok(&["list", "-f", "csv"]);
    assert!(list.starts_with("d1,STOPPED,"), "{list}");
    let kills = s.stop_kills().await;
    assert_eq!(kills.len(), 1, "{:?}", s.warnings().await);
    assert!(kills[0].contains("d1"), "{kills:?}");

    s.protect("d1", false).await;
    s.ok(&["delete", "d1"]);
    assert_eq!(s.d.unix().get("/1.0/instances").await.unwrap(), json!([]));
    assert_eq!(cgroups_left(&cgroup), Vec::<PathBuf>::new());
}

/// Debian's `lxc` with its own config dir (and `env`), bounded: a command that never ends fails
/// the test rather than hanging it.
fn lxc(conf: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new("lxc");
    cmd.args(args)
        .env("LXD_CONF", conf)
        .env("HOME", conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("lxc {args:?} did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn debian_lxc_launches_and_stops_debian() {
    let test = "debian_lxc_launches_and_stops_debian";
    if !require_tool("lxc", "lxd-client", test) {
        return;
    }
    let Some(s) = Setup::new(test).await else {
        return;
    };
    s.ok(&["config", "set", "core.trust_password", "pw"]);
    let lxd_conf = tempfile::tempdir().unwrap();
    let lxc = |args: &[&str]| lxc(lxd_conf.path(), &[], args);
    let addr = s.d.https_address();
    let out = lxc(&[
        "remote",
        "add",
        "rxd",
        &addr,
        "--accept-certificate",
        "--password",
        "pw",
    ]);
    assert!(out.status.success(), "{out:?}");
    let launched = Instant::now();
    let out = lxc(&["launch", "rxd:d12", "rxd:l1"]);
    assert!(out.status.success(), "{out:?}\n{}", s.d.logs());
    let state = s.wait_booted("l1");
    eprintln!("l1 (lxc): launch to {state}: {:?}", launched.elapsed());
    let out = lxc(&["exec", "rxd:l1", "--", "systemctl", "is-system-running"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.trim() == "running" || said.trim() == "degraded",
        "{out:?}"
    );
    // `lxc stop` sends timeout -1: wait as long as the halt takes; a clean one needs no kill.
    let stopping = Instant::now();
    let out = lxc(&["stop", "rxd:l1"]);
    assert!(out.status.success(), "{out:?}\n{}", s.d.logs());
    eprintln!("l1 (lxc): clean stop: {:?}", stopping.elapsed());
    assert!(s.stop_kills().await.is_empty(), "{:?}", s.warnings().await);
    let out = lxc(&["list", "rxd:", "--format", "csv", "-c", "ns"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "l1,STOPPED");
    let out = lxc(&["start", "rxd:l1"]);
    assert!(out.status.success(), "{out:?}");
    s.wait_booted("l1");
    let out = lxc(&["delete", "--force", "rxd:l1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.d.unix().get("/1.0/instances").await.unwrap(), json!([]));
}

#[tokio::test]
async fn a_host_shutdown_halts_instances_a_daemon_restart_does_not() {
    let Some(mut s) = Setup::new("a_host_shutdown_halts_instances_a_daemon_restart_does_not").await
    else {
        return;
    };
    s.ok(&["launch", "d12", "d1"]);
    // d2's init ignores the halt signal; it gets one second.
    s.ok(&["init", "d12", "d2"]);
    let init = s.conf.path().join("init");
    std::fs::write(&init, "#!/bin/sh\nexec sleep infinity\n").unwrap();
    s.ok(&[
        "file",
        "push",
        init.to_str().unwrap(),
        "d2/sbin/init",
        "--mode",
        "0755",
    ]);
    let r = s
        .d
        .unix()
        .request(
            rxd_client::Method::PATCH,
            "/1.0/instances/d2",
            Some(
                &json!({"config": {"boot.host_shutdown_timeout": "1", "boot.autostart": "false"}}),
            ),
        )
        .await
        .unwrap();
    let envelope = r.envelope().unwrap();
    if r.status == 202 {
        let done =
            s.d.unix()
                .get(&format!("{}/wait?timeout=30", envelope.operation))
                .await
                .unwrap();
        assert_eq!(done["status"], "Success", "{done}");
    } else {
        assert_eq!(r.status, 200, "{envelope:?}");
    }
    s.ok(&["start", "d2"]);
    s.wait_booted("d1");
    let (p1, p2) = (s.pid("d1").await, s.pid("d2").await);
    let cgroup = container_cgroup(p1);

    // A daemon restart (SIGTERM) leaves them running.
    s.d.restart().await;
    assert_eq!((s.pid("d1").await, s.pid("d2").await), (p1, p2));

    // `rxd shutdown`: SIGPWR to the daemon, which halts both, then exits.
    let shutting = Instant::now();
    let out = Command::new(rxd_testkit::bin("rxd"))
        .arg("--dir")
        .arg(s.d.dir())
        .args(["shutdown", "--timeout", "120"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", s.d.logs());
    eprintln!("host shutdown of d1 and d2: {:?}", shutting.elapsed());
    assert!(
        s.d.exits_within(Duration::from_secs(10)),
        "rxd still runs after rxd shutdown"
    );
    for pid in [p1, p2] {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{pid} runs");
    }
    assert!(
        s.console("d1").trim_end().ends_with("init ended by SIGINT"),
        "{}",
        s.console("d1")
    );
    assert!(
        s.console("d2")
            .trim_end()
            .ends_with("init ended by SIGKILL"),
        "{}",
        s.console("d2")
    );
    assert!(
        s.d.logs()
            .contains("Instance d2 did not halt within its 1 s stop timeout"),
        "{}",
        s.d.logs()
    );
    assert!(!s.d.logs().contains("Instance d1 did not halt"));
    assert_eq!(cgroups_left(&cgroup), Vec::<PathBuf>::new());

    // After the host's reboot: d1, which ran, boots again (LXD's rule with boot.autostart
    // unset); d2 (boot.autostart=false) stays stopped, though marked as running when halted.
    s.d.spawn();
    s.d.wait_ready().await;
    s.wait_booted("d1");
    let v = s.d.unix().get("/1.0/instances/d2").await.unwrap();
    assert_eq!(v["status"], "Stopped", "{v}");
    assert_eq!(v["config"]["volatile.last_state.power"], "RUNNING", "{v}");
    s.ok(&["delete", "--force", "d1", "d2"]);
}

/// Debian's lxcfs, for one test: mounted at /var/lib/lxcfs (where the helper looks) inside a
/// private mount namespace with its own /run, so nothing of it shows on the host; the daemon is
/// run in that namespace. Killed on drop (after the daemon, declared before it).
struct PrivateLxcfs {
    child: std::process::Child,
}

impl PrivateLxcfs {
    fn start() -> PrivateLxcfs {
        // unshare and sh exec: the child's pid is lxcfs's.
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs -o mode=755 tmpfs /run && exec lxcfs -f -p /run/lxcfs.pid /var/lib/lxcfs")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lx = PrivateLxcfs { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", lx.pid()))
                .unwrap_or_default();
            let live = mounts
                .lines()
                .any(|l| l.contains(" /var/lib/lxcfs ") && l.contains(" - fuse.lxcfs "));
            if live {
                return lx;
            }
            assert!(Instant::now() < deadline, "lxcfs did not mount:\n{mounts}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Run the daemon in lxcfs's mount namespace.
    fn daemon_options(&self) -> Options {
        Options {
            wrap: vec![
                "nsenter".into(),
                format!("--mount=/proc/{}/ns/mnt", self.pid()),
                "--".into(),
            ],
            ..Options::default()
        }
    }
}

impl Drop for PrivateLxcfs {
    fn drop(&mut self) {
        // With the daemon and its containers gone, lxcfs is the namespace's last process: its
        // mount goes with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn with_lxcfs_running_a_container_sees_its_own_limits() {
    let test = "with_lxcfs_running_a_container_sees_its_own_limits";
    if !require_root(test) || !require_tool("lxcfs", "lxcfs", test) {
        return;
    }
    let lxcfs = PrivateLxcfs::start();
    let Some(s) = Setup::with(test, lxcfs.daemon_options()).await else {
        return;
    };
    s.ok(&["launch", "d12", "x1", "-c", "limits.memory=256MiB"]);
    s.wait_booted("x1");
    let info = s.ok(&["info", "x1"]);
    assert!(info.contains("LXCFS: yes"), "{info}");
    // free reads /proc/meminfo: lxcfs's, which shows the container's limit.
    let free = s.ok(&["exec", "x1", "--", "free", "-m"]);
    let total: u64 = free
        .lines()
        .find_map(|l| l.strip_prefix("Mem:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{free}"));
    assert_eq!(total, 256, "{free}");
    // /proc/uptime counts from the container's start, not the host's.
    let uptime = s.ok(&["exec", "x1", "--", "cat", "/proc/uptime"]);
    let secs: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(secs < 300.0 && secs < host, "{uptime}");
    s.ok(&["delete", "--force", "x1"]);
    drop(s);
    drop(lxcfs);
}

/// What image servers ship: the Debian image split into a metadata tarball and an xz squashfs,
/// in a simplestreams tree served over HTTPS on loopback (a test CA trusted through
/// `SSL_CERT_FILE`). Debian's `lxc launch ss:debian/12` makes the daemon pull, verify and
/// unpack the squashfs, and systemd boots from it.
#[tokio::test]
async fn debian_from_an_image_server_squashfs_boots() {
    let test = "debian_from_an_image_server_squashfs_boots";
    if !require_tool("lxc", "lxd-client", test)
        || !require_tool("mksquashfs", "squashfs-tools", test)
        || !require_root(test)
    {
        return;
    }
    let (meta, squashfs) = rxd_testkit::debian_split_squashfs();
    let work = tempfile::tempdir().unwrap();
    let (root, certs) = (work.path().join("www"), work.path().join("certs"));
    std::fs::create_dir_all(root.join("images/d12")).unwrap();
    std::fs::create_dir_all(root.join("streams/v1")).unwrap();
    std::fs::copy(&meta, root.join("images/d12/lxd.tar.xz")).unwrap();
    std::fs::copy(&squashfs, root.join("images/d12/root.squashfs")).unwrap();
    let sha = |paths: &[&Path]| {
        let mut h = sha2::Sha256::new();
        for p in paths {
            h.update(std::fs::read(p).unwrap());
        }
        hex::encode(h.finalize())
    };
    let combined = sha(&[&meta, &squashfs]);
    let item = |path: &str, file: &Path, ftype: &str| {
        json!({"ftype": ftype, "path": path, "sha256": sha(&[file]),
               "size": std::fs::metadata(file).unwrap().len()})
    };
    let mut meta_item = item("images/d12/lxd.tar.xz", &meta, "lxd.tar.xz");
    meta_item["combined_squashfs_sha256"] = json!(combined);
    let products = json!({
        "content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
        "products": {"debian:12:amd64:default": {
            "aliases": "debian/12/default,debian/12", "arch": "amd64", "os": "Debian",
            "release": "bookworm", "release_title": "12", "variant": "default",
            "versions": {"20261204_05:24": {"items": {
                "lxd.tar.xz": meta_item,
                "root.squashfs": item("images/d12/root.squashfs", &squashfs, "squashfs")}}}}}
    });
    std::fs::write(root.join("streams/v1/images.json"), products.to_string()).unwrap();
    let index = json!({"format": "index:1.0", "index": {"images": {
        "datatype": "image-downloads", "path": "streams/v1/images.json",
        "format": "products:1.0", "products": ["debian:12:amd64:default"]}}});
    std::fs::write(root.join("streams/v1/index.json"), index.to_string()).unwrap();
    let ca = rxd_testkit::ca::TestCa::new("image server CA");
    ca.server(1).write(&certs, "server.crt", "server.key");
    let ca_file = certs.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let server = rxd_testkit::image_server::ImageServer::start(&root, &certs);

    let Some(s) = Setup::with(
        test,
        Options {
            env: vec![("SSL_CERT_FILE".into(), ca_file.display().to_string())],
            ..Options::default()
        },
    )
    .await
    else {
        return;
    };
    s.ok(&["config", "set", "core.trust_password", "pw"]);
    let conf = tempfile::tempdir().unwrap();
    let env = [("SSL_CERT_FILE", ca_file.as_path())];
    let lxc = |args: &[&str]| {
        let out = lxc(conf.path(), &env, args);
        assert!(
            out.status.success(),
            "lxc {args:?}: {out:?}\n{}",
            s.d.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    lxc(&[
        "remote",
        "add",
        "ss",
        &server.url,
        "--protocol=simplestreams",
        "--public",
    ]);
    let addr = s.d.https_address();
    lxc(&[
        "remote",
        "add",
        "rxd",
        &addr,
        "--accept-certificate",
        "--password",
        "pw",
    ]);
    let launched = Instant::now();
    lxc(&["launch", "ss:debian/12", "rxd:d1"]);
    let state = s.wait_booted("d1");
    eprintln!("d1 (squashfs): launch to {state}: {:?}", launched.elapsed());
    assert_eq!(server.requests("/images/d12/root.squashfs"), 1);
    let image =
        s.d.unix()
            .get(&format!("/1.0/images/{combined}"))
            .await
            .unwrap();
    assert_eq!(image["cached"], true, "{image}");
    assert_eq!(image["update_source"]["alias"], "debian/12", "{image}");
    assert_eq!(image["properties"]["type"], "squashfs", "{image}");
    // The tree came through whole: owners, setuid, links.
    let out = s.ok(&[
        "exec",
        "d1",
        "--",
        "stat",
        "-c",
        "%a %U",
        "/usr/bin/su",
        "/var/mail",
        "/usr/bin/mount",
    ]);
    assert_eq!(out, "4755 root\n2775 root\n4755 root\n", "{out}");
    lxc(&["stop", "rxd:d1"]);
    assert!(s.stop_kills().await.is_empty(), "{:?}", s.warnings().await);
    lxc(&["delete", "rxd:d1"]);
}

/// The Debian package installed in a Debian 12 container running systemd (privileged, with
/// nesting, so it may run containers of its own): `systemctl enable --now rxd` starts the
/// unit, the packaged rxd runs an unprivileged container (root's subordinate ids come from the
/// package, since the unit leaves /etc read-only to rxd), and `systemctl restart rxd` and
/// `systemctl stop rxd` end the daemon alone: the container keeps its init and answers `exec`
/// through the new daemon.
#[tokio::test]
async fn the_packaged_unit_keeps_containers_across_systemctl_restart() {
    let test = "the_packaged_unit_keeps_containers_across_systemctl_restart";
    if !require_tool("dpkg-deb", "dpkg", test) {
        return;
    }
    let Some(s) = Setup::new(test).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let bin_dir = rxd_testkit::bin("rxd").parent().unwrap().to_path_buf();
    let out = Command::new("bash")
        .arg(rxd_testkit::candid::repo_root().join("scripts/package.sh"))
        .arg(&bin_dir)
        .arg(work.path())
        .env("RXD_DEB_COMPRESSION", "none")
        .output()
        .unwrap();
    assert!(out.status.success(), "package.sh: {out:?}");
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let bb = work.path().join("bb.tar.gz");
    rxd_testkit::busybox_image(&bb);

    s.ok(&[
        "launch",
        "d12",
        "svc",
        "-c",
        "security.privileged=true",
        "-c",
        "security.nesting=true",
    ]);
    s.wait_booted("svc");
    // Its init is in its own cgroup in every hierarchy, the unified one of a hybrid host too
    // (else a privileged systemd would make its units at the host's root there).
    let svc_init = s.pid("svc").await;
    let cgroup = container_cgroup(svc_init);
    let memberships = std::fs::read_to_string(format!("/proc/{svc_init}/cgroup")).unwrap();
    for line in memberships.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap();
        assert!(path.starts_with(&cgroup), "{line} not under {cgroup}");
    }
    s.ok(&["file", "push", &deb, "svc/root/rxd.deb"]);
    s.ok(&["file", "push", bb.to_str().unwrap(), "svc/root/bb.tar.gz"]);
    let inside = |script: &str| inside_of(&s, script);
    inside("dpkg -i /root/rxd.deb >/dev/null && systemctl enable --now rxd");
    // Ready once its socket answers.
    let ready =
        "for i in $(seq 100); do rxc info >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1";
    inside(ready);
    assert_eq!(
        inside("systemctl is-active rxd; systemctl is-enabled rxd"),
        "active\nenabled\n"
    );
    inside("rxc image import /root/bb.tar.gz --alias bb >/dev/null && rxc launch bb c1 >/dev/null");
    let state = |s: &Setup| -> Value {
        serde_json::from_str(&inside_of(s, "rxc query /1.0/instances/c1/state")).unwrap()
    };
    let before = state(&s);
    assert_eq!(before["status"], "Running", "{before}");
    let init = before["pid"].as_i64().unwrap();
    // Unprivileged: the nested container's root is a subordinate id, not svc's root.
    let uid_map = inside(&format!("cat /proc/{init}/uid_map"));
    assert!(
        uid_map.split_whitespace().nth(1) == Some("1000000"),
        "c1 is not mapped to root's subordinate ids: {uid_map}"
    );
    let main_pid = |s: &Setup| inside_of(s, "systemctl show -p MainPID --value rxd");
    let first = main_pid(&s);

    inside("systemctl restart rxd");
    inside(ready);
    let second = main_pid(&s);
    assert_ne!(first, second, "the daemon was not restarted");
    let after = state(&s);
    assert_eq!(
        (&after["status"], &after["pid"]),
        (&before["status"], &before["pid"]),
        "{after}"
    );
    assert_eq!(inside("rxc exec c1 -- echo alive"), "alive\n");

    // A stop ends the daemon alone; the container runs on and the next start finds it.
    inside("systemctl stop rxd");
    assert_eq!(inside("systemctl is-active rxd || true"), "inactive\n");
    inside(&format!("test -d /proc/{init}"));
    inside("systemctl start rxd");
    inside(ready);
    assert_eq!(state(&s)["pid"], before["pid"]);

    inside("rxc delete --force c1");
    s.ok(&["delete", "--force", "svc"]);
    assert_eq!(cgroups_left(&cgroup), Vec::<PathBuf>::new());
}

/// `sh -ec SCRIPT` in the instance `svc`, which must succeed: its standard output.
fn inside_of(s: &Setup, script: &str) -> String {
    s.ok(&["exec", "svc", "--", "sh", "-ec", script])
}
