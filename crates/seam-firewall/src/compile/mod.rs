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
use seam_policy::{
    Direction, Endpoint, Inventory, LabelSelector, Labels, NamespacedPods, PolicyObject, PolicySet,
};

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
    let peers = RefCell::new(Peers::new());
    let ctx = Ctx::new(policies, &index, &locals, &local_addrs, &groups, &peers);
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
            peers: _,
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
    /// tier), and each computation scans the namespaces it selects (the incremental compiler keeps them between
    /// passes).
    peers: &'c RefCell<Peers>,
    /// The peers the fragment being compiled read, handed to it in [`FragOut::peers`].
    used: RefCell<Vec<String>>,
    /// The node's endpoints by namespace, grouped on first use: a NetworkPolicy's subject is in its namespace.
    locals_by_ns: OnceCell<BTreeMap<&'a str, Vec<&'a Endpoint>>>,
}

/// What a peer's members are a function of: the test each endpoint is put to, the one its members are computed
/// with. Kept with the members so that a changed endpoint can update them without a scan of the inventory.
#[derive(Debug, Clone)]
pub(crate) enum PeerTest {
    /// A NetworkPolicy peer without an `ipBlock`; in namespace `ns` when it has no namespace selector.
    Np {
        ns: Option<String>,
        namespace_selector: Option<LabelSelector>,
        pod_selector: Option<LabelSelector>,
    },
    /// An ANP/CNP/BANP peer's `namespaces` or `pods`.
    Admin {
        namespaces: Option<LabelSelector>,
        pods: Option<NamespacedPods>,
    },
}

impl PeerTest {
    /// Whether `e` is a member, with the namespace labels of `idx`.
    fn admits(&self, e: &Endpoint, idx: &Index<'_>) -> bool {
        if !e.kind.is_podlike() {
            return false;
        }
        match self {
            PeerTest::Np {
                ns,
                namespace_selector,
                pod_selector,
            } => {
                let ns_ok = match (namespace_selector, ns) {
                    (Some(sel), _) => sel.matches(idx.ns_labels(&e.namespace)),
                    (None, Some(ns)) => e.namespace == *ns,
                    (None, None) => false,
                };
                ns_ok && pod_selector.as_ref().is_none_or(|s| s.matches(&e.labels))
            }
            PeerTest::Admin { namespaces, pods } => {
                let labels = idx.ns_labels(&e.namespace);
                namespaces.as_ref().is_some_and(|s| s.matches(labels))
                    || pods.as_ref().is_some_and(|p| {
                        p.namespace_selector.matches(labels) && p.pod_selector.matches(&e.labels)
                    })
            }
        }
    }
}

/// A peer's members, its test, and how many fragments read it.
#[derive(Debug)]
pub(crate) struct Peer {
    test: PeerTest,
    /// `None`: to be computed again (namespace labels changed).
    members: Option<AddrSet>,
    pub(crate) refs: u32,
}

/// Peers by their definition (see [`Ctx::peer_members`]).
pub(crate) type Peers = HashMap<String, Peer>;

/// Brings the members of the kept peers to the endpoints' changes (each before and after), without a scan of the
/// inventory: what a changed endpoint gave goes, what it gives now comes. Exact only when no two endpoints share
/// an address (else the incremental compiler compiles in full) and the namespaces' labels did not change (else
/// [`forget_peer_members`]).
pub(crate) fn update_peers(
    peers: &mut Peers,
    idx: &Index<'_>,
    changes: &[(Option<&Endpoint>, Option<&Endpoint>)],
) {
    for p in peers.values_mut() {
        let Some(members) = p.members.as_mut() else {
            continue;
        };
        let mut gone = Vec::new();
        let mut came = Vec::new();
        for (old, new) in changes {
            let was = old.filter(|e| p.test.admits(e, idx));
            let is = new.filter(|e| p.test.admits(e, idx));
            if let (Some(w), Some(i)) = (was, is) {
                if w.addresses == i.addresses {
                    continue;
                }
            }
            gone.extend(was.into_iter().flat_map(|e| e.addresses.iter().copied()));
            came.extend(is.into_iter().flat_map(|e| e.addresses.iter().copied()));
        }
        for a in gone {
            members.remove_net(ipnet::Ipv4Net::from(a));
        }
        if !came.is_empty() {
            members.extend(&AddrSet::from_addrs(came));
        }
    }
}

/// Marks every kept peer's members to be computed again on next use (their tests read namespace labels).
pub(crate) fn forget_peer_members(peers: &mut Peers) {
    for p in peers.values_mut() {
        p.members = None;
    }
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
        peers: &'c RefCell<Peers>,
    ) -> Self {
        Ctx {
            set,
            idx,
            locals,
            local_addrs,
            groups,
            tenant_members: OnceCell::new(),
            non_global: OnceCell::new(),
            peers,
            used: RefCell::new(Vec::new()),
            locals_by_ns: OnceCell::new(),
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
        f.peers = std::mem::take(&mut *self.used.borrow_mut());
        f
    }

    /// The node's endpoints in namespace `ns`.
    fn locals_in(&self, ns: &str) -> impl Iterator<Item = &'a Endpoint> + '_ {
        let by_ns = self.locals_by_ns.get_or_init(|| {
            let mut m: BTreeMap<&'a str, Vec<&'a Endpoint>> = BTreeMap::new();
            for e in self.locals {
                m.entry(e.namespace.as_str()).or_default().push(e);
            }
            m
        });
        by_ns.get(ns).into_iter().flatten().copied()
    }

    fn ns_labels(&self, ns: &str) -> &'a Labels {
        self.idx.ns_labels(ns)
    }

    /// The members of a peer, computed once per definition (`None`: a definition that cannot be written down,
    /// never remembered); `test` is what the members are a function of.
    fn peer_members(
        &self,
        key: Option<String>,
        test: impl FnOnce() -> PeerTest,
        members: impl FnOnce() -> AddrSet,
    ) -> AddrSet {
        let Some(key) = key else {
            return members();
        };
        let hit = self
            .peers
            .borrow()
            .get(&key)
            .and_then(|p| p.members.clone());
        let set = match hit {
            Some(set) => set,
            None => {
                let set = members();
                let mut peers = self.peers.borrow_mut();
                let p = peers.entry(key.clone()).or_insert_with(|| Peer {
                    test: test(),
                    members: None,
                    refs: 0,
                });
                p.members = Some(set.clone());
                set
            }
        };
        self.used.borrow_mut().push(key);
        set
    }
}
