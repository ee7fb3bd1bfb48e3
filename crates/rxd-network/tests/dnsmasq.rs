//! rxd-network's dnsmasq supervisor against Debian's real dnsmasq (root). Each scenario makes
//! anonymous network namespaces of its own with a bridge in them, runs dnsmasq there with the
//! argv rxd-core builds, and stops it through a guard, so a failing test leaves no process,
//! namespace or file behind. The last test runs every scenario between two snapshots of the
//! host's links and addresses and requires them equal.

use ipnet::IpNet;
use rxd_core::network::config::{BridgeConfig, Config, IfName, NetworkName};
use rxd_core::network::dnsmasq::{self as core_dnsmasq, Setup};
use rxd_core::network::mac::Mac;
use rxd_network::dnsmasq::{
    ensure_hosts_dir, prune_leases, read_leases, remove_hosts_file, send_dhcp_release,
    write_hosts_file, Dnsmasq, HOSTS_DIR, LEASES_FILE, PID_FILE,
};
use rxd_network::{in_netns, new_netns, Netlink, NetworkError};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn name(s: &str) -> IfName {
    IfName::parse(s).unwrap()
}

/// The account dnsmasq drops to: `dnsmasq` from `dnsmasq-base` if it exists, else `nobody`;
/// group `nogroup`.
fn account() -> (&'static str, &'static str, nix::unistd::Gid) {
    let user = match nix::unistd::User::from_name("dnsmasq") {
        Ok(Some(_)) => "dnsmasq",
        _ => "nobody",
    };
    let group = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .expect("group nogroup");
    (user, "nogroup", group.gid)
}

/// A namespace holding bridge `br` with `gw`/24 and `lo` up, and a network dir that the
/// unprivileged dnsmasq can traverse (it reads the hosts directory after dropping root).
struct Net {
    ns: OwnedFd,
    name: NetworkName,
    gw: Ipv4Addr,
    dir: tempfile::TempDir,
}

fn bridge_net(br: &str, gw: Ipv4Addr) -> Net {
    let ns = new_netns().unwrap();
    let host = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    in_netns(ns.as_fd(), || {
        let here = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
        assert_ne!(here, host, "the netns thread is in the host's namespace");
        let mut nl = Netlink::open().unwrap();
        nl.set_up(&name("lo")).unwrap();
        let br = name(br);
        nl.ensure_bridge(&br, 1500, "00:16:3e:00:aa:01".parse().unwrap())
            .unwrap();
        let net: IpNet = format!("{gw}/24").parse().unwrap();
        nl.add_address(&br, net).unwrap();
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Net {
        ns,
        name: NetworkName::parse(br).unwrap(),
        gw,
        dir,
    }
}

impl Net {
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// rxd-core's argv for this bridge: IPv4 with DHCP, no IPv6, DNS domain `lxd`.
    fn argv(&self) -> Vec<std::ffi::OsString> {
        let config: Config = [
            ("ipv4.address", format!("{}/24", self.gw)),
            ("ipv6.address", "none".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let config = BridgeConfig::from_config(&config).unwrap();
        let (user, group, gid) = account();
        let hosts = ensure_hosts_dir(self.dir(), gid).unwrap();
        let leases = self.dir().join(LEASES_FILE);
        let setup = Setup {
            user,
            group,
            leases_file: &leases,
            hosts_dir: &hosts,
            quiet: false,
        };
        core_dnsmasq::argv(&self.name, &config, &setup)
    }

    fn start(&self) -> Running {
        let d = Dnsmasq::start(&self.name, self.argv(), self.dir(), Some(self.ns.as_fd()));
        Running(Some(d.unwrap_or_else(|e| panic!("{e}"))))
    }
}

/// Stops the dnsmasq it holds when dropped, so a failed assertion leaves no process.
#[derive(Debug)]
struct Running(Option<Dnsmasq>);

impl Running {
    fn get(&self) -> &Dnsmasq {
        self.0.as_ref().unwrap()
    }

    fn take(&mut self) -> Dnsmasq {
        self.0.take().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = d.stop();
        }
    }
}

/// A child of the test (not dnsmasq), killed and reaped when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fields 3.. of `/proc/<pid>/stat` (after the command name), `None` once it is gone.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn start_time(pid: i32) -> u64 {
    stat_fields(pid).unwrap()[19].parse().unwrap()
}

fn pid_record(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(PID_FILE)).unwrap()).unwrap()
}

fn write_record(dir: &Path, record: &str) {
    std::fs::write(dir.join(PID_FILE), record).unwrap();
}

/// `_gateway.lxd IN A` asked over UDP from inside `ns`; the A records' addresses in the answer.
fn query_gateway(ns: &OwnedFd, server: Ipv4Addr) -> Vec<Ipv4Addr> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["_gateway", "lxd"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let reply = in_netns(ns.as_fd(), || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        socket.send_to(&query, (server, 53)).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        buf[..n].to_vec()
    })
    .unwrap();
    assert_eq!(&reply[..2], &[0x12, 0x34], "{reply:?}");
    assert_eq!(reply[3] & 0x0f, 0, "rcode: {reply:?}");
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    // Skip the question (same bytes as asked), then read each answer: a compressed name
    // pointer (2), type (2), class (2), TTL (4), length (2), data.
    let mut at = query.len();
    let mut out = Vec::new();
    for _ in 0..answers {
        assert_eq!(reply[at] & 0xc0, 0xc0, "compressed name: {reply:?}");
        let rtype = u16::from_be_bytes([reply[at + 2], reply[at + 3]]);
        let len = usize::from(u16::from_be_bytes([reply[at + 10], reply[at + 11]]));
        let data = &reply[at + 12..at + 12 + len];
        if rtype == 1 && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 12 + len;
    }
    out
}

/// `/proc/<pid>/net/udp` (the namespace of that process) has a socket bound to `addr:53`.
fn udp_bound_53(pid: i32, addr: Ipv4Addr) -> bool {
    let want = format!("{:08X}:0035", u32::from_ne_bytes(addr.octets()));
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap();
    table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(&want))
}

fn lifecycle_start_adopt_reload_stop() {
    let net = bridge_net("rxdq-br0", Ipv4Addr::new(10, 250, 0, 1));
    let dir = net.dir();
    let mut running = net.start();
    let pid = running.get().pid();
    let start = running.get().start_time();

    // The pid file names it with its start time; it is dnsmasq, leading its own session.
    assert_eq!(
        pid_record(dir),
        serde_json::json!({"pid": pid, "start": start_time(pid)})
    );
    assert_eq!(start, start_time(pid));
    let meta = std::fs::metadata(dir.join(PID_FILE)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let fields = stat_fields(pid).unwrap();
    assert_eq!(fields[3], pid.to_string(), "session id");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        Path::new("/usr/sbin/dnsmasq")
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(environ.is_empty(), "environment not cleared: {environ:?}");
    let log = std::fs::metadata(dir.join("dnsmasq.log")).unwrap();
    assert_eq!(log.mode() & 0o777, 0o600);

    // It serves DNS on the bridge's address, inside the namespace only.
    assert!(udp_bound_53(pid, net.gw), "no UDP socket on {}:53", net.gw);
    assert!(
        !udp_bound_53(std::process::id() as i32, net.gw),
        "bound in the host's namespace"
    );
    assert_eq!(query_gateway(&net.ns, net.gw), [net.gw]);

    // Adopted while it still is that dnsmasq.
    let adopted = Dnsmasq::adopt(dir, &net.name).expect("adopt");
    assert_eq!((adopted.pid(), adopted.start_time()), (pid, start));
    drop(adopted);
    assert!(
        stat_fields(pid).is_some(),
        "dropping an adopted dnsmasq ended it"
    );
    let good = format!("{{\"pid\":{pid},\"start\":{start}}}");

    // Refused, and the stale file removed: a wrong start time, another network's name, a
    // process that is not dnsmasq, garbage.
    let other = NetworkName::parse("rxdq-other").unwrap();
    let sleeper = Kid(Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap());
    let spid = sleeper.0.id() as i32;
    let forged = [
        (
            format!("{{\"pid\":{pid},\"start\":{}}}", start + 1),
            &net.name,
        ),
        (good.clone(), &other),
        (
            format!("{{\"pid\":{spid},\"start\":{}}}", start_time(spid)),
            &net.name,
        ),
        ("{\"pid\":1,\"start\":1}".to_owned(), &net.name),
        ("not json".to_owned(), &net.name),
        (format!("{{\"pid\":{pid}}}"), &net.name),
    ];
    for (record, n) in forged {
        write_record(dir, &record);
        assert!(Dnsmasq::adopt(dir, n).is_none(), "adopted {record} for {n}");
        assert!(!dir.join(PID_FILE).exists(), "stale pid file {record} kept");
    }
    drop(sleeper);
    // A link in place of the pid file is not followed.
    std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join(PID_FILE)).unwrap();
    std::fs::write(dir.join("elsewhere"), &good).unwrap();
    assert!(Dnsmasq::adopt(dir, &net.name).is_none());
    assert!(std::fs::symlink_metadata(dir.join(PID_FILE)).is_err());
    write_record(dir, &good);
    assert!(Dnsmasq::adopt(dir, &net.name).is_some());

    // Hosts files: 0640 in a 0750 directory, both dnsmasq's group; SIGHUP keeps the process.
    let (_, _, gid) = account();
    let hosts = dir.join(HOSTS_DIR);
    write_hosts_file(dir, "c1.eth0", "00:16:3e:00:00:01,10.250.0.10,c1\n", gid).unwrap();
    let file = std::fs::metadata(hosts.join("c1.eth0")).unwrap();
    assert_eq!((file.mode() & 0o777, file.gid()), (0o640, gid.as_raw()));
    let d = std::fs::metadata(&hosts).unwrap();
    assert_eq!(
        (d.mode() & 0o777, d.gid(), d.uid()),
        (0o750, gid.as_raw(), 0)
    );
    running.get().reload().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        stat_fields(pid).map(|f| f[19].clone()),
        Some(start.to_string())
    );
    assert!(Dnsmasq::adopt(dir, &net.name).is_some());
    assert!(remove_hosts_file(dir, "c1.eth0").unwrap());
    assert!(!remove_hosts_file(dir, "c1.eth0").unwrap());
    assert!(write_hosts_file(dir, "../x", "", gid).is_err());
    assert!(write_hosts_file(dir, ".x", "", gid).is_err());
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");

    // Stopped: gone (reaped), pid file removed, reload then refused.
    let began = Instant::now();
    let d = running.take();
    let stale = Dnsmasq::adopt(dir, &net.name).unwrap();
    d.stop().unwrap();
    assert!(began.elapsed() < Duration::from_secs(2), "SIGTERM ignored");
    assert!(stat_fields(pid).is_none(), "dnsmasq {pid} still exists");
    assert!(!dir.join(PID_FILE).exists());
    assert!(matches!(
        stale.reload(),
        Err(NetworkError::DnsmasqGone { pid: p, .. }) if p == pid
    ));
    stale.stop().unwrap();
    assert!(Dnsmasq::adopt(dir, &net.name).is_none());
}

fn premature_exit_is_reported_as_lxd_does() {
    // Port 53 on the bridge's address already taken.
    let net = bridge_net("rxdq-br1", Ipv4Addr::new(10, 250, 1, 1));
    let gw = net.gw;
    let squatter = in_netns(net.ns.as_fd(), || UdpSocket::bind((gw, 53)).unwrap()).unwrap();
    let err = Dnsmasq::start(&net.name, net.argv(), net.dir(), Some(net.ns.as_fd()))
        .map(Running::from_ok)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("The DNS and DHCP service exited prematurely: exit status 2 (\"dnsmasq: "),
        "{msg}"
    );
    assert!(msg.contains("Address already in use"), "{msg}");
    assert!(!net.dir().join(PID_FILE).exists());
    drop(squatter);

    // An option dnsmasq does not know.
    let argv = [
        "--keep-in-foreground",
        "--interface=rxdq-br1",
        "--no-such-option",
    ]
    .map(std::ffi::OsString::from)
    .to_vec();
    let err = Dnsmasq::start(&net.name, argv, net.dir(), Some(net.ns.as_fd()))
        .map(Running::from_ok)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("The DNS and DHCP service exited prematurely: exit status 1 (\""),
        "{msg}"
    );
    assert!(msg.contains("bad command line options"), "{msg}");
    // Only this start's lines are quoted, not the earlier failure's.
    assert!(!msg.contains("Address already in use"), "{msg}");
    assert!(!net.dir().join(PID_FILE).exists());
}

impl Running {
    fn from_ok(d: Dnsmasq) -> Running {
        Running(Some(d))
    }
}

/// A reload asked for right after a spawn, before the start is confirmed (a NIC's hosts file
/// written while the refresher's dnsmasq starts), waits for the confirmation: a SIGHUP then
/// would end `setsid` or a dnsmasq without its handler yet. The dnsmasq lives on, and still
/// answers after the reload it was owed.
fn reload_before_confirm_waits_for_it() {
    let net = bridge_net("rxdq-br3", Ipv4Addr::new(10, 250, 3, 1));
    for _ in 0..3 {
        let mut d = Dnsmasq::spawn(&net.name, net.argv(), net.dir(), Some(net.ns.as_fd()))
            .unwrap_or_else(|e| panic!("{e}"));
        d.reload().unwrap();
        d.confirm().unwrap_or_else(|e| panic!("{e}"));
        let running = Running(Some(d));
        let pid = running.get().pid();
        assert!(
            stat_fields(pid).is_some_and(|f| f[0] != "Z"),
            "dnsmasq {pid} ended"
        );
        assert!(udp_bound_53(pid, net.gw), "dnsmasq {pid} does not serve");
        drop(running);
    }
}

/// A client in a second namespace, on a veth whose other end is a port of the bridge, gets
/// its reserved address from dnsmasq (busybox `udhcpc`); a DHCPRELEASE from the host then
/// frees it in the running dnsmasq, and pruning empties the file.
fn dhcp_lease_from_a_reservation_then_pruned() {
    let net = bridge_net("rxdq-br2", Ipv4Addr::new(10, 250, 2, 1));
    let dir = net.dir();
    let client = new_netns().unwrap();
    let mac: Mac = "00:16:3e:00:02:02".parse().unwrap();
    in_netns(net.ns.as_fd(), || {
        let mut nl = Netlink::open().unwrap();
        let host = name("rxdq-h2");
        nl.create_veth(&host, &name("rxdq-p2"), mac, 1500).unwrap();
        nl.set_master(&host, &name("rxdq-br2")).unwrap();
        nl.set_up(&host).unwrap();
        nl.move_to_netns(&name("rxdq-p2"), client.as_fd(), &name("eth0"))
            .unwrap();
    })
    .unwrap();
    in_netns(client.as_fd(), || {
        let mut nl = Netlink::open().unwrap();
        nl.set_up(&name("lo")).unwrap();
        nl.set_up(&name("eth0")).unwrap();
    })
    .unwrap();

    // A stale lease of a departed NIC, pruned before the start.
    std::fs::write(
        dir.join(LEASES_FILE),
        "1 00:16:3e:00:09:09 10.250.2.99 gone *\n",
    )
    .unwrap();
    prune_leases(dir, &BTreeSet::from([mac])).unwrap();
    assert_eq!(read_leases(dir).unwrap(), b"");

    let running = net.start();
    // The reservation arrives after the start: dnsmasq, no longer root, reads it on SIGHUP.
    let (_, _, gid) = account();
    let key = rxd_core::name::InstanceKey::new("default", "c2");
    let line = core_dnsmasq::hosts_file(
        mac,
        Some(Ipv4Addr::new(10, 250, 2, 50)),
        None,
        &key,
        rxd_core::network::config::DnsMode::Managed,
    )
    .unwrap();
    let file = core_dnsmasq::hosts_file_name(&key, "eth0").unwrap();
    write_hosts_file(dir, &file, &line, gid).unwrap();
    running.get().reload().unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let out = in_netns(client.as_fd(), || {
        let child = Command::new("busybox")
            .args([
                "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1",
            ])
            .args(["-s", "/bin/true"])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "udhcpc: {said}");
    assert!(said.contains("lease of 10.250.2.50 obtained"), "{said}");

    let leases = core_dnsmasq::parse_leases(&read_leases(dir).unwrap());
    assert!(
        leases
            .iter()
            .any(|l| l.mac() == Some(mac) && l.address == Ipv4Addr::new(10, 250, 2, 50)),
        "{leases:?}"
    );

    // A DHCPRELEASE for the lease frees it in the running dnsmasq; one naming another MAC
    // does not.
    let gw = net.gw;
    let release = |m: Mac| {
        let packet = core_dnsmasq::dhcp_release(m, Ipv4Addr::new(10, 250, 2, 50), gw, 7);
        in_netns(net.ns.as_fd(), || send_dhcp_release(gw, &packet))
            .unwrap()
            .unwrap();
    };
    let held = || {
        core_dnsmasq::parse_leases(&read_leases(dir).unwrap())
            .iter()
            .any(|l| l.mac() == Some(mac))
    };
    release("00:16:3e:00:02:03".parse().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(held(), "a release for another MAC dropped the lease");
    release(mac);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while held() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease outlived its DHCPRELEASE"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(running);
    prune_leases(dir, &BTreeSet::new()).unwrap();
    assert!(core_dnsmasq::parse_leases(&read_leases(dir).unwrap()).is_empty());
    let meta = std::fs::metadata(dir.join(LEASES_FILE)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o644);
}

const SCENARIOS: &[(&str, fn())] = &[
    (
        "lifecycle_start_adopt_reload_stop",
        lifecycle_start_adopt_reload_stop,
    ),
    (
        "premature_exit_is_reported_as_lxd_does",
        premature_exit_is_reported_as_lxd_does,
    ),
    (
        "reload_before_confirm_waits_for_it",
        reload_before_confirm_waits_for_it,
    ),
    (
        "dhcp_lease_from_a_reservation_then_pruned",
        dhcp_lease_from_a_reservation_then_pruned,
    ),
];

fn ready(test: &str) -> bool {
    rxd_testkit::require_root(test)
        && rxd_testkit::require_tool("dnsmasq", "dnsmasq-base", test)
        && rxd_testkit::require_tool("busybox", "busybox-static", test)
        && rxd_testkit::require_tool("ip", "iproute2", test)
}

fn run(test: &str) {
    if !ready(test) {
        return;
    }
    let (_, scenario) = SCENARIOS.iter().find(|(n, _)| *n == test).unwrap();
    scenario();
}

#[test]
fn lifecycle() {
    run("lifecycle_start_adopt_reload_stop");
}

#[test]
fn premature_exit() {
    run("premature_exit_is_reported_as_lxd_does");
}

#[test]
fn reload_before_confirm() {
    run("reload_before_confirm_waits_for_it");
}

#[test]
fn dhcp_lease() {
    run("dhcp_lease_from_a_reservation_then_pruned");
}

fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success());
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("valid_life_time");
                map.remove("preferred_life_time");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[test]
fn host_network_unchanged_by_the_suite() {
    if !ready("host_network_unchanged_by_the_suite") {
        return;
    }
    let before = (ip_json(&["-j", "link"]), ip_json(&["-j", "addr"]));
    for (_, scenario) in SCENARIOS {
        scenario();
    }
    let after = (ip_json(&["-j", "link"]), ip_json(&["-j", "addr"]));
    assert_eq!(before.0, after.0, "the host's links changed");
    assert_eq!(before.1, after.1, "the host's addresses changed");
}
