//! The container's console: a terminal from its own devpts (libcontainer mounts the slave on
//! `/dev/console` and makes it the init's stdio, and hands us the master over a socket).
//!
//! The supervisor keeps the master: everything the console shows is appended to the console
//! log (kept under [`MAX_LOG`] by starting it again) and copied to the attached client, if any.
//! The daemon attaches by connecting to the socket in the container's private bundle directory
//! and speaks the frames of `pty.rs` (input bytes, window size); a new client replaces the old.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The console log is started again past this size.
pub const MAX_LOG: u64 = 8 << 20;

/// Unix socket paths are limited to 108 bytes.
const MAX_SOCKET_PATH: usize = 100;

/// Whether the console socket can live at `path` (otherwise the container runs without a
/// console terminal: its init writes straight to the console log).
pub fn fits(path: &Path) -> bool {
    path.as_os_str().len() <= MAX_SOCKET_PATH
}

/// The socket libcontainer hands the master to, and the daemon attaches through later.
pub fn listen(path: &Path) -> Result<Option<UnixListener>> {
    if !fits(path) {
        return Ok(None);
    }
    let _ = std::fs::remove_file(path);
    Ok(Some(
        UnixListener::bind(path).context("creating the console socket")?,
    ))
}

/// After the start: the master libcontainer sent (it connected during the init's set-up).
pub fn receive(listener: &UnixListener) -> Result<OwnedFd> {
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "the container's console was never handed over"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    listener.set_nonblocking(false)?;
    stream.set_nonblocking(false)?;
    crate::pty::receive_terminal(&OwnedFd::from(stream))?
        .context("the console socket carried no terminal")
}

/// Serve the console until the container ends (the threads end with the supervisor).
pub fn serve(master: OwnedFd, mut log: File, listener: UnixListener) -> Result<()> {
    let client: Arc<Mutex<Option<UnixStream>>> = Arc::default();
    let mut output = File::from(master.try_clone()?);
    let input = Arc::new(File::from(master));
    let attached = client.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        // Ends with EIO once the init and everything else on the console is gone.
        while let Ok(n) = output.read(&mut buf) {
            if n == 0 {
                break;
            }
            if log.metadata().is_ok_and(|m| m.len() > MAX_LOG) {
                let _ = log.set_len(0);
                let _ = writeln!(
                    log,
                    "rxd-shim: console log restarted (it passed {MAX_LOG} bytes)"
                );
            }
            let _ = log.write_all(&buf[..n]);
            let mut guard = attached.lock().unwrap_or_else(|e| e.into_inner());
            if guard
                .as_mut()
                .is_some_and(|c| c.write_all(&buf[..n]).is_err())
            {
                *guard = None;
            }
        }
    });
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(out) = conn.try_clone() else { continue };
            let previous = client
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace(out);
            if let Some(old) = previous {
                let _ = old.shutdown(std::net::Shutdown::Both);
            }
            let master = input.clone();
            std::thread::spawn(move || crate::pty::feed(conn, &master));
        }
    });
    Ok(())
}
