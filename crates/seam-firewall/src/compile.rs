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

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use seam_policy::{
    AdminEgressPeer, AdminEgressRule, AdminIngressPeer, AdminIngressRule, AdminPort, AdminSubject,
    AnpAction, BanpAction, ClusterNetworkPolicy, Contract, ContractAction, ContractScope,
    ContractTier, Direction, DirectionVerdict, Endpoint, EndpointKind, EndpointSelector, Filter,
    Inventory, IsolationMode, Labels, Namespace, NamespacedPods, NetworkPolicy, NetworkPolicyPeer,
    NetworkPolicyPort, PolicyKind, PolicyObject, PolicySet, PolicyType, PortRef, Protocol, Reason,
    RuleRef, Tenant, CLUSTER_GROUP, DEFAULT_TENANT, NAMESPACE_GROUP_PREFIX,
};

use crate::addr::AddrSet;
use crate::error::CompileError;
use crate::ir::{
    Action, AddrMatch, L4Match, LocalEndpoint, NodeRuleset, PortRange, Rule, RuleId, SetName, Tier,
    TierChain, LOCAL_SET,
};

static NO_LABELS: Labels = Labels::new();

/// `egress` or `ingress`.
pub fn direction_str(direction: Direction) -> &'static str {
    match direction {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    }
}

/// The id of the IR rule that realizes a policy rule in one direction: `np/<ns>/<name>/<dir>/<i>`,
/// `anp/<name>/<dir>/<i>`, `cnp/<name>/<dir>/<i>`, `banp/<name>/<dir>/<i>`, `contract/<name>/<dir>/<subject>` (`*` when the reference
/// names the object as a whole).
pub fn rule_id(rule: &RuleRef, direction: Direction) -> RuleId {
    let dir = direction_str(direction);
    let index = rule
        .rule_index
        .map_or_else(|| "*".to_string(), |i| i.to_string());
    let text = match rule.kind {
        PolicyKind::NetworkPolicy => format!(
            "np/{}/{}/{dir}/{index}",
            rule.namespace.as_deref().unwrap_or(""),
            rule.name
        ),
        PolicyKind::AdminNetworkPolicy => format!("anp/{}/{dir}/{index}", rule.name),
        PolicyKind::BaselineAdminNetworkPolicy => format!("banp/{}/{dir}/{index}", rule.name),
        PolicyKind::ClusterNetworkPolicy => format!("cnp/{}/{dir}/{index}", rule.name),
        PolicyKind::Contract => format!("contract/{}/{dir}/{index}", rule.name),
        PolicyKind::EndpointGroup => format!("group/{}/{dir}", rule.name),
    };
    RuleId(text)
}

/// The id of the namespace-tier isolation rule of a direction: `ns-isolation/<dir>`.
pub fn isolation_rule_id(direction: Direction) -> RuleId {
    RuleId(format!("ns-isolation/{}", direction_str(direction)))
}

/// The id of the final allow rule of a direction: `default/<dir>`.
pub fn default_rule_id(direction: Direction) -> RuleId {
    RuleId(format!("default/{}", direction_str(direction)))
}

/// The id of the multitenant deny rule of a tenant: `mode/multitenant/<tenant>/<dir>`.
pub fn multitenant_rule_id(tenant: &str, direction: Direction) -> RuleId {
    RuleId(format!(
        "mode/multitenant/{tenant}/{}",
        direction_str(direction)
    ))
}

/// The IR rule that realizes what decided an engine verdict (what `explain` looks up in the kernel's counters);
/// `None` for an unenforced end.
pub fn verdict_rule_id(verdict: &DirectionVerdict) -> Option<RuleId> {
    let dir = verdict.direction;
    match &verdict.reason {
        Reason::Rule(r) => Some(rule_id(r, dir)),
        Reason::Isolated(_) => Some(isolation_rule_id(dir)),
        Reason::IsolationMode { mode, tenant, .. } => Some(
            if *mode == IsolationMode::Multitenant && !verdict.allowed() {
                multitenant_rule_id(tenant, dir)
            } else {
                default_rule_id(dir)
            },
        ),
        Reason::Unenforced => None,
    }
}

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

// ---- fragments ------------------------------------------------------------------------------------------------
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
}

impl FragOut {
    fn intern(&mut self, name: String, set: AddrSet) -> SetName {
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

// ---- the inventory, indexed ----------------------------------------------------------------------------------

/// The inventory as the compiler reads it: endpoints grouped by namespace (most selectors look at one namespace,
/// or first pick namespaces by their labels), and by the names of their named ports.
pub(crate) struct Index<'a> {
    namespaces: &'a BTreeMap<String, Namespace>,
    tenants: &'a BTreeMap<String, Tenant>,
    default_isolation: IsolationMode,
    by_ns: BTreeMap<&'a str, Vec<&'a Endpoint>>,
    named_ports: BTreeMap<&'a str, Vec<&'a Endpoint>>,
}

impl<'a> Index<'a> {
    pub(crate) fn new(
        namespaces: &'a BTreeMap<String, Namespace>,
        tenants: &'a BTreeMap<String, Tenant>,
        default_isolation: IsolationMode,
        endpoints: impl IntoIterator<Item = &'a Endpoint>,
    ) -> Self {
        let mut by_ns: BTreeMap<&'a str, Vec<&'a Endpoint>> = BTreeMap::new();
        let mut named_ports: BTreeMap<&'a str, Vec<&'a Endpoint>> = BTreeMap::new();
        // Endpoints sorted by name come in runs of one namespace: one map lookup per run.
        let mut run: Vec<&'a Endpoint> = Vec::new();
        for e in endpoints {
            if run.last().is_some_and(|r| r.namespace != e.namespace) {
                let ns = run[0].namespace.as_str();
                by_ns.entry(ns).or_default().append(&mut run);
            }
            run.push(e);
            for cp in &e.ports {
                if let Some(name) = cp.name.as_deref() {
                    let holders = named_ports.entry(name).or_default();
                    if !holders.last().is_some_and(|h| std::ptr::eq(*h, e)) {
                        holders.push(e);
                    }
                }
            }
        }
        if let Some(first) = run.first() {
            let ns = first.namespace.as_str();
            by_ns.entry(ns).or_default().append(&mut run);
        }
        Index {
            namespaces,
            tenants,
            default_isolation,
            by_ns,
            named_ports,
        }
    }

    pub(crate) fn ns_labels(&self, ns: &str) -> &'a Labels {
        self.namespaces.get(ns).map_or(&NO_LABELS, |n| &n.labels)
    }

    pub(crate) fn tenant_name(&self, ns: &str) -> &'a str {
        self.namespaces
            .get(ns)
            .and_then(|n| n.tenant.as_deref())
            .unwrap_or(DEFAULT_TENANT)
    }

    pub(crate) fn tenant(&self, name: &str) -> Tenant {
        self.tenants.get(name).copied().unwrap_or(Tenant {
            isolation: self.default_isolation,
            global: false,
        })
    }

    fn all(&self) -> impl Iterator<Item = &'a Endpoint> + '_ {
        self.by_ns.values().flatten().copied()
    }

    fn in_ns(&self, ns: &str) -> impl Iterator<Item = &'a Endpoint> + '_ {
        self.by_ns.get(ns).into_iter().flatten().copied()
    }

    /// Endpoints of the namespaces whose labels pass `keep`.
    fn in_namespaces<'s>(
        &'s self,
        keep: impl Fn(&Labels) -> bool + 's,
    ) -> impl Iterator<Item = &'a Endpoint> + 's {
        self.by_ns
            .iter()
            .filter(move |(ns, _)| keep(self.ns_labels(ns)))
            .flat_map(|(_, eps)| eps.iter().copied())
    }
}

// ---- the compiler of one fragment ------------------------------------------------------------------------------

/// One way a rule's ports can match.
enum PortAlt {
    /// Every port of the protocol.
    AnyPort(Protocol),
    /// A numeric range of the protocol.
    Range(Protocol, u16, u16),
    /// A named port of the destination, with the policy's protocol when it names one.
    Named(String, Option<Protocol>),
}

/// The L4 tests a rule expands to, each with the set of destinations it is limited to (named ports).
type L4Alts = Vec<(Option<SetName>, L4Match)>;

/// Per rule of an ANP, CNP or BANP in one direction: its ports, its IR action (`None`: not realized) and its peers.
type AdminRules<'r> = Vec<(Option<&'r [AdminPort]>, Option<Action>, AddrSet)>;

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

fn in_net(net: &IpNet, addr: Ipv4Addr) -> bool {
    net.contains(&IpAddr::V4(addr))
}

fn insert_ipnet(set: &mut AddrSet, net: &IpNet) {
    if let IpNet::V4(n) = net {
        set.insert_net(n.trunc());
    }
}

fn port_u16(n: i64) -> Option<u16> {
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

fn anp_action(a: AnpAction) -> Option<Action> {
    Some(match a {
        AnpAction::Allow => Action::Allow,
        AnpAction::Deny => Action::Deny,
        AnpAction::Pass => Action::Pass,
    })
}

/// Pass cannot pass validation in the baseline tier; the engine lets such a rule match nothing.
fn baseline_action(a: AnpAction) -> Option<Action> {
    match a {
        AnpAction::Allow => Some(Action::Allow),
        AnpAction::Deny => Some(Action::Deny),
        AnpAction::Pass => None,
    }
}

fn banp_action(a: BanpAction) -> Option<Action> {
    Some(match a {
        BanpAction::Allow => Action::Allow,
        BanpAction::Deny => Action::Deny,
    })
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
            PolicyObject::AdminNetworkPolicy(anp) => {
                for dir in DIRS {
                    let rules =
                        self.policy_rules(dir, &anp.spec.ingress, &anp.spec.egress, anp_action);
                    self.admin_rules(
                        &mut f,
                        dir,
                        &format!("anp/{}", anp.metadata.name),
                        &anp.spec.subject,
                        rules,
                    );
                }
            }
            PolicyObject::ClusterNetworkPolicy(cnp) => {
                let action = if cnp.is_admin() {
                    anp_action
                } else {
                    baseline_action
                };
                for dir in DIRS {
                    self.cnp_rules(&mut f, dir, cnp, action);
                }
            }
            PolicyObject::BaselineAdminNetworkPolicy(banp) => {
                for dir in DIRS {
                    let rules =
                        self.policy_rules(dir, &banp.spec.ingress, &banp.spec.egress, banp_action);
                    self.admin_rules(
                        &mut f,
                        dir,
                        &format!("banp/{}", banp.metadata.name),
                        &banp.spec.subject,
                        rules,
                    );
                }
            }
            PolicyObject::Contract(c) => {
                let consumers = self.groups_set(&c.spec.consumers);
                let providers = self.groups_set(&c.spec.providers);
                for dir in DIRS {
                    self.contract_rules(&mut f, dir, c, &consumers, &providers);
                }
                if c.spec.tier == ContractTier::Namespace && c.spec.action == ContractAction::Allow
                {
                    // Providers of a namespace-tier allow contract are isolated for ingress.
                    f.iso[dir_index(Direction::Ingress)] = providers.intersection(self.local_addrs);
                }
            }
            _ => {}
        }
        f
    }

    fn ns_labels(&self, ns: &str) -> &'a Labels {
        self.idx.ns_labels(ns)
    }

    // ---- selectors ------------------------------------------------------------------------------------------

    fn pods_match(&self, pods: &NamespacedPods, ep: &Endpoint) -> bool {
        pods.namespace_selector
            .matches(self.ns_labels(&ep.namespace))
            && pods.pod_selector.matches(&ep.labels)
    }

    fn subject_selects(&self, subject: &AdminSubject, ep: &Endpoint) -> bool {
        if !ep.kind.is_podlike() {
            return false;
        }
        match (&subject.namespaces, &subject.pods) {
            (Some(ns), _) => ns.matches(self.ns_labels(&ep.namespace)),
            (None, Some(pods)) => self.pods_match(pods, ep),
            (None, None) => false,
        }
    }

    /// Local endpoints an admin subject selects.
    fn subject_set(&self, subject: &AdminSubject) -> AddrSet {
        addrs(
            self.locals
                .iter()
                .copied()
                .filter(|e| self.subject_selects(subject, e)),
        )
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

    fn admin_peer_set(
        &self,
        namespaces: Option<&seam_policy::LabelSelector>,
        pods: Option<&NamespacedPods>,
        networks: Option<&Vec<IpNet>>,
    ) -> AddrSet {
        let key = serde_json::to_string(&(namespaces, pods))
            .ok()
            .map(|k| format!("admin\0{k}"));
        let mut s = self.peer_members(key, || self.admin_peer_members(namespaces, pods));
        for n in networks.into_iter().flatten() {
            insert_ipnet(&mut s, n);
        }
        s
    }

    fn admin_peer_members(
        &self,
        namespaces: Option<&seam_policy::LabelSelector>,
        pods: Option<&NamespacedPods>,
    ) -> AddrSet {
        addrs(
            self.idx
                .by_ns
                .iter()
                .filter_map(|(ns, eps)| {
                    let labels = self.ns_labels(ns);
                    let whole = namespaces.is_some_and(|sel| sel.matches(labels));
                    let some = pods.filter(|p| p.namespace_selector.matches(labels));
                    (whole || some.is_some()).then_some((whole, some, eps))
                })
                .flat_map(|(whole, some, eps)| {
                    eps.iter().copied().filter(move |e| {
                        e.kind.is_podlike()
                            && (whole || some.is_some_and(|p| p.pod_selector.matches(&e.labels)))
                    })
                }),
        )
    }

    fn np_peer_set(&self, policy_ns: &str, peers: &[NetworkPolicyPeer]) -> AddrSet {
        let mut s = AddrSet::new();
        for p in peers {
            if let Some(block) = &p.ip_block {
                let IpNet::V4(cidr) = block.cidr else {
                    continue;
                };
                let mut b = AddrSet::new();
                b.insert_net(cidr.trunc());
                for x in &block.except {
                    if let IpNet::V4(x) = x {
                        b.remove_net(x.trunc());
                    }
                }
                s.extend(&b);
                continue;
            }
            let pod_ok = |e: &&Endpoint| {
                e.kind.is_podlike()
                    && p.pod_selector
                        .as_ref()
                        .is_none_or(|sel| sel.matches(&e.labels))
            };
            // A peer without a namespace selector means the policy's namespace: part of its definition.
            let key = serde_json::to_string(p).ok().map(|k| {
                let ns = if p.namespace_selector.is_none() {
                    policy_ns
                } else {
                    ""
                };
                format!("np\0{ns}\0{k}")
            });
            let members = self.peer_members(key, || match &p.namespace_selector {
                Some(sel) => addrs(self.idx.in_namespaces(|l| sel.matches(l)).filter(pod_ok)),
                None => addrs(self.idx.in_ns(policy_ns).filter(pod_ok)),
            });
            s.extend(&members);
        }
        s
    }

    fn selector_set(&self, s: &EndpointSelector) -> AddrSet {
        let mut out = AddrSet::new();
        if s.is_cidr_only() {
            for n in &s.cidrs {
                insert_ipnet(&mut out, n);
            }
            return out;
        }
        let ns_ok = |l: &Labels| {
            s.namespace_selector
                .as_ref()
                .is_none_or(|sel| sel.matches(l))
        };
        let mut members = Vec::new();
        for (ns, eps) in &self.idx.by_ns {
            if !(s.namespaces.is_empty() || s.namespaces.iter().any(|n| n == ns))
                || !ns_ok(self.ns_labels(ns))
            {
                continue;
            }
            for e in eps {
                let ok = (s.kinds.is_empty() || s.kinds.contains(&e.kind))
                    && s.labels.as_ref().is_none_or(|sel| sel.matches(&e.labels));
                if !ok {
                    continue;
                }
                for a in &e.addresses {
                    if s.cidrs.is_empty() || s.cidrs.iter().any(|n| in_net(n, *a)) {
                        members.push(*a);
                    }
                }
            }
        }
        // Collected first and merged once: see `AddrSet::from_addrs`.
        AddrSet::from_addrs(members)
    }

    /// Members of a group: `cluster`, `namespace/<ns>` or an EndpointGroup (none when undefined).
    pub(crate) fn group_set(&self, group: &str) -> AddrSet {
        if let Some(hit) = self.groups.borrow().get(group) {
            return hit.clone();
        }
        let members = self.group_set_uncached(group);
        self.groups
            .borrow_mut()
            .insert(group.to_string(), members.clone());
        members
    }

    pub(crate) fn group_set_uncached(&self, group: &str) -> AddrSet {
        if group == CLUSTER_GROUP {
            return addrs(self.idx.all().filter(|e| e.kind != EndpointKind::External));
        }
        if let Some(ns) = group.strip_prefix(NAMESPACE_GROUP_PREFIX) {
            return addrs(self.idx.in_ns(ns));
        }
        if let Some(d) = seam_policy::deployment_group(group) {
            return addrs(
                self.idx
                    .in_ns(d.0)
                    .filter(|e| seam_policy::in_deployment(d, &e.namespace, &e.labels)),
            );
        }
        let mut out = AddrSet::new();
        if let Some(g) = self.set.endpoint_group(group) {
            for s in &g.spec.selectors {
                out.extend(&self.selector_set(s));
            }
        }
        out
    }

    fn groups_set(&self, groups: &[String]) -> AddrSet {
        let mut out = AddrSet::new();
        for g in groups {
            out.extend(&self.group_set(g));
        }
        out
    }

    fn tenant_members(&self) -> &BTreeMap<&'a str, AddrSet> {
        self.tenant_members.get_or_init(|| {
            let mut by_tenant: BTreeMap<&'a str, Vec<Ipv4Addr>> = BTreeMap::new();
            for (ns, eps) in &self.idx.by_ns {
                by_tenant
                    .entry(self.idx.tenant_name(ns))
                    .or_default()
                    .extend(eps.iter().flat_map(|e| e.addresses.iter().copied()));
            }
            by_tenant
                .into_iter()
                .map(|(t, a)| (t, AddrSet::from_addrs(a)))
                .collect()
        })
    }

    fn non_global(&self) -> &AddrSet {
        self.non_global.get_or_init(|| {
            addrs(
                self.idx
                    .by_ns
                    .iter()
                    .filter(|(ns, _)| !self.idx.tenant(self.idx.tenant_name(ns)).global)
                    .flat_map(|(_, eps)| eps.iter().copied()),
            )
        })
    }

    // ---- ports ----------------------------------------------------------------------------------------------

    /// Expands port alternatives; `None` (no port restriction) is one alternative matching everything.
    fn l4_alts(&self, f: &mut FragOut, alts: Option<Vec<PortAlt>>) -> L4Alts {
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
                    let holders = self.idx.named_ports.get(name.as_str());
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

    fn admin_port_alts(ports: Option<&[AdminPort]>) -> Option<Vec<PortAlt>> {
        let ports = ports?;
        let mut out = Vec::new();
        for p in ports {
            if let Some(n) = &p.port_number {
                if let Some(port) = port_u16(n.port) {
                    out.push(PortAlt::Range(
                        n.protocol.unwrap_or(Protocol::Tcp),
                        port,
                        port,
                    ));
                }
            } else if let Some(r) = &p.port_range {
                if let (Some(s), Some(e)) = (port_u16(r.start), port_u16(r.end)) {
                    out.push(PortAlt::Range(r.protocol.unwrap_or(Protocol::Tcp), s, e));
                }
            } else if let Some(name) = &p.named_port {
                out.push(PortAlt::Named(name.clone(), None));
            }
        }
        Some(out)
    }

    fn np_port_alts(ports: &[NetworkPolicyPort]) -> Option<Vec<PortAlt>> {
        if ports.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for p in ports {
            let proto = p.protocol();
            match &p.port {
                None => out.push(PortAlt::AnyPort(proto)),
                Some(PortRef::Number(n)) => {
                    let end = p.end_port.unwrap_or(*n);
                    if let (Some(s), Some(e)) = (port_u16(*n), port_u16(end)) {
                        out.push(PortAlt::Range(proto, s, e));
                    }
                }
                Some(PortRef::Name(name)) => out.push(PortAlt::Named(name.clone(), Some(proto))),
            }
        }
        Some(out)
    }

    fn filter_alt(f: &Filter) -> Option<L4Match> {
        if !f.protocol.has_ports() {
            return match f.icmp_type {
                None => Some(L4Match::Protocol(f.protocol)),
                // An ICMP type outside 0..=255 matches no packet.
                Some(t) => u8::try_from(t).ok().map(L4Match::IcmpType),
            };
        }
        if f.ports.is_empty() && f.port_ranges.is_empty() {
            return Some(L4Match::Protocol(f.protocol));
        }
        let mut ranges: Vec<PortRange> = f
            .ports
            .iter()
            .filter_map(|p| port_u16(*p))
            .map(|p| PortRange { start: p, end: p })
            .collect();
        for r in &f.port_ranges {
            if let (Some(start), Some(end)) = (port_u16(r.from), port_u16(r.to)) {
                ranges.push(PortRange { start, end });
            }
        }
        Some(L4Match::Ports {
            protocol: f.protocol,
            ranges: merge_ranges(ranges),
        })
    }

    // ---- contracts ------------------------------------------------------------------------------------------

    fn contract_rules(
        &self,
        f: &mut FragOut,
        dir: Direction,
        c: &Contract,
        consumers: &AddrSet,
        providers: &AddrSet,
    ) {
        let name = &c.metadata.name;
        // (suffix, consumers, providers): one pair per tenant when the scope is the tenant.
        let mut pairs: Vec<(String, AddrSet, AddrSet)> = Vec::new();
        match c.spec.scope {
            ContractScope::Global => {
                pairs.push((String::new(), consumers.clone(), providers.clone()))
            }
            ContractScope::Tenant => {
                for (t, members) in self.tenant_members() {
                    pairs.push((
                        format!("/tenant/{t}"),
                        consumers.intersection(members),
                        providers.intersection(members),
                    ));
                }
            }
        }
        let subjects: Vec<(usize, Vec<L4Match>)> = c
            .spec
            .subjects
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.filters.iter().filter_map(Self::filter_alt).collect()))
            .collect();
        let action = match c.spec.action {
            ContractAction::Allow => Action::Allow,
            ContractAction::Deny => Action::Deny,
        };
        for (suffix, cons, prov) in pairs {
            let (cons, prov) = match dir {
                Direction::Egress => (cons.intersection(self.local_addrs), prov),
                Direction::Ingress => (cons, prov.intersection(self.local_addrs)),
            };
            if cons.is_empty() || prov.is_empty() {
                continue;
            }
            let local = match dir {
                Direction::Egress => ("consumers", "providers"),
                Direction::Ingress => ("providers", "consumers"),
            };
            let cons_name = f.intern(
                format!(
                    "contract/{name}/consumers{suffix}{}",
                    if local.0 == "consumers" { "/local" } else { "" }
                ),
                cons,
            );
            let prov_name = f.intern(
                format!(
                    "contract/{name}/providers{suffix}{}",
                    if local.0 == "providers" { "/local" } else { "" }
                ),
                prov,
            );
            let src = [AddrMatch::In(cons_name)];
            let dst = [AddrMatch::In(prov_name)];
            for (i, l4s) in &subjects {
                let id = RuleId(format!("contract/{name}/{}/{i}", direction_str(dir)));
                let alts: L4Alts = l4s.iter().map(|l| (None, l.clone())).collect();
                emit(
                    &mut f.rules[dir_index(dir)],
                    &id,
                    &src,
                    &dst,
                    &alts,
                    action,
                    c.spec.log,
                );
            }
        }
    }

    // ---- admin-style policies -------------------------------------------------------------------------------

    /// The rules of a CNP (lowered to the ANP shape) for the local endpoints its subject selects.
    fn cnp_rules(
        &self,
        f: &mut FragOut,
        dir: Direction,
        cnp: &ClusterNetworkPolicy,
        action: impl Fn(AnpAction) -> Option<Action>,
    ) {
        let (ingress, egress) = match dir {
            Direction::Ingress => (cnp.ingress_rules(), Vec::new()),
            Direction::Egress => (Vec::new(), cnp.egress_rules()),
        };
        let rules = self.policy_rules(dir, &ingress, &egress, action);
        self.admin_rules(
            f,
            dir,
            &format!("cnp/{}", cnp.metadata.name),
            &cnp.spec.subject,
            rules,
        );
    }

    /// Ports, IR action (`None`: the rule is not realized) and peer set of each rule of the direction.
    fn policy_rules<'r, A: Copy>(
        &self,
        dir: Direction,
        ingress: &'r [AdminIngressRule<A>],
        egress: &'r [AdminEgressRule<A>],
        action: impl Fn(A) -> Option<Action>,
    ) -> AdminRules<'r> {
        match dir {
            Direction::Ingress => ingress
                .iter()
                .map(|r| {
                    (
                        r.ports.as_deref(),
                        action(r.action),
                        self.ingress_peers(&r.from),
                    )
                })
                .collect(),
            Direction::Egress => egress
                .iter()
                .map(|r| {
                    (
                        r.ports.as_deref(),
                        action(r.action),
                        self.egress_peers(&r.to),
                    )
                })
                .collect(),
        }
    }

    fn ingress_peers(&self, peers: &[AdminIngressPeer]) -> AddrSet {
        let mut s = AddrSet::new();
        for p in peers {
            s.extend(&self.admin_peer_set(p.namespaces.as_ref(), p.pods.as_ref(), None));
        }
        s
    }

    fn egress_peers(&self, peers: &[AdminEgressPeer]) -> AddrSet {
        let mut s = AddrSet::new();
        for p in peers {
            s.extend(&self.admin_peer_set(
                p.namespaces.as_ref(),
                p.pods.as_ref(),
                p.networks.as_ref(),
            ));
        }
        s
    }

    /// Rules of an ANP, a CNP or the BANP (`prefix` = `anp/<name>`, `cnp/<name>` or `banp/<name>`) for the local
    /// endpoints its subject selects; rules without an action are skipped (their index stays in the ids).
    fn admin_rules(
        &self,
        f: &mut FragOut,
        dir: Direction,
        prefix: &str,
        subject: &AdminSubject,
        rules: AdminRules<'_>,
    ) {
        let subject = self.subject_set(subject);
        if subject.is_empty() || rules.iter().all(|r| r.1.is_none()) {
            return;
        }
        let subject = f.intern(format!("{prefix}/subject"), subject);
        let d = direction_str(dir);
        for (i, (ports, action, peers)) in rules.into_iter().enumerate() {
            let Some(action) = action else { continue };
            let peer = f.intern(format!("{prefix}/{d}/{i}/peer"), peers);
            let alts = self.l4_alts(f, Self::admin_port_alts(ports));
            let (src, dst) = sides(
                dir,
                vec![AddrMatch::In(subject.clone())],
                vec![AddrMatch::In(peer)],
            );
            let id = RuleId(format!("{prefix}/{d}/{i}"));
            emit(
                &mut f.rules[dir_index(dir)],
                &id,
                &src,
                &dst,
                &alts,
                action,
                false,
            );
        }
    }

    // ---- NetworkPolicies ------------------------------------------------------------------------------------

    fn np_fragment(&self, f: &mut FragOut, np: &NetworkPolicy) {
        for dir in DIRS {
            let policy_type = match dir {
                Direction::Ingress => PolicyType::Ingress,
                Direction::Egress => PolicyType::Egress,
            };
            if !np.isolates(policy_type) {
                continue;
            }
            let ns = np.namespace();
            let subject = addrs(self.locals.iter().copied().filter(|e| {
                e.kind.is_podlike() && e.namespace == ns && np.spec.pod_selector.matches(&e.labels)
            }));
            if subject.is_empty() {
                continue;
            }
            f.iso[dir_index(dir)] = subject.clone();
            let prefix = format!("np/{ns}/{}", np.metadata.name);
            let subject = f.intern(format!("{prefix}/subject"), subject);
            let d = direction_str(dir);
            let rules: Vec<(&[NetworkPolicyPeer], &[NetworkPolicyPort])> = match dir {
                Direction::Ingress => np
                    .spec
                    .ingress
                    .iter()
                    .map(|r| (r.from.as_slice(), r.ports.as_slice()))
                    .collect(),
                Direction::Egress => np
                    .spec
                    .egress
                    .iter()
                    .map(|r| (r.to.as_slice(), r.ports.as_slice()))
                    .collect(),
            };
            for (i, (peers, ports)) in rules.into_iter().enumerate() {
                let peer = if peers.is_empty() {
                    Vec::new()
                } else {
                    let set = self.np_peer_set(ns, peers);
                    vec![AddrMatch::In(
                        f.intern(format!("{prefix}/{d}/{i}/peer"), set),
                    )]
                };
                let alts = self.l4_alts(f, Self::np_port_alts(ports));
                let (src, dst) = sides(dir, vec![AddrMatch::In(subject.clone())], peer);
                let id = RuleId(format!("{prefix}/{d}/{i}"));
                emit(
                    &mut f.rules[dir_index(dir)],
                    &id,
                    &src,
                    &dst,
                    &alts,
                    Action::Allow,
                    false,
                );
            }
        }
    }

    // ---- tenants --------------------------------------------------------------------------------------------

    /// Multitenant tenants with local endpoints deny peers of other non-global tenants.
    pub(crate) fn tenancy_fragment(&self) -> FragOut {
        let mut f = FragOut::default();
        let mut local_tenants: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
        for e in self.locals {
            local_tenants
                .entry(self.idx.tenant_name(&e.namespace))
                .or_default()
                .push(e);
        }
        for dir in DIRS {
            for (t, eps) in &local_tenants {
                let tenant = self.idx.tenant(t);
                if tenant.isolation != IsolationMode::Multitenant || tenant.global {
                    continue;
                }
                let members = self.tenant_members().get(t).cloned().unwrap_or_default();
                let non_global =
                    f.intern("tenants/non-global".to_string(), self.non_global().clone());
                let members = f.intern(format!("tenant/{t}"), members);
                let local = f.intern(format!("tenant/{t}/local"), addrs(eps.iter().copied()));
                let (src, dst) = sides(
                    dir,
                    vec![AddrMatch::In(local)],
                    vec![AddrMatch::In(non_global), AddrMatch::NotIn(members)],
                );
                emit(
                    &mut f.rules[dir_index(dir)],
                    &multitenant_rule_id(t, dir),
                    &src,
                    &dst,
                    &vec![(None, L4Match::Any)],
                    Action::Deny,
                    false,
                );
            }
        }
        f
    }
}

fn merge_ranges(mut rs: Vec<PortRange>) -> Vec<PortRange> {
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
