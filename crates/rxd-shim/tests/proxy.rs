//! The proxy forwarder (`rxd-shim proxy`), run as the daemon runs it, against a stand-in
//! container: a `sleep` in new user (ids 0-65535 → host 100000-165535, mapped by the test itself), network and mount
//! namespaces, with loopback up and a tmpfs only it sees. Servers "inside" are sockets this
//! test makes from a thread that joined that network namespace. Needs root; under `CI=true`
//! a run without root fails instead of skipping.

use rxd_core::launch::IdMap;
use rxd_core::launch::{ProxyPlan, RunAs};
use rxd_core::proxy::validate;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn have_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the proxy tests need root (CI=true: not skipping)");
    }
    eprintln!("skipped: the proxy tests need root");
    false
}

fn start_time(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The stand-in container. `inside` is a tmpfs in its mount namespace only.
struct Container {
    child: Child,
    /// The first process of the namespaces, which keeps them while the container enters.
    _holder: Holder,
    pid: i32,
    dir: tempfile::TempDir,
}

impl Container {
    fn start() -> Container {
        let dir = tempfile::tempdir().unwrap();
        // The container's root (host uid 100000) walks through it to its tmpfs.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let inside = dir.path().join("inside");
        std::fs::create_dir(&inside).unwrap();
        // New user, network and mount namespaces, held by a first `sleep`; their id maps are
        // written from here (as root may, with no newuidmap and no /etc/subuid entry). The
        // container's process then enters them as their root (host uid 100000), mounts its
        // tmpfs and becomes the `sleep` the tests take for the container's init.
        let holder = Holder(
            Command::new("unshare")
                .args(["--user", "--net", "--mount", "sleep", "600"])
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let held = holder.0.id();
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        wait_until("the container's user namespace", || {
            std::fs::read_link(format!("/proc/{held}/ns/user")).is_ok_and(|ns| ns != ours)
        });
        for map in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{held}/{map}"), "0 100000 65536\n").unwrap();
        }
        let child = Command::new("nsenter")
            .arg(format!("--target={held}"))
            .args(["--user", "--net", "--mount", "--setuid=0", "--setgid=0"])
            .args([
                "sh",
                "-c",
                "mount -t tmpfs none \"$1\" && ip link set lo up && exec sleep 600",
                "sh",
            ])
            .arg(&inside)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let c = Container {
            child,
            _holder: holder,
            pid,
            dir,
        };
        wait_until("the container's sleep", || {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Run `f` on a thread in the container's network namespace (sockets made there stay
    /// there).
    fn net<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = File::open(format!("/proc/{}/ns/net", self.pid)).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    fn plan(&self, device: &str, run_as: u32) -> ProxyPlan {
        let mut d: BTreeMap<String, String> = [("type".to_string(), "proxy".to_string())].into();
        for pair in device.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap();
            d.insert(k.into(), v.into());
        }
        ProxyPlan {
            instance: "c1".into(),
            device: "p".into(),
            init_pid: self.pid,
            init_start: start_time(self.pid),
            idmap: Some(IdMap {
                uid: 100000,
                gid: 100000,
                size: 65536,
            }),
            proxy: validate(&d).unwrap(),
            run_as: RunAs {
                uid: run_as,
                gid: run_as,
            },
        }
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// A process killed (and reaped) when dropped, whatever panics first.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Forwarder {
    child: Child,
    pid: i32,
}

/// Start `rxd-shim proxy` with `plan`: `Ok` once it answered `{"pid":N}`, else its error.
fn forward(c: &Container, plan: &ProxyPlan, pid_file: &Path) -> Result<Forwarder, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rxd-shim"))
        .arg("--root")
        .arg(c.dir.path())
        .arg("proxy")
        .arg("--pid-file")
        .arg(pid_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(serde_json::to_string(plan).unwrap().as_bytes())
        .unwrap();
    drop(stdin);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    match answer["pid"].as_i64() {
        Some(pid) => {
            assert_eq!(pid, i64::from(child.id()));
            Ok(Forwarder {
                child,
                pid: pid as i32,
            })
        }
        None => {
            let status = child.wait().unwrap();
            assert!(!status.success(), "failed but exited 0: {line}");
            Err(answer["error"].as_str().unwrap_or(&line).to_string())
        }
    }
}

impl Forwarder {
    fn status_field(&self, field: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Whether it ended by itself within ten seconds.
    fn ends(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serve each connection: read to the end, answer `tag` + what came, close.
fn tcp_echo(listener: TcpListener, tag: &'static str) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut got = Vec::new();
            let _ = conn.read_to_end(&mut got);
            let _ = conn.write_all(tag.as_bytes());
            let _ = conn.write_all(&got);
        }
    });
}

/// Send `data`, half-close, read the answer.
fn ask<S: Read + Write>(mut s: S, data: &[u8], shutdown: impl FnOnce(&S)) -> Vec<u8> {
    s.write_all(data).unwrap();
    shutdown(&s);
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

fn ask_tcp(port: u16, data: &[u8]) -> Vec<u8> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ask(s, data, |s| s.shutdown(std::net::Shutdown::Write).unwrap())
}

#[test]
fn host_tcp_ports_reach_servers_in_the_container_as_an_unprivileged_forwarder() {
    if !have_root() {
        return;
    }
    let c = Container::start();
    c.net(|| {
        tcp_echo(TcpListener::bind("127.0.0.1:8000").unwrap(), "in8000:");
        tcp_echo(TcpListener::bind("127.0.0.1:8001").unwrap(), "in8001:");
    });
    let (a, b) = (free_port(), free_port());
    let plan = c.plan(
        &format!("listen=tcp:127.0.0.1:{a},{b} connect=tcp:127.0.0.1:8000-8001"),
        65534,
    );
    let pid_file = c.path("p.pid");
    let f = forward(&c, &plan, &pid_file).unwrap();
    assert_eq!(ask_tcp(a, b"hello"), b"in8000:hello");
    assert_eq!(ask_tcp(b, b"world"), b"in8001:world");
    // Several at once.
    let many: Vec<_> = (0..20)
        .map(|i| std::thread::spawn(move || ask_tcp(a, format!("n{i}").as_bytes())))
        .collect();
    for (i, t) in many.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), format!("in8000:n{i}").into_bytes());
    }

    assert_eq!(f.status_field("Uid:"), "65534\t65534\t65534\t65534");
    assert_eq!(f.status_field("Gid:"), "65534\t65534\t65534\t65534");
    assert_eq!(f.status_field("CapEff:"), "0000000000000000");
    assert_eq!(f.status_field("CapPrm:"), "0000000000000000");
    assert_eq!(f.status_field("CapBnd:"), "0000000000000000");
    assert_eq!(f.status_field("NoNewPrivs:"), "1");

    let meta = std::fs::symlink_metadata(&pid_file).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pid_file).unwrap()).unwrap();
    assert_eq!(recorded["pid"], f.pid);
    assert_eq!(recorded["start"], start_time(f.pid));
}

#[test]
fn the_proxy_protocol_header_comes_first() {
    if !have_root() {
        return;
    }
    let c = Container::start();
    c.net(|| tcp_echo(TcpListener::bind("127.0.0.1:8000").unwrap(), ""));
    let port = free_port();
    let plan = c.plan(
        &format!("listen=tcp:127.0.0.1:{port} connect=tcp:127.0.0.1:8000 proxy_protocol=true"),
        65534,
    );
    let _f = forward(&c, &plan, &c.path("p.pid")).unwrap();
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = s.local_addr().unwrap().port();
    let got = ask(s, b"hello", |s| {
        s.shutdown(std::net::Shutdown::Write).unwrap()
    });
    assert_eq!(&got[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(&got[12..16], &[0x21, 0x11, 0, 12]);
    assert_eq!(&got[16..24], &[127, 0, 0, 1, 127, 0, 0, 1]);
    assert_eq!(&got[24..26], &client_port.to_be_bytes());
    assert_eq!(&got[26..28], &port.to_be_bytes());
    assert_eq!(&got[28..], b"hello");
}

#[test]
fn bind_instance_reaches_a_host_server_from_inside() {
    if !have_root() {
        return;
    }
    let c = Container::start();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    tcp_echo(host, "host:");
    let plan = c.plan(
        &format!("listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:{host_port} bind=instance"),
        65534,
    );
    let _f = forward(&c, &plan, &c.path("p.pid")).unwrap();
    // Port 80 inside: made by the container's root, in its namespaces.
    assert_eq!(c.net(|| ask_tcp(80, b"hi")), b"host:hi");
}

#[test]
fn unix_sockets_host_to_instance() {
    if !have_root() {
        return;
    }
    let c = Container::start();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    tcp_echo(host, "end:");
    // A socket only the container sees (its tmpfs), relayed back out to the host's server.
    let inside = c.path("inside/app.sock");
    let plan = c.plan(
        &format!(
            "listen=unix:{} connect=tcp:127.0.0.1:{host_port} bind=instance uid=1000 gid=1001 mode=0660",
            inside.display()
        ),
        0,
    );
    let _inner = forward(&c, &plan, &c.path("inner.pid")).unwrap();
    assert!(!inside.exists(), "the container's socket shows on the host");
    let seen = Path::new(&format!("/proc/{}/root", c.pid)).join(inside.strip_prefix("/").unwrap());
    let meta = std::fs::symlink_metadata(&seen).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (101000, 101001));
    assert_eq!(meta.mode() & 0o777, 0o660);

    // The host's side: an old socket there is replaced.
    let outside = c.path("host.sock");
    drop(UnixListener::bind(&outside).unwrap());
    let plan = c.plan(
        &format!(
            "listen=unix:{} connect=unix:{}",
            outside.display(),
            inside.display()
        ),
        0,
    );
    let _outer = forward(&c, &plan, &c.path("outer.pid")).unwrap();
    let s = UnixStream::connect(&outside).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let got = ask(s, b"via unix", |s| {
        s.shutdown(std::net::Shutdown::Write).unwrap()
    });
    assert_eq!(got, b"end:via unix");

    // Abstract names live in the network namespace: one inside, reached from the host.
    let plan = c.plan(
        &format!("listen=unix:@rxd-test-abstract connect=tcp:127.0.0.1:{host_port} bind=instance"),
        0,
    );
    let _abs = forward(&c, &plan, &c.path("abs.pid")).unwrap();
    let abs_port = free_port();
    let plan = c.plan(
        &format!("listen=tcp:127.0.0.1:{abs_port} connect=unix:@rxd-test-abstract"),
        65534,
    );
    let _abs_outer = forward(&c, &plan, &c.path("abs-outer.pid")).unwrap();
    assert_eq!(ask_tcp(abs_port, b"abstract"), b"end:abstract");
}

#[test]
fn a_host_path_that_is_not_a_socket_is_never_removed() {
    if !have_root() {
        return;
    }
    let c = Container::start();
    let file = c.path("precious");
    std::fs::write(&file, b"data").unwrap();
    let link = c.path("link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    for path in [&file, &link] {
        let plan = c.plan(
            &format!("listen=unix:{} connect=tcp:127.0.0.1:80", path.display()),
            0,
        );
        let err = forward(&c, &plan, &c.path("p.pid")).err().unwrap();
        assert!(err.contains("is not a socket"), "{err}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(!c.path("p.pid").exists());
}

#[test]
fn udp_datagrams_go_both_ways_per_client() {
    if !have_root() {
        return;
    }
    let c = Container::start();
    c.net(|| {
        let s = UdpSocket::bind("127.0.0.1:5353").unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let mut answer = format!("{from}:").into_bytes();
                answer.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&answer, from);
            }
        });
    });
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plan = c.plan(
        &format!("listen=udp:127.0.0.1:{port} connect=udp:127.0.0.1:5353"),
        65534,
    );
    let _f = forward(&c, &plan, &c.path("p.pid")).unwrap();
    let clients: Vec<UdpSocket> = (0..2)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.connect(("127.0.0.1", port)).unwrap();
            s
        })
        .collect();
    let mut seen_from = Vec::new();
    for round in 0..2 {
        for (i, s) in clients.iter().enumerate() {
            s.send(format!("ping{i}.{round}").as_bytes()).unwrap();
            let mut buf = [0u8; 1500];
            let n = s.recv(&mut buf).unwrap();
            let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (from, data) = answer.rsplit_once(':').unwrap();
            assert_eq!(data, format!("ping{i}.{round}"));
            seen_from.push((i, from.to_string()));
        }
    }
    // Each client is one session (one source inside), kept across datagrams.
    assert_eq!(seen_from[0].1, seen_from[2].1);
    assert_eq!(seen_from[1].1, seen_from[3].1);
    assert_ne!(seen_from[0].1, seen_from[1].1);
}

/// Processes whose command line names a connector for this init.
fn connectors_of(init: i32) -> usize {
    let needle = format!("proxy-connector\0--init-pid\0{init}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmd| String::from_utf8_lossy(cmd).contains(&needle))
        .count()
}

#[test]
fn the_forwarder_ends_with_the_container_or_sigterm() {
    if !have_root() {
        return;
    }
    let mut c = Container::start();
    let plan = c.plan(
        &format!(
            "listen=tcp:127.0.0.1:{} connect=tcp:127.0.0.1:80",
            free_port()
        ),
        65534,
    );
    let mut by_term = forward(&c, &plan, &c.path("a.pid")).unwrap();
    let plan = c.plan(
        &format!(
            "listen=tcp:127.0.0.1:{} connect=tcp:127.0.0.1:80",
            free_port()
        ),
        65534,
    );
    let mut by_end = forward(&c, &plan, &c.path("b.pid")).unwrap();
    assert_eq!(connectors_of(c.pid), 2);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(by_term.pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(by_term.ends(), "SIGTERM did not end the forwarder");
    assert!(!by_end.ends_quickly(), "the other forwarder ended too");

    let init = c.pid;
    c.stop();
    assert!(by_end.ends(), "the forwarder outlived the container");
    wait_until("the connectors to end", || connectors_of(init) == 0);
}

impl Forwarder {
    fn ends_quickly(&mut self) -> bool {
        std::thread::sleep(Duration::from_millis(200));
        self.child.try_wait().unwrap().is_some()
    }
}

#[test]
fn another_process_under_the_init_pid_is_refused() {
    if !have_root() {
        return;
    }
    let c = Container::start();
    let mut plan = c.plan("listen=tcp:127.0.0.1:1 connect=tcp:127.0.0.1:80", 65534);
    plan.init_start += 1;
    let err = forward(&c, &plan, &c.path("p.pid")).err().unwrap();
    assert!(err.contains("is not the one the plan names"), "{err}");
    // A privileged plan for a container with a user namespace is refused too.
    let mut plan = c.plan("listen=tcp:127.0.0.1:1 connect=tcp:127.0.0.1:80", 65534);
    plan.idmap = None;
    let err = forward(&c, &plan, &c.path("p.pid")).err().unwrap();
    assert!(err.contains("does not match its id map"), "{err}");
    assert!(!c.path("p.pid").exists());
}
