//! The bridged workload: a container whose default profile gives it one NIC on a managed bridge
//! is started, and then watched through the server's own state API until its DHCP client holds
//! a lease. Both figures are what a user of either server sees, so the same code measures rxd
//! and LXD; the bridge, its dnsmasq and the container's `udhcpc` are the servers' own.

use crate::report::{median, Report};
use crate::workloads::{create, delete, ms, timed_op};
use anyhow::{ensure, Context};
use clap::Args;
use rxd_client::{Client, Method};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BridgedArgs {
    /// A name for the report (`rxd`, `lxd`).
    #[arg(long)]
    label: String,
    /// The server's unix socket. A pathname socket reaches a daemon in another network
    /// namespace, so this client can stay in the host's.
    #[arg(long)]
    socket: PathBuf,
    /// Image alias on the server: one whose init runs a DHCP client on eth0
    /// (`scripts/make-busybox-image.sh`).
    #[arg(long, default_value = "bb")]
    image: String,
    /// Rounds, each with a fresh container (a new MAC, so a new lease).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Milliseconds between the end of one state read and the next while waiting for the lease.
    #[arg(long, default_value_t = 15)]
    poll_ms: u64,
    /// Seconds to wait for a lease before the round fails.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Write the report here (JSON).
    #[arg(long)]
    out: PathBuf,
}

/// The container's global IPv4 address on `eth0` in an instance state (LXD's shape, which rxd
/// answers too), if it has one.
pub fn global_ipv4(state: &Value) -> Option<&str> {
    state["network"]["eth0"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["family"] == "inet" && a["scope"] == "global")
        .and_then(|a| a["address"].as_str())
}

/// Whether a profile's devices include a NIC: without one no lease would ever come, and the
/// workload says so at once instead of timing out in every round.
fn has_nic(profile: &Value) -> bool {
    profile["devices"]
        .as_object()
        .is_some_and(|d| d.values().any(|dev| dev["type"] == "nic"))
}

/// One round's figures.
struct Round {
    /// From sending the start request to its operation's success.
    start: Duration,
    /// From sending the start request to the first state that shows the lease.
    lease: Duration,
    /// State reads made while waiting, and the median time one took (the lease figure's
    /// resolution is about one read plus `poll_ms`).
    polls: usize,
    poll: Duration,
}

async fn round(c: &Client, name: &str, a: &BridgedArgs) -> anyhow::Result<Round> {
    let state = format!("/1.0/instances/{name}/state");
    let sent = Instant::now();
    let (start, _) = timed_op(c, Method::PUT, &state, json!({"action": "start"})).await?;
    let deadline = sent + Duration::from_secs(a.timeout);
    let mut reads = Vec::new();
    let lease = loop {
        let s = Instant::now();
        let now = c.get(&state).await?;
        reads.push(s.elapsed());
        if global_ipv4(&now).is_some() {
            break sent.elapsed();
        }
        ensure!(
            Instant::now() < deadline,
            "{name} has no global IPv4 on eth0 {} s after its start: is its NIC on a managed \
             bridge with DHCP? last state: {now}",
            a.timeout
        );
        tokio::time::sleep(Duration::from_millis(a.poll_ms)).await;
    };
    Ok(Round {
        start,
        lease,
        polls: reads.len(),
        poll: median(&reads),
    })
}

/// Force-stops (if running) and deletes the round's container; errors only when `strict`
/// (after a failed round, the clean-up is best effort and the round's error is the one shown).
async fn remove(c: &Client, name: &str, strict: bool) -> anyhow::Result<()> {
    let stop = timed_op(
        c,
        Method::PUT,
        &format!("/1.0/instances/{name}/state"),
        json!({"action": "stop", "force": true}),
    )
    .await;
    let deleted = delete(c, name).await;
    if strict {
        stop?;
        deleted?;
    }
    Ok(())
}

pub async fn bridged(a: BridgedArgs) -> anyhow::Result<()> {
    let c = Client::unix(&a.socket);
    let profile = c
        .get("/1.0/profiles/default")
        .await
        .context("the default profile")?;
    ensure!(
        has_nic(&profile),
        "the default profile has no NIC; give it one on a managed bridge first \
         (`profile device add default eth0 nic network=BRIDGE name=eth0`)"
    );
    let name = "bench-net";
    let mut rounds = Vec::new();
    for i in 0..a.rounds {
        create(&c, name, &a.image).await?;
        let r = match round(&c, name, &a).await {
            Ok(r) => r,
            Err(e) => {
                let _ = remove(&c, name, false).await;
                return Err(e.context(format!("[{}] round {}", a.label, i + 1)));
            }
        };
        remove(&c, name, true).await?;
        eprintln!(
            "[{}] start {:.1} ms, lease {:.1} ms ({} state reads of {:.1} ms)",
            a.label,
            ms(r.start),
            ms(r.lease),
            r.polls,
            ms(r.poll)
        );
        rounds.push(r);
    }
    ensure!(!rounds.is_empty(), "--rounds 0");
    let med = |f: fn(&Round) -> Duration| ms(median(&rounds.iter().map(f).collect::<Vec<_>>()));
    let mut m = serde_json::Map::new();
    m.insert("bridged_start_ms".into(), json!(med(|r| r.start)));
    m.insert("bridged_lease_ms".into(), json!(med(|r| r.lease)));
    // The part of the lease figure after the start returned (the container's init running its
    // DHCP client, the exchange with dnsmasq, the address showing in the state), per round.
    m.insert(
        "bridged_lease_after_start_ms".into(),
        json!(med(|r| r.lease.saturating_sub(r.start))),
    );
    m.insert("bridged_state_read_ms".into(), json!(med(|r| r.poll)));
    Report::new(&a.label, m).write(&a.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(state: Value, expected: Option<&str>) {
        assert_eq!(global_ipv4(&state), expected, "{state}");
    }

    #[test]
    fn the_lease_is_a_global_ipv4_on_eth0() {
        let addr = |family: &str, address: &str, scope: &str| json!({"family": family, "address": address, "netmask": "24", "scope": scope});
        let on = |name: &str, addresses: Vec<Value>| json!({"network": {name: {"addresses": addresses, "state": "up"}}});
        check(json!({"network": null}), None);
        check(on("eth0", vec![]), None);
        check(on("eth0", vec![addr("inet6", "fe80::1", "link")]), None);
        check(on("eth0", vec![addr("inet6", "fd42::5", "global")]), None);
        check(on("lo", vec![addr("inet", "127.0.0.1", "local")]), None);
        check(on("eth1", vec![addr("inet", "10.97.0.5", "global")]), None);
        check(
            on(
                "eth0",
                vec![
                    addr("inet6", "fe80::1", "link"),
                    addr("inet", "10.97.0.5", "global"),
                ],
            ),
            Some("10.97.0.5"),
        );
    }

    #[test]
    fn a_profile_needs_a_nic() {
        let root = json!({"path": "/", "pool": "default", "type": "disk"});
        let nic = json!({"type": "nic", "network": "br0", "name": "eth0"});
        assert!(!has_nic(&json!({"devices": {}})));
        assert!(!has_nic(&json!({"devices": {"root": root}})));
        assert!(has_nic(&json!({"devices": {"root": root, "eth0": nic}})));
    }
}
