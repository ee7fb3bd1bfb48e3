//! Real containers, as root: launch through `rxc`, then look at them from the host. The init's
//! uid map, its host uid, its namespaces, seccomp and capabilities, read-only /proc/sys, the
//! device set, disjoint isolated blocks, privileged maps, the process limit against a fork bomb,
//! stop/start/restart/freeze/delete, containers outliving a daemon restart (and a crash), and
//! Debian's `lxc launch|list|stop` against rxd.

use rxd_client::{Client, Method};
use rxd_testkit::{bin, require_tool};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rxd_testkit::session::Session as Setup;

/// A session whose daemon keeps files shifted on disk (`shifted`: the fallback for filesystems
/// that cannot be mounted idmapped) or in container ids behind idmapped mounts (the default).
async fn setup(test: &str, shifted: bool) -> Option<Setup> {
    let mut opts = rxd_testkit::Options::default();
    if shifted {
        opts.env
            .push(("RXD_DANGER_NO_IDMAPPED_MOUNTS".into(), "1".into()));
    }
    Setup::new_with(test, opts).await
}

/// The init's mount of `/`, as `/proc/<pid>/mountinfo` shows it.
fn root_mount(pid: i32) -> String {
    proc_file(pid, "mountinfo")
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_default()
        .to_owned()
}

fn proc_file(pid: i32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap()
}

/// `/proc/<pid>/uid_map` as (inside, outside, count) triples.
fn map_of(pid: i32, file: &str) -> Vec<(u64, u64, u64)> {
    proc_file(pid, file)
        .lines()
        .map(|l| {
            let f: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (f[0], f[1], f[2])
        })
        .collect()
}

fn status_field(pid: i32, field: &str) -> String {
    proc_file(pid, "status")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap()
        .trim()
        .to_owned()
}

fn base(v: &Value) -> u64 {
    v["config"]["volatile.idmap.base"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_unprivileged_container_runs_confined() {
    let Some(s) = Setup::new("an_unprivileged_container_runs_confined").await else {
        return;
    };
    let out = s.ok(&["launch", "bb", "c1"]);
    assert!(out.contains("Starting c1"), "{out}");
    let list = s.ok(&["list", "-f", "csv"]);
    assert!(list.starts_with("c1,RUNNING,"), "{list}");

    let inst = s.d.unix().get("/1.0/instances/c1").await.unwrap();
    let host_base = base(&inst);
    assert!(host_base >= 65536);
    assert_eq!(inst["status"], "Running");
    assert_eq!(
        inst["config"]["volatile.idmap.current"],
        inst["config"]["volatile.idmap.next"]
    );
    let pid = s.pid("c1").await;

    // The map is the shared block, and the init is an ordinary host user.
    assert_eq!(map_of(pid, "uid_map"), vec![(0, host_base, 65536)]);
    assert_eq!(map_of(pid, "gid_map").len(), 1);
    let uids: Vec<u64> = status_field(pid, "Uid")
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(uids, vec![host_base; 4]);
    // Its own namespaces, all of them.
    for ns in ["user", "pid", "mnt", "uts", "ipc", "net", "cgroup"] {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(mine, its, "{ns} namespace shared with the host");
    }
    // A seccomp filter, and no capability to load modules, do raw IO or set the clock.
    assert_eq!(status_field(pid, "Seccomp"), "2");
    let cap_eff = u64::from_str_radix(&status_field(pid, "CapBnd"), 16).unwrap();
    for (cap, bit) in [
        ("SYS_MODULE", 16),
        ("SYS_RAWIO", 17),
        ("SYS_TIME", 25),
        ("MKNOD", 27),
    ] {
        assert_eq!(cap_eff & (1 << bit), 0, "CAP_{cap} kept");
    }
    assert_ne!(cap_eff & (1 << 22), 0, "CAP_SYS_BOOT (to halt) dropped");
    // /proc/sys and /sys read-only; no device nodes beyond the standard set.
    let mounts = proc_file(pid, "mountinfo");
    for target in ["/proc/sys", "/sys"] {
        let line = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(target))
            .unwrap_or_else(|| panic!("{target} not mounted:\n{mounts}"));
        let opts = line.split_whitespace().nth(5).unwrap();
        assert!(opts.split(',').any(|o| o == "ro"), "{target} is {opts}");
    }
    let mut devices: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root/dev"))
        .unwrap()
        .flatten()
        .filter(|e| {
            use std::os::unix::fs::FileTypeExt;
            let t = e.file_type().unwrap();
            t.is_char_device() || t.is_block_device()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    devices.sort();
    for dev in &devices {
        assert!(
            ["full", "null", "random", "tty", "urandom", "zero"].contains(&dev.as_str()),
            "unexpected device /dev/{dev}"
        );
    }
    // The files keep the image's ids on disk (nothing was chowned), and the container sees
    // them through an idmapped mount of its root; only root may enter the directory that
    // holds them (real setuid-root files).
    let dir = std::fs::metadata(s.d.dir().join("storage-pools/default/containers/c1")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    assert_eq!(dir.uid(), 0);
    let busybox =
        s.d.dir()
            .join("storage-pools/default/containers/c1/rootfs/bin/busybox");
    assert_eq!(std::fs::metadata(&busybox).unwrap().uid(), 0);
    assert!(root_mount(pid).contains("idmapped"), "{}", root_mount(pid));
    assert_eq!(
        s.ok(&["exec", "c1", "--", "stat", "-c", "%u %g", "/bin/busybox"]),
        "0 0\n"
    );
    assert!(
        !s.d.logs().contains("remapping container filesystem"),
        "no chown walk"
    );
    // Nothing was mounted in the host's namespace.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains("idmapped-root"), "{host_mounts}");
    let _ = host_base;
    // Figures in the state endpoint.
    let state = s.state("c1").await;
    assert!(state["processes"].as_i64().unwrap() >= 1, "{state}");
    assert!(state["memory"]["usage"].as_u64().unwrap() > 0, "{state}");
    let info = s.ok(&["info", "c1"]);
    assert!(info.contains(&format!("PID: {pid}")), "{info}");

    // Stop cleanly (init halts), start, restart, freeze, force-stop, delete.
    assert!(s.fails(&["delete", "c1"]).contains("stop it first"));
    s.ok(&["stop", "c1", "--timeout", "30"]);
    assert_eq!(s.state("c1").await["status"], "Stopped");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(s.fails(&["stop", "c1"]).contains("already stopped"));
    s.ok(&["start", "c1"]);
    let pid2 = s.pid("c1").await;
    assert_ne!(pid, pid2);
    assert!(s.fails(&["start", "c1"]).contains("already running"));
    s.ok(&["restart", "c1", "--force"]);
    let pid3 = s.pid("c1").await;
    assert_ne!(pid2, pid3);
    s.ok(&["pause", "c1"]);
    assert_eq!(s.state("c1").await["status"], "Frozen");
    assert!(
        status_field(pid3, "State").starts_with('S')
            || status_field(pid3, "State").starts_with('D')
    );
    let r =
        s.d.unix()
            .request(
                Method::PUT,
                "/1.0/instances/c1/state",
                Some(&json!({"action": "unfreeze"})),
            )
            .await
            .unwrap();
    assert_eq!(r.status, 202);
    wait_for(|| async { s.state("c1").await["status"] == "Running" }).await;
    s.ok(&["stop", "c1", "--force"]);
    assert_eq!(s.state("c1").await["status"], "Stopped");
    assert_eq!(
        std::fs::read_dir(s.d.dir().join("runtime/state"))
            .unwrap()
            .count(),
        0,
        "runtime state left behind"
    );
    s.ok(&["delete", "c1"]);
    assert!(!s
        .d
        .dir()
        .join("storage-pools/default/containers/c1")
        .exists());
    assert_eq!(s.d.unix().get("/1.0/instances").await.unwrap(), json!([]));
}

async fn wait_for<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test]
async fn isolated_blocks_are_disjoint_and_privileged_maps_root() {
    let Some(s) = Setup::new("isolated_blocks_are_disjoint_and_privileged_maps_root").await else {
        return;
    };
    s.ok(&["launch", "bb", "shared"]);
    s.ok(&["launch", "bb", "iso1", "-c", "security.idmap.isolated=true"]);
    s.ok(&["launch", "bb", "iso2", "-c", "security.idmap.isolated=true"]);
    s.ok(&["launch", "bb", "priv", "-c", "security.privileged=true"]);
    let mut ranges = Vec::new();
    for name in ["shared", "iso1", "iso2"] {
        let pid = s.pid(name).await;
        let map = map_of(pid, "uid_map");
        assert_eq!(map.len(), 1, "{name}: {map:?}");
        let (inside, outside, count) = map[0];
        assert_eq!((inside, count), (0, 65536), "{name}");
        assert!(outside > 0, "{name} maps host root");
        ranges.push((name, outside, outside + count));
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            assert!(a.2 <= b.1 || b.2 <= a.1, "{a:?} overlaps {b:?}");
        }
    }
    let pid = s.pid("priv").await;
    assert_eq!(map_of(pid, "uid_map"), vec![(0, 0, 4294967295)]);
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some("0")
    );
    assert!(s.d.logs().contains("starting a privileged container"));
    // exec works in both kinds: the isolated one's map, the privileged one's (no user namespace).
    let map = s.ok(&["exec", "iso1", "--", "cat", "/proc/self/uid_map"]);
    let iso1 = map_of(s.pid("iso1").await, "uid_map")[0];
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        [iso1.0.to_string(), iso1.1.to_string(), iso1.2.to_string()]
    );
    let map = s.ok(&["exec", "priv", "--", "cat", "/proc/self/uid_map"]);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "4294967295"]
    );
    // As in lxc, TYPE says CONTAINER; a config column shows the privilege.
    let list = s.ok(&["list", "-f", "csv", "-c", "ns,security.privileged"]);
    assert!(list.contains("priv,RUNNING,true\n"), "{list}");
    s.ok(&["delete", "--force", "shared", "iso1", "iso2", "priv"]);
}

#[tokio::test]
async fn a_fork_bomb_stops_at_limits_processes() {
    let Some(s) = Setup::new("a_fork_bomb_stops_at_limits_processes").await else {
        return;
    };
    s.ok(&["init", "bb", "bomb", "-c", "limits.processes=40"]);
    // The container's own init starts the bomb.
    let rootfs =
        s.d.dir()
            .join("storage-pools/default/containers/bomb/rootfs");
    std::fs::write(rootfs.join("bomb.sh"), "b() { b | b & }\nb\n").unwrap();
    std::fs::write(
        rootfs.join("etc/inittab"),
        "::sysinit:/bin/sh /bomb.sh\n::shutdown:/bin/true\n",
    )
    .unwrap();
    s.ok(&["start", "bomb"]);
    let pid = s.pid("bomb").await;
    let cgroup = proc_file(pid, "cgroup");
    let events = cgroup
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            match ctrl {
                "pids" => Some(format!("/sys/fs/cgroup/pids{path}/pids.events")),
                "" if !cgroup.contains(":pids:") => {
                    Some(format!("/sys/fs/cgroup{path}/pids.events"))
                }
                _ => None,
            }
        })
        .unwrap();
    // The kernel refuses forks past the limit: the bomb hits it and stays under it.
    wait_for(|| async {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("max ") && l != "max 0")
    })
    .await;
    for _ in 0..20 {
        let n = s.state("bomb").await["processes"].as_i64().unwrap();
        assert!((1..=40).contains(&n), "{n} processes");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // And the host is fine: a forced stop ends them all.
    s.ok(&["stop", "bomb", "--force"]);
    assert_eq!(s.state("bomb").await["status"], "Stopped");
    s.ok(&["delete", "bomb"]);
}

#[tokio::test]
async fn containers_outlive_a_daemon_restart_and_a_crash() {
    let Some(mut s) = Setup::new("containers_outlive_a_daemon_restart_and_a_crash").await else {
        return;
    };
    s.ok(&["launch", "bb", "c1"]);
    s.ok(&["launch", "bb", "c2"]);
    let (p1, p2) = (s.pid("c1").await, s.pid("c2").await);
    s.d.restart().await;
    assert_eq!(s.pid("c1").await, p1);
    s.d.crash();
    s.d.spawn();
    s.d.wait_ready().await;
    assert_eq!(s.pid("c1").await, p1);
    assert_eq!(s.pid("c2").await, p2);
    // Found again, so managed again: a clean stop, and one that ends while rxd is down.
    s.ok(&["stop", "c1"]);
    assert_eq!(s.state("c1").await["status"], "Stopped");
    // Not brought back by LXD's autostart rule (it was running when last seen), so that what
    // this checks is that the next daemon notices it ended.
    s.ok(&["config", "set", "c2", "boot.autostart", "false"]);
    s.d.stop();
    let _ = Command::new(bin("rxd-shim"))
        .arg("--root")
        .arg(s.d.dir().join("runtime/state"))
        .args(["kill", "c2", "--signal", "9"])
        .status();
    s.d.spawn();
    s.d.wait_ready().await;
    assert_eq!(s.state("c2").await["status"], "Stopped");
    s.ok(&["start", "c2"]);
    s.ok(&["delete", "-f", "c1", "c2"]);
}

/// RFC 3339 as Unix seconds.
fn unix(rfc3339: &Value) -> i64 {
    time::OffsetDateTime::parse(
        rfc3339.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp()
}

#[tokio::test]
async fn scheduled_snapshots_appear_and_expire() {
    // The scheduler's minute lasts 400 ms here (a test-only knob of the daemon, compiled in with
    // the `failpoints` feature the suite builds with; see rxd-daemon's danger.rs).
    let opts = rxd_testkit::Options {
        env: vec![("RXD_DANGER_SCHEDULER_MINUTE_MS".into(), "400".into())],
        ..Default::default()
    };
    let Some(s) = Setup::new_with("scheduled_snapshots_appear_and_expire", opts).await else {
        return;
    };
    let every_minute = "snapshots.schedule=* * * * *";
    s.ok(&[
        "launch",
        "bb",
        "busy",
        "-c",
        every_minute,
        "-c",
        "snapshots.expiry=3M",
        "-c",
        "snapshots.pattern=auto-%d",
    ]);
    // Stopped: skipped, unless snapshots.schedule.stopped says otherwise.
    s.ok(&["init", "bb", "idle", "-c", every_minute]);
    s.ok(&[
        "init",
        "bb",
        "kept",
        "-c",
        every_minute,
        "-c",
        "snapshots.schedule.stopped=true",
    ]);
    // Running, but not due: 00:00 on the 29th of February.
    s.ok(&[
        "launch",
        "bb",
        "rare",
        "-c",
        "snapshots.schedule=0 0 29 2 *",
        "-c",
        "snapshots.expiry=1d",
    ]);
    let snapshots = |name: &'static str| {
        let c = s.d.unix();
        async move {
            c.get(&format!("/1.0/instances/{name}/snapshots?recursion=1"))
                .await
                .unwrap()
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let names = |list: &[Value]| -> Vec<String> {
        list.iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // Taken each minute, and each deleted three minutes later: auto-0 goes once auto-4 is there.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = names(&snapshots("busy").await);
        if list.iter().any(|n| n == "auto-4") && !list.iter().any(|n| n == "auto-0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "busy has {list:?}\n{}",
            s.d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let busy = snapshots("busy").await;
    assert!(busy.len() <= 5, "{:?}", names(&busy));
    for snap in &busy {
        assert_ne!(snap["expires_at"], "0001-01-01T00:00:00Z", "{snap}");
        // A copy of the instance's files, like a manual one (unless the scheduler's short
        // minutes expired and pruned it since the listing).
        let name = snap["name"].as_str().unwrap();
        let copied =
            s.d.dir()
                .join("storage-pools/default/containers-snapshots/busy")
                .join(name)
                .join("rootfs/bin/busybox")
                .exists();
        let pruned = || async { !names(&snapshots("busy").await).contains(&name.to_owned()) };
        assert!(copied || pruned().await, "{name} listed without its files");
    }
    assert!(names(&snapshots("kept").await).contains(&"snap0".to_owned()));
    assert_eq!(snapshots("idle").await, Vec::<Value>::new());
    assert_eq!(snapshots("rare").await, Vec::<Value>::new());
    // An API snapshot without an expiry gets the instance's snapshots.expiry, as in LXD.
    s.ok(&["snapshot", "rare", "manual"]);
    let manual =
        s.d.unix()
            .get("/1.0/instances/rare/snapshots/manual")
            .await
            .unwrap();
    assert_eq!(
        unix(&manual["expires_at"]) - unix(&manual["created_at"]),
        86_400
    );

    // @startup: one at each start.
    s.ok(&["init", "bb", "boots", "-c", "snapshots.schedule=@startup"]);
    s.ok(&["start", "boots"]);
    assert_eq!(names(&snapshots("boots").await), ["snap0"]);
    s.ok(&["restart", "boots"]);
    assert_eq!(names(&snapshots("boots").await), ["snap0", "snap1"]);

    // Bad schedules are refused with the reason.
    let e = s.fails(&["config", "set", "busy", "snapshots.schedule", "0 6 * *"]);
    assert!(e.contains("five fields"), "{e}");
    let e = s.fails(&["config", "set", "busy", "snapshots.pattern", "{{ name }}"]);
    assert!(e.contains("unsupported expression"), "{e}");
    s.ok(&["delete", "-f", "busy", "idle", "kept", "rare", "boots"]);
}

/// An init's start time, in clock ticks since the host booted (`/proc/<pid>/stat` field 22).
fn started_at(pid: i32) -> u64 {
    let stat = proc_file(pid, "stat");
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[tokio::test]
async fn instances_start_with_the_daemon_by_their_autostart_keys() {
    let Some(mut s) = Setup::new("instances_start_with_the_daemon_by_their_autostart_keys").await
    else {
        return;
    };
    // `last` has no autostart key: it comes back if it ran. `first` has the highest priority
    // and a delay after it. `always` is stopped but always starts; `never` does not, though it
    // ran; `idle` never ran.
    s.ok(&["launch", "bb", "last"]);
    s.ok(&[
        "launch",
        "bb",
        "first",
        "-c",
        "boot.autostart.priority=10",
        "-c",
        "boot.autostart.delay=2",
    ]);
    s.ok(&["launch", "bb", "never", "-c", "boot.autostart=false"]);
    s.ok(&["init", "bb", "idle"]);
    s.ok(&["init", "bb", "always", "-c", "boot.autostart=true"]);
    for name in ["last", "first", "never", "idle", "always"] {
        s.ok(&["config", "set", name, "boot.host_shutdown_timeout", "5"]);
    }
    let running = |s: &Setup, names: &'static [&'static str]| {
        let c = s.d.unix();
        async move {
            for name in names {
                let st = c
                    .get(&format!("/1.0/instances/{name}/state"))
                    .await
                    .unwrap();
                if st["status"] != "Running" {
                    return false;
                }
            }
            true
        }
    };

    // A daemon restart: what runs is adopted, never started twice; `always` starts.
    let before = (
        s.pid("last").await,
        s.pid("first").await,
        s.pid("never").await,
    );
    s.d.restart().await;
    wait_for(|| running(&s, &["always"])).await;
    assert_eq!(
        (
            s.pid("last").await,
            s.pid("first").await,
            s.pid("never").await
        ),
        before
    );
    assert_eq!(s.state("idle").await["status"], "Stopped");

    // The host goes down (`rxd shutdown`), then comes back: LXD's rule, in priority order.
    let out = Command::new(bin("rxd"))
        .arg("--dir")
        .arg(s.d.dir())
        .args(["shutdown", "--timeout", "120"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", s.d.logs());
    assert!(
        s.d.exits_within(std::time::Duration::from_secs(10)),
        "rxd still runs after rxd shutdown"
    );
    s.d.spawn();
    s.d.wait_ready().await;
    // `first`'s delay, then two starts: longer than `wait_for`'s ten seconds allow for.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !running(&s, &["first", "last", "always"]).await {
        assert!(std::time::Instant::now() < deadline, "{}", s.d.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in ["never", "idle"] {
        assert_eq!(s.state(name).await["status"], "Stopped", "{name}");
    }
    let never = s.d.unix().get("/1.0/instances/never").await.unwrap();
    assert_eq!(never["config"]["volatile.last_state.power"], "RUNNING");
    // `first` before the others, and they only after its delay (in clock ticks, 100 a second).
    let (first, last, always) = (
        started_at(s.pid("first").await),
        started_at(s.pid("last").await),
        started_at(s.pid("always").await),
    );
    assert!(first + 190 <= last.min(always), "{first} {last} {always}");
    // Equal priorities go by name.
    let log = s.d.logs();
    let at = |name: &str| {
        let line = format!("started (boot.autostart) instance={name}");
        log.rfind(&line).unwrap_or_else(|| panic!("{line}: {log}"))
    };
    assert!(at("first") < at("always") && at("always") < at("last"));
    s.ok(&["delete", "-f", "first", "last", "always", "never", "idle"]);
}

#[tokio::test]
async fn bad_state_requests_are_refused() {
    let Some(s) = Setup::new("bad_state_requests_are_refused").await else {
        return;
    };
    s.ok(&["init", "bb", "c1"]);
    let unix: Client = s.d.unix();
    for (body, status, text) in [
        (json!({"action": "explode"}), 400, "Unknown action"),
        (json!({"action": "stop"}), 400, "already stopped"),
        (json!({"action": "freeze"}), 400, "already stopped"),
        (
            json!({"action": "start", "stateful": true}),
            400,
            "Stateful",
        ),
    ] {
        let r = unix
            .request(Method::PUT, "/1.0/instances/c1/state", Some(&body))
            .await
            .unwrap();
        let e = r.envelope().unwrap();
        assert_eq!((r.status, e.error_code), (status, status), "{body}");
        assert!(e.error.contains(text), "{body}: {}", e.error);
    }
    // A state dir that container roots cannot reach: said plainly, before the runtime runs.
    use std::os::unix::fs::PermissionsExt;
    let parent = s.d.dir().parent().unwrap().to_path_buf();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = s.fails(&["start", "c1"]);
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o711)).unwrap();
    assert!(err.contains("not traversable by other users"), "{err}");
    assert_eq!(s.state("c1").await["status"], "Stopped");
    let r = unix
        .request(
            Method::PUT,
            "/1.0/instances/nope/state",
            Some(&json!({"action": "start"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(s.state("c1").await["status"], "Stopped");
}

#[tokio::test]
async fn debian_lxc_launch_list_stop() {
    if !require_tool("lxc", "lxd-client", "debian_lxc_launch_list_stop") {
        return;
    }
    let Some(s) = Setup::new("debian_lxc_launch_list_stop").await else {
        return;
    };
    s.ok(&["config", "set", "core.trust_password", "pw"]);
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
    let out = lxc(&["launch", "rxd:bb", "rxd:web1"]);
    assert!(out.status.success(), "{out:?}\n{}", s.d.logs());
    let out = lxc(&["list", "rxd:", "--format", "csv", "-c", "ns"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "web1,RUNNING",
        "{out:?}"
    );
    let out = lxc(&["list", "rxd:"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("| web1 | RUNNING |"),
        "{out:?}"
    );
    let out = lxc(&["config", "set", "rxd:web1", "limits.processes", "100"]);
    assert!(out.status.success(), "{out:?}");
    let out = lxc(&["config", "get", "rxd:web1", "limits.processes"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "100",
        "{out:?}"
    );
    let mut child = Command::new("lxc")
        .args([
            "exec",
            "rxd:web1",
            "-T",
            "--",
            "sh",
            "-c",
            "cat; echo e >&2; exit 3",
        ])
        .env("LXD_CONF", lxd_conf.path())
        .env("HOME", lxd_conf.path())
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
            .write_all(b"from lxc\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(out.stdout, b"from lxc\n");
    assert_eq!(out.stderr, b"e\n");
    // On a terminal, lxc asks for one.
    let mut cmd = Command::new("lxc");
    cmd.args(["exec", "rxd:web1", "--", "sh"])
        .env("LXD_CONF", lxd_conf.path())
        .env("HOME", lxd_conf.path())
        .env("TERM", "dumb");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    p.send_line("tty; echo K$((1+1))L").unwrap();
    let out = p.exp_string("K2L").unwrap();
    assert!(out.contains("/dev/pts/"), "{out}");
    p.send_line("exit 4").unwrap();
    p.exp_eof().unwrap();
    match p.process.wait().unwrap() {
        rexpect::process::wait::WaitStatus::Exited(_, code) => assert_eq!(code, 4),
        other => panic!("{other:?}"),
    }
    // Files, both ways, with owner and mode.
    let src = lxd_conf.path().join("pushed");
    std::fs::write(&src, "via lxc\n").unwrap();
    let out = lxc(&[
        "file",
        "push",
        src.to_str().unwrap(),
        "rxd:web1/tmp/pushed",
        "--uid",
        "5",
        "--gid",
        "6",
        "--mode",
        "0600",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = lxc(&[
        "exec",
        "rxd:web1",
        "-T",
        "--",
        "stat",
        "-c",
        "%u %g %a",
        "/tmp/pushed",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "5 6 600\n", "{out:?}");
    let pulled = lxd_conf.path().join("pulled");
    let out = lxc(&[
        "file",
        "pull",
        "rxd:web1/tmp/pushed",
        pulled.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&pulled).unwrap(), "via lxc\n");
    let out = lxc(&["file", "delete", "rxd:web1/tmp/pushed"]);
    assert!(out.status.success(), "{out:?}");
    let out = lxc(&["stop", "rxd:web1"]);
    assert!(out.status.success(), "{out:?}");
    let out = lxc(&["console", "rxd:web1", "--show-log"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rxd-shim: init"),
        "{out:?}"
    );
    // Snapshots: take, restore, delete.
    for args in [
        &["snapshot", "rxd:web1", "s1"][..],
        &["restore", "rxd:web1", "s1"],
        &["delete", "rxd:web1/s1"],
    ] {
        let out = lxc(args);
        assert!(out.status.success(), "lxc {args:?}: {out:?}");
    }
    let out = lxc(&["list", "rxd:", "--format", "csv", "-c", "ns"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "web1,STOPPED",
        "{out:?}"
    );
    let out = lxc(&["start", "rxd:web1"]);
    assert!(out.status.success(), "{out:?}");
    let out = lxc(&["delete", "--force", "rxd:web1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.d.unix().get("/1.0/instances").await.unwrap(), json!([]));
}

#[tokio::test]
async fn config_edits_remap_the_rootfs_and_renames_move_it() {
    config_edits_and_renames("config_edits_remap_the_rootfs_and_renames_move_it", true).await;
}

#[tokio::test]
async fn config_edits_cost_no_chown_behind_idmapped_mounts() {
    config_edits_and_renames("config_edits_cost_no_chown_behind_idmapped_mounts", false).await;
}

/// With `shifted`, each new map re-owns the files on disk at the next start; without (idmapped
/// mounts), the files keep container ids whatever the map.
async fn config_edits_and_renames(test: &str, shifted: bool) {
    let Some(s) = setup(test, shifted).await else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    s.ok(&["init", "bb", "c1"]);
    let rootfs = |name: &str| {
        s.d.dir()
            .join("storage-pools/default/containers")
            .join(name)
            .join("rootfs")
    };
    let owner = |name: &str| {
        u64::from(
            std::fs::metadata(rootfs(name).join("bin/busybox"))
                .unwrap()
                .uid(),
        )
    };
    // On disk: the map's ids, or container ids behind an idmapped mount.
    let disk = |base: u64| if shifted { base } else { 0 };
    let shared = base(&s.d.unix().get("/1.0/instances/c1").await.unwrap());
    assert_eq!(owner("c1"), disk(shared));

    // Made isolated: a new block at once, the files shifted to it at the next start.
    s.ok(&["config", "set", "c1", "security.idmap.isolated", "true"]);
    let inst = s.d.unix().get("/1.0/instances/c1").await.unwrap();
    let isolated = base(&inst);
    assert_ne!(isolated, shared);
    assert_eq!(owner("c1"), disk(shared), "shifted before the start");
    s.ok(&["start", "c1"]);
    let pid = s.pid("c1").await;
    assert_eq!(map_of(pid, "uid_map"), vec![(0, isolated, 65536)]);
    assert_eq!(owner("c1"), disk(isolated));
    assert_eq!(
        s.d.logs().contains("remapping container filesystem"),
        shifted
    );
    assert_eq!(
        s.ok(&["exec", "c1", "--", "stat", "-c", "%u", "/bin/busybox"]),
        "0\n"
    );
    // While it runs, a limit is stored for the next start; the map in use is unchanged.
    s.ok(&["config", "set", "c1", "limits.processes=50"]);
    assert_eq!(
        s.ok(&["config", "get", "c1", "limits.processes"]).trim(),
        "50"
    );
    assert!(s.fails(&["rename", "c1", "c2"]).contains("running"));
    s.ok(&["stop", "c1", "--force"]);

    // Privileged, then back to the shared block.
    s.ok(&["config", "set", "c1", "security.privileged=true"]);
    s.ok(&["start", "c1"]);
    assert_eq!(
        map_of(s.pid("c1").await, "uid_map"),
        vec![(0, 0, 4294967295)]
    );
    assert_eq!(owner("c1"), 0);
    s.ok(&["stop", "c1", "--force"]);
    s.ok(&["config", "unset", "c1", "security.privileged"]);
    s.ok(&["config", "unset", "c1", "security.idmap.isolated"]);
    s.ok(&["start", "c1"]);
    assert_eq!(
        map_of(s.pid("c1").await, "uid_map"),
        vec![(0, shared, 65536)]
    );
    assert_eq!(owner("c1"), disk(shared));
    s.ok(&["stop", "c1", "--force"]);

    // Forged volatile keys, unknown keys and stale ETags are refused (unknown top-level fields
    // are ignored, as LXD does: http_guard.rs).
    let unix = s.d.unix();
    for (body, text) in [
        (json!({"config": {"volatile.idmap.base": "0"}}), "volatile"),
        (json!({"config": {"raw.lxc": "x"}}), "raw"),
    ] {
        let r = unix
            .request(Method::PATCH, "/1.0/instances/c1", Some(&body))
            .await
            .unwrap();
        let e = r.envelope().unwrap();
        assert_eq!(r.status, 400, "{body}");
        assert!(e.error.contains(text), "{body}: {}", e.error);
    }
    let r = unix
        .send(
            Method::PUT,
            "/1.0/instances/c1",
            &[("if-match", "\"stale\"")],
            serde_json::to_vec(&json!({"config": {}})).unwrap().into(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 412);

    // Rename moves the files, the block and the logs; the old name is free again.
    s.ok(&["rename", "c1", "web"]);
    assert!(!s
        .d
        .dir()
        .join("storage-pools/default/containers/c1")
        .exists());
    assert!(rootfs("web").join("bin/busybox").exists());
    s.ok(&["start", "web"]);
    assert_eq!(
        map_of(s.pid("web").await, "uid_map"),
        vec![(0, shared, 65536)]
    );
    s.ok(&["init", "bb", "c1"]);
    assert!(s.fails(&["rename", "c1", "web"]).contains("already exists"));
    s.ok(&["delete", "-f", "web", "c1"]);
}

#[tokio::test]
async fn an_ephemeral_container_is_deleted_when_it_stops() {
    let Some(s) = Setup::new("an_ephemeral_container_is_deleted_when_it_stops").await else {
        return;
    };
    s.ok(&["launch", "bb", "eph", "--ephemeral"]);
    assert!(s.ok(&["list", "-f", "csv"]).contains("EPHEMERAL"));
    s.ok(&["restart", "eph", "--force"]);
    s.pid("eph").await;
    s.ok(&["stop", "eph", "--force"]);
    assert_eq!(s.d.unix().get("/1.0/instances").await.unwrap(), json!([]));
    assert!(!s
        .d
        .dir()
        .join("storage-pools/default/containers/eph")
        .exists());
    // Also when it halts by itself: the daemon notices and tidies up.
    s.ok(&["launch", "bb", "eph2", "-e"]);
    let _ = Command::new(bin("rxd-shim"))
        .arg("--root")
        .arg(s.d.dir().join("runtime/state"))
        .args(["kill", "eph2", "--signal", "9"])
        .status();
    wait_for(|| async { s.d.unix().get("/1.0/instances").await.unwrap() == json!([]) }).await;
    assert!(!s
        .d
        .dir()
        .join("storage-pools/default/containers/eph2")
        .exists());
}

/// Start an exec over `client` and connect its four channels.
async fn exec_channels(
    client: &Client,
    name: &str,
    command: &[&str],
) -> (String, Vec<rxd_client::WebSocket>) {
    let body = json!({"command": command, "wait-for-websocket": true, "interactive": false});
    let r = client
        .request(
            Method::POST,
            &format!("/1.0/instances/{name}/exec"),
            Some(&body),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{:?}", r.envelope());
    let op = r.envelope().unwrap().metadata;
    assert_eq!(op["class"], "websocket");
    let id = op["id"].as_str().unwrap().to_owned();
    let mut channels = Vec::new();
    for fd in ["control", "0", "1", "2"] {
        let secret = op["metadata"]["fds"][fd].as_str().unwrap();
        let path = format!("/1.0/operations/{id}/websocket?secret={secret}");
        channels.push(client.websocket(&path).await.unwrap());
    }
    (id, channels)
}

/// POST an exec to c1 and wait (up to 20 s) for its operation to end.
async fn exec_and_wait(client: &Client, body: &Value) -> Value {
    let r = client
        .request(Method::POST, "/1.0/instances/c1/exec", Some(body))
        .await
        .unwrap();
    let op = r.envelope().unwrap().metadata;
    let id = op["id"].as_str().unwrap();
    client
        .get(&format!("/1.0/operations/{id}/wait?timeout=20"))
        .await
        .unwrap()
}

async fn read_all(ws: &mut rxd_client::WebSocket) -> Vec<u8> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            tokio_tungstenite::tungstenite::Message::Binary(b) => out.extend_from_slice(&b),
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn exec_runs_commands_confined_inside_the_container() {
    let Some(s) = Setup::new("exec_runs_commands_confined_inside_the_container").await else {
        return;
    };
    s.ok(&["launch", "bb", "c1", "-c", "environment.FROM_CONFIG=yes"]);
    let exec = |args: &[&str], stdin: &[u8]| {
        use std::io::Write;
        let mut child = Command::new(bin("rxc"))
            .arg("exec")
            .args(args)
            .env("RXC_CONF", s.conf.path())
            .env("RXD_DIR", s.d.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Fed from another thread: the command's output flows while its input does.
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        let feeder = std::thread::spawn(move || input.write_all(&stdin));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        out
    };
    // Pipes in and out, stderr apart, the exit status passed on.
    let out = exec(
        &["c1", "--", "sh", "-c", "cat; echo oops >&2; exit 7"],
        b"through the pipe\n",
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"through the pipe\n");
    assert_eq!(out.stderr, b"oops\n");
    // A megabyte each way.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = exec(&["c1", "--", "cat"], &big);
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big);
    // Environment precedence, user, group and cwd.
    let out = exec(
        &[
            "c1",
            "--env",
            "FROM_REQUEST=1",
            "--user",
            "1000",
            "--group",
            "1000",
            "--cwd",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo $FROM_REQUEST $FROM_CONFIG $LANG; id -u; id -g; pwd",
        ],
        b"",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1 yes C.UTF-8\n1000\n1000\n/tmp\n"
    );
    // Inside: the container's namespaces, seccomp, no_new_privs, and only fds 0-2.
    let out = exec(
        &[
            "c1",
            "--",
            "sh",
            "-c",
            // The shell's own descriptors: no pipeline (its pipe ends would show), and not
            // the last command (the shell would exec it, and list ls's own).
            "hostname; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; ls /proc/$$/fd; true",
        ],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["c1", "NoNewPrivs:", "1", "Seccomp:", "2", "0", "1", "2"],
        "{text}"
    );
    let out = exec(&["c1", "--", "sh", "-c", "echo $$; sleep 0.2"], b"");
    let inner_pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(inner_pid > 1, "a pid in the container's own pid namespace");
    // The container's user namespace too: root in there is the container's root, mapped to
    // its host range, never the host's root (with the host's capabilities).
    let init = s.pid("c1").await;
    let ns = |pid: i32, n: &str| std::fs::read_link(format!("/proc/{pid}/ns/{n}")).unwrap();
    let out = exec(
        &[
            "c1",
            "--",
            "sh",
            "-c",
            "cat /proc/self/uid_map; grep -E '^(Uid|CapEff|Groups):' /proc/self/status",
        ],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let init_map = proc_file(init, "uid_map");
    let host_root = init_map.split_whitespace().nth(1).unwrap().to_owned();
    assert_ne!(host_root, "0");
    assert_eq!(
        words[..3],
        init_map.split_whitespace().collect::<Vec<_>>()[..],
        "{text}"
    );
    assert_eq!(words[3..8], ["Uid:", "0", "0", "0", "0"], "{text}");
    assert_eq!(words[8], "Groups:", "no supplementary groups: {text}");
    assert_eq!(words[9], "CapEff:", "{text}");
    assert_ne!(
        words[10], "0000000000000000",
        "root keeps the container's capabilities"
    );
    // Seen from the host while it runs: every namespace is the init's, uid the mapped one.
    let mut child = Command::new(bin("rxc"))
        .args(["exec", "c1", "--", "sleep", "5"])
        .env("RXC_CONF", s.conf.path())
        .env("RXD_DIR", s.d.dir())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let sleeper = (0..100)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                (cmdline == b"sleep\x005\x00" && ns(pid, "pid") == ns(init, "pid")).then_some(pid)
            })
        })
        .expect("the exec'd sleep");
    for n in ["user", "mnt", "pid", "uts", "ipc", "net", "cgroup"] {
        assert_eq!(ns(sleeper, n), ns(init, n), "{n} namespace");
    }
    let status = std::fs::read_to_string(format!("/proc/{sleeper}/status")).unwrap();
    let uid_line = format!("Uid:\t{host_root}\t{host_root}\t{host_root}\t{host_root}");
    assert!(status.contains(&uid_line), "{status}");
    let cgroup = std::fs::read_to_string(format!("/proc/{sleeper}/cgroup")).unwrap();
    assert_eq!(
        cgroup,
        std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap()
    );
    assert!(child.wait().unwrap().success());
    // A non-root user: no capabilities at all.
    let out = exec(
        &[
            "c1",
            "--user",
            "1000",
            "--",
            "grep",
            "-E",
            "^Cap(Inh|Prm|Eff|Amb):",
            "/proc/self/status",
        ],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("0000000000000000").count(), 4, "{text}");
    // The command's environment never reaches the host-root helper's loader, nor any host
    // command line.
    let out = exec(
        &[
            "c1",
            "--env",
            "LD_PRELOAD=/nonexistent.so",
            "--",
            "sh",
            "-c",
            "echo $LD_PRELOAD",
        ],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/nonexistent.so\n");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new(bin("rxc"))
        .args([
            "exec",
            "c1",
            "--env",
            "SECRET_TOKEN=hunter2",
            "--",
            "sleep",
            "3",
        ])
        .env("RXC_CONF", s.conf.path())
        .env("RXD_DIR", s.d.dir())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // (rxc's own command line has it: the user typed it there.)
    let rxc_pid = child.id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if entry.file_name().to_str() == Some(rxc_pid.as_str()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline);
            assert!(
                !text.contains("hunter2"),
                "exposed on a command line: {text}"
            );
        }
    }
    assert!(child.wait().unwrap().success());
    // A command that does not exist: status 255, the reason on stderr.
    let out = exec(&["c1", "--", "/no/such/command"], b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // Stopped, or frozen: refused.
    s.ok(&["pause", "c1"]);
    let err = exec(&["c1", "--", "true"], b"");
    assert!(String::from_utf8_lossy(&err.stderr).contains("Instance is frozen"));
    s.ok(&["stop", "c1", "--force"]);
    let err = exec(&["c1", "--", "true"], b"");
    assert!(String::from_utf8_lossy(&err.stderr).contains("Instance is not running"));
}

#[tokio::test]
async fn exec_secrets_signals_timeouts_and_revocation() {
    let Some(s) = Setup::new("exec_secrets_signals_timeouts_and_revocation").await else {
        return;
    };
    use futures_util::SinkExt;
    s.ok(&["launch", "bb", "c1"]);
    let unix = s.d.unix();

    // A signal through the control channel ends the command: 128 + 15.
    let (id, mut ch) = exec_channels(&unix, "c1", &["sleep", "100"]).await;
    // The secrets are not shown again, and each works once.
    let op = unix.get(&format!("/1.0/operations/{id}")).await.unwrap();
    assert!(op["metadata"]["fds"].is_null(), "{op}");
    let r = unix
        .websocket(&format!("/1.0/operations/{id}/websocket?secret=00"))
        .await;
    assert!(matches!(
        r,
        Err(rxd_client::ClientError::Api { status: 403, .. })
    ));
    let signal = json!({"command": "signal", "signal": 15}).to_string();
    ch[0]
        .send(tokio_tungstenite::tungstenite::Message::Text(signal.into()))
        .await
        .unwrap();
    let done = unix
        .get(&format!("/1.0/operations/{id}/wait?timeout=10"))
        .await
        .unwrap();
    assert_eq!(done["status"], "Success", "{done}");
    assert_eq!(done["metadata"]["return"], 143);
    assert!(read_all(&mut ch[2]).await.is_empty());

    // Channels never connected: the operation fails after 5 s, and nothing ran.
    let body = json!({"command": ["touch", "/ran"], "wait-for-websocket": true});
    let done = exec_and_wait(&unix, &body).await;
    assert_eq!(done["status"], "Failure");
    assert!(done["err"]
        .as_str()
        .unwrap()
        .contains("Timed out waiting for websockets to connect"));
    assert!(!s
        .d
        .dir()
        .join("storage-pools/default/containers/c1/rootfs/ran")
        .exists());

    // Without websockets: a task whose metadata has the status.
    let body = json!({"command": ["sh", "-c", "exit 4"], "wait-for-websocket": false});
    let done = exec_and_wait(&unix, &body).await;
    assert_eq!(done["metadata"]["return"], 4, "{done}");
    // Recorded output: files under the instance's logs.
    let body = json!({
        "command": ["sh", "-c", "echo out; echo err >&2; exit 2"],
        "wait-for-websocket": false, "record-output": true,
    });
    let done = exec_and_wait(&unix, &body).await;
    assert_eq!(done["metadata"]["return"], 2, "{done}");
    let raw = |url: String| {
        let unix = &unix;
        async move {
            unix.send(Method::GET, &url, &[], Default::default())
                .await
                .unwrap()
        }
    };
    let (out, err) = (
        done["metadata"]["output"]["1"].as_str().unwrap().to_owned(),
        done["metadata"]["output"]["2"].as_str().unwrap().to_owned(),
    );
    assert!(out.starts_with("/1.0/instances/c1/logs/exec_"), "{out}");
    assert_eq!(&raw(out.clone()).await.body[..], b"out\n");
    assert_eq!(&raw(err.clone()).await.body[..], b"err\n");
    let logs = unix.get("/1.0/instances/c1/logs").await.unwrap();
    assert!(logs.as_array().unwrap().contains(&json!(out)), "{logs}");
    let r = unix
        .send(Method::DELETE, &out, &[], Default::default())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(raw(out.clone()).await.status, 404);
    assert_eq!(
        raw("/1.0/instances/c1/logs/..%2F..%2Fdatabase".into())
            .await
            .status,
        404
    );

    // Bad requests.
    for (body, text) in [
        (json!({"command": []}), "command"),
        (
            json!({"command": ["true"], "interactive": true, "wait-for-websocket": false}),
            "Interactive exec needs wait-for-websocket",
        ),
        (
            json!({"command": ["true"], "environment": {"A B": "1"}}),
            "environment",
        ),
        (json!({"command": ["true"], "cwd": "relative"}), "cwd"),
        (
            json!({"command": ["true"], "record-output": true, "wait-for-websocket": true}),
            "record-output",
        ),
    ] {
        let r = unix
            .request(Method::POST, "/1.0/instances/c1/exec", Some(&body))
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{body}");
        assert!(r.envelope().unwrap().error.contains(text), "{body}");
    }

    // A client whose certificate is revoked loses its running session.
    let id = rxd_testkit::client_identity("remote-user");
    let cert =
        base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, &id.cert_der);
    let r = unix
        .request(
            Method::POST,
            "/1.0/certificates",
            Some(&json!({"certificate": cert})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let https = s.d.https(Some(&id));
    let (op_id, mut ch) = exec_channels(&https, "c1", &["sleep", "100"]).await;
    let fp = rxd_tls::fingerprint(&id.cert_der);
    let r = unix
        .request(Method::DELETE, &format!("/1.0/certificates/{fp}"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let closed = tokio::time::timeout(Duration::from_secs(10), read_all(&mut ch[2])).await;
    assert!(closed.is_ok(), "the session outlived the revocation");
    let done = unix
        .get(&format!("/1.0/operations/{op_id}/wait?timeout=10"))
        .await
        .unwrap();
    assert_eq!(done["metadata"]["return"], 137, "{done}");

    // Unsetting core.https_address cuts the sessions running over it, even channels whose
    // server side is waiting on the command rather than on the socket.
    let id = rxd_testkit::client_identity("remote-user-2");
    s.d.trust(&id).await;
    let (_, mut ch) = exec_channels(&s.d.https(Some(&id)), "c1", &["sleep", "100"]).await;
    let r = unix
        .request(
            Method::PATCH,
            "/1.0",
            Some(&json!({"config": {"core.https_address": ""}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.envelope());
    for (fd, channel) in ch.iter_mut().enumerate() {
        let closed = tokio::time::timeout(Duration::from_secs(10), read_all(channel)).await;
        assert!(closed.is_ok(), "channel {fd} outlived its listener");
    }
    s.ok(&["delete", "-f", "c1"]);
}

#[tokio::test]
async fn files_push_pull_delete_stay_inside_the_container() {
    files_stay_inside("files_push_pull_delete_stay_inside_the_container", false).await;
}

#[tokio::test]
async fn files_push_pull_delete_stay_inside_a_shifted_container() {
    files_stay_inside(
        "files_push_pull_delete_stay_inside_a_shifted_container",
        true,
    )
    .await;
}

/// The files API, on files kept in container ids (idmapped) or shifted to the map (`shifted`).
async fn files_stay_inside(test: &str, shifted: bool) {
    let Some(s) = setup(test, shifted).await else {
        return;
    };
    s.ok(&["launch", "bb", "c1"]);
    let init = s.pid("c1").await;
    // What container root is on disk.
    let host_root: u32 = if shifted {
        map_of(init, "uid_map")[0].1 as u32
    } else {
        0
    };
    let rootfs = s.d.dir().join("storage-pools/default/containers/c1/rootfs");
    let local = tempfile::tempdir().unwrap();
    let exec = |cmd: &str| s.ok(&["exec", "c1", "--", "sh", "-c", cmd]);

    // Push: content, owner through the container's map, mode; seen the same from inside.
    let src = local.path().join("hello.txt");
    std::fs::write(&src, "hello from the host\n").unwrap();
    s.ok(&[
        "file",
        "push",
        src.to_str().unwrap(),
        "c1/root/",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--mode",
        "0640",
    ]);
    let on_disk = std::fs::symlink_metadata(rootfs.join("root/hello.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (on_disk.uid(), on_disk.gid()),
        (host_root + 1000, host_root + 1000)
    );
    assert_eq!(on_disk.mode() & 0o7777, 0o640);
    assert_eq!(
        exec("stat -c '%u %g %a' /root/hello.txt; cat /root/hello.txt"),
        "1000 1000 640\nhello from the host\n"
    );
    // Pull: the same bytes and mode.
    let back = local.path().join("back.txt");
    s.ok(&["file", "pull", "c1/root/hello.txt", back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "hello from the host\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // A file the container wrote, pulled with its owner as the container sees it.
    exec("echo made inside > /tmp/inside; chown 33:44 /tmp/inside");
    let unix = s.d.unix();
    let r = unix
        .send(
            Method::GET,
            "/1.0/instances/c1/files?path=/tmp/inside",
            &[],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"made inside\n");
    assert_eq!(
        (
            r.header("x-lxd-uid"),
            r.header("x-lxd-gid"),
            r.header("x-lxd-type")
        ),
        (Some("33"), Some("44"), Some("file"))
    );
    // A directory lists its names.
    let r = unix
        .send(
            Method::GET,
            "/1.0/instances/c1/files?path=/root",
            &[],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.header("x-lxd-type"), Some("directory"));
    assert!(r
        .metadata()
        .unwrap()
        .as_array()
        .unwrap()
        .contains(&json!("hello.txt")));

    // Symlinks the container planted toward the host lead nowhere but inside it.
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("secret"), "host secret\n").unwrap();
    let host = host_dir.path().to_str().unwrap();
    exec(&format!(
        "ln -s {host} /root/abs; ln -s ../../../../../../../../../..{host} /root/rel; \
         ln -s {host}/secret /root/file-link"
    ));
    for link in ["abs", "rel"] {
        let err = s.fails(&["file", "pull", &format!("c1/root/{link}/secret"), "-"]);
        assert!(err.contains("Not found"), "{link}: {err}");
        let err = s.fails(&[
            "file",
            "push",
            src.to_str().unwrap(),
            &format!("c1/root/{link}/planted"),
        ]);
        assert!(err.contains("Not found"), "{link}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(host_dir.path()).unwrap().count(),
        1,
        "nothing planted on the host"
    );
    // The link itself is reported as a link, never followed to the host.
    let r = unix
        .send(
            Method::GET,
            "/1.0/instances/c1/files?path=/root/file-link",
            &[],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.header("x-lxd-type"), Some("symlink"));
    assert_eq!(String::from_utf8_lossy(&r.body), format!("{host}/secret"));
    // Overwriting the link replaces the link inside the container; the host file is untouched.
    s.ok(&["file", "push", src.to_str().unwrap(), "c1/root/file-link"]);
    assert_eq!(
        std::fs::read_to_string(host_dir.path().join("secret")).unwrap(),
        "host secret\n"
    );
    assert_eq!(exec("cat /root/file-link"), "hello from the host\n");

    // Ids outside the container's map, bad paths and special files are refused.
    let err = s.fails(&[
        "file",
        "push",
        src.to_str().unwrap(),
        "c1/root/x",
        "--uid",
        "70000",
    ]);
    assert!(err.contains("uid 70000 is not mapped"), "{err}");
    let r = unix
        .send(
            Method::GET,
            "/1.0/instances/c1/files?path=/tmp/%00",
            &[],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    exec("mkfifo /tmp/fifo");
    let err = s.fails(&["file", "pull", "c1/tmp/fifo", "-"]);
    assert!(err.contains("FIFO"), "{err}");

    // Delete; then it is gone, and a second delete says so.
    s.ok(&["file", "delete", "c1/root/hello.txt"]);
    assert!(!rootfs.join("root/hello.txt").exists());
    assert!(s
        .fails(&["file", "delete", "c1/root/hello.txt"])
        .contains("Not found"));
    // Stopped containers too; and the console log tells how the last run ended.
    s.ok(&["stop", "c1", "--force"]);
    let log = s.ok(&["console", "c1", "--show-log"]);
    assert!(log.contains("rxd-shim: init ended by SIGKILL"), "{log}");
    assert!(s
        .fails(&["console", "c1"])
        .contains("Instance is not running"));
    let r = unix
        .send(
            Method::DELETE,
            "/1.0/instances/c1/console",
            &[],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(s.ok(&["console", "c1", "--show-log"]), "");
    s.ok(&["file", "push", src.to_str().unwrap(), "c1/etc/motd"]);
    s.ok(&["start", "c1"]);
    assert_eq!(
        exec("cat /etc/motd; stat -c %u /etc/motd"),
        "hello from the host\n0\n"
    );
}

#[tokio::test]
async fn snapshots_restore_files_and_the_map_they_were_taken_with() {
    snapshots_restore(
        "snapshots_restore_files_and_the_map_they_were_taken_with",
        true,
    )
    .await;
}

#[tokio::test]
async fn snapshots_of_idmapped_containers_restore_under_any_map() {
    snapshots_restore(
        "snapshots_of_idmapped_containers_restore_under_any_map",
        false,
    )
    .await;
}

/// Snapshots and restores, with files shifted on disk (`shifted`) or kept in container ids.
async fn snapshots_restore(test: &str, shifted: bool) {
    let Some(s) = setup(test, shifted).await else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    s.ok(&["launch", "bb", "c1"]);
    let exec = |cmd: &str| s.ok(&["exec", "c1", "--", "sh", "-c", cmd]);
    let unix = s.d.unix();
    exec("echo v1 > /root/state");

    // Taken while running: the container is frozen for the copy and runs on after.
    s.ok(&["snapshot", "c1"]);
    assert_eq!(s.state("c1").await["status"], "Running");
    let list = unix.get("/1.0/instances/c1/snapshots").await.unwrap();
    assert_eq!(list, json!(["/1.0/instances/c1/snapshots/snap0"]));
    let snap = unix.get("/1.0/instances/c1/snapshots/snap0").await.unwrap();
    assert_eq!(snap["name"], "snap0");
    assert_eq!(snap["stateful"], false);
    let on_disk =
        s.d.dir()
            .join("storage-pools/default/containers-snapshots/c1/snap0/rootfs");
    let shared_root = map_of(s.pid("c1").await, "uid_map")[0].1 as u32;
    let disk = |base: u32| if shifted { base } else { 0 };
    assert_eq!(
        std::fs::metadata(on_disk.join("root/state")).unwrap().uid(),
        disk(shared_root),
        "the copy keeps the ids the files have on disk"
    );

    // Change things, restore: the change is gone, and the container runs again.
    exec("echo v2 > /root/state; touch /root/new-file");
    s.ok(&["restore", "c1", "snap0"]);
    assert_eq!(s.state("c1").await["status"], "Running");
    assert_eq!(exec("cat /root/state; ls /root"), "v1\nstate\n");

    // The snapshot keeps its map: restored under a new (isolated) map, the files follow it.
    s.ok(&["stop", "c1", "--force"]);
    s.ok(&["config", "set", "c1", "security.idmap.isolated=true"]);
    s.ok(&["start", "c1"]);
    let isolated = map_of(s.pid("c1").await, "uid_map")[0].1 as u32;
    assert_ne!(isolated, shared_root);
    s.ok(&["restore", "c1", "snap0"]);
    let rootfs = s.d.dir().join("storage-pools/default/containers/c1/rootfs");
    assert_eq!(
        std::fs::metadata(rootfs.join("root/state")).unwrap().uid(),
        disk(isolated)
    );
    assert_eq!(exec("cat /root/state; id -u"), "v1\n0\n");

    // Refusals.
    for (body, status, text) in [
        (json!({"name": "snap0"}), 409, "already exists"),
        (json!({"name": "x", "stateful": true}), 400, "Stateful"),
        (json!({"name": "bad name"}), 400, "Invalid snapshot name"),
    ] {
        let r = unix
            .request(Method::POST, "/1.0/instances/c1/snapshots", Some(&body))
            .await
            .unwrap();
        assert_eq!(r.status, status, "{body}");
        assert!(r.envelope().unwrap().error.contains(text), "{body}");
    }
    let r = unix
        .request(
            Method::PUT,
            "/1.0/instances/c1",
            Some(&json!({"restore": "nope"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);

    // Rename and delete one.
    let r = unix
        .request(
            Method::POST,
            "/1.0/instances/c1/snapshots/snap0",
            Some(&json!({"name": "first"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{:?}", r.envelope());
    assert!(s
        .d
        .dir()
        .join("storage-pools/default/containers-snapshots/c1/first/rootfs/root/state")
        .exists());
    s.ok(&["snapshot", "c1", "second"]);
    s.ok(&["delete", "c1/first"]);
    assert_eq!(
        unix.get("/1.0/instances/c1/snapshots").await.unwrap(),
        json!(["/1.0/instances/c1/snapshots/second"])
    );
    assert!(!s
        .d
        .dir()
        .join("storage-pools/default/containers-snapshots/c1/first")
        .exists());

    // Snapshots follow their instance's rename, and go with it.
    s.ok(&["stop", "c1", "--force"]);
    s.ok(&["rename", "c1", "c2"]);
    assert_eq!(
        unix.get("/1.0/instances/c2/snapshots").await.unwrap(),
        json!(["/1.0/instances/c2/snapshots/second"])
    );
    assert!(s
        .d
        .dir()
        .join("storage-pools/default/containers-snapshots/c2/second/rootfs")
        .exists());
    s.ok(&["delete", "c2"]);
    assert!(!s
        .d
        .dir()
        .join("storage-pools/default/containers-snapshots/c2")
        .exists());
}

async fn type_in(ws: &mut rxd_client::WebSocket, text: &str) {
    use futures_util::SinkExt;
    let msg = tokio_tungstenite::tungstenite::Message::Binary(text.as_bytes().to_vec().into());
    ws.send(msg).await.unwrap();
}

/// Read a terminal channel until `needle` appears; returns everything read.
async fn read_until(ws: &mut rxd_client::WebSocket, needle: &str) -> String {
    use futures_util::StreamExt;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !seen.contains(needle) {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{needle:?} not seen in {seen:?}"));
        match msg {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                seen.push_str(&String::from_utf8_lossy(&b))
            }
            Some(Ok(_)) => {}
            other => panic!("channel ended ({other:?}) before {needle:?}: {seen:?}"),
        }
    }
    seen
}

#[tokio::test]
async fn interactive_exec_gets_a_terminal_of_its_own() {
    let Some(s) = Setup::new("interactive_exec_gets_a_terminal_of_its_own").await else {
        return;
    };
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    s.ok(&["launch", "bb", "c1"]);
    let unix = s.d.unix();
    let body = json!({
        "command": ["sh"], "interactive": true, "wait-for-websocket": true,
        "width": 100, "height": 30, "environment": {"TERM": "xterm"},
    });
    let r = unix
        .request(Method::POST, "/1.0/instances/c1/exec", Some(&body))
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    let op = r.envelope().unwrap().metadata;
    let fds = op["metadata"]["fds"].as_object().unwrap();
    let mut names: Vec<_> = fds.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        ["0", "control"],
        "one channel both ways for a terminal"
    );
    let id = op["id"].as_str().unwrap();
    let channel = |fd: &str| {
        format!(
            "/1.0/operations/{id}/websocket?secret={}",
            fds[fd].as_str().unwrap()
        )
    };
    let mut control = unix.websocket(&channel("control")).await.unwrap();
    let mut term = unix.websocket(&channel("0")).await.unwrap();
    // Markers are computed by the shell, so the terminal's echo of the input never matches.
    type_in(
        &mut term,
        "stty size; tty; ls -l /proc/self/fd/0; echo A$((1+1))B\n",
    )
    .await;
    let out = read_until(&mut term, "A2B").await;
    assert!(out.contains("30 100"), "initial size: {out}");
    // pts/0 is the container's console; a new terminal of the same devpts instance follows.
    assert!(
        out.contains("/dev/pts/1"),
        "a terminal of the container's own devpts: {out}"
    );
    // Resize through the control channel.
    let resize = json!({"command": "window-resize", "args": {"width": "120", "height": "40"}});
    control
        .send(Message::Text(resize.to_string().into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    type_in(&mut term, "stty size; echo C$((2+1))D\n").await;
    let out = read_until(&mut term, "C3D").await;
    assert!(out.contains("40 120"), "resized: {out}");
    // Ctrl-C reaches the foreground command through the terminal.
    type_in(&mut term, "sleep 100\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    type_in(&mut term, "\x03").await;
    type_in(&mut term, "echo E$((2+2))F\n").await;
    read_until(&mut term, "E4F").await;
    type_in(&mut term, "exit 5\n").await;
    let done = unix
        .get(&format!("/1.0/operations/{id}/wait?timeout=10"))
        .await
        .unwrap();
    assert_eq!(done["metadata"]["return"], 5, "{done}");
    assert_eq!(done["metadata"]["interactive"], true);

    // rxc on a real terminal: interactive by default, Ctrl-C passes through, exit code kept.
    let mut cmd = Command::new(bin("rxc"));
    cmd.args(["exec", "c1", "--", "sh"])
        .env("RXC_CONF", s.conf.path())
        .env("RXD_DIR", s.d.dir())
        .env("TERM", "dumb");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    p.send_line("tty; echo G$((3+4))H").unwrap();
    p.exp_string("G7H").unwrap();
    p.send_line("sleep 100").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    p.send_control('c').unwrap();
    p.send_line("echo I$((4+5))J").unwrap();
    p.exp_string("I9J").unwrap();
    p.send_line("exit 3").unwrap();
    p.exp_eof().unwrap();
    match p.process.wait().unwrap() {
        rexpect::process::wait::WaitStatus::Exited(_, code) => assert_eq!(code, 3),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_console_is_a_terminal_to_attach_to() {
    let Some(s) = Setup::new("the_console_is_a_terminal_to_attach_to").await else {
        return;
    };
    s.ok(&["launch", "bb", "c1"]);
    // A shell on the console, as a distribution's getty would be.
    let local = tempfile::tempdir().unwrap();
    let inittab = local.path().join("inittab");
    std::fs::write(
        &inittab,
        "::sysinit:/bin/true\n::respawn:-/bin/sh\n::restart:/sbin/init\n::shutdown:/bin/true\n",
    )
    .unwrap();
    s.ok(&["file", "push", inittab.to_str().unwrap(), "c1/etc/inittab"]);
    s.ok(&["stop", "c1", "--force"]);
    s.ok(&["start", "c1"]);

    let unix = s.d.unix();
    let r = unix
        .request(
            Method::POST,
            "/1.0/instances/c1/console",
            Some(&json!({"width": 90, "height": 20, "type": "console"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{:?}", r.envelope());
    let op = r.envelope().unwrap().metadata;
    let fds = op["metadata"]["fds"].as_object().unwrap().clone();
    let id = op["id"].as_str().unwrap().to_owned();
    let channel = |fd: &str| {
        format!(
            "/1.0/operations/{id}/websocket?secret={}",
            fds[fd].as_str().unwrap()
        )
    };
    let control = unix.websocket(&channel("control")).await.unwrap();
    let mut term = unix.websocket(&channel("0")).await.unwrap();
    type_in(&mut term, "stty size; tty; echo A$((1+1))B\n").await;
    let out = read_until(&mut term, "A2B").await;
    assert!(out.contains("20 90"), "{out}");
    assert!(
        out.contains("/dev/pts/0"),
        "a terminal of the container's devpts: {out}"
    );
    // What the console shows is in its log too.
    let log = s.ok(&["console", "c1", "--show-log"]);
    assert!(log.contains("A2B"), "{log}");
    drop((term, control));
    let done = unix
        .get(&format!("/1.0/operations/{id}/wait?timeout=10"))
        .await
        .unwrap();
    assert_eq!(done["status"], "Success", "{done}");

    // rxc console on a real terminal; Ctrl+a q detaches and leaves the container running.
    let mut cmd = Command::new(bin("rxc"));
    cmd.args(["console", "c1"])
        .env("RXC_CONF", s.conf.path())
        .env("RXD_DIR", s.d.dir())
        .env("TERM", "dumb");
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    p.exp_string("To detach from the console, press: <ctrl>+a q")
        .unwrap();
    p.send_line("echo C$((1+2))D").unwrap();
    p.exp_string("C3D").unwrap();
    p.send_control('a').unwrap();
    p.send("q").unwrap();
    p.flush().unwrap();
    p.exp_eof().unwrap();
    match p.process.wait().unwrap() {
        rexpect::process::wait::WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.state("c1").await["status"], "Running");
    // Refusals.
    let r = unix
        .request(
            Method::POST,
            "/1.0/instances/c1/console",
            Some(&json!({"type": "vga"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    s.ok(&["stop", "c1", "--force"]);
    let r = unix
        .request(Method::POST, "/1.0/instances/c1/console", Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.envelope().unwrap().error.contains("not running"));
}

/// The review found `/rxd/<tag>` cgroup parents left behind once their containers were gone.
#[tokio::test]
async fn empty_cgroup_parents_are_removed() {
    let Some(s) = Setup::new("empty_cgroup_parents_are_removed").await else {
        return;
    };
    s.ok(&["launch", "bb", "c1"]);
    let pid = s.pid("c1").await;
    let cgroup = proc_file(pid, "cgroup");
    let path = cgroup
        .lines()
        .find_map(|l| l.splitn(3, ':').nth(2).filter(|p| p.starts_with("/rxd/")))
        .unwrap_or_else(|| panic!("no /rxd/ cgroup: {cgroup}"))
        .to_owned();
    let parent = Path::new(&path).parent().unwrap().to_owned();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            matches!(tail.split_whitespace().next()?, "cgroup" | "cgroup2")
                .then(|| head.split_whitespace().nth(4).unwrap().to_owned())
        })
        .collect();
    let present = || {
        mounts
            .iter()
            .map(|m| Path::new(m).join(parent.strip_prefix("/").unwrap()))
            .filter(|p| p.exists())
            .collect::<Vec<_>>()
    };
    assert!(!present().is_empty(), "{parent:?} under none of {mounts:?}");
    s.ok(&["stop", "c1", "--force"]);
    assert_eq!(present(), Vec::<std::path::PathBuf>::new());
    s.ok(&["delete", "c1"]);
}

/// The review found that an unprivileged container's root could unmount the masks over `/proc`
/// and `/sys` and mount a fresh procfs: libcontainer makes them inside the container's own user
/// namespace, where nothing locks them. Each command here must fail inside such a container,
/// while the container keeps its power over mounts of its own. A privileged container's root is
/// the host's root, for which the kernel locks nothing: the same commands succeed there, as in
/// LXD, and it is not a security boundary.
#[tokio::test]
async fn masks_are_locked_in_unprivileged_containers() {
    let Some(s) = Setup::new("masks_are_locked_in_unprivileged_containers").await else {
        return;
    };
    s.ok(&["launch", "bb", "c1"]);
    s.ok(&["launch", "bb", "priv", "-c", "security.privileged=true"]);
    let sh = |name: &str, script: &str| s.rxc(&["exec", name, "--", "sh", "-c", script]);
    // A masked file this kernel has (each is masked with /dev/null).
    let masked = ["/proc/kcore", "/proc/timer_list", "/proc/keys"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("none of the masked /proc files exists on this host");
    let umount_masked = format!("umount {masked}");
    s.ok(&["exec", "c1", "--", "mkdir", "-p", "/tmp/p"]);
    for script in [
        "umount /proc/sys",
        "umount -l /proc/sys",
        &umount_masked,
        "umount -l /sys/firmware",
        "umount -l /proc",
        "mount -t proc proc /tmp/p",
        "mount -t sysfs sysfs /tmp/p",
        "mount --bind /proc /tmp/p",
        "mount -o remount,rw /proc/sys",
        "mount -o remount,bind,rw /proc/sys",
        "echo x > /proc/sys/kernel/domainname",
    ] {
        let out = sh("c1", script);
        assert!(
            !out.status.success(),
            "`{script}` succeeded in an unprivileged container"
        );
    }
    // Still masked, still in place, and the container's own mounts still come and go.
    assert_eq!(s.ok(&["exec", "c1", "--", "cat", masked]), "");
    let mounts = s.ok(&["exec", "c1", "--", "cat", "/proc/self/mounts"]);
    assert!(mounts.contains(" /proc/sys proc ro,"), "{mounts}");
    s.ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "mount -t tmpfs t /tmp/p && touch /tmp/p/x && umount /tmp/p",
    ]);
    // The init is still pid 1 and still the container's root, with the map the host gave it.
    let pid = s.pid("c1").await;
    assert_eq!(
        s.ok(&["exec", "c1", "--", "cat", "/proc/1/comm"]).trim(),
        "init"
    );
    let map = map_of(pid, "uid_map");
    assert_eq!((map[0].0, map[0].2), (0, 65536));
    assert!(map[0].1 > 0);

    // In the privileged container the host's root may change its mounts: as today.
    s.ok(&["exec", "priv", "--", "mkdir", "-p", "/tmp/p"]);
    for script in [
        &umount_masked,
        "mount -t proc proc /tmp/p && umount /tmp/p",
        "umount -l /proc/sys",
    ] {
        let out = sh("priv", script);
        assert!(
            out.status.success(),
            "`{script}` failed in a privileged container: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    s.ok(&["stop", "c1", "--force"]);
    s.ok(&["stop", "priv", "--force"]);
}

/// The review's deep-tree finding: container root builds a chain of directories deeper than
/// any host-side walk goes. A snapshot is refused (it used to overflow the copy's stack and
/// abort the daemon), and deleting the container removes the whole chain.
#[tokio::test]
async fn a_deep_tree_neither_crashes_the_daemon_nor_outlives_its_container() {
    let Some(s) =
        Setup::new("a_deep_tree_neither_crashes_the_daemon_nor_outlives_its_container").await
    else {
        return;
    };
    s.ok(&["launch", "bb", "c1"]);
    s.ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        // Three chains of 1,000 levels nested into each other: no path used is longer than
        // PATH_MAX, but the tree is 3,000 levels deep.
        "p=$(i=0; while [ $i -lt 1000 ]; do printf d/; i=$((i+1)); done); \
         cd /root && mkdir -p x/$p y/$p z/$p && mv x y/$p && mv y z/$p",
    ]);
    let refused = s.fails(&["snapshot", "c1", "deep"]);
    assert!(refused.contains("deeper than"), "{refused}");
    // The daemon is still there, and the failed snapshot left nothing.
    s.ok(&["list"]);
    assert!(!s
        .d
        .dir()
        .join("storage-pools/default/containers-snapshots/c1/deep")
        .exists());
    s.ok(&["delete", "-f", "c1"]);
    assert!(!s
        .d
        .dir()
        .join("storage-pools/default/containers/c1")
        .exists());
    s.ok(&["list"]);
}
