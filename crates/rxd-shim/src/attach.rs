//! `exec`: run a command inside a running container.
//!
//! libcontainer 0.7's tenant builder joins every namespace of the init except its user
//! namespace, which would leave the command as real root of the host inside the container's
//! mounts. So the helper attaches by itself, in two steps, with safe system-call wrappers only:
//!
//! 1. [`exec`] (the helper the daemon runs for a command with a terminal) checks the
//!    container, enters its PID namespace for its children only, and starts step 2 as a
//!    child: a fresh, single-threaded copy of this binary (`attach`), with a fixed environment
//!    of its own. It writes that child's host pid to the pid file (for signals), relays the
//!    terminal, waits, and passes on its status. For a command without a terminal the daemon
//!    does this step itself (rxd-daemon's `runtime/exec.rs`): one process fewer.
//! 2. [`attach`] makes itself undumpable (no ptrace from inside), opens the init's
//!    namespaces, checks the init is still the one step 1 saw, moves into the init's cgroups
//!    (`cgroups.rs`), joins the user namespace first (so it holds no capability of the host
//!    from then on) and then the others, drops the supplementary groups, takes the requested
//!    uid and gid, narrows the capability bounding set to the container's and clears every
//!    capability unless the user is root, marks every descriptor but 0-2 close-on-exec, sets
//!    no_new_privs and a parent-death SIGKILL, installs the container's seccomp filter and
//!    execs the command.

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::Spec;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The command and who runs it, where: the arguments both steps share.
#[derive(clap::Args)]
pub struct Target {
    /// The container.
    pub id: String,
    #[arg(long, default_value_t = 0)]
    pub uid: u32,
    #[arg(long, default_value_t = 0)]
    pub gid: u32,
    /// The working directory, inside the container (default `/`).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// A terminal for the command instead of pipes (see `pty.rs`).
    #[arg(long)]
    pub pty: bool,
    /// The command's environment: a JSON object of strings in a file of the daemon's, read
    /// and removed by the attach step. Never this process's own environment: the dynamic
    /// loader would act on it (LD_PRELOAD and the like) while we are still the host's root.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The init's start time (field 22 of /proc/<pid>/stat), so a reused pid is never mistaken
/// for the container.
pub(crate) fn start_time(pid: i32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("the container's init (pid {pid}) is gone"))?;
    rxd_core::procstat::parse(&stat)
        .map(|s| s.start)
        .context("unreadable /proc/<pid>/stat")
}

/// The running container and its init's pid.
fn running_init(root: &Path, id: &str) -> Result<(i32, libcontainer::container::Container)> {
    let container = crate::load(root, id)?;
    if !matches!(
        container.status(),
        libcontainer::container::ContainerStatus::Running
    ) {
        bail!("container {id} is not running");
    }
    let pid = container
        .pid()
        .context("the runtime reports no init pid")?
        .as_raw();
    Ok((pid, container))
}

/// Step 1. Returns the command's exit status (128+N if signal N ended it).
pub fn exec(
    root: &Path,
    t: &Target,
    pid_file: Option<&Path>,
    (width, height): (u16, u16),
) -> Result<i32> {
    let (pid, _) = running_init(root, &t.id)?;
    let started = start_time(pid)?;
    let pidns = File::open(format!("/proc/{pid}/ns/pid")).context("opening the PID namespace")?;
    let own_pidns = File::open("/proc/self/ns/pid").context("opening our PID namespace")?;
    if start_time(pid)? != started {
        bail!("the container's init changed while attaching");
    }
    // Affects only the children created from now on: step 2 is born inside the container's
    // PID namespace.
    nix::sched::setns(&pidns, CloneFlags::CLONE_NEWPID).context("entering the PID namespace")?;

    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("--root")
        .arg(root)
        .arg("attach")
        .arg(&t.id)
        .arg("--init-pid")
        .arg(pid.to_string())
        .arg("--init-start")
        .arg(started.to_string())
        .arg("--uid")
        .arg(t.uid.to_string())
        .arg("--gid")
        .arg(t.gid.to_string());
    if let Some(cwd) = &t.cwd {
        cmd.arg("--cwd").arg(cwd);
    }
    if let Some(file) = &t.env_file {
        cmd.arg("--env-file").arg(file);
    }
    // With a terminal, the attach step's stdin is a socket to hand the master back on, and
    // its stdout and stderr (until it has the terminal) are our stderr.
    let terminal = if t.pty {
        let (ours, theirs) = crate::pty::channel()?;
        let err = || std::io::stderr().as_fd().try_clone_to_owned();
        cmd.arg("--pty")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::from(err()?))
            .stderr(Stdio::from(err()?));
        Some(ours)
    } else {
        cmd.stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        None
    };
    // A fixed environment for the helper itself; the command's comes from the file.
    cmd.arg("--")
        .args(&t.command)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let mut child = cmd.spawn().context("starting the command")?;
    // Our copies of the attach step's ends go, so its end of the socket closes with it.
    drop(cmd);
    // Back to our own namespace for children: the kernel refuses new threads (the terminal
    // relay's) while it differs from ours.
    nix::sched::setns(&own_pidns, CloneFlags::CLONE_NEWPID)
        .context("leaving the container's PID namespace")?;
    if let Some(path) = pid_file {
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .and_then(|mut f| write!(f, "{}", child.id()));
        if let Err(e) = written {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e).context("writing the pid file");
        }
    }
    let relayed = match terminal {
        Some(sock) => match crate::pty::receive_terminal(&sock)? {
            Some(master) => {
                crate::pty::resize(&master, width, height);
                Some(crate::pty::relay(master)?)
            }
            None => None,
        },
        None => None,
    };
    let status = child.wait()?;
    if let Some(done) = relayed {
        // What the command wrote just before it ended is still in the terminal.
        crate::pty::drain(&done, std::time::Duration::from_secs(1));
        let _ = std::io::stdout().flush();
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255))
}

/// The namespaces step 2 joins, in order: the user namespace (when the container has one)
/// comes first, so every later step runs with the container's root's powers, not the host's.
const ORDER: &[(&str, &str, CloneFlags)] = &[
    ("user", "user", CloneFlags::CLONE_NEWUSER),
    ("mount", "mnt", CloneFlags::CLONE_NEWNS),
    ("uts", "uts", CloneFlags::CLONE_NEWUTS),
    ("ipc", "ipc", CloneFlags::CLONE_NEWIPC),
    ("network", "net", CloneFlags::CLONE_NEWNET),
    ("cgroup", "cgroup", CloneFlags::CLONE_NEWCGROUP),
];

fn same_file(a: &Path, b: &Path) -> Result<bool> {
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// `command` as found on `PATH` of the command's environment, inside the container.
fn resolve(command: &str, env: &BTreeMap<String, String>) -> Result<PathBuf> {
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    let path = env
        .get("PATH")
        .map_or("/usr/sbin:/usr/bin:/sbin:/bin", |p| p);
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(command))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .with_context(|| format!("{command}: command not found"))
}

fn cstring(s: impl Into<Vec<u8>>) -> Result<CString> {
    CString::new(s).context("a NUL byte in the command or environment")
}

/// Step 2: never returns on success (the command replaces this process).
pub fn attach(root: &Path, t: &Target, init_pid: i32, init_start: u64) -> Result<()> {
    // Born inside the container's PID namespace while still the host's root: not dumpable, so
    // the container's root cannot ptrace this process (or read its /proc files) before the
    // exec, when it holds the host's root directory and uid. The exec makes the command
    // dumpable again, as an ordinary process of the container.
    nix::sys::prctl::set_dumpable(false).context("making the helper undumpable")?;
    // Killed with step 1 from the start (set again after the uid change, which clears it).
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let (pid, container) = running_init(root, &t.id)?;
    let spec = Spec::load(container.bundle().join("config.json"))
        .context("loading the container's spec")?;
    if pid != init_pid {
        bail!("the container's init changed while attaching");
    }
    let linux = spec
        .linux()
        .as_ref()
        .context("the spec has no linux section")?;
    let wanted: Vec<String> = linux
        .namespaces()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|ns| serde_json::to_value(ns.typ()).map(|v| v.as_str().unwrap_or_default().into()))
        .collect::<Result<_, _>>()?;
    // The command's environment, from the daemon's private file (a host path: read before
    // entering the container's mounts), which is then removed.
    let env: BTreeMap<String, String> = match &t.env_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).context("reading the environment")?;
            let _ = std::fs::remove_file(path);
            serde_json::from_str(&text).context("parsing the environment")?
        }
        None => BTreeMap::new(),
    };
    // Open every namespace first, then check the pid still names the same process: the
    // descriptors are that process's.
    let mut namespaces = Vec::new();
    for (typ, file, flag) in ORDER {
        if wanted.iter().any(|w| w == typ) {
            let f = File::open(format!("/proc/{pid}/ns/{file}"))
                .with_context(|| format!("opening the {typ} namespace"))?;
            namespaces.push((*typ, f, *flag));
        }
    }
    if start_time(pid)? != init_start {
        bail!("the container's init changed while attaching");
    }
    if !same_file(
        Path::new("/proc/self/ns/pid"),
        Path::new(&format!("/proc/{pid}/ns/pid")),
    )? {
        bail!("not inside the container's PID namespace");
    }

    // The init's cgroups, while still able to write the host's cgroup files.
    crate::cgroups::join(pid)?;

    for (typ, f, flag) in &namespaces {
        nix::sched::setns(f, *flag).with_context(|| format!("joining the {typ} namespace"))?;
    }
    drop(namespaces);

    // Identity: no supplementary groups (the host's root groups must not follow us in).
    nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
    let (uid, gid) = (Uid::from_raw(t.uid), Gid::from_raw(t.gid));
    nix::unistd::setresgid(gid, gid, gid).with_context(|| format!("gid {gid} is not mapped"))?;

    // Capabilities: the bounding set narrowed to the container's, before giving up root.
    let container_caps: caps::CapsHashSet = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .map(|set| {
            set.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .filter_map(|v| v.as_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    for cap in caps::all() {
        if !container_caps.contains(&cap) {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    nix::unistd::setresuid(uid, uid, uid).with_context(|| format!("uid {uid} is not mapped"))?;
    // Set explicitly: the kernel's own rule keys on the namespace's root, which the host's
    // root (our uid until just now) is not, so it would not clear them for a non-root user.
    let kept = if t.uid == 0 {
        container_caps
    } else {
        caps::CapsHashSet::new()
    };
    caps::clear(None, caps::CapSet::Ambient).context("clearing ambient capabilities")?;
    caps::clear(None, caps::CapSet::Inheritable).context("clearing capabilities")?;
    caps::set(None, caps::CapSet::Effective, &kept).context("setting capabilities")?;
    caps::set(None, caps::CapSet::Permitted, &kept).context("setting capabilities")?;

    let cwd = t.cwd.as_deref().unwrap_or(Path::new("/"));
    nix::unistd::chdir(cwd).with_context(|| format!("cannot enter {}", cwd.display()))?;
    let program = resolve(&t.command[0], &env)?;
    if t.pty {
        // Opened as the command's user, in the container's devpts, so the terminal is theirs.
        crate::pty::take_terminal(std::io::stdin())?;
    }

    // Whatever descriptors this helper inherited (from the daemon's own parent, say) stay
    // out of the container: only 0, 1 and 2 survive the exec.
    libcontainer::syscall::syscall::create_syscall()
        .close_range(0)
        .map_err(|e| anyhow::anyhow!("closing inherited descriptors: {e}"))?;
    nix::sys::prctl::set_no_new_privs().context("setting no_new_privs")?;
    // Cleared by the uid change above, so set after it: the command dies with its helper.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let seccomp = linux
        .seccomp()
        .as_ref()
        .context("the container's spec has no seccomp filter")?;
    libcontainer::seccomp::initialize_seccomp(seccomp)
        .map_err(|e| anyhow::anyhow!("installing the seccomp filter: {e}"))?;

    let args = t
        .command
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<Result<Vec<_>>>()?;
    let path = cstring(program.as_os_str().as_encoded_bytes())?;
    match nix::unistd::execve(&path, &args, &envp).unwrap_err() {
        nix::errno::Errno::ENOENT => bail!("{}: command not found", t.command[0]),
        e => bail!("{}: {}", t.command[0], e.desc()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_this_process_is_stable() {
        let me = std::process::id() as i32;
        assert_eq!(start_time(me).unwrap(), start_time(me).unwrap());
        assert!(start_time(i32::MAX).is_err());
    }

    #[test]
    fn commands_resolve_on_the_given_path_only() {
        let env: BTreeMap<String, String> =
            [("PATH".to_string(), "/nonexistent:/bin".to_string())].into();
        assert!(resolve("sh", &env).unwrap().ends_with("sh"));
        assert_eq!(resolve("./x", &env).unwrap(), PathBuf::from("./x"));
        let none: BTreeMap<String, String> =
            [("PATH".to_string(), "/nonexistent".to_string())].into();
        assert!(resolve("sh", &none)
            .unwrap_err()
            .to_string()
            .contains("command not found"));
    }
}
