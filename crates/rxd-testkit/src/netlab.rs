//! The network lab every networking test runs in: rxd inside network namespaces of its own,
//! with an uplink to a pretend internet, so that bridges, dnsmasq, NAT and firewall rules are
//! real and the host's network is never touched.
//!
//! [`NetLab::new`] makes two named network namespaces (`ip netns add`, so `ip -n rxdt-<id> …`
//! works while debugging):
//!
//! ```text
//!   rxdt-<id>  (rxd runs here)                     rxdi-<id>  (the "internet")
//!   lo    up                                        lo    up, 203.0.113.10/32, 2001:db8:200::10/128
//!   up0   198.51.100.2/24, 2001:db8:100::2/64  <->  wan0  198.51.100.1/24, 2001:db8:100::1/64
//!   default via 198.51.100.1 / 2001:db8:100::1      no route to 10/8 or fd00::/8
//! ```
//!
//! The veth is made inside `rxdt` with its peer created directly in `rxdi` (`ip -n rxdt link
//! add up0 type veth peer name wan0 netns rxdi`): no command ever runs against the host's
//! namespace, not even briefly. In `rxdi` a thread of the test process (`setns` into it)
//! serves HTTP on `203.0.113.10:80` and `[2001:db8:200::10]:80`, answering every request with
//! the peer's address: what a container reaches through NAT says which source address it was
//! given.
//!
//! [`NetLab::options`] (and [`NetLab::daemon`], [`NetLab::session`]) run the real `rxd` in
//! `rxdt` and in a private mount namespace, through [`Options::wrap`]:
//!
//! ```text
//! nsenter --net=/run/netns/rxdt-<id> unshare --mount --propagation private \
//!     sh -c 'set -e; mount -t sysfs sysfs /sys; mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup;
//!            mkdir -p /sys/fs/cgroup/cpu; mount -t cgroup -o rw,relatime,cpu cgroup /sys/fs/cgroup/cpu;
//!            …every cgroup and cgroup2 mount of the test process…; exec "$@"' netlab-rxd <rxd argv>
//! ```
//!
//! The fresh sysfs lists `rxdt`'s interfaces, as `/sys/class/net` does on a host, and hides
//! the cgroup mounts, which the script mounts again with the options the test process sees in
//! its own `/proc/self/mounts` (inside the wrapper they are already hidden). `ip netns exec`
//! would remount `/sys` too, but leaves the mount namespace a slave of the host's and the
//! cgroups unmounted, so the wrapper does both steps itself, in the open: rxd and
//! its shim find the same hierarchies as on the host, so the harness's cgroup clean-up still
//! works from outside. Every `nsenter`/`unshare`/`sh` step execs the next, so the daemon's pid
//! is the wrapper's. Its HTTPS listener would sit on `rxdt`'s loopback, out of the tests'
//! reach, so it stays off: tests use the unix socket, which lives in the (shared) file system.
//! Mounts made in that mount namespace vanish with its last process.
//!
//! Dropping the lab stops the HTTP thread, SIGKILLs by pid whatever still runs in either
//! namespace (only this lab put processes there: a daemon leaked by a failed test, its
//! dnsmasq), deletes both namespaces, and then compares the host's network with the
//! [`HostSnapshot`] taken when the lab was made: links, addresses, routes (v4 and v6), the
//! nftables ruleset and every `forwarding` sysctl must be as they were. Drop the daemon (or
//! session) before the lab, which declaring it after the lab does.

use crate::session::Session;
use crate::{require_root, require_tool, Options, TestDaemon};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// rxdt's address on the uplink, the source the internet sees after NAT.
pub const RXDT_V4: &str = "198.51.100.2";
pub const RXDT_V6: &str = "2001:db8:100::2";
/// The internet's side of the uplink, rxdt's default gateways.
pub const GATEWAY_V4: &str = "198.51.100.1";
pub const GATEWAY_V6: &str = "2001:db8:100::1";
/// The HTTP server in the internet namespace.
pub const SERVER_V4: &str = "203.0.113.10";
pub const SERVER_V6: &str = "2001:db8:200::10";

/// The two namespaces of a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// Where rxd runs (`rxdt-<id>`).
    Rxd,
    /// The pretend internet (`rxdi-<id>`).
    Internet,
}

pub struct NetLab {
    id: String,
    /// Namespaces made so far, deleted on drop (also when `new` fails halfway).
    made: Vec<String>,
    server: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    host: Option<HostSnapshot>,
}

impl NetLab {
    /// A lab for `test`, or `None` where it cannot run (not root, `ip`, `nsenter` or `unshare`
    /// missing; under `CI=true` those fail instead). Panics if the lab cannot be built.
    pub fn new(test: &str) -> Option<NetLab> {
        if !require_root(test)
            || !require_tool("ip", "iproute2", test)
            || !require_tool("nsenter", "util-linux", test)
            || !require_tool("unshare", "util-linux", test)
        {
            return None;
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{:x}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = NetLab {
            id,
            made: Vec::new(),
            server: None,
            host: Some(HostSnapshot::take()),
        };
        eprintln!(
            "netlab {test}: {} and {}",
            lab.name(Ns::Rxd),
            lab.name(Ns::Internet)
        );
        lab.build();
        Some(lab)
    }

    fn build(&mut self) {
        let (t, i) = (self.name(Ns::Rxd), self.name(Ns::Internet));
        for ns in [&t, &i] {
            run("ip", &["netns", "add", ns]);
            self.made.push(ns.clone());
        }
        // Links up before addresses, so the connected routes exist when the default routes
        // name their gateways; `nodad` so that the v6 addresses are usable at once.
        let steps: [(&str, &[&str]); 13] = [
            (&t, &["link", "set", "lo", "up"]),
            (&i, &["link", "set", "lo", "up"]),
            (
                &t,
                &[
                    "link", "add", "up0", "type", "veth", "peer", "name", "wan0", "netns", &i,
                ],
            ),
            (&t, &["link", "set", "up0", "up"]),
            (&i, &["link", "set", "wan0", "up"]),
            (&t, &["addr", "add", "198.51.100.2/24", "dev", "up0"]),
            (
                &t,
                &["addr", "add", "2001:db8:100::2/64", "dev", "up0", "nodad"],
            ),
            (&i, &["addr", "add", "198.51.100.1/24", "dev", "wan0"]),
            (
                &i,
                &["addr", "add", "2001:db8:100::1/64", "dev", "wan0", "nodad"],
            ),
            (&i, &["addr", "add", "203.0.113.10/32", "dev", "lo"]),
            (&i, &["addr", "add", "2001:db8:200::10/128", "dev", "lo"]),
            (&t, &["route", "add", "default", "via", GATEWAY_V4]),
            (&t, &["-6", "route", "add", "default", "via", GATEWAY_V6]),
        ];
        for (ns, args) in steps {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            run("ip", &full);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = self.path(Ns::Internet);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("netlab-http".into())
                .spawn(move || serve(&path, &stop, ready_tx))
                .expect("start the HTTP thread")
        };
        self.server = Some((stop, thread));
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("netlab: HTTP server in {i}: {e}"),
            Err(e) => panic!("netlab: HTTP server in {i} did not start: {e}"),
        }
    }

    /// The lab's id, the `<id>` of its namespace names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A namespace's name under `/run/netns` (`rxdt-<id>`, `rxdi-<id>`), for `ip -n`.
    pub fn name(&self, ns: Ns) -> String {
        match ns {
            Ns::Rxd => format!("rxdt-{}", self.id),
            Ns::Internet => format!("rxdi-{}", self.id),
        }
    }

    /// A namespace's file, for `nsenter --net=` and `setns`.
    pub fn path(&self, ns: Ns) -> String {
        format!("/run/netns/{}", self.name(ns))
    }

    /// `ip -n <ns> ARGS`, which must succeed: its standard output.
    pub fn ip(&self, ns: Ns, args: &[&str]) -> String {
        let name = self.name(ns);
        let mut full = vec!["-n", name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip -j -n <ns> ARGS`, parsed.
    pub fn ip_json(&self, ns: Ns, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = self.ip(ns, &full);
        serde_json::from_str(if text.trim().is_empty() { "[]" } else { &text })
            .unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {text}"))
    }

    /// The names of the links in `ns`.
    pub fn links(&self, ns: Ns) -> Vec<String> {
        let links = self.ip_json(ns, &["link"]);
        let mut names: Vec<String> = links
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// Runs `f` on a thread of this process inside `ns` (sockets it opens, processes it
    /// spawns, `/proc/sys/net` it reads are that namespace's) and returns its result.
    pub fn in_ns<T: Send>(&self, ns: Ns, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path(ns);
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                enter(&path).unwrap_or_else(|e| panic!("netlab: enter {path}: {e}"));
                f()
            });
            match thread.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// `GET http://<server>/` from `ns` (from rxdt: what rxd's host would see): the body.
    pub fn http_get(&self, ns: Ns, server: IpAddr) -> std::io::Result<String> {
        self.http_get_at(ns, SocketAddr::new(server, 80))
    }

    /// `GET http://<server>:<port>/` from `ns`: the body of a 200 answer (HTTP/1.0 or 1.1).
    pub fn http_get_at(&self, ns: Ns, server: SocketAddr) -> std::io::Result<String> {
        self.in_ns(ns, || http_get(server))
    }

    /// The daemon options that run rxd in this lab: the wrapper (see the module
    /// documentation) and no HTTPS listener.
    pub fn options(&self) -> Options {
        let script = format!("set -e\n{}\nexec \"$@\"\n", remount_script(&own_mounts()));
        Options {
            no_https: true,
            wrap: vec![
                "nsenter".into(),
                format!("--net={}", self.path(Ns::Rxd)),
                "unshare".into(),
                "--mount".into(),
                "--propagation".into(),
                "private".into(),
                "sh".into(),
                "-c".into(),
                script,
                // `$0` of the script; rxd's command line follows as `$@`.
                "netlab-rxd".into(),
            ],
            ..Options::default()
        }
    }

    /// The real `rxd` running in this lab.
    pub async fn daemon(&self) -> TestDaemon {
        TestDaemon::start_with(self.options()).await
    }

    /// A [`Session`] (daemon, `rxc` config, busybox image imported as `bb`) in this lab, or
    /// `None` where it cannot run.
    pub async fn session(&self, test: &str) -> Option<Session> {
        Session::new_with(test, self.options()).await
    }

    /// The pids of the processes in `ns` (`ip netns pids`).
    pub fn pids(&self, ns: Ns) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name(ns)])
            .stdin(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.server.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        // Only this lab put processes in its namespaces; whatever is left there (a daemon a
        // failed test leaked, its children) goes, by pid.
        for ns in [Ns::Rxd, Ns::Internet] {
            if self.made.contains(&self.name(ns)) {
                for pid in self.pids(ns) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        for ns in self.made.drain(..).rev() {
            let out = Command::new("ip")
                .args(["netns", "del", &ns])
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                other => eprintln!("netlab: ip netns del {ns}: {other:?}"),
            }
        }
        if let Some(before) = self.host.take() {
            let after = HostSnapshot::take();
            if std::thread::panicking() {
                if let Some(diff) = before.difference(&after) {
                    eprintln!("netlab: the host's network changed: {diff}");
                }
            } else {
                before.assert_same(&after);
            }
        }
    }
}

/// `program ARGS`, which must succeed: its standard output.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) -> std::io::Result<()> {
    let ns = std::fs::File::open(path)?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// The HTTP server's thread: in the namespace at `path`, answer every request on both
/// addresses with the peer's address until `stop`.
fn serve(path: &str, stop: &AtomicBool, ready: std::sync::mpsc::Sender<std::io::Result<()>>) {
    let listeners = enter(path).and_then(|()| {
        let v4 = TcpListener::bind((SERVER_V4, 80))?;
        let v6 = TcpListener::bind(format!("[{SERVER_V6}]:80"))?;
        v4.set_nonblocking(true)?;
        v6.set_nonblocking(true)?;
        Ok([v4, v6])
    });
    let listeners = match listeners {
        Ok(l) => {
            let _ = ready.send(Ok(()));
            l
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for l in &listeners {
            if let Ok((stream, peer)) = l.accept() {
                idle = false;
                let _ = answer(stream, peer.ip());
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn answer(mut stream: TcpStream, peer: IpAddr) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    // The request head, as far as it comes; its content does not matter.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = peer.to_canonical().to_string();
    write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `GET /` from `server`: the body of a 200 answer.
fn http_get(server: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET / HTTP/1.0\r\nHost: {server}\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    match reply.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_owned())
        }
        _ => Err(std::io::Error::other(format!(
            "unexpected reply: {reply:?}"
        ))),
    }
}

/// A cgroup (v1) or cgroup2 mount of the test process: (type, options, mount point).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    fstype: String,
    options: String,
    point: String,
}

/// The cgroup mounts under `/sys/fs/cgroup` in this process's `/proc/self/mounts`.
fn own_mounts() -> Vec<CgroupMount> {
    cgroup_mounts(&std::fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts"))
}

fn cgroup_mounts(mounts: &str) -> Vec<CgroupMount> {
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (point, fstype, options) = (*f.get(1)?, *f.get(2)?, *f.get(3)?);
            let point = unescape(point);
            let under = point == "/sys/fs/cgroup" || point.starts_with("/sys/fs/cgroup/");
            (under && matches!(fstype, "cgroup" | "cgroup2")).then(|| CgroupMount {
                fstype: fstype.to_owned(),
                options: options.to_owned(),
                point,
            })
        })
        .collect()
}

/// `/proc/self/mounts` writes a space as `\040` (and tab, newline, backslash likewise).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Single-quoted for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell lines that remount `/sys` for the current network namespace and mount `mounts`
/// again under it: a 0755 tmpfs on `/sys/fs/cgroup` unless cgroup2 itself is mounted there.
fn remount_script(mounts: &[CgroupMount]) -> String {
    let mut lines = vec!["mount -t sysfs sysfs /sys".to_owned()];
    if !mounts.iter().any(|m| m.point == "/sys/fs/cgroup") {
        lines.push("mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup".into());
    }
    for m in mounts {
        let point = quote(&m.point);
        if m.point != "/sys/fs/cgroup" {
            lines.push(format!("mkdir -p {point}"));
        }
        lines.push(format!(
            "mount -t {} -o {} {} {point}",
            m.fstype,
            quote(&m.options),
            m.fstype
        ));
    }
    lines.join("\n")
}

/// The host's network as tests must leave it: links, addresses, routes (v4 and v6), the
/// nftables ruleset (when `nft` exists) and every `forwarding` sysctl, with what changes by
/// itself removed (address and route lifetimes, rule counters).
#[derive(Debug, Clone, PartialEq)]
pub struct HostSnapshot {
    parts: BTreeMap<String, Value>,
}

impl HostSnapshot {
    /// Reads the host's state: this process's network namespace, which tests never change.
    pub fn take() -> HostSnapshot {
        let mut parts = BTreeMap::new();
        for (name, args) in [
            ("ip link", &["-j", "link"][..]),
            ("ip addr", &["-j", "addr"]),
            (
                "ip -4 route",
                &["-j", "-4", "route", "show", "table", "all"],
            ),
            (
                "ip -6 route",
                &["-j", "-6", "route", "show", "table", "all"],
            ),
        ] {
            parts.insert(name.to_owned(), json_of("ip", args));
        }
        if on_path("nft") {
            parts.insert(
                "nft ruleset".into(),
                json_of("nft", &["-j", "list", "ruleset"]),
            );
        }
        parts.insert("forwarding sysctls".into(), forwarding_sysctls());
        HostSnapshot { parts }
    }

    /// What differs between `self` and `later`, one line per part, or `None`.
    pub fn difference(&self, later: &HostSnapshot) -> Option<String> {
        let mut lines = Vec::new();
        for (name, before) in &self.parts {
            match later.parts.get(name) {
                Some(after) if after == before => {}
                after => lines.push(format!(
                    "{name}:\n  before: {before}\n  after:  {}",
                    after.map(Value::to_string).unwrap_or_default()
                )),
            }
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// Panics, saying what changed, unless `later` equals `self`.
    pub fn assert_same(&self, later: &HostSnapshot) {
        if let Some(diff) = self.difference(later) {
            panic!("the host's network changed:\n{diff}");
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// `program ARGS` as JSON, volatile fields removed.
fn json_of(program: &str, args: &[&str]) -> Value {
    let text = run(program, args);
    let mut v: Value = serde_json::from_str(if text.trim().is_empty() { "[]" } else { &text })
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    strip_volatile(&mut v);
    v
}

/// Removes what counts down or up by itself: lifetimes, expiry, packet and byte counters.
fn strip_volatile(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for key in [
                "valid_life_time",
                "preferred_life_time",
                "expires",
                "packets",
                "bytes",
            ] {
                map.remove(key);
            }
            map.values_mut().for_each(strip_volatile);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_volatile),
        _ => {}
    }
}

/// `net.ipv{4,6}.conf.*.forwarding`, by path.
fn forwarding_sysctls() -> Value {
    let mut out = serde_json::Map::new();
    for family in ["ipv4", "ipv6"] {
        let dir = format!("/proc/sys/net/{family}/conf");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path().join("forwarding");
            if let Ok(value) = std::fs::read_to_string(&path) {
                out.insert(
                    path.display().to_string(),
                    Value::String(value.trim().into()),
                );
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_are_read_with_their_options() {
        let text = "sysfs /sys sysfs rw,relatime 0 0\n\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n\
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0\n\
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n\
cgroup /sys/fs/cgroup/odd\\040name cgroup rw,cpu 0 0\n\
cgroup /elsewhere cgroup rw,pids 0 0\n";
        let mounts = cgroup_mounts(text);
        let points: Vec<&str> = mounts.iter().map(|m| m.point.as_str()).collect();
        assert_eq!(
            points,
            [
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/odd name"
            ]
        );
        assert_eq!(
            remount_script(&mounts[..2]),
            "mount -t sysfs sysfs /sys\n\
mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup\n\
mkdir -p '/sys/fs/cgroup/systemd'\n\
mount -t cgroup -o 'rw,relatime,name=systemd' cgroup '/sys/fs/cgroup/systemd'\n\
mkdir -p '/sys/fs/cgroup/unified'\n\
mount -t cgroup2 -o 'rw,relatime' cgroup2 '/sys/fs/cgroup/unified'"
        );
    }

    #[test]
    fn a_unified_host_gets_no_tmpfs() {
        let mounts = cgroup_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n");
        assert_eq!(
            remount_script(&mounts),
            "mount -t sysfs sysfs /sys\n\
mount -t cgroup2 -o 'rw,nsdelegate' cgroup2 '/sys/fs/cgroup'"
        );
    }

    #[test]
    fn volatile_fields_are_stripped() {
        let mut v = serde_json::json!([{"addr_info": [{"local": "10.0.0.1", "valid_life_time": 5}]},
            {"rule": {"expr": [{"counter": {"packets": 3, "bytes": 9}}]}}]);
        strip_volatile(&mut v);
        assert_eq!(
            v,
            serde_json::json!([{"addr_info": [{"local": "10.0.0.1"}]},
                {"rule": {"expr": [{"counter": {}}]}}])
        );
    }
}
