//! Interactive exec: one terminal for the command, allocated inside the container.
//!
//! The attach step opens the container's own `/dev/ptmx` (its devpts instance) once it has
//! the command's identity, makes the slave its controlling terminal and its stdio, and hands
//! the master to the exec step over a socket (`SCM_RIGHTS`, on its stdin). The exec step relays
//! between the master and its own stdio: stdout carries the terminal's output; stdin carries
//! frames from the daemon (`rxd_core::pty`: input bytes and window sizes).

use anyhow::{Context, Result};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The socket pair: one end for the exec step, the other becomes the attach step's stdin.
pub fn channel() -> Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Attach step: allocate the terminal, send its master on `to`, and make the slave this
/// process's controlling terminal and stdin, stdout and stderr.
pub fn take_terminal(to: impl AsFd) -> Result<()> {
    use rustix::pty::OpenptFlags;
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .context("opening the container's /dev/ptmx")?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .context("opening the terminal")?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [master.as_fd()];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(to, &[IoSlice::new(b"m")], &mut control, SendFlags::empty())
        .context("handing over the terminal")?;
    drop(master);
    nix::unistd::setsid().context("starting a session")?;
    rustix::process::ioctl_tiocsctty(&slave).context("taking the terminal")?;
    nix::unistd::dup2_stdin(&slave)?;
    nix::unistd::dup2_stdout(&slave)?;
    nix::unistd::dup2_stderr(&slave)?;
    Ok(())
}

/// Exec step: the master sent by the attach step, or `None` if it ended without one.
pub fn receive_terminal(from: &OwnedFd) -> Result<Option<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let msg = rustix::net::recvmsg(
        from,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if msg.bytes == 0 {
        return Ok(None);
    }
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            if let Some(fd) = fds.next() {
                return Ok(Some(fd));
            }
        }
    }
    Ok(None)
}

pub fn resize(master: impl AsFd, cols: u16, rows: u16) {
    let _ = rustix::termios::tcsetwinsize(
        master,
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    );
}

/// Apply frames read from `from` to the terminal `master` until the stream ends or is bad.
pub fn feed(mut from: impl Read, master: &File) {
    use rxd_core::pty::{read, Frame};
    while let Ok(frame) = read(&mut from) {
        match frame {
            Frame::Data(data) => {
                if (&*master).write_all(&data).is_err() {
                    break;
                }
            }
            Frame::Resize { cols, rows } => resize(master, cols, rows),
            Frame::Unknown => {}
        }
    }
}

/// Relay until the terminal closes: frames from stdin to the master, the master to stdout.
/// Returns a flag set once the terminal's output has ended.
pub fn relay(master: OwnedFd) -> Result<Arc<AtomicBool>> {
    let mut output = File::from(master.try_clone()?);
    let input = File::from(master);
    std::thread::spawn(move || feed(std::io::stdin().lock(), &input));
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout();
        let mut buf = vec![0u8; 16 * 1024];
        // Ends with EIO once no process holds the terminal's slave.
        while let Ok(n) = output.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() || stdout.flush().is_err() {
                break;
            }
        }
        flag.store(true, Ordering::SeqCst);
    });
    Ok(done)
}

/// Wait (up to `limit`) for the relay's output to end.
pub fn drain(done: &AtomicBool, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while !done.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
