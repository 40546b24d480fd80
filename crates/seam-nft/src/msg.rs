//! The nf_tables netlink messages of an in-place change ([`TableOp`]s), as one batch the kernel
//! applies atomically: batch begin, the messages, batch end.
//!
//! Messages are built from `netlink-packet-netfilter`'s types (tables, chains, rules, the `meta`,
//! `cmp`, `payload`, `lookup` and `immediate` expressions, sets and their descriptions, set
//! elements with interval-end flags and verdict data, batch markers) and serialized with
//! `netlink-packet-core`. Each rule is the same expressions, in the same order, as nft 1.0.6 makes
//! of the rule's text, so that `nft list` reads it back as that text (a privileged test in
//! `seam-linux` holds the two equal). The bytes are held equal to those of the encoder this module
//! replaced by the golden files in `tests/it/golden`.
//!
//! Each nf_tables message is written attribute by attribute into the batch's one buffer: the
//! crate's `NetlinkHeader` and `NetfilterHeader`, then the crate's attributes, a list attribute
//! (a rule's expressions, a message's set elements, one element or expression) written empty and
//! its length set once its items follow. Why not whole `NfTablesMessage`s: `netlink-packet-core`
//! computes a nested attribute's length afresh each time a level above asks (several times per
//! level), so the cost of emitting a tree grows exponentially with its depth; whole messages made
//! a batch of 10,000 addresses nine times slower to build than the hand-written encoder, and a
//! thousand rules three times. Only the batch markers, which carry no attribute, are whole
//! messages of the crate's.
//!
//! What `netlink-packet-netfilter` 0.4 lacks, kept by hand here:
//! - the `counter`, `log` and `limit` expressions: sent through the crate's `Expressions::Other`
//!   with raw attributes ([`NFTA_COUNTER_BYTES`], [`NFTA_COUNTER_PACKETS`], [`NFTA_LOG_PREFIX`],
//!   [`NFTA_LOG_GROUP`], [`NFTA_LOG_SNAPLEN`], [`NFTA_LIMIT_RATE`]…);
//! - the rule comment: libnftnl's userdata TLV ([`NFTNL_UDATA_RULE_COMMENT`]) in the crate's
//!   `RuleAttribute::UserData`;
//! - the `accept` and `drop` verdict codes ([`NF_ACCEPT`], [`NF_DROP`]; the crate names only
//!   nf_tables' own `jump`, `goto`, `return`, …);
//! - the values the crate takes as plain numbers: payload bases ([`NFT_PAYLOAD_NETWORK_HEADER`],
//!   [`NFT_PAYLOAD_TRANSPORT_HEADER`]), the lookup's invert flag ([`NFT_LOOKUP_F_INV`]), the
//!   `nfproto` value of IPv4 ([`NFPROTO_IPV4`]);
//! - nft's own conventions, which are no kernel ABI: the datatype numbers `nft list` prints set
//!   elements by ([`TYPE_IPADDR`], [`TYPE_INET_SERVICE`]), the anonymous set name template
//!   ([`ANONYMOUS_SET`]), and intervals as a start element and an end element one past the range
//!   (with the zero end element nft puts first in every interval set).
//!
//! The Services operations ([`TableOp::AddSvcElements`], [`TableOp::AddSvcChain`], …) add, by
//! hand, what the crate lacks for them: the `numgen`, `nat` and `dynset` expressions (raw
//! attributes through `Expressions::Other`: [`NFTA_NG_DREG`]…, [`NFTA_NAT_TYPE`]…,
//! [`NFTA_DYNSET_SET_NAME`]…), the verdict data type of an anonymous map
//! ([`NFT_DATA_VERDICT`]), the anonymous map name template ([`ANONYMOUS_MAP`]), nft's `integer`
//! datatype number ([`TYPE_INTEGER`]) and the userdata that says a key is in host byte order
//! ([`NFTNL_UDATA_SET_KEYBYTEORDER`]). Concatenated keys and data are laid out as nf_tables
//! does: each field padded to 4 bytes (a protocol number in the first byte, a port big-endian in
//! the first two), the `numgen` slot in host byte order. [`TableOp::AddServiceBase`] has no
//! netlink form (its base chains' `fib`, `reject`, `masquerade` and mark rules are not encoded
//! here): `seam-linux` sends it as `nft -f` text before the batch. A privileged test in
//! `seam-linux` holds every Services operation sent here to list exactly as `nft -f` writes the
//! same table.
//!
//! Start at [`Batch::new`].

use std::net::Ipv4Addr;

use netlink_packet_core::{
    DefaultNla, Emitable, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla,
    NlaBuffer, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute,
    Lookup, Meta, MetaKey, NfTablesMessageType, Operator, Payload, Register, RuleAttribute,
    SetAttribute, SetDescription, SetElementAttribute, SetElementFlags, SetElementList, SetFlags,
    Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterProtoFamily, NetfilterSubsystem,
};

use crate::names::{SVC_BACKENDS, SVC_BASE_CHAINS, SVC_INSIDE, SVC_NODEPORT_BACKENDS, SVC_SETS};
use crate::rule::{AddrField, NftMatch, NftRule, NftVerdict, TableOp};
use crate::services::{affinity_set_of, protocol_number, FrontendKey, SvcChain, SvcElement};

/// `NFTA_COUNTER_BYTES` (`include/uapi/linux/netfilter/nf_tables.h`).
pub const NFTA_COUNTER_BYTES: u16 = 1;
/// `NFTA_COUNTER_PACKETS`.
pub const NFTA_COUNTER_PACKETS: u16 = 2;
/// `NFTA_LOG_PREFIX`.
pub const NFTA_LOG_PREFIX: u16 = 2;
/// `NFTA_LOG_GROUP`: the NFLOG group a `log group` statement sends to.
pub const NFTA_LOG_GROUP: u16 = 1;
/// `NFTA_LOG_SNAPLEN`: how many bytes of the packet an NFLOG sample copies.
pub const NFTA_LOG_SNAPLEN: u16 = 3;
/// `NFTA_LIMIT_RATE` (`enum nft_limit_attributes`).
pub const NFTA_LIMIT_RATE: u16 = 1;
/// `NFTA_LIMIT_UNIT`: the rate's period in seconds.
pub const NFTA_LIMIT_UNIT: u16 = 2;
/// `NFTA_LIMIT_BURST`.
pub const NFTA_LIMIT_BURST: u16 = 3;
/// `NFTA_LIMIT_TYPE`: `NFT_LIMIT_PKTS` (0) counts packets.
pub const NFTA_LIMIT_TYPE: u16 = 4;
/// `NFTA_LIMIT_FLAGS`.
pub const NFTA_LIMIT_FLAGS: u16 = 5;
/// `NFT_LIMIT_F_INV`: `limit rate over`, the expression matches above the rate.
pub const NFT_LIMIT_F_INV: u32 = 1;
/// libnftnl's type of a rule comment in `NFTA_RULE_USERDATA` (a TLV: type, length, value), which
/// `nft list` prints as `comment "…"`.
pub const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
/// `NF_ACCEPT` (`include/uapi/linux/netfilter.h`).
pub const NF_ACCEPT: u32 = 1;
/// `NF_DROP`.
pub const NF_DROP: u32 = 0;
/// `NFT_PAYLOAD_NETWORK_HEADER`.
pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
/// `NFT_PAYLOAD_TRANSPORT_HEADER`.
pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
/// `NFT_LOOKUP_F_INV`: the lookup matches when the key is not in the set.
pub const NFT_LOOKUP_F_INV: u32 = 1;
/// `NFPROTO_IPV4`, the value `meta nfproto` loads for an IPv4 packet.
pub const NFPROTO_IPV4: u8 = 2;
/// nft's `ipv4_addr` datatype number, which `nft list` prints a set's elements by.
pub const TYPE_IPADDR: u32 = 7;
/// nft's `inet_service` (port) datatype number.
pub const TYPE_INET_SERVICE: u32 = 13;
/// The name the kernel numbers (`__set0`, …) when it creates an anonymous set.
pub const ANONYMOUS_SET: &str = "__set%d";

/// `NFTA_NG_DREG` (`enum nft_ng_attributes`).
pub const NFTA_NG_DREG: u16 = 1;
/// `NFTA_NG_MODULUS`.
pub const NFTA_NG_MODULUS: u16 = 2;
/// `NFTA_NG_TYPE`.
pub const NFTA_NG_TYPE: u16 = 3;
/// `NFTA_NG_OFFSET`.
pub const NFTA_NG_OFFSET: u16 = 4;
/// `NFT_NG_RANDOM`.
pub const NFT_NG_RANDOM: u32 = 1;
/// `NFTA_NAT_TYPE` (`enum nft_nat_attributes`).
pub const NFTA_NAT_TYPE: u16 = 1;
/// `NFTA_NAT_FAMILY`.
pub const NFTA_NAT_FAMILY: u16 = 2;
/// `NFTA_NAT_REG_ADDR_MIN`.
pub const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
/// `NFTA_NAT_REG_PROTO_MIN`.
pub const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
/// `NFTA_NAT_FLAGS`.
pub const NFTA_NAT_FLAGS: u16 = 7;
/// `NFT_NAT_DNAT`.
pub const NFT_NAT_DNAT: u32 = 1;
/// `NF_NAT_RANGE_PROTO_SPECIFIED` (`include/uapi/linux/netfilter/nf_nat.h`).
pub const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
/// `NFTA_DYNSET_SET_NAME` (`enum nft_dynset_attributes`).
pub const NFTA_DYNSET_SET_NAME: u16 = 1;
/// `NFTA_DYNSET_OP`.
pub const NFTA_DYNSET_OP: u16 = 3;
/// `NFTA_DYNSET_SREG_KEY`.
pub const NFTA_DYNSET_SREG_KEY: u16 = 4;
/// `NFT_DYNSET_OP_UPDATE`.
pub const NFT_DYNSET_OP_UPDATE: u32 = 1;
/// `NFT_DATA_VERDICT`: the data type of a verdict map.
pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// nft's `integer` datatype number (the key of an affinity chain's pick map: a `numgen` slot).
pub const TYPE_INTEGER: u32 = 4;
/// libnftnl's userdata type of a set's key byte order (`NFTNL_UDATA_SET_KEYBYTEORDER`), which
/// `nft list` prints the keys by.
pub const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
/// nft's `BYTEORDER_HOST_ENDIAN`.
pub const BYTEORDER_HOST_ENDIAN: u32 = 1;
/// The name the kernel numbers when it creates an anonymous map.
pub const ANONYMOUS_MAP: &str = "__map%d";
/// The size nft gives a dynamic set declared without one (what `nft list` prints back).
pub const AFFINITY_SET_SIZE: u32 = 65535;

/// Elements per message: keeps every message far below netlink's size limits.
pub const ELEMENTS_PER_MESSAGE: usize = 256;

/// The sequence number of the batch begin message; the batch's messages follow it, one each.
const BEGIN_SEQ: u32 = 0;

/// One nf_tables batch of a table's in-place changes: the bytes to send on a `NETLINK_NETFILTER`
/// socket, and what each message does (for the error of a refused one). Every message asks for an
/// acknowledgement; the batch markers get none.
#[derive(Debug)]
pub struct Batch<'a> {
    ops: &'a [TableOp],
    bytes: Vec<u8>,
    /// Per message, in sequence order from [`Batch::first_seq`]: the operation it belongs to.
    parts: Vec<Part>,
}

/// Which operation a message belongs to, and which of its messages it is.
#[derive(Debug, Clone, Copy)]
struct Part {
    /// Index in the batch's operations.
    op: usize,
    what: What,
}

#[derive(Debug, Clone, Copy)]
enum What {
    /// The operation's one message (or, for a chain deletion, the deletion after the flush).
    Main,
    /// Elements of a set or map, this many.
    Elements(usize),
    /// A rule's anonymous port set.
    PortSet,
    /// Elements of a rule's anonymous port set.
    Ports,
    /// The flush of a chain before its deletion.
    Flush,
    /// Elements of a Services set or map (its index in [`SVC_SETS`]), this many.
    SvcElements {
        /// The set's index in [`SVC_SETS`].
        set: usize,
        /// How many.
        count: usize,
    },
    /// A rule's anonymous verdict map (an affinity chain's random pick).
    PickMap,
    /// The elements of a rule's anonymous verdict map.
    Picks,
    /// One rule of a Services chain.
    SvcRule,
}

/// The index of a Services set or map in [`SVC_SETS`].
fn svc_set_index(set: &str) -> Option<usize> {
    SVC_SETS.iter().position(|s| *s == set)
}

impl<'a> Batch<'a> {
    /// Builds the batch applying `ops`, in order, to `table inet <table>`.
    pub fn new(table: &str, ops: &'a [TableOp]) -> Self {
        let mut batch = Batch {
            ops,
            bytes: Vec::with_capacity(256 * (ops.len() + 2)),
            parts: Vec::with_capacity(ops.len()),
        };
        batch.marker(ControlMessage::BatchBegin, BEGIN_SEQ);
        for (index, op) in ops.iter().enumerate() {
            batch.op(table, index, op);
        }
        let end = batch.last_seq().wrapping_add(1);
        batch.marker(ControlMessage::BatchEnd, end);
        batch
    }

    /// The whole batch, ready for one `send`.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many messages the kernel answers (every one but the batch markers).
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether the batch changes nothing (only its markers).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The sequence number of the first answered message.
    pub fn first_seq(&self) -> u32 {
        BEGIN_SEQ.wrapping_add(1)
    }

    /// The sequence number of the last answered message.
    pub fn last_seq(&self) -> u32 {
        BEGIN_SEQ.wrapping_add(u32::try_from(self.parts.len()).unwrap_or(u32::MAX))
    }

    /// What the message of sequence number `seq` does, as an error names it (`add rule …`,
    /// `delete 3 element(s) of g/web`); `None` for a number not in the batch. Written only when
    /// asked, so that a batch that succeeds renders no rule text.
    pub fn operation(&self, seq: u32) -> Option<String> {
        let index = usize::try_from(seq.checked_sub(self.first_seq())?).ok()?;
        let part = self.parts.get(index)?;
        let op = self.ops.get(part.op)?;
        Some(describe(op, part.what))
    }

    fn next_seq(&mut self, op: usize, what: What) -> u32 {
        self.parts.push(Part { op, what });
        self.last_seq()
    }

    /// A batch begin or end marker: a whole message of the crate's.
    fn marker(&mut self, marker: ControlMessage, seq: u32) {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = seq;
        let message = NetfilterMessage::new(
            // The batch markers name the subsystem the batch is for in `res_id`.
            NetfilterHeader::new(
                NetfilterProtoFamily::Unspec,
                0,
                u16::from(u8::from(NetfilterSubsystem::NfTables)),
            ),
            marker,
        );
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        message.finalize();
        self.emit(&message);
    }

    /// Serializes a value of the crate's at the end of the batch.
    fn emit<T: Emitable>(&mut self, value: &T) {
        let at = self.bytes.len();
        self.bytes.resize(at + value.buffer_len(), 0);
        if let Some(buffer) = self.bytes.get_mut(at..) {
            value.emit(buffer);
        }
    }

    /// Starts an nf_tables message of `table inet …` that asks for an acknowledgement; its
    /// attributes follow ([`Batch::attr`]) and [`Batch::end`] closes it. Returns where it starts.
    fn begin(&mut self, message: NfTablesMessageType, flags: u16, seq: u32) -> usize {
        let start = self.bytes.len();
        let mut header = NetlinkHeader::default();
        header.message_type =
            (u16::from(u8::from(NetfilterSubsystem::NfTables)) << 8) | u16::from(u8::from(message));
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq;
        self.emit(&header);
        self.emit(&NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0));
        start
    }

    /// Ends the message started at `start`: its length is what was written since.
    fn end(&mut self, start: usize) {
        let len = u32::try_from(self.bytes.len() - start).unwrap_or(u32::MAX);
        if let Some(message) = self.bytes.get_mut(start..) {
            NetlinkBuffer::new(message).set_length(len);
        }
    }

    /// Appends one attribute of the message; returns where it starts. An attribute that nests a
    /// list (a rule's expressions, a message's elements) is written empty, its items appended one
    /// by one, then closed with [`Batch::end_nest`].
    fn attr<T: Nla>(&mut self, attr: &T) -> usize {
        let start = self.bytes.len();
        self.emit(attr);
        start
    }

    /// Closes the nested attribute started at `start` around what was appended since.
    fn end_nest(&mut self, start: usize) {
        let len = u16::try_from(self.bytes.len() - start).unwrap_or(u16::MAX);
        if let Some(nest) = self.bytes.get_mut(start..) {
            NlaBuffer::new(nest).set_length(len);
        }
    }

    /// Appends one expression of a rule, a list item holding the expression's name and data, as
    /// the crate makes them, but written attribute by attribute (see [`Batch::attr`]).
    fn expr(&mut self, expression: Expressions) {
        let item = self.attr(&ListAttribute::<ExpressionAttribute>::Element(Vec::new()));
        if let ListAttribute::Element(attributes) = ListAttribute::from(expression) {
            for attribute in &attributes {
                self.attr(attribute);
            }
        }
        self.end_nest(item);
    }

    /// The messages of one operation.
    fn op(&mut self, table: &str, index: usize, op: &TableOp) {
        match op {
            TableOp::AddSet { name, interval } => {
                let seq = self.next_seq(index, What::Main);
                let flags = if *interval {
                    SetFlags::Interval
                } else {
                    SetFlags::empty()
                };
                let start = self.begin(NfTablesMessageType::NewSet, NLM_F_CREATE, seq);
                self.attr(&SetAttribute::Table(table.to_string()));
                self.attr(&SetAttribute::Name(name.clone()));
                self.attr(&SetAttribute::Flags(flags));
                self.attr(&SetAttribute::KeyType(TYPE_IPADDR));
                self.attr(&SetAttribute::KeyLen(4));
                // The id a rule's lookup in the same batch could find the set by.
                self.attr(&SetAttribute::Id(seq));
                self.end(start);
            }
            TableOp::AddAddrs { set, addrs } => {
                self.elements(table, index, true, set, None, addrs.iter().map(key));
            }
            TableOp::DeleteAddrs { set, addrs } => {
                self.elements(table, index, false, set, None, addrs.iter().map(key));
            }
            TableOp::AddRanges { set, ranges } => {
                let elements = interval_elements(ranges, true);
                self.elements(table, index, true, set, None, elements);
            }
            TableOp::DeleteRanges { set, ranges } => {
                let elements = interval_elements(ranges, false);
                self.elements(table, index, false, set, None, elements);
            }
            TableOp::AddGotos { map, entries } => {
                let elements = entries.iter().map(|(address, chain)| Element {
                    key: address.octets().to_vec(),
                    end: false,
                    goto: Some(chain.as_str()),
                    value: None,
                });
                self.elements(table, index, true, map, None, elements);
            }
            TableOp::DeleteKeys { map, keys } => {
                self.elements(table, index, false, map, None, keys.iter().map(key));
            }
            TableOp::AddRule { chain, rule } => self.rule(table, index, chain, rule),
            TableOp::AddChain { name } => {
                let seq = self.next_seq(index, What::Main);
                let start = self.begin(NfTablesMessageType::NewChain, NLM_F_CREATE, seq);
                self.attr(&ChainAttribute::Table(table.to_string()));
                self.attr(&ChainAttribute::Name(name.clone()));
                self.end(start);
            }
            TableOp::AddJump {
                chain,
                target,
                goto,
            } => {
                let seq = self.next_seq(index, What::Main);
                let code = if *goto { Verdict::Goto } else { Verdict::Jump };
                let flags = NLM_F_CREATE | NLM_F_APPEND;
                let start = self.begin(NfTablesMessageType::NewRule, flags, seq);
                self.attr(&RuleAttribute::Table(table.to_string()));
                self.attr(&RuleAttribute::Chain(chain.clone()));
                let expressions = self.attr(&RuleAttribute::Expressions(Vec::new()));
                self.expr(immediate(verdict(code, Some(target))));
                self.end_nest(expressions);
                self.end(start);
            }
            TableOp::DeleteChain { name } => self.delete_chain(table, index, name),
            TableOp::DeleteSet { name } => self.delete_set(table, index, name),
            // No netlink form: `seam-linux` applies it as `nft -f` text
            // (`crate::services::base_text`) before the batch (see the module docs).
            TableOp::AddServiceBase => {}
            TableOp::DeleteServiceBase => {
                for chain in SVC_BASE_CHAINS {
                    self.delete_chain(table, index, chain);
                }
                for set in SVC_SETS {
                    self.delete_set(table, index, set);
                }
            }
            TableOp::AddSvcElements { elements } => self.svc_elements(table, index, true, elements),
            TableOp::DeleteSvcElements { elements } => {
                self.svc_elements(table, index, false, elements)
            }
            TableOp::AddAffinitySet { name, timeout } => {
                let seq = self.next_seq(index, What::Main);
                let start = self.begin(NfTablesMessageType::NewSet, NLM_F_CREATE, seq);
                self.attr(&SetAttribute::Table(table.to_string()));
                self.attr(&SetAttribute::Name(name.clone()));
                self.attr(&SetAttribute::Flags(SetFlags::Timeout | SetFlags::Eval));
                self.attr(&SetAttribute::KeyType(TYPE_IPADDR));
                self.attr(&SetAttribute::KeyLen(4));
                self.attr(&SetAttribute::Id(seq));
                self.attr(&SetAttribute::Timeout(u64::from(*timeout) * 1000));
                self.attr(&SetAttribute::Description(vec![SetDescription::Size(
                    AFFINITY_SET_SIZE,
                )]));
                self.end(start);
            }
            TableOp::AddSvcChain { name, chain } => {
                let seq = self.next_seq(index, What::Main);
                let start = self.begin(NfTablesMessageType::NewChain, NLM_F_CREATE, seq);
                self.attr(&ChainAttribute::Table(table.to_string()));
                self.attr(&ChainAttribute::Name(name.clone()));
                self.end(start);
                self.svc_chain_rules(table, index, name, chain);
            }
        }
    }

    fn delete_set(&mut self, table: &str, index: usize, name: &str) {
        let seq = self.next_seq(index, What::Main);
        let start = self.begin(NfTablesMessageType::DeleteSet, 0, seq);
        self.attr(&SetAttribute::Table(table.to_string()));
        self.attr(&SetAttribute::Name(name.to_string()));
        self.end(start);
    }

    fn delete_chain(&mut self, table: &str, index: usize, name: &str) {
        // Flush first: a chain is deleted only once it holds no rules.
        let seq = self.next_seq(index, What::Flush);
        let start = self.begin(NfTablesMessageType::DeleteRule, 0, seq);
        self.attr(&RuleAttribute::Table(table.to_string()));
        self.attr(&RuleAttribute::Chain(name.to_string()));
        self.end(start);
        let seq = self.next_seq(index, What::Main);
        let start = self.begin(NfTablesMessageType::DeleteChain, 0, seq);
        self.attr(&ChainAttribute::Table(table.to_string()));
        self.attr(&ChainAttribute::Name(name.to_string()));
        self.end(start);
    }

    /// Services elements, one message (or more) per run of elements of one set.
    fn svc_elements(&mut self, table: &str, index: usize, add: bool, elements: &[SvcElement]) {
        let mut rest = elements;
        while let Some(first) = rest.first() {
            let set = first.set();
            let run = rest.iter().take_while(|e| e.set() == set).count();
            let (now, later) = rest.split_at(run);
            rest = later;
            if set == SVC_INSIDE {
                let ranges: Vec<(Ipv4Addr, Ipv4Addr)> = now
                    .iter()
                    .filter_map(|e| match e {
                        SvcElement::Inside(s, e) => Some((*s, *e)),
                        _ => None,
                    })
                    .collect();
                let elements: Vec<Element<'static>> = interval_elements(&ranges, add).collect();
                self.elements(table, index, add, set, None, elements.into_iter());
            } else {
                self.elements(table, index, add, set, None, now.iter().map(svc_element));
            }
        }
    }

    /// Starts a rule of a Services chain; returns the message start and the expressions' nest.
    fn begin_rule(&mut self, table: &str, index: usize, chain: &str) -> (usize, usize) {
        let seq = self.next_seq(index, What::SvcRule);
        let start = self.begin(
            NfTablesMessageType::NewRule,
            NLM_F_CREATE | NLM_F_APPEND,
            seq,
        );
        self.attr(&RuleAttribute::Table(table.to_string()));
        self.attr(&RuleAttribute::Chain(chain.to_string()));
        let expressions = self.attr(&RuleAttribute::Expressions(Vec::new()));
        (start, expressions)
    }

    fn end_rule(&mut self, (start, expressions): (usize, usize)) {
        self.end_nest(expressions);
        self.end(start);
    }

    /// `meta nfproto ipv4`: nft's test before the first IPv4 field in an `inet` table.
    fn ipv4(&mut self) {
        self.expr(meta(MetaKey::Nfproto));
        self.expr(cmp(Operator::Equal, &[NFPROTO_IPV4]));
    }

    /// The rules of a Services chain: the expressions nft 1.0.6 makes of
    /// [`crate::services::chain_rules`], in the same order and registers.
    fn svc_chain_rules(&mut self, table: &str, index: usize, name: &str, chain: &SvcChain) {
        match chain {
            SvcChain::Spread { count } => {
                // dnat ip to ip daddr . meta l4proto . th dport . numgen random mod N map @svc_backends
                let rule = self.begin_rule(table, index, name);
                self.ipv4();
                self.expr(payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4));
                self.expr(meta_to(MetaKey::L4Proto, Register::Reg32_01));
                self.expr(payload_to(
                    NFT_PAYLOAD_TRANSPORT_HEADER,
                    2,
                    2,
                    Register::Reg32_02,
                ));
                self.expr(numgen(Register::Reg32_03, *count));
                self.expr(map_lookup(SVC_BACKENDS, None, Register::Reg1));
                self.expr(dnat(Register::Reg1, Register::Reg32_01, 0));
                self.end_rule(rule);
            }
            SvcChain::NodeSpread { count } => {
                // dnat ip to meta l4proto . th dport . numgen random mod N map @svc_np_backends
                let rule = self.begin_rule(table, index, name);
                self.expr(meta(MetaKey::L4Proto));
                self.expr(payload_to(
                    NFT_PAYLOAD_TRANSPORT_HEADER,
                    2,
                    2,
                    Register::Reg32_01,
                ));
                self.expr(numgen(Register::Reg32_02, *count));
                self.expr(map_lookup(SVC_NODEPORT_BACKENDS, None, Register::Reg1));
                self.expr(dnat(Register::Reg1, Register::Reg32_01, 0));
                self.end_rule(rule);
            }
            SvcChain::Sticky {
                protocol,
                backend: (addr, port),
            } => {
                // update @aff_<h> { ip saddr }
                let rule = self.begin_rule(table, index, name);
                self.ipv4();
                self.expr(payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4));
                self.expr(Expressions::Other {
                    expression_type: "dynset".to_string(),
                    attributes: vec![
                        DefaultNla::new(NFTA_DYNSET_SET_NAME, strz(&affinity_set_of(name))),
                        DefaultNla::new(NFTA_DYNSET_OP, be32(NFT_DYNSET_OP_UPDATE)),
                        DefaultNla::new(NFTA_DYNSET_SREG_KEY, be32(u32::from(Register::Reg1))),
                    ],
                });
                self.end_rule(rule);
                // meta l4proto <p> dnat ip to <addr>:<port>
                let rule = self.begin_rule(table, index, name);
                self.expr(meta(MetaKey::L4Proto));
                self.expr(cmp(Operator::Equal, &[protocol_number(*protocol)]));
                self.expr(Expressions::Immediate(vec![
                    Immediate::DestinationRegister(Register::Reg1),
                    Immediate::Data(DataAttribute::Value(addr.octets().to_vec())),
                ]));
                self.expr(Expressions::Immediate(vec![
                    Immediate::DestinationRegister(Register::Reg2),
                    Immediate::Data(DataAttribute::Value(port.to_be_bytes().to_vec())),
                ]));
                self.expr(dnat(
                    Register::Reg1,
                    Register::Reg2,
                    NF_NAT_RANGE_PROTO_SPECIFIED,
                ));
                self.end_rule(rule);
            }
            SvcChain::Affinity { sticky } => {
                for se in sticky {
                    // ip saddr @aff_<h> goto se_<h>
                    let rule = self.begin_rule(table, index, name);
                    self.ipv4();
                    self.expr(payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4));
                    self.expr(lookup(&affinity_set_of(se), None, false));
                    self.expr(immediate(verdict(Verdict::Goto, Some(se))));
                    self.end_rule(rule);
                }
                // numgen random mod N vmap { 0 : goto se_…, … }: an anonymous verdict map first.
                let id = self.next_seq(index, What::PickMap);
                let count = u32::try_from(sticky.len()).unwrap_or(u32::MAX);
                let start = self.begin(NfTablesMessageType::NewSet, NLM_F_CREATE, id);
                self.attr(&SetAttribute::Table(table.to_string()));
                self.attr(&SetAttribute::Name(ANONYMOUS_MAP.to_string()));
                self.attr(&SetAttribute::Flags(
                    SetFlags::Anonymous | SetFlags::Constant | SetFlags::Map,
                ));
                self.attr(&SetAttribute::KeyType(TYPE_INTEGER));
                self.attr(&SetAttribute::KeyLen(4));
                self.attr(&SetAttribute::DataType(NFT_DATA_VERDICT));
                self.attr(&SetAttribute::Id(id));
                self.attr(&SetAttribute::Description(vec![SetDescription::Size(
                    count,
                )]));
                // The slot is in host byte order (what `numgen` writes): nft's userdata says
                // so, or `nft list` prints the keys byte-swapped.
                let mut udata = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
                udata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
                self.attr(&SetAttribute::UserData(udata));
                self.end(start);
                let picks = (0u32..).zip(sticky).map(|(slot, se)| Element {
                    key: slot.to_ne_bytes().to_vec(),
                    end: false,
                    goto: Some(se.as_str()),
                    value: None,
                });
                self.elements(table, index, true, ANONYMOUS_MAP, Some(id), picks);
                if let Some(Part { what, .. }) = self.parts.last_mut() {
                    *what = What::Picks;
                }
                let rule = self.begin_rule(table, index, name);
                self.expr(numgen(Register::Reg1, count));
                self.expr(map_lookup(ANONYMOUS_MAP, Some(id), Register::Verdict));
                self.end_rule(rule);
            }
            SvcChain::Adopted => {}
        }
    }

    /// Adds (or deletes) elements of a set, [`ELEMENTS_PER_MESSAGE`] to a message. `set_id` finds
    /// a set created earlier in the same batch (an anonymous one).
    fn elements<'e>(
        &mut self,
        table: &str,
        index: usize,
        add: bool,
        set: &str,
        set_id: Option<u32>,
        elements: impl Iterator<Item = Element<'e>>,
    ) {
        let (message, flags) = if add {
            (NfTablesMessageType::NewSetElement, NLM_F_CREATE)
        } else {
            (NfTablesMessageType::DeleteSetElement, 0)
        };
        let mut elements = elements.peekable();
        while elements.peek().is_some() {
            let seq = match (set_id, svc_set_index(set)) {
                (Some(_), _) => self.next_seq(index, What::Ports),
                (None, Some(set)) => self.next_seq(index, What::SvcElements { set, count: 0 }),
                (None, None) => self.next_seq(index, What::Elements(0)),
            };
            let start = self.begin(message, flags, seq);
            self.attr(&SetElementList::Table(table.to_string()));
            self.attr(&SetElementList::Set(set.to_string()));
            if let Some(id) = set_id {
                self.attr(&SetElementList::SetId(id));
            }
            let list = self.attr(&SetElementList::Elements(Vec::new()));
            let mut count = 0;
            for element in elements.by_ref().take(ELEMENTS_PER_MESSAGE) {
                // Written as a list item of its own attributes, not as the crate's
                // `ListAttribute::Element`: no list to allocate per element.
                let item = self.attr(&ListAttribute::<SetElementAttribute>::Element(Vec::new()));
                self.attr(&SetElementAttribute::Key(DataAttribute::Value(element.key)));
                if element.end {
                    self.attr(&SetElementAttribute::Flags(SetElementFlags::IntervalEnd));
                }
                if let Some(chain) = element.goto {
                    self.attr(&SetElementAttribute::Data(verdict(
                        Verdict::Goto,
                        Some(chain),
                    )));
                }
                if let Some(value) = element.value {
                    self.attr(&SetElementAttribute::Data(DataAttribute::Value(value)));
                }
                self.end_nest(item);
                count += 1;
            }
            self.end_nest(list);
            self.end(start);
            if let Some(Part {
                what: What::Elements(n) | What::SvcElements { count: n, .. },
                ..
            }) = self.parts.last_mut()
            {
                *n = count;
            }
        }
    }

    /// An anonymous constant set of ports for one rule (`th dport { 80, 8000-8080 }`) and its
    /// elements; returns the id the rule's lookup finds it by in this batch.
    fn port_set(&mut self, table: &str, index: usize, ranges: &[(u16, u16)]) -> u32 {
        let interval = ranges.iter().any(|(s, e)| s != e);
        let id = self.next_seq(index, What::PortSet);
        let mut flags = SetFlags::Anonymous | SetFlags::Constant;
        if interval {
            flags |= SetFlags::Interval;
        }
        let size = u32::try_from(port_elements(ranges, interval).count()).unwrap_or(u32::MAX);
        let start = self.begin(NfTablesMessageType::NewSet, NLM_F_CREATE, id);
        self.attr(&SetAttribute::Table(table.to_string()));
        self.attr(&SetAttribute::Name(ANONYMOUS_SET.to_string()));
        self.attr(&SetAttribute::Flags(flags));
        self.attr(&SetAttribute::KeyType(TYPE_INET_SERVICE));
        self.attr(&SetAttribute::KeyLen(2));
        self.attr(&SetAttribute::Id(id));
        self.attr(&SetAttribute::Description(vec![SetDescription::Size(size)]));
        self.end(start);
        let elements = port_elements(ranges, interval)
            .map(|(port, end)| element(port.to_be_bytes().to_vec(), end));
        self.elements(table, index, true, ANONYMOUS_SET, Some(id), elements);
        id
    }

    /// A policy rule: the same expressions, in the same order, as nft makes of the rule's text;
    /// two kernel rules when its samples are rate limited (see [`crate::NftSample::limit`]).
    fn rule(&mut self, table: &str, index: usize, chain: &str, rule: &NftRule) {
        if let Some(rate) = rule.sample.as_ref().and_then(|s| s.limit) {
            self.kernel_rule(table, index, chain, rule, Some(rate));
        }
        self.kernel_rule(table, index, chain, rule, None);
    }

    /// One kernel rule of a policy rule: with `over` the one that takes (and counts) what the
    /// sample limit suppresses, without it the rule itself (sampled, when it is).
    fn kernel_rule(
        &mut self,
        table: &str,
        index: usize,
        chain: &str,
        rule: &NftRule,
        over: Option<u32>,
    ) {
        // Anonymous sets first: the rule's lookup refers to them.
        let mut port_sets: Vec<u32> = Vec::new();
        for test in &rule.matches {
            if let NftMatch::DstPorts(ranges) = test {
                if ranges.len() > 1 {
                    let id = self.port_set(table, index, ranges);
                    port_sets.push(id);
                }
            }
        }
        let mut port_sets = port_sets.into_iter();
        let seq = self.next_seq(index, What::Main);
        let start = self.begin(
            NfTablesMessageType::NewRule,
            NLM_F_CREATE | NLM_F_APPEND,
            seq,
        );
        self.attr(&RuleAttribute::Table(table.to_string()));
        self.attr(&RuleAttribute::Chain(chain.to_string()));
        let expressions = self.attr(&RuleAttribute::Expressions(Vec::new()));
        // nft tests the family once per rule, before the first IPv4 address (an `inet` table sees
        // IPv6 too).
        let mut family_tested = false;
        for test in &rule.matches {
            match test {
                NftMatch::AddrInSet { field, set, negate } => {
                    if !family_tested {
                        self.expr(meta(MetaKey::Nfproto));
                        self.expr(cmp(Operator::Equal, &[NFPROTO_IPV4]));
                        family_tested = true;
                    }
                    let offset = match field {
                        AddrField::Source => 12,
                        AddrField::Destination => 16,
                    };
                    self.expr(payload(NFT_PAYLOAD_NETWORK_HEADER, offset, 4));
                    self.expr(lookup(set, None, *negate));
                }
                NftMatch::L4Proto(p) => {
                    self.expr(meta(MetaKey::L4Proto));
                    self.expr(cmp(Operator::Equal, &[*p]));
                }
                NftMatch::DstPorts(ranges) => {
                    self.expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
                    match ranges.as_slice() {
                        [_, _, ..] => {
                            let id = port_sets.next();
                            self.expr(lookup(ANONYMOUS_SET, id, false));
                        }
                        [(s, e)] if s == e => {
                            self.expr(cmp(Operator::Equal, &s.to_be_bytes()));
                        }
                        [(s, e)] => {
                            self.expr(cmp(Operator::GreatherThanEqual, &s.to_be_bytes()));
                            self.expr(cmp(Operator::LessThanEqual, &e.to_be_bytes()));
                        }
                        // No ports never matches: an empty range.
                        [] => {
                            self.expr(cmp(Operator::GreatherThanEqual, &[0xff, 0xff]));
                            self.expr(cmp(Operator::LessThanEqual, &[0, 0]));
                        }
                    }
                }
                NftMatch::IcmpType(t) => {
                    self.expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1));
                    self.expr(cmp(Operator::Equal, &[*t]));
                }
            }
        }
        if let Some(rate) = over {
            self.expr(Expressions::Other {
                expression_type: "limit".to_string(),
                attributes: vec![
                    DefaultNla::new(NFTA_LIMIT_RATE, u64::from(rate).to_be_bytes().to_vec()),
                    DefaultNla::new(NFTA_LIMIT_UNIT, 1u64.to_be_bytes().to_vec()),
                    DefaultNla::new(NFTA_LIMIT_BURST, rate.to_be_bytes().to_vec()),
                    DefaultNla::new(NFTA_LIMIT_TYPE, 0u32.to_be_bytes().to_vec()),
                    DefaultNla::new(NFTA_LIMIT_FLAGS, NFT_LIMIT_F_INV.to_be_bytes().to_vec()),
                ],
            });
        }
        self.expr(Expressions::Other {
            expression_type: "counter".to_string(),
            attributes: vec![
                DefaultNla::new(NFTA_COUNTER_BYTES, vec![0; 8]),
                DefaultNla::new(NFTA_COUNTER_PACKETS, vec![0; 8]),
            ],
        });
        if let Some(prefix) = &rule.log_prefix {
            self.expr(Expressions::Other {
                expression_type: "log".to_string(),
                attributes: vec![DefaultNla::new(NFTA_LOG_PREFIX, strz(prefix))],
            });
        }
        if let (Some(sample), None) = (&rule.sample, over) {
            self.expr(Expressions::Other {
                expression_type: "log".to_string(),
                attributes: vec![
                    DefaultNla::new(NFTA_LOG_PREFIX, strz(&sample.prefix)),
                    DefaultNla::new(NFTA_LOG_GROUP, sample.group.to_be_bytes().to_vec()),
                    DefaultNla::new(NFTA_LOG_SNAPLEN, sample.snaplen.to_be_bytes().to_vec()),
                ],
            });
        }
        let code = match rule.verdict {
            NftVerdict::Accept => Verdict::from(NF_ACCEPT),
            NftVerdict::Drop => Verdict::from(NF_DROP),
            NftVerdict::Return => Verdict::Return,
        };
        self.expr(immediate(verdict(code, None)));
        self.end_nest(expressions);
        self.attr(&RuleAttribute::UserData(comment(&rule.comment)));
        self.end(start);
    }
}

/// What a message does, as the error of a refused batch names it.
fn describe(op: &TableOp, what: What) -> String {
    let count = match what {
        What::Elements(count) => count,
        _ => 0,
    };
    match (op, what) {
        (_, What::PortSet) => "add the rule's port set".to_string(),
        (_, What::Ports) => "add the rule's ports".to_string(),
        (_, What::PickMap) => "add the rule's pick map".to_string(),
        (_, What::Picks) => "add the rule's picks".to_string(),
        (TableOp::AddSvcChain { name, .. }, What::SvcRule) => format!("add a rule to chain {name}"),
        (TableOp::DeleteSvcElements { .. }, What::SvcElements { set, count }) => format!(
            "delete {count} element(s) of {}",
            SVC_SETS.get(set).copied().unwrap_or("?")
        ),
        (_, What::SvcElements { set, count }) => format!(
            "add {count} element(s) of {}",
            SVC_SETS.get(set).copied().unwrap_or("?")
        ),
        (TableOp::AddServiceBase, _) => "add the Services base (nft -f text)".to_string(),
        (TableOp::DeleteServiceBase, What::Flush) => "flush a Services base chain".to_string(),
        (TableOp::DeleteServiceBase, _) => "delete the Services base".to_string(),
        (TableOp::AddAffinitySet { name, .. }, _) => format!("add set {name}"),
        (TableOp::AddSvcChain { name, .. }, _) => format!("add chain {name}"),
        (TableOp::AddSvcElements { .. } | TableOp::DeleteSvcElements { .. }, _) => {
            "change Services elements".to_string()
        }
        (
            TableOp::AddAddrs { set, .. }
            | TableOp::AddRanges { set, .. }
            | TableOp::AddGotos { map: set, .. },
            _,
        ) => format!("add {count} element(s) of {set}"),
        (
            TableOp::DeleteAddrs { set, .. }
            | TableOp::DeleteRanges { set, .. }
            | TableOp::DeleteKeys { map: set, .. },
            _,
        ) => format!("delete {count} element(s) of {set}"),
        (TableOp::DeleteChain { name }, What::Flush) => format!("flush chain {name}"),
        (TableOp::DeleteChain { name }, _) => format!("delete chain {name}"),
        (TableOp::AddSet { name, .. }, _) => format!("add set {name}"),
        (TableOp::DeleteSet { name }, _) => format!("delete set {name}"),
        (TableOp::AddChain { name }, _) => format!("add chain {name}"),
        // One line, even for a rule of two kernel rules (see `NftSample::limit`).
        (TableOp::AddRule { chain, rule }, _) => {
            format!("add rule {chain} {}", rule.to_string().replace('\n', "; "))
        }
        (
            TableOp::AddJump {
                chain,
                target,
                goto,
            },
            _,
        ) => format!(
            "add rule {chain} {} {target}",
            if *goto { "goto" } else { "jump" }
        ),
    }
}

/// A NUL-terminated string attribute value.
fn strz(text: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(text.len() + 1);
    value.extend_from_slice(text.as_bytes());
    value.push(0);
    value
}

/// The rule's comment as libnftnl stores it in the rule's userdata: type, length (with the NUL),
/// NUL-terminated text. The length is one byte; a comment is at most 127 bytes.
fn comment(text: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(text.len() + 3);
    value.push(NFTNL_UDATA_RULE_COMMENT);
    value.push(u8::try_from(text.len() + 1).unwrap_or(u8::MAX));
    value.extend_from_slice(text.as_bytes());
    value.push(0);
    value
}

/// Verdict data: a code and, for `jump` and `goto`, the chain.
fn verdict(code: Verdict, chain: Option<&str>) -> DataAttribute {
    let mut attributes = vec![VerdictAttribute::Code(code)];
    if let Some(chain) = chain {
        attributes.push(VerdictAttribute::Chain(chain.to_string()));
    }
    DataAttribute::Verdict(attributes)
}

/// `immediate`: loads verdict data into the verdict register.
fn immediate(data: DataAttribute) -> Expressions {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(data),
    ])
}

fn meta(key: MetaKey) -> Expressions {
    Expressions::Meta(vec![
        Meta::Key(key),
        Meta::DestinationRegister(Register::Reg1),
    ])
}

fn cmp(op: Operator, value: &[u8]) -> Expressions {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(value.to_vec())),
    ])
}

fn payload(base: u32, offset: u32, len: u32) -> Expressions {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
}

fn lookup(set: &str, id: Option<u32>, invert: bool) -> Expressions {
    let mut attributes = vec![
        Lookup::Set(set.to_string()),
        Lookup::SourceRegister(Register::Reg1),
    ];
    if let Some(id) = id {
        attributes.push(Lookup::SetId(id));
    }
    if invert {
        attributes.push(Lookup::Flags(NFT_LOOKUP_F_INV));
    }
    Expressions::Lookup(attributes)
}

/// A set element: its key, whether it ends an interval and, in a verdict map, the chain it goes
/// to, or in a data map, its value.
struct Element<'a> {
    key: Vec<u8>,
    end: bool,
    goto: Option<&'a str>,
    value: Option<Vec<u8>>,
}

/// An element that is a key alone.
fn element<'a>(key: Vec<u8>, end: bool) -> Element<'a> {
    Element {
        key,
        end,
        goto: None,
        value: None,
    }
}

/// An element that is an address alone: a hash set's address, or a map's key to delete.
fn key<'a>(address: &Ipv4Addr) -> Element<'a> {
    element(address.octets().to_vec(), false)
}

/// The elements of an interval set: a start element and an end element one past each range (none
/// after a range ending at 255.255.255.255), after, when adding, the zero end element nft puts in
/// every interval set.
fn interval_elements(
    ranges: &[(Ipv4Addr, Ipv4Addr)],
    adding: bool,
) -> impl Iterator<Item = Element<'static>> + '_ {
    let zero = adding.then(|| element(Ipv4Addr::UNSPECIFIED.octets().to_vec(), true));
    zero.into_iter()
        .chain(ranges.iter().flat_map(|(start, end)| {
            let after = u32::from(*end)
                .checked_add(1)
                .map(|after| element(after.to_be_bytes().to_vec(), true));
            std::iter::once(key(start)).chain(after)
        }))
}

/// The keys of an anonymous set of ports, each with whether it ends an interval: the ports of a
/// hash set, or for an interval set a start and (one past the) end of each range, after a zero end
/// element when the first range does not start at zero, as nft sends them.
fn port_elements(ranges: &[(u16, u16)], interval: bool) -> impl Iterator<Item = (u16, bool)> + '_ {
    let zero = (interval && ranges.first().is_some_and(|(s, _)| *s > 0)).then_some((0, true));
    zero.into_iter()
        .chain(ranges.iter().flat_map(move |(s, e)| {
            let after = if interval {
                e.checked_add(1).map(|after| (after, true))
            } else {
                None
            };
            std::iter::once((*s, false)).chain(after)
        }))
}

/// `meta <key>` into `register`.
fn meta_to(key: MetaKey, register: Register) -> Expressions {
    Expressions::Meta(vec![Meta::Key(key), Meta::DestinationRegister(register)])
}

/// `payload` into `register`.
fn payload_to(base: u32, offset: u32, len: u32, register: Register) -> Expressions {
    Expressions::Payload(vec![
        Payload::DestinationRegister(register),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
}

/// A big-endian 32-bit attribute value (nf_tables' `NLA_BE32`).
fn be32(value: u32) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

/// `numgen random mod <modulus>` into `register` (hand-written: the crate has no `numgen`).
fn numgen(register: Register, modulus: u32) -> Expressions {
    Expressions::Other {
        expression_type: "numgen".to_string(),
        attributes: vec![
            DefaultNla::new(NFTA_NG_DREG, be32(u32::from(register))),
            DefaultNla::new(NFTA_NG_MODULUS, be32(modulus)),
            DefaultNla::new(NFTA_NG_TYPE, be32(NFT_NG_RANDOM)),
            DefaultNla::new(NFTA_NG_OFFSET, be32(0)),
        ],
    }
}

/// A map lookup of the key in register 1: its data into `data` (the verdict register for a
/// verdict map).
fn map_lookup(set: &str, id: Option<u32>, data: Register) -> Expressions {
    let mut attributes = vec![
        Lookup::Set(set.to_string()),
        Lookup::SourceRegister(Register::Reg1),
    ];
    if let Some(id) = id {
        attributes.push(Lookup::SetId(id));
    }
    attributes.push(Lookup::DestinationRegister(data));
    Expressions::Lookup(attributes)
}

/// `dnat ip to` the address in `addr` and the port in `port` (hand-written: the crate has no
/// `nat`).
fn dnat(addr: Register, port: Register, flags: u32) -> Expressions {
    let mut attributes = vec![
        DefaultNla::new(NFTA_NAT_TYPE, be32(NFT_NAT_DNAT)),
        DefaultNla::new(NFTA_NAT_FAMILY, be32(u32::from(NFPROTO_IPV4))),
        DefaultNla::new(NFTA_NAT_REG_ADDR_MIN, be32(u32::from(addr))),
        DefaultNla::new(NFTA_NAT_REG_PROTO_MIN, be32(u32::from(port))),
    ];
    if flags != 0 {
        attributes.push(DefaultNla::new(NFTA_NAT_FLAGS, be32(flags)));
    }
    Expressions::Other {
        expression_type: "nat".to_string(),
        attributes,
    }
}

/// A frontend's key in its map or set: each field padded to 4 bytes, as nf_tables lays out a
/// concatenation (the address; the protocol number; the port, big-endian).
fn frontend_key(key: &FrontendKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    let (protocol, port) = match key {
        FrontendKey::Address {
            addr,
            protocol,
            port,
        } => {
            out.extend_from_slice(&addr.octets());
            (protocol, port)
        }
        FrontendKey::NodePort { protocol, port } => (protocol, port),
    };
    out.extend_from_slice(&[protocol_number(*protocol), 0, 0, 0]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A Services element as its set or map holds it.
fn svc_element(e: &SvcElement) -> Element<'_> {
    match e {
        SvcElement::Frontend { key, chain } => Element {
            key: frontend_key(key),
            end: false,
            goto: Some(chain.as_str()),
            value: None,
        },
        SvcElement::Backend {
            key,
            slot,
            backend: (addr, port),
        } => {
            let mut k = frontend_key(key);
            // `numgen` writes the slot in host byte order.
            k.extend_from_slice(&slot.to_ne_bytes());
            let mut value = addr.octets().to_vec();
            value.extend_from_slice(&port.to_be_bytes());
            value.extend_from_slice(&[0, 0]);
            Element {
                key: k,
                end: false,
                goto: None,
                value: Some(value),
            }
        }
        SvcElement::Reject(key) | SvcElement::Masquerade(key) => element(frontend_key(key), false),
        SvcElement::Hairpin(a) => {
            let mut k = a.octets().to_vec();
            k.extend_from_slice(&a.octets());
            element(k, false)
        }
        SvcElement::LbAddress(a) | SvcElement::Inside(a, _) | SvcElement::SnatBackend(a) => {
            element(a.octets().to_vec(), false)
        }
        SvcElement::SnatTo(a) => Element {
            // `meta mark` is in host byte order.
            key: crate::names::SVC_MASQUERADE_MARK.to_ne_bytes().to_vec(),
            end: false,
            goto: None,
            value: Some(a.octets().to_vec()),
        },
    }
}
