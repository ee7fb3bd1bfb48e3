//! `rxd-bench`: drives any LXD-compatible server (rxd or LXD 5.0) and measures it, so the two can
//! be compared on one machine in one run (`scripts/bench-vs-lxd.sh` does that).
//!
//! - `server`: given the HTTPS address, the unix socket, a client certificate the server trusts,
//!   the server's own certificate and the daemon's PID, runs the API and container workloads
//!   (among them a trusted client's latency while another address floods the HTTPS port with
//!   idle connections) and writes a JSON report;
//! - `bridged`: starts containers with one NIC on a managed bridge and times the start and the
//!   wait for the DHCPv4 lease the server's state API then shows;
//! - `startup`: runs a daemon command, times exec to the first answer on its socket, reads its
//!   resident memory once idle, and stops it;
//! - `seed-rxd`: adds N trusted certificates to a stopped rxd's database (through `rxd-store`);
//! - `keygen`: makes a client keypair;
//! - `compare`: reads reports and prints medians and ratios.
#![forbid(unsafe_code)]

mod bridged;
mod report;
mod workloads;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Benchmarks for LXD-compatible servers (rxd, LXD 5.0)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the API and container workloads against a running server.
    Server(workloads::ServerArgs),
    /// Start containers with one bridged NIC: time the start and the wait for a DHCPv4 lease.
    Bridged(bridged::BridgedArgs),
    /// Time a daemon from exec to its first answer, and its idle memory.
    Startup(workloads::StartupArgs),
    /// Add N trusted certificates to a stopped rxd's database.
    SeedRxd {
        /// rxd's state directory.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        count: usize,
    },
    /// Make a client keypair (`client.crt`, `client.key`) in DIR.
    Keygen { dir: PathBuf },
    /// Print medians and ratios from reports: `compare --a rxd-*.json --b lxd-*.json`.
    Compare {
        /// Reports of the server under test (rxd).
        #[arg(long, num_args = 1..)]
        a: Vec<PathBuf>,
        /// Reports of the reference (LXD).
        #[arg(long, num_args = 1..)]
        b: Vec<PathBuf>,
        /// Write the merged medians and ratios here as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_descriptor_limit();
    match cli.command {
        Cmd::Server(args) => runtime()?.block_on(workloads::server(args)),
        Cmd::Bridged(args) => runtime()?.block_on(bridged::bridged(args)),
        Cmd::Startup(args) => runtime()?.block_on(workloads::startup(args)),
        Cmd::SeedRxd { dir, count } => workloads::seed_rxd(&dir, count),
        Cmd::Keygen { dir } => {
            std::fs::create_dir_all(&dir)?;
            rxd_tls::KeyPairFiles::load_or_generate(
                &dir.join("client.crt"),
                &dir.join("client.key"),
                rxd_tls::Role::Client,
                "rxd-bench",
                "",
            )
            .context("client keypair")?;
            Ok(())
        }
        Cmd::Compare { a, b, out } => report::compare(&a, &b, out.as_deref()),
    }
}

/// The flood workload holds thousands of connections: take the soft descriptor limit up to the
/// hard one (a failure only shows as a smaller flood).
fn raise_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        },
    );
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
