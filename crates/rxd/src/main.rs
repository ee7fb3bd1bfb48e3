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
