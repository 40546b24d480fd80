//! Stale conntrack entries of Services, as values: which (frontend, backend) pairs a change of
//! the Services removed ([`stale_flows`]), which kernel entries belong to them ([`CtEntry::is_of`]),
//! and the ctnetlink messages that list the entries ([`dump_request`], read back by
//! [`parse_dump`]) and delete one ([`delete_request`]).
//!
//! Why: a UDP (or SCTP) client keeps sending on one 5-tuple, and every datagram matches the
//! conntrack entry its first one made, whose destination was translated to the backend chosen
//! then: when that backend goes away the datagrams keep going to it for as long as the entry
//! lives (it is refreshed by each of them). Deleting the entry makes the next datagram a new
//! connection, translated to a backend that exists. TCP needs nothing: the client's
//! retransmissions are reset or time out, and it reconnects. This is kube-proxy's
//! `conntrack -D -p udp --orig-dst FRONTEND --dst-nat BACKEND`.
//!
//! The messages are `netlink-packet-netfilter`'s conntrack messages (its 0.4 has `Get`,
//! `Delete`, the tuples and their parsing); only the netlink flags and the selection are Seam's.
//! The kernel cannot delete by a partial tuple (a flush filters by mark or zone only), so the
//! caller dumps the IPv4 table, keeps the entries [`CtEntry::is_of`] a stale flow, and deletes
//! each by its original tuple, as the `conntrack` tool does.
//!
//! Architecture invariant: pure; `seam-linux` sends the messages (`seam_linux::conntrack`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use seam_model::PortProtocol;

use crate::services::{DesiredServices, FrontendKey};

/// A backend a frontend no longer has: its entries are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StaleFlow {
    /// The frontend (an address and port, or a node port on any local address).
    pub frontend: FrontendKey,
    /// The backend removed from it (address, port).
    pub backend: (Ipv4Addr, u16),
}

/// The protocols whose stale entries are deleted: those without a connection the client would
/// see fail (TCP resets or times out by itself).
fn connectionless(protocol: PortProtocol) -> bool {
    matches!(protocol, PortProtocol::Udp | PortProtocol::Sctp)
}

fn protocol_of(key: &FrontendKey) -> PortProtocol {
    match key {
        FrontendKey::Address { protocol, .. } | FrontendKey::NodePort { protocol, .. } => *protocol,
    }
}

/// The (frontend, backend) pairs of UDP and SCTP frontends that `old` had and `new` does not
/// (a backend gone, or the whole frontend gone), sorted.
pub fn stale_flows(old: &DesiredServices, new: &DesiredServices) -> Vec<StaleFlow> {
    let now: BTreeMap<&FrontendKey, &Vec<(Ipv4Addr, u16)>> = new
        .frontends
        .iter()
        .map(|f| (&f.key, &f.backends))
        .collect();
    let mut stale: Vec<StaleFlow> = old
        .frontends
        .iter()
        .filter(|f| connectionless(protocol_of(&f.key)))
        .flat_map(|f| {
            let kept = now.get(&f.key);
            f.backends
                .iter()
                .filter(move |b| !kept.is_some_and(|k| k.contains(b)))
                .map(|b| StaleFlow {
                    frontend: f.key,
                    backend: *b,
                })
        })
        .collect();
    stale.sort();
    stale.dedup();
    stale
}

/// One IPv4 conntrack entry, by its two tuples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtEntry {
    /// The IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub protocol: u8,
    /// The original direction: source address and port.
    pub orig_src: (Ipv4Addr, u16),
    /// The original direction: destination address and port (the frontend).
    pub orig_dst: (Ipv4Addr, u16),
    /// The reply direction: source address and port (the backend, when translated).
    pub reply_src: (Ipv4Addr, u16),
    /// The reply direction: destination address and port.
    pub reply_dst: (Ipv4Addr, u16),
}

impl CtEntry {
    /// Whether this entry is a connection of `flow`: sent to its frontend (for a node port, to
    /// that port of any address) and translated to its backend (the reply comes from it).
    pub fn is_of(&self, flow: &StaleFlow) -> bool {
        let frontend = match flow.frontend {
            FrontendKey::Address {
                addr,
                protocol,
                port,
            } => {
                self.protocol == crate::services::protocol_number(protocol)
                    && self.orig_dst == (addr, port)
            }
            FrontendKey::NodePort { protocol, port } => {
                self.protocol == crate::services::protocol_number(protocol)
                    && self.orig_dst.1 == port
            }
        };
        frontend && self.reply_src == flow.backend && self.reply_src != self.orig_dst
    }
}

/// ctnetlink's message types are `NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_*`.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

fn message(inner: ConntrackMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let body = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        inner,
    );
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(body));
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// `conntrack -L -f ipv4`: a dump request of the IPv4 conntrack table.
pub fn dump_request(seq: u32) -> Vec<u8> {
    message(
        ConntrackMessage::Get(vec![]),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    )
}

pub(crate) fn tuple(protocol: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<Tuple> {
    vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(IpAddr::V4(src.0)),
            IPTuple::DestinationAddress(IpAddr::V4(dst.0)),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::from(protocol)),
            ProtoTuple::SourcePort(src.1),
            ProtoTuple::DestinationPort(dst.1),
        ]),
    ]
}

/// `conntrack -D` of one entry, by its original tuple, with an acknowledgement asked for (a
/// missing entry, `ENOENT`, is one that expired or was deleted meanwhile: success).
pub fn delete_request(entry: &CtEntry, seq: u32) -> Vec<u8> {
    message(
        ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple(
            entry.protocol,
            entry.orig_src,
            entry.orig_dst,
        ))]),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    )
}

/// What one receive of a dump held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpPart {
    /// The IPv4 entries with ports (TCP, UDP, SCTP, …), in order; others are skipped.
    pub entries: Vec<CtEntry>,
    /// The dump ended (`NLMSG_DONE`).
    pub done: bool,
    /// The kernel refused the dump: its errno (positive).
    pub error: Option<i32>,
}

/// Reads one receive buffer of a dump's answer. Messages this cannot read are skipped (the
/// kernel may add attributes; a half-read entry is not one to delete).
pub fn parse_dump(buf: &[u8]) -> DumpPart {
    let mut part = DumpPart::default();
    let mut at = 0usize;
    while let Some(rest) = buf.get(at..) {
        if rest.len() < 16 {
            break;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < 16 || len > rest.len() {
            break;
        }
        match kind {
            NLMSG_DONE => part.done = true,
            NLMSG_ERROR => {
                let code = rest
                    .get(16..20)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if code != 0 {
                    part.error = Some(-code);
                    part.done = true;
                }
            }
            k if k == (NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW) => {
                if let Some(entry) = rest.get(..len).and_then(entry_of) {
                    part.entries.push(entry);
                }
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    part
}

fn entry_of(bytes: &[u8]) -> Option<CtEntry> {
    let message = NetlinkMessage::<NetfilterMessage>::deserialize(bytes).ok()?;
    let NetlinkPayload::InnerMessage(message) = message.payload else {
        return None;
    };
    let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) = message.inner else {
        return None;
    };
    let mut orig = None;
    let mut reply = None;
    for attribute in &attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(t) => orig = read_tuple(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = read_tuple(t),
            _ => {}
        }
    }
    let (protocol, orig_src, orig_dst) = orig?;
    let (_, reply_src, reply_dst) = reply?;
    Some(CtEntry {
        protocol,
        orig_src,
        orig_dst,
        reply_src,
        reply_dst,
    })
}

pub(crate) type ReadTuple = (u8, (Ipv4Addr, u16), (Ipv4Addr, u16));

pub(crate) fn read_tuple(tuple: &[Tuple]) -> Option<ReadTuple> {
    let (mut src, mut dst, mut protocol, mut sport, mut dport) = (None, None, None, None, None);
    for part in tuple {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(IpAddr::V4(a)) => src = Some(*a),
                        IPTuple::DestinationAddress(IpAddr::V4(a)) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(p) => protocol = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => sport = Some(*p),
                        ProtoTuple::DestinationPort(p) => dport = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((protocol?, (src?, sport?), (dst?, dport?)))
}

#[cfg(test)]
mod tests;
