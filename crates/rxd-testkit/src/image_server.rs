//! A simplestreams image server for tests: `tests/simplestreams/serve.py` serving a tree over
//! HTTPS on loopback with a certificate of the caller's test CA, logging every path asked for.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The server, stopped when dropped.
pub struct ImageServer {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl ImageServer {
    /// Serve `root` with `certs/server.crt` and `certs/server.key`; requests are logged in
    /// `certs/requests.log`.
    pub fn start(root: &Path, certs: &Path) -> ImageServer {
        Self::start_at_rate(root, certs, None)
    }

    /// As [`ImageServer::start`], sending files at no more than `rate` bytes a second (a slow
    /// server, whose downloads last long enough to show their progress).
    pub fn start_at_rate(root: &Path, certs: &Path, rate: Option<u64>) -> ImageServer {
        let log = certs.join("requests.log");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/simplestreams/serve.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(root)
            .arg(certs.join("server.crt"))
            .arg(certs.join("server.key"))
            .arg(&log)
            .args(rate.map(|r| r.to_string()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server prints its port");
        let port: u16 = line.trim().parse().expect("the server prints its port");
        ImageServer {
            child,
            url: format!("https://127.0.0.1:{port}"),
            log,
        }
    }

    /// How many times `path` was asked for.
    pub fn requests(&self, path: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == path)
            .count()
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
