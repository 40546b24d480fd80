//! The compiler: policies + inventory + the node's endpoints → [`NodeRuleset`].
//!
//! It realizes exactly the semantics of `seam_policy::evaluate` (crates/seam-policy/SEMANTICS.md): the tests in
//! `tests/it/conformance.rs` compare the interpreted IR with the engine on every conformance case, on one node and
//! spread over three. Selectors are resolved against the inventory here, once: rules test addresses against named
//! sets, so the number of rules grows with the policies, and the sets with the endpoints.
//!
//! Set names (all deterministic): `local`; `anp/<name>/subject`, `anp/<name>/<dir>/<i>/peer`;
//! `cnp/<name>/subject`, `cnp/<name>/<dir>/<i>/peer` (ClusterNetworkPolicy, either tier);
//! `banp/<name>/subject`, `banp/<name>/<dir>/<i>/peer`; `np/<ns>/<name>/subject`, `np/<ns>/<name>/<dir>/<i>/peer`;
//! `contract/<name>/consumers|providers[/tenant/<t>][/local]`; `port/<name>/<proto>/<port>` (holders of a named
//! port); `ns-isolation/<dir>`; `tenant/<t>`, `tenant/<t>/local`, `tenants/non-global`. Subject sets hold only the
//! node's own endpoints; peer and group sets hold every member.
//!
//! Layout: this module holds the driver ([`compile()`]) and what every policy kind reads (`Ctx`: the indexed
//! inventory, the node's endpoints, group and peer memberships); `fragment.rs` the cutting of the ruleset into
//! fragments (and the isolation and default rules); then one module per policy kind, each adding its methods to
//! `Ctx`: `networkpolicy`, `anp`, `cnp`, `banp` (sharing `admin`), `contracts` (with `groups`), `tenants`; `ports`
//! expands port alternatives, `ids` names the rules.

mod admin;
mod anp;
mod banp;
mod cnp;
mod contracts;
mod fragment;
mod groups;
mod ids;
mod index;
mod networkpolicy;
mod ports;
mod tenants;

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};

use ipnet::IpNet;
use seam_policy::{Direction, Endpoint, Inventory, Labels, PolicyObject, PolicySet};

use crate::addr::AddrSet;
use crate::error::CompileError;
use crate::ir::{
    Action, AddrMatch, LocalEndpoint, NodeRuleset, Rule, RuleId, SetName, Tier, TierChain,
    LOCAL_SET,
};

pub(crate) use fragment::{
    default_fragment, isolation_fragment, slot_of, union_all, FragOut, Slot,
};
pub use ids::{
    default_rule_id, direction_str, isolation_rule_id, multitenant_rule_id, policy_rule_prefix,
    rule_id, verdict_rule_id,
};
pub(crate) use index::Index;
use ports::L4Alts;

static NO_LABELS: Labels = Labels::new();

/// Compiles what the node holding `node_endpoints` (each `namespace/name`) must enforce: egress rules for its
/// endpoints as sources, ingress rules for them as destinations, and the sets those rules reference. External
/// endpoints are never enforced and are left out.
pub fn compile<S: AsRef<str>>(
    policies: &PolicySet,
    inventory: &Inventory,
    node_endpoints: &[S],
) -> Result<NodeRuleset, CompileError> {
    // The first endpoint of each reference, as `Inventory::endpoint` finds it, without its linear scan per name
    // (1,000 node endpoints × 10,000 endpoints).
    let mut by_ref: HashMap<(&str, &str), &Endpoint> = HashMap::new();
    for e in &inventory.endpoints {
        by_ref
            .entry((e.namespace.as_str(), e.name.as_str()))
            .or_insert(e);
    }
    let mut locals: Vec<&Endpoint> = Vec::new();
    let mut seen: HashSet<*const Endpoint> = HashSet::new();
    for name in node_endpoints {
        let name = name.as_ref();
        let ep = name
            .split_once('/')
            .and_then(|(ns, n)| by_ref.get(&(ns, n)).copied())
            .ok_or_else(|| CompileError::UnknownEndpoint {
                name: name.to_string(),
            })?;
        if ep.kind.is_enforced() && seen.insert(std::ptr::from_ref(ep)) {
            locals.push(ep);
        }
    }
    let index = Index::new(
        &inventory.namespaces,
        &inventory.tenants,
        inventory.default_isolation,
        &inventory.endpoints,
    );
    let local_addrs = addrs(locals.iter().copied());
    let groups = RefCell::new(BTreeMap::new());
    let ctx = Ctx::new(policies, &index, &locals, &local_addrs, &groups);
    let mut order: Vec<(Slot, &PolicyObject)> = policies
        .objects()
        .filter_map(|o| slot_of(o).map(|s| (s, o)))
        .collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));

    let mut chains: [[Vec<Rule>; 3]; 2] = Default::default();
    let mut sets: BTreeMap<SetName, AddrSet> = BTreeMap::new();
    sets.insert(LOCAL_SET.to_string(), local_addrs.clone());
    let mut iso: [Vec<AddrSet>; 2] = Default::default();
    let mut add = |tier: usize, frag: FragOut, iso: &mut [Vec<AddrSet>; 2]| {
        let FragOut {
            rules,
            sets: frag_sets,
            iso: frag_iso,
        } = frag;
        for (d, rules) in rules.into_iter().enumerate() {
            chains[d][tier].extend(rules);
        }
        for (name, set) in frag_sets {
            // Equal names always hold equal sets (a set is a function of its name), so the first one is kept.
            sets.entry(name).or_insert(set);
        }
        for (d, s) in frag_iso.into_iter().enumerate() {
            if !s.is_empty() {
                iso[d].push(s);
            }
        }
    };
    for (slot, o) in &order {
        add(slot.tier(), ctx.fragment(o), &mut iso);
    }
    let isolated = [union_all(&iso[0]), union_all(&iso[1])];
    add(1, isolation_fragment(&isolated), &mut iso);
    add(2, ctx.tenancy_fragment(), &mut iso);
    add(2, default_fragment(), &mut iso);

    let [egress, ingress] = chains;
    Ok(NodeRuleset {
        sets,
        local: local_endpoints(&locals),
        egress: tier_chains(egress),
        ingress: tier_chains(ingress),
    })
}

/// The tiers in chain order.
pub(crate) const TIERS: [Tier; 3] = [Tier::Admin, Tier::Namespace, Tier::Baseline];

/// The directions, in the order of [`FragOut::rules`]: egress, then ingress.
pub(crate) const DIRS: [Direction; 2] = [Direction::Egress, Direction::Ingress];

/// Index of a direction in [`DIRS`].
pub(crate) fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

pub(crate) fn tier_chains(rules: [Vec<Rule>; 3]) -> Vec<TierChain> {
    TIERS
        .into_iter()
        .zip(rules)
        .map(|(tier, rules)| TierChain { tier, rules })
        .collect()
}

pub(crate) fn local_endpoints(locals: &[&Endpoint]) -> Vec<LocalEndpoint> {
    locals
        .iter()
        .map(|e| LocalEndpoint {
            name: e.reference(),
            addresses: e.addresses.clone(),
        })
        .collect()
}

/// What compiling a fragment reads: the policies (for EndpointGroups), the indexed inventory, the node's endpoints,
/// and the memberships of groups (shared by every contract naming a group; the incremental compiler keeps them
/// between passes).
pub(crate) struct Ctx<'c, 'a> {
    set: &'c PolicySet,
    idx: &'c Index<'a>,
    locals: &'c [&'a Endpoint],
    local_addrs: &'c AddrSet,
    groups: &'c RefCell<BTreeMap<String, AddrSet>>,
    /// Addresses per tenant (tenants that have endpoints), computed on first use.
    tenant_members: OnceCell<BTreeMap<&'a str, AddrSet>>,
    /// Addresses of every endpoint of a non-global tenant, computed on first use.
    non_global: OnceCell<AddrSet>,
    /// Members of peers by their definition: many policies name the same peer (`team: x`, `env: prod` + a
    /// tier), and each computation scans the namespaces it selects.
    peers: RefCell<HashMap<String, AddrSet>>,
}

fn insert_ipnet(set: &mut AddrSet, net: &IpNet) {
    if let IpNet::V4(n) = net {
        set.insert_net(n.trunc());
    }
}

/// Places the local-side and peer-side tests of a direction as (src, dst).
fn sides(
    dir: Direction,
    local: Vec<AddrMatch>,
    peer: Vec<AddrMatch>,
) -> (Vec<AddrMatch>, Vec<AddrMatch>) {
    match dir {
        Direction::Egress => (local, peer),
        Direction::Ingress => (peer, local),
    }
}

/// Appends one rule per L4 alternative.
fn emit(
    out: &mut Vec<Rule>,
    id: &RuleId,
    src: &[AddrMatch],
    dst: &[AddrMatch],
    alts: &L4Alts,
    action: Action,
    log: bool,
) {
    for (holders, l4) in alts {
        let mut dst = dst.to_vec();
        if let Some(h) = holders {
            dst.push(AddrMatch::In(h.clone()));
        }
        out.push(Rule {
            id: id.clone(),
            src: src.to_vec(),
            dst,
            l4: l4.clone(),
            action,
            log,
        });
    }
}

/// The addresses of `endpoints`, merged once.
pub(crate) fn addrs<'e>(endpoints: impl IntoIterator<Item = &'e Endpoint>) -> AddrSet {
    // Collected first and merged once: see `AddrSet::from_addrs`.
    AddrSet::from_addrs(
        endpoints
            .into_iter()
            .flat_map(|e| e.addresses.iter().copied()),
    )
}

impl<'c, 'a> Ctx<'c, 'a> {
    pub(crate) fn new(
        set: &'c PolicySet,
        idx: &'c Index<'a>,
        locals: &'c [&'a Endpoint],
        local_addrs: &'c AddrSet,
        groups: &'c RefCell<BTreeMap<String, AddrSet>>,
    ) -> Self {
        Ctx {
            set,
            idx,
            locals,
            local_addrs,
            groups,
            tenant_members: OnceCell::new(),
            non_global: OnceCell::new(),
            peers: RefCell::new(HashMap::new()),
        }
    }

    /// The fragment of one policy object (empty for an EndpointGroup).
    pub(crate) fn fragment(&self, o: &PolicyObject) -> FragOut {
        let mut f = FragOut::default();
        match o {
            PolicyObject::NetworkPolicy(np) => self.np_fragment(&mut f, np),
            PolicyObject::AdminNetworkPolicy(anp) => self.anp_fragment(&mut f, anp),
            PolicyObject::ClusterNetworkPolicy(cnp) => self.cnp_fragment(&mut f, cnp),
            PolicyObject::BaselineAdminNetworkPolicy(banp) => self.banp_fragment(&mut f, banp),
            PolicyObject::Contract(c) => self.contract_fragment(&mut f, c),
            _ => {}
        }
        f
    }

    fn ns_labels(&self, ns: &str) -> &'a Labels {
        self.idx.ns_labels(ns)
    }

    /// The members of a peer, computed once per definition (`None`: a definition that cannot be written down,
    /// never remembered).
    fn peer_members(&self, key: Option<String>, members: impl FnOnce() -> AddrSet) -> AddrSet {
        let Some(key) = key else {
            return members();
        };
        if let Some(hit) = self.peers.borrow().get(&key) {
            return hit.clone();
        }
        let set = members();
        self.peers.borrow_mut().insert(key, set.clone());
        set
    }
}
