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
//! What `netlink-packet-netfilter` 0.4 lacks, kept by hand here:
//! - the `counter` and `log` expressions: sent through the crate's `Expressions::Other` with raw
//!   attributes ([`NFTA_COUNTER_BYTES`], [`NFTA_COUNTER_PACKETS`], [`NFTA_LOG_PREFIX`]);
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
//! Start at [`Batch::new`].

use std::net::Ipv4Addr;

use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND,
    NLM_F_CREATE, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate,
    ListAttribute, Lookup, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register,
    RuleAttribute, RuleMessage, SetAttribute, SetDescription, SetElementAttribute, SetElementFlags,
    SetElementList, SetElementMessage, SetFlags, SetMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use crate::rule::{AddrField, NftMatch, NftRule, NftVerdict, TableOp};

/// `NFNL_SUBSYS_NFTABLES`: the batch markers name the subsystem the batch is for in `res_id`.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// `NFTA_COUNTER_BYTES` (`include/uapi/linux/netfilter/nf_tables.h`).
pub const NFTA_COUNTER_BYTES: u16 = 1;
/// `NFTA_COUNTER_PACKETS`.
pub const NFTA_COUNTER_PACKETS: u16 = 2;
/// `NFTA_LOG_PREFIX`.
pub const NFTA_LOG_PREFIX: u16 = 2;
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
}

impl<'a> Batch<'a> {
    /// Builds the batch applying `ops`, in order, to `table inet <table>`.
    pub fn new(table: &str, ops: &'a [TableOp]) -> Self {
        let mut batch = Batch {
            ops,
            bytes: Vec::with_capacity(256 * (ops.len() + 2)),
            parts: Vec::with_capacity(ops.len()),
        };
        batch.push(
            NLM_F_REQUEST,
            BEGIN_SEQ,
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                ControlMessage::BatchBegin,
            ),
        );
        for (index, op) in ops.iter().enumerate() {
            batch.op(table, index, op);
        }
        let end = batch.last_seq().wrapping_add(1);
        batch.push(
            NLM_F_REQUEST,
            end,
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                ControlMessage::BatchEnd,
            ),
        );
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

    /// Serializes one message at the end of the batch.
    fn push(&mut self, flags: u16, seq: u32, message: NetfilterMessage) {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        message.finalize();
        let at = self.bytes.len();
        self.bytes.resize(at + message.buffer_len(), 0);
        message.serialize(&mut self.bytes[at..]);
    }

    /// Appends an nf_tables message of `table inet …` that asks for an acknowledgement.
    fn nft(&mut self, flags: u16, seq: u32, message: NfTablesMessage) {
        self.push(
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
                NetfilterMessageInner::NfTables(message),
            ),
        );
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
                let attributes = vec![
                    SetAttribute::Table(table.to_string()),
                    SetAttribute::Name(name.clone()),
                    SetAttribute::Flags(flags),
                    SetAttribute::KeyType(TYPE_IPADDR),
                    SetAttribute::KeyLen(4),
                    // The id a rule's lookup in the same batch could find the set by.
                    SetAttribute::Id(seq),
                ];
                self.nft(
                    NLM_F_CREATE,
                    seq,
                    NfTablesMessage::NewSet(SetMessage { attributes }),
                );
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
                let elements = entries.iter().map(|(address, chain)| {
                    ListAttribute::Element(vec![
                        SetElementAttribute::Key(DataAttribute::Value(address.octets().to_vec())),
                        SetElementAttribute::Data(verdict(Verdict::Goto, Some(chain))),
                    ])
                });
                self.elements(table, index, true, map, None, elements);
            }
            TableOp::DeleteKeys { map, keys } => {
                self.elements(table, index, false, map, None, keys.iter().map(key));
            }
            TableOp::AddRule { chain, rule } => self.rule(table, index, chain, rule),
            TableOp::AddChain { name } => {
                let seq = self.next_seq(index, What::Main);
                let attributes = vec![
                    ChainAttribute::Table(table.to_string()),
                    ChainAttribute::Name(name.clone()),
                ];
                self.nft(
                    NLM_F_CREATE,
                    seq,
                    NfTablesMessage::NewChain(ChainMessage { attributes }),
                );
            }
            TableOp::AddJump {
                chain,
                target,
                goto,
            } => {
                let seq = self.next_seq(index, What::Main);
                let code = if *goto { Verdict::Goto } else { Verdict::Jump };
                let attributes = vec![
                    RuleAttribute::Table(table.to_string()),
                    RuleAttribute::Chain(chain.clone()),
                    RuleAttribute::Expressions(vec![Expressions::Immediate(vec![
                        Immediate::DestinationRegister(Register::Verdict),
                        Immediate::Data(verdict(code, Some(target))),
                    ])
                    .into()]),
                ];
                self.nft(
                    NLM_F_CREATE | NLM_F_APPEND,
                    seq,
                    NfTablesMessage::NewRule(RuleMessage { attributes }),
                );
            }
            TableOp::DeleteChain { name } => {
                // Flush first: a chain is deleted only once it holds no rules.
                let seq = self.next_seq(index, What::Flush);
                let attributes = vec![
                    RuleAttribute::Table(table.to_string()),
                    RuleAttribute::Chain(name.clone()),
                ];
                self.nft(
                    0,
                    seq,
                    NfTablesMessage::DeleteRule(RuleMessage { attributes }),
                );
                let seq = self.next_seq(index, What::Main);
                let attributes = vec![
                    ChainAttribute::Table(table.to_string()),
                    ChainAttribute::Name(name.clone()),
                ];
                self.nft(
                    0,
                    seq,
                    NfTablesMessage::DeleteChain(ChainMessage { attributes }),
                );
            }
            TableOp::DeleteSet { name } => {
                let seq = self.next_seq(index, What::Main);
                let attributes = vec![
                    SetAttribute::Table(table.to_string()),
                    SetAttribute::Name(name.clone()),
                ];
                self.nft(
                    0,
                    seq,
                    NfTablesMessage::DeleteSet(SetMessage { attributes }),
                );
            }
        }
    }

    /// Adds (or deletes) elements of a set, [`ELEMENTS_PER_MESSAGE`] to a message. `set_id` finds
    /// a set created earlier in the same batch (an anonymous one).
    fn elements(
        &mut self,
        table: &str,
        index: usize,
        add: bool,
        set: &str,
        set_id: Option<u32>,
        elements: impl Iterator<Item = ListAttribute<SetElementAttribute>>,
    ) {
        let what = |count| match set_id {
            Some(_) => What::Ports,
            None => What::Elements(count),
        };
        let mut elements = elements.peekable();
        while elements.peek().is_some() {
            let chunk: Vec<_> = elements.by_ref().take(ELEMENTS_PER_MESSAGE).collect();
            let seq = self.next_seq(index, what(chunk.len()));
            let mut attributes = Vec::with_capacity(4);
            attributes.push(SetElementList::Table(table.to_string()));
            attributes.push(SetElementList::Set(set.to_string()));
            if let Some(id) = set_id {
                attributes.push(SetElementList::SetId(id));
            }
            attributes.push(SetElementList::Elements(chunk));
            let message = SetElementMessage { attributes };
            if add {
                self.nft(NLM_F_CREATE, seq, NfTablesMessage::NewSetElement(message));
            } else {
                self.nft(0, seq, NfTablesMessage::DeleteSetElement(message));
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
        let size = port_elements(ranges, interval).count();
        let attributes = vec![
            SetAttribute::Table(table.to_string()),
            SetAttribute::Name(ANONYMOUS_SET.to_string()),
            SetAttribute::Flags(flags),
            SetAttribute::KeyType(TYPE_INET_SERVICE),
            SetAttribute::KeyLen(2),
            SetAttribute::Id(id),
            SetAttribute::Description(vec![SetDescription::Size(
                u32::try_from(size).unwrap_or(u32::MAX),
            )]),
        ];
        self.nft(
            NLM_F_CREATE,
            id,
            NfTablesMessage::NewSet(SetMessage { attributes }),
        );
        let elements = port_elements(ranges, interval)
            .map(|(port, end)| element(port.to_be_bytes().to_vec(), end));
        self.elements(table, index, true, ANONYMOUS_SET, Some(id), elements);
        id
    }

    /// A policy rule: the same expressions, in the same order, as nft makes of the rule's text.
    fn rule(&mut self, table: &str, index: usize, chain: &str, rule: &NftRule) {
        // Anonymous sets first: the rule's lookup refers to them. At most one per rule in
        // practice, so no allocation for the common rule without one.
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
        // Per test at most five expressions, then counter, log and verdict.
        let mut expressions = Vec::with_capacity(rule.matches.len() * 3 + 3);
        // nft tests the family once per rule, before the first IPv4 address (an `inet` table sees
        // IPv6 too).
        let mut family_tested = false;
        for test in &rule.matches {
            match test {
                NftMatch::AddrInSet { field, set, negate } => {
                    if !family_tested {
                        expressions.push(meta(MetaKey::Nfproto));
                        expressions.push(cmp(Operator::Equal, &[NFPROTO_IPV4]));
                        family_tested = true;
                    }
                    let offset = match field {
                        AddrField::Source => 12,
                        AddrField::Destination => 16,
                    };
                    expressions.push(payload(NFT_PAYLOAD_NETWORK_HEADER, offset, 4));
                    expressions.push(lookup(set, None, *negate));
                }
                NftMatch::L4Proto(p) => {
                    expressions.push(meta(MetaKey::L4Proto));
                    expressions.push(cmp(Operator::Equal, &[*p]));
                }
                NftMatch::DstPorts(ranges) => {
                    expressions.push(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
                    match ranges.as_slice() {
                        [_, _, ..] => {
                            let id = port_sets.next();
                            expressions.push(lookup(ANONYMOUS_SET, id, false));
                        }
                        [(s, e)] if s == e => {
                            expressions.push(cmp(Operator::Equal, &s.to_be_bytes()));
                        }
                        [(s, e)] => {
                            expressions.push(cmp(Operator::GreatherThanEqual, &s.to_be_bytes()));
                            expressions.push(cmp(Operator::LessThanEqual, &e.to_be_bytes()));
                        }
                        // No ports never matches: an empty range.
                        [] => {
                            expressions.push(cmp(Operator::GreatherThanEqual, &[0xff, 0xff]));
                            expressions.push(cmp(Operator::LessThanEqual, &[0, 0]));
                        }
                    }
                }
                NftMatch::IcmpType(t) => {
                    expressions.push(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1));
                    expressions.push(cmp(Operator::Equal, &[*t]));
                }
            }
        }
        expressions.push(
            Expressions::Other {
                expression_type: "counter".to_string(),
                attributes: vec![
                    DefaultNla::new(NFTA_COUNTER_BYTES, vec![0; 8]),
                    DefaultNla::new(NFTA_COUNTER_PACKETS, vec![0; 8]),
                ],
            }
            .into(),
        );
        if let Some(prefix) = &rule.log_prefix {
            expressions.push(
                Expressions::Other {
                    expression_type: "log".to_string(),
                    attributes: vec![DefaultNla::new(NFTA_LOG_PREFIX, strz(prefix))],
                }
                .into(),
            );
        }
        let code = match rule.verdict {
            NftVerdict::Accept => Verdict::from(NF_ACCEPT),
            NftVerdict::Drop => Verdict::from(NF_DROP),
            NftVerdict::Return => Verdict::Return,
        };
        expressions.push(
            Expressions::Immediate(vec![
                Immediate::DestinationRegister(Register::Verdict),
                Immediate::Data(verdict(code, None)),
            ])
            .into(),
        );
        let attributes = vec![
            RuleAttribute::Table(table.to_string()),
            RuleAttribute::Chain(chain.to_string()),
            RuleAttribute::Expressions(expressions),
            RuleAttribute::UserData(comment(&rule.comment)),
        ];
        self.nft(
            NLM_F_CREATE | NLM_F_APPEND,
            seq,
            NfTablesMessage::NewRule(RuleMessage { attributes }),
        );
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
        (TableOp::AddRule { chain, rule }, _) => format!("add rule {chain} {rule}"),
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

fn meta(key: MetaKey) -> ListAttribute<ExpressionAttribute> {
    Expressions::Meta(vec![
        Meta::Key(key),
        Meta::DestinationRegister(Register::Reg1),
    ])
    .into()
}

fn cmp(op: Operator, value: &[u8]) -> ListAttribute<ExpressionAttribute> {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(value.to_vec())),
    ])
    .into()
}

fn payload(base: u32, offset: u32, len: u32) -> ListAttribute<ExpressionAttribute> {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

fn lookup(set: &str, id: Option<u32>, invert: bool) -> ListAttribute<ExpressionAttribute> {
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
    Expressions::Lookup(attributes).into()
}

/// A set element: its key and whether it ends an interval.
fn element(key: Vec<u8>, end: bool) -> ListAttribute<SetElementAttribute> {
    let key = SetElementAttribute::Key(DataAttribute::Value(key));
    if end {
        ListAttribute::Element(vec![
            key,
            SetElementAttribute::Flags(SetElementFlags::IntervalEnd),
        ])
    } else {
        ListAttribute::Element(vec![key])
    }
}

/// An element that is a key alone: a hash set's address, or a map's key to delete.
fn key(address: &Ipv4Addr) -> ListAttribute<SetElementAttribute> {
    element(address.octets().to_vec(), false)
}

/// The elements of an interval set: a start element and an end element one past each range (none
/// after a range ending at 255.255.255.255), after, when adding, the zero end element nft puts in
/// every interval set.
fn interval_elements(
    ranges: &[(Ipv4Addr, Ipv4Addr)],
    adding: bool,
) -> impl Iterator<Item = ListAttribute<SetElementAttribute>> + '_ {
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
