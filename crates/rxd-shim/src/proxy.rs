//! `proxy`: the forwarder of one proxy device, one process per device in its own session, so
//! it outlives a restart of `rxd` (which re-adopts it from the pid file by pid and start time).
//!
//! A socket belongs to the network namespace it was created in, and joining a container's
//! mount namespace is refused to a multithreaded process; so the forwarder (threads, one pair
//! per connection) never enters the container. Whatever must be made inside it is made by the
//! **connector**: a fresh, single-threaded copy of this binary (`proxy-connector`), started
//! before any thread exists, which joins the init's user namespace first (so no capability of
//! the host survives inside), then its mount and network namespaces, and answers requests on
//! a socket pair with descriptors (SCM_RIGHTS): a listener, a fresh inet socket (connected by
//! the forwarder: connecting needs no namespace), or a unix socket connected to a path or an
//! abstract name inside.
//!
//! Order in the forwarder: read the plan, check the init (pid + start time, and a pidfd held
//! from then on), start the connector, make every listener (host ones while still root, so
//! ports below 1024 work), write the pid file, take `run_as` (no groups, no capabilities,
//! no_new_privs, not dumpable), answer `{"pid":N}`, let go of stdio, forward until the init
//! ends or SIGTERM/SIGINT arrives.

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use rxd_core::launch::{ProxyPlan, RunAs};
use rxd_core::proxy::{Bind, ProxyAddress};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A plan names at most 65535 ports per side: bounded well above that.
const MAX_PLAN: u64 = 1024 * 1024;
/// Connections (tcp, unix) plus udp sessions forwarded at once; more are refused.
const MAX_ACTIVE: usize = 1024;
/// A udp session with no datagram either way for this long ends.
const UDP_IDLE: Duration = Duration::from_secs(60);
const RELAY_STACK: usize = 64 * 1024;
const MAX_MESSAGE: usize = 8 * 1024;

/// One socket address of one side.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Endpoint {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Unix(PathBuf),
    Abstract(String),
}

impl Endpoint {
    fn of(address: &ProxyAddress, i: usize) -> Result<Endpoint> {
        Ok(match address {
            ProxyAddress::Tcp { .. } => Endpoint::Tcp(address.socket_addr(i).context("no port")?),
            ProxyAddress::Udp { .. } => Endpoint::Udp(address.socket_addr(i).context("no port")?),
            ProxyAddress::Unix { path } => Endpoint::Unix(path.clone()),
            ProxyAddress::Abstract { name } => Endpoint::Abstract(name.clone()),
        })
    }
}

/// Owner and mode for a listening unix socket file, in the ids of its side.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Ownership {
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
}

/// What the forwarder asks of the connector.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Listen(Endpoint, Ownership),
    /// A fresh, unconnected socket for this tcp or udp address's family.
    Socket(Endpoint),
    /// A unix stream socket connected to this path or name.
    Connect(Endpoint),
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Ready,
    Done,
    Error(String),
}

// ---- the forwarder -------------------------------------------------------------------------

pub fn forward(pid_file: &Path) -> Result<()> {
    // Our stdout, duplicated close-on-exec: the only channel back to the daemon.
    let mut channel = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let _ = nix::unistd::setsid();
    let prepared = read_plan().and_then(|plan| prepare(plan, pid_file));
    let ready = match prepared {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(
                channel,
                "{}",
                serde_json::json!({"error": format!("{e:#}")})
            );
            return Err(e);
        }
    };
    let _ = writeln!(
        channel,
        "{}",
        serde_json::json!({"pid": std::process::id()})
    );
    drop(channel);
    // Let go of the daemon's pipes: nothing after this is read by anyone.
    let devnull = File::options().read(true).write(true).open("/dev/null")?;
    nix::unistd::dup2_stdin(&devnull)?;
    nix::unistd::dup2_stdout(&devnull)?;
    nix::unistd::dup2_stderr(&devnull)?;
    serve(ready)
}

fn read_plan() -> Result<ProxyPlan> {
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_PLAN)
        .read_to_string(&mut text)
        .context("reading the plan")?;
    let plan: ProxyPlan = serde_json::from_str(&text).context("parsing the plan")?;
    if !rxd_core::name::valid_instance_key(&plan.instance) {
        bail!("invalid container name {:?}", plan.instance);
    }
    // A nat=true device is the firewall's (DNAT rules), never a forwarder's.
    if plan.proxy.nat {
        bail!("device {:?} has nat=true: it has no forwarder", plan.device);
    }
    Ok(plan)
}

/// Everything up to the answer: what fails here is reported to the daemon.
struct Ready {
    plan: ProxyPlan,
    init: OwnedFd,
    listeners: Vec<Listening>,
    connect_side: Arc<Side>,
    signals: nix::sys::signalfd::SignalFd,
}

enum Listening {
    Stream(OwnedFd),
    Datagram(Arc<UdpSocket>),
}

fn prepare(plan: ProxyPlan, pid_file: &Path) -> Result<Ready> {
    let pid = plan.init_pid;
    let init = rustix::process::Pid::from_raw(pid)
        .context("invalid init pid")
        .and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                .context("the container's init is gone")
        })?;
    // The pidfd names the process it was opened for: checked once, it stays that process.
    if crate::attach::start_time(pid)? != plan.init_start {
        bail!("the container's init (pid {pid}) is not the one the plan names");
    }
    let user_namespace = !same_namespace(pid, "user")?;
    if user_namespace != plan.idmap.is_some() {
        bail!("the container's user namespace does not match its id map");
    }
    // Every listener and connection is a descriptor: allow as many as the hard limit.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: nofile.maximum,
            maximum: nofile.maximum,
        },
    );

    let connector = Arc::new(Connector::start(pid, plan.init_start, user_namespace)?);
    let (listen_side, connect_side) = match plan.proxy.bind {
        Bind::Host => (Side::Host, Side::Instance(connector)),
        Bind::Instance => (Side::Instance(connector), Side::Host),
    };
    let ownership = Ownership {
        uid: plan.proxy.uid,
        gid: plan.proxy.gid,
        mode: plan.proxy.mode,
    };
    let mut listeners = Vec::with_capacity(plan.proxy.listeners());
    for i in 0..plan.proxy.listeners() {
        let endpoint = Endpoint::of(&plan.proxy.listen, i)?;
        let fd = listen_side
            .listen(&endpoint, ownership)
            .with_context(|| format!("listening on {endpoint:?}"))?;
        listeners.push(match endpoint {
            Endpoint::Udp(_) => Listening::Datagram(Arc::new(UdpSocket::from(fd))),
            _ => Listening::Stream(fd),
        });
    }
    // Blocked in every thread made from now on; read from a descriptor by the main loop.
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(nix::sys::signal::Signal::SIGTERM);
    mask.add(nix::sys::signal::Signal::SIGINT);
    mask.thread_block().context("blocking signals")?;
    let signals = nix::sys::signalfd::SignalFd::with_flags(
        &mask,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )
    .context("signalfd")?;
    let me = std::process::id() as i32;
    write_pid_file(pid_file, me, crate::attach::start_time(me)?)?;
    if let Err(e) = drop_privileges(plan.run_as) {
        // Best effort (the uid may have changed already): a stale file names a pid and start
        // time that no longer match, which the daemon checks anyway.
        let _ = std::fs::remove_file(pid_file);
        return Err(e);
    }
    Ok(Ready {
        plan,
        init,
        listeners,
        connect_side: Arc::new(connect_side),
        signals,
    })
}

fn same_namespace(pid: i32, ns: &str) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
        .with_context(|| format!("the container's init (pid {pid}) is gone"))?;
    let ours = std::fs::metadata(format!("/proc/self/ns/{ns}"))?;
    Ok(theirs.dev() == ours.dev() && theirs.ino() == ours.ino())
}

/// `{"pid":N,"start":S}`, written whole under a temporary name and renamed into place, so
/// the daemon never reads half a file.
fn write_pid_file(path: &Path, pid: i32, start: u64) -> Result<()> {
    let name = path
        .file_name()
        .context("the pid file has no file name")?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{pid}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| {
            writeln!(f, "{}", serde_json::json!({"pid": pid, "start": start}))?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing the pid file {}", path.display()));
    }
    Ok(())
}

/// Become `run_as` for good: no supplementary groups, an empty bounding set and no
/// capabilities (even as uid 0), no_new_privs, and not dumpable (so another process of the
/// same uid cannot take our descriptors with ptrace).
fn drop_privileges(run_as: RunAs) -> Result<()> {
    nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
    for cap in caps::all() {
        caps::drop(None, caps::CapSet::Bounding, cap)
            .with_context(|| format!("dropping {cap} from the bounding set"))?;
    }
    let gid = nix::unistd::Gid::from_raw(run_as.gid);
    nix::unistd::setresgid(gid, gid, gid).with_context(|| format!("taking gid {gid}"))?;
    let uid = nix::unistd::Uid::from_raw(run_as.uid);
    nix::unistd::setresuid(uid, uid, uid).with_context(|| format!("taking uid {uid}"))?;
    for set in [
        caps::CapSet::Ambient,
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        caps::clear(None, set).context("clearing capabilities")?;
    }
    nix::sys::prctl::set_no_new_privs().context("setting no_new_privs")?;
    nix::sys::prctl::set_dumpable(false).context("making the forwarder undumpable")?;
    Ok(())
}

/// Where a side's sockets are made.
enum Side {
    /// Here, in the host's namespaces.
    Host,
    /// By the connector, inside the container.
    Instance(Arc<Connector>),
}

impl Side {
    fn listen(&self, endpoint: &Endpoint, ownership: Ownership) -> Result<OwnedFd> {
        match self {
            Side::Host => listen(endpoint, ownership),
            Side::Instance(c) => c.ask(&Request::Listen(endpoint.clone(), ownership)),
        }
    }

    /// A socket connected to `endpoint` (blocking).
    fn connect(&self, endpoint: &Endpoint) -> Result<OwnedFd> {
        match (self, endpoint) {
            (Side::Host, Endpoint::Tcp(a) | Endpoint::Udp(a)) => {
                let fd = fresh_socket(endpoint)?;
                rustix::net::connect(&fd, a).with_context(|| format!("connecting to {a}"))?;
                Ok(fd)
            }
            (Side::Host, _) => connect_unix(endpoint, false),
            (Side::Instance(c), Endpoint::Tcp(a) | Endpoint::Udp(a)) => {
                // Made inside (so it is the container's network's), connected from here.
                let fd = c.ask(&Request::Socket(endpoint.clone()))?;
                rustix::net::connect(&fd, a).with_context(|| format!("connecting to {a}"))?;
                Ok(fd)
            }
            (Side::Instance(c), _) => c.ask(&Request::Connect(endpoint.clone())),
        }
    }
}

/// Our end of the connector's socket pair. Requests are answered at once (nothing in the
/// connector waits on the network), one at a time.
struct Connector {
    socket: Mutex<OwnedFd>,
}

impl Connector {
    fn start(init_pid: i32, init_start: u64, user_namespace: bool) -> Result<Connector> {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .context("socketpair")?;
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        // `--root` is not used by the connector; the CLI wants it.
        cmd.arg("--root")
            .arg("/")
            .arg("proxy-connector")
            .arg("--init-pid")
            .arg(init_pid.to_string())
            .arg("--init-start")
            .arg(init_start.to_string());
        if user_namespace {
            cmd.arg("--user-namespace");
        }
        let child = cmd
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .env_clear()
            .spawn()
            .context("starting the connector")?;
        drop(cmd);
        // Reaped by nobody until we exit: it ends with us (parent-death signal).
        drop(child);
        match receive(&ours)? {
            Some((Reply::Ready, _)) => Ok(Connector {
                socket: Mutex::new(ours),
            }),
            Some((Reply::Error(e), _)) => bail!("inside the container: {e}"),
            _ => bail!("the connector ended before it was ready"),
        }
    }

    fn ask(&self, request: &Request) -> Result<OwnedFd> {
        let socket = self
            .socket
            .lock()
            .map_err(|_| anyhow::anyhow!("connector lock poisoned"))?;
        send(&socket, &serde_json::to_vec(request)?, None)?;
        match receive(&socket)? {
            Some((Reply::Done, Some(fd))) => Ok(fd),
            Some((Reply::Error(e), _)) => bail!("inside the container: {e}"),
            Some(_) => bail!("the connector answered without a socket"),
            None => bail!("the connector has ended"),
        }
    }
}

fn send(socket: &OwnedFd, message: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<()> {
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(message)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .context("sending to the connector")?;
    Ok(())
}

/// One message and the descriptor it carries; `None` once the other end has closed.
fn receive<T: for<'a> Deserialize<'a>>(socket: &OwnedFd) -> Result<Option<(T, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .context("receiving from the connector")?;
    let fd = control.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    if got.bytes == 0 {
        return Ok(None);
    }
    if got.flags.contains(rustix::net::ReturnFlags::TRUNC) {
        bail!("an oversized message from the connector");
    }
    let value = serde_json::from_slice(&buf[..got.bytes]).context("a malformed message")?;
    Ok(Some((value, fd)))
}

// ---- sockets, on whichever side this process is ---------------------------------------------

fn listen(endpoint: &Endpoint, ownership: Ownership) -> Result<OwnedFd> {
    let fd: OwnedFd = match endpoint {
        Endpoint::Tcp(a) => {
            let l = std::net::TcpListener::bind(a)?;
            l.set_nonblocking(true)?;
            l.into()
        }
        Endpoint::Udp(a) => {
            let s = UdpSocket::bind(a)?;
            s.set_nonblocking(true)?;
            s.into()
        }
        Endpoint::Unix(path) => {
            // Only a socket is ever removed, and never through a link.
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
                    .with_context(|| format!("removing the old socket {}", path.display()))?,
                Ok(_) => bail!("{} exists and is not a socket", path.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
            }
            // The mode is the one bind(2) creates the file with: nothing can open it in
            // between. (Single-threaded whenever a listener is made: the umask is ours alone.)
            let old = ownership
                .mode
                .map(|mode| rustix::process::umask(rustix::fs::Mode::from_raw_mode(!mode & 0o777)));
            let bound = UnixListener::bind(path);
            if let Some(old) = old {
                rustix::process::umask(old);
            }
            let l = bound?;
            if ownership.uid.is_some() || ownership.gid.is_some() {
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    path,
                    ownership.uid.map(nix::unistd::Uid::from_raw),
                    ownership.gid.map(nix::unistd::Gid::from_raw),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .with_context(|| format!("changing the owner of {}", path.display()))?;
            }
            l.set_nonblocking(true)?;
            l.into()
        }
        Endpoint::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            let l = UnixListener::bind_addr(&addr)?;
            l.set_nonblocking(true)?;
            l.into()
        }
    };
    Ok(fd)
}

fn fresh_socket(endpoint: &Endpoint) -> Result<OwnedFd> {
    let (addr, kind) = match endpoint {
        Endpoint::Tcp(a) => (a, SocketType::STREAM),
        Endpoint::Udp(a) => (a, SocketType::DGRAM),
        _ => bail!("not an inet address"),
    };
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    Ok(rustix::net::socket_with(
        family,
        kind,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A unix stream socket connected to a path or abstract name. `bounded`: never wait on a
/// full backlog for long (the connector serves every connection in turn).
fn connect_unix(endpoint: &Endpoint, bounded: bool) -> Result<OwnedFd> {
    let addr = match endpoint {
        Endpoint::Unix(path) => SocketAddrUnix::new(path.as_path())?,
        Endpoint::Abstract(name) => SocketAddrUnix::new_abstract_name(name.as_bytes())?,
        _ => bail!("not a unix address"),
    };
    let flags = if bounded {
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK
    } else {
        SocketFlags::CLOEXEC
    };
    let fd = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)?;
    let mut tries = 0;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::AGAIN) if tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {endpoint:?}")),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream.into())
}

// ---- the connector ---------------------------------------------------------------------------

/// The `proxy-connector` step: stdin is its end of the socket pair.
pub fn connector(init_pid: i32, init_start: u64, user_namespace: bool) -> Result<()> {
    let socket = std::io::stdin().as_fd().try_clone_to_owned()?;
    match enter(init_pid, init_start, user_namespace) {
        Ok(()) => send(&socket, &serde_json::to_vec(&Reply::Ready)?, None)?,
        Err(e) => {
            let _ = send(
                &socket,
                &serde_json::to_vec(&Reply::Error(format!("{e:#}")))?,
                None,
            );
            return Err(e);
        }
    }
    while let Some((request, _)) = receive::<Request>(&socket)? {
        let made = match &request {
            Request::Listen(endpoint, ownership) => listen(endpoint, *ownership),
            Request::Socket(endpoint) => fresh_socket(endpoint),
            Request::Connect(endpoint) => connect_unix(endpoint, true),
        };
        match made {
            Ok(fd) => send(
                &socket,
                &serde_json::to_vec(&Reply::Done)?,
                Some(fd.as_fd()),
            )?,
            Err(e) => send(
                &socket,
                &serde_json::to_vec(&Reply::Error(format!("{e:#}")))?,
                None,
            )?,
        }
    }
    Ok(())
}

/// Join the init's user namespace (as its root), then its mount and network namespaces.
fn enter(init_pid: i32, init_start: u64, user_namespace: bool) -> Result<()> {
    // The host's root, about to enter the container: no ptrace from inside.
    nix::sys::prctl::set_dumpable(false).context("making the connector undumpable")?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let open = |ns: &str| {
        File::open(format!("/proc/{init_pid}/ns/{ns}"))
            .with_context(|| format!("opening the container's {ns} namespace"))
    };
    let user = user_namespace.then(|| open("user")).transpose()?;
    let (mnt, net) = (open("mnt")?, open("net")?);
    // The descriptors are that process's namespaces if it is still the same process.
    if crate::attach::start_time(init_pid)? != init_start {
        bail!("the container's init changed");
    }
    if let Some(user) = user {
        nix::sched::setns(&user, CloneFlags::CLONE_NEWUSER)
            .context("joining the user namespace")?;
        nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
        let gid = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(gid, gid, gid).context("taking the container's root gid")?;
        let uid = nix::unistd::Uid::from_raw(0);
        nix::unistd::setresuid(uid, uid, uid).context("taking the container's root uid")?;
        // Both reset by the uid change.
        nix::sys::prctl::set_dumpable(false)?;
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    }
    nix::sched::setns(&mnt, CloneFlags::CLONE_NEWNS).context("joining the mount namespace")?;
    nix::sched::setns(&net, CloneFlags::CLONE_NEWNET).context("joining the network namespace")?;
    Ok(())
}

// ---- forwarding ------------------------------------------------------------------------------

/// Counts a connection or session while it lives.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Option<Slot> {
        let taken = active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_ACTIVE).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Slot(active.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A udp listener's sessions, by client address.
type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<Session>>>>;

struct Session {
    socket: UdpSocket,
    /// Milliseconds since `epoch` at the last datagram either way.
    last: AtomicU64,
}

fn serve(ready: Ready) -> Result<()> {
    use rustix::event::{PollFd, PollFlags};
    let Ready {
        plan,
        init,
        listeners,
        connect_side,
        signals,
    } = ready;
    let proxy_protocol = plan.proxy.proxy_protocol;
    let targets = (0..listeners.len())
        .map(|i| Endpoint::of(&plan.proxy.connect, plan.proxy.connect_index(i)))
        .collect::<Result<Vec<_>>>()?;
    let active = Arc::new(AtomicUsize::new(0));
    let epoch = Instant::now();
    let sessions: Vec<Sessions> = listeners
        .iter()
        .map(|_| Arc::new(Mutex::new(HashMap::new())))
        .collect();
    let mut datagram = vec![0u8; 65536];
    loop {
        let mut fds = Vec::with_capacity(listeners.len() + 2);
        fds.push(PollFd::new(&init, PollFlags::IN));
        fds.push(PollFd::new(&signals, PollFlags::IN));
        for l in &listeners {
            match l {
                Listening::Stream(fd) => fds.push(PollFd::new(fd, PollFlags::IN)),
                Listening::Datagram(s) => fds.push(PollFd::new(s.as_ref(), PollFlags::IN)),
            }
        }
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).context("poll"),
        }
        if !fds[0].revents().is_empty() {
            // The container's init has ended.
            return Ok(());
        }
        if !fds[1].revents().is_empty() {
            return Ok(());
        }
        let readable: Vec<usize> = fds[2..]
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.revents().is_empty())
            .map(|(i, _)| i)
            .collect();
        drop(fds);
        for i in readable {
            match &listeners[i] {
                Listening::Stream(fd) => {
                    while let Ok(client) = rustix::net::accept_with(fd, SocketFlags::CLOEXEC) {
                        let Some(slot) = Slot::take(&active) else {
                            // Over the limit: closed at once.
                            continue;
                        };
                        let side = connect_side.clone();
                        let target = targets[i].clone();
                        let _ =
                            std::thread::Builder::new()
                                .stack_size(RELAY_STACK)
                                .spawn(move || {
                                    let _slot = slot;
                                    let _ = stream(client, &side, &target, proxy_protocol);
                                });
                    }
                }
                Listening::Datagram(socket) => loop {
                    let (n, from) = match socket.recv_from(&mut datagram) {
                        Ok(got) => got,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    };
                    let map = &sessions[i];
                    let existing = map.lock().ok().and_then(|m| m.get(&from).cloned());
                    let session = match existing {
                        Some(s) => s,
                        None => match udp_session(
                            socket.clone(),
                            from,
                            &connect_side,
                            &targets[i],
                            map.clone(),
                            &active,
                            epoch,
                        ) {
                            Some(s) => s,
                            None => continue,
                        },
                    };
                    session
                        .last
                        .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    let _ = session.socket.send(&datagram[..n]);
                },
            }
        }
    }
}

/// One accepted stream: connect, send the PROXY header if asked, relay both ways.
fn stream(client: OwnedFd, side: &Side, target: &Endpoint, proxy_protocol: bool) -> Result<()> {
    let header = proxy_protocol.then(|| {
        // Addresses of a tcp client; a unix client (or anything else) gets LOCAL.
        let tcp = TcpStream::from(client.try_clone().ok()?);
        Some((tcp.peer_addr().ok()?, tcp.local_addr().ok()?))
    });
    let server = side.connect(target)?;
    let mut server = File::from(server);
    if let Some(addrs) = header {
        server.write_all(&rxd_core::proxy::proxy_v2_header(addrs))?;
    }
    relay(File::from(client), server)
}

fn relay(client: File, server: File) -> Result<()> {
    let (mut c2, mut s2) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::Builder::new()
        .stack_size(RELAY_STACK)
        .spawn(move || {
            copy(&mut c2, &mut s2);
            let _ = rustix::net::shutdown(&s2, rustix::net::Shutdown::Write);
        })?;
    let (mut client, mut server) = (client, server);
    copy(&mut server, &mut client);
    let _ = rustix::net::shutdown(&client, rustix::net::Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// Copy until end of file or an error on either side.
fn copy(from: &mut File, to: &mut File) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A new udp session for `client`: a socket connected to the target, and a thread sending
/// its replies back from the listener until it has been idle for `UDP_IDLE`.
fn udp_session(
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    side: &Side,
    target: &Endpoint,
    map: Sessions,
    active: &Arc<AtomicUsize>,
    epoch: Instant,
) -> Option<Arc<Session>> {
    let slot = Slot::take(active)?;
    let socket = UdpSocket::from(side.connect(target).ok()?);
    socket.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let session = Arc::new(Session {
        socket,
        last: AtomicU64::new(epoch.elapsed().as_millis() as u64),
    });
    map.lock().ok()?.insert(client, session.clone());
    let ours = session.clone();
    let sessions = map.clone();
    let spawned = std::thread::Builder::new()
        .stack_size(RELAY_STACK)
        .spawn(move || {
            let _slot = slot;
            let mut buf = vec![0u8; 65536];
            loop {
                match ours.socket.recv(&mut buf) {
                    Ok(n) => {
                        ours.last
                            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                        let _ = listener.send_to(&buf[..n], client);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        let idle =
                            epoch.elapsed().as_millis() as u64 - ours.last.load(Ordering::Relaxed);
                        if idle >= UDP_IDLE.as_millis() as u64 {
                            break;
                        }
                    }
                    // ECONNREFUSED from an earlier datagram: nobody listens yet; keep going.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            if let Ok(mut m) = map.lock() {
                m.remove(&client);
            }
        });
    if spawned.is_err() {
        if let Ok(mut m) = sessions.lock() {
            m.remove(&client);
        }
        return None;
    }
    Some(session)
}
