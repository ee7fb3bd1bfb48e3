//! `rxd`: flags, logging, signals; everything else is in rxd-daemon.
#![forbid(unsafe_code)]

use clap::Parser;
use std::path::PathBuf;

mod init;

/// rxd: a system-container manager daemon speaking LXD's REST API.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// State directory (database, keypair, unix socket).
    #[arg(long, env = "RXD_DIR", default_value = "/var/lib/rxd")]
    dir: PathBuf,
    /// Group owning the unix socket. Its members control rxd fully, which means root on this host.
    #[arg(long)]
    group: Option<String>,
    /// Log filter, e.g. `info` or `rxd_daemon=debug`.
    #[arg(long, env = "RXD_LOG", default_value = "info")]
    log: String,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// For the host's shutdown (the unit's ExecStop): tell the rxd running on --dir to halt
    /// every instance cleanly (boot.host_shutdown_timeout, boot.stop.priority) and exit, and
    /// wait for it. A plain stop (SIGTERM, systemctl restart) leaves containers running.
    Shutdown {
        /// Seconds to wait for the daemon to finish.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Configure a running rxd, as `lxd init` does: `rxd init --preseed < rxd.yaml` (server
    /// `config:` and `projects:`), or `rxd init --auto --network-address 0.0.0.0`.
    Init(init::InitArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Init(init)) = args.command {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(init::run(&args.dir, init));
    }
    // No file or socket rxd creates may be writable by group or others unless it says so.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("rxd must run as root");
    }
    if let Some(Cmd::Shutdown { timeout }) = args.command {
        return shutdown(&args.dir, std::time::Duration::from_secs(timeout));
    }
    raise_descriptor_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let opts = rxd_daemon::Options {
            dir: args.dir,
            group: args.group,
        };
        rxd_daemon::run(opts, shutdown_signal()).await
    })?;
    Ok(())
}

/// Raise the soft limit on open descriptors to the hard limit, as Go does for LXD: the default
/// soft limit (usually 1024) runs out long before the connection limits do, and the listeners
/// size those limits against what this leaves (containers inherit it too, as LXD's do).
fn raise_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current == now.maximum {
        return;
    }
    let raised = Rlimit {
        current: now.maximum,
        maximum: now.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            from = ?now.current,
            to = ?now.maximum,
            "raised the open descriptor limit"
        ),
        Err(e) => {
            tracing::warn!(error = %e, current = ?now.current, "cannot raise the open descriptor limit")
        }
    }
}

/// SIGTERM or SIGINT stop the daemon alone; SIGPWR (init's "power failing", and what
/// `rxd shutdown` sends) means the host is going down.
async fn shutdown_signal() -> rxd_daemon::Shutdown {
    use rxd_daemon::Shutdown;
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut pwr)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::from_raw(
            nix::sys::signal::Signal::SIGPWR as i32,
        )),
    ) else {
        tracing::error!("cannot install signal handlers; stop rxd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM received: containers keep running"); Shutdown::Daemon }
        _ = int.recv() => { tracing::info!("SIGINT received: containers keep running"); Shutdown::Daemon }
        _ = pwr.recv() => { tracing::info!("SIGPWR received: the host is shutting down"); Shutdown::Host }
    }
}

/// `rxd shutdown`: SIGPWR to the daemon holding `dir`'s lock (its pid is in the lock file,
/// trusted only while the lock is held), then wait until the lock is free.
fn shutdown(dir: &std::path::Path, timeout: std::time::Duration) -> anyhow::Result<()> {
    use anyhow::Context;
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("rxd.lock");
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))
    };
    let free = |f: std::fs::File| Flock::lock(f, FlockArg::LockSharedNonblock).is_ok();
    if free(open()?) {
        println!("rxd is not running on {}", dir.display());
        return Ok(());
    }
    let text = std::fs::read_to_string(&path)?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} holds no pid", path.display()))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGPWR,
    )
    .with_context(|| format!("signalling rxd (pid {pid})"))?;
    let deadline = std::time::Instant::now() + timeout;
    while !free(open()?) {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("rxd (pid {pid}) did not finish within {timeout:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}
