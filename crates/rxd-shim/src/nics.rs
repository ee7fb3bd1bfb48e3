//! Bridged NICs of a starting container: each veth pair is made once the container's network
//! namespace exists (the init created, not yet started), its container end made there under
//! its inside name, so no link crosses namespaces (a move waits for RCU grace periods in the
//! kernel, tens of milliseconds). The host ends join their bridges only after the daemon's
//! go-ahead, a `go` line after the plan on stdin, which it writes once the NICs' filters are
//! in place; without it (EOF) the start fails and nothing was attached.

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use rxd_core::launch::{LaunchPlan, NicPlan, NicVeth};
use rxd_core::network::config::IfName;
use std::io::BufRead;
use std::os::fd::AsFd;

fn veths(plan: &LaunchPlan) -> impl Iterator<Item = (&NicPlan, &NicVeth)> {
    plan.nics
        .iter()
        .filter_map(|n| n.veth.as_ref().map(|v| (n, v)))
}

/// The inside names of the NICs `make` makes, for the init to bring up before it execs.
pub fn inside_names(plan: &LaunchPlan) -> Result<Vec<IfName>> {
    veths(plan)
        .map(|(n, _)| IfName::parse(&n.name).with_context(|| format!("NIC name {:?}", n.name)))
        .collect()
}

/// Makes the plan's veth pairs, their container ends inside the network namespace of `init`.
/// Host ends are down and on no bridge until `attach`.
pub fn make(plan: &LaunchPlan, init: Pid) -> Result<()> {
    if veths(plan).next().is_none() {
        return Ok(());
    }
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", init.as_raw()))
        .context("opening the container's network namespace")?;
    let mut nl = rxd_network::Netlink::open()?;
    for (nic, v) in veths(plan) {
        rxd_network::make_planned_veth(&mut nl, nic, v, netns.as_fd())
            .with_context(|| format!("making NIC {:?}", nic.name))?;
    }
    Ok(())
}

/// Waits for the daemon's go-ahead on `gate`, then makes each host end a port of its bridge
/// and brings it up.
pub fn attach(plan: &LaunchPlan, gate: &mut impl BufRead) -> Result<()> {
    if veths(plan).next().is_none() {
        return Ok(());
    }
    let mut line = String::new();
    std::io::Read::take(&mut *gate, 16)
        .read_line(&mut line)
        .context("waiting for the NICs' filters")?;
    if line.trim_end() != "go" {
        bail!("the NICs' filters were not applied");
    }
    let mut nl = rxd_network::Netlink::open()?;
    for (nic, v) in veths(plan) {
        let host =
            IfName::parse(&nic.host).with_context(|| format!("NIC host end {:?}", nic.host))?;
        let bridge = IfName::parse(&v.bridge).with_context(|| format!("bridge {:?}", v.bridge))?;
        rxd_network::join_bridge(&mut nl, &host, &bridge, v.isolated)
            .with_context(|| format!("attaching NIC {:?} to bridge {}", nic.name, v.bridge))?;
    }
    Ok(())
}
