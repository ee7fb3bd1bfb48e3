//! A daemon with a client of it (an `rxc` config dir) and the busybox test image imported as
//! `bb`: what most container tests start from. Also Debian's `lxc` run against a config dir.

use crate::{busybox_image, require_root, require_tool, Options, TestDaemon};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub struct Session {
    pub d: TestDaemon,
    pub conf: tempfile::TempDir,
}

impl Session {
    /// A session for `test`, or `None` where it cannot run (not root, no busybox; under
    /// `CI=true` those fail instead).
    pub async fn new(test: &str) -> Option<Session> {
        Self::new_with(test, Options::default()).await
    }

    pub async fn new_with(test: &str, opts: Options) -> Option<Session> {
        if !require_root(test) || !require_tool("busybox", "busybox-static", test) {
            return None;
        }
        let d = TestDaemon::start_with(opts).await;
        let conf = tempfile::tempdir().unwrap();
        let s = Session { d, conf };
        s.ok(&[
            "image",
            "import",
            s.image().to_str().unwrap(),
            "--alias",
            "bb",
        ]);
        Some(s)
    }

    /// The busybox image tarball (made on first use).
    pub fn image(&self) -> std::path::PathBuf {
        let image = self.conf.path().join("bb.tar.gz");
        if !image.exists() {
            busybox_image(&image);
        }
        image
    }

    pub fn rxc(&self, args: &[&str]) -> Output {
        self.d.rxc(self.conf.path(), args)
    }

    /// `rxc ARGS`, which must succeed: its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.rxc(args);
        assert!(
            out.status.success(),
            "rxc {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.d.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `rxc ARGS`, which must fail: its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.rxc(args);
        assert!(!out.status.success(), "rxc {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `rxc ARGS` with `input` on standard input, which must succeed: its standard output.
    pub fn ok_with(&self, args: &[&str], input: &str) -> String {
        let out = self.d.rxc_with_input(self.conf.path(), args, input);
        assert!(
            out.status.success(),
            "rxc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sh -c script` in the container: (exit code, stdout + stderr).
    pub fn sh(&self, name: &str, script: &str) -> (i32, String) {
        let out = self.rxc(&["exec", name, "--", "sh", "-c", script]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// `GET path` over the unix socket: the metadata.
    pub async fn get(&self, path: &str) -> Value {
        self.d.unix().get(path).await.unwrap()
    }

    pub async fn state(&self, name: &str) -> Value {
        self.get(&format!("/1.0/instances/{name}/state")).await
    }

    /// The init's pid of a running instance.
    pub async fn pid(&self, name: &str) -> i32 {
        let s = self.state(name).await;
        assert_eq!(s["status"], "Running", "{s}");
        s["pid"].as_i64().unwrap() as i32
    }
}

/// Debian's `lxc` with its config in `conf`.
pub fn lxc(conf: &Path, args: &[&str]) -> Output {
    Command::new("lxc")
        .args(args)
        .env("LXD_CONF", conf)
        .env("HOME", conf)
        .stdin(Stdio::null())
        .output()
        .expect("run lxc")
}

/// `lxc ARGS`, which must succeed: its standard output.
pub fn lxc_ok(conf: &Path, args: &[&str]) -> String {
    let out = lxc(conf, args);
    assert!(
        out.status.success(),
        "lxc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
