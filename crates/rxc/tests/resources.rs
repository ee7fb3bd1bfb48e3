//! Resource and kernel keys on real containers, as root: `limits.cpu` (count and set) and
//! `limits.cpu.allowance` read back from the container's cgroups and `nproc`, `limits.memory`
//! with `limits.memory.enforce` and `limits.memory.swap`, all of them changed on a running
//! container and taking effect at once, namespaced `linux.sysctl.*` written
//! inside and host-wide ones refused, and `security.nesting` (a fresh procfs can be mounted
//! only with it, and restricted projects refuse it unless they allow it).

use rxd_client::Method;
use rxd_testkit::api::{ok, outcome, trust_restricted};
use rxd_testkit::cgroup::{cgroup_file, v2};
use rxd_testkit::client_identity;
use serde_json::json;

use rxd_testkit::session::Session as Setup;

fn online_cpus() -> usize {
    rxd_core::instance_config::parse_cpu_list(
        &std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap(),
    )
    .unwrap()
    .len()
}

#[tokio::test]
async fn cpu_limits_pin_and_share_the_cpus() {
    let Some(s) = Setup::new("cpu_limits_pin_and_share_the_cpus").await else {
        return;
    };
    // A count: that many CPUs, the first ones, and `nproc` inside says so.
    s.ok(&[
        "launch",
        "bb",
        "c1",
        "-c",
        "limits.cpu=1",
        "-c",
        "limits.cpu.allowance=50%",
    ]);
    let pid = s.pid("c1").await;
    assert_eq!(cgroup_file(pid, "cpuset", "cpuset.cpus"), "0");
    assert_eq!(s.sh("c1", "nproc"), (0, "1\n".into()));
    if v2() {
        assert_eq!(cgroup_file(pid, "cpu", "cpu.weight"), "50");
    } else {
        assert_eq!(cgroup_file(pid, "cpu", "cpu.shares"), "512");
    }

    // A set: exactly those CPUs; a quota: CFS bandwidth.
    s.ok(&[
        "launch",
        "bb",
        "c2",
        "-c",
        "limits.cpu=0,0",
        "-c",
        "limits.cpu.allowance=25ms/100ms",
    ]);
    let pid = s.pid("c2").await;
    assert_eq!(cgroup_file(pid, "cpuset", "cpuset.cpus"), "0");
    if v2() {
        assert_eq!(cgroup_file(pid, "cpu", "cpu.max"), "25000 100000");
    } else {
        assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us"), "25000");
        assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_period_us"), "100000");
    }

    // More than the host has: all of them.
    s.ok(&["launch", "bb", "c3", "-c", "limits.cpu=4096"]);
    let (code, n) = s.sh("c3", "nproc");
    assert_eq!(
        (code, n.trim().parse::<usize>().unwrap()),
        (0, online_cpus())
    );

    // Changed while running: applied at once, as LXD; unset, lifted.
    let pid = s.pid("c3").await;
    s.ok(&["config", "set", "c3", "limits.cpu", "1"]);
    assert_eq!(cgroup_file(pid, "cpuset", "cpuset.cpus"), "0");
    assert_eq!(s.sh("c3", "nproc"), (0, "1\n".into()));
    s.ok(&["config", "set", "c3", "limits.cpu.allowance", "20ms/50ms"]);
    if v2() {
        assert_eq!(cgroup_file(pid, "cpu", "cpu.max"), "20000 50000");
    } else {
        assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us"), "20000");
        assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_period_us"), "50000");
    }
    s.ok(&["config", "unset", "c3", "limits.cpu"]);
    s.ok(&["config", "unset", "c3", "limits.cpu.allowance"]);
    let (_, n) = s.sh("c3", "nproc");
    assert_eq!(n.trim().parse::<usize>().unwrap(), online_cpus());
    if !v2() {
        assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us"), "-1");
    }
    assert_eq!(s.pid("c3").await, pid, "not restarted");

    // CPUs the host does not have, and values that are not limits, are refused clearly.
    let e = s.fails(&["launch", "bb", "c4", "-c", "limits.cpu=4000-4001"]);
    assert!(e.contains("names CPU 4000"), "{e}");
    for bad in [
        "limits.cpu=0",
        "limits.cpu=lots",
        "limits.cpu.allowance=150%",
    ] {
        let e = s.fails(&["launch", "bb", "c5", "-c", bad]);
        assert!(e.contains("invalid value for limits.cpu"), "{bad}: {e}");
    }
}

#[tokio::test]
async fn memory_enforce_and_swap_reach_the_cgroup() {
    let Some(s) = Setup::new("memory_enforce_and_swap_reach_the_cgroup").await else {
        return;
    };
    let mib: u64 = 1 << 20;
    let read = |pid: i32, v1: &str, v2_file: &str| -> String {
        if v2() {
            cgroup_file(pid, "memory", v2_file)
        } else {
            cgroup_file(pid, "memory", v1)
        }
    };
    // Hard (the default): the limit, and a soft limit 10% under it, as LXD.
    s.ok(&["launch", "bb", "hard", "-c", "limits.memory=64MiB"]);
    let pid = s.pid("hard").await;
    assert_eq!(
        read(pid, "memory.limit_in_bytes", "memory.max"),
        (64 * mib).to_string()
    );
    assert_eq!(
        read(pid, "memory.soft_limit_in_bytes", "memory.low"),
        ((64 * mib / 10 * 9) & !4095).to_string()
    );
    // Swap allowed (the default) still never takes memory and swap together past the limit,
    // as in LXD 5.0 (v1 `memsw` = L, v2 `swap.max` = 0); swappiness is left alone.
    if v2() {
        assert_eq!(read(pid, "", "memory.swap.max"), "0");
    } else {
        assert_ne!(read(pid, "memory.swappiness", ""), "0");
        if std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read(pid, "memory.memsw.limit_in_bytes", ""),
                (64 * mib).to_string()
            );
        }
    }

    // No swap.
    s.ok(&[
        "launch",
        "bb",
        "noswap",
        "-c",
        "limits.memory=64MiB",
        "-c",
        "limits.memory.swap=false",
    ]);
    let pid = s.pid("noswap").await;
    if v2() {
        assert_eq!(read(pid, "", "memory.swap.max"), "0");
    } else {
        assert_eq!(read(pid, "memory.swappiness", ""), "0");
        let memsw = std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes");
        if memsw.exists() {
            assert_eq!(
                read(pid, "memory.memsw.limit_in_bytes", ""),
                (64 * mib).to_string()
            );
        }
    }

    // Soft: no hard limit, only the soft one.
    s.ok(&[
        "launch",
        "bb",
        "soft",
        "-c",
        "limits.memory=64MiB",
        "-c",
        "limits.memory.enforce=soft",
    ]);
    let pid = s.pid("soft").await;
    if v2() {
        assert_eq!(read(pid, "", "memory.max"), "max");
        assert_eq!(read(pid, "", "memory.high"), (64 * mib).to_string());
    } else {
        let hard: u64 = read(pid, "memory.limit_in_bytes", "").parse().unwrap();
        assert!(hard > 1 << 40, "a hard limit of {hard}");
        assert_eq!(
            read(pid, "memory.soft_limit_in_bytes", ""),
            (64 * mib).to_string()
        );
    }
    // The state's swap figures are there (LXD's `memory.swap_usage`), and `rxc info` reads.
    let state = s.d.unix().get("/1.0/instances/soft/state").await.unwrap();
    assert!(state["memory"]["swap_usage"].is_i64(), "{state}");
    let info = s.ok(&["info", "soft"]);
    assert!(info.contains("Memory usage:"), "{info}");

    // Changed while running: at once. Unset: no limit.
    let pid = s.pid("hard").await;
    s.ok(&["config", "set", "hard", "limits.memory", "96MiB"]);
    assert_eq!(
        read(pid, "memory.limit_in_bytes", "memory.max"),
        (96 * mib).to_string()
    );
    s.ok(&["config", "set", "hard", "limits.memory.swap", "false"]);
    if v2() {
        assert_eq!(read(pid, "", "memory.swap.max"), "0");
    } else {
        assert_eq!(read(pid, "memory.swappiness", ""), "0");
    }
    s.ok(&["config", "set", "hard", "limits.processes", "40"]);
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "40");
    s.ok(&["config", "unset", "hard", "limits.memory"]);
    if v2() {
        assert_eq!(read(pid, "", "memory.max"), "max");
    } else {
        let hard: u64 = read(pid, "memory.limit_in_bytes", "").parse().unwrap();
        assert!(hard > 1 << 40, "a hard limit of {hard}");
    }
    assert_eq!(s.pid("hard").await, pid, "not restarted");
    // A limit the running container cannot take is refused, and the config stays as it was.
    let e = s.fails(&["config", "set", "hard", "limits.cpu", "4000-4001"]);
    assert!(e.contains("names CPU 4000"), "{e}");
    assert_eq!(s.ok(&["config", "get", "hard", "limits.cpu"]).trim(), "");
    assert_eq!(cgroup_file(pid, "pids", "pids.max"), "40");

    let e = s.fails(&["launch", "bb", "bad", "-c", "limits.memory.enforce=strict"]);
    assert!(e.contains("expected hard or soft"), "{e}");
}

#[tokio::test]
async fn namespaced_sysctls_are_set_inside_and_host_wide_ones_refused() {
    let Some(s) = Setup::new("namespaced_sysctls_are_set_inside_and_host_wide_ones_refused").await
    else {
        return;
    };
    let host = |path: &str| std::fs::read_to_string(path).unwrap();
    let host_forward = host("/proc/sys/net/ipv4/ip_forward");
    let host_shmmni = host("/proc/sys/kernel/shmmni");
    s.ok(&[
        "launch",
        "bb",
        "c1",
        "-c",
        "linux.sysctl.net.ipv4.ip_forward=1",
        "-c",
        "linux.sysctl.net.ipv4.ping_group_range=0 0",
        "-c",
        "linux.sysctl.kernel.shmmni=1234",
    ]);
    assert_eq!(
        s.sh("c1", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/ping_group_range /proc/sys/kernel/shmmni"),
        (0, "1\n0\t0\n1234\n".into())
    );
    // The host's own stay as they were.
    assert_eq!(host("/proc/sys/net/ipv4/ip_forward"), host_forward);
    assert_eq!(host("/proc/sys/kernel/shmmni"), host_shmmni);

    // Anything host-wide is refused with the reason, in LXD's envelope.
    let r =
        s.d.unix()
            .request(
                Method::POST,
                "/1.0/instances",
                Some(
                    &json!({"name": "c2", "source": {"type": "image", "alias": "bb"},
                         "config": {"linux.sysctl.kernel.panic": "1"}}),
                ),
            )
            .await
            .unwrap();
    assert_eq!(r.status, 400);
    let e = r.envelope().unwrap().error;
    assert!(e.contains("kernel.panic is not namespaced"), "{e}");
    let e = s.fails(&["config", "set", "c1", "linux.sysctl.vm.swappiness", "0"]);
    assert!(e.contains("not namespaced"), "{e}");
    let e = s.fails(&["config", "set", "c1", "linux.sysctl.kernel.hostname", "x"]);
    assert!(e.contains("rename the instance"), "{e}");
}

#[tokio::test]
async fn nesting_lets_a_container_mount_procfs_where_its_project_allows() {
    let Some(s) =
        Setup::new("nesting_lets_a_container_mount_procfs_where_its_project_allows").await
    else {
        return;
    };
    let mount_proc = "mkdir -p /tmp/p && mount -t proc proc /tmp/p && cat /tmp/p/self/stat >/dev/null && umount /tmp/p";
    // Without nesting, the masks keep a fresh procfs out (containers.rs checks the lock).
    s.ok(&["launch", "bb", "plain"]);
    let (code, out) = s.sh("plain", mount_proc);
    assert_ne!(code, 0, "{out}");

    // An operator of a restricted project: refused, until the project allows nesting.
    let unix = s.d.unix();
    ok(
        &unix,
        Method::PATCH,
        "/1.0/projects/default",
        json!({"config": {"restricted": "true"}}),
    )
    .await;
    let operator = client_identity("operator");
    trust_restricted(&unix, &operator, &["default"]).await;
    let op = s.d.https(Some(&operator));
    let nested = json!({"name": "nested", "source": {"type": "image", "alias": "bb"},
                        "config": {"security.nesting": "true"}});
    let e = outcome(&op, Method::POST, "/1.0/instances", nested.clone())
        .await
        .unwrap_err();
    assert!(e.contains("Container nesting is forbidden"), "{e}");
    // Nor may the operator turn it on later.
    let e = outcome(
        &op,
        Method::PATCH,
        "/1.0/instances/plain",
        json!({"config": {"security.nesting": "true"}}),
    )
    .await
    .unwrap_err();
    assert!(e.contains("Container nesting is forbidden"), "{e}");
    ok(
        &unix,
        Method::PATCH,
        "/1.0/projects/default",
        json!({"config": {"restricted.containers.nesting": "allow"}}),
    )
    .await;
    outcome(&op, Method::POST, "/1.0/instances", nested)
        .await
        .unwrap();
    s.ok(&["start", "nested"]);

    // With nesting: the unmasked views LXD gives, and the mount a nested runtime needs.
    let (code, out) = s.sh("nested", "ls /dev/.lxc/proc/self/stat /dev/.lxc/sys/kernel");
    assert_eq!(code, 0, "{out}");
    let (code, out) = s.sh("nested", mount_proc);
    assert_eq!(code, 0, "{out}");
    // Still an unprivileged container: its root is not the host's.
    let pid = s.pid("nested").await;
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert!(!uid_map.trim().starts_with("0 0"), "{uid_map}");
}
