//! `rxd`: flags, logging, signals; everything else is in rxd-daemon.
#![forbid(unsafe_code)]

use clap::Parser;
use std::path::PathBuf;

/// rxd: a system-container manager daemon speaking LXD's REST API.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop rxd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
