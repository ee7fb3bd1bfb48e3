//! Interface state as LXD reports it, read over rtnetlink: every interface of a network
//! namespace (an instance's, for `GET /1.0/instances/NAME/state`), and one link with, for a
//! bridge, its ports and bridge attributes (`GET /1.0/networks/NAME/state`).
//!
//! What is read comes from a namespace whose root may be hostile (a container's): the number of
//! links and addresses read is bounded, a link whose message does not decode or whose name is not
//! a kernel name is left out, and no attribute is trusted to have the size it should.

use crate::addr::address_from;
use crate::error::{NetworkError, Result};
use crate::link::LinkRef;
use crate::netns::in_netns;
use crate::nl::{Netlink, Replies};
use ipnet::IpNet;
use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, LinkAttribute, LinkFlags,
    LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use rxd_core::network::mac::Mac;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The most links one read accepts; a namespace with more fails the read.
pub const MAX_LINKS: usize = 4096;
/// The most addresses one read accepts, over all links; more fail the read.
pub const MAX_ADDRESSES: usize = 4096;
/// `IFNAMSIZ` less its NUL: no kernel interface name is longer.
const MAX_NAME_LEN: usize = 15;
/// The kernel's `MAX_ADDR_LEN`: no link-layer address is longer.
const MAX_HWADDR_LEN: usize = 32;
/// The longest link-layer address LXD reports for an instance: it reads them into a
/// `sockaddr_ll`, whose `sll_addr` holds 8 bytes, and reports a longer one as empty.
const MAX_LXD_HWADDR_LEN: usize = 8;

/// The interface flags LXD's `type` and `state` are made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceFlags {
    /// `IFF_UP`: administratively up.
    pub up: bool,
    /// `IFF_BROADCAST`.
    pub broadcast: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
    /// `IFF_POINTOPOINT`.
    pub point_to_point: bool,
}

impl IfaceFlags {
    fn from_link(flags: LinkFlags) -> IfaceFlags {
        IfaceFlags {
            up: flags.contains(LinkFlags::Up),
            broadcast: flags.contains(LinkFlags::Broadcast),
            loopback: flags.contains(LinkFlags::Loopback),
            point_to_point: flags.contains(LinkFlags::Pointopoint),
        }
    }

    /// LXD's `state`: `up` when administratively up, whatever the carrier.
    pub fn state(self) -> &'static str {
        if self.up {
            "up"
        } else {
            "down"
        }
    }
}

/// LXD's `type` of an interface, from its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    Broadcast,
    Loopback,
    PointToPoint,
    Unknown,
}

impl LinkType {
    /// As LXD 5.0 reports an instance's interface (`shared/netutils`): broadcast, then
    /// loopback, then point-to-point, the last flag set winning; none of them is `unknown`.
    pub fn of_instance_iface(flags: IfaceFlags) -> LinkType {
        let mut kind = LinkType::Unknown;
        if flags.broadcast {
            kind = LinkType::Broadcast;
        }
        if flags.loopback {
            kind = LinkType::Loopback;
        }
        if flags.point_to_point {
            kind = LinkType::PointToPoint;
        }
        kind
    }

    /// As LXD 5.0 reports a network (`lxd/resources` `GetNetworkState`), which checks
    /// point-to-point before loopback. The two orders differ only for a link that is both
    /// loopback and point-to-point.
    pub fn of_network(flags: IfaceFlags) -> LinkType {
        let mut kind = LinkType::Unknown;
        if flags.broadcast {
            kind = LinkType::Broadcast;
        }
        if flags.point_to_point {
            kind = LinkType::PointToPoint;
        }
        if flags.loopback {
            kind = LinkType::Loopback;
        }
        kind
    }

    /// LXD's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkType::Broadcast => "broadcast",
            LinkType::Loopback => "loopback",
            LinkType::PointToPoint => "point-to-point",
            LinkType::Unknown => "unknown",
        }
    }
}

/// LXD's `scope` of an address. LXD decides it from the address alone, not from the scope the
/// kernel holds: an address added with `scope host` on `eth0` is still `global` to LXD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Local,
    Link,
    Global,
}

impl Scope {
    /// LXD's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Link => "link",
            Scope::Global => "global",
        }
    }
}

/// The scope LXD gives an address: `local` for 127.0.0.0/8 and `::1`, `link` for
/// 169.254.0.0/16 and fe80::/10, `global` for anything else. LXD compares the text of the
/// address (`127`, `169.254`, `fe80:` prefixes); that differs from these ranges only on unused
/// IPv6 space (fe81:: to febf::, and 0127::/16 and 1270::/12, whose text starts with `127`).
pub fn scope_of(ip: IpAddr) -> Scope {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Scope::Local,
        IpAddr::V4(v4) if v4.is_link_local() => Scope::Link,
        IpAddr::V6(v6) if v6.is_loopback() => Scope::Local,
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Scope::Link,
        _ => Scope::Global,
    }
}

/// LXD's counters of an interface, from `IFLA_STATS64` (`IFLA_STATS`, widened, when the kernel
/// sends no 64-bit ones; zero when it sends neither).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub errors_received: u64,
    pub errors_sent: u64,
    pub packets_dropped_outbound: u64,
    pub packets_dropped_inbound: u64,
}

/// The link an interface is tied to (`IFLA_LINK`): for a veth, its other end; for a VLAN or a
/// macvlan, its lower device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkPeer {
    /// Its index, in the namespace `netnsid` names.
    pub ifindex: u32,
    /// `IFLA_LINK_NETNSID`: the id the reading namespace gives the namespace the peer is in
    /// (see [`Netlink::netnsid`]); `None` when the peer is in the reading namespace itself.
    pub netnsid: Option<i32>,
}

/// One interface as the kernel reports it, with what LXD's state needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceState {
    pub index: u32,
    /// The kernel's name: 1 to 15 bytes, not checked against rxd's name rules.
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, …), `None` for a device without one (loopback, a
    /// physical NIC).
    pub kind: Option<String>,
    pub flags: IfaceFlags,
    pub mtu: u32,
    /// The link-layer address, as long as the link type makes it (empty when the kernel sent
    /// none, or one longer than any link type has).
    pub hwaddr: Vec<u8>,
    /// The bridge (or bond) the interface is a port of.
    pub master: Option<u32>,
    pub peer: Option<LinkPeer>,
    /// Its addresses with their prefix lengths, both families, in the kernel's order.
    pub addresses: Vec<IpNet>,
    pub counters: Counters,
}

impl IfaceState {
    /// The hardware address, when it is six bytes long.
    pub fn mac(&self) -> Option<Mac> {
        <[u8; 6]>::try_from(self.hwaddr.as_slice()).ok().map(Mac)
    }

    /// LXD's `hwaddr` of an instance's interface: the bytes in lower-case hex joined by `:`,
    /// empty for a loopback interface and for an address longer than 8 bytes.
    pub fn hwaddr_string(&self) -> String {
        if self.flags.loopback || self.hwaddr.len() > MAX_LXD_HWADDR_LEN {
            return String::new();
        }
        let hex: Vec<String> = self.hwaddr.iter().map(|b| format!("{b:02x}")).collect();
        hex.join(":")
    }

    /// The index of the interface's peer in the namespace the reader knows by `netnsid` (from
    /// [`Netlink::netnsid`]), or `None` when the peer is elsewhere or there is none. A veth pair
    /// made inside a container has its peer in the container: however its `IFLA_LINK` reads, it
    /// names no host interface.
    pub fn peer_in(&self, netnsid: Option<i32>) -> Option<u32> {
        let peer = self.peer?;
        match (peer.netnsid, netnsid) {
            (Some(theirs), Some(wanted)) if theirs >= 0 && theirs == wanted => Some(peer.ifindex),
            _ => None,
        }
    }
}

/// A bridge's identifier: its priority and address, as the kernel and LXD print it
/// (`8000.00163e5a1b2c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeId {
    pub priority: u16,
    pub address: [u8; 6],
}

impl fmt::Display for BridgeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}.", self.priority)?;
        self.address.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The bridge attributes LXD reports, as the kernel's `IFLA_INFO_DATA` holds them (the values
/// `/sys/class/net/BR/bridge/*`, which LXD reads, shows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeState {
    /// `None` when the kernel sent no `IFLA_BR_BRIDGE_ID`.
    pub id: Option<BridgeId>,
    /// True when the kernel runs STP for the bridge (`stp_state` 1). LXD counts only that value
    /// as on, so a bridge handed to a user-space STP daemon (`stp_state` 2) reports false.
    pub stp: bool,
    /// In hundredths of a second (the kernel's clock ticks, `USER_HZ`), as sysfs and LXD show
    /// it: 1500 is 15 s. LXD's API documentation says milliseconds; its value is this one.
    pub forward_delay: u32,
    /// The default port VLAN id.
    pub vlan_default: u16,
    pub vlan_filtering: bool,
    /// The names of the bridge's ports, sorted (LXD's `upper_devices`: the entries of
    /// `/sys/class/net/BR/brif`, which a directory read lists sorted).
    pub ports: Vec<String>,
}

/// One link's state and, for a bridge, its bridge attributes and ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub iface: IfaceState,
    pub bridge: Option<BridgeState>,
}

/// An instance's interface, with the host-side name of its peer (LXD's `host_name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceIface {
    pub state: IfaceState,
    /// The name of the interface's peer in the calling thread's namespace, when the kernel
    /// reports the peer there (a veth whose other end rxd left on the host).
    pub host_name: Option<String>,
}

/// A link as read, with the bridge part [`LinkState`] needs.
struct Read {
    iface: IfaceState,
    bridge: Option<BridgeState>,
}

fn read_link(msg: &LinkMessage) -> Option<Read> {
    let index = msg.header.index;
    let mut name = None;
    let mut kind = None;
    let mut mtu = 0;
    let mut hwaddr = Vec::new();
    let mut master = None;
    let mut link = None;
    let mut netnsid = None;
    let mut stats64 = None;
    let mut stats32 = None;
    let mut bridge_data: &[InfoBridge] = &[];
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::Address(bytes) if bytes.len() <= MAX_HWADDR_LEN => {
                hwaddr.clone_from(bytes)
            }
            LinkAttribute::Controller(i) if *i != 0 => master = Some(*i),
            LinkAttribute::Link(i) if *i != 0 && *i != index => link = Some(*i),
            LinkAttribute::LinkNetNsId(id) => netnsid = Some(*id),
            LinkAttribute::Stats64(s) => stats64 = Some(*s),
            LinkAttribute::Stats(s) => stats32 = Some(*s),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        NlLinkInfo::Kind(k) => kind = Some(k),
                        NlLinkInfo::Data(InfoData::Bridge(data)) => bridge_data = data,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // The kernel never names a link with no name or a longer one; a message that does is not
    // one to report.
    let name = name.filter(|n| !n.is_empty() && n.len() <= MAX_NAME_LEN)?;
    let counters = match (stats64, stats32) {
        (Some(s), _) => Counters {
            bytes_received: s.rx_bytes,
            bytes_sent: s.tx_bytes,
            packets_received: s.rx_packets,
            packets_sent: s.tx_packets,
            errors_received: s.rx_errors,
            errors_sent: s.tx_errors,
            packets_dropped_outbound: s.tx_dropped,
            packets_dropped_inbound: s.rx_dropped,
        },
        (None, Some(s)) => Counters {
            bytes_received: s.rx_bytes.into(),
            bytes_sent: s.tx_bytes.into(),
            packets_received: s.rx_packets.into(),
            packets_sent: s.tx_packets.into(),
            errors_received: s.rx_errors.into(),
            errors_sent: s.tx_errors.into(),
            packets_dropped_outbound: s.tx_dropped.into(),
            packets_dropped_inbound: s.rx_dropped.into(),
        },
        (None, None) => Counters::default(),
    };
    let bridge = (kind == Some(&InfoKind::Bridge)).then(|| bridge_state(bridge_data));
    Some(Read {
        iface: IfaceState {
            index,
            name: name.clone(),
            kind: kind.map(|k| k.to_string()),
            flags: IfaceFlags::from_link(msg.header.flags),
            mtu,
            hwaddr,
            master,
            peer: link.map(|ifindex| LinkPeer { ifindex, netnsid }),
            addresses: Vec::new(),
            counters,
        },
        bridge,
    })
}

fn bridge_state(data: &[InfoBridge]) -> BridgeState {
    let mut state = BridgeState {
        id: None,
        stp: false,
        forward_delay: 0,
        vlan_default: 0,
        vlan_filtering: false,
        ports: Vec::new(),
    };
    for attr in data {
        match attr {
            InfoBridge::BridgeId(id) => {
                state.id = Some(BridgeId {
                    priority: id.priority,
                    address: id.address,
                })
            }
            InfoBridge::StpState(s) => state.stp = *s == BridgeStpState::KernelStp,
            InfoBridge::ForwardDelay(d) => state.forward_delay = *d,
            InfoBridge::VlanDefaultPvid(v) => state.vlan_default = *v,
            InfoBridge::VlanFiltering(f) => state.vlan_filtering = *f,
            _ => {}
        }
    }
    state
}

/// A hostile namespace's reads: bounded, and a message that does not decode left out.
fn bounded(max: usize) -> Replies {
    Replies {
        max,
        skip_undecodable: true,
    }
}

impl Netlink {
    /// Every link of this socket's namespace with its addresses, in the kernel's order (by
    /// index). At most [`MAX_LINKS`] links and [`MAX_ADDRESSES`] addresses: a namespace with
    /// more is refused (`NetworkError::Reply`), not reported in part.
    pub fn interfaces(&mut self) -> Result<Vec<IfaceState>> {
        Ok(self.read_all()?.into_iter().map(|r| r.iface).collect())
    }

    /// One link's state; for a bridge, also its bridge attributes and ports. A link that does
    /// not exist is [`NetworkError::NoSuchLink`]. The same bounds as [`Netlink::interfaces`]
    /// hold, since the ports are found among all links.
    pub fn link_state<'a>(&mut self, link: impl Into<LinkRef<'a>>) -> Result<LinkState> {
        let link = link.into();
        let index = self.index(link)?;
        let all = self.read_all()?;
        let mut ports: Vec<String> = all
            .iter()
            .filter(|r| r.iface.master == Some(index))
            .map(|r| r.iface.name.clone())
            .collect();
        ports.sort();
        let read = all
            .into_iter()
            .find(|r| r.iface.index == index)
            .ok_or_else(|| NetworkError::NoSuchLink {
                link: link.to_string(),
            })?;
        Ok(LinkState {
            iface: read.iface,
            bridge: read.bridge.map(|b| BridgeState { ports, ..b }),
        })
    }

    /// The name of the link with this index in this socket's namespace, or `None` when there is
    /// no such link.
    pub fn link_name(&mut self, index: u32) -> Result<Option<String>> {
        Ok(self.link_info(index)?.map(|l| l.name))
    }

    /// The id this socket's namespace gives the namespace `netns` (`RTM_GETNSID`), as
    /// `IFLA_LINK_NETNSID` reports it; `None` when it has given none. The kernel gives one the
    /// first time a link dump names a link there, so ask after [`Netlink::interfaces`].
    pub fn netnsid(&mut self, netns: BorrowedFd<'_>) -> Result<Option<i32>> {
        let fd = u32::try_from(netns.as_raw_fd()).map_err(|_| NetworkError::Reply {
            what: "look up a network namespace's id".into(),
            detail: "a negative descriptor".into(),
        })?;
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(fd));
        let replies = self.request(
            "look up a network namespace's id",
            RouteNetlinkMessage::GetNsId(msg),
            0,
        )?;
        let id = replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewNsId(m) => m.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) => Some(*id),
                _ => None,
            }),
            _ => None,
        });
        // NETNSA_NSID_NOT_ASSIGNED is -1.
        Ok(id.filter(|id| *id >= 0))
    }

    fn read_all(&mut self) -> Result<Vec<Read>> {
        let links = self.request_with(
            "list links for their state",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            bounded(MAX_LINKS),
        )?;
        let mut read: Vec<Read> = links
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => read_link(m),
                _ => None,
            })
            .collect();
        let by_index: BTreeMap<u32, usize> = read
            .iter()
            .enumerate()
            .map(|(i, r)| (r.iface.index, i))
            .collect();
        let addresses = self.request_with(
            "list addresses for their state",
            RouteNetlinkMessage::GetAddress(Default::default()),
            NLM_F_DUMP,
            bounded(MAX_ADDRESSES),
        )?;
        for reply in &addresses {
            let RouteNetlinkMessage::NewAddress(m) = reply else {
                continue;
            };
            // An address of a link left out (or gone since the link dump) is left out too.
            let Some(&i) = by_index.get(&m.header.index) else {
                continue;
            };
            if let Some(address) = address_from(m) {
                read[i].iface.addresses.push(address.net);
            }
        }
        Ok(read)
    }
}

/// An instance's interfaces: read inside the network namespace `netns`, each peer the kernel
/// reports in the calling thread's namespace (the host's) named from there, as LXD's
/// `host_name`. The ids the two namespaces give each other decide which peers are the host's,
/// so a veth pair made inside the container names no host interface.
pub fn instance_interfaces(netns: BorrowedFd<'_>) -> Result<Vec<InstanceIface>> {
    let mut host = Netlink::open()?;
    let host_netns = host.netns();
    let (ifaces, host_id) = in_netns(netns, || -> Result<_> {
        let mut inside = Netlink::open()?;
        let ifaces = inside.interfaces()?;
        // After the dump, which gave the host's namespace an id if a link's peer is there.
        let host_id = inside.netnsid(host_netns)?;
        Ok((ifaces, host_id))
    })??;
    ifaces
        .into_iter()
        .map(|state| {
            let host_name = match state.peer_in(host_id) {
                Some(index) => host.link_name(index)?,
                None => None,
            };
            Ok(InstanceIface { state, host_name })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_scope(ip: &str, expected: Scope) {
        assert_eq!(scope_of(ip.parse().unwrap()), expected, "{ip}");
    }

    #[test]
    fn scopes_as_lxd_gives_them() {
        check_scope("127.0.0.1", Scope::Local);
        check_scope("127.255.0.9", Scope::Local);
        check_scope("::1", Scope::Local);
        check_scope("169.254.0.1", Scope::Link);
        check_scope("169.254.255.255", Scope::Link);
        check_scope("fe80::1", Scope::Link);
        check_scope("fe80:1::1", Scope::Link);
        check_scope("febf::1", Scope::Link);
        check_scope("fec0::1", Scope::Global);
        check_scope("128.0.0.1", Scope::Global);
        check_scope("169.255.0.1", Scope::Global);
        check_scope("10.0.0.1", Scope::Global);
        check_scope("fd42::1", Scope::Global);
        check_scope("::", Scope::Global);
        check_scope("::ffff:127.0.0.1", Scope::Global);
        check_scope("2001:db8::1", Scope::Global);
    }

    fn flags(s: &str) -> IfaceFlags {
        IfaceFlags {
            up: s.contains('u'),
            broadcast: s.contains('b'),
            loopback: s.contains('l'),
            point_to_point: s.contains('p'),
        }
    }

    fn check_type(set: &str, instance: LinkType, network: LinkType) {
        assert_eq!(LinkType::of_instance_iface(flags(set)), instance, "{set}");
        assert_eq!(LinkType::of_network(flags(set)), network, "{set}");
    }

    #[test]
    fn types_as_lxd_gives_them() {
        use LinkType::*;
        check_type("", Unknown, Unknown);
        check_type("u", Unknown, Unknown);
        check_type("b", Broadcast, Broadcast);
        check_type("l", Loopback, Loopback);
        check_type("p", PointToPoint, PointToPoint);
        check_type("bl", Loopback, Loopback);
        check_type("bp", PointToPoint, PointToPoint);
        check_type("lp", PointToPoint, Loopback);
        check_type("blp", PointToPoint, Loopback);
        assert_eq!(PointToPoint.as_str(), "point-to-point");
        assert_eq!(flags("u").state(), "up");
        assert_eq!(flags("b").state(), "down");
    }

    fn iface(hwaddr: &[u8], loopback: bool, peer: Option<LinkPeer>) -> IfaceState {
        IfaceState {
            index: 2,
            name: "eth0".into(),
            kind: None,
            flags: IfaceFlags {
                loopback,
                ..IfaceFlags::default()
            },
            mtu: 1500,
            hwaddr: hwaddr.to_vec(),
            master: None,
            peer,
            addresses: Vec::new(),
            counters: Counters::default(),
        }
    }

    #[test]
    fn hwaddr_as_lxd_prints_it() {
        let mac = [0x00, 0x16, 0x3e, 0xab, 0x0c, 0xff];
        assert_eq!(
            iface(&mac, false, None).hwaddr_string(),
            "00:16:3e:ab:0c:ff"
        );
        assert_eq!(iface(&mac, false, None).mac(), Some(Mac(mac)));
        assert_eq!(iface(&[0; 6], true, None).hwaddr_string(), "");
        assert_eq!(iface(&[], false, None).hwaddr_string(), "");
        assert_eq!(
            iface(&[10, 0, 0, 1], false, None).hwaddr_string(),
            "0a:00:00:01"
        );
        assert_eq!(iface(&[10, 0, 0, 1], false, None).mac(), None);
        assert_eq!(iface(&[1; 20], false, None).hwaddr_string(), "");
    }

    fn check_peer(peer: Option<(u32, Option<i32>)>, host: Option<i32>, expected: Option<u32>) {
        let peer = peer.map(|(ifindex, netnsid)| LinkPeer { ifindex, netnsid });
        assert_eq!(
            iface(&[], false, peer).peer_in(host),
            expected,
            "{peer:?} {host:?}"
        );
    }

    #[test]
    fn only_a_peer_in_the_named_namespace_is_named() {
        check_peer(Some((7, Some(0))), Some(0), Some(7));
        check_peer(Some((7, Some(3))), Some(3), Some(7));
        // In the reader's own namespace: a pair made inside the container.
        check_peer(Some((7, None)), Some(0), None);
        check_peer(Some((7, None)), None, None);
        // In a third namespace.
        check_peer(Some((7, Some(1))), Some(0), None);
        check_peer(Some((7, Some(0))), None, None);
        // Unassigned ids never match.
        check_peer(Some((7, Some(-1))), Some(-1), None);
        check_peer(None, Some(0), None);
    }

    #[test]
    fn bridge_id_prints_as_sysfs_does() {
        let id = BridgeId {
            priority: 0x8000,
            address: [0x00, 0x16, 0x3e, 0x5a, 0x1b, 0x2c],
        };
        assert_eq!(id.to_string(), "8000.00163e5a1b2c");
        let id = BridgeId {
            priority: 0x10,
            address: [0xaa; 6],
        };
        assert_eq!(id.to_string(), "0010.aaaaaaaaaaaa");
    }
}
