//! Addresses on a link: listed, and brought to a desired set of global addresses by adding and
//! removing only the difference (LXD flushes and re-adds them, an outage on every restart).

use crate::error::Result;
use crate::link::LinkRef;
use crate::nl::Netlink;
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use std::net::IpAddr;

const EEXIST: i32 = Errno::EEXIST as i32;
const ENOENT: i32 = Errno::ENOENT as i32;
const EADDRNOTAVAIL: i32 = Errno::EADDRNOTAVAIL as i32;

/// The scope of an address, as `ip addr` prints it (`global` is the kernel's `universe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrScope {
    Global,
    Site,
    Link,
    Host,
    Other(u8),
}

/// An address on a link, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The address and its prefix length.
    pub net: IpNet,
    pub scope: AddrScope,
    /// `IFA_FLAGS` (or the header's eight bits when the kernel sends none): `IFA_F_NODAD`,
    /// `IFA_F_TENTATIVE`, `IFA_F_PERMANENT`, ….
    pub flags: u32,
    /// `IFA_CACHEINFO`'s creation stamp (hundredths of a second since boot): unchanged as long
    /// as the address is never removed.
    pub created: Option<u32>,
}

/// What [`Netlink::sync_addresses`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrChanges {
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
}

/// `IFA_F_NODAD`: the address is usable at once, never tentative.
pub const IFA_F_NODAD: u32 = 0x02;

fn same(a: &IpNet, b: &IpNet) -> bool {
    a.addr() == b.addr() && a.prefix_len() == b.prefix_len()
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

pub(crate) fn address_from(msg: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    let mut flags = None;
    let mut created = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Flags(f) => flags = Some(f.bits()),
            AddressAttribute::CacheInfo(c) => created = Some(c.cstamp),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a point-to-point
    // link and the same address otherwise. IPv6 usually sends only IFA_ADDRESS.
    let ip = local.or(address)?;
    let net = IpNet::new(ip, msg.header.prefix_len).ok()?;
    let scope = match msg.header.scope {
        AddressScope::Universe => AddrScope::Global,
        AddressScope::Site => AddrScope::Site,
        AddressScope::Link => AddrScope::Link,
        AddressScope::Host => AddrScope::Host,
        other => AddrScope::Other(u8::from(other)),
    };
    Some(Address {
        net,
        scope,
        flags: flags.unwrap_or(u32::from(msg.header.flags.bits())),
        created,
    })
}

impl Netlink {
    /// Every address on `link`, of both families and all scopes.
    pub fn addresses<'a>(&mut self, link: impl Into<LinkRef<'a>>) -> Result<Vec<Address>> {
        let link = link.into();
        let index = self.index(link)?;
        let what = format!("list addresses of {link}");
        let replies = self.request(
            &what,
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(m) if m.header.index == index => address_from(m),
                _ => None,
            })
            .collect())
    }

    /// Adds one address to `link`. IPv6 addresses are added with `IFA_F_NODAD`, so dnsmasq can
    /// bind them at once (a tentative address cannot be bound). Already present is not an error.
    pub fn add_address<'a>(&mut self, link: impl Into<LinkRef<'a>>, net: IpNet) -> Result<()> {
        let link = link.into();
        let index = self.index(link)?;
        let mut msg = AddressMessage::default();
        msg.header.family = family(net.addr());
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        match net {
            IpNet::V4(v4) => {
                // As `ip addr add … brd +`: the subnet's broadcast, where the subnet has one.
                if v4.prefix_len() < 31 {
                    msg.attributes
                        .push(AddressAttribute::Broadcast(v4.broadcast()));
                }
            }
            IpNet::V6(_) => {
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        let what = format!("add address {net} to {link}");
        match self.request(
            &what,
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.errno() == Some(EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Removes one address from `link`. Already absent is not an error.
    pub fn remove_address<'a>(&mut self, link: impl Into<LinkRef<'a>>, net: IpNet) -> Result<()> {
        let link = link.into();
        let index = self.index(link)?;
        let mut msg = AddressMessage::default();
        msg.header.family = family(net.addr());
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        let what = format!("remove address {net} from {link}");
        match self.request(&what, RouteNetlinkMessage::DelAddress(msg), 0) {
            Err(e) if matches!(e.errno(), Some(ENOENT | EADDRNOTAVAIL)) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Brings the global addresses of `link` to exactly `desired`: removes those not desired,
    /// adds those missing, touches none in both (they keep their creation stamp, and traffic to
    /// them never stops). Link-local and host-scope addresses are left alone (the kernel makes
    /// the IPv6 link-local one, and the router advertisements dnsmasq sends come from it).
    /// An address is its IP and prefix length: `10.0.0.1/24` to `10.0.0.1/16` is a change.
    ///
    /// Removing an IPv4 primary address also removes the secondaries of its subnet unless the
    /// link's `promote_secondaries` is on; a desired one lost that way is added back and
    /// reported as added.
    pub fn sync_addresses<'a>(
        &mut self,
        link: impl Into<LinkRef<'a>>,
        desired: &[IpNet],
    ) -> Result<AddrChanges> {
        let link = link.into();
        let index = self.index(link)?;
        let global = |all: Vec<Address>| -> Vec<IpNet> {
            all.into_iter()
                .filter(|a| a.scope == AddrScope::Global)
                .map(|a| a.net)
                .collect()
        };
        let present = global(self.addresses(index)?);
        let mut changes = AddrChanges::default();
        for net in &present {
            if !desired.iter().any(|d| same(d, net)) {
                self.remove_address(index, *net)?;
                changes.removed.push(*net);
            }
        }
        let now = global(self.addresses(index)?);
        for net in desired {
            let listed = changes.added.iter().any(|a| same(a, net));
            if !listed && !now.iter().any(|p| same(p, net)) {
                self.add_address(index, *net)?;
                changes.added.push(*net);
            }
        }
        Ok(changes)
    }
}
