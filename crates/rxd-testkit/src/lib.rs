//! The black-box test harness: start the real `rxd` binary on a fresh temporary state dir, with
//! HTTPS on an ephemeral loopback port, wait until it answers, hand out clients for both
//! listeners, and stop it on drop. Nothing here sets process-wide environment variables.
#![forbid(unsafe_code)]

pub mod api;
pub mod ca;
pub mod candid;
pub mod cgroup;
pub mod image_server;
pub mod netlab;
pub mod session;

use rxd_client::Client;
use rxd_tls::client::ServerTrust;
use rxd_tls::KeyPairFiles;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Path of a binary built from this workspace, in the same target profile directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // Tests run from target/<profile>/deps, tools from target/<profile>.
    let here = exe.parent().expect("executable dir");
    let dir = if here.ends_with("deps") {
        here.parent().expect("target profile dir")
    } else {
        here
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// True when the test may run. Tests that need root call this: outside CI they are skipped with
/// a message; under `CI=true` a skip is a failure.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let msg = format!("{test}: needs root (rxd runs as root), skipping");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; under CI=true a skip is a failure");
    }
    eprintln!("SKIP {msg}");
    false
}

/// True when `tool` is on the PATH. Outside CI a missing tool skips the test with a message;
/// under `CI=true` it is a failure.
pub fn require_tool(tool: &str, package: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    let msg = format!("{test}: needs `{tool}` (apt-get install -y {package}), skipping");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; under CI=true a skip is a failure");
    }
    eprintln!("SKIP {msg}");
    false
}

/// Build the small busybox test image (`scripts/make-busybox-image.sh`) at `out`.
pub fn busybox_image(out: &std::path::Path) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/make-busybox-image.sh");
    let built = Command::new("bash")
        .arg(script)
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .expect("bash runs");
    assert!(built.success(), "make-busybox-image.sh failed");
}

/// A split image made with the system's tar from the unified image `unified`: a metadata
/// tarball `meta-<tag>.tar.xz` (`metadata.yaml`, plus `meta_extra` entries of the unified
/// image) and a root filesystem tarball `root-<tag>.tar.xz`, in `dir`. With `serial`, that
/// property is added to `metadata.yaml`, so that each such image is distinct.
pub fn split_image(
    unified: &std::path::Path,
    dir: &std::path::Path,
    tag: &str,
    serial: Option<&str>,
    meta_extra: &[&str],
) -> (PathBuf, PathBuf) {
    let tar = |args: &[&str]| {
        let out = Command::new("tar").args(args).output().expect("tar runs");
        assert!(out.status.success(), "tar {args:?}: {out:?}");
    };
    let tree = dir.join(format!("tree-{tag}"));
    std::fs::create_dir_all(&tree).unwrap();
    let (tree_s, unified_s) = (tree.to_str().unwrap(), unified.to_str().unwrap());
    tar(&["-C", tree_s, "-xzf", unified_s]);
    if let Some(serial) = serial {
        let meta = tree.join("metadata.yaml");
        let text = std::fs::read_to_string(&meta).unwrap();
        let text = text.replace(
            "properties:\n",
            &format!("properties:\n  serial: \"{serial}\"\n"),
        );
        std::fs::write(&meta, text).unwrap();
    }
    let (meta, rootfs) = (
        dir.join(format!("meta-{tag}.tar.xz")),
        dir.join(format!("root-{tag}.tar.xz")),
    );
    let mut args = vec![
        "--numeric-owner",
        "-C",
        tree_s,
        "-cJf",
        meta.to_str().unwrap(),
    ];
    args.push("metadata.yaml");
    args.extend_from_slice(meta_extra);
    tar(&args);
    let rootfs_dir = tree.join("rootfs");
    tar(&[
        "--numeric-owner",
        "-C",
        rootfs_dir.to_str().unwrap(),
        "-cJf",
        rootfs.to_str().unwrap(),
        ".",
    ]);
    (meta, rootfs)
}

/// The Debian 12 systemd test image (`scripts/make-debian-image.sh`: mmdebstrap from the mirror
/// apt uses), built once and cached under the target directory, where a rerun finds it. Built
/// at most once at a time per test process.
pub fn debian_image() -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    // target/<profile>/deps/<test> → target/debian-image/
    let exe = std::env::current_exe().expect("executable path");
    let target = exe
        .ancestors()
        .find(|a| a.join("debian-image").is_dir() || a.file_name() == Some("target".as_ref()))
        .unwrap_or_else(|| exe.parent().expect("executable dir"));
    let out = target.join("debian-image").join("debian12.tar.gz");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-debian-image.sh");
    let built = Command::new("bash")
        .arg(script)
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("bash runs");
    assert!(built.success(), "make-debian-image.sh failed");
    out
}

/// The Debian 12 test image split as image servers ship it: a metadata tarball
/// (`metadata.yaml`, xz) and the root filesystem as an xz squashfs (`mksquashfs`, package
/// squashfs-tools), cached next to [`debian_image`] and rebuilt when it is.
pub fn debian_split_squashfs() -> (PathBuf, PathBuf) {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let unified = debian_image();
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = unified.parent().expect("image dir").to_owned();
    let (meta, rootfs) = (
        dir.join("debian12-lxd.tar.xz"),
        dir.join("debian12.squashfs"),
    );
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&rootfs).is_some()
        && modified(&meta).is_some()
        && modified(&rootfs) >= modified(&unified)
    {
        return (meta, rootfs);
    }
    let work = tempfile::tempdir_in(&dir).expect("tempdir");
    let run = |cmd: &mut Command| {
        let out = cmd.stdin(Stdio::null()).output().expect("runs");
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    };
    run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(work.path())
        .arg("-xzf")
        .arg(&unified));
    let tmp_meta = work.path().join("lxd.tar.xz");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(work.path())
        .arg("-cJf")
        .arg(&tmp_meta)
        .arg("metadata.yaml"));
    let tmp_root = work.path().join("root.squashfs");
    run(Command::new("mksquashfs")
        .arg(work.path().join("rootfs"))
        .arg(&tmp_root)
        .args(["-comp", "xz", "-noappend", "-quiet", "-no-progress"]));
    std::fs::rename(&tmp_meta, &meta).expect("rename");
    std::fs::rename(&tmp_root, &rootfs).expect("rename");
    (meta, rootfs)
}

/// A throwaway client keypair, as `rxc` would generate one.
pub fn client_identity(name: &str) -> KeyPairFiles {
    let dir = tempfile::tempdir().expect("tempdir");
    KeyPairFiles::load_or_generate(
        &dir.path().join("client.crt"),
        &dir.path().join("client.key"),
        rxd_tls::Role::Client,
        name,
        "",
    )
    .expect("client keypair")
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leave `core.https_address` unset.
    pub no_https: bool,
    /// `--group` for the unix socket.
    pub group: Option<String>,
    /// Extra environment for the daemon (say `SSL_CERT_FILE`, for its outgoing HTTPS).
    pub env: Vec<(String, String)>,
    /// A command the daemon runs under, given its command line as arguments, which must exec
    /// it (say `nsenter --mount=/proc/PID/ns/mnt --`, to run it in a private mount namespace).
    pub wrap: Vec<String>,
}

pub struct TestDaemon {
    root: TempDir,
    child: Option<Child>,
    opts: Options,
    https_port: Option<u16>,
    starts: u32,
}

impl TestDaemon {
    pub async fn start() -> TestDaemon {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> TestDaemon {
        let root = tempfile::Builder::new()
            .prefix("rxd-test-")
            .tempdir()
            .expect("tempdir");
        // Traversable by other users, like /var/lib: the socket's own mode must be what keeps
        // them out, and the tests check exactly that.
        std::fs::set_permissions(
            root.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod");
        let mut d = TestDaemon {
            root,
            child: None,
            opts,
            https_port: None,
            starts: 0,
        };
        d.spawn();
        d.wait_ready().await;
        if !d.opts.no_https {
            d.enable_https().await;
        }
        d
    }

    /// The state directory (`$RXD_DIR`).
    pub fn dir(&self) -> PathBuf {
        self.root.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("unix.socket")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join(format!("rxd.{}.log", self.starts))
    }

    /// Everything the daemon logged so far, across restarts.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.root.path().join(format!("rxd.{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("")
    }

    /// Waits (up to 10 s) until the log written since the latest line containing `since`
    /// contains `needle`, and returns that part of the log. For lines the daemon writes
    /// after the client has already seen the outcome, such as a handshake the client aborted.
    pub async fn wait_for_log(&self, since: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            let tail = logs.rsplit(since).next().unwrap_or_default().to_owned();
            if tail.contains(needle) {
                return tail;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged within 10 s after {since:?}:\n{tail}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The extra environment of the next [`spawn`](Self::spawn) (say, fail points armed for
    /// one start and not the next).
    pub fn set_env(&mut self, env: Vec<(String, String)>) {
        self.opts.env = env;
    }

    /// Whether the daemon process has ended (a fail point killed it, say), reaping it if so.
    /// Whether the process ends within `timeout`: its lock file is released while it exits,
    /// a moment before the kernel reports it ended.
    pub fn exits_within(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.exited() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }

    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                self.child = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Start the process on this state dir (again, after [`stop`](Self::stop)).
    pub fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut cmd = match self.opts.wrap.split_first() {
            Some((wrapper, args)) => {
                let mut c = Command::new(wrapper);
                c.args(args).arg(bin("rxd"));
                c
            }
            None => Command::new(bin("rxd")),
        };
        cmd.arg("--dir").arg(self.dir()).arg("--log").arg("debug");
        if let Some(g) = &self.opts.group {
            cmd.arg("--group").arg(g);
        }
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("spawn rxd"));
    }

    /// Wait until `GET /1.0` answers on the unix socket.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("rxd exited early ({status}); log:\n{}", self.logs());
                }
            }
            if Client::unix(self.socket()).get("/1.0").await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rxd did not answer in time; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Set `core.https_address` to a free loopback port (retrying if another process took it).
    pub async fn enable_https(&mut self) {
        for _ in 0..10 {
            let port = free_port();
            let reply = self
                .unix()
                .request(
                    rxd_client::Method::PATCH,
                    "/1.0",
                    Some(&json!({"config": {"core.https_address": format!("127.0.0.1:{port}")}})),
                )
                .await
                .expect("PATCH /1.0");
            if reply.status == 200 {
                self.https_port = Some(port);
                return;
            }
        }
        panic!("could not bind an HTTPS port; log:\n{}", self.logs());
    }

    pub fn https_port(&self) -> u16 {
        self.https_port.expect("HTTPS not enabled")
    }

    pub fn https_address(&self) -> String {
        format!("127.0.0.1:{}", self.https_port())
    }

    pub fn unix(&self) -> Client {
        Client::unix(self.socket())
    }

    pub fn server_cert_der(&self) -> Vec<u8> {
        let pem = std::fs::read_to_string(self.dir().join("server.crt")).expect("server.crt");
        rxd_tls::cert::from_pem(&pem).expect("server.crt PEM")
    }

    pub fn server_fingerprint(&self) -> String {
        rxd_tls::fingerprint(&self.server_cert_der())
    }

    /// An HTTPS client pinned to this daemon's certificate, presenting `identity` if given.
    pub fn https(&self, identity: Option<&KeyPairFiles>) -> Client {
        self.https_at(self.https_port(), identity)
    }

    /// An HTTPS client for `port` on 127.0.0.1, pinned to this daemon's certificate (for tests
    /// that move the listener).
    pub fn https_at(&self, port: u16, identity: Option<&KeyPairFiles>) -> Client {
        let pin = rxd_tls::cert::fingerprint_bytes(&self.server_cert_der());
        Client::https("127.0.0.1", port, ServerTrust::Pinned(pin), identity).expect("https client")
    }

    /// Run the real `rxc` against this daemon's unix socket, with its configuration in `conf`
    /// and no standard input.
    pub fn rxc(&self, conf: &std::path::Path, args: &[&str]) -> std::process::Output {
        Command::new(bin("rxc"))
            .args(args)
            .env("RXC_CONF", conf)
            .env("RXD_DIR", self.dir())
            .stdin(Stdio::null())
            .output()
            .expect("rxc runs")
    }

    /// Run the real `rxc` as [`TestDaemon::rxc`] does, with `input` on its standard input.
    pub fn rxc_with_input(
        &self,
        conf: &std::path::Path,
        args: &[&str],
        input: &str,
    ) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(bin("rxc"))
            .args(args)
            .env("RXC_CONF", conf)
            .env("RXD_DIR", self.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rxc runs");
        child
            .stdin
            .take()
            .expect("rxc's stdin")
            .write_all(input.as_bytes())
            .expect("rxc reads its input");
        child.wait_with_output().expect("rxc runs")
    }

    /// The names in the state dir's `images/` (none when it does not exist): what an image
    /// import left behind.
    pub fn image_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir().join("images"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Trust `id`'s certificate (unrestricted), over the unix socket.
    pub async fn trust(&self, id: &KeyPairFiles) {
        use base64::Engine;
        let cert = base64::engine::general_purpose::STANDARD.encode(&id.cert_der);
        let r = self
            .unix()
            .request(
                rxd_client::Method::POST,
                "/1.0/certificates",
                Some(&json!({"certificate": cert})),
            )
            .await
            .expect("unix socket");
        assert_eq!(r.status, 201, "trusting a certificate: {:?}", r.envelope());
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill the daemon with SIGKILL, as a crash would, leaving its socket behind.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Switch to PKI mode as an administrator would: stop, put the CA and the CA-issued server
    /// pair in place, start again.
    pub async fn install_pki(&mut self, ca: &ca::TestCa, server: &ca::Issued) {
        use std::os::unix::fs::PermissionsExt;
        self.stop();
        let dir = self.dir();
        server.write(&dir, "server.crt", "server.key");
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(dir.join("server.ca"), &ca.pem).unwrap();
        self.spawn();
        self.wait_ready().await;
    }

    /// Ask the daemon to reload its TLS and PKI files now.
    pub fn sighup(&self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGHUP,
            );
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Restart on the same state dir and wait until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // Containers first, while the daemon runs: the helper removes each container's own
        // cgroups, and the daemon, as it stops, the parents that are then empty
        // (`/rxd/<tag>` in every hierarchy), which nothing removes once it is gone.
        self.kill_containers();
        self.stop();
        self.kill_containers();
        self.remove_cgroup_parent();
        self.unmount_pools();
    }
}

impl TestDaemon {
    /// Unmount whatever is still mounted under this daemon's directory (the storage pools a
    /// test made and did not delete), deepest first: a loop-file pool's loop device goes with
    /// its last mount (autoclear). Lazily, so a mount still busy goes once it is free.
    fn unmount_pools(&self) {
        let root = self.root.path().to_string_lossy().into_owned();
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut points: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|p| p.starts_with(&format!("{root}/")))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = std::process::Command::new("umount")
                .args(["--lazy", point])
                .status();
        }
    }
}

impl TestDaemon {
    /// This daemon's cgroup parent in every hierarchy (`<hierarchy>/rxd/<tag>`, the tag from
    /// its state directory as rxd-runtime derives it), existing or not.
    fn cgroup_parents(&self) -> Vec<PathBuf> {
        use sha2::Digest;
        let Ok(canonical) = std::fs::canonicalize(self.dir()) else {
            return Vec::new();
        };
        let tag = hex::encode(&sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..4]);
        let base = std::path::Path::new("/sys/fs/cgroup");
        let mut hierarchies = vec![base.to_path_buf()];
        if let Ok(entries) = std::fs::read_dir(base) {
            hierarchies.extend(entries.flatten().map(|e| e.path()));
        }
        hierarchies
            .into_iter()
            .map(|h| h.join("rxd").join(&tag))
            .collect()
    }

    /// The container cgroups under this daemon's parent, in any hierarchy.
    pub fn container_cgroups(&self) -> std::collections::BTreeSet<String> {
        self.cgroup_parents()
            .iter()
            .filter_map(|p| std::fs::read_dir(p).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Remove this daemon's (empty) cgroup parents once its containers are gone: a test leaves
    /// no cgroup behind.
    fn remove_cgroup_parent(&self) {
        for parent in self.cgroup_parents() {
            let _ = std::fs::remove_dir(&parent);
        }
    }

    /// Containers outlive the daemon by design: a test's must not outlive the test.
    pub fn kill_containers(&self) {
        let root = self.dir().join("runtime").join("state");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        for e in entries.flatten() {
            let _ = Command::new(bin("rxd-shim"))
                .arg("--root")
                .arg(&root)
                .arg("delete")
                .arg(e.file_name())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The stdout of an `rxc` run that must succeed (the test fails with its stderr otherwise).
pub fn succeeded(args: &[&str], out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "rxc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stderr of an `rxc` run that must fail with status 1.
pub fn failed(args: &[&str], out: std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "rxc {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
