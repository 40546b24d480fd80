//! The compiled firewall of one node, and a small interpreter of it.
//!
//! A [`NodeRuleset`] is what one node enforces: named address sets (group memberships, peers, the node's own
//! endpoints), and for each direction three ordered tier chains (admin, namespace, baseline) of [`Rule`]s. Every
//! rule carries a stable [`RuleId`] naming the policy rule it realizes; several rules may share one id (a policy
//! rule over two protocols, or a named port resolved to different numbers on different pods).
//!
//! Evaluation of one direction (the interpreter here and the nftables realization in [`crate::render`] agree):
//! walk the tiers in order, and in each tier the rules in order; the first rule that matches decides with
//! [`Action::Allow`] or [`Action::Deny`], while [`Action::Pass`] leaves the current tier at once for the next. A
//! tier that ends without a decision falls through to the next one. The baseline tier always ends with a
//! match-everything rule (the isolation mode's default), so every evaluated direction is decided by a rule.
//!
//! Egress is evaluated on the node of the source (when the source is one of its endpoints), ingress on the node of
//! the destination; a flow passes when every evaluated direction allows it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use seam_policy::{Decision, Direction, Protocol};

use crate::addr::AddrSet;

/// The name of an address set in a [`NodeRuleset`] (and in the rendered nftables table).
pub type SetName = String;

/// The name of the set of the node's own endpoint addresses.
pub const LOCAL_SET: &str = "local";

/// A stable rule identifier, e.g. `np/x/allow-web/ingress/0`, `anp/deny-slytherin/egress/1`, `cnp/guard/ingress/2`,
/// `contract/web/ingress/0`, `ns-isolation/ingress`, `mode/multitenant/blue/egress`, `default/egress`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(pub String);

impl RuleId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One of the node's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// `namespace/name`.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<Ipv4Addr>,
}

/// The tiers of DESIGN §3, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// AdminNetworkPolicies, Admin-tier ClusterNetworkPolicies and admin-tier Contracts.
    Admin,
    /// NetworkPolicies, namespace-tier Contracts and the isolation they imply.
    Namespace,
    /// Baseline-tier ClusterNetworkPolicies, the BaselineAdminNetworkPolicy, then the isolation mode's default.
    Baseline,
}

impl Tier {
    /// The tier's name in chain names: `admin`, `namespace`, `baseline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Admin => "admin",
            Tier::Namespace => "namespace",
            Tier::Baseline => "baseline",
        }
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// This direction is allowed; evaluation of the direction ends.
    Allow,
    /// The packet is dropped.
    Deny,
    /// Leave the current tier; the next tier decides (AdminNetworkPolicy `Pass`).
    Pass,
}

/// A test of the packet's source or destination address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddrMatch {
    /// The address is in the named set.
    In(SetName),
    /// The address is not in the named set.
    NotIn(SetName),
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (≥ `start`).
    pub end: u16,
}

/// A test of the packet's protocol and destination port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum L4Match {
    /// Every protocol and port.
    Any,
    /// This protocol, any port (or any ICMP type).
    Protocol(Protocol),
    /// This protocol (TCP, UDP or SCTP) and a destination port in one of the ranges (sorted, disjoint).
    Ports {
        /// The protocol.
        protocol: Protocol,
        /// Destination port ranges.
        ranges: Vec<PortRange>,
    },
    /// ICMP of this type.
    IcmpType(u8),
}

/// One rule of a tier chain: every test must hold for the action to apply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The policy rule this realizes.
    pub id: RuleId,
    /// Tests of the source address (all must hold).
    pub src: Vec<AddrMatch>,
    /// Tests of the destination address (all must hold).
    pub dst: Vec<AddrMatch>,
    /// Protocol and port.
    pub l4: L4Match,
    /// What happens on a match.
    pub action: Action,
    /// Whether matches are logged (Contracts' `log`).
    pub log: bool,
}

/// The ordered rules of one tier in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChain {
    /// Which tier.
    pub tier: Tier,
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
}

/// Everything one node enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRuleset {
    /// Address sets by name, including [`LOCAL_SET`].
    pub sets: BTreeMap<SetName, AddrSet>,
    /// The node's enforced endpoints, by name.
    pub local: Vec<LocalEndpoint>,
    /// Egress tiers (admin, namespace, baseline), evaluated for packets from a local endpoint.
    pub egress: Vec<TierChain>,
    /// Ingress tiers (admin, namespace, baseline), evaluated for packets to a local endpoint.
    pub ingress: Vec<TierChain>,
}

/// How one direction was decided by the IR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleVerdict {
    /// Allow or drop.
    pub decision: Decision,
    /// The tier of the deciding rule (`None` when no rule matched and the chain fell through, which a compiled
    /// ruleset never does).
    pub tier: Option<Tier>,
    /// The deciding rule.
    pub rule: Option<RuleId>,
}

/// How a packet fares on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketVerdict {
    /// The egress decision, when the source is local.
    pub egress: Option<RuleVerdict>,
    /// The ingress decision, when the destination is local and egress (if evaluated) allowed.
    pub ingress: Option<RuleVerdict>,
}

impl PacketVerdict {
    /// Whether the node forwards the packet.
    pub fn allowed(&self) -> bool {
        [&self.egress, &self.ingress]
            .into_iter()
            .flatten()
            .all(|v| v.decision == Decision::Allow)
    }
}

impl NodeRuleset {
    /// The tier chains of one direction.
    pub fn chains(&self, direction: Direction) -> &[TierChain] {
        match direction {
            Direction::Egress => &self.egress,
            Direction::Ingress => &self.ingress,
        }
    }

    /// Whether `addr` belongs to one of the node's endpoints.
    pub fn is_local(&self, addr: Ipv4Addr) -> bool {
        self.set_contains(LOCAL_SET, addr)
    }

    /// Every rule id, in chain order, without repeats.
    pub fn rule_ids(&self) -> Vec<RuleId> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for chain in self.egress.iter().chain(&self.ingress) {
            for r in &chain.rules {
                if seen.insert(r.id.clone()) {
                    out.push(r.id.clone());
                }
            }
        }
        out
    }

    /// Number of rules over both directions.
    pub fn rule_count(&self) -> usize {
        self.egress
            .iter()
            .chain(&self.ingress)
            .map(|c| c.rules.len())
            .sum()
    }

    fn set_contains(&self, name: &str, addr: Ipv4Addr) -> bool {
        self.sets.get(name).is_some_and(|s| s.contains(addr))
    }

    fn addr_matches(&self, m: &AddrMatch, addr: Ipv4Addr) -> bool {
        match m {
            AddrMatch::In(s) => self.set_contains(s, addr),
            AddrMatch::NotIn(s) => !self.set_contains(s, addr),
        }
    }

    fn rule_matches(
        &self,
        r: &Rule,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: Protocol,
        port: u16,
    ) -> bool {
        r.src.iter().all(|m| self.addr_matches(m, src))
            && r.dst.iter().all(|m| self.addr_matches(m, dst))
            && r.l4.matches(protocol, port)
    }

    /// Evaluates one direction for a packet, regardless of whether its end is local.
    pub fn evaluate_direction(
        &self,
        direction: Direction,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: Protocol,
        port: u16,
    ) -> RuleVerdict {
        'tiers: for chain in self.chains(direction) {
            for r in &chain.rules {
                if !self.rule_matches(r, src, dst, protocol, port) {
                    continue;
                }
                let decision = match r.action {
                    Action::Allow => Decision::Allow,
                    Action::Deny => Decision::Deny,
                    Action::Pass => continue 'tiers,
                };
                return RuleVerdict {
                    decision,
                    tier: Some(chain.tier),
                    rule: Some(r.id.clone()),
                };
            }
        }
        RuleVerdict {
            decision: Decision::Allow,
            tier: None,
            rule: None,
        }
    }
}

impl L4Match {
    /// Whether a packet of `protocol` to `port` (for ICMP: of type `port`) matches.
    pub fn matches(&self, protocol: Protocol, port: u16) -> bool {
        match self {
            L4Match::Any => true,
            L4Match::Protocol(p) => *p == protocol,
            L4Match::Ports {
                protocol: p,
                ranges,
            } => *p == protocol && ranges.iter().any(|r| (r.start..=r.end).contains(&port)),
            L4Match::IcmpType(t) => protocol == Protocol::Icmp && u16::from(*t) == port,
        }
    }
}

/// Runs the node's forward path for one new packet, as the rendered table does: egress when the source is
/// local, then (if egress allowed) ingress when the destination is local. `port` is the destination port, or the
/// ICMP type.
pub fn evaluate_packet(
    ruleset: &NodeRuleset,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: Protocol,
    port: u16,
) -> PacketVerdict {
    let egress = ruleset
        .is_local(src)
        .then(|| ruleset.evaluate_direction(Direction::Egress, src, dst, protocol, port));
    if egress
        .as_ref()
        .is_some_and(|v| v.decision == Decision::Deny)
    {
        return PacketVerdict {
            egress,
            ingress: None,
        };
    }
    let ingress = ruleset
        .is_local(dst)
        .then(|| ruleset.evaluate_direction(Direction::Ingress, src, dst, protocol, port));
    PacketVerdict { egress, ingress }
}
