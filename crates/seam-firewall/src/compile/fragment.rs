//! The ruleset cut into fragments, and the fragments that belong to no policy object: the namespace tier's
//! isolation rule and the default rules.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::{ContractAction, ContractTier, PolicyObject};

use super::{default_rule_id, dir_index, direction_str, emit, isolation_rule_id, sides, DIRS};
use crate::addr::AddrSet;
use crate::ir::{Action, AddrMatch, L4Match, Rule, SetName};

//
// The ruleset is cut into fragments: one per policy object (both directions), plus the namespace tier's isolation
// rule, the tenants' multitenant rules and the default rules. Each fragment's rules form one contiguous run of its
// tier chain, in the order of its [`Slot`]; a fragment depends only on its own object, the inventory and the node's
// endpoints, never on another fragment (the isolation rule depends on the `iso` sets the fragments hand in). The
// full compile computes every fragment; the incremental compiler recomputes only those a change touches.

/// Where a fragment's rules go: the variant order is the chain order (admin, namespace, baseline tier), and within
/// a variant the fields order fragments as the engine orders the objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Slot {
    /// ANP (kind 0), Admin-tier CNP (1) or admin-tier Contract (2): by (priority, kind, name).
    Admin(i64, u8, String),
    /// Namespace-tier deny Contract: by (priority, name).
    NsDeny(i64, String),
    /// NetworkPolicy: by (namespace, name).
    Np(String, String),
    /// Namespace-tier allow Contract: by (priority, name).
    NsAllow(i64, String),
    /// The namespace tier's isolation rule.
    Isolation,
    /// Baseline-tier CNP: by (priority, name).
    Baseline(i64, String),
    /// The BANP.
    Banp(String),
    /// Multitenant tenants' deny rules.
    Tenancy,
    /// The default allow rules.
    Default,
}

impl Slot {
    /// Index of its tier in [`TIERS`].
    pub(crate) fn tier(&self) -> usize {
        match self {
            Slot::Admin(..) => 0,
            Slot::NsDeny(..) | Slot::Np(..) | Slot::NsAllow(..) | Slot::Isolation => 1,
            Slot::Baseline(..) | Slot::Banp(..) | Slot::Tenancy | Slot::Default => 2,
        }
    }
}

/// The slot of a policy object's fragment; `None` for EndpointGroups (they have no rules of their own).
pub(crate) fn slot_of(o: &PolicyObject) -> Option<Slot> {
    Some(match o {
        PolicyObject::NetworkPolicy(np) => {
            Slot::Np(np.namespace().to_string(), np.metadata.name.clone())
        }
        PolicyObject::AdminNetworkPolicy(anp) => {
            Slot::Admin(anp.spec.priority, 0, anp.metadata.name.clone())
        }
        PolicyObject::ClusterNetworkPolicy(cnp) if cnp.is_admin() => {
            Slot::Admin(cnp.spec.priority, 1, cnp.metadata.name.clone())
        }
        PolicyObject::ClusterNetworkPolicy(cnp) => {
            Slot::Baseline(cnp.spec.priority, cnp.metadata.name.clone())
        }
        PolicyObject::BaselineAdminNetworkPolicy(banp) => Slot::Banp(banp.metadata.name.clone()),
        PolicyObject::Contract(c) => {
            let name = c.metadata.name.clone();
            match (c.spec.tier, c.spec.action) {
                (ContractTier::Admin, _) => Slot::Admin(c.priority(), 2, name),
                (ContractTier::Namespace, ContractAction::Deny) => Slot::NsDeny(c.priority(), name),
                (ContractTier::Namespace, ContractAction::Allow) => {
                    Slot::NsAllow(c.priority(), name)
                }
            }
        }
        _ => return None,
    })
}

/// What one fragment contributes to the ruleset.
#[derive(Debug, Default)]
pub(crate) struct FragOut {
    /// Its rules, egress then ingress (see [`DIRS`]), for its slot's tier.
    pub(crate) rules: [Vec<Rule>; 2],
    /// The sets its rules reference.
    pub(crate) sets: BTreeMap<SetName, AddrSet>,
    /// Per direction, the node's addresses it isolates in the namespace tier (NetworkPolicy subjects; for ingress
    /// also the local providers of an allow Contract).
    pub(crate) iso: [AddrSet; 2],
    /// The keys of the peers it read (see `Ctx::peer_members`), for the incremental compiler's count of readers.
    pub(crate) peers: Vec<String>,
}

impl FragOut {
    pub(super) fn intern(&mut self, name: String, set: AddrSet) -> SetName {
        self.sets.entry(name.clone()).or_insert(set);
        name
    }
}

/// The union of many sets, merged once (extending one by one re-sorts the growing union every time).
pub(crate) fn union_all(sets: &[AddrSet]) -> AddrSet {
    let total: u64 = sets
        .iter()
        .flat_map(|s| s.ranges())
        .map(|(a, b)| u64::from(u32::from(b)) - u64::from(u32::from(a)) + 1)
        .sum();
    // The sets this serves hold the node's own addresses; a huge union (CIDRs) falls back to merging.
    if total <= 1 << 20 {
        return AddrSet::from_addrs(
            sets.iter()
                .flat_map(|s| s.ranges())
                .flat_map(|(a, b)| (u32::from(a)..=u32::from(b)).map(Ipv4Addr::from)),
        );
    }
    let mut out = AddrSet::new();
    for s in sets {
        out.extend(s);
    }
    out
}

/// The namespace tier's isolation rule of each direction, over the union of the fragments' `iso` sets.
pub(crate) fn isolation_fragment(isolated: &[AddrSet; 2]) -> FragOut {
    let mut f = FragOut::default();
    for dir in DIRS {
        let set = &isolated[dir_index(dir)];
        if set.is_empty() {
            continue;
        }
        let name = f.intern(format!("ns-isolation/{}", direction_str(dir)), set.clone());
        let (src, dst) = sides(dir, vec![AddrMatch::In(name)], Vec::new());
        emit(
            &mut f.rules[dir_index(dir)],
            &isolation_rule_id(dir),
            &src,
            &dst,
            &vec![(None, L4Match::Any)],
            Action::Deny,
            false,
        );
    }
    f
}

/// The final allow rule of each direction.
pub(crate) fn default_fragment() -> FragOut {
    let mut f = FragOut::default();
    for dir in DIRS {
        f.rules[dir_index(dir)].push(Rule {
            id: default_rule_id(dir),
            src: Vec::new(),
            dst: Vec::new(),
            l4: L4Match::Any,
            action: Action::Allow,
            log: false,
        });
    }
    f
}
