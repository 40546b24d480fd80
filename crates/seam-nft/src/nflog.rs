//! The flow samples of `table inet seam` as values: the NFLOG messages that bind a group and
//! set it up ([`config_requests`]), and the samples read back ([`parse_samples`]): each one's
//! prefix (what the agent maps back to the rule, [`crate::names::sample_prefix`]), the packet's
//! IPv4 and transport headers, and, for a connection whose destination a Service translated, its
//! original tuple from conntrack.
//!
//! Messages are `netlink-packet-netfilter`'s NFLOG messages (its 0.4 has the config commands,
//! copy mode, flags, timeouts, and the packet attributes). By hand here: the conntrack attribute
//! of a sample (`NFULA_CT`, which the crate keeps as an opaque attribute; its content is
//! ctnetlink's attributes, parsed with the crate's conntrack types), the kernel's acknowledgement
//! codes, and the packet headers: a few fields at fixed offsets of IPv4 (RFC 791), TCP, UDP,
//! SCTP (ports first in all three) and ICMP (type first), written out rather than pulled from a
//! packet parsing crate for five fields.
//!
//! Architecture invariant: pure; `seam-linux` opens the socket (`seam_linux::nflog`).

use std::net::Ipv4Addr;

use netlink_packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NlaBuffer, NlasIterator, Parseable,
};
use netlink_packet_netfilter::conntrack::ConntrackAttribute;
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, CopyMode, PacketNla, Timeout,
    ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};

use crate::conntrack::read_tuple;

/// `NFULA_CT`: a sample's conntrack entry (with `NFULNL_CFG_F_CONNTRACK`), ctnetlink attributes.
pub const NFULA_CT: u16 = 18;

/// How a group is set up after it is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// Bytes of each packet copied (headers only).
    pub copy_range: u32,
    /// Ask for each sample's conntrack entry (the original tuple of a translated connection).
    pub conntrack: bool,
    /// Samples the kernel queues before it sends them in one message batch.
    pub queue_threshold: u32,
    /// The longest a queued sample waits, in hundredths of a second.
    pub flush_hundredths: u32,
    /// The kernel's buffer of queued samples, in bytes.
    pub buffer: u32,
}

fn serialize(message: NetlinkMessage<NetfilterMessage>, seq: u32) -> Vec<u8> {
    let mut message = message;
    message.header.sequence_number = seq;
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// The messages that bind NFLOG group `group` to the sending socket and set it up, in order,
/// each answered by an acknowledgement (the first with sequence number `seq`). A group another
/// socket holds is refused on the bind (`EPERM`). The flags follow in [`flags_request`].
pub fn config_requests(group: u16, config: &GroupConfig, seq: u32) -> Vec<Vec<u8>> {
    let family = NetfilterProtoFamily::Unspec;
    let messages = vec![
        config_request(family, group, vec![ConfigNla::Cmd(ConfigCmd::Bind)]),
        config_request(
            family,
            group,
            vec![
                ConfigNla::Mode(ConfigMode::new(config.copy_range, CopyMode::Packet)),
                ConfigNla::QThresh(config.queue_threshold),
                ConfigNla::Timeout(Timeout::new(config.flush_hundredths)),
                ConfigNla::NlBufSiz(config.buffer),
            ],
        ),
    ];
    messages
        .into_iter()
        .zip(seq..)
        .map(|(m, s)| serialize(m, s))
        .collect()
}

/// The message that sets a bound group's flags: with `conntrack`, each sample carries its
/// conntrack entry. A kernel that has not loaded `nf_conntrack_netlink` refuses it with `EAGAIN`
/// while it loads it (ask again), one without it refuses it for good.
pub fn flags_request(group: u16, conntrack: bool, seq: u32) -> Vec<u8> {
    let mut flags = ConfigFlags::empty();
    if conntrack {
        flags |= ConfigFlags::CONNTRACK;
    }
    serialize(
        config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![ConfigNla::Flags(flags)],
        ),
        seq,
    )
}

/// The message that unbinds the group (a socket that closes unbinds it too).
pub fn unbind_request(group: u16, seq: u32) -> Vec<u8> {
    serialize(
        config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![ConfigNla::Cmd(ConfigCmd::Unbind)],
        ),
        seq,
    )
}

/// The IPv4 and transport headers of a sampled packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeaders {
    /// The IP protocol number.
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (TCP, UDP, SCTP).
    pub src_port: Option<u16>,
    /// Destination port (TCP, UDP, SCTP).
    pub dst_port: Option<u16>,
    /// ICMP type.
    pub icmp_type: Option<u8>,
}

/// A connection's original direction as conntrack holds it: for a connection a Service
/// translated, the address and port the client sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtOriginal {
    /// The IP protocol number.
    pub protocol: u8,
    /// Source address and port.
    pub src: (Ipv4Addr, u16),
    /// Destination address and port, before translation.
    pub dst: (Ipv4Addr, u16),
}

/// One flow sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The NFLOG group it came from.
    pub group: u16,
    /// The log statement's prefix.
    pub prefix: String,
    /// The packet's headers (`None`: not IPv4, or too short to read).
    pub packet: Option<PacketHeaders>,
    /// The connection's original tuple, when the kernel gave its conntrack entry.
    pub original: Option<CtOriginal>,
}

/// What one receive of the socket held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// Samples, in order.
    pub samples: Vec<Sample>,
    /// Acknowledgements and errors: sequence number and errno (0: success).
    pub acks: Vec<(u32, i32)>,
}

const NLMSG_ERROR: u16 = 2;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;

/// Reads one receive buffer of an NFLOG socket. Messages this cannot read are skipped.
pub fn parse_samples(buf: &[u8]) -> Received {
    let mut out = Received::default();
    let mut at = 0usize;
    while let Some(rest) = buf.get(at..) {
        if rest.len() < 16 {
            break;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if len < 16 || len > rest.len() {
            break;
        }
        if kind == NLMSG_ERROR {
            let code = rest
                .get(16..20)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            out.acks.push((seq, -code));
        } else if kind == (NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET) {
            if let Some(sample) = rest.get(..len).and_then(sample_of) {
                out.samples.push(sample);
            }
        }
        at += (len + 3) & !3;
    }
    out
}

fn sample_of(bytes: &[u8]) -> Option<Sample> {
    let message = NetlinkMessage::<NetfilterMessage>::deserialize(bytes).ok()?;
    let NetlinkPayload::InnerMessage(message) = message.payload else {
        return None;
    };
    let group = message.header.res_id;
    let NetfilterMessageInner::ULog(ULogMessage::Packet(attributes)) = message.inner else {
        return None;
    };
    let mut sample = Sample {
        group,
        prefix: String::new(),
        packet: None,
        original: None,
    };
    for attribute in &attributes {
        match attribute {
            PacketNla::Prefix(p) => sample.prefix = p.to_string_lossy().into_owned(),
            PacketNla::Payload(p) => sample.packet = parse_headers(p),
            PacketNla::Other(other) if other.kind() == NFULA_CT => {
                sample.original = original_of(other);
            }
            _ => {}
        }
    }
    Some(sample)
}

fn original_of(ct: &DefaultNla) -> Option<CtOriginal> {
    let mut value = vec![0u8; ct.value_len()];
    ct.emit_value(&mut value);
    for nla in NlasIterator::new(value.as_slice()) {
        let Ok(nla) = nla else { break };
        if let Ok(ConntrackAttribute::CtaTupleOrig(tuple)) =
            ConntrackAttribute::parse(&NlaBuffer::new(nla.into_inner()))
        {
            let (protocol, src, dst) = read_tuple(&tuple)?;
            return Some(CtOriginal { protocol, src, dst });
        }
    }
    None
}

/// The headers of an IPv4 packet: the addresses and protocol at their RFC 791 offsets, then at
/// the header length (IHL × 4) the ports of TCP, UDP and SCTP (the first four bytes of each) or
/// the type of ICMP (the first byte). `None` for anything not IPv4 or shorter than its IPv4
/// header; a transport header cut short leaves its fields out. A fragment other than the first
/// carries no transport header.
pub fn parse_headers(packet: &[u8]) -> Option<PacketHeaders> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let header = packet.get(..ihl.max(20))?;
    let protocol = header[9];
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
    let transport = if fragment_offset == 0 {
        packet.get(ihl..)
    } else {
        None
    };
    let mut out = PacketHeaders {
        protocol,
        src,
        dst,
        src_port: None,
        dst_port: None,
        icmp_type: None,
    };
    match (protocol, transport) {
        (6 | 17 | 132, Some([a, b, c, d, ..])) => {
            out.src_port = Some(u16::from_be_bytes([*a, *b]));
            out.dst_port = Some(u16::from_be_bytes([*c, *d]));
        }
        (1, Some([t, ..])) => out.icmp_type = Some(*t),
        _ => {}
    }
    Some(out)
}

#[cfg(test)]
mod tests;
