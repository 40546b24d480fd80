//! In-place changes to Seam's nftables table, as values.
//!
//! `nft` (1.0.6 here) reads every element of every set of the table before it applies even one
//! `add element` (about a second at 10,000 endpoints), and the definition of every set before it
//! adds one rule that refers to a set (20–35 ms with a thousand policies), so changes go to the
//! kernel as nf_tables netlink messages instead. Rules are values ([`NftRule`]) with one text form
//! (`Display`, what `nft -f` reads when a table is written whole) and one netlink form
//! ([`crate::msg`]). [`crate::table::delta`] builds a [`FirewallDelta`] between two tables;
//! `seam-linux` sends its batches.

use std::fmt;
use std::net::Ipv4Addr;

use crate::services::{SvcChain, SvcElement};

/// The address a rule tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrField {
    /// `ip saddr`.
    Source,
    /// `ip daddr`.
    Destination,
}

/// One test of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NftMatch {
    /// `ip saddr @set`, `ip daddr != @set`, … (an IPv4 packet whose address is, or is not, in a named
    /// interval set of the table).
    AddrInSet {
        /// Which address.
        field: AddrField,
        /// The set's nftables name.
        set: String,
        /// `!=`: the address is not in the set.
        negate: bool,
    },
    /// `meta l4proto <protocol number>`.
    L4Proto(u8),
    /// `th dport` in one of these inclusive ranges (sorted, disjoint); follows an [`NftMatch::L4Proto`]
    /// of a protocol with ports.
    DstPorts(Vec<(u16, u16)>),
    /// `icmp type <type>`; follows `meta l4proto icmp`.
    IcmpType(u8),
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NftVerdict {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return`.
    Return,
}

/// A flow sample of a rule's packets: `log prefix "…" group G snaplen S`, sent to an NFLOG group
/// that the agent reads (see `seam_linux::nflog`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NftSample {
    /// The NFLOG group.
    pub group: u16,
    /// The prefix the sample carries: what the agent maps back to the rule
    /// ([`crate::names::sample_prefix`]).
    pub prefix: String,
    /// How many bytes of the packet the sample copies (its headers).
    pub snaplen: u32,
    /// Samples per second of this rule, at most (`None`: every packet that reaches the rule).
    /// With a limit the rule is two kernel rules with the same comment: first `limit rate over
    /// N/second burst N packets counter <verdict>`, which takes (and counts) what the limit
    /// suppresses, then the sampled rule; the first one's counter is how many samples the limit
    /// suppressed, and both counters together are the rule's hits.
    pub limit: Option<u32>,
}

/// How a node's table samples its verdicts for flow records (the agent's `--flows` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowSampling {
    /// The NFLOG group the samples go to.
    pub group: u16,
    /// Samples per second of each drop (and Pass) rule, at most; what is over is counted.
    pub drop_rate: u32,
    /// Samples per second of each allow rule, at most (`None`: every new connection). Why a
    /// limit at all: a packet that egress allows and ingress on the same node drops never
    /// confirms its conntrack entry, so each one of a flood is a "new connection" to the allow
    /// rule; the limit keeps such a flood from reaching the agent unbounded.
    pub allow_rate: Option<u32>,
    /// Bytes of each sampled packet copied: enough for the IPv4 and transport headers.
    pub snaplen: u32,
}

/// The NFLOG group flow samples go to unless the agent is told otherwise (`seamd --flow-group`).
pub const DEFAULT_FLOW_GROUP: u16 = 6100;
/// Drop and Pass samples per second of each rule, by default (`seamd --flow-drop-rate`).
pub const DEFAULT_FLOW_DROP_RATE: u32 = 10;
/// Allowed-connection samples per second of each rule, by default (`seamd --flow-allow-rate`).
pub const DEFAULT_FLOW_ALLOW_RATE: u32 = 1000;
/// Bytes of each sampled packet copied: an IPv4 header with options (60) and the transport ports.
pub const FLOW_SNAPLEN: u32 = 96;

impl Default for FlowSampling {
    /// What an agent with the default flags samples (so a table can be compared with one it
    /// wrote).
    fn default() -> Self {
        FlowSampling {
            group: DEFAULT_FLOW_GROUP,
            drop_rate: DEFAULT_FLOW_DROP_RATE,
            allow_rate: Some(DEFAULT_FLOW_ALLOW_RATE),
            snaplen: FLOW_SNAPLEN,
        }
    }
}

impl FlowSampling {
    /// The sample of a rule of this kind with this comment in one direction's chains: allowed
    /// connections once each (only a connection's first packet reaches a policy rule: the base
    /// chains accept established and related packets before they dispatch) under
    /// [`FlowSampling::allow_rate`], drops and Passes under [`FlowSampling::drop_rate`].
    pub fn sample(&self, kind: crate::names::SampleKind, egress: bool, comment: &str) -> NftSample {
        let limit = match kind {
            crate::names::SampleKind::Allow => self.allow_rate,
            _ => Some(self.drop_rate),
        };
        NftSample {
            group: self.group,
            prefix: crate::names::sample_prefix(kind, egress, comment),
            snaplen: self.snaplen,
            limit,
        }
    }
}

/// A policy rule of `table inet seam`: its tests, a counter, an optional log, a verdict and a comment
/// (the rule id `explain` reads the counter back by).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NftRule {
    /// Tests, in order; all must hold.
    pub matches: Vec<NftMatch>,
    /// `log prefix "…"` before the verdict, when set (a kernel log line: Contracts' `log`).
    pub log_prefix: Option<String>,
    /// A flow sample to NFLOG, when flow recording is on.
    pub sample: Option<NftSample>,
    /// The verdict.
    pub verdict: NftVerdict,
    /// The comment (at most 127 bytes of plain text, no `"` or backslash).
    pub comment: String,
}

fn protocol_name(number: u8) -> Option<&'static str> {
    match number {
        1 => Some("icmp"),
        6 => Some("tcp"),
        17 => Some("udp"),
        132 => Some("sctp"),
        _ => None,
    }
}

impl NftRule {
    fn write_matches(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            match m {
                NftMatch::AddrInSet { field, set, negate } => {
                    let field = match field {
                        AddrField::Source => "saddr",
                        AddrField::Destination => "daddr",
                    };
                    let op = if *negate { "!= " } else { "" };
                    write!(f, "ip {field} {op}@{set} ")?;
                }
                NftMatch::L4Proto(p) => match protocol_name(*p) {
                    Some(name) => write!(f, "meta l4proto {name} ")?,
                    None => write!(f, "meta l4proto {p} ")?,
                },
                NftMatch::DstPorts(ranges) => {
                    let item = |(s, e): &(u16, u16)| {
                        if s == e {
                            s.to_string()
                        } else {
                            format!("{s}-{e}")
                        }
                    };
                    match ranges.as_slice() {
                        [one] => write!(f, "th dport {} ", item(one))?,
                        _ => {
                            let items: Vec<String> = ranges.iter().map(item).collect();
                            write!(f, "th dport {{ {} }} ", items.join(", "))?
                        }
                    }
                }
                NftMatch::IcmpType(t) => write!(f, "icmp type {t} ")?,
            }
        }
        Ok(())
    }

    fn write_end(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            NftVerdict::Accept => "accept",
            NftVerdict::Drop => "drop",
            NftVerdict::Return => "return",
        };
        write!(f, "{verdict} comment \"{}\"", self.comment)
    }
}

impl fmt::Display for NftRule {
    /// The rule as `nft -f` reads it: one line per kernel rule (two when its samples are rate
    /// limited, see [`NftSample::limit`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(rate) = self.sample.as_ref().and_then(|s| s.limit) {
            self.write_matches(f)?;
            write!(
                f,
                "limit rate over {rate}/second burst {rate} packets counter "
            )?;
            if let Some(prefix) = &self.log_prefix {
                write!(f, "log prefix \"{prefix}\" ")?;
            }
            self.write_end(f)?;
            f.write_str("\n")?;
        }
        self.write_matches(f)?;
        f.write_str("counter ")?;
        if let Some(prefix) = &self.log_prefix {
            write!(f, "log prefix \"{prefix}\" ")?;
        }
        if let Some(sample) = &self.sample {
            write!(
                f,
                "log prefix \"{}\" group {} snaplen {} ",
                sample.prefix, sample.group, sample.snaplen
            )?;
        }
        self.write_end(f)
    }
}

/// One nf_tables change of `table inet seam`, executed inside a netlink batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOp {
    /// Creates an empty set of IPv4 addresses.
    AddSet {
        /// Its name.
        name: String,
        /// An interval set (elements are ranges) rather than a hash set of single addresses.
        interval: bool,
    },
    /// Adds single addresses to a hash set.
    AddAddrs {
        /// The set's nftables name.
        set: String,
        /// Addresses.
        addrs: Vec<Ipv4Addr>,
    },
    /// Removes single addresses from a hash set.
    DeleteAddrs {
        /// The set's nftables name.
        set: String,
        /// Addresses.
        addrs: Vec<Ipv4Addr>,
    },
    /// Appends a policy rule to a chain.
    AddRule {
        /// The chain appended to.
        chain: String,
        /// The rule.
        rule: NftRule,
    },
    /// Adds inclusive address ranges to an interval set.
    AddRanges {
        /// The set's nftables name.
        set: String,
        /// Inclusive ranges, sorted, disjoint and not adjacent.
        ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    },
    /// Removes ranges that are elements of an interval set, exactly as they were added.
    DeleteRanges {
        /// The set's nftables name.
        set: String,
        /// Inclusive ranges.
        ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    },
    /// Adds `address : goto chain` entries to a verdict map.
    AddGotos {
        /// The map's name.
        map: String,
        /// Key and target chain.
        entries: Vec<(Ipv4Addr, String)>,
    },
    /// Removes entries of a verdict map by key.
    DeleteKeys {
        /// The map's name.
        map: String,
        /// Keys.
        keys: Vec<Ipv4Addr>,
    },
    /// Creates an empty regular chain.
    AddChain {
        /// Its name.
        name: String,
    },
    /// Appends `jump target` (or `goto target`) to a chain.
    AddJump {
        /// The chain appended to.
        chain: String,
        /// The chain jumped to.
        target: String,
        /// `goto` instead of `jump`.
        goto: bool,
    },
    /// Deletes a chain nothing references any more (with its rules).
    DeleteChain {
        /// Its name.
        name: String,
    },
    /// Deletes a set nothing references any more (also an affinity set of the Services part).
    DeleteSet {
        /// Its name.
        name: String,
    },
    /// Creates the Services part of the table, empty: its sets and maps and its base chains
    /// with their rules (see [`crate::services`]).
    AddServiceBase,
    /// Deletes the Services part's base chains, sets and maps (with their elements); its
    /// regular chains and affinity sets go by [`TableOp::DeleteChain`] and
    /// [`TableOp::DeleteSet`] after it.
    DeleteServiceBase,
    /// Adds elements to the Services sets and maps (each element names its set).
    AddSvcElements {
        /// The elements.
        elements: Vec<SvcElement>,
    },
    /// Removes elements of the Services sets and maps by key (a map element's data is ignored).
    DeleteSvcElements {
        /// The elements.
        elements: Vec<SvcElement>,
    },
    /// Creates a ClientIP affinity set (`aff_<hash>`: `flags dynamic,timeout`).
    AddAffinitySet {
        /// Its name.
        name: String,
        /// Its elements' timeout, in seconds.
        timeout: u32,
    },
    /// Creates a Services chain (`m_<N>`, `n_<N>`, `sa_<hash>`, `se_<hash>`) with its rules.
    AddSvcChain {
        /// Its name.
        name: String,
        /// What it holds.
        chain: SvcChain,
    },
}

/// An in-place change of the table, in two steps that go to the kernel as one netlink batch (the
/// kernel applies a batch all or nothing, so traffic sees the old policy or the new one):
/// 1. `switch`: the new sets and rule chains (nothing refers to them until later in the batch), the
///    set element changes, the new dispatch chains and the dispatch map changes.
/// 2. `cleanup`: the chains and sets nothing refers to any more once the switch is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallDelta {
    /// The switch.
    pub switch: Vec<TableOp>,
    /// What is left unreferenced, after the switch.
    pub cleanup: Vec<TableOp>,
}

impl FirewallDelta {
    /// Whether applying it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.switch.is_empty() && self.cleanup.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_nft_writes_them() {
        let rule = NftRule {
            matches: vec![
                NftMatch::AddrInSet {
                    field: AddrField::Source,
                    set: "g/web".into(),
                    negate: false,
                },
                NftMatch::AddrInSet {
                    field: AddrField::Destination,
                    set: "local".into(),
                    negate: true,
                },
                NftMatch::L4Proto(6),
                NftMatch::DstPorts(vec![(80, 80), (8000, 8080)]),
            ],
            log_prefix: Some("seam contract/web ".into()),
            sample: None,
            verdict: NftVerdict::Accept,
            comment: "contract/web/ingress/0".into(),
        };
        assert_eq!(
            rule.to_string(),
            "ip saddr @g/web ip daddr != @local meta l4proto tcp th dport { 80, 8000-8080 } counter \
             log prefix \"seam contract/web \" accept comment \"contract/web/ingress/0\""
        );
        let icmp = NftRule {
            matches: vec![NftMatch::L4Proto(1), NftMatch::IcmpType(8)],
            log_prefix: None,
            sample: None,
            verdict: NftVerdict::Return,
            comment: "anp/a/egress/0".into(),
        };
        assert_eq!(
            icmp.to_string(),
            "meta l4proto icmp icmp type 8 counter return comment \"anp/a/egress/0\""
        );
    }

    #[test]
    fn a_rate_limited_sample_is_two_kernel_rules_with_one_comment() {
        let sample = |limit| NftSample {
            group: 7,
            prefix: "D:np/x/a/ingress/0".into(),
            snaplen: 128,
            limit,
        };
        let mut rule = NftRule {
            matches: vec![NftMatch::L4Proto(6)],
            log_prefix: None,
            sample: Some(sample(Some(10))),
            verdict: NftVerdict::Drop,
            comment: "np/x/a/ingress/0".into(),
        };
        assert_eq!(
            rule.to_string(),
            "meta l4proto tcp limit rate over 10/second burst 10 packets counter drop comment \
             \"np/x/a/ingress/0\"\nmeta l4proto tcp counter log prefix \"D:np/x/a/ingress/0\" \
             group 7 snaplen 128 drop comment \"np/x/a/ingress/0\""
        );
        rule.sample = Some(sample(None));
        rule.verdict = NftVerdict::Accept;
        assert_eq!(
            rule.to_string(),
            "meta l4proto tcp counter log prefix \"D:np/x/a/ingress/0\" group 7 snaplen 128 \
             accept comment \"np/x/a/ingress/0\""
        );
    }
}
