//! The workloads. Every figure comes from the real server over a real socket or real TLS; the
//! client side is this process (multi-threaded tokio), so it shares the machine with the server
//! the same way for every server measured.

use crate::report::{median, percentile, Report};
use anyhow::{bail, ensure, Context};
use clap::Args;
use rxd_client::{Client, Method};
use rxd_tls::client::ServerTrust;
use rxd_tls::KeyPairFiles;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ServerArgs {
    /// A name for the report (`rxd`, `lxd`).
    #[arg(long)]
    label: String,
    /// `HOST:PORT` of the HTTPS listener.
    #[arg(long)]
    https: String,
    /// The unix socket.
    #[arg(long)]
    socket: PathBuf,
    /// Directory with `client.crt` and `client.key`, trusted by the server.
    #[arg(long)]
    client: PathBuf,
    /// The server's certificate (PEM), pinned.
    #[arg(long)]
    server_cert: PathBuf,
    /// The daemon's PID, for its resident memory.
    #[arg(long)]
    pid: u32,
    /// Image alias on the server for the container workloads.
    #[arg(long, default_value = "bb")]
    image: String,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Sequential requests for the unix-socket latency.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Containers to create, start, exec in, stop and delete.
    #[arg(long, default_value_t = 5)]
    containers: usize,
    /// Instances defined for the `recursion=1` listing.
    #[arg(long, default_value_t = 100)]
    instances: usize,
    /// Idle TCP connections one other address (`--flood-from`) holds open during the flood
    /// workload (0: skip it).
    #[arg(long, default_value_t = 4200)]
    flood: usize,
    /// The flooding address: a loopback address other than the trusted client's 127.0.0.1.
    #[arg(long, default_value = "127.0.0.2")]
    flood_from: std::net::IpAddr,
    /// Write the report here (JSON).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct StartupArgs {
    /// A name for the report (`rxd`, `lxd`).
    #[arg(long)]
    label: String,
    /// What the state holds (`empty`, `certs100k`): names the metrics.
    #[arg(long)]
    tag: String,
    /// The socket the daemon answers on.
    #[arg(long)]
    socket: PathBuf,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds to let the daemon settle before reading its memory.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    #[arg(long)]
    out: PathBuf,
    /// The daemon command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
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

/// The CPU time the process has used, all its threads (ended ones too), user and system, in
/// microseconds: fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks (USER_HZ, 100 on Linux).
fn cpu_us(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("unreadable stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    Ok(ticks as f64 * 10_000.0)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Target {
    host: String,
    port: u16,
    pin: [u8; 32],
    identity: KeyPairFiles,
}

impl Target {
    fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::https(
            &self.host,
            self.port,
            ServerTrust::Pinned(self.pin),
            Some(&self.identity),
        )?)
    }
}

/// One `GET /1.0` of a throughput workload: the whole answer is read and must be a 200, but
/// its JSON is not parsed. The load generator shares the server's cores, and parsing every
/// answer would take CPU time from whichever server is measured.
async fn answered(c: &Client) -> Result<(), rxd_client::ClientError> {
    let r = c.request(Method::GET, "/1.0", None).await?;
    if r.status != 200 {
        return Err(rxd_client::ClientError::Http(format!(
            "GET /1.0 answered {}",
            r.status
        )));
    }
    Ok(())
}

/// `concurrency` tasks, each with its own kept-alive connection, for `seconds`: requests per
/// second and the latency distribution.
async fn keepalive(t: &Arc<Target>, concurrency: usize, seconds: u64) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let c = t.client()?;
        c.get("/1.0").await?;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let s = Instant::now();
                answered(&c).await?;
                lat.push(s.elapsed());
            }
            Ok::<_, rxd_client::ClientError>(lat)
        }));
    }
    summarize(tasks, seconds).await
}

/// `concurrency` tasks, each opening a new TCP connection and doing a full TLS handshake (with
/// the client certificate) for every request.
async fn new_connections(
    t: &Arc<Target>,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let s = Instant::now();
                let c = t
                    .client()
                    .map_err(|e| rxd_client::ClientError::Http(format!("client: {e}")))?;
                answered(&c).await?;
                lat.push(s.elapsed());
            }
            Ok::<_, rxd_client::ClientError>(lat)
        }));
    }
    summarize(tasks, seconds).await
}

/// Connections the flood holds open now.
static FLOOD_HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One slot of the flood: connect from `from` without ever starting TLS, hold the connection
/// until the server closes it, and connect again a second later (an attacker keeps the flood up).
async fn flood_slot(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncReadExt;
    while !*stop.borrow() {
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        let connected = match socket.and_then(|s| s.bind((from, 0).into()).map(|()| s)) {
            Ok(s) => tokio::time::timeout(Duration::from_secs(5), s.connect(to)).await,
            Err(_) => return,
        };
        if let Ok(Ok(mut conn)) = connected {
            FLOOD_HELD.fetch_add(1, Ordering::Relaxed);
            let mut stop = stop.clone();
            let mut buf = [0u8; 512];
            tokio::select! {
                _ = async { while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {} } => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            FLOOD_HELD.fetch_sub(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A trusted client's latency, a new TLS connection per request (what a flood of idle
/// connections competes with), `n` requests one after the other, while `flood` connections from
/// `from` are held open. A request not answered within 5 s counts as failed.
async fn under_flood(
    t: &Arc<Target>,
    from: std::net::IpAddr,
    flood: usize,
    n: usize,
) -> anyhow::Result<Value> {
    use std::sync::atomic::Ordering;
    let to: std::net::SocketAddr = tokio::net::lookup_host((t.host.as_str(), t.port))
        .await?
        .next()
        .context("server address")?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let slots: Vec<_> = (0..flood)
        .map(|_| tokio::spawn(flood_slot(from, to, stop.clone())))
        .collect();
    // Let the flood build up: every slot has tried once.
    if flood > 0 {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let held_before = FLOOD_HELD.load(Ordering::Relaxed);
    let (mut lat, mut failed) = (Vec::new(), 0usize);
    for _ in 0..n {
        let s = Instant::now();
        let ok = match t.client() {
            Ok(c) => matches!(
                tokio::time::timeout(Duration::from_secs(5), answered(&c)).await,
                Ok(Ok(()))
            ),
            Err(_) => false,
        };
        if ok {
            lat.push(s.elapsed());
        } else {
            failed += 1;
        }
    }
    let held_after = FLOOD_HELD.load(Ordering::Relaxed);
    stop_tx.send_replace(true);
    for slot in slots {
        let _ = slot.await;
    }
    lat.sort();
    let (p50, p99) = if lat.is_empty() {
        (Value::Null, Value::Null)
    } else {
        (
            json!(us(percentile(&lat, 0.5))),
            json!(us(percentile(&lat, 0.99))),
        )
    };
    Ok(json!({
        "p50_us": p50, "p99_us": p99, "failed": failed,
        "held": held_before.min(held_after),
    }))
}

async fn summarize(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>, rxd_client::ClientError>>>,
    seconds: u64,
) -> anyhow::Result<Value> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort();
    ensure!(!all.is_empty(), "no request completed");
    Ok(json!({
        "rps": all.len() as f64 / seconds as f64,
        "p50_us": us(percentile(&all, 0.5)),
        "p99_us": us(percentile(&all, 0.99)),
        "requests": all.len(),
    }))
}

async fn sequential(c: &Client, path: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..n.min(100) {
        c.get(path).await?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        c.get(path).await?;
        v.push(s.elapsed());
    }
    v.sort();
    Ok(v)
}

/// A request answered with an operation, and the wait for it: the time of both, and the
/// finished operation.
pub async fn timed_op(
    c: &Client,
    method: Method,
    path: &str,
    body: Value,
) -> anyhow::Result<(Duration, Value)> {
    let s = Instant::now();
    let r = c.request(method, path, Some(&body)).await?;
    ensure!(
        r.status == 202,
        "{path}: {} {:?}",
        r.status,
        r.envelope().map(|e| e.error)
    );
    let op = r.envelope()?.metadata;
    let id = op["id"].as_str().context("operation id")?;
    let done = c.get(&format!("/1.0/operations/{id}/wait")).await?;
    ensure!(done["status"] == "Success", "{path}: {}", done["err"]);
    Ok((s.elapsed(), done))
}

pub async fn create(c: &Client, name: &str, image: &str) -> anyhow::Result<Duration> {
    let body = json!({"name": name, "source": {"type": "image", "alias": image}});
    Ok(timed_op(c, Method::POST, "/1.0/instances", body).await?.0)
}

pub async fn delete(c: &Client, name: &str) -> anyhow::Result<Duration> {
    Ok(timed_op(
        c,
        Method::DELETE,
        &format!("/1.0/instances/{name}"),
        json!({}),
    )
    .await?
    .0)
}

/// Create, start, exec `true` in, force-stop and delete `n` containers, one at a time.
async fn containers(c: &Client, image: &str, n: usize) -> anyhow::Result<Value> {
    let (mut cr, mut st, mut ex, mut sp, mut de) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let name = format!("bench-c{i}");
        let state = format!("/1.0/instances/{name}/state");
        cr.push(create(c, &name, image).await?);
        st.push(
            timed_op(c, Method::PUT, &state, json!({"action": "start"}))
                .await?
                .0,
        );
        // exec of `true`, without websockets (its output is not wanted).
        let body = json!({"command": ["true"], "wait-for-websocket": false, "interactive": false,
            "record-output": false, "environment": {}});
        let (took, done) = timed_op(
            c,
            Method::POST,
            &format!("/1.0/instances/{name}/exec"),
            body,
        )
        .await?;
        ensure!(done["metadata"]["return"] == 0, "exec: {done}");
        ex.push(took);
        sp.push(
            timed_op(
                c,
                Method::PUT,
                &state,
                json!({"action": "stop", "force": true}),
            )
            .await?
            .0,
        );
        de.push(delete(c, &name).await?);
    }
    let m = |mut v: Vec<Duration>| {
        v.sort();
        ms(percentile(&v, 0.5))
    };
    Ok(json!({
        "container_create_ms": m(cr), "container_start_ms": m(st), "exec_true_ms": m(ex),
        "container_stop_ms": m(sp), "container_delete_ms": m(de),
    }))
}

pub async fn server(a: ServerArgs) -> anyhow::Result<()> {
    let (host, port) = a.https.rsplit_once(':').context("--https HOST:PORT")?;
    let pem = std::fs::read_to_string(&a.server_cert)?;
    let der = rxd_tls::cert::from_pem(&pem).context("server certificate PEM")?;
    let target = Arc::new(Target {
        host: host.trim_matches(|c| c == '[' || c == ']').to_owned(),
        port: port.parse()?,
        pin: rxd_tls::cert::fingerprint_bytes(&der),
        identity: KeyPairFiles::load(&a.client.join("client.crt"), &a.client.join("client.key"))?,
    });
    let probe = target.client()?.get("/1.0").await?;
    ensure!(
        probe["auth"] == "trusted",
        "the client certificate is not trusted by the server"
    );
    let unix = Client::unix(&a.socket);
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("rss_idle_kib", json!(rss_kib(a.pid)?));
    eprintln!("[{}] keep-alive HTTPS", a.label);
    let mut served = 0u64;
    // The server's own CPU time per request as well: the load generator shares the machine's
    // cores, so throughput alone also measures the client.
    let per_request = |before: f64, r: &Value| -> anyhow::Result<Value> {
        let n = r["requests"].as_f64().unwrap_or(0.0).max(1.0);
        Ok(json!((cpu_us(a.pid)? - before) / n))
    };
    for conc in [8, 64] {
        let before = cpu_us(a.pid)?;
        let r = keepalive(&target, conc, a.seconds).await?;
        put(
            &format!("keepalive_{conc}_server_cpu_us"),
            per_request(before, &r)?,
        );
        served += r["requests"].as_u64().unwrap_or(0);
        put(&format!("keepalive_{conc}_rps"), r["rps"].clone());
        put(&format!("keepalive_{conc}_p50_us"), r["p50_us"].clone());
        put(&format!("keepalive_{conc}_p99_us"), r["p99_us"].clone());
    }
    eprintln!("[{}] new connection per request", a.label);
    let before = cpu_us(a.pid)?;
    let r = new_connections(&target, 8, a.seconds).await?;
    put("newconn_8_server_cpu_us", per_request(before, &r)?);
    served += r["requests"].as_u64().unwrap_or(0);
    put("newconn_8_rps", r["rps"].clone());
    put("newconn_8_p50_us", r["p50_us"].clone());
    put("newconn_8_p99_us", r["p99_us"].clone());
    if a.flood > 0 {
        eprintln!(
            "[{}] new connection per request while {} floods with {} idle connections",
            a.label, a.flood_from, a.flood
        );
        // The same requests without the flood, to compare with.
        let r = under_flood(&target, a.flood_from, 0, 200).await?;
        put("newconn_seq_p50_us", r["p50_us"].clone());
        put("newconn_seq_p99_us", r["p99_us"].clone());
        let r = under_flood(&target, a.flood_from, a.flood, 200).await?;
        let f = a.flood;
        put(&format!("flood_{f}_newconn_p50_us"), r["p50_us"].clone());
        put(&format!("flood_{f}_newconn_p99_us"), r["p99_us"].clone());
        put(&format!("flood_{f}_failed"), r["failed"].clone());
        put(&format!("flood_{f}_held"), r["held"].clone());
    }
    eprintln!("[{}] unix socket latency", a.label);
    let v = sequential(&unix, "/1.0", a.requests).await?;
    served += v.len() as u64 + 100;
    put("unix_p50_us", json!(us(percentile(&v, 0.5))));
    put("unix_p99_us", json!(us(percentile(&v, 0.99))));
    // Top up to 100,000 requests in all, then read the memory.
    let mut topped = 0u64;
    while served + topped < 100_000 {
        unix.get("/1.0").await?;
        topped += 1;
    }
    put("requests_before_rss", json!(served + topped));
    put("rss_after_100k_requests_kib", json!(rss_kib(a.pid)?));

    eprintln!("[{}] {} instances, recursion=1", a.label, a.instances);
    for i in 0..a.instances {
        create(&unix, &format!("bench-i{i}"), &a.image).await?;
    }
    let v = sequential(&unix, "/1.0/instances?recursion=1", 200).await?;
    put(
        "instances_recursion1_p50_ms",
        json!(ms(percentile(&v, 0.5))),
    );
    put(
        "instances_recursion1_p99_ms",
        json!(ms(percentile(&v, 0.99))),
    );
    for i in 0..a.instances {
        delete(&unix, &format!("bench-i{i}")).await?;
    }
    eprintln!("[{}] containers", a.label);
    if a.containers > 0 {
        if let Value::Object(c) = containers(&unix, &a.image, a.containers).await? {
            for (k, v) in c {
                put(&k, v);
            }
        }
    }
    Report::new(&a.label, m).write(&a.out)
}

/// Exec the daemon, poll its socket until `GET /1.0` answers, let it settle, read its memory,
/// stop it with SIGTERM and wait for it to exit.
pub async fn startup(a: StartupArgs) -> anyhow::Result<()> {
    let (mut times, mut rss) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        let s = Instant::now();
        let mut child = Command::new(&a.command[0])
            .args(&a.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("running {:?}", a.command))?;
        let took = loop {
            if Client::unix(&a.socket).get("/1.0").await.is_ok() {
                break s.elapsed();
            }
            if let Some(status) = child.try_wait()? {
                bail!("{:?} exited: {status}", a.command);
            }
            ensure!(s.elapsed() < Duration::from_secs(120), "no answer in 120 s");
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        times.push(took);
        tokio::time::sleep(Duration::from_secs(a.settle)).await;
        rss.push(rss_kib(child.id())?);
        Command::new("kill").arg(child.id().to_string()).status()?;
        let _ = child.wait();
        // The socket file is removed on a clean exit; give the next start a clean slate.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    times.sort();
    let mut m = serde_json::Map::new();
    m.insert(
        format!("startup_{}_ms", a.tag),
        json!(ms(percentile(&times, 0.5))),
    );
    m.insert(format!("rss_idle_{}_kib", a.tag), json!(median(&rss)));
    Report::new(&a.label, m).write(&a.out)
}

/// Add `count` trusted client certificates to a stopped rxd's database, in one transaction.
/// They share one real certificate's PEM and validity; the fingerprints are distinct.
pub fn seed_rxd(dir: &Path, count: usize) -> anyhow::Result<()> {
    let store = rxd_store::Store::open(&dir.join("rxd.db"))?;
    let tmp = tempfile::tempdir()?;
    let id = KeyPairFiles::load_or_generate(
        &tmp.path().join("c.crt"),
        &tmp.path().join("c.key"),
        rxd_tls::Role::Client,
        "seed",
        "",
    )?;
    let info = rxd_tls::cert::describe(&id.cert_der).context("describe")?;
    let rows: Vec<rxd_store::CertificateRow> = (0..count)
        .map(|i| rxd_store::CertificateRow {
            fingerprint: format!("{:064x}", i + 1),
            name: format!("seed-{i}"),
            kind: "client".into(),
            restricted: false,
            projects: Vec::new(),
            certificate_pem: id.cert_pem.clone(),
            not_before: info.not_before,
            not_after: info.not_after,
            created_at: 0,
        })
        .collect();
    store.insert_certificates(&rows)?;
    Ok(())
}
