//! The host side of rxd's managed bridges, over rtnetlink (no shell, no `ip`): bridges and veth
//! pairs (`link`), their addresses (`addr`), interface state as LXD reports it (`state`), the
//! per-interface sysctls rxd owns (`sysctl`), threads that work inside another network
//! namespace (`netns`), rxd's nftables tables applied, removed and checked against other
//! tables' drop policies (`firewall`, through `nft`), a container NIC's veth pair as the daemon
//! and the container helper make it (`nic`), and one supervised dnsmasq per network with the
//! files it reads (`dnsmasq`). It knows nothing of HTTP, the store or the daemon: it is
//! handed typed names, MACs, CIDRs and rulesets from `rxd_core::network`.
//!
//! Every [`Netlink`] socket acts on the network namespace of the thread that opened it, so the
//! same calls serve the host's namespace and, through [`in_netns`], a container's or a test's.
#![forbid(unsafe_code)]

mod addr;
pub mod dnsmasq;
mod error;
pub mod firewall;
mod link;
mod netns;
mod nic;
mod nl;
mod route;
mod state;
mod sysctl;
pub mod tc;

pub use addr::{AddrChanges, AddrScope, Address, IFA_F_NODAD};
pub use error::{NetworkError, Result};
pub use link::{Bridge, LinkInfo, LinkRef};
pub use netns::{in_netns, new_netns};
pub use nic::{join_bridge, make_planned_veth, make_veth, Veth};
pub use nl::Netlink;
pub use state::{
    instance_interfaces, scope_of, BridgeId, BridgeState, Counters, IfaceFlags, IfaceState,
    InstanceIface, LinkPeer, LinkState, LinkType, Scope, MAX_ADDRESSES, MAX_LINKS,
};
pub use sysctl::{iface_sysctl, set_iface_sysctl, IfaceSysctl};
