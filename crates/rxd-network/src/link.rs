//! Links: bridges and veth pairs made, configured, moved to another network namespace and
//! deleted, and what the kernel reports about a link.

use crate::error::{NetworkError, Result};
use crate::netns::in_netns;
use crate::nl::Netlink;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoMacVlan, InfoPortData, InfoPortKind, InfoVeth,
    LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use rxd_core::network::config::IfName;
use rxd_core::network::mac::Mac;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A link named by its interface name or by its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkRef<'a> {
    Name(&'a IfName),
    Index(u32),
}

impl<'a> From<&'a IfName> for LinkRef<'a> {
    fn from(name: &'a IfName) -> LinkRef<'a> {
        LinkRef::Name(name)
    }
}

impl From<u32> for LinkRef<'static> {
    fn from(index: u32) -> LinkRef<'static> {
        LinkRef::Index(index)
    }
}

impl fmt::Display for LinkRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRef::Name(name) => write!(f, "{name}"),
            LinkRef::Index(index) => write!(f, "#{index}"),
        }
    }
}

/// What the kernel reports about a link. Names and kinds are the kernel's text, not checked
/// against rxd's name rules: a host can have interfaces rxd would never name so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, `dummy`, …); `None` for a device without one (a
    /// physical NIC, loopback).
    pub kind: Option<String>,
    pub mtu: u32,
    /// The hardware address, when it is six bytes long.
    pub mac: Option<Mac>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub loopback: bool,
    /// The index of the bridge (or bond) the link is a port of.
    pub master: Option<u32>,
}

impl LinkInfo {
    fn from_message(msg: &LinkMessage) -> LinkInfo {
        let mut info = LinkInfo {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mtu: 0,
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
            master: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => info.name = name.clone(),
                LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
                LinkAttribute::Address(bytes) => {
                    info.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(Mac)
                }
                LinkAttribute::Controller(index) if *index != 0 => info.master = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let NlLinkInfo::Kind(kind) = i {
                            info.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }

    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }
}

/// What [`Netlink::ensure_bridge`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bridge {
    /// True when this call made the bridge; false when it existed and was only configured.
    pub created: bool,
    /// The bridge as it is after the call.
    pub link: LinkInfo,
}

const EEXIST: i32 = Errno::EEXIST as i32;
const ENODEV: i32 = Errno::ENODEV as i32;

fn message(index: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes = attributes;
    msg
}

impl Netlink {
    /// The link, or `None` when this namespace has no such link.
    pub fn link_info<'a>(&mut self, link: impl Into<LinkRef<'a>>) -> Result<Option<LinkInfo>> {
        match link.into() {
            LinkRef::Name(name) => self.link_named(name.as_str()),
            LinkRef::Index(index) => {
                self.get_link(message(index, Vec::new()), &format!("#{index}"))
            }
        }
    }

    /// By the kernel's name, which need not follow rxd's name rules.
    fn link_named(&mut self, name: &str) -> Result<Option<LinkInfo>> {
        let msg = message(0, vec![LinkAttribute::IfName(name.to_owned())]);
        self.get_link(msg, name)
    }

    fn get_link(&mut self, msg: LinkMessage, link: &str) -> Result<Option<LinkInfo>> {
        let what = format!("look up link {link}");
        match self.request(&what, RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(LinkInfo::from_message(m)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of this namespace, in the kernel's order (by index).
    pub fn list_links(&mut self) -> Result<Vec<LinkInfo>> {
        let replies = self.request(
            "list links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(LinkInfo::from_message(m)),
                _ => None,
            })
            .collect())
    }

    /// The index of a link, or [`NetworkError::NoSuchLink`].
    pub fn index<'a>(&mut self, link: impl Into<LinkRef<'a>>) -> Result<u32> {
        let link = link.into();
        if let LinkRef::Index(index) = link {
            return Ok(index);
        }
        match self.link_info(link)? {
            Some(info) => Ok(info.index),
            None => Err(NetworkError::NoSuchLink {
                link: link.to_string(),
            }),
        }
    }

    /// Makes sure a bridge `name` exists with this MTU and MAC and is up. An existing bridge is
    /// configured, never recreated (its ports and addresses stay); a link of that name that is
    /// not a bridge is refused untouched. Setting the MAC also pins it: a bridge whose address
    /// was never set takes its lowest port's and changes it as ports come and go.
    pub fn ensure_bridge(&mut self, name: &IfName, mtu: u32, mac: Mac) -> Result<Bridge> {
        let mut created = false;
        let existing = match self.link_info(name)? {
            Some(link) => link,
            None => {
                let msg = message(
                    0,
                    vec![
                        LinkAttribute::IfName(name.to_string()),
                        LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Bridge)]),
                        LinkAttribute::Mtu(mtu),
                        LinkAttribute::Address(mac.0.to_vec()),
                    ],
                );
                let what = format!("create bridge {name}");
                match self.request(
                    &what,
                    RouteNetlinkMessage::NewLink(msg),
                    NLM_F_CREATE | NLM_F_EXCL,
                ) {
                    Ok(_) => created = true,
                    // Made by someone else since we looked: judged below like any existing link.
                    Err(e) if e.errno() == Some(EEXIST) => {}
                    Err(e) => return Err(e),
                }
                self.link_info(name)?
                    .ok_or_else(|| NetworkError::NoSuchLink {
                        link: name.to_string(),
                    })?
            }
        };
        if !existing.is_bridge() {
            return Err(NetworkError::NotABridge {
                name: name.to_string(),
                kind: existing.kind.unwrap_or_else(|| "kind-less".to_owned()),
            });
        }
        let mut attrs = Vec::new();
        if existing.mtu != mtu {
            attrs.push(LinkAttribute::Mtu(mtu));
        }
        if existing.mac != Some(mac) {
            attrs.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if !attrs.is_empty() || !existing.up {
            let mut msg = message(existing.index, attrs);
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
            let what = format!("set mtu {mtu}, address {mac} and up on bridge {name}");
            self.request(&what, RouteNetlinkMessage::SetLink(msg), 0)?;
        }
        let link = self
            .link_info(existing.index)?
            .ok_or_else(|| NetworkError::NoSuchLink {
                link: name.to_string(),
            })?;
        Ok(Bridge { created, link })
    }

    /// Deletes a link. Returns false when there was none (not an error: deleting is idempotent).
    /// Deleting one end of a veth pair deletes both.
    pub fn delete_link<'a>(&mut self, link: impl Into<LinkRef<'a>>) -> Result<bool> {
        let link = link.into();
        let msg = match link {
            LinkRef::Name(name) => message(0, vec![LinkAttribute::IfName(name.to_string())]),
            LinkRef::Index(index) => message(index, Vec::new()),
        };
        let what = format!("delete link {link}");
        match self.request(&what, RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates a veth pair: `host_name` stays here, `peer_name` (with `peer_mac`) is the end
    /// meant for a container. Both get `mtu`; both are down. Fails with `EEXIST` if either name
    /// is taken. Returns the host end.
    pub fn create_veth(
        &mut self,
        host_name: &IfName,
        peer_name: &IfName,
        peer_mac: Mac,
        mtu: u32,
    ) -> Result<LinkInfo> {
        self.create_veth_into(host_name, peer_name, peer_mac, mtu, None)
    }

    /// As [`Netlink::create_veth`], the peer made directly in network namespace `peer_netns`
    /// when given (its name need only be free there). Making it there costs what making it
    /// here does; moving it there later waits for RCU grace periods in the kernel.
    pub fn create_veth_into(
        &mut self,
        host_name: &IfName,
        peer_name: &IfName,
        peer_mac: Mac,
        mtu: u32,
        peer_netns: Option<BorrowedFd<'_>>,
    ) -> Result<LinkInfo> {
        let mut peer_attrs = vec![
            LinkAttribute::IfName(peer_name.to_string()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Address(peer_mac.0.to_vec()),
        ];
        if let Some(ns) = peer_netns {
            peer_attrs.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        let peer = message(0, peer_attrs);
        let msg = message(
            0,
            vec![
                LinkAttribute::IfName(host_name.to_string()),
                LinkAttribute::Mtu(mtu),
                LinkAttribute::LinkInfo(vec![
                    NlLinkInfo::Kind(InfoKind::Veth),
                    NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
                ]),
            ],
        );
        let what = format!("create veth pair {host_name} / {peer_name}");
        self.request(
            &what,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        self.link_info(host_name)?
            .ok_or_else(|| NetworkError::NoSuchLink {
                link: host_name.to_string(),
            })
    }

    /// Creates a macvlan `name` on `parent` in bridge mode (its macvlans reach each other),
    /// with `mac` and `mtu`, down. Fails with `EEXIST` if the name is taken.
    pub fn create_macvlan<'a>(
        &mut self,
        name: &IfName,
        parent: impl Into<LinkRef<'a>>,
        mac: Mac,
        mtu: u32,
    ) -> Result<LinkInfo> {
        let parent = parent.into();
        let parent_index = self.index(parent)?;
        let msg = message(
            0,
            vec![
                LinkAttribute::IfName(name.to_string()),
                LinkAttribute::Link(parent_index),
                LinkAttribute::Mtu(mtu),
                LinkAttribute::Address(mac.0.to_vec()),
                LinkAttribute::LinkInfo(vec![
                    NlLinkInfo::Kind(InfoKind::MacVlan),
                    NlLinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                        MacVlanMode::Bridge,
                    )])),
                ]),
            ],
        );
        let what = format!("create macvlan {name} on {parent}");
        self.request(
            &what,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        self.link_info(name)?
            .ok_or_else(|| NetworkError::NoSuchLink {
                link: name.to_string(),
            })
    }

    fn set_link(&mut self, what: &str, index: u32, attrs: Vec<LinkAttribute>) -> Result<()> {
        self.request(what, RouteNetlinkMessage::SetLink(message(index, attrs)), 0)
            .map(drop)
    }

    /// Makes `link` a port of `bridge`.
    pub fn set_master<'a, 'b>(
        &mut self,
        link: impl Into<LinkRef<'a>>,
        bridge: impl Into<LinkRef<'b>>,
    ) -> Result<()> {
        let (link, bridge) = (link.into(), bridge.into());
        let (index, master) = (self.index(link)?, self.index(bridge)?);
        let what = format!("attach {link} to bridge {bridge}");
        self.set_link(&what, index, vec![LinkAttribute::Controller(master)])
    }

    /// Takes `link` off whatever bridge it is a port of.
    pub fn clear_master<'a>(&mut self, link: impl Into<LinkRef<'a>>) -> Result<()> {
        let link = link.into();
        let index = self.index(link)?;
        let what = format!("detach {link} from its bridge");
        self.set_link(&what, index, vec![LinkAttribute::Controller(0)])
    }

    fn set_flag_up(&mut self, link: LinkRef<'_>, up: bool) -> Result<()> {
        let index = self.index(link)?;
        let mut msg = message(index, Vec::new());
        msg.header.flags = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
        msg.header.change_mask = LinkFlags::Up;
        let what = format!("set {link} {}", if up { "up" } else { "down" });
        self.request(&what, RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
    }

    /// Sets `link` administratively up.
    pub fn set_up<'a>(&mut self, link: impl Into<LinkRef<'a>>) -> Result<()> {
        self.set_flag_up(link.into(), true)
    }

    /// Sets `link` administratively down.
    pub fn set_down<'a>(&mut self, link: impl Into<LinkRef<'a>>) -> Result<()> {
        self.set_flag_up(link.into(), false)
    }

    /// Sets the MTU of `link`.
    pub fn set_mtu<'a>(&mut self, link: impl Into<LinkRef<'a>>, mtu: u32) -> Result<()> {
        let link = link.into();
        let index = self.index(link)?;
        let what = format!("set mtu {mtu} on {link}");
        self.set_link(&what, index, vec![LinkAttribute::Mtu(mtu)])
    }

    /// Sets the hardware address of `link`.
    pub fn set_mac<'a>(&mut self, link: impl Into<LinkRef<'a>>, mac: Mac) -> Result<()> {
        let link = link.into();
        let index = self.index(link)?;
        let what = format!("set address {mac} on {link}");
        self.set_link(&what, index, vec![LinkAttribute::Address(mac.0.to_vec())])
    }

    /// Moves `link` into the network namespace `netns` and renames it `new_name` there, in one
    /// `RTM_NEWLINK` with `IFLA_NET_NS_FD` and `IFLA_IFNAME`: the kernel moves and renames it
    /// under one hold of the rtnl lock, so no other request sees it in the target under its old
    /// name. The kernel does not undo a move whose rename fails (the new name is taken there):
    /// the link then sits in the target under its old name, and this function moves it back
    /// before returning the error, so a failure leaves the link where it was.
    pub fn move_to_netns<'a>(
        &mut self,
        link: impl Into<LinkRef<'a>>,
        netns: BorrowedFd<'_>,
        new_name: &IfName,
    ) -> Result<()> {
        let link = link.into();
        let before = self
            .link_info(link)?
            .ok_or_else(|| NetworkError::NoSuchLink {
                link: link.to_string(),
            })?;
        // By index: in this request IFLA_IFNAME is the new name, not the link's.
        let msg = message(
            before.index,
            vec![
                LinkAttribute::NetNsFd(netns.as_raw_fd()),
                LinkAttribute::IfName(new_name.to_string()),
            ],
        );
        let what = format!("move {link} to another network namespace as {new_name}");
        let Err(err) = self.request(&what, RouteNetlinkMessage::NewLink(msg), 0) else {
            return Ok(());
        };
        let still_here = self.link_info(before.index)?;
        if still_here.is_some_and(|l| l.name == before.name) {
            return Err(err);
        }
        let home = self.netns();
        let old = before.name.clone();
        in_netns(netns, move || -> Result<()> {
            let mut there = Netlink::open()?;
            let index = match there.link_named(&old)? {
                Some(info) => info.index,
                None => return Ok(()),
            };
            let what = format!("move {old} back after a failed move to another namespace");
            let msg = message(index, vec![LinkAttribute::NetNsFd(home.as_raw_fd())]);
            there
                .request(&what, RouteNetlinkMessage::NewLink(msg), 0)
                .map(drop)
        })??;
        Err(err)
    }

    /// Sets or clears a bridge port's `isolated` flag: isolated ports reach only non-isolated
    /// ones (the bridge itself and uplinks), never each other.
    pub fn set_port_isolated<'a>(
        &mut self,
        link: impl Into<LinkRef<'a>>,
        isolated: bool,
    ) -> Result<()> {
        let link = link.into();
        let index = self.index(link)?;
        let what = format!("set isolated {isolated} on bridge port {link}");
        // RTM_NEWLINK on an existing link: RTM_SETLINK ignores IFLA_LINKINFO, and with it the
        // port (slave) data.
        let msg = message(
            index,
            vec![LinkAttribute::LinkInfo(vec![
                NlLinkInfo::PortKind(InfoPortKind::Bridge),
                NlLinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                    isolated,
                )])),
            ])],
        );
        self.request(&what, RouteNetlinkMessage::NewLink(msg), 0)
            .map(drop)
    }
}
