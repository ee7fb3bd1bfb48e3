//! The rtnetlink socket: one blocking request at a time, its replies collected until the
//! kernel's acknowledgement or the end of a dump, a refusal turned into its errno.

use crate::error::{NetworkError, Result};
use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// More replies than any host has links or addresses: a bound on what one dump may allocate.
const MAX_REPLIES: usize = 1 << 16;

/// Message types below this are netlink's own (`NLMSG_NOOP`, `_ERROR`, `_DONE`, `_OVERRUN`);
/// from it on they are rtnetlink's.
const NLMSG_MIN_TYPE: u16 = 0x10;

/// How a request reads its replies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replies {
    /// More replies than this fail the request (the rest of a dump is left unread).
    pub max: usize,
    /// An rtnetlink reply that does not decode is skipped instead of failing the request. A
    /// namespace's root can name a link in bytes that are not UTF-8, which netlink-packet-route
    /// refuses to decode; reading a container's interfaces must not fail on that one link.
    pub skip_undecodable: bool,
}

impl Replies {
    const STRICT: Replies = Replies {
        max: MAX_REPLIES,
        skip_undecodable: false,
    };
}

/// An rtnetlink socket. It belongs to the network namespace of the thread that opened it (see
/// [`crate::in_netns`]) for its whole life, whichever thread uses it afterwards: every request
/// made through it reads or changes that namespace only.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    /// The namespace the socket belongs to, to bring back a link a failed move left elsewhere.
    netns: OwnedFd,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink> {
        let what = || "open an rtnetlink socket".to_owned();
        let sock_err = |source| NetworkError::Socket {
            what: what(),
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err)?;
        socket.bind_auto().map_err(sock_err)?;
        // Connected to the kernel (port 0): nothing but the kernel can answer our requests.
        socket.connect(&SocketAddr::new(0, 0)).map_err(sock_err)?;
        let netns = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|source| NetworkError::Netns {
                what: "open this thread's network namespace".into(),
                source,
            })?
            .into();
        Ok(Netlink {
            socket,
            seq: 0,
            netns,
        })
    }

    /// The network namespace this socket acts on.
    pub fn netns(&self) -> BorrowedFd<'_> {
        self.netns.as_fd()
    }

    /// Sends one request and returns the messages the kernel answered with. `flags` are added to
    /// `NLM_F_REQUEST`; a request without `NLM_F_DUMP` also asks for an acknowledgement, so a
    /// refusal always comes back as an error carrying the errno.
    pub(crate) fn request(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.request_with(what, message, flags, Replies::STRICT)
    }

    /// [`Netlink::request`], reading the replies as `replies` says.
    pub(crate) fn request_with(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
        flags: u16,
        replies: Replies,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        let sock_err = |source| NetworkError::Socket {
            what: what.to_owned(),
            source,
        };
        self.socket.send(&buf, 0).map_err(sock_err)?;

        let reply_err = |detail: String| NetworkError::Reply {
            what: what.to_owned(),
            detail,
        };
        let mut out = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(sock_err)?;
            let mut offset = 0;
            while offset < datagram.len() {
                let rest = &datagram[offset..];
                // The header alone first (its length is checked against the datagram): the
                // sequence number says whether the message is ours before any of it is decoded.
                let header =
                    NetlinkBuffer::new_checked(rest).map_err(|e| reply_err(e.to_string()))?;
                let len = header.length() as usize;
                let (reply_seq, kind) = (header.sequence_number(), header.message_type());
                // Messages in one datagram start at 4-byte boundaries (NLMSG_ALIGN).
                offset = offset.saturating_add((len + 3) & !3);
                if reply_seq != seq {
                    // An answer to an earlier request given up on (the rest of a dump cut
                    // short, say): not ours to read, so not ours to fail on either.
                    continue;
                }
                let reply = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]) {
                    Ok(reply) => reply,
                    Err(_) if replies.skip_undecodable && kind >= NLMSG_MIN_TYPE => continue,
                    Err(e) => return Err(reply_err(e.to_string())),
                };
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        None if !dump => return Ok(out),
                        None => {}
                        Some(code) => {
                            return Err(NetworkError::Kernel {
                                what: what.to_owned(),
                                errno: code.get().saturating_neg(),
                            })
                        }
                    },
                    NetlinkPayload::InnerMessage(m) => {
                        if out.len() >= replies.max {
                            let max = replies.max;
                            return Err(reply_err(format!("more than {max} replies")));
                        }
                        out.push(m);
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(reply_err("the kernel reported an overrun".into()))
                    }
                    _ => {}
                }
            }
        }
    }
}
