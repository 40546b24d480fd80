//! Ports: a rule's port alternatives expanded into L4 tests, named ports into the sets of their holders.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use seam_policy::Protocol;

use super::{Ctx, FragOut};
use crate::addr::AddrSet;
use crate::ir::{L4Match, PortRange, SetName};

/// One way a rule's ports can match.
pub(super) enum PortAlt {
    /// Every port of the protocol.
    AnyPort(Protocol),
    /// A numeric range of the protocol.
    Range(Protocol, u16, u16),
    /// A named port of the destination, with the policy's protocol when it names one.
    Named(String, Option<Protocol>),
}

/// The L4 tests a rule expands to, each with the set of destinations it is limited to (named ports).
pub(super) type L4Alts = Vec<(Option<SetName>, L4Match)>;

pub(super) fn port_u16(n: i64) -> Option<u16> {
    u16::try_from(n).ok()
}

fn proto_str(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
        Protocol::Icmp => "icmp",
    }
}

impl<'a> Ctx<'_, 'a> {
    /// Expands port alternatives; `None` (no port restriction) is one alternative matching everything.
    pub(super) fn l4_alts(&self, f: &mut FragOut, alts: Option<Vec<PortAlt>>) -> L4Alts {
        let Some(alts) = alts else {
            return vec![(None, L4Match::Any)];
        };
        let mut any: BTreeSet<Protocol> = BTreeSet::new();
        let mut ranges: BTreeMap<Protocol, Vec<PortRange>> = BTreeMap::new();
        let mut named: BTreeMap<(Protocol, u16, String), Vec<Ipv4Addr>> = BTreeMap::new();
        for alt in alts {
            match alt {
                PortAlt::AnyPort(p) => {
                    any.insert(p);
                }
                PortAlt::Range(p, start, end) => {
                    ranges.entry(p).or_default().push(PortRange { start, end })
                }
                PortAlt::Named(name, proto) => {
                    let holders = self.idx.named_ports().get(name.as_str());
                    for e in holders.into_iter().flatten() {
                        for cp in &e.ports {
                            if cp.name.as_deref() == Some(name.as_str())
                                && proto.is_none_or(|p| p == cp.protocol)
                            {
                                named
                                    .entry((cp.protocol, cp.port, name.clone()))
                                    .or_default()
                                    .extend(e.addresses.iter().copied());
                            }
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        for p in &any {
            out.push((None, L4Match::Protocol(*p)));
        }
        for (p, rs) in ranges {
            if any.contains(&p) {
                continue;
            }
            out.push((
                None,
                L4Match::Ports {
                    protocol: p,
                    ranges: merge_ranges(rs),
                },
            ));
        }
        for ((p, port, name), holders) in named {
            let set = f.intern(
                format!("port/{name}/{}/{port}", proto_str(p)),
                AddrSet::from_addrs(holders),
            );
            out.push((
                Some(set),
                L4Match::Ports {
                    protocol: p,
                    ranges: vec![PortRange {
                        start: port,
                        end: port,
                    }],
                },
            ));
        }
        out
    }
}

pub(super) fn merge_ranges(mut rs: Vec<PortRange>) -> Vec<PortRange> {
    rs.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(rs.len());
    for r in rs {
        match out.last_mut() {
            Some(last) if u32::from(r.start) <= u32::from(last.end) + 1 => {
                last.end = last.end.max(r.end)
            }
            _ => out.push(r),
        }
    }
    out
}
