//! A NIC's bandwidth limits on its host end, through Debian's `/usr/sbin/tc` (as LXD sets them):
//! what the container receives is shaped by an HTB class at the host end's root (the host end
//! sends it), what it sends is policed at the host end's ingress. Fixed argv, no shell, an
//! empty environment; rates come in as numbers.

use crate::error::{NetworkError, Result};
use rxd_core::network::config::IfName;
use std::process::{Command, Stdio};

const TC: &str = "/usr/sbin/tc";

fn tc(args: &[&str]) -> Result<()> {
    let out = Command::new(TC)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetworkError::Tool {
            tool: TC,
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut detail = String::from_utf8_lossy(&out.stderr).into_owned();
    detail.truncate(1024);
    Err(NetworkError::Tool {
        tool: TC,
        detail: format!("{}: {}", args.join(" "), detail.trim()),
    })
}

/// Limits `host` (a NIC's host end): `ingress` is the rate at which the container receives,
/// `egress` the rate at which it may send, both in bits per second.
pub fn set_limits(host: &IfName, ingress: Option<u64>, egress: Option<u64>) -> Result<()> {
    let dev = host.as_str();
    if let Some(rate) = ingress {
        let rate = format!("{rate}bit");
        tc(&[
            "qdisc", "add", "dev", dev, "root", "handle", "1:0", "htb", "default", "10",
        ])?;
        tc(&[
            "class", "add", "dev", dev, "parent", "1:0", "classid", "1:10", "htb", "rate", &rate,
        ])?;
    }
    if let Some(rate) = egress {
        let rate = format!("{rate}bit");
        tc(&["qdisc", "add", "dev", dev, "handle", "ffff:0", "ingress"])?;
        tc(&[
            "filter", "add", "dev", dev, "parent", "ffff:0", "protocol", "all", "u32", "match",
            "u32", "0", "0", "police", "rate", &rate, "burst", "1024k", "mtu", "64kb", "drop",
        ])?;
    }
    Ok(())
}
