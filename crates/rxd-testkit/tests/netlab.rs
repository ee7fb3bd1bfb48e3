//! The network lab's smoke test: rxd runs in the lab's namespaces and still makes containers,
//! the pretend internet answers from rxd's namespace, and nothing of the lab outlives it.

use rxd_testkit::netlab::{HostSnapshot, NetLab, Ns, RXDT_V4, RXDT_V6, SERVER_V4, SERVER_V6};
use std::process::Command;

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn rxd_runs_a_container_in_the_lab_and_the_host_is_left_as_it_was() {
    let test = "rxd_runs_a_container_in_the_lab_and_the_host_is_left_as_it_was";
    let host = HostSnapshot::take();
    let Some(lab) = NetLab::new(test) else {
        return;
    };
    let (rxdt, rxdi) = (lab.name(Ns::Rxd), lab.name(Ns::Internet));
    let listed = netns_list();
    assert!(listed.contains(&rxdt) && listed.contains(&rxdi), "{listed}");
    assert_eq!(lab.links(Ns::Rxd), ["lo", "up0"]);
    assert_eq!(lab.links(Ns::Internet), ["lo", "wan0"]);

    // The internet answers rxd's namespace with the address it came from, on v4 and v6.
    let v4 = lab.http_get(Ns::Rxd, SERVER_V4.parse().unwrap()).unwrap();
    assert_eq!(v4, RXDT_V4);
    let v6 = lab.http_get(Ns::Rxd, SERVER_V6.parse().unwrap()).unwrap();
    assert_eq!(v6, RXDT_V6);

    {
        let Some(s) = lab.session(test).await else {
            return;
        };
        let pid = s.d.pid().expect("rxd runs");
        // The wrapper execs all the way: the daemon's pid is rxd's, in rxdt's network
        // namespace and a mount namespace of its own, with a sysfs that lists rxdt's links.
        let ns = |p: u32, kind: &str| std::fs::read_link(format!("/proc/{p}/ns/{kind}")).unwrap();
        let rxdt_ino = std::fs::metadata(lab.path(Ns::Rxd)).unwrap();
        assert_eq!(
            ns(pid, "net"),
            std::path::PathBuf::from(format!(
                "net:[{}]",
                std::os::unix::fs::MetadataExt::ino(&rxdt_ino)
            ))
        );
        assert_ne!(ns(pid, "mnt"), ns(std::process::id(), "mnt"));
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert!(exe.ends_with("rxd"), "{}", exe.display());
        let mut class_net: Vec<String> =
            std::fs::read_dir(format!("/proc/{pid}/root/sys/class/net"))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
        class_net.sort();
        // `/proc/<pid>/root` resolves in rxd's mount namespace: its /sys is rxdt's.
        assert_eq!(class_net, ["lo", "up0"]);
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).unwrap();
        assert!(
            mounts.contains(" /sys/fs/cgroup/"),
            "rxd sees cgroup hierarchies:\n{mounts}"
        );

        s.ok(&["launch", "bb", "c1"]);
        assert_eq!(s.state("c1").await["status"], "Running");
        let init = s.pid("c1").await;
        assert_ne!(
            ns(init as u32, "net"),
            ns(pid, "net"),
            "the container has a network namespace of its own"
        );
        // Nothing new in rxdt: the container's namespace is separate and has no NIC yet.
        assert_eq!(lab.links(Ns::Rxd), ["lo", "up0"]);
        let (code, out) = s.sh("c1", "echo hello");
        assert_eq!((code, out.trim()), (0, "hello"));
        s.ok(&["stop", "c1", "--force"]);
        s.ok(&["delete", "c1"]);
        assert!(s.d.container_cgroups().is_empty());
    }

    let mountinfo_before_drop = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mountinfo_before_drop.contains(&format!("/run/netns/{rxdt}")));
    drop(lab);
    let listed = netns_list();
    assert!(
        !listed.contains(&rxdt) && !listed.contains(&rxdi),
        "{listed}"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&rxdt) && !mountinfo.contains(&rxdi),
        "{mountinfo}"
    );
    host.assert_same(&HostSnapshot::take());
}
