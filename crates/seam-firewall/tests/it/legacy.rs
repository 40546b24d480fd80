//! The compiler as it was before the incremental rewrite (commit 188d370), kept verbatim as a reference:
//! `tests/it/incremental.rs` checks that the restructured `compile` produces exactly its output.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use seam_policy::{
    AdminEgressPeer, AdminEgressRule, AdminIngressPeer, AdminIngressRule, AdminPort, AdminSubject,
    AnpAction, BanpAction, ClusterNetworkPolicy, Contract, ContractAction, ContractScope,
    ContractTier, Direction, DirectionVerdict, Endpoint, EndpointKind, EndpointSelector, Filter,
    Inventory, IsolationMode, Labels, NamespacedPods, NetworkPolicy, NetworkPolicyPeer,
    NetworkPolicyPort, PolicyKind, PolicySet, PolicyType, PortRef, Protocol, Reason, RuleRef,
    CLUSTER_GROUP, NAMESPACE_GROUP_PREFIX,
};

use seam_firewall::AddrSet;
use seam_firewall::CompileError;
use seam_firewall::{
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
    let mut locals = Vec::new();
    for name in node_endpoints {
        let name = name.as_ref();
        let ep = inventory
            .endpoint(name)
            .ok_or_else(|| CompileError::UnknownEndpoint {
                name: name.to_string(),
            })?;
        if ep.kind.is_enforced() && !locals.iter().any(|e: &&Endpoint| std::ptr::eq(*e, ep)) {
            locals.push(ep);
        }
    }
    let local_addrs = AddrSet::from_addrs(locals.iter().flat_map(|e| e.addresses.iter().copied()));
    let mut c = Compiler {
        set: policies,
        inv: inventory,
        locals,
        local_addrs,
        sets: BTreeMap::new(),
        group_cache: std::cell::RefCell::new(BTreeMap::new()),
    };
    c.sets.insert(LOCAL_SET.to_string(), c.local_addrs.clone());
    let mut out = NodeRuleset::default();
    for dir in [Direction::Egress, Direction::Ingress] {
        let chains = vec![
            TierChain {
                tier: Tier::Admin,
                rules: c.admin_tier(dir),
            },
            TierChain {
                tier: Tier::Namespace,
                rules: c.namespace_tier(dir),
            },
            TierChain {
                tier: Tier::Baseline,
                rules: c.baseline_tier(dir),
            },
        ];
        match dir {
            Direction::Egress => out.egress = chains,
            Direction::Ingress => out.ingress = chains,
        }
    }
    out.local = c
        .locals
        .iter()
        .map(|e| LocalEndpoint {
            name: e.reference(),
            addresses: e.addresses.clone(),
        })
        .collect();
    out.sets = c.sets;
    Ok(out)
}

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

struct Compiler<'a> {
    set: &'a PolicySet,
    inv: &'a Inventory,
    locals: Vec<&'a Endpoint>,
    local_addrs: AddrSet,
    sets: BTreeMap<SetName, AddrSet>,
    /// Members of each group by name: contracts name the same groups again and again (per
    /// contract, per direction, and for isolation), and each computation scans every endpoint.
    group_cache: std::cell::RefCell<BTreeMap<String, AddrSet>>,
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

impl<'a> Compiler<'a> {
    fn intern(&mut self, name: String, set: AddrSet) -> SetName {
        self.sets.entry(name.clone()).or_insert(set);
        name
    }

    fn ns_labels(&self, ns: &str) -> &'a Labels {
        self.inv.namespace_labels(ns).unwrap_or(&NO_LABELS)
    }

    fn tenant_of(&self, e: &Endpoint) -> &'a str {
        self.inv.tenant_name(&e.namespace)
    }

    fn addrs<'e>(endpoints: impl IntoIterator<Item = &'e Endpoint>) -> AddrSet {
        AddrSet::from_addrs(
            endpoints
                .into_iter()
                .flat_map(|e| e.addresses.iter().copied()),
        )
    }

    fn podlike(&self) -> impl Iterator<Item = &'a Endpoint> {
        self.inv.endpoints.iter().filter(|e| e.kind.is_podlike())
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
        Self::addrs(
            self.locals
                .iter()
                .copied()
                .filter(|e| self.subject_selects(subject, e)),
        )
    }

    fn admin_peer_set(
        &self,
        namespaces: Option<&seam_policy::LabelSelector>,
        pods: Option<&NamespacedPods>,
        networks: Option<&Vec<IpNet>>,
    ) -> AddrSet {
        let mut s = Self::addrs(self.podlike().filter(|e| {
            namespaces.is_some_and(|sel| sel.matches(self.ns_labels(&e.namespace)))
                || pods.is_some_and(|p| self.pods_match(p, e))
        }));
        for n in networks.into_iter().flatten() {
            insert_ipnet(&mut s, n);
        }
        s
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
            s.extend(&Self::addrs(self.podlike().filter(|e| {
                let ns_ok = match &p.namespace_selector {
                    Some(sel) => sel.matches(self.ns_labels(&e.namespace)),
                    None => e.namespace == policy_ns,
                };
                ns_ok
                    && p.pod_selector
                        .as_ref()
                        .is_none_or(|sel| sel.matches(&e.labels))
            })));
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
        let mut members = Vec::new();
        for e in &self.inv.endpoints {
            let ok = (s.kinds.is_empty() || s.kinds.contains(&e.kind))
                && (s.namespaces.is_empty() || s.namespaces.contains(&e.namespace))
                && s.namespace_selector
                    .as_ref()
                    .is_none_or(|sel| sel.matches(self.ns_labels(&e.namespace)))
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
        // Collected first and merged once: see `AddrSet::from_addrs`.
        out.extend(&AddrSet::from_addrs(members));
        out
    }

    /// Members of a group: `cluster`, `namespace/<ns>` or an EndpointGroup (none when undefined).
    fn group_set(&self, group: &str) -> AddrSet {
        if let Some(hit) = self.group_cache.borrow().get(group) {
            return hit.clone();
        }
        let members = self.group_set_uncached(group);
        self.group_cache
            .borrow_mut()
            .insert(group.to_string(), members.clone());
        members
    }

    fn group_set_uncached(&self, group: &str) -> AddrSet {
        if group == CLUSTER_GROUP {
            return Self::addrs(
                self.inv
                    .endpoints
                    .iter()
                    .filter(|e| e.kind != EndpointKind::External),
            );
        }
        if let Some(ns) = group.strip_prefix(NAMESPACE_GROUP_PREFIX) {
            return Self::addrs(self.inv.endpoints.iter().filter(|e| e.namespace == ns));
        }
        if let Some(d) = seam_policy::deployment_group(group) {
            return Self::addrs(
                self.inv
                    .endpoints
                    .iter()
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

    // ---- ports ----------------------------------------------------------------------------------------------

    /// Expands port alternatives; `None` (no port restriction) is one alternative matching everything.
    fn l4_alts(&mut self, alts: Option<Vec<PortAlt>>) -> L4Alts {
        let Some(alts) = alts else {
            return vec![(None, L4Match::Any)];
        };
        let mut any: BTreeSet<Protocol> = BTreeSet::new();
        let mut ranges: BTreeMap<Protocol, Vec<PortRange>> = BTreeMap::new();
        let mut named: BTreeMap<(Protocol, u16, String), AddrSet> = BTreeMap::new();
        for alt in alts {
            match alt {
                PortAlt::AnyPort(p) => {
                    any.insert(p);
                }
                PortAlt::Range(p, start, end) => {
                    ranges.entry(p).or_default().push(PortRange { start, end })
                }
                PortAlt::Named(name, proto) => {
                    for e in &self.inv.endpoints {
                        for cp in &e.ports {
                            if cp.name.as_deref() == Some(name.as_str())
                                && proto.is_none_or(|p| p == cp.protocol)
                            {
                                named
                                    .entry((cp.protocol, cp.port, name.clone()))
                                    .or_default()
                                    .extend(&Self::addrs([e]));
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
            let set = self.intern(format!("port/{name}/{}/{port}", proto_str(p)), holders);
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

    fn contract_rules(&mut self, dir: Direction, c: &Contract, out: &mut Vec<Rule>) {
        let name = &c.metadata.name;
        let consumers = self.groups_set(&c.spec.consumers);
        let providers = self.groups_set(&c.spec.providers);
        // (suffix, consumers, providers): one pair per tenant when the scope is the tenant.
        let mut pairs: Vec<(String, AddrSet, AddrSet)> = Vec::new();
        match c.spec.scope {
            ContractScope::Global => pairs.push((String::new(), consumers, providers)),
            ContractScope::Tenant => {
                let mut tenants: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
                for e in &self.inv.endpoints {
                    tenants.entry(self.tenant_of(e)).or_default().push(e);
                }
                for (t, eps) in tenants {
                    let members = Self::addrs(eps.iter().copied());
                    pairs.push((
                        format!("/tenant/{t}"),
                        consumers.intersection(&members),
                        providers.intersection(&members),
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
                Direction::Egress => (cons.intersection(&self.local_addrs), prov),
                Direction::Ingress => (cons, prov.intersection(&self.local_addrs)),
            };
            if cons.is_empty() || prov.is_empty() {
                continue;
            }
            let local = match dir {
                Direction::Egress => ("consumers", "providers"),
                Direction::Ingress => ("providers", "consumers"),
            };
            let cons_name = self.intern(
                format!(
                    "contract/{name}/consumers{suffix}{}",
                    if local.0 == "consumers" { "/local" } else { "" }
                ),
                cons,
            );
            let prov_name = self.intern(
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
                emit(out, &id, &src, &dst, &alts, action, c.spec.log);
            }
        }
    }

    // ---- tiers ----------------------------------------------------------------------------------------------

    fn admin_tier(&mut self, dir: Direction) -> Vec<Rule> {
        enum Entry<'p> {
            Anp(&'p seam_policy::AdminNetworkPolicy),
            Cnp(&'p ClusterNetworkPolicy),
            Contract(&'p Contract),
        }
        let mut entries: Vec<(i64, u8, &str, Entry<'a>)> = Vec::new();
        for anp in self.set.admin_network_policies() {
            entries.push((anp.spec.priority, 0, &anp.metadata.name, Entry::Anp(anp)));
        }
        for cnp in self.set.cluster_network_policies() {
            if cnp.is_admin() {
                entries.push((cnp.spec.priority, 1, &cnp.metadata.name, Entry::Cnp(cnp)));
            }
        }
        for c in self.set.contracts() {
            if c.spec.tier == ContractTier::Admin {
                entries.push((c.priority(), 2, &c.metadata.name, Entry::Contract(c)));
            }
        }
        // The engine's order: priority, then ANPs before CNPs before Contracts, then name.
        entries.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        let anp_action = |a: AnpAction| match a {
            AnpAction::Allow => Some(Action::Allow),
            AnpAction::Deny => Some(Action::Deny),
            AnpAction::Pass => Some(Action::Pass),
        };
        let mut out = Vec::new();
        for (_, _, _, entry) in entries {
            match entry {
                Entry::Anp(anp) => {
                    let rules =
                        self.policy_rules(dir, &anp.spec.ingress, &anp.spec.egress, anp_action);
                    self.admin_rules(
                        dir,
                        &format!("anp/{}", anp.metadata.name),
                        &anp.spec.subject,
                        rules,
                        &mut out,
                    );
                }
                Entry::Cnp(cnp) => self.cnp_rules(dir, cnp, anp_action, &mut out),
                Entry::Contract(c) => self.contract_rules(dir, c, &mut out),
            }
        }
        out
    }

    /// The rules of a CNP (lowered to the ANP shape) for the local endpoints its subject selects.
    fn cnp_rules(
        &mut self,
        dir: Direction,
        cnp: &ClusterNetworkPolicy,
        action: impl Fn(AnpAction) -> Option<Action>,
        out: &mut Vec<Rule>,
    ) {
        let (ingress, egress) = match dir {
            Direction::Ingress => (cnp.ingress_rules(), Vec::new()),
            Direction::Egress => (Vec::new(), cnp.egress_rules()),
        };
        let rules = self.policy_rules(dir, &ingress, &egress, action);
        self.admin_rules(
            dir,
            &format!("cnp/{}", cnp.metadata.name),
            &cnp.spec.subject,
            rules,
            out,
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
        &mut self,
        dir: Direction,
        prefix: &str,
        subject: &AdminSubject,
        rules: AdminRules<'_>,
        out: &mut Vec<Rule>,
    ) {
        let subject = self.subject_set(subject);
        if subject.is_empty() || rules.iter().all(|r| r.1.is_none()) {
            return;
        }
        let subject = self.intern(format!("{prefix}/subject"), subject);
        let d = direction_str(dir);
        for (i, (ports, action, peers)) in rules.into_iter().enumerate() {
            let Some(action) = action else { continue };
            let peer = self.intern(format!("{prefix}/{d}/{i}/peer"), peers);
            let alts = self.l4_alts(Self::admin_port_alts(ports));
            let (src, dst) = sides(
                dir,
                vec![AddrMatch::In(subject.clone())],
                vec![AddrMatch::In(peer)],
            );
            let id = RuleId(format!("{prefix}/{d}/{i}"));
            emit(out, &id, &src, &dst, &alts, action, false);
        }
    }

    fn namespace_tier(&mut self, dir: Direction) -> Vec<Rule> {
        let mut contracts: Vec<&'a Contract> = self
            .set
            .contracts()
            .filter(|c| c.spec.tier == ContractTier::Namespace)
            .collect();
        contracts.sort_by_key(|c| (c.priority(), c.metadata.name.as_str()));
        let mut out = Vec::new();
        for c in contracts
            .iter()
            .filter(|c| c.spec.action == ContractAction::Deny)
        {
            self.contract_rules(dir, c, &mut out);
        }

        let policy_type = match dir {
            Direction::Ingress => PolicyType::Ingress,
            Direction::Egress => PolicyType::Egress,
        };
        let mut isolated = AddrSet::new();
        let nps: Vec<&'a NetworkPolicy> = self.set.network_policies().collect();
        for np in nps {
            if !np.isolates(policy_type) {
                continue;
            }
            let subject = Self::addrs(self.locals.iter().copied().filter(|e| {
                e.kind.is_podlike()
                    && e.namespace == np.namespace()
                    && np.spec.pod_selector.matches(&e.labels)
            }));
            if subject.is_empty() {
                continue;
            }
            isolated.extend(&subject);
            let ns = np.namespace();
            let prefix = format!("np/{ns}/{}", np.metadata.name);
            let subject = self.intern(format!("{prefix}/subject"), subject);
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
                        self.intern(format!("{prefix}/{d}/{i}/peer"), set),
                    )]
                };
                let alts = self.l4_alts(Self::np_port_alts(ports));
                let (src, dst) = sides(dir, vec![AddrMatch::In(subject.clone())], peer);
                let id = RuleId(format!("{prefix}/{d}/{i}"));
                emit(&mut out, &id, &src, &dst, &alts, Action::Allow, false);
            }
        }

        for c in contracts
            .iter()
            .filter(|c| c.spec.action == ContractAction::Allow)
        {
            self.contract_rules(dir, c, &mut out);
            if dir == Direction::Ingress {
                let providers = self.groups_set(&c.spec.providers);
                isolated.extend(&providers.intersection(&self.local_addrs));
            }
        }
        if !isolated.is_empty() {
            let d = direction_str(dir);
            let set = self.intern(format!("ns-isolation/{d}"), isolated);
            let (src, dst) = sides(dir, vec![AddrMatch::In(set)], Vec::new());
            emit(
                &mut out,
                &isolation_rule_id(dir),
                &src,
                &dst,
                &vec![(None, L4Match::Any)],
                Action::Deny,
                false,
            );
        }
        out
    }

    fn baseline_tier(&mut self, dir: Direction) -> Vec<Rule> {
        let mut out = Vec::new();
        // Baseline-tier CNPs by (priority, name), then the BANP (the engine's order).
        let mut cnps: Vec<&'a ClusterNetworkPolicy> = self
            .set
            .cluster_network_policies()
            .filter(|c| !c.is_admin())
            .collect();
        cnps.sort_by_key(|c| (c.spec.priority, c.metadata.name.as_str()));
        for cnp in cnps {
            // Pass cannot pass validation in this tier; the engine lets such a rule match nothing.
            let action = |a: AnpAction| match a {
                AnpAction::Allow => Some(Action::Allow),
                AnpAction::Deny => Some(Action::Deny),
                AnpAction::Pass => None,
            };
            self.cnp_rules(dir, cnp, action, &mut out);
        }
        if let Some(banp) = self.set.baseline() {
            let act = |a: BanpAction| match a {
                BanpAction::Allow => Some(Action::Allow),
                BanpAction::Deny => Some(Action::Deny),
            };
            let rules = self.policy_rules(dir, &banp.spec.ingress, &banp.spec.egress, act);
            self.admin_rules(
                dir,
                &format!("banp/{}", banp.metadata.name),
                &banp.spec.subject,
                rules,
                &mut out,
            );
        }

        // Multitenant tenants with local endpoints deny peers of other non-global tenants.
        let mut local_tenants: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
        for e in &self.locals {
            local_tenants.entry(self.tenant_of(e)).or_default().push(e);
        }
        for (t, eps) in local_tenants {
            let tenant = self.inv.tenant(t);
            if tenant.isolation != IsolationMode::Multitenant || tenant.global {
                continue;
            }
            let non_global = Self::addrs(
                self.inv
                    .endpoints
                    .iter()
                    .filter(|e| !self.inv.tenant(self.tenant_of(e)).global),
            );
            let members = Self::addrs(self.inv.endpoints.iter().filter(|e| self.tenant_of(e) == t));
            let non_global = self.intern("tenants/non-global".to_string(), non_global);
            let members = self.intern(format!("tenant/{t}"), members);
            let local = self.intern(format!("tenant/{t}/local"), Self::addrs(eps));
            let (src, dst) = sides(
                dir,
                vec![AddrMatch::In(local)],
                vec![AddrMatch::In(non_global), AddrMatch::NotIn(members)],
            );
            emit(
                &mut out,
                &multitenant_rule_id(t, dir),
                &src,
                &dst,
                &vec![(None, L4Match::Any)],
                Action::Deny,
                false,
            );
        }
        out.push(Rule {
            id: default_rule_id(dir),
            src: Vec::new(),
            dst: Vec::new(),
            l4: L4Match::Any,
            action: Action::Allow,
            log: false,
        });
        out
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
