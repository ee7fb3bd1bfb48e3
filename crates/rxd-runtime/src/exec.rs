//! Starting exec'd commands.
//!
//! A command without a terminal starts as `rxd-shim attach`, spawned by the daemon straight
//! into the container's PID namespace: one helper process per command. A command with a
//! terminal goes through `rxd-shim exec`, which also relays the terminal (see rxd-shim's
//! `attach.rs` and `pty.rs`).
//!
//! The kernel puts a new process in the PID namespace its creating *thread* chose with
//! `setns(CLONE_NEWPID)`, and the attach step's parent-death signal fires when that thread
//! ends. So one long-lived thread does these spawns, and goes back to the daemon's own
//! namespace after each.

use super::{proc_stat, Runtime, RuntimeError};
use nix::sched::CloneFlags;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A spawn into the PID namespace behind the file, and where to send the child.
type Job = (File, Command, oneshot::Sender<std::io::Result<Child>>);

/// The thread that spawns into containers' PID namespaces (started on first use).
pub(super) struct Spawner(mpsc::Sender<Job>);

impl Spawner {
    fn start() -> std::io::Result<Spawner> {
        let handle = tokio::runtime::Handle::current();
        let own = File::open("/proc/thread-self/ns/pid")?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pidns-spawner".into())
            .spawn(move || {
                // tokio's child reaping needs its runtime.
                let _runtime = handle.enter();
                for (ns, mut command, reply) in rx {
                    let spawned = nix::sched::setns(&ns, CloneFlags::CLONE_NEWPID)
                        .map_err(std::io::Error::from)
                        .and_then(|()| command.spawn());
                    let back = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID);
                    let _ = reply.send(spawned);
                    if let Err(e) = back {
                        // Never spawn from a thread stuck in a container's namespace: the
                        // next exec starts this thread again.
                        tracing::error!("leaving a container's PID namespace: {e}");
                        return;
                    }
                }
            })?;
        Ok(Spawner(tx))
    }
}

/// An exec'd command's helper, ready for its standard streams to be set.
pub struct ExecHelper {
    command: Command,
    /// Set when the daemon spawns the attach step itself: the container's PID namespace
    /// (opened while the init was checked to be the recorded one), and where to write the
    /// command's pid for signals (`rxd-shim exec` writes it otherwise).
    direct: Option<(File, Option<PathBuf>)>,
}

impl ExecHelper {
    pub fn command(&mut self) -> &mut Command {
        &mut self.command
    }

    pub async fn spawn(self, runtime: &Runtime) -> std::io::Result<Child> {
        let Some((ns, pid_file)) = self.direct else {
            let mut command = self.command;
            return command.spawn();
        };
        let (tx, rx) = oneshot::channel();
        let job = (ns, self.command, tx);
        let job = {
            let mut spawner = runtime.spawner.lock().unwrap_or_else(|e| e.into_inner());
            let sent = match spawner.as_ref() {
                Some(s) => s.0.send(job).map_err(|e| e.0),
                None => Err(job),
            };
            match sent {
                Ok(()) => None,
                // Not started yet, or ended: (re)start it.
                Err(job) => {
                    let s = Spawner::start()?;
                    let resent = s.0.send(job).map_err(|e| e.0);
                    *spawner = Some(s);
                    resent.err()
                }
            }
        };
        if job.is_some() {
            return Err(std::io::Error::other("the spawning thread ended"));
        }
        let mut child = rx
            .await
            .map_err(|_| std::io::Error::other("the spawning thread ended"))??;
        if let (Some(path), Some(pid)) = (pid_file, child.id()) {
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)
                .and_then(|mut f| write!(f, "{pid}"));
            if let Err(e) = written {
                let _ = child.start_kill();
                return Err(e);
            }
        }
        Ok(child)
    }
}

/// Who runs an exec'd command, and how.
pub struct ExecSpec<'a> {
    pub uid: u32,
    pub gid: u32,
    /// Inside the container; empty for `/`.
    pub cwd: &'a str,
    pub env_file: &'a Path,
    pub command: &'a [String],
    /// Where the helper's command pid goes, for signals.
    pub pid_file: Option<&'a Path>,
    /// A terminal of this width and height instead of pipes.
    pub pty: Option<(u32, u32)>,
}

impl Runtime {
    /// The helper that runs `spec.command` inside `name` (standard streams left to the caller).
    pub fn exec_helper(&self, name: &str, spec: &ExecSpec) -> Result<ExecHelper, RuntimeError> {
        let mut c = self.command();
        let direct = match spec.pty {
            Some(_) => {
                c.arg("exec").arg(name);
                None
            }
            None => {
                let not_running =
                    || RuntimeError::Failed(format!("container {name} is not running"));
                let init = self.init(name).ok_or_else(not_running)?;
                let ns = File::open(format!("/proc/{}/ns/pid", init.pid));
                // The namespace is the recorded init's only if that init is still there after
                // the open (the attach step checks again, and everything else, itself).
                let ns = match (ns, proc_stat(init.pid)) {
                    (Ok(ns), Some((_, start))) if start == init.start_time => ns,
                    _ => return Err(not_running()),
                };
                c.arg("attach")
                    .arg(name)
                    .arg("--init-pid")
                    .arg(init.pid.to_string())
                    .arg("--init-start")
                    .arg(init.start_time.to_string());
                Some((ns, spec.pid_file.map(Path::to_path_buf)))
            }
        };
        c.arg("--uid")
            .arg(spec.uid.to_string())
            .arg("--gid")
            .arg(spec.gid.to_string());
        if !spec.cwd.is_empty() {
            c.arg("--cwd").arg(spec.cwd);
        }
        c.arg("--env-file").arg(spec.env_file);
        if let Some((width, height)) = spec.pty {
            if let Some(p) = spec.pid_file {
                c.arg("--pid-file").arg(p);
            }
            c.arg("--pty")
                .arg("--width")
                .arg(width.to_string())
                .arg("--height")
                .arg(height.to_string());
        }
        c.arg("--").args(spec.command);
        Ok(ExecHelper { command: c, direct })
    }
}
