//! `rxd-shim`: the one process that forks containers. The daemon runs it once per action; for
//! `start` it stays as the container's supervisor (a child subreaper that reaps the init and
//! cleans up the cgroups and runtime state when the container ends), in its own session, so
//! containers outlive a restart of `rxd`.
//!
//! Protocol with the daemon: `start` reads a [`LaunchPlan`] as one JSON line on stdin (then, if
//! it has veth NICs to attach, a `go` line: see `nics.rs`) and writes one JSON line to stdout,
//! `{"pid":N}` or `{"error":"..."}`, then lets go of stdin/stdout/stderr; `limits`
//! reads one too, for a running container. The other
//! commands print JSON (or nothing) and exit non-zero with a message on stderr on failure.
//!
//! When the init ends by SIGHUP (what `reboot(2)` inside a PID namespace does to it), the
//! supervisor leaves a `reboot` file in the bundle before cleaning up: the daemon then starts
//! the container again. Any other end (SIGINT from a halt or power-off, an exit, a kill) is a
//! stop.
#![forbid(unsafe_code)]

mod attach;
mod cgroups;
mod console;
mod delegation;
mod idmapped;
mod inject;
mod limits;
mod lock;
mod lxcfs;
mod nics;
mod proxy;
mod pty;
mod spec;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use rxd_core::launch::LaunchPlan;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(about = "rxd's container helper (run by rxd, not by hand)")]
struct Cli {
    /// The runtime state directory (one sub-directory per container).
    #[arg(long)]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a container from the plan on stdin and supervise it until it ends.
    Start {
        /// Where to write the OCI bundle (config.json).
        #[arg(long)]
        bundle: PathBuf,
        /// The console log: the init's stdout and stderr.
        #[arg(long)]
        log: PathBuf,
    },
    /// Send a signal to the init (or, with --all, every process of the container).
    Kill {
        id: String,
        #[arg(long)]
        signal: i32,
        #[arg(long)]
        all: bool,
    },
    /// Change a running container's CPU, memory and process limits to those of the plan on
    /// stdin (keys it leaves unset are lifted).
    Limits { id: String },
    /// Freeze every process of the container.
    Pause { id: String },
    /// Thaw a frozen container.
    Resume { id: String },
    /// Run a command inside a running container, with this helper's stdin, stdout and stderr,
    /// in all its namespaces and its cgroup, under the init's capability set and seccomp filter
    /// and with no_new_privs; exit with the command's status (128+N if killed by signal N).
    Exec {
        #[command(flatten)]
        target: attach::Target,
        /// Write the command's host pid here, once it runs (for signals).
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// With --pty: the terminal's initial size.
        #[arg(long, default_value_t = 80)]
        width: u16,
        #[arg(long, default_value_t = 24)]
        height: u16,
    },
    /// The second step of `exec`, started by it inside the container's PID namespace.
    #[command(hide = true)]
    Attach {
        #[command(flatten)]
        target: attach::Target,
        #[arg(long)]
        init_pid: i32,
        #[arg(long)]
        init_start: u64,
    },
    /// Started by `start` for an unprivileged container, before the init runs: make the locked
    /// copy of its mount namespace and send it to the init over stdin (see `lock.rs`).
    #[command(hide = true)]
    LockMounts {
        #[arg(long)]
        init_pid: i32,
    },
    /// Mount host-path disks and unix device nodes into the container, or take them out (the
    /// change on stdin, see `inject.rs`).
    Devices {
        id: String,
        /// The container's directory for the device nodes it is given.
        #[arg(long)]
        staging: PathBuf,
        /// The container is created and its init waits to start (else it runs).
        #[arg(long)]
        before_start: bool,
        /// With `--before-start`: the mount namespace the init will enter (its locked copy,
        /// held open by the supervisor), instead of the one it is in.
        #[arg(long, requires = "before_start")]
        mount_namespace: Option<PathBuf>,
    },
    /// Started by `devices` for a mount into a running container: lock its flags (see
    /// `inject.rs`).
    #[command(hide = true)]
    LockReadonly {
        /// The tree holds submounts: clone them with it.
        #[arg(long)]
        recursive: bool,
    },
    /// Forward a proxy device, as the plan on stdin says, until the container's init ends or
    /// SIGTERM: answers `{"pid":N}` (or `{"error":..}`) on stdout once listening, and keeps
    /// `{"pid":N,"start":S}` in the pid file (see `proxy.rs`).
    Proxy {
        #[arg(long)]
        pid_file: PathBuf,
    },
    /// Started by `proxy`: makes its sockets inside the container (see `proxy.rs`).
    #[command(hide = true)]
    ProxyConnector {
        #[arg(long)]
        init_pid: i32,
        #[arg(long)]
        init_start: u64,
        #[arg(long)]
        user_namespace: bool,
    },
    /// Started by `start` (and `probe-idmap`): unshare a user namespace, print `ready`, and
    /// wait for stdin to close (see `idmapped.rs`).
    UsernsHold,
    /// Exit 0 if the filesystem of the directory takes idmapped mounts.
    ProbeIdmap { dir: PathBuf },
    /// Print `{"status":..,"pid":..}`.
    State { id: String },
    /// Kill what is left and remove the cgroups and runtime state.
    Delete { id: String },
}

const MAX_PLAN: u64 = rxd_core::launch::MAX_PLAN;

fn main() {
    let cli = Cli::parse();
    let exec_failed = matches!(cli.command, Command::Exec { .. } | Command::Attach { .. });
    // For exec, stderr is the user's: only our own one-line reason goes there, and the
    // environment is the command's, so it does not choose our log level.
    let filter = if exec_failed {
        tracing_subscriber::EnvFilter::new("off")
    } else {
        tracing_subscriber::EnvFilter::try_from_env("RXD_SHIM_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"))
    };
    // libcontainer reports through `tracing`: into stderr, which is the console log once a
    // container is starting.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let result = match cli.command {
        Command::Start { bundle, log } => start(&cli.root, &bundle, &log),
        Command::Kill { id, signal, all } => load(&cli.root, &id).and_then(|mut c| {
            let sig = match Signal::try_from(signal) {
                Ok(sig) => sig,
                Err(_) if REALTIME.contains(&signal) && !all => {
                    return realtime_kill(&c, signal);
                }
                Err(e) => bail!("{e:?}"),
            };
            match c.kill(sig, all) {
                // libcontainer reads the state again after signalling; the supervisor may
                // have removed it by then because the init has ended, as asked.
                Err(_) if !container_dir(&cli.root, &id)?.exists() => Ok(()),
                other => other.context("kill"),
            }
        }),
        Command::Limits { id } => read_plan(&mut std::io::stdin().lock())
            .and_then(|plan| limits::apply(&cli.root, &id, &plan)),
        Command::Pause { id } => load(&cli.root, &id).and_then(|mut c| c.pause().context("pause")),
        Command::Resume { id } => {
            load(&cli.root, &id).and_then(|mut c| c.resume().context("resume"))
        }
        Command::State { id } => load(&cli.root, &id).map(|c| {
            let status = format!("{:?}", c.status()).to_lowercase();
            let pid = c.pid().map_or(0, |p| p.as_raw());
            println!("{}", serde_json::json!({"status": status, "pid": pid}));
        }),
        Command::Delete { id } => delete(&cli.root, &id),
        Command::Exec {
            target,
            pid_file,
            width,
            height,
        } => attach::exec(&cli.root, &target, pid_file.as_deref(), (width, height))
            .map(|code| std::process::exit(code)),
        Command::Attach {
            target,
            init_pid,
            init_start,
        } => attach::attach(&cli.root, &target, init_pid, init_start),
        Command::LockMounts { init_pid } => lock::make_locked(init_pid),
        Command::Devices {
            id,
            staging,
            before_start,
            mount_namespace,
        } => inject::apply(
            &cli.root,
            &id,
            &staging,
            before_start,
            mount_namespace.as_deref(),
        ),
        Command::LockReadonly { recursive } => inject::lock_readonly_step(recursive),
        Command::UsernsHold => idmapped::hold(),
        Command::ProbeIdmap { dir } => idmapped::probe(&dir),
        Command::Proxy { pid_file } => proxy::forward(&pid_file),
        Command::ProxyConnector {
            init_pid,
            init_start,
            user_namespace,
        } => proxy::connector(init_pid, init_start, user_namespace),
    };
    if let Err(e) = result {
        eprintln!("rxd-shim: {e:#}");
        std::process::exit(if exec_failed { 255 } else { 1 });
    }
}

fn container_dir(root: &Path, id: &str) -> Result<PathBuf> {
    if !rxd_core::name::valid_instance_key(id) {
        bail!("invalid container name {id:?}");
    }
    Ok(root.join(id))
}

fn load(root: &Path, id: &str) -> Result<Container> {
    let dir = container_dir(root, id)?;
    wait_for_state(&dir);
    Container::load(dir).with_context(|| format!("container {id} is not running"))
}

/// libcontainer rewrites `state.json` in place (truncate, then write): another helper
/// (`kill` saving the new status, say) can be half-way through when this one reads it, as when
/// the supervisor cleans up the moment a killed init ends. Wait, briefly, for a file that
/// parses; a missing directory or file is left to the caller.
fn wait_for_state(dir: &Path) {
    for _ in 0..100 {
        match std::fs::read(dir.join("state.json")) {
            Ok(bytes) if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

/// The file the supervisor leaves in the bundle when the init asked for a reboot.
const REBOOT_MARK: &str = "reboot";

fn delete(root: &Path, id: &str) -> Result<()> {
    use libcontainer::container::ContainerStatus;
    let dir = container_dir(root, id)?;
    if !dir.exists() {
        return Ok(());
    }
    wait_for_state(&dir);
    let mut c = Container::load(dir).context("load")?;
    let cgroup = c.spec().ok().map(|s| s.cgroup_path);
    let _ = c.refresh_status();
    if matches!(
        c.status(),
        ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused
    ) {
        // The init's end takes the whole PID namespace with it, and empties its cgroups.
        if let Ok(kill) = Signal::try_from(9) {
            let _ = c.kill(kill, false);
        }
    }
    // libcontainer removes only the container's own cgroup (and none in the named systemd
    // hierarchy): the ones its systemd made below go first.
    if let Some(cgroup) = cgroup.as_deref().and_then(Path::to_str) {
        if let Err(e) = delegation::remove_subtree(cgroup) {
            eprintln!("rxd-shim: {e:#}");
        }
    }
    c.delete(true).context("delete")
}

/// Linux's real-time signals (SIGRTMIN+3, 37, is systemd's "halt").
const REALTIME: std::ops::RangeInclusive<i32> = 34..=64;

/// Send a real-time signal to the init. libcontainer and nix make signals from their enums of
/// named ones; rustix-libc-wrappers checks a raw number against the libc's real-time range and
/// makes a `rustix` signal of it safely, which `kill` sends to the pid the runtime state gives.
fn realtime_kill(c: &Container, signal: i32) -> Result<()> {
    use rustix_libc_wrappers::process::SignalExt;
    let pid = c
        .pid()
        .filter(|p| p.as_raw() > 0)
        .context("the container has no init")?;
    if !matches!(
        c.status(),
        libcontainer::container::ContainerStatus::Running
    ) {
        bail!("container {} is not running", c.id());
    }
    let sig = rustix::process::Signal::from_raw(signal)
        .with_context(|| format!("{signal} is not a real-time signal here"))?;
    let pid = rustix::process::Pid::from_raw(pid.as_raw()).context("no pid")?;
    rustix::process::kill_process(pid, sig).with_context(|| format!("sending signal {signal}"))?;
    Ok(())
}

/// This process's capability bounding set, from /proc/self/status.
fn own_bounding_set() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .context("no CapBnd in /proc/self/status")?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

/// Write one JSON line to the daemon.
fn report(to: &mut File, v: serde_json::Value) {
    let _ = writeln!(to, "{v}");
}

fn start(root: &Path, bundle: &Path, log: &Path) -> Result<()> {
    // Our stdout, duplicated close-on-exec: the only channel back to the daemon.
    let mut channel = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let prepared = prepare(root, bundle, log);
    let (plan, devnull, console, mut gate) = match prepared {
        Ok(p) => p,
        Err(e) => {
            report(&mut channel, serde_json::json!({"error": format!("{e:#}")}));
            return Err(e);
        }
    };
    let socket = bundle.join("console.sock");
    let listener = match console::listen(&socket) {
        Ok(l) => l,
        Err(e) => {
            report(&mut channel, serde_json::json!({"error": format!("{e:#}")}));
            return Err(e);
        }
    };
    let started = run(
        root,
        bundle,
        &plan,
        &devnull,
        &console,
        listener.as_ref().map(|_| socket.as_path()),
        &mut gate,
    )
    .and_then(|pid| {
        // The console's master, handed over during the init's set-up.
        let terminal = match &listener {
            Some(l) => Some(console::receive(l)?),
            None => None,
        };
        Ok((pid, terminal))
    });
    // The daemon's pipe is not kept for the container's life.
    drop(gate);
    match started {
        Ok((pid, terminal)) => {
            report(&mut channel, serde_json::json!({"pid": pid.as_raw()}));
            drop(channel);
            if let (Some(master), Some(listener)) = (terminal, listener) {
                let log = File::from(console.try_clone()?);
                console::serve(master, log, listener)?;
            }
            supervise(root, bundle, &plan.name, pid, console)
        }
        Err(e) => {
            report(&mut channel, serde_json::json!({"error": format!("{e:#}")}));
            let _ = delete(root, &plan.name);
            Err(e)
        }
    }
}

/// The daemon's plan, one JSON line on `input`.
fn read_plan(input: &mut impl BufRead) -> Result<LaunchPlan> {
    let mut text = String::new();
    input
        .take(MAX_PLAN)
        .read_line(&mut text)
        .context("reading the plan")?;
    if text.len() as u64 == MAX_PLAN && !text.ends_with('\n') {
        bail!("the plan is larger than {MAX_PLAN} bytes");
    }
    serde_json::from_str(&text).context("parsing the plan")
}

/// What `start` keeps of the daemon's stdin once the plan is read: the NICs' go-ahead.
type Gate = std::io::BufReader<File>;

/// Read the plan, write the bundle, open the console log, and detach from the daemon's
/// session and pipes (but for the rest of stdin, the gate).
fn prepare(root: &Path, bundle: &Path, log: &Path) -> Result<(LaunchPlan, OwnedFd, OwnedFd, Gate)> {
    let mut gate =
        std::io::BufReader::new(File::from(std::io::stdin().as_fd().try_clone_to_owned()?));
    let mut plan = read_plan(&mut gate)?;
    // Device numbers fixed now, so the cgroup rule and the node agree (and a missing node that
    // is not required is left out).
    let refused: Vec<PathBuf> = plan
        .devices
        .refused()
        .into_iter()
        .map(Path::to_path_buf)
        .collect();
    let refuse: Vec<&Path> = refused.iter().map(PathBuf::as_path).collect();
    let mut nodes = Vec::new();
    for mut node in std::mem::take(&mut plan.devices.add_nodes) {
        if let Some((major, minor)) = inject::node_numbers(&node, &refuse)? {
            node.major = Some(major);
            node.minor = Some(minor);
            nodes.push(node);
        }
    }
    plan.devices.add_nodes = nodes;
    let dir = container_dir(root, &plan.name)?;
    if !rxd_core::name::valid_instance_name(&plan.hostname)
        || rxd_core::name::split_instance_key(&plan.name).1 != plan.hostname
    {
        bail!(
            "invalid host name {:?} for container {}",
            plan.hostname,
            plan.name
        );
    }
    if dir.exists() {
        // Left by a container that ended while nobody supervised it; refuse a live one.
        let old = Container::load(dir).context("loading the old runtime state")?;
        if old
            .pid()
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
            && matches!(
                old.status(),
                libcontainer::container::ContainerStatus::Running
                    | libcontainer::container::ContainerStatus::Paused
            )
        {
            bail!("container {} is already running", plan.name);
        }
        drop(old);
        // With the sub-cgroups its systemd may have left.
        delete(root, &plan.name).context("cleaning up the old runtime state")?;
    }
    let lxcfs = lxcfs::files();
    let mut spec = spec::build(
        &plan,
        own_bounding_set()?,
        &lxcfs,
        spec::CgroupHost::probe(),
    )
    .context("building the runtime spec")?;
    // A console terminal, when its socket's path fits (see console.rs).
    if let Some(process) = spec.process_mut() {
        process.set_terminal(Some(console::fits(&bundle.join("console.sock"))));
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(bundle)
        .context("creating the bundle directory")?;
    // A reboot marked while no daemon was there to see it is not this run's.
    let _ = std::fs::remove_file(bundle.join(REBOOT_MARK));
    let config = bundle.join("config.json");
    let _ = std::fs::remove_file(&config);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&config)
        .context("writing config.json")?;
    serde_json::to_writer(&mut f, &spec)?;
    f.sync_all()?;

    let devnull: OwnedFd = File::open("/dev/null")?.into();
    let console: OwnedFd = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(log)
        .with_context(|| format!("opening the console log {}", log.display()))?
        .into();
    // Let go of the daemon's pipes (the channel above is a separate descriptor), leave its
    // process group, and adopt the container's init when its parent exits.
    nix::unistd::dup2_stdin(&devnull)?;
    nix::unistd::dup2_stdout(&console)?;
    nix::unistd::dup2_stderr(&console)?;
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true)?;
    Ok((plan, devnull, console, gate))
}

fn run(
    root: &Path,
    bundle: &Path,
    plan: &LaunchPlan,
    devnull: &OwnedFd,
    console: &OwnedFd,
    console_socket: Option<&Path>,
    gate: &mut Gate,
) -> Result<Pid> {
    let mut builder = ContainerBuilder::new(plan.name.clone(), SyscallType::default())
        .with_root_path(root)?
        .with_console_socket(console_socket)
        .with_stdin(devnull.try_clone()?)
        .with_stdout(console.try_clone()?)
        .with_stderr(console.try_clone()?);
    // Unprivileged containers get their mounts locked before the init runs (see lock.rs): the
    // init keeps its end of this socket from libcontainer's clone and receives the locked mount
    // namespace on it. A privileged container's root is the host's, for which nothing is locked.
    // Every init brings its loopback up and sets its NICs' routes before it execs.
    let routes: Vec<_> = plan.nics.iter().flat_map(|n| n.routes.clone()).collect();
    let up = nics::inside_names(plan)?;
    let lock = match plan.idmap {
        Some(_) => {
            let (ours, theirs) = crate::pty::channel()?;
            builder = builder.with_executor(lock::Executor::new(
                Some(std::sync::Arc::new(theirs)),
                routes,
                up,
            ));
            Some(ours)
        }
        None => {
            builder = builder.with_executor(lock::Executor::new(None, routes, up));
            None
        }
    };
    // The root filesystem, unshifted on disk, shown to the container in its map.
    if let (Some(target), Some(map)) = (&plan.idmapped_root, plan.idmap) {
        idmapped::mount_root(&plan.rootfs, target, map)?;
    }
    // The runtime's processes are made inside the container's cgroup of the named systemd
    // hierarchy, which libcgroups does not manage, and the init stays there (delegation.rs).
    let placement = delegation::Placement::enter(
        &plan.cgroup,
        plan.idmap.is_none(),
        &mut File::from(console.try_clone()?),
    )
    .context("placing the container in the systemd cgroup hierarchy")?;
    let built = builder
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .context("creating the container");
    if let Some(p) = placement {
        p.restore()
            .context("leaving the container's systemd cgroup")?;
    }
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            let _ = delegation::remove_subtree(&plan.cgroup);
            return Err(e);
        }
    };
    let pid = container
        .pid()
        .map(|p| Pid::from_raw(p.as_raw()))
        .ok_or_else(|| anyhow::anyhow!("the runtime reported no init pid"))?;
    // The veth pairs now, while the daemon may still be applying their filters.
    nics::make(plan, pid)?;
    if let Some(map) = plan.idmap {
        // Before the init runs: its systemd makes sub-cgroups as soon as it starts.
        delegation::delegate(&plan.cgroup, map.uid, map.gid)
            .context("handing the container its cgroups")?;
    }
    // The locked copy of the init's mounts first, then the devices mounted into that copy: a
    // mount made there by the host's root is not locked to its parent, so a disk the container
    // started with can be detached while it runs, as one plugged in later can (its flags are
    // locked one by one, see inject.rs). The init receives the namespace last.
    let locked = match &lock {
        Some(_) => Some(lock_mounts(root, pid)?),
        None => None,
    };
    if !plan.devices.is_empty() {
        inject_devices(root, bundle, plan, locked.as_ref())?;
    }
    if let (Some(socket), Some(namespace)) = (&lock, &locked) {
        lock::send_fd(socket, namespace.as_fd())
            .context("sending the locked mount namespace to the init")?;
    }
    nics::attach(plan, gate)?;
    container.start().context("starting the container")?;
    Ok(pid)
}

/// Run the `lock-mounts` step against the created (not yet started) init and receive the
/// locked mount namespace it makes. We are the init's subreaper and reap nothing before
/// `supervise`, so its pid cannot pass to another process meanwhile.
fn lock_mounts(root: &Path, init: Pid) -> Result<OwnedFd> {
    let (ours, socket) = crate::pty::channel()?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--root")
        .arg(root)
        .arg("lock-mounts")
        .arg("--init-pid")
        .arg(init.as_raw().to_string())
        .stdin(std::process::Stdio::from(socket))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .env_clear()
        .output()
        .context("starting the lock-mounts step")?;
    if !out.status.success() {
        bail!(
            "locking the container's mounts: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    lock::receive_fd(&ours).context("receiving the locked mount namespace")
}

/// Run the `devices` step against the created (not yet started) init: its host-path disks and
/// unix nodes, mounted before the init runs, into `locked` (the mount namespace the init will
/// enter, held open here) when its mounts are locked, else into its own.
fn inject_devices(
    root: &Path,
    bundle: &Path,
    plan: &LaunchPlan,
    locked: Option<&OwnedFd>,
) -> Result<()> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg("--root")
        .arg(root)
        .arg("devices")
        .arg(&plan.name)
        .arg("--staging")
        .arg(bundle.join("devices"))
        .arg("--before-start");
    if let Some(namespace) = locked {
        command.arg("--mount-namespace").arg(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            namespace.as_raw_fd()
        ));
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .env_clear()
        .spawn()
        .context("starting the devices step")?;
    let text = serde_json::to_vec(&plan.devices)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&text)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .trim_start_matches("rxd-shim: ")
        );
    }
    Ok(())
}

/// Reap every child (the runtime's intermediate process, then the adopted init) until the init
/// is gone, then remove the container's cgroups and runtime state (after marking a reboot, see
/// the module's notes).
fn supervise(root: &Path, bundle: &Path, name: &str, init: Pid, console: OwnedFd) -> Result<()> {
    let mut console = File::from(console);
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == init => {
                let _ = writeln!(console, "rxd-shim: init exited with status {code}");
                break;
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == init => {
                if sig == nix::sys::signal::Signal::SIGHUP {
                    let _ = writeln!(console, "rxd-shim: init ended by SIGHUP: reboot");
                    if let Err(e) = std::fs::write(bundle.join(REBOOT_MARK), b"") {
                        let _ = writeln!(console, "rxd-shim: cannot mark the reboot: {e}");
                    }
                } else {
                    let _ = writeln!(console, "rxd-shim: init ended by {sig}");
                }
                break;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::ECHILD) => break,
            Err(e) => return Err(e.into()),
        }
    }
    delete(root, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_caught_mid_write_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        // As libcontainer leaves it between its truncate and its write.
        std::fs::write(&state, b"").unwrap();
        let writer = {
            let state = state.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                std::fs::write(&state, br#"{"id":"c1"}"#).unwrap();
            })
        };
        wait_for_state(dir.path());
        assert_eq!(std::fs::read(&state).unwrap(), br#"{"id":"c1"}"#);
        writer.join().unwrap();
        // Nothing to wait for: no file, or a complete one.
        std::fs::remove_file(&state).unwrap();
        let started = std::time::Instant::now();
        wait_for_state(dir.path());
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }
}
