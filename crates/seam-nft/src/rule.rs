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

/// A policy rule of `table inet seam`: its tests, a counter, an optional log, a verdict and a comment
/// (the rule id `explain` reads the counter back by).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NftRule {
    /// Tests, in order; all must hold.
    pub matches: Vec<NftMatch>,
    /// `log prefix "…"` before the verdict, when set.
    pub log_prefix: Option<String>,
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

impl fmt::Display for NftRule {
    /// The rule as `nft -f` reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        f.write_str("counter ")?;
        if let Some(prefix) = &self.log_prefix {
            write!(f, "log prefix \"{prefix}\" ")?;
        }
        let verdict = match self.verdict {
            NftVerdict::Accept => "accept",
            NftVerdict::Drop => "drop",
            NftVerdict::Return => "return",
        };
        write!(f, "{verdict} comment \"{}\"", self.comment)
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

/// An in-place change of the table, applied in two netlink batches so that traffic sees the old
/// policy until one atomic batch switches to the new one:
/// 1. `switch`: the new sets and rule chains (nothing refers to them until later in the batch), the
///    set element changes, the new dispatch chains and the dispatch map changes. The kernel applies a
///    batch all or nothing.
/// 2. `cleanup`: the chains and sets nothing refers to any more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallDelta {
    /// The switch, one batch.
    pub switch: Vec<TableOp>,
    /// What is left unreferenced, one batch.
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
            verdict: NftVerdict::Return,
            comment: "anp/a/egress/0".into(),
        };
        assert_eq!(
            icmp.to_string(),
            "meta l4proto icmp icmp type 8 counter return comment \"anp/a/egress/0\""
        );
    }
}
