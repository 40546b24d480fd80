//! Stale conntrack entries of Services, as values: which (frontend, backend) pairs a change of
//! the Services removed, and which frontends got their first backend ([`stale_flows`]), which
//! kernel entries belong to them ([`CtEntry::is_of`]),
//! and the ctnetlink messages that list the entries ([`dump_request`], read back by
//! [`parse_dump`]), delete one ([`delete_request`]) and get one by a tuple ([`get_request`],
//! read back by [`parse_get`]: the flow recorder asks it which Service a connection was sent to,
//! see `seam_agent::flows::service`).
//!
//! Why: a UDP (or SCTP) client keeps sending on one 5-tuple, and every datagram matches the
//! conntrack entry its first one made, whose destination was translated to the backend chosen
//! then: when that backend goes away the datagrams keep going to it for as long as the entry
//! lives (it is refreshed by each of them). Deleting the entry makes the next datagram a new
//! connection, translated to a backend that exists. TCP needs nothing: the client's
//! retransmissions are reset or time out, and it reconnects. This is kube-proxy's
//! `conntrack -D -p udp --orig-dst FRONTEND --dst-nat BACKEND`.
//!
//! The same holds the other way round: datagrams sent to a frontend while nothing translated it
//! (the Service had no endpoint, or the node had not written it yet) made entries that were not
//! translated, and the stream keeps following them past the translation once the frontend has a
//! backend. kube-proxy deletes the entries of a UDP Service's ClusterIP and node ports when it
//! goes from no endpoint to some; Seam deletes those of the frontend that were not translated.
//!
//! The messages are `netlink-packet-netfilter`'s conntrack messages (its 0.4 has `Get`,
//! `Delete`, both tuples and their parsing); only the netlink flags, the framing of the answers
//! (the crate parses one message, not a receive buffer) and the selection are Seam's.
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

/// Entries of a frontend that are stale: those translated to a backend it no longer has, or
/// those it did not translate now that it has backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StaleFlow {
    /// The frontend (an address and port, or a node port on any local address).
    pub frontend: FrontendKey,
    /// `Some`: the backend removed from it (address, port), whose entries are stale. `None`: the
    /// frontend had no backend and has some now: its entries that were not translated are.
    pub backend: Option<(Ipv4Addr, u16)>,
}

/// The protocols whose stale entries are deleted: those without a connection the client would
/// see fail (TCP resets or times out by itself).
fn connectionless(protocol: PortProtocol) -> bool {
    matches!(protocol, PortProtocol::Udp | PortProtocol::Sctp)
}

/// The stale flows of UDP and SCTP frontends, sorted: the (frontend, backend) pairs that `old`
/// had and `new` does not (a backend gone, or the whole frontend gone), and the frontends with
/// backends in `new` that had none in `old` (or were not there).
pub fn stale_flows(old: &DesiredServices, new: &DesiredServices) -> Vec<StaleFlow> {
    let now: BTreeMap<&FrontendKey, &Vec<(Ipv4Addr, u16)>> = new
        .frontends
        .iter()
        .map(|f| (&f.key, &f.backends))
        .collect();
    let before: BTreeMap<&FrontendKey, &Vec<(Ipv4Addr, u16)>> = old
        .frontends
        .iter()
        .map(|f| (&f.key, &f.backends))
        .collect();
    let served = new
        .frontends
        .iter()
        .filter(|f| connectionless(f.key.protocol()) && !f.backends.is_empty())
        .filter(|f| before.get(&f.key).is_none_or(|b| b.is_empty()))
        .map(|f| StaleFlow {
            frontend: f.key,
            backend: None,
        });
    let mut stale: Vec<StaleFlow> = old
        .frontends
        .iter()
        .filter(|f| connectionless(f.key.protocol()))
        .flat_map(|f| {
            let kept = now.get(&f.key);
            f.backends
                .iter()
                .filter(move |b| !kept.is_some_and(|k| k.contains(b)))
                .map(|b| StaleFlow {
                    frontend: f.key,
                    backend: Some(*b),
                })
        })
        .chain(served)
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
    /// that port of any address) and translated to its backend (the reply comes from it), or
    /// for a flow without a backend, not translated (the reply comes from where it was sent).
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
        let translated = self.reply_src != self.orig_dst;
        frontend
            && match flow.backend {
                Some(backend) => translated && self.reply_src == backend,
                None => !translated,
            }
    }
}

/// Stale flows indexed by what an entry is sent to, so that picking the stale entries of a
/// dump costs one lookup per entry whatever the number of flows (an agent that starts sees
/// every UDP frontend as given its first backends).
#[derive(Debug, Clone, Default)]
pub struct StaleIndex {
    /// Flows of frontends at an address, by (protocol number, address, port).
    at_address: BTreeMap<(u8, Ipv4Addr, u16), Vec<StaleFlow>>,
    /// Flows of node ports, by (protocol number, port).
    at_node_port: BTreeMap<(u8, u16), Vec<StaleFlow>>,
}

impl StaleIndex {
    /// The index of `flows`.
    pub fn new(flows: &[StaleFlow]) -> StaleIndex {
        let mut index = StaleIndex::default();
        for flow in flows {
            match flow.frontend {
                FrontendKey::Address {
                    addr,
                    protocol,
                    port,
                } => index
                    .at_address
                    .entry((crate::services::protocol_number(protocol), addr, port))
                    .or_default()
                    .push(*flow),
                FrontendKey::NodePort { protocol, port } => index
                    .at_node_port
                    .entry((crate::services::protocol_number(protocol), port))
                    .or_default()
                    .push(*flow),
            }
        }
        index
    }

    /// Whether `entry` is a connection of one of the flows ([`CtEntry::is_of`]).
    pub fn matches(&self, entry: &CtEntry) -> bool {
        let (addr, port) = entry.orig_dst;
        let of = |flows: Option<&Vec<StaleFlow>>| {
            flows.is_some_and(|flows| flows.iter().any(|f| entry.is_of(f)))
        };
        of(self.at_address.get(&(entry.protocol, addr, port)))
            || of(self.at_node_port.get(&(entry.protocol, port)))
    }
}

/// ctnetlink's message types are `NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_*`.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
/// An entry, as a dump or a get answers it.
const CT_NEW: u16 = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW;
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

/// Which tuple of an entry a lookup names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtDirection {
    /// The original direction (`CTA_TUPLE_ORIG`): the client to the address it used.
    Original,
    /// The reply direction (`CTA_TUPLE_REPLY`): the server (after translation, the backend) to
    /// the client (after source NAT, to the address it was translated to).
    Reply,
}

/// One lookup of an IPv4 conntrack entry by one of its tuples (`conntrack -G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtQuery {
    /// Which tuple this is.
    pub direction: CtDirection,
    /// The IP protocol number.
    pub protocol: u8,
    /// The tuple's source address and port.
    pub src: (Ipv4Addr, u16),
    /// The tuple's destination address and port.
    pub dst: (Ipv4Addr, u16),
}

/// `conntrack -G -p PROTO -s SRC --sport SPORT -d DST --dport DPORT` (with `--reply-src …` for
/// the reply tuple): a get of the one entry with that tuple. No acknowledgement is asked for:
/// the kernel answers with the entry or with an error (`ENOENT`: no such entry), one message
/// either way.
pub fn get_request(query: &CtQuery, seq: u32) -> Vec<u8> {
    let tuple = tuple(query.protocol, query.src, query.dst);
    let attribute = match query.direction {
        CtDirection::Original => ConntrackAttribute::CtaTupleOrig(tuple),
        CtDirection::Reply => ConntrackAttribute::CtaTupleReply(tuple),
    };
    message(ConntrackMessage::Get(vec![attribute]), NLM_F_REQUEST, seq)
}

/// The kernel's answer to a [`get_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetAnswer {
    /// The entry.
    Found(CtEntry),
    /// No entry has that tuple (`ENOENT`).
    Missing,
    /// The kernel refused: its errno (positive).
    Refused(i32),
}

const ENOENT: i32 = 2;

/// Reads the answer to the get of sequence number `seq` from one receive buffer; `None` when
/// the buffer holds none (an answer to an earlier request that timed out: read again).
pub fn parse_get(buf: &[u8], seq: u32) -> Option<GetAnswer> {
    messages(buf)
        .filter(|m| m.seq == seq)
        .find_map(|m| match m.kind {
            NLMSG_ERROR => match m.error() {
                0 => None,
                ENOENT => Some(GetAnswer::Missing),
                errno => Some(GetAnswer::Refused(errno)),
            },
            k if k == CT_NEW => {
                Some(entry_of(m.bytes).map_or(GetAnswer::Missing, GetAnswer::Found))
            }
            _ => None,
        })
}

/// One netlink message of a receive buffer.
struct Message<'a> {
    kind: u16,
    seq: u32,
    /// The whole message, header included.
    bytes: &'a [u8],
}

impl Message<'_> {
    /// An `NLMSG_ERROR`'s errno, positive (0: an acknowledgement).
    fn error(&self) -> i32 {
        self.bytes
            .get(16..20)
            .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    }
}

/// The messages of a receive buffer, in order, up to the first that is cut short.
fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = buf.get(at..)?;
        let word = |i: usize| {
            rest.get(i..i + 4)
                .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
        };
        let len = word(0)? as usize;
        let kind = (word(4)? & 0xffff) as u16;
        let seq = word(8)?;
        if len < 16 || len > rest.len() {
            return None;
        }
        at += (len + 3) & !3;
        Some(Message {
            kind,
            seq,
            bytes: rest.get(..len)?,
        })
    })
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
    for m in messages(buf) {
        match m.kind {
            NLMSG_DONE => part.done = true,
            NLMSG_ERROR => {
                let errno = m.error();
                if errno != 0 {
                    part.error = Some(errno);
                    part.done = true;
                }
            }
            k if k == CT_NEW => {
                if let Some(entry) = entry_of(m.bytes) {
                    part.entries.push(entry);
                }
            }
            _ => {}
        }
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
