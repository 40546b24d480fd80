//! nf_tables over netlink, for in-place changes of `table inet seam`: sets and their elements,
//! dispatch map entries, chains, policy rules and `jump`s, sent as one batch that the kernel applies
//! atomically.
//!
//! Why by hand: `nft` 1.0.6 lists every element of every set in the table before it applies even one
//! `add element` (about a second with 10,000 endpoints) and every set's definition before it adds a
//! rule that refers to a set (20–35 ms with a thousand policies), and the Rust nftables crates are
//! either C bindings without maps or GPL. The messages needed here are few and small; their layout
//! follows `include/uapi/linux/netfilter/nf_tables.h` and, expression for expression, what
//! `nft --debug=netlink` sends for the same rule text, so that `nft list` reads the rules back as
//! the text they were rendered from (a test holds the two equal). An interval `[a, b]` is a start
//! element `a` and an end element `b + 1`; the first add also sends the zero end element nft puts
//! in every interval set.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use seam_nft::{AddrField, NftMatch, NftRule, NftVerdict, TableOp};

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_INET: u8 = 1;

const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
/// nft's datatype numbers, which `nft list` prints the elements by.
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_SERVICE: u32 = 13;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFPROTO_IPV4: u8 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_LTE: u32 = 3;
const NFT_CMP_GTE: u32 = 5;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_LOG_PREFIX: u16 = 2;
/// The name the kernel numbers (`__set0`, …) when it creates an anonymous set.
const ANONYMOUS_SET: &str = "__set%d";

/// Elements per message: keeps every message far below netlink's size limits.
const ELEMENTS_PER_MESSAGE: usize = 256;

/// How long to wait for the kernel's answer to a batch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong sending a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NfnlError {
    /// The netlink socket could not be opened, written or read.
    #[error("nf_tables netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused the batch (nothing of it was applied).
    #[error("the kernel refused the nf_tables batch: {operation}: {errno}")]
    Refused {
        /// The first refused operation.
        operation: String,
        /// Its error.
        errno: nix::errno::Errno,
    },
    /// The kernel did not answer in time.
    #[error("no answer from nf_tables within {0:?}")]
    Timeout(Duration),
}

/// One netlink attribute writer.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.push(family);
        buf.push(0);
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn nft(msg: u16, flags: u16, seq: u32) -> Self {
        Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            NFPROTO_INET,
            0,
        )
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    fn strz(&mut self, kind: u16, text: &str) -> &mut Self {
        let mut payload = text.as_bytes().to_vec();
        payload.push(0);
        self.attr(kind, &payload)
    }

    fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    fn be64(&mut self, kind: u16, value: u64) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Opens one expression of a rule (`NFTA_LIST_ELEM` → name, `NFTA_EXPR_DATA`); two `close`s end it.
    fn expr(&mut self, name: &str) -> &mut Self {
        self.open(NFTA_LIST_ELEM)
            .strz(NFTA_EXPR_NAME, name)
            .open(NFTA_EXPR_DATA)
    }

    fn data_value(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        self.open(kind).attr(NFTA_DATA_VALUE, value).close()
    }

    fn meta(&mut self, key: u32) -> &mut Self {
        self.expr("meta")
            .be32(NFTA_META_KEY, key)
            .be32(NFTA_META_DREG, NFT_REG_1)
            .close()
            .close()
    }

    fn cmp(&mut self, op: u32, value: &[u8]) -> &mut Self {
        self.expr("cmp")
            .be32(NFTA_CMP_SREG, NFT_REG_1)
            .be32(NFTA_CMP_OP, op)
            .data_value(NFTA_CMP_DATA, value)
            .close()
            .close()
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) -> &mut Self {
        self.expr("payload")
            .be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
            .be32(NFTA_PAYLOAD_BASE, base)
            .be32(NFTA_PAYLOAD_OFFSET, offset)
            .be32(NFTA_PAYLOAD_LEN, len)
            .close()
            .close()
    }

    fn lookup(&mut self, set: &str, id: Option<u32>, invert: bool) -> &mut Self {
        self.expr("lookup")
            .strz(NFTA_LOOKUP_SET, set)
            .be32(NFTA_LOOKUP_SREG, NFT_REG_1);
        if let Some(id) = id {
            self.be32(NFTA_LOOKUP_SET_ID, id);
        }
        if invert {
            self.be32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
        }
        self.close().close()
    }

    fn open(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn close(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn verdict(&mut self, code: i32, chain: &str) -> &mut Self {
        self.open(NFTA_DATA_VERDICT)
            .be32(NFTA_VERDICT_CODE, code as u32)
            .strz(NFTA_VERDICT_CHAIN, chain)
            .close()
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// One element of an interval set or a map: a key, its flags and, for a map, the chain it jumps to.
struct Element {
    key: Ipv4Addr,
    end: bool,
    goto: Option<String>,
}

/// Elements that are keys alone: a hash set's addresses, or a map's keys to delete.
fn key_elements(keys: &[Ipv4Addr]) -> Vec<Element> {
    keys.iter()
        .map(|key| Element {
            key: *key,
            end: false,
            goto: None,
        })
        .collect()
}

/// The elements of an anonymous set of ports: big-endian keys, and for an interval set the start and
/// (one past the) end of each range, as nft sends them.
fn port_elements(ranges: &[(u16, u16)], interval: bool) -> Vec<([u8; 2], bool)> {
    let mut out = Vec::new();
    if !interval {
        out.extend(ranges.iter().map(|(s, _)| (s.to_be_bytes(), false)));
        return out;
    }
    if ranges.first().is_some_and(|(s, _)| *s > 0) {
        out.push((0u16.to_be_bytes(), true));
    }
    for (s, e) in ranges {
        out.push((s.to_be_bytes(), false));
        if let Some(after) = e.checked_add(1) {
            out.push((after.to_be_bytes(), true));
        }
    }
    out
}

fn interval_elements(ranges: &[(Ipv4Addr, Ipv4Addr)], adding: bool) -> Vec<Element> {
    let mut out = Vec::new();
    if adding {
        out.push(Element {
            key: Ipv4Addr::UNSPECIFIED,
            end: true,
            goto: None,
        });
    }
    for &(start, end) in ranges {
        out.push(Element {
            key: start,
            end: false,
            goto: None,
        });
        if let Some(after) = u32::from(end).checked_add(1) {
            out.push(Element {
                key: Ipv4Addr::from(after),
                end: true,
                goto: None,
            });
        }
    }
    out
}

fn element_messages(
    out: &mut Vec<(String, Vec<u8>)>,
    seq: &mut u32,
    add: bool,
    set: &str,
    table: &str,
    elements: &[Element],
) {
    for chunk in elements.chunks(ELEMENTS_PER_MESSAGE) {
        let (kind, flags) = if add {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE)
        } else {
            (NFT_MSG_DELSETELEM, 0)
        };
        *seq += 1;
        let mut m = Msg::nft(kind, flags, *seq);
        m.strz(NFTA_SET_ELEM_LIST_TABLE, table)
            .strz(NFTA_SET_ELEM_LIST_SET, set)
            .open(NFTA_SET_ELEM_LIST_ELEMENTS);
        for e in chunk {
            m.open(NFTA_LIST_ELEM)
                .open(NFTA_SET_ELEM_KEY)
                .attr(NFTA_DATA_VALUE, &e.key.octets())
                .close();
            if e.end {
                m.be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
            }
            if let Some(chain) = &e.goto {
                m.open(NFTA_SET_ELEM_DATA).verdict(NFT_GOTO, chain).close();
            }
            m.close();
        }
        m.close();
        let what = format!(
            "{} {} element(s) of {set}",
            if add { "add" } else { "delete" },
            chunk.len()
        );
        out.push((what, m.finish()));
    }
}

/// The messages of one operation, each with a description for errors.
fn messages(op: &TableOp, table: &str, seq: &mut u32, out: &mut Vec<(String, Vec<u8>)>) {
    match op {
        TableOp::AddRanges { set, ranges } => {
            element_messages(out, seq, true, set, table, &interval_elements(ranges, true))
        }
        TableOp::DeleteRanges { set, ranges } => element_messages(
            out,
            seq,
            false,
            set,
            table,
            &interval_elements(ranges, false),
        ),
        TableOp::AddGotos { map, entries } => {
            let elements: Vec<Element> = entries
                .iter()
                .map(|(key, chain)| Element {
                    key: *key,
                    end: false,
                    goto: Some(chain.clone()),
                })
                .collect();
            element_messages(out, seq, true, map, table, &elements)
        }
        TableOp::DeleteKeys { map, keys } => {
            element_messages(out, seq, false, map, table, &key_elements(keys))
        }
        TableOp::AddAddrs { set, addrs } | TableOp::DeleteAddrs { set, addrs } => {
            let add = matches!(op, TableOp::AddAddrs { .. });
            element_messages(out, seq, add, set, table, &key_elements(addrs))
        }
        TableOp::AddSet { name, interval } => {
            *seq += 1;
            let mut m = Msg::nft(NFT_MSG_NEWSET, NLM_F_CREATE, *seq);
            m.strz(NFTA_SET_TABLE, table)
                .strz(NFTA_SET_NAME, name)
                .be32(NFTA_SET_FLAGS, if *interval { NFT_SET_INTERVAL } else { 0 })
                .be32(NFTA_SET_KEY_TYPE, TYPE_IPADDR)
                .be32(NFTA_SET_KEY_LEN, 4)
                .be32(NFTA_SET_ID, *seq);
            out.push((format!("add set {name}"), m.finish()));
        }
        TableOp::AddRule { chain, rule } => rule_messages(out, seq, table, chain, rule),
        TableOp::AddChain { name } => {
            *seq += 1;
            let mut m = Msg::nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE, *seq);
            m.strz(NFTA_CHAIN_TABLE, table).strz(NFTA_CHAIN_NAME, name);
            out.push((format!("add chain {name}"), m.finish()));
        }
        TableOp::AddJump {
            chain,
            target,
            goto,
        } => {
            *seq += 1;
            let mut m = Msg::nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, *seq);
            m.strz(NFTA_RULE_TABLE, table)
                .strz(NFTA_RULE_CHAIN, chain)
                .open(NFTA_RULE_EXPRESSIONS)
                .open(NFTA_LIST_ELEM)
                .strz(NFTA_EXPR_NAME, "immediate")
                .open(NFTA_EXPR_DATA)
                .be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
                .open(NFTA_IMMEDIATE_DATA)
                .verdict(if *goto { NFT_GOTO } else { NFT_JUMP }, target)
                .close()
                .close()
                .close()
                .close();
            out.push((
                format!(
                    "add rule {chain} {} {target}",
                    if *goto { "goto" } else { "jump" }
                ),
                m.finish(),
            ));
        }
        TableOp::DeleteChain { name } => {
            // Flush first: a chain is deleted only once it holds no rules.
            *seq += 1;
            let mut m = Msg::nft(NFT_MSG_DELRULE, 0, *seq);
            m.strz(NFTA_RULE_TABLE, table).strz(NFTA_RULE_CHAIN, name);
            out.push((format!("flush chain {name}"), m.finish()));
            *seq += 1;
            let mut m = Msg::nft(NFT_MSG_DELCHAIN, 0, *seq);
            m.strz(NFTA_CHAIN_TABLE, table).strz(NFTA_CHAIN_NAME, name);
            out.push((format!("delete chain {name}"), m.finish()));
        }
        TableOp::DeleteSet { name } => {
            *seq += 1;
            let mut m = Msg::nft(NFT_MSG_DELSET, 0, *seq);
            m.strz(NFTA_SET_TABLE, table).strz(NFTA_SET_NAME, name);
            out.push((format!("delete set {name}"), m.finish()));
        }
    }
}

/// An anonymous constant set of ports for one rule (`th dport { 80, 8000-8080 }`), its elements,
/// and the id the rule's lookup finds it by in this batch.
fn port_set_messages(
    out: &mut Vec<(String, Vec<u8>)>,
    seq: &mut u32,
    table: &str,
    ranges: &[(u16, u16)],
) -> u32 {
    let interval = ranges.iter().any(|(s, e)| s != e);
    let elements = port_elements(ranges, interval);
    *seq += 1;
    let id = *seq;
    let mut flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
    if interval {
        flags |= NFT_SET_INTERVAL;
    }
    let mut m = Msg::nft(NFT_MSG_NEWSET, NLM_F_CREATE, id);
    m.strz(NFTA_SET_TABLE, table)
        .strz(NFTA_SET_NAME, ANONYMOUS_SET)
        .be32(NFTA_SET_FLAGS, flags)
        .be32(NFTA_SET_KEY_TYPE, TYPE_INET_SERVICE)
        .be32(NFTA_SET_KEY_LEN, 2)
        .be32(NFTA_SET_ID, id)
        .open(NFTA_SET_DESC)
        .be32(
            NFTA_SET_DESC_SIZE,
            u32::try_from(elements.len()).unwrap_or(u32::MAX),
        )
        .close();
    out.push(("add the rule's port set".to_string(), m.finish()));
    for chunk in elements.chunks(ELEMENTS_PER_MESSAGE) {
        *seq += 1;
        let mut m = Msg::nft(NFT_MSG_NEWSETELEM, NLM_F_CREATE, *seq);
        m.strz(NFTA_SET_ELEM_LIST_TABLE, table)
            .strz(NFTA_SET_ELEM_LIST_SET, ANONYMOUS_SET)
            .be32(NFTA_SET_ELEM_LIST_SET_ID, id)
            .open(NFTA_SET_ELEM_LIST_ELEMENTS);
        for (key, end) in chunk {
            m.open(NFTA_LIST_ELEM)
                .open(NFTA_SET_ELEM_KEY)
                .attr(NFTA_DATA_VALUE, key)
                .close();
            if *end {
                m.be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
            }
            m.close();
        }
        m.close();
        out.push(("add the rule's ports".to_string(), m.finish()));
    }
    id
}

/// A policy rule: the same expressions, in the same order, as nft makes of the rule's text.
fn rule_messages(
    out: &mut Vec<(String, Vec<u8>)>,
    seq: &mut u32,
    table: &str,
    chain: &str,
    rule: &NftRule,
) {
    // Anonymous sets first: the rule's lookup refers to them.
    let port_sets: Vec<Option<u32>> = rule
        .matches
        .iter()
        .map(|m| match m {
            NftMatch::DstPorts(ranges) if ranges.len() > 1 => {
                Some(port_set_messages(out, seq, table, ranges))
            }
            _ => None,
        })
        .collect();
    *seq += 1;
    let mut m = Msg::nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, *seq);
    m.strz(NFTA_RULE_TABLE, table)
        .strz(NFTA_RULE_CHAIN, chain)
        .open(NFTA_RULE_EXPRESSIONS);
    // nft tests the family once per rule, before the first IPv4 address (an `inet` table sees IPv6 too).
    let mut family_tested = false;
    for (test, port_set) in rule.matches.iter().zip(&port_sets) {
        match test {
            NftMatch::AddrInSet { field, set, negate } => {
                if !family_tested {
                    m.meta(NFT_META_NFPROTO).cmp(NFT_CMP_EQ, &[NFPROTO_IPV4]);
                    family_tested = true;
                }
                let offset = match field {
                    AddrField::Source => 12,
                    AddrField::Destination => 16,
                };
                m.payload(NFT_PAYLOAD_NETWORK_HEADER, offset, 4)
                    .lookup(set, None, *negate);
            }
            NftMatch::L4Proto(p) => {
                m.meta(NFT_META_L4PROTO).cmp(NFT_CMP_EQ, &[*p]);
            }
            NftMatch::DstPorts(ranges) => {
                m.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                match (ranges.as_slice(), port_set) {
                    (_, Some(id)) => {
                        m.lookup(ANONYMOUS_SET, Some(*id), false);
                    }
                    ([(s, e)], None) if s == e => {
                        m.cmp(NFT_CMP_EQ, &s.to_be_bytes());
                    }
                    ([(s, e)], None) => {
                        m.cmp(NFT_CMP_GTE, &s.to_be_bytes())
                            .cmp(NFT_CMP_LTE, &e.to_be_bytes());
                    }
                    // No ports never matches: an empty set.
                    _ => {
                        m.cmp(NFT_CMP_GTE, &[0xff, 0xff]).cmp(NFT_CMP_LTE, &[0, 0]);
                    }
                }
            }
            NftMatch::IcmpType(t) => {
                m.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1)
                    .cmp(NFT_CMP_EQ, &[*t]);
            }
        }
    }
    m.expr("counter")
        .be64(NFTA_COUNTER_BYTES, 0)
        .be64(NFTA_COUNTER_PACKETS, 0)
        .close()
        .close();
    if let Some(prefix) = &rule.log_prefix {
        m.expr("log").strz(NFTA_LOG_PREFIX, prefix).close().close();
    }
    let code = match rule.verdict {
        NftVerdict::Accept => NF_ACCEPT,
        NftVerdict::Drop => NF_DROP,
        NftVerdict::Return => NFT_RETURN,
    };
    m.expr("immediate")
        .be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
        .open(NFTA_IMMEDIATE_DATA)
        .open(NFTA_DATA_VERDICT)
        .be32(NFTA_VERDICT_CODE, code as u32)
        .close()
        .close()
        .close()
        .close();
    m.close();
    let mut userdata = vec![
        NFTNL_UDATA_RULE_COMMENT,
        u8::try_from(rule.comment.len() + 1).unwrap_or(u8::MAX),
    ];
    userdata.extend_from_slice(rule.comment.as_bytes());
    userdata.push(0);
    m.attr(NFTA_RULE_USERDATA, &userdata);
    out.push((format!("add rule {chain} {rule}"), m.finish()));
}

fn batch_marker(kind: u16, seq: u32) -> Vec<u8> {
    Msg::new(kind, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES).finish()
}

/// Applies `ops` to `table inet <table>` as one nf_tables batch, in the calling thread's network
/// namespace: all of it or, when the kernel refuses any operation, none of it.
pub fn apply_batch(table: &str, ops: &[TableOp]) -> Result<(), NfnlError> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut seq: u32 = 0;
    let mut msgs = Vec::new();
    for op in ops {
        messages(op, table, &mut seq, &mut msgs);
    }
    let first_seq = 1;
    let last_seq = seq;
    let mut buf = batch_marker(NFNL_MSG_BATCH_BEGIN, 0);
    for (_, m) in &msgs {
        buf.extend_from_slice(m);
    }
    buf.extend_from_slice(&batch_marker(NFNL_MSG_BATCH_END, last_seq + 1));

    let mut socket = match CACHED.with(|c| c.borrow_mut().take()) {
        Some((ns, socket)) if Some(ns) == netns_id() => socket,
        _ => open_socket()?,
    };
    // One answer per message: a big batch must not overflow the receive buffer, or answers are
    // lost and the wait times out. Raising it needs CAP_NET_ADMIN, which applying needs anyway.
    let answers = msgs.len().saturating_mul(64).max(1 << 18);
    if let Err(e) = nix::sys::socket::setsockopt(
        &socket.as_fd(),
        nix::sys::socket::sockopt::RcvBufForce,
        &answers,
    ) {
        tracing::debug!(error = %e, "raising the nf_tables socket's receive buffer failed");
    }
    socket.send(&buf, 0)?;
    let outcome = read_answers(&mut socket, &msgs, first_seq, last_seq);
    // Only a socket whose every answer was read is clean enough to reuse.
    if outcome.is_ok() {
        if let Some(ns) = netns_id() {
            CACHED.with(|c| *c.borrow_mut() = Some((ns, socket)));
        }
    }
    outcome
}

thread_local! {
    /// The thread's nf_tables socket and the network namespace it was opened in. Why keep it: closing
    /// a netfilter netlink socket waits for the kernel to free the last batch's transaction (an RCU
    /// grace period, 5–12 ms here), which would double the time of every change.
    static CACHED: std::cell::RefCell<Option<(u64, Socket)>> = const { std::cell::RefCell::new(None) };
}

/// The calling thread's network namespace (a socket belongs to the namespace it was opened in).
fn netns_id() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino())
}

fn open_socket() -> Result<Socket, NfnlError> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let timeout =
        nix::sys::time::TimeVal::new(i64::try_from(ANSWER_TIMEOUT.as_secs()).unwrap_or(5), 0);
    nix::sys::socket::setsockopt(
        &socket.as_fd(),
        nix::sys::socket::sockopt::ReceiveTimeout,
        &timeout,
    )
    .map_err(std::io::Error::from)?;
    Ok(socket)
}

/// Reads the kernel's answer to every message of a batch; the first refusal is the error.
fn read_answers(
    socket: &mut Socket,
    msgs: &[(String, Vec<u8>)],
    first_seq: u32,
    last_seq: u32,
) -> Result<(), NfnlError> {
    let mut answered = 0usize;
    let mut refused: Option<NfnlError> = None;
    let mut rx = vec![0u8; 1 << 16];
    while answered < msgs.len() {
        rx.clear();
        let n = match socket.recv(&mut rx, 0) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(refused.unwrap_or(NfnlError::Timeout(ANSWER_TIMEOUT)));
            }
            Err(e) => return Err(e.into()),
        };
        let mut at = 0;
        while at + 16 <= n {
            let word = |i: usize| -> u32 {
                let b = rx.get(i..i + 4).unwrap_or(&[0, 0, 0, 0]);
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
            };
            let len = word(at) as usize;
            let kind = u16::try_from(word(at + 4) & 0xffff).unwrap_or(0);
            let seq = word(at + 8);
            if len < 16 || at + len > n {
                break;
            }
            if kind == NLMSG_ERROR && len >= 20 {
                answered += 1;
                let code = word(at + 16) as i32;
                if code != 0 && refused.is_none() {
                    let index = seq.checked_sub(first_seq).map(|i| i as usize);
                    let operation = index
                        .and_then(|i| msgs.get(i))
                        .map(|(what, _)| what.clone())
                        .unwrap_or_else(|| format!("message {seq}"));
                    refused = Some(NfnlError::Refused {
                        operation,
                        errno: nix::errno::Errno::from_raw(-code),
                    });
                }
                if seq == last_seq {
                    answered = msgs.len();
                }
            }
            at += (len + 3) & !3;
        }
    }
    match refused {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Records what the hand-written encoder sends for the cases of seam-nft's golden tests, as the
/// reference the encoder built on netlink-packet-netfilter must match byte for byte.
#[cfg(test)]
mod record_golden {
    #![allow(clippy::unwrap_used)]

    #[path = "../../../../seam-nft/tests/it/cases.rs"]
    mod cases;

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    #[ignore = "writes the golden files of seam-nft"]
    fn record() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../seam-nft/tests/it/golden");
        for (name, ops) in cases::cases() {
            let mut seq: u32 = 0;
            let mut msgs = Vec::new();
            for op in &ops {
                messages(op, cases::TABLE, &mut seq, &mut msgs);
            }
            let mut out = format!(
                "# batch begin\n{}\n",
                hex(&batch_marker(NFNL_MSG_BATCH_BEGIN, 0))
            );
            for (what, m) in &msgs {
                out.push_str(&format!("# {what}\n{}\n", hex(m)));
            }
            out.push_str(&format!(
                "# batch end\n{}\n",
                hex(&batch_marker(NFNL_MSG_BATCH_END, seq + 1))
            ));
            std::fs::write(dir.join(format!("{name}.txt")), out).unwrap();
        }
    }
}
