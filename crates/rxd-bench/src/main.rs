//! `rxd-bench`: measures the real `rxd` binary (from the same target directory) on this machine:
//! `GET /1.0` latency over the unix socket and over HTTPS with keep-alive, time from exec to the
//! first answer, resident memory, and container create / start / forced-stop / delete times with
//! the busybox image (and the memory of each container's supervising `rxd-shim`). Prints a
//! table and, with `--json`, a JSON report.
#![forbid(unsafe_code)]

use anyhow::Context;
use base64::Engine;
use clap::Parser;
use rxd_client::{Client, Method};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Requests per latency measurement.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Start-up measurements.
    #[arg(long, default_value_t = 10)]
    starts: usize,
    /// Containers to create, start, stop and delete (0 to skip).
    #[arg(long, default_value_t = 10)]
    containers: usize,
    /// Also print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

async fn latency(client: &Client, n: usize) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..100 {
        client.get("/1.0").await?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.get("/1.0").await?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(v)
}

/// Exec `rxd` on `state` and time until `GET /1.0` answers on its socket.
async fn startup_once(state: &std::path::Path) -> anyhow::Result<Duration> {
    let socket = state.join("unix.socket");
    let t = Instant::now();
    let mut child = Command::new(rxd_testkit::bin("rxd"))
        .arg("--dir")
        .arg(state)
        .arg("--log")
        .arg("warn")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let elapsed = loop {
        if Client::unix(&socket).get("/1.0").await.is_ok() {
            break t.elapsed();
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(20), "rxd did not start");
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    // SIGTERM, so the next start finds no stale socket.
    Command::new("kill").arg(child.id().to_string()).status()?;
    let _ = child.wait();
    Ok(elapsed)
}

/// Run one request that answers with an operation and wait for it; the time of both.
async fn timed_op(
    client: &Client,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let r = client.request(method, path, Some(&body)).await?;
    anyhow::ensure!(r.status == 202, "{path}: {}", r.status);
    let op = r.envelope()?.metadata;
    let id = op["id"].as_str().context("operation id")?;
    let done = client.get(&format!("/1.0/operations/{id}/wait")).await?;
    anyhow::ensure!(done["status"] == "Success", "{path}: {}", done["err"]);
    Ok(t.elapsed())
}

/// Resident memory of every running `rxd-shim` (the per-container supervisors).
fn shim_rss_kib() -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "rxd-shim")
        })
        .filter_map(|pid| rss_kib(pid).ok())
        .collect()
}

struct ContainerTimes {
    create: Vec<Duration>,
    start: Vec<Duration>,
    stop: Vec<Duration>,
    delete: Vec<Duration>,
    shim_kib: Vec<u64>,
}

async fn containers(d: &rxd_testkit::TestDaemon, n: usize) -> anyhow::Result<ContainerTimes> {
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("bb.tar.gz");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/make-busybox-image.sh");
    let built = Command::new("bash")
        .arg(script)
        .arg(&image)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(built.success(), "could not build the busybox image");
    let unix = d.unix();
    let r = unix
        .send_file(
            Method::POST,
            "/1.0/images",
            &[],
            &image,
            std::sync::Arc::new(|_| {}),
        )
        .await?;
    let op = r.envelope()?.metadata;
    let done = unix
        .get(&format!(
            "/1.0/operations/{}/wait",
            op["id"].as_str().context("operation id")?
        ))
        .await?;
    let fp = done["metadata"]["fingerprint"]
        .as_str()
        .context("fingerprint")?
        .to_owned();
    let mut t = ContainerTimes {
        create: Vec::new(),
        start: Vec::new(),
        stop: Vec::new(),
        delete: Vec::new(),
        shim_kib: Vec::new(),
    };
    for i in 0..n {
        let name = format!("bench{i}");
        let url = format!("/1.0/instances/{name}");
        let body = json!({"name": name, "source": {"type": "image", "fingerprint": fp}});
        t.create
            .push(timed_op(&unix, Method::POST, "/1.0/instances", body).await?);
        let state = format!("{url}/state");
        t.start
            .push(timed_op(&unix, Method::PUT, &state, json!({"action": "start"})).await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.shim_kib.extend(shim_rss_kib());
        t.stop.push(
            timed_op(
                &unix,
                Method::PUT,
                &state,
                json!({"action": "stop", "force": true}),
            )
            .await?,
        );
        t.delete
            .push(timed_op(&unix, Method::DELETE, &url, json!({})).await?);
    }
    for v in [&mut t.create, &mut t.start, &mut t.stop, &mut t.delete] {
        v.sort();
    }
    t.shim_kib.sort();
    Ok(t)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(nix_is_root(), "run as root: rxd is a root daemon");

    // Cold: an empty state dir (the keypair is generated and synced to disk). Warm: a restart.
    let mut cold = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..args.starts {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        cold.push(startup_once(&state).await?);
        starts.push(startup_once(&state).await?);
    }
    cold.sort();
    starts.sort();

    let d = rxd_testkit::TestDaemon::start().await;
    let pid = d.pid().context("pid")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_kib = rss_kib(pid)?;

    let unix = d.unix();
    let id = rxd_testkit::client_identity("bench");
    let body =
        json!({"certificate": base64::engine::general_purpose::STANDARD.encode(&id.cert_der)});
    let r = unix
        .request(Method::POST, "/1.0/certificates", Some(&body))
        .await?;
    anyhow::ensure!(r.status == 201, "could not trust the bench certificate");
    let https = d.https(Some(&id));
    anyhow::ensure!(https.get("/1.0").await?["auth"] == "trusted");

    let u = latency(&unix, args.requests).await?;
    let h = latency(&https, args.requests).await?;
    let after_kib = rss_kib(pid)?;
    let ct = if args.containers > 0 {
        Some(containers(&d, args.containers).await?)
    } else {
        None
    };

    let report = json!({
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "startup_cold_ms": {"median": ms(percentile(&cold, 0.5)), "runs": cold.len()},
        "startup_ms": {"median": ms(percentile(&starts, 0.5)), "min": ms(starts[0]), "max": ms(starts[starts.len() - 1]), "runs": starts.len()},
        "unix_get_1_0_us": {"median": ms(percentile(&u, 0.5)) * 1000.0, "p99": ms(percentile(&u, 0.99)) * 1000.0, "requests": u.len()},
        "https_keepalive_get_1_0_us": {"median": ms(percentile(&h, 0.5)) * 1000.0, "p99": ms(percentile(&h, 0.99)) * 1000.0, "requests": h.len()},
        "rss_kib": {"idle": idle_kib, "after_requests": after_kib},
    });
    println!("{:<44} {:>12}", "measure", "value");
    println!(
        "{:<44} {:>9.2} ms",
        "start-up to first answer, restart (median)",
        report["startup_ms"]["median"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<44} {:>9.2} ms",
        "start-up, first ever (keypair made) (median)",
        report["startup_cold_ms"]["median"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<44} {:>9.1} us",
        "GET /1.0 over the unix socket (median)",
        report["unix_get_1_0_us"]["median"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<44} {:>9.1} us",
        "GET /1.0 over the unix socket (p99)",
        report["unix_get_1_0_us"]["p99"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<44} {:>9.1} us",
        "GET /1.0 over HTTPS, keep-alive (median)",
        report["https_keepalive_get_1_0_us"]["median"]
            .as_f64()
            .unwrap_or(0.0)
    );
    println!(
        "{:<44} {:>9.1} us",
        "GET /1.0 over HTTPS, keep-alive (p99)",
        report["https_keepalive_get_1_0_us"]["p99"]
            .as_f64()
            .unwrap_or(0.0)
    );
    println!("{:<44} {:>9} KiB", "resident memory, idle", idle_kib);
    println!(
        "{:<44} {:>9} KiB",
        format!(
            "resident memory after {} requests",
            2 * (args.requests + 100)
        ),
        after_kib
    );
    let mut report = report;
    if let Some(ct) = &ct {
        let med = |v: &[Duration]| ms(percentile(v, 0.5));
        report["containers_ms"] = json!({
            "create_median": med(&ct.create), "start_median": med(&ct.start),
            "force_stop_median": med(&ct.stop), "delete_median": med(&ct.delete),
            "runs": ct.create.len(),
        });
        report["shim_rss_kib_median"] = json!(ct.shim_kib.get(ct.shim_kib.len() / 2));
        for (label, v) in [
            ("container create, busybox image (median)", &ct.create),
            ("container start (median)", &ct.start),
            ("container forced stop (median)", &ct.stop),
            ("container delete (median)", &ct.delete),
        ] {
            println!("{label:<44} {:>9.2} ms", med(v));
        }
        if let Some(kib) = ct.shim_kib.get(ct.shim_kib.len() / 2) {
            println!(
                "{:<44} {:>9} KiB",
                "supervisor (rxd-shim) per container", kib
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
