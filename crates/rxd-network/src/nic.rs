//! A container NIC's veth pair on the host side, made the one way both the daemon (hot-plug)
//! and the container helper (start) make it: the pair, the host end's IPv6 switched off and
//! its limits set; then, as a separate step once its filters are in place, the host end a
//! port of its bridge and up.

use crate::error::{NetworkError, Result};
use crate::nl::Netlink;
use crate::sysctl::{set_iface_sysctl, IfaceSysctl};
use rxd_core::launch::{NicPlan, NicVeth};
use rxd_core::network::config::IfName;
use rxd_core::network::mac::Mac;
use std::os::fd::BorrowedFd;

/// One veth pair to make.
pub struct Veth<'a> {
    /// The host end's name.
    pub host: &'a IfName,
    /// The container's end: its name (where it is made) and MAC.
    pub peer: &'a IfName,
    pub mac: Mac,
    pub mtu: u32,
    /// Rates in bits per second the container receives and sends at.
    pub ingress: Option<u64>,
    pub egress: Option<u64>,
    /// Where the container's end is made: this network namespace when `None`.
    pub peer_netns: Option<BorrowedFd<'a>>,
}

/// Makes the pair, both ends down: the host end with no IPv6 of its own, no router
/// advertisements taken, and its limits. On an error nothing is left (the host end, and the
/// peer with it, deleted).
pub fn make_veth(nl: &mut Netlink, v: &Veth<'_>) -> Result<()> {
    nl.create_veth_into(v.host, v.peer, v.mac, v.mtu, v.peer_netns)?;
    let rest = (|| {
        if std::path::Path::new("/proc/sys/net/ipv6/conf")
            .join(v.host.as_str())
            .exists()
        {
            set_iface_sysctl(v.host, IfaceSysctl::Ipv6DisableIpv6, 1)?;
            set_iface_sysctl(v.host, IfaceSysctl::Ipv6AcceptRa, 0)?;
        }
        crate::tc::set_limits(v.host, v.ingress, v.egress)
    })();
    if rest.is_err() {
        let _ = nl.delete_link(v.host);
    }
    rest
}

/// The pair of a launch plan's bridged NIC (`nic`, with its `veth`), its container end made in
/// `netns` under the NIC's inside name.
pub fn make_planned_veth(
    nl: &mut Netlink,
    nic: &NicPlan,
    v: &NicVeth,
    netns: BorrowedFd<'_>,
) -> Result<()> {
    let invalid = |what: &str, value: &str, e: &dyn std::fmt::Display| NetworkError::Tool {
        tool: "NIC plan",
        detail: format!("{what} {value:?}: {e}"),
    };
    let host = IfName::parse(&nic.host).map_err(|e| invalid("host end", &nic.host, &e))?;
    let peer = IfName::parse(&nic.name).map_err(|e| invalid("name", &nic.name, &e))?;
    let mac: Mac = v.mac.parse().map_err(|e| invalid("MAC", &v.mac, &e))?;
    make_veth(
        nl,
        &Veth {
            host: &host,
            peer: &peer,
            mac,
            mtu: v.mtu,
            ingress: v.ingress,
            egress: v.egress,
            peer_netns: Some(netns),
        },
    )
}

/// The host end `host` a port of `bridge` (isolated or not), then up.
pub fn join_bridge(nl: &mut Netlink, host: &IfName, bridge: &IfName, isolated: bool) -> Result<()> {
    nl.set_master(host, bridge)?;
    if isolated {
        nl.set_port_isolated(host, true)?;
    }
    nl.set_up(host)
}
