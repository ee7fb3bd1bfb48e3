//! Routes to a link in the main table (a NIC's `ipv4.routes`/`ipv6.routes` on its host end).

use crate::error::Result;
use crate::link::LinkRef;
use crate::nl::Netlink;
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

fn message(net: IpNet, index: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match net {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = net.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = RouteScope::Link;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        RouteAttribute::Destination(RouteAddress::from(net.network())),
        RouteAttribute::Oif(index),
    ];
    msg
}

impl Netlink {
    /// Routes `net` (its network) straight to `link`, replacing a route to the same
    /// destination.
    pub fn add_link_route<'a>(&mut self, link: impl Into<LinkRef<'a>>, net: IpNet) -> Result<()> {
        let link = link.into();
        let index = self.index(link)?;
        let what = format!("route {} to {link}", net.trunc());
        self.request(
            &what,
            RouteNetlinkMessage::NewRoute(message(net.trunc(), index)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }
}

impl Netlink {
    /// A default route through `gateway` on `link`, the gateway first made reachable on the
    /// link by a host route (it lies in no subnet of the link's addresses).
    pub fn add_default_route<'a>(
        &mut self,
        link: impl Into<LinkRef<'a>>,
        gateway: IpAddr,
    ) -> Result<()> {
        let link = link.into();
        let index = self.index(link)?;
        let host = IpNet::from(gateway);
        if !matches!(gateway, IpAddr::V6(g) if g.segments()[0] & 0xffc0 == 0xfe80) {
            self.add_link_route(index, host)?;
        }
        let default = match gateway {
            IpAddr::V4(_) => IpNet::V4(Default::default()),
            IpAddr::V6(_) => IpNet::V6(Default::default()),
        };
        let mut msg = message(default, index);
        msg.header.scope = RouteScope::Universe;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        let what = format!("default route via {gateway} on {link}");
        self.request(
            &what,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }
}
