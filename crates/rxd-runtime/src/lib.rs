//! The daemon's side of the container runtime. It never forks a container itself: each start,
//! signal, freeze and clean-up runs the `rxd-shim` helper, which drives libcontainer and stays as
//! the supervisor of a started container, in its own session, so containers outlive `rxd`.
//!
//! What runs is tracked here by init pid and that process's start time (so a recycled pid is
//! never mistaken for a container), and found again at start-up from the runtime state the
//! helper keeps. Figures for the state endpoint come from the container's cgroup files.
#![forbid(unsafe_code)]

mod exec;

pub use exec::{ExecHelper, ExecSpec};
use rxd_core::launch::LaunchPlan;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("the container helper {path} could not be run: {source}")]
    Helper {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
    #[error("Timed out waiting for the instance to stop")]
    StopTimeout,
}

/// How a container ended, as its supervisor saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Halted, powered off, exited or killed.
    Stopped,
    /// Its init asked for a reboot (`reboot(2)` in a PID namespace ends the init by SIGHUP):
    /// the container is to be started again.
    Reboot,
}

/// SIGRTMIN+3: systemd's "halt".
pub const SIGRTMIN_3: i32 = 37;
/// SIGPWR: what other inits (busybox, sysvinit) take as "power off".
pub const SIGPWR: i32 = 30;

/// The signal that asks an init to halt, by liblxc's rule: SIGRTMIN+3 when the init blocks it
/// (systemd does, to read it from a signalfd), else SIGPWR. From `/proc/<init>/status`.
pub fn halt_signal(status: &str) -> i32 {
    let blocked = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    if blocked & (1 << (SIGRTMIN_3 - 1)) != 0 {
        SIGRTMIN_3
    } else {
        SIGPWR
    }
}

/// A running container's init, as seen from the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Init {
    pub pid: i32,
    pub start_time: u64,
}

/// How long a helper step that changes a running container (limits, devices) may take.
const HELPER_STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The resource figures of the state endpoint.
#[derive(Debug, Default)]
pub struct Usage {
    pub processes: i64,
    pub memory: u64,
    pub memory_peak: u64,
    /// Swap in use (v1: memory and swap less memory, where swap is accounted).
    pub swap: u64,
    pub swap_peak: u64,
    pub cpu_ns: u64,
}

pub struct Runtime {
    shim: PathBuf,
    state_root: PathBuf,
    bundles: PathBuf,
    logs: PathBuf,
    /// `/rxd/<tag>`: this daemon's cgroup parent, distinct per state directory.
    cgroup_parent: String,
    running: Mutex<HashMap<String, Init>>,
    /// One action at a time per instance (start, stop, delete, ...).
    actions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held shared while a container is being created (its cgroups made under the parent),
    /// exclusively while empty parents are removed, so a removal never races a creation.
    parent_cgroups: tokio::sync::RwLock<()>,
    /// Per instance: held shared by everything that writes into its root filesystem from the
    /// host (the files API), exclusively by what re-owns or replaces it (a remap, a restore).
    rootfs: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Spawns exec'd commands into containers (see `exec.rs`).
    spawner: Mutex<Option<exec::Spawner>>,
    /// Per filesystem (device number): whether it takes idmapped mounts.
    idmap_probes: Mutex<HashMap<u64, bool>>,
}

/// Where the helper binary is: `$RXD_SHIM`, else beside the running `rxd`.
fn shim_path() -> PathBuf {
    if let Some(p) = std::env::var_os("RXD_SHIM") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("rxd-shim")))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/rxd-shim"))
}

fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Parse `/proc/<pid>/stat`: the process state letter and its start time (clock ticks).
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let stat = rxd_core::procstat::parse(&text)?;
    Some((stat.state, stat.start))
}

/// Mount points of cgroup (v1) and cgroup2 hierarchies in a mountinfo text.
fn cgroup_mounts(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let fstype = tail.split_whitespace().next()?;
            let point = head.split_whitespace().nth(4)?;
            // Octal escapes (`\040` for a space) are how mountinfo writes odd characters.
            (matches!(fstype, "cgroup" | "cgroup2") && !point.contains('\\'))
                .then(|| point.to_owned())
        })
        .collect()
}

fn read_u64(path: impl AsRef<Path>) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Runtime {
    /// Set up the runtime directories (root-owned, 0700, re-asserted at every start).
    pub fn new(dir: &Path) -> std::io::Result<Runtime> {
        let state_root = dir.join("runtime").join("state");
        let bundles = dir.join("runtime").join("bundles");
        let logs = dir.join("logs");
        for d in [
            &dir.join("runtime"),
            &state_root,
            &bundles,
            &dir.join("runtime").join("exec"),
            &logs,
        ] {
            private_dir(d)?;
        }
        let canonical = std::fs::canonicalize(dir)?;
        let tag = hex::encode(&Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..4]);
        Ok(Runtime {
            shim: shim_path(),
            state_root,
            bundles,
            logs,
            cgroup_parent: format!("/rxd/{tag}"),
            running: Mutex::default(),
            actions: Mutex::default(),
            rootfs: Mutex::default(),
            idmap_probes: Mutex::default(),
            parent_cgroups: tokio::sync::RwLock::default(),
            spawner: Mutex::default(),
        })
    }

    pub fn cgroup(&self, name: &str) -> String {
        format!("{}/{name}", self.cgroup_parent)
    }

    /// Where a running container's supervisor serves its console (see rxd-shim's console.rs).
    pub fn console_socket(&self, name: &str) -> PathBuf {
        self.bundles.join(name).join("console.sock")
    }

    /// An instance's log directory (console log, recorded exec output).
    pub fn logs_dir(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    pub fn console_log(&self, name: &str) -> PathBuf {
        self.logs.join(name).join("console.log")
    }

    /// The lock that serializes actions on one instance.
    pub fn action_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.actions.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    }

    /// The lock on an instance's root filesystem (see the field).
    pub fn rootfs_lock(&self, name: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut map = self.rootfs.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    }

    /// The init of `name` if it is running now.
    pub fn init(&self, name: &str) -> Option<Init> {
        let init = *self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)?;
        match proc_stat(init.pid) {
            Some((state, start)) if start == init.start_time && state != 'Z' && state != 'X' => {
                Some(init)
            }
            _ => None,
        }
    }

    /// Forget a container that has ended; true if it was known as running.
    pub fn forget(&self, name: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    /// Names recorded as running whose init is gone.
    pub fn ended(&self) -> Vec<String> {
        let names: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names
            .into_iter()
            .filter(|n| self.init(n).is_none())
            .collect()
    }

    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.shim);
        c.arg("--root")
            .arg(&self.state_root)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        c
    }

    async fn run(&self, args: &[&str]) -> Result<String, RuntimeError> {
        let out =
            self.command()
                .args(args)
                .output()
                .await
                .map_err(|source| RuntimeError::Helper {
                    path: self.shim.clone(),
                    source,
                })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(RuntimeError::Failed(
                err.trim().trim_start_matches("rxd-shim: ").to_owned(),
            ))
        }
    }

    /// Change a running container's CPU, memory and process limits to `plan`'s (rxd-shim's
    /// `limits`: keys the plan leaves unset are lifted).
    pub async fn set_limits(&self, plan: &LaunchPlan) -> Result<(), RuntimeError> {
        self.run_with_input(&["limits", &plan.name], plan).await
    }

    /// Whether the filesystem holding `dir` can be mounted idmapped (kernel and filesystem
    /// both): asked of the helper once per filesystem, then remembered.
    pub async fn idmapped_mounts(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(dev) = std::fs::metadata(dir).map(|m| m.dev()) else {
            return false;
        };
        if let Some(known) = self
            .idmap_probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dev)
        {
            return *known;
        }
        let dir_text = dir.to_string_lossy();
        let answer = match self.run(&["probe-idmap", &dir_text]).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no idmapped mounts here: container files are shifted on disk");
                false
            }
        };
        self.idmap_probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dev, answer);
        answer
    }

    /// Run the helper with `args` and `input` as JSON on its stdin, to its end.
    async fn run_with_input(
        &self,
        args: &[&str],
        input: &impl serde::Serialize,
    ) -> Result<(), RuntimeError> {
        let helper = |source| RuntimeError::Helper {
            path: self.shim.clone(),
            source,
        };
        // Bounded: a step that hangs (on a FUSE mount that never answers, inside a container)
        // is killed rather than holding its caller's locks forever.
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(helper)?;
        let text = serde_json::to_vec(input).map_err(|e| RuntimeError::Failed(e.to_string()))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(&text).await.map_err(helper)?;
        drop(stdin);
        let out = tokio::time::timeout(HELPER_STEP_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                RuntimeError::Failed(format!(
                    "the container helper's {} step did not finish within {} s",
                    args.first().unwrap_or(&""),
                    HELPER_STEP_TIMEOUT.as_secs()
                ))
            })?
            .map_err(helper)?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(RuntimeError::Failed(
                err.trim().trim_start_matches("rxd-shim: ").to_owned(),
            ))
        }
    }

    /// Mount host-path disks and unix nodes into a running container, or take them out
    /// (rxd-shim's `devices`).
    pub async fn change_devices(
        &self,
        name: &str,
        change: &rxd_core::launch::DeviceChange,
    ) -> Result<(), RuntimeError> {
        let staging = self.bundles.join(name).join("devices");
        let staging = staging.to_str().ok_or_else(|| {
            RuntimeError::Failed("the state directory's path is not UTF-8".into())
        })?;
        self.run_with_input(&["devices", name, "--staging", staging], change)
            .await
    }

    /// Where the forwarder of proxy device `device` of container `name` keeps its pid and start
    /// time (`{"pid":N,"start":S}`).
    fn proxy_pid_file(&self, name: &str, device: &str) -> PathBuf {
        self.bundles.join(name).join(format!(
            "proxy.{}.pid",
            rxd_core::devices::encoded_name(device)
        ))
    }

    /// The forwarder of proxy device `device` of `name`, if it runs: its pid, checked against
    /// the start time its pid file recorded.
    pub fn proxy_pid(&self, name: &str, device: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.proxy_pid_file(name, device)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let pid = i32::try_from(v["pid"].as_i64()?).ok()?;
        let start = v["start"].as_u64()?;
        match proc_stat(pid) {
            Some((state, s)) if s == start && state != 'Z' => Some(pid),
            _ => None,
        }
    }

    /// Run the helper with `args` and `input` as JSON on its stdin, and read its one-line JSON
    /// answer; the helper stays (a supervisor, a forwarder: in a session of its own), and tokio
    /// reaps it when it ends.
    async fn start_detached(
        &self,
        args: &[&str],
        input: &impl serde::Serialize,
        gate: Option<impl std::future::Future<Output = bool>>,
        timeout: Duration,
        what: &str,
    ) -> Result<serde_json::Value, RuntimeError> {
        let helper = |source| RuntimeError::Helper {
            path: self.shim.clone(),
            source,
        };
        let text = serde_json::to_vec(input).map_err(|e| RuntimeError::Failed(e.to_string()))?;
        // A launch plan is one line the helper reads up to its bound.
        if gate.is_some() && text.len() as u64 >= rxd_core::launch::MAX_PLAN {
            return Err(RuntimeError::Failed(format!(
                "the plan for {what} is larger than {} bytes",
                rxd_core::launch::MAX_PLAN
            )));
        }
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(helper)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(&text).await.map_err(helper)?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stdout);
        let answer = tokio::time::timeout(timeout, reader.read_line(&mut line));
        let read = match gate {
            // Without a gate, the plan ends at EOF.
            None => {
                drop(stdin);
                answer.await
            }
            // With one, the plan is a line, then `go` once the gate opens (EOF if it does not);
            // the helper may answer before it reads that (it failed, or has nothing to attach).
            // Never once the helper has answered or the wait timed out (the helper is then
            // killed: nothing of it may start after that).
            Some(gate) => {
                stdin.write_all(b"\n").await.map_err(helper)?;
                let answered = std::sync::atomic::AtomicBool::new(false);
                let answer = async {
                    let read = answer.await;
                    answered.store(true, std::sync::atomic::Ordering::SeqCst);
                    read
                };
                let open = async {
                    if gate.await && !answered.load(std::sync::atomic::Ordering::SeqCst) {
                        let _ = stdin.write_all(b"go\n").await;
                    }
                    drop(stdin);
                };
                let (read, ()) = tokio::join!(answer, open);
                read
            }
        };
        match read {
            Ok(Ok(n)) if n > 0 => serde_json::from_str(&line).map_err(|_| {
                RuntimeError::Failed(format!("unexpected answer from {what}: {line:?}"))
            }),
            _ => {
                let _ = child.start_kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err).await;
                }
                Err(RuntimeError::Failed(format!(
                    "{what} gave no answer: {}",
                    err.trim()
                )))
            }
        }
    }

    /// Start the forwarder of a proxy device (rxd-shim's `proxy`, in a session of its own: it
    /// outlives the daemon and ends with the container's init).
    pub async fn start_proxy(
        &self,
        plan: &rxd_core::launch::ProxyPlan,
    ) -> Result<i32, RuntimeError> {
        let helper = |source| RuntimeError::Helper {
            path: self.shim.clone(),
            source,
        };
        let pid_file = self.proxy_pid_file(&plan.instance, &plan.device);
        if let Some(dir) = pid_file.parent() {
            private_dir(dir).map_err(helper)?;
        }
        let pid_file_text = pid_file.to_str().ok_or_else(|| {
            RuntimeError::Failed("the state directory's path is not UTF-8".into())
        })?;
        let reply = self
            .start_detached(
                &["proxy", "--pid-file", pid_file_text],
                plan,
                None::<std::future::Ready<bool>>,
                Duration::from_secs(30),
                "the proxy forwarder",
            )
            .await?;
        if let Some(e) = reply["error"].as_str() {
            return Err(RuntimeError::Failed(format!(
                "Failed to start the proxy device {:?}: {e}",
                plan.device
            )));
        }
        reply["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| RuntimeError::Failed(format!("unexpected forwarder answer {reply}")))
    }

    /// End the forwarder of proxy device `device` of `name` (if it runs), wait for it to be
    /// gone (so its ports are free for a new one), and forget it.
    pub async fn stop_proxy(&self, name: &str, device: &str) {
        if let Some(pid) = self.proxy_pid(name, device) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..100 {
                if self.proxy_pid(name, device).is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if self.proxy_pid(name, device).is_some() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_file(self.proxy_pid_file(name, device));
    }

    /// Start a container and record its init. `gate` runs alongside: the helper attaches the
    /// NICs it made to their bridges only once it has returned `true` (their filters are in
    /// place); on `false` the start fails and nothing is attached.
    pub async fn start(
        &self,
        plan: &LaunchPlan,
        gate: impl std::future::Future<Output = bool>,
    ) -> Result<Init, RuntimeError> {
        let _creating = self.parent_cgroups.read().await;
        let helper = |source| RuntimeError::Helper {
            path: self.shim.clone(),
            source,
        };
        let log_dir = self.logs.join(&plan.name);
        private_dir(&log_dir).map_err(helper)?;
        let bundle = self.bundles.join(&plan.name);
        let log = self.console_log(&plan.name);
        let utf8 = |p: &Path| {
            p.to_str().map(str::to_owned).ok_or_else(|| {
                RuntimeError::Failed("the state directory's path is not UTF-8".into())
            })
        };
        let (bundle, log) = (utf8(&bundle)?, utf8(&log)?);
        let reply = self
            .start_detached(
                &["start", "--bundle", &bundle, "--log", &log],
                plan,
                Some(gate),
                Duration::from_secs(60),
                "the container helper",
            )
            .await?;
        if let Some(e) = reply["error"].as_str() {
            return Err(RuntimeError::Failed(format!("Failed to start: {e}")));
        }
        let pid = reply["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| RuntimeError::Failed(format!("unexpected helper answer {reply}")))?;
        let start_time = proc_stat(pid)
            .map(|(_, s)| s)
            .ok_or_else(|| RuntimeError::Failed("The container's init exited at once".into()))?;
        let init = Init { pid, start_time };
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plan.name.clone(), init);
        Ok(init)
    }

    /// Send `signal` to the init (or with `all`, to every process of the container).
    pub async fn signal(&self, name: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        let sig = signal.to_string();
        let mut args = vec!["kill", name, "--signal", &sig];
        if all {
            args.push("--all");
        }
        self.run(&args).await.map(drop)
    }

    pub async fn freeze(&self, name: &str, frozen: bool) -> Result<(), RuntimeError> {
        self.run(&[if frozen { "pause" } else { "resume" }, name])
            .await
            .map(drop)
    }

    /// Whether the container's processes are frozen (cgroup freezer).
    pub fn frozen(&self, name: &str) -> bool {
        let cg = self.cgroup(name);
        let v1 = format!("/sys/fs/cgroup/freezer{cg}/freezer.state");
        if let Ok(s) = std::fs::read_to_string(v1) {
            return s.trim() == "FROZEN";
        }
        std::fs::read_to_string(format!("/sys/fs/cgroup{cg}/cgroup.freeze"))
            .is_ok_and(|s| s.trim() == "1")
    }

    /// Wait until the init is gone (`None`: forever).
    pub async fn wait_stopped(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        while self.init(name).is_some() {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(RuntimeError::StopTimeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The signal that asks `name`'s init to halt (see [`halt_signal`]); SIGPWR when it cannot
    /// be read.
    pub fn halt_signal(&self, name: &str) -> i32 {
        self.init(name)
            .and_then(|init| std::fs::read_to_string(format!("/proc/{}/status", init.pid)).ok())
            .map_or(SIGPWR, |status| halt_signal(&status))
    }

    /// Whether the running container `name` was started with lxcfs's files over its /proc
    /// (the helper binds them only when lxcfs answers at start): read from its runtime spec.
    pub fn uses_lxcfs(&self, name: &str) -> bool {
        let Ok(text) = std::fs::read(self.bundles.join(name).join("config.json")) else {
            return false;
        };
        let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&text) else {
            return false;
        };
        spec["mounts"].as_array().is_some_and(|mounts| {
            mounts.iter().any(|m| {
                m["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("/var/lib/lxcfs/"))
            })
        })
    }

    /// Remove whatever runtime state and cgroups a stopped container left, and say how it
    /// ended (the supervisor marks a reboot in the bundle before it cleans up).
    pub async fn clean_up(&self, name: &str) -> Result<Ending, RuntimeError> {
        // The supervising helper does this itself when the init ends; wait for it briefly, and
        // do it here if the helper is gone.
        for _ in 0..100 {
            if !self.state_root.join(name).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.state_root.join(name).exists() {
            self.run(&["delete", name]).await?;
        }
        let bundle = self.bundles.join(name);
        let ending = if bundle.join("reboot").exists() {
            Ending::Reboot
        } else {
            Ending::Stopped
        };
        let _ = std::fs::remove_dir_all(bundle);
        Ok(ending)
    }

    /// Remove this daemon's cgroup parent (`/rxd/<tag>`, then `/rxd`) in every hierarchy where
    /// it is empty: the helper removes each container's own cgroups, not their parents. Skipped
    /// while a container is being created; a parent that still holds a container stays.
    pub fn prune_cgroup_parents(&self) {
        let Ok(_exclusive) = self.parent_cgroups.try_write() else {
            return;
        };
        let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        for mount in cgroup_mounts(&mountinfo) {
            let tag = Path::new(&mount).join(self.cgroup_parent.trim_start_matches('/'));
            // rmdir of a cgroup fails while it has children: only empty ones go.
            if std::fs::remove_dir(&tag).is_ok() {
                let _ = std::fs::remove_dir(tag.parent().unwrap_or(&tag));
            }
        }
    }

    /// Move a renamed instance's console log directory.
    pub fn rename_logs(&self, old: &str, new: &str) {
        let _ = std::fs::rename(self.logs.join(old), self.logs.join(new));
    }

    /// Write an exec'd command's environment to a new private file for the helper (never on
    /// its command line, where any host user could read it, nor in its own environment).
    pub fn write_exec_env(
        &self,
        env: &std::collections::BTreeMap<String, String>,
    ) -> std::io::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self
            .bundles
            .with_file_name("exec")
            .join(format!("{}.env", uuid::Uuid::new_v4()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)?;
        f.write_all(serde_json::to_string(env)?.as_bytes())?;
        Ok(path)
    }

    /// A fresh path for an exec'd command's pid, in the private runtime directory.
    pub fn exec_pid_file(&self) -> PathBuf {
        self.bundles
            .with_file_name("exec")
            .join(format!("{}.pid", uuid::Uuid::new_v4()))
    }

    /// Signal the command whose pid the helper wrote to `pid_file`. False while there is no
    /// complete pid there yet.
    pub fn signal_exec(&self, pid_file: &Path, signal: i32) -> bool {
        let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|&p| p > 1)
        else {
            return false;
        };
        if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
        true
    }

    /// Remove a deleted instance's console log directory.
    /// Every instance the runtime holds anything of on disk (state, bundle or logs), running or
    /// not: start-up recovery compares them with the instances that exist.
    /// Only directories named as instance keys count: the logs directory also holds the
    /// daemon's own files (the security log).
    pub fn on_disk(&self) -> Vec<String> {
        let mut names: Vec<String> = [&self.state_root, &self.bundles, &self.logs]
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| rxd_core::name::valid_instance_key(n))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn remove_logs(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.logs.join(name));
    }

    /// Find containers started before this daemon did; clean up the state of ended ones.
    pub async fn recover(&self, names: &[String]) {
        for name in names {
            if !self.state_root.join(name).exists() {
                continue;
            }
            let state = self.run(&["state", name]).await;
            let pid = state
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v["pid"].as_i64())
                .and_then(|p| i32::try_from(p).ok())
                .filter(|&p| p > 0);
            match pid.and_then(|p| proc_stat(p).map(|s| (p, s))) {
                Some((pid, (state, start_time))) if state != 'Z' => {
                    tracing::info!(instance = %name, pid, "found a running container");
                    self.running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone(), Init { pid, start_time });
                }
                _ => {
                    if let Err(e) = self.clean_up(name).await {
                        tracing::warn!(instance = %name, error = %e, "could not clean up an ended container");
                    }
                }
            }
        }
    }

    /// Process count, memory and CPU of a container, from its cgroup (v1 or v2).
    pub fn usage(&self, name: &str) -> Usage {
        let cg = self.cgroup(name);
        let base = Path::new("/sys/fs/cgroup");
        if base.join("cgroup.controllers").exists() {
            let dir = base.join(cg.trim_start_matches('/'));
            let cpu_us = std::fs::read_to_string(dir.join("cpu.stat"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                })
                .unwrap_or(0);
            Usage {
                processes: read_u64(dir.join("pids.current")).unwrap_or(0) as i64,
                memory: read_u64(dir.join("memory.current")).unwrap_or(0),
                memory_peak: read_u64(dir.join("memory.peak")).unwrap_or(0),
                swap: read_u64(dir.join("memory.swap.current")).unwrap_or(0),
                swap_peak: read_u64(dir.join("memory.swap.peak")).unwrap_or(0),
                cpu_ns: cpu_us * 1000,
            }
        } else {
            let v1 = |ctrl: &str, file: &str| read_u64(format!("/sys/fs/cgroup/{ctrl}{cg}/{file}"));
            let memory = v1("memory", "memory.usage_in_bytes").unwrap_or(0);
            let memory_peak = v1("memory", "memory.max_usage_in_bytes").unwrap_or(0);
            let with_swap = |file: &str, memory: u64| {
                v1("memory", file).map_or(0, |both| both.saturating_sub(memory))
            };
            Usage {
                processes: v1("pids", "pids.current").unwrap_or(0) as i64,
                memory,
                memory_peak,
                swap: with_swap("memory.memsw.usage_in_bytes", memory),
                swap_peak: with_swap("memory.memsw.max_usage_in_bytes", memory_peak),
                cpu_ns: v1("cpuacct", "cpuacct.usage").unwrap_or(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_gets_sigrtmin_3_and_other_inits_sigpwr() {
        let status = |blk: &str| {
            format!("Name:\tinit\nSigPnd:\t0000000000000000\nSigBlk:\t{blk}\nSigIgn:\t0\n")
        };
        // systemd 252's pid 1, as read on a booted Debian 12 container.
        assert_eq!(halt_signal(&status("7fe3c0fe28014a03")), SIGRTMIN_3);
        assert_eq!(halt_signal(&status("0000001000000000")), SIGRTMIN_3);
        // Bit 35 (SIGRTMIN+2) or 37 alone is not it.
        assert_eq!(halt_signal(&status("0000000800000000")), SIGPWR);
        assert_eq!(halt_signal(&status("0000002000000000")), SIGPWR);
        assert_eq!(halt_signal(&status("0000000000000000")), SIGPWR);
        assert_eq!(halt_signal("garbage"), SIGPWR);
    }

    #[test]
    fn proc_stat_reads_this_process() {
        let (state, start) = proc_stat(std::process::id() as i32).unwrap();
        assert!(matches!(state, 'R' | 'S'));
        assert!(start > 0);
        assert!(proc_stat(-5).is_none());
    }

    #[test]
    fn cgroup_mounts_come_from_mountinfo() {
        let text = "24 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
25 24 0:23 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids\n\
26 24 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
27 24 0:25 / /sys/fs/cgroup/odd\\040name rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup_mounts(text),
            ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified"]
        );
    }
}
