//! One supervised dnsmasq per managed network: started in the network's namespace, in a session
//! of its own so it outlives the daemon, recorded in a pid file with its start time, adopted
//! after a restart only when the process still is that dnsmasq, signalled only through a
//! descriptor opened after that check; and the files it reads (the per-NIC hosts files, the
//! lease file pruned before a start), written atomically. The argv, the hosts lines and the
//! lease parser are `rxd_core::network::dnsmasq`'s: this module never builds dnsmasq's input
//! from text.

use crate::error::{NetworkError, Result};
use crate::netns::in_netns;
use nix::unistd::Gid;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use rxd_core::network::config::NetworkName;
use rxd_core::network::dnsmasq::{retain_leases, MAX_LEASE_LINE, MAX_LEASE_LINES};
use rxd_core::network::mac::Mac;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Debian's `dnsmasq-base`.
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// util-linux's `setsid(1)`: run from a process that does not lead its process group it calls
/// `setsid()` and execs the program in place, so the pid we spawn is dnsmasq's and it leads a
/// session of its own (rxd forbids `unsafe`, which a `pre_exec` hook would need).
const SETSID: &str = "/usr/bin/setsid";

/// A dnsmasq that exits this soon after its start failed to start (LXD's wait).
pub const STARTUP_WAIT: Duration = Duration::from_millis(500);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// At most this much of the log's tail goes into a start error.
const STDERR_TAIL: u64 = 4096;
/// A pid file longer than this is not one we wrote.
const MAX_PID_FILE: u64 = 256;

/// The files of a network's dnsmasq, in the network's directory.
pub const PID_FILE: &str = "dnsmasq.pid";
pub const LOG_FILE: &str = "dnsmasq.log";
pub const LEASES_FILE: &str = "dnsmasq.leases";
pub const HOSTS_DIR: &str = "dnsmasq.hosts";

/// A running dnsmasq of one network: its pid and the start time that tells it from a later
/// process given the same pid. Dropping it leaves dnsmasq running (it outlives the daemon);
/// [`Dnsmasq::stop`] ends it.
#[derive(Debug)]
pub struct Dnsmasq {
    net: NetworkName,
    pid: i32,
    start: u64,
    pid_file: PathBuf,
    /// Present when this process spawned it, so that `stop` reaps it.
    child: Option<Child>,
    /// When this process spawned it, and where its log then ended (for [`Dnsmasq::confirm`]).
    spawned: Option<(Instant, PathBuf, u64)>,
    /// A reload asked for before [`Dnsmasq::confirm`]: sent by it (a SIGHUP before dnsmasq has
    /// its handler, or to `setsid` before it execs, would end the process).
    reload_pending: std::sync::atomic::AtomicBool,
}

impl Dnsmasq {
    /// Starts dnsmasq for `net` with `argv` (from `rxd_core::network::dnsmasq::argv`, which
    /// keeps it in the foreground) inside `netns` (the caller's namespace when `None`), with a
    /// cleared environment, stdin on `/dev/null` and its output appended to
    /// `<dir>/dnsmasq.log`; records `<dir>/dnsmasq.pid`. A dnsmasq that exits within 500 ms is
    /// an error carrying its exit status and the last lines it wrote (LXD's message). Blocks for
    /// that half second: call it off the async runtime.
    pub fn start(
        net: &NetworkName,
        argv: Vec<OsString>,
        dir: &Path,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<Dnsmasq> {
        let mut dnsmasq = Dnsmasq::spawn(net, argv, dir, netns)?;
        dnsmasq.confirm()?;
        Ok(dnsmasq)
    }

    /// [`Dnsmasq::start`] without the wait: the caller calls [`Dnsmasq::confirm`] later (and may
    /// do other work, or let go of its locks, meanwhile).
    pub fn spawn(
        net: &NetworkName,
        argv: Vec<OsString>,
        dir: &Path,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<Dnsmasq> {
        let err = |what: &str| file_err(net, what);
        let log_path = dir.join(LOG_FILE);
        let mut log = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&log_path)
            .map_err(err("open the log file"))?;
        let log_start = log
            .seek(SeekFrom::End(0))
            .map_err(err("open the log file"))?;
        let stderr = log.try_clone().map_err(err("open the log file"))?;

        let mut command = Command::new(SETSID);
        command
            .arg(DNSMASQ)
            .args(&argv)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        // The child inherits the network namespace of the thread that spawns it.
        let spawned = match netns {
            Some(ns) => in_netns(ns, move || command.spawn())?,
            None => command.spawn(),
        };
        let mut child = spawned.map_err(err("start dnsmasq"))?;
        let pid = child.id() as i32;
        let start = match proc_stat(pid) {
            Ok(stat) => stat.start,
            Err(e) => {
                kill_and_reap(&mut child);
                return Err(file_err(net, "read dnsmasq's /proc/<pid>/stat")(e));
            }
        };
        let pid_file = dir.join(PID_FILE);
        let record = format!("{{\"pid\":{pid},\"start\":{start}}}\n");
        if let Err(e) = write_atomic(dir, PID_FILE, record.as_bytes(), 0o600, None) {
            kill_and_reap(&mut child);
            return Err(file_err(net, "write the pid file")(e));
        }
        let dnsmasq = Dnsmasq {
            net: net.clone(),
            pid,
            start,
            pid_file,
            child: Some(child),
            spawned: Some((Instant::now(), log_path, log_start)),
            reload_pending: Default::default(),
        };
        Ok(dnsmasq)
    }

    /// Waits until [`STARTUP_WAIT`] after the spawn (not at all for an adopted dnsmasq, or once
    /// that has passed): one that exited by then is an error carrying its exit status and the
    /// last lines it wrote, its pid file removed; one still running must be dnsmasq leading its
    /// own session, or it is stopped.
    pub fn confirm(&mut self) -> Result<()> {
        let Some((spawned, log_path, log_start)) = self.spawned.take() else {
            return Ok(());
        };
        let (pid, net) = (self.pid, self.net.clone());
        let deadline = spawned + STARTUP_WAIT;
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(status)) => status,
                _ => None,
            };
            if let Some(status) = exited {
                let _ = std::fs::remove_file(&self.pid_file);
                return Err(NetworkError::DnsmasqExited {
                    status: go_status(status),
                    stderr: log_tail(&log_path, log_start),
                });
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still running: setsid must have become dnsmasq, leading its own session.
        let is_dnsmasq = is_dnsmasq(pid, &net) && proc_stat(pid).is_ok_and(|s| s.session == pid);
        if !is_dnsmasq {
            let _ = self.stop_now();
            return Err(NetworkError::DnsmasqIdentity {
                net: net.to_string(),
                pid,
            });
        }
        if self
            .reload_pending
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.reload()?;
        }
        Ok(())
    }

    /// The dnsmasq `<dir>/dnsmasq.pid` names, if that process still is it: the same start
    /// time, `/proc/<pid>/exe` Debian's dnsmasq, `--interface=<net>` among its arguments.
    /// Anything else (no file, a malformed one, a gone or different process) is stale: the
    /// file is removed and `None` returned.
    pub fn adopt(dir: &Path, net: &NetworkName) -> Option<Dnsmasq> {
        let pid_file = dir.join(PID_FILE);
        let found = read_pid_file(&pid_file).filter(|&(pid, start)| {
            proc_stat(pid).is_ok_and(|s| s.start == start && s.state != 'Z') && is_dnsmasq(pid, net)
        });
        match found {
            Some((pid, start)) => Some(Dnsmasq {
                net: net.clone(),
                pid,
                start,
                pid_file,
                child: None,
                spawned: None,
                reload_pending: Default::default(),
            }),
            None => {
                let _ = std::fs::remove_file(&pid_file);
                None
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Field 22 of `/proc/<pid>/stat` when it was started or adopted (clock ticks since boot).
    pub fn start_time(&self) -> u64 {
        self.start
    }

    /// Whether its start was confirmed ([`Dnsmasq::confirm`]), or needs none (adopted).
    pub fn confirmed(&self) -> bool {
        self.spawned.is_none()
    }

    /// Makes dnsmasq re-read its hosts directory (SIGHUP), after the hosts files changed; for
    /// one not yet confirmed, once [`Dnsmasq::confirm`] has (dnsmasq ignores a SIGHUP while it
    /// starts, and one before it execs would end `setsid`).
    pub fn reload(&self) -> Result<()> {
        if self.spawned.is_some() {
            self.reload_pending
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Ok(());
        }
        match self.pidfd() {
            Some(fd) => {
                pidfd_send_signal(&fd, Signal::HUP).map_err(|e| self.signal_err("SIGHUP", e))
            }
            None => Err(NetworkError::DnsmasqGone {
                net: self.net.to_string(),
                pid: self.pid,
            }),
        }
    }

    /// Ends dnsmasq (SIGTERM, then SIGKILL after 2 s) and removes its pid file. A dnsmasq that
    /// is already gone is no error. Blocks for up to 4 s: call it off the async runtime.
    pub fn stop(mut self) -> Result<()> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Result<()> {
        if let Some(fd) = self.pidfd() {
            match pidfd_send_signal(&fd, Signal::TERM) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(e) => return Err(self.signal_err("SIGTERM", e)),
            }
            if !wait_exit(&fd, STOP_WAIT) {
                // Re-checked: the descriptor still names the process we identified.
                match pidfd_send_signal(&fd, Signal::KILL) {
                    Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                    Err(e) => return Err(self.signal_err("SIGKILL", e)),
                }
                if !wait_exit(&fd, STOP_WAIT) {
                    // Stuck in the kernel: keep the pid file, so that it is still found.
                    return Err(NetworkError::Dnsmasq {
                        net: self.net.to_string(),
                        what: format!("stop dnsmasq (pid {})", self.pid),
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            "still running 2 s after SIGKILL",
                        ),
                    });
                }
            }
        }
        if let Some(child) = self.child.as_mut() {
            // It has exited (or is not ours to wait for any more): reap it.
            let _ = child.try_wait();
        }
        match std::fs::remove_file(&self.pid_file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(file_err(&self.net, "remove the pid file")(e)),
        }
    }

    /// A descriptor for the process, if it still is ours: opened first, then the start time
    /// checked, so the descriptor cannot name a later process that reused the pid.
    fn pidfd(&self) -> Option<OwnedFd> {
        let fd = pidfd_open(Pid::from_raw(self.pid)?, PidfdFlags::empty()).ok()?;
        let stat = proc_stat(self.pid).ok()?;
        (stat.start == self.start && stat.state != 'Z').then_some(fd)
    }

    fn signal_err(&self, signal: &str, e: rustix::io::Errno) -> NetworkError {
        NetworkError::Dnsmasq {
            net: self.net.to_string(),
            what: format!("send {signal} to dnsmasq (pid {})", self.pid),
            source: e.into(),
        }
    }
}

fn file_err(net: &NetworkName, what: &str) -> impl FnOnce(io::Error) -> NetworkError {
    let (net, what) = (net.to_string(), what.to_owned());
    move |source| NetworkError::Dnsmasq { net, what, source }
}

/// Kills and reaps a child we just spawned and will not keep.
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to `timeout` for the process behind `pidfd` to exit (it becomes readable then).
fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(rustix::io::Errno::INTR) if !left.is_zero() => continue,
            Err(_) => return false,
        }
    }
}

/// An exit status as Go's `exec.ExitError` prints it, which LXD's message carries.
fn go_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("signal: {}", s.as_str()),
            Err(_) => format!("signal: {sig}"),
        },
        _ => status.to_string(),
    }
}

/// What the process wrote to the log since `from`: the last few KiB, trimmed, lossily UTF-8.
fn log_tail(path: &Path, from: u64) -> String {
    let Ok(mut file) = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    else {
        return String::new();
    };
    let end = file.seek(SeekFrom::End(0)).unwrap_or(from);
    let start = from.max(end.saturating_sub(STDERR_TAIL));
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.take(STDERR_TAIL).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

fn proc_stat(pid: i32) -> io::Result<rxd_core::procstat::ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    rxd_core::procstat::parse(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/<pid>/stat"))
}

/// Whether `pid` runs Debian's dnsmasq (also after the package was upgraded under it) for
/// network `net`.
fn is_dnsmasq(pid: i32, net: &NetworkName) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let exe = exe.as_os_str().as_encoded_bytes();
    let deleted = format!("{DNSMASQ} (deleted)");
    if exe != DNSMASQ.as_bytes() && exe != deleted.as_bytes() {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let want = format!("--interface={net}");
    cmdline.split(|b| *b == 0).any(|arg| arg == want.as_bytes())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PidRecord {
    pid: i32,
    start: u64,
}

fn read_pid_file(path: &Path) -> Option<(i32, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut text = Vec::new();
    file.take(MAX_PID_FILE + 1).read_to_end(&mut text).ok()?;
    if text.len() as u64 > MAX_PID_FILE {
        return None;
    }
    let record: PidRecord = serde_json::from_slice(&text).ok()?;
    (record.pid > 1).then_some((record.pid, record.start))
}

/// Writes `<dir>/<name>` whole or not at all: a temporary file in `dir` (never following a
/// link), given `mode` (and `group`) before any byte, synced, renamed over the old one.
fn write_atomic(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
    group: Option<Gid>,
) -> io::Result<()> {
    write_atomic_to(dir, name, &dir.join(name), contents, mode, group)
}

/// [`write_atomic`] with the temporary file in `dir` and the result at `target` (on the same
/// file system), so that a directory dnsmasq reads never shows a partial file.
fn write_atomic_to(
    dir: &Path,
    name: &str,
    target: &Path,
    contents: &[u8],
    mode: u32,
    group: Option<Gid>,
) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        if let Some(gid) = group {
            nix::unistd::fchown(&file, None, Some(gid))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `<dir>/dnsmasq.hosts`, made if missing: 0750, owned by root and dnsmasq's `group`, which
/// reads it after dropping root. A link or a non-directory there is refused.
pub fn ensure_hosts_dir(dir: &Path, group: Gid) -> io::Result<PathBuf> {
    let path = dir.join(HOSTS_DIR);
    match std::fs::DirBuilder::new().mode(0o750).create(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
        .open(&path)?;
    nix::unistd::fchown(&handle, Some(nix::unistd::Uid::from_raw(0)), Some(group))?;
    handle.set_permissions(std::fs::Permissions::from_mode(0o750))?;
    Ok(path)
}

/// A hosts file name as `rxd_core::network::dnsmasq::hosts_file_name` makes them: one plain
/// component, not hidden (the temporary files start with a dot).
fn check_hosts_name(name: &str) -> io::Result<()> {
    let ok =
        !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a hosts file name"),
        ))
    }
}

/// Writes one NIC's hosts file `<dir>/dnsmasq.hosts/<name>` (`name` from `hosts_file_name`,
/// `line` from `hosts_file`) atomically, 0640 and readable by dnsmasq's `group`. The
/// directory must exist ([`ensure_hosts_dir`]); dnsmasq reads it on its next SIGHUP.
pub fn write_hosts_file(dir: &Path, name: &str, line: &str, group: Gid) -> io::Result<()> {
    check_hosts_name(name)?;
    let target = dir.join(HOSTS_DIR).join(name);
    let tmp_name = format!("{HOSTS_DIR}.{name}");
    write_atomic_to(dir, &tmp_name, &target, line.as_bytes(), 0o640, Some(group))
}

/// Writes `<dir>/dnsmasq.names` (rxd-core's `names`: the names of instances outside the
/// default project, an `--addn-hosts` file) atomically, 0640 and readable by dnsmasq's `group`,
/// which re-reads it on SIGHUP.
pub fn write_names_file(dir: &Path, contents: &str, group: Gid) -> io::Result<()> {
    write_atomic(
        dir,
        "dnsmasq.names",
        contents.as_bytes(),
        0o640,
        Some(group),
    )
}

/// Removes one NIC's hosts file; `false` when there was none.
pub fn remove_hosts_file(dir: &Path, name: &str) -> io::Result<bool> {
    check_hosts_name(name)?;
    match std::fs::remove_file(dir.join(HOSTS_DIR).join(name)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends `packet` (a DHCPRELEASE from `rxd_core::network::dnsmasq::dhcp_release`) to the DHCP
/// server port of `server`, an address of a bridge in this network namespace: it is delivered
/// locally, to that bridge's dnsmasq. UDP from an unprivileged port, as LXD does; nothing comes
/// back.
pub fn send_dhcp_release(server: std::net::Ipv4Addr, packet: &[u8]) -> io::Result<()> {
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
    socket.send_to(packet, (server, 67))?;
    Ok(())
}

/// Rewrites `<dir>/dnsmasq.leases` without the leases of NICs whose MAC is not in `keep`
/// (`rxd_core::network::dnsmasq::retain_leases`), atomically. dnsmasq holds the file open
/// and rewrites it in place, so call this while it is stopped, before a start. No file is no
/// error.
pub fn prune_leases(dir: &Path, keep: &BTreeSet<Mac>) -> io::Result<()> {
    let Some(text) = read_bounded_leases(dir)? else {
        return Ok(());
    };
    let kept = retain_leases(&text, keep);
    // dnsmasq creates it 0644 itself.
    write_atomic(dir, LEASES_FILE, kept.as_bytes(), 0o644, None)
}

/// The lease file's bytes (empty when there is none), for listing leases with
/// `rxd_core::network::dnsmasq::parse_leases`.
pub fn read_leases(dir: &Path) -> io::Result<Vec<u8>> {
    Ok(read_bounded_leases(dir)?.unwrap_or_default())
}

/// The lease file, never through a link, at most as much of it as the parser reads.
fn read_bounded_leases(dir: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(dir.join(LEASES_FILE))
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let limit = (MAX_LEASE_LINES * (MAX_LEASE_LINE + 1)) as u64;
    let mut text = Vec::new();
    file.take(limit).read_to_end(&mut text)?;
    Ok(Some(text))
}
