//! The reference evaluator: one flow, the policies in force and the inventory in, a verdict per direction out,
//! each carrying the tier and the rule that decided it. `SEMANTICS.md` at the crate root states the rules this
//! code implements; the conformance cases under `test_data/netpol/` check it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::IpNet;

use crate::anp::{
    AdminEgressPeer, AdminEgressRule, AdminIngressPeer, AdminIngressRule, AdminNetworkPolicy,
    AdminPort, AdminSubject, AnpAction, BanpAction, NamespacedPods,
};
use crate::cnp::ClusterNetworkPolicy;
use crate::contract::{Contract, ContractAction, ContractScope, ContractTier};
use crate::error::EvalError;
use crate::group::{EndpointSelector, CLUSTER_GROUP, NAMESPACE_GROUP_PREFIX};
use crate::inventory::{Endpoint, EndpointKind, Inventory, IsolationMode};
use crate::meta::{port_u16, Protocol};
use crate::netpol::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, PolicyType, PortRef};
use crate::object::{PolicyKind, PolicySet};
use crate::selector::{LabelSelector, Labels};

static NO_LABELS: Labels = BTreeMap::new();

/// One end of a flow: an inventory endpoint by `namespace/name`, or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FlowEnd {
    /// `namespace/name` of an inventory endpoint; the flow uses its first address.
    Endpoint(String),
    /// An address: the endpoint holding it, or an address outside the inventory.
    Address(Ipv4Addr),
}

impl FromStr for FlowEnd {
    type Err = EvalError;

    /// An IPv4 address, else `namespace/name`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<Ipv4Addr>() {
            return Ok(FlowEnd::Address(addr));
        }
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(FlowEnd::Endpoint(s.to_string()))
            }
            _ => Err(EvalError::UnknownEndpoint(s.to_string())),
        }
    }
}

impl fmt::Display for FlowEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowEnd::Endpoint(r) => f.write_str(r),
            FlowEnd::Address(a) => write!(f, "{a}"),
        }
    }
}

/// A new connection (or the first packet of a UDP/SCTP/ICMP exchange) from `src` to `dst`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The initiator.
    pub src: FlowEnd,
    /// The responder.
    pub dst: FlowEnd,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port; for ICMP, the ICMP type.
    pub port: u16,
}

/// A direction of enforcement: egress is decided at the source, ingress at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Leaving the source.
    Egress,
    /// Entering the destination.
    Ingress,
}

/// Allow or drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Allowed (and, statefully, its replies).
    Allow,
    /// Dropped (never rejected: probes must time out).
    Deny,
}

/// The tier that decided a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// AdminNetworkPolicies, Admin-tier ClusterNetworkPolicies and admin-tier Contracts.
    Admin,
    /// NetworkPolicies and namespace-tier Contracts.
    Namespace,
    /// Baseline-tier ClusterNetworkPolicies, the BaselineAdminNetworkPolicy, then the isolation mode.
    Baseline,
    /// Nothing is enforced at this end (an external endpoint or an address outside the inventory).
    Unenforced,
}

/// The object and rule that decided (or isolated).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// Object kind.
    pub kind: PolicyKind,
    /// Namespace (NetworkPolicy only).
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
    /// Index of the rule (ingress/egress rule, or Contract subject) in its list; `None` when the object as a
    /// whole is meant (isolation).
    pub rule_index: Option<usize>,
    /// The rule's name, where the API has one (ANP/BANP rules, Contract subjects).
    pub rule_name: Option<String>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind)?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        f.write_str(&self.name)?;
        if let Some(i) = self.rule_index {
            write!(f, " rule {i}")?;
        }
        if let Some(n) = &self.rule_name {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

/// Why a direction got its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// This rule matched and decided.
    Rule(RuleRef),
    /// The end is isolated in this direction by these objects (NetworkPolicies selecting it, Contracts providing
    /// to it) and none of their rules matched.
    Isolated(Vec<RuleRef>),
    /// No policy decided; the isolation mode of the end's tenant did.
    IsolationMode {
        /// The mode.
        mode: IsolationMode,
        /// The tenant of the end where the decision is made.
        tenant: String,
        /// The tenant of the other end (`None` for an address outside the inventory).
        peer_tenant: Option<String>,
    },
    /// Nothing is enforced at this end.
    Unenforced,
}

/// Why a direction got its decision, in one line (the wording of `seam explain` and of the
/// conformance harness's failure lines).
pub fn reason_text(reason: &Reason) -> String {
    match reason {
        Reason::Rule(r) => r.to_string(),
        Reason::Isolated(by) => format!(
            "isolated by {}; no rule of theirs matched",
            by.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Reason::IsolationMode {
            mode,
            tenant,
            peer_tenant,
        } => {
            let mode = serde_json::to_value(mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{mode:?}"));
            match peer_tenant {
                Some(p) => format!(
                    "no policy decided: isolation mode {mode} of tenant {tenant} (peer tenant {p})"
                ),
                None => format!(
                    "no policy decided: isolation mode {mode} of tenant {tenant} (peer outside)"
                ),
            }
        }
        Reason::Unenforced => "nothing is enforced at this end".to_string(),
    }
}

/// The verdict for one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionVerdict {
    /// Which direction.
    pub direction: Direction,
    /// Allow or deny.
    pub decision: Decision,
    /// The tier that decided.
    pub tier: Tier,
    /// The rule (or isolation, or mode) that decided.
    pub reason: Reason,
    /// Whether the deciding rule asks for the flow to be logged (Contracts' `log`).
    pub log: bool,
}

impl DirectionVerdict {
    /// Whether this direction allows the flow.
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }

    /// The deciding rule, when a rule decided.
    pub fn rule(&self) -> Option<&RuleRef> {
        match &self.reason {
            Reason::Rule(r) => Some(r),
            _ => None,
        }
    }
}

/// The verdict for a flow: both directions must allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Decided at the source.
    pub egress: DirectionVerdict,
    /// Decided at the destination.
    pub ingress: DirectionVerdict,
}

impl Verdict {
    /// Whether the connection is allowed (egress and ingress both allow).
    pub fn allowed(&self) -> bool {
        self.egress.allowed() && self.ingress.allowed()
    }
}

/// A resolved flow end.
#[derive(Debug, Clone, Copy)]
struct End<'a> {
    endpoint: Option<&'a Endpoint>,
    addr: Option<Ipv4Addr>,
}

impl<'a> End<'a> {
    fn resolve(inventory: &'a Inventory, end: &FlowEnd) -> Result<Self, EvalError> {
        match end {
            FlowEnd::Endpoint(r) => {
                let endpoint = inventory
                    .endpoint(r)
                    .ok_or_else(|| EvalError::UnknownEndpoint(r.clone()))?;
                Ok(End {
                    endpoint: Some(endpoint),
                    addr: endpoint.addresses.first().copied(),
                })
            }
            FlowEnd::Address(a) => Ok(End {
                endpoint: inventory.endpoint_by_address(*a),
                addr: Some(*a),
            }),
        }
    }

    /// The endpoint if Kubernetes-style policies treat it as a pod.
    fn pod(&self) -> Option<&'a Endpoint> {
        self.endpoint.filter(|e| e.kind.is_podlike())
    }

    fn in_net(&self, net: &IpNet) -> bool {
        self.addr.is_some_and(|a| net.contains(&IpAddr::V4(a)))
    }
}

struct Ctx<'a> {
    set: &'a PolicySet,
    inv: &'a Inventory,
    flow: &'a Flow,
    src: End<'a>,
    dst: End<'a>,
}

/// Evaluates `flow` against the policies in force: egress at the source, ingress at the destination, each through
/// the admin, namespace and baseline tiers (see `SEMANTICS.md`).
///
/// Fails only when a flow end names an endpoint the inventory does not hold.
pub fn evaluate(
    policies: &PolicySet,
    inventory: &Inventory,
    flow: &Flow,
) -> Result<Verdict, EvalError> {
    let ctx = Ctx {
        set: policies,
        inv: inventory,
        flow,
        src: End::resolve(inventory, &flow.src)?,
        dst: End::resolve(inventory, &flow.dst)?,
    };
    Ok(Verdict {
        egress: ctx.decide(Direction::Egress),
        ingress: ctx.decide(Direction::Ingress),
    })
}

fn verdict(
    direction: Direction,
    decision: Decision,
    tier: Tier,
    reason: Reason,
) -> DirectionVerdict {
    DirectionVerdict {
        direction,
        decision,
        tier,
        reason,
        log: false,
    }
}

enum AdminEntry<'a> {
    Anp(&'a AdminNetworkPolicy),
    Cnp(&'a ClusterNetworkPolicy),
    Contract(&'a Contract),
}

/// The first rule of a direction that matches: (index, name, action).
type RuleHit<A> = Option<(usize, Option<String>, A)>;

fn cnp_ref(cnp: &ClusterNetworkPolicy, i: usize, rule_name: Option<String>) -> RuleRef {
    RuleRef {
        kind: PolicyKind::ClusterNetworkPolicy,
        namespace: None,
        name: cnp.metadata.name.clone(),
        rule_index: Some(i),
        rule_name,
    }
}

impl Ctx<'_> {
    fn decide(&self, dir: Direction) -> DirectionVerdict {
        let (local, peer) = match dir {
            Direction::Egress => (self.src, self.dst),
            Direction::Ingress => (self.dst, self.src),
        };
        let Some(ep) = local.endpoint.filter(|e| e.kind.is_enforced()) else {
            return verdict(dir, Decision::Allow, Tier::Unenforced, Reason::Unenforced);
        };
        if let Some(v) = self.admin_tier(dir, ep, peer) {
            return v;
        }
        if let Some(v) = self.namespace_tier(dir, ep, peer) {
            return v;
        }
        self.baseline_tier(dir, ep, peer)
    }

    fn ns_labels(&self, ns: &str) -> &Labels {
        self.inv.namespace_labels(ns).unwrap_or(&NO_LABELS)
    }

    // ---- admin tier -------------------------------------------------------------------------------------------

    /// `None` when nothing matched or a Pass rule matched: the namespace tier decides.
    fn admin_tier(&self, dir: Direction, ep: &Endpoint, peer: End<'_>) -> Option<DirectionVerdict> {
        let mut entries: Vec<(i64, u8, &str, AdminEntry<'_>)> = Vec::new();
        for anp in self.set.admin_network_policies() {
            if self.subject_selects(&anp.spec.subject, ep) {
                entries.push((
                    anp.spec.priority,
                    0,
                    &anp.metadata.name,
                    AdminEntry::Anp(anp),
                ));
            }
        }
        for cnp in self.set.cluster_network_policies() {
            if cnp.is_admin() && self.subject_selects(&cnp.spec.subject, ep) {
                entries.push((
                    cnp.spec.priority,
                    1,
                    &cnp.metadata.name,
                    AdminEntry::Cnp(cnp),
                ));
            }
        }
        for c in self.set.contracts() {
            if c.spec.tier == ContractTier::Admin {
                entries.push((c.priority(), 2, &c.metadata.name, AdminEntry::Contract(c)));
            }
        }
        // Lower priority first; at equal priority ANPs, then CNPs, then Contracts, each by name: a total order.
        entries.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        for (_, _, _, entry) in entries {
            let (rule, action) = match entry {
                AdminEntry::Anp(anp) => {
                    let hit =
                        self.rule_hit(dir, &anp.spec.ingress, &anp.spec.egress, peer, |_| true);
                    let Some((i, rule_name, action)) = hit else {
                        continue;
                    };
                    let rule = RuleRef {
                        kind: PolicyKind::AdminNetworkPolicy,
                        namespace: None,
                        name: anp.metadata.name.clone(),
                        rule_index: Some(i),
                        rule_name,
                    };
                    (rule, action)
                }
                AdminEntry::Cnp(cnp) => {
                    let hit = self.cnp_hit(dir, cnp, peer, |_| true);
                    let Some((i, rule_name, action)) = hit else {
                        continue;
                    };
                    (cnp_ref(cnp, i, rule_name), action)
                }
                AdminEntry::Contract(c) => {
                    if let Some(v) = self.contract_verdict(dir, c, Tier::Admin) {
                        return Some(v);
                    }
                    continue;
                }
            };
            let decision = match action {
                AnpAction::Allow => Decision::Allow,
                AnpAction::Deny => Decision::Deny,
                // Pass skips the rest of the admin tier (ANPs, CNPs and admin-tier Contracts alike).
                AnpAction::Pass => return None,
            };
            return Some(verdict(dir, decision, Tier::Admin, Reason::Rule(rule)));
        }
        None
    }

    /// The first rule of the direction whose peers and ports match and whose action `usable` accepts.
    fn rule_hit<A: Copy>(
        &self,
        dir: Direction,
        ingress: &[AdminIngressRule<A>],
        egress: &[AdminEgressRule<A>],
        peer: End<'_>,
        usable: impl Fn(A) -> bool,
    ) -> RuleHit<A> {
        match dir {
            Direction::Ingress => ingress.iter().enumerate().find_map(|(i, r)| {
                (usable(r.action)
                    && r.from.iter().any(|p| self.ingress_peer_matches(p, peer))
                    && self.admin_ports_match(r.ports.as_deref()))
                .then(|| (i, r.name.clone(), r.action))
            }),
            Direction::Egress => egress.iter().enumerate().find_map(|(i, r)| {
                (usable(r.action)
                    && r.to.iter().any(|p| self.egress_peer_matches(p, peer))
                    && self.admin_ports_match(r.ports.as_deref()))
                .then(|| (i, r.name.clone(), r.action))
            }),
        }
    }

    /// [`Self::rule_hit`] over a CNP's rules, lowered to the ANP shape.
    fn cnp_hit(
        &self,
        dir: Direction,
        cnp: &ClusterNetworkPolicy,
        peer: End<'_>,
        usable: impl Fn(AnpAction) -> bool,
    ) -> RuleHit<AnpAction> {
        match dir {
            Direction::Ingress => self.rule_hit(dir, &cnp.ingress_rules(), &[], peer, usable),
            Direction::Egress => self.rule_hit(dir, &[], &cnp.egress_rules(), peer, usable),
        }
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

    fn pods_match(&self, pods: &NamespacedPods, ep: &Endpoint) -> bool {
        pods.namespace_selector
            .matches(self.ns_labels(&ep.namespace))
            && pods.pod_selector.matches(&ep.labels)
    }

    fn namespaces_match(&self, sel: &LabelSelector, end: End<'_>) -> bool {
        end.pod()
            .is_some_and(|e| sel.matches(self.ns_labels(&e.namespace)))
    }

    fn ingress_peer_matches(&self, p: &AdminIngressPeer, end: End<'_>) -> bool {
        p.namespaces
            .as_ref()
            .is_some_and(|s| self.namespaces_match(s, end))
            || p.pods
                .as_ref()
                .is_some_and(|s| end.pod().is_some_and(|e| self.pods_match(s, e)))
    }

    fn egress_peer_matches(&self, p: &AdminEgressPeer, end: End<'_>) -> bool {
        p.namespaces
            .as_ref()
            .is_some_and(|s| self.namespaces_match(s, end))
            || p.pods
                .as_ref()
                .is_some_and(|s| end.pod().is_some_and(|e| self.pods_match(s, e)))
            || p.networks
                .as_ref()
                .is_some_and(|nets| nets.iter().any(|n| end.in_net(n)))
    }

    fn admin_ports_match(&self, ports: Option<&[AdminPort]>) -> bool {
        let Some(ports) = ports else { return true };
        let (proto, port) = (self.flow.protocol, self.flow.port);
        ports.iter().any(|p| {
            if let Some(n) = &p.port_number {
                return n.protocol.unwrap_or(Protocol::Tcp) == proto
                    && port_u16(n.port) == Some(port);
            }
            if let Some(r) = &p.port_range {
                return r.protocol.unwrap_or(Protocol::Tcp) == proto
                    && (r.start..=r.end).contains(&i64::from(port));
            }
            if let Some(name) = &p.named_port {
                return self.named_port_matches(name, None);
            }
            false
        })
    }

    /// Whether the destination endpoint has a container port called `name` that is the flow's port and protocol
    /// (and `protocol`, when the policy names one).
    fn named_port_matches(&self, name: &str, protocol: Option<Protocol>) -> bool {
        self.dst.endpoint.is_some_and(|e| {
            e.ports.iter().any(|cp| {
                cp.name.as_deref() == Some(name)
                    && cp.protocol == self.flow.protocol
                    && protocol.is_none_or(|p| p == cp.protocol)
                    && cp.port == self.flow.port
            })
        })
    }

    // ---- contracts --------------------------------------------------------------------------------------------

    /// The index of the subject of `c` that matches the flow, if the source is a consumer, the destination a
    /// provider and the scope allows the pair.
    fn contract_match(&self, c: &Contract) -> Option<usize> {
        let consumer = c
            .spec
            .consumers
            .iter()
            .any(|g| self.group_contains(g, self.src));
        let provider = c
            .spec
            .providers
            .iter()
            .any(|g| self.group_contains(g, self.dst));
        if !consumer || !provider {
            return None;
        }
        if c.spec.scope == ContractScope::Tenant {
            let same = match (self.src.endpoint, self.dst.endpoint) {
                (Some(s), Some(d)) => {
                    self.inv.tenant_name(&s.namespace) == self.inv.tenant_name(&d.namespace)
                }
                _ => false,
            };
            if !same {
                return None;
            }
        }
        c.spec.subjects.iter().position(|s| {
            s.filters
                .iter()
                .any(|f| f.matches(self.flow.protocol, self.flow.port))
        })
    }

    fn contract_verdict(
        &self,
        dir: Direction,
        c: &Contract,
        tier: Tier,
    ) -> Option<DirectionVerdict> {
        let i = self.contract_match(c)?;
        let decision = match c.spec.action {
            ContractAction::Allow => Decision::Allow,
            ContractAction::Deny => Decision::Deny,
        };
        Some(DirectionVerdict {
            direction: dir,
            decision,
            tier,
            reason: Reason::Rule(contract_ref(c, Some(i))),
            log: c.spec.log,
        })
    }

    fn group_contains(&self, group: &str, end: End<'_>) -> bool {
        if group == CLUSTER_GROUP {
            return end
                .endpoint
                .is_some_and(|e| e.kind != EndpointKind::External);
        }
        if let Some(ns) = group.strip_prefix(NAMESPACE_GROUP_PREFIX) {
            return end.endpoint.is_some_and(|e| e.namespace == ns);
        }
        if let Some(d) = crate::group::deployment_group(group) {
            return end
                .endpoint
                .is_some_and(|e| crate::group::in_deployment(d, &e.namespace, &e.labels));
        }
        self.set.endpoint_group(group).is_some_and(|g| {
            g.spec
                .selectors
                .iter()
                .any(|s| self.selector_matches(s, end))
        })
    }

    fn selector_matches(&self, s: &EndpointSelector, end: End<'_>) -> bool {
        let cidr_ok = s.cidrs.is_empty() || s.cidrs.iter().any(|n| end.in_net(n));
        let Some(e) = end.endpoint else {
            // An address outside the inventory has no kind, namespace or labels: only CIDRs can select it.
            return s.is_cidr_only() && cidr_ok;
        };
        cidr_ok
            && (s.kinds.is_empty() || s.kinds.contains(&e.kind))
            && (s.namespaces.is_empty() || s.namespaces.contains(&e.namespace))
            && s.namespace_selector
                .as_ref()
                .is_none_or(|sel| sel.matches(self.ns_labels(&e.namespace)))
            && s.labels.as_ref().is_none_or(|sel| sel.matches(&e.labels))
    }

    // ---- namespace tier ---------------------------------------------------------------------------------------

    /// `None` when the end is not isolated in this direction and nothing matched: the baseline tier decides.
    fn namespace_tier(
        &self,
        dir: Direction,
        ep: &Endpoint,
        peer: End<'_>,
    ) -> Option<DirectionVerdict> {
        let mut contracts: Vec<&Contract> = self
            .set
            .contracts()
            .filter(|c| c.spec.tier == ContractTier::Namespace)
            .collect();
        contracts.sort_by_key(|c| (c.priority(), c.metadata.name.as_str()));
        // A matching deny contract wins over every allow of the tier, whatever the priorities.
        for c in contracts
            .iter()
            .filter(|c| c.spec.action == ContractAction::Deny)
        {
            if let Some(v) = self.contract_verdict(dir, c, Tier::Namespace) {
                return Some(v);
            }
        }

        let policy_type = match dir {
            Direction::Ingress => PolicyType::Ingress,
            Direction::Egress => PolicyType::Egress,
        };
        let mut isolating = Vec::new();
        let mut allowed_by: Option<RuleRef> = None;
        if ep.kind.is_podlike() {
            for np in self.set.network_policies() {
                if np.namespace() != ep.namespace
                    || !np.isolates(policy_type)
                    || !np.spec.pod_selector.matches(&ep.labels)
                {
                    continue;
                }
                isolating.push(np_ref(np, None));
                if allowed_by.is_none() {
                    allowed_by = self
                        .np_rule_match(np, dir, peer)
                        .map(|i| np_ref(np, Some(i)));
                }
            }
        }
        if let Some(rule) = allowed_by {
            return Some(verdict(
                dir,
                Decision::Allow,
                Tier::Namespace,
                Reason::Rule(rule),
            ));
        }
        for c in contracts
            .iter()
            .filter(|c| c.spec.action == ContractAction::Allow)
        {
            if let Some(v) = self.contract_verdict(dir, c, Tier::Namespace) {
                return Some(v);
            }
        }
        if dir == Direction::Ingress {
            let local = End {
                endpoint: Some(ep),
                addr: self.dst.addr,
            };
            for c in contracts
                .iter()
                .filter(|c| c.spec.action == ContractAction::Allow)
            {
                if c.spec
                    .providers
                    .iter()
                    .any(|g| self.group_contains(g, local))
                {
                    isolating.push(contract_ref(c, None));
                }
            }
        }
        if isolating.is_empty() {
            None
        } else {
            Some(verdict(
                dir,
                Decision::Deny,
                Tier::Namespace,
                Reason::Isolated(isolating),
            ))
        }
    }

    fn np_rule_match(&self, np: &NetworkPolicy, dir: Direction, peer: End<'_>) -> Option<usize> {
        let ns = np.namespace();
        match dir {
            Direction::Ingress => np.spec.ingress.iter().position(|r| {
                (r.from.is_empty() || r.from.iter().any(|p| self.np_peer_matches(ns, p, peer)))
                    && self.np_ports_match(&r.ports)
            }),
            Direction::Egress => np.spec.egress.iter().position(|r| {
                (r.to.is_empty() || r.to.iter().any(|p| self.np_peer_matches(ns, p, peer)))
                    && self.np_ports_match(&r.ports)
            }),
        }
    }

    fn np_peer_matches(&self, policy_ns: &str, p: &NetworkPolicyPeer, end: End<'_>) -> bool {
        if let Some(block) = &p.ip_block {
            return end.in_net(&block.cidr) && !block.except.iter().any(|x| end.in_net(x));
        }
        let Some(e) = end.pod() else { return false };
        let ns_ok = match &p.namespace_selector {
            Some(sel) => sel.matches(self.ns_labels(&e.namespace)),
            None => e.namespace == policy_ns,
        };
        ns_ok
            && p.pod_selector
                .as_ref()
                .is_none_or(|sel| sel.matches(&e.labels))
    }

    fn np_ports_match(&self, ports: &[NetworkPolicyPort]) -> bool {
        ports.is_empty()
            || ports.iter().any(|p| {
                let proto = p.protocol();
                if proto != self.flow.protocol {
                    return false;
                }
                match &p.port {
                    None => true,
                    Some(PortRef::Number(n)) => match p.end_port {
                        Some(end) => (*n..=end).contains(&i64::from(self.flow.port)),
                        None => port_u16(*n) == Some(self.flow.port),
                    },
                    Some(PortRef::Name(name)) => self.named_port_matches(name, Some(proto)),
                }
            })
    }

    // ---- baseline tier ----------------------------------------------------------------------------------------

    fn baseline_tier(&self, dir: Direction, ep: &Endpoint, peer: End<'_>) -> DirectionVerdict {
        // Baseline-tier CNPs by (priority, name), then the BANP: the BANP has no priority and is the last word
        // before the isolation mode.
        let mut cnps: Vec<&ClusterNetworkPolicy> = self
            .set
            .cluster_network_policies()
            .filter(|c| !c.is_admin() && self.subject_selects(&c.spec.subject, ep))
            .collect();
        cnps.sort_by_key(|c| (c.spec.priority, c.metadata.name.as_str()));
        for cnp in cnps {
            // Validation rejects Pass in the baseline tier; were one there, it would match nothing.
            let hit = self.cnp_hit(dir, cnp, peer, |a| a != AnpAction::Pass);
            if let Some((i, rule_name, action)) = hit {
                let decision = if action == AnpAction::Allow {
                    Decision::Allow
                } else {
                    Decision::Deny
                };
                let rule = cnp_ref(cnp, i, rule_name);
                return verdict(dir, decision, Tier::Baseline, Reason::Rule(rule));
            }
        }
        if let Some(banp) = self.set.baseline() {
            if self.subject_selects(&banp.spec.subject, ep) {
                let hit = self.rule_hit(dir, &banp.spec.ingress, &banp.spec.egress, peer, |_| true);
                if let Some((i, rule_name, action)) = hit {
                    let decision = match action {
                        BanpAction::Allow => Decision::Allow,
                        BanpAction::Deny => Decision::Deny,
                    };
                    let rule = RuleRef {
                        kind: PolicyKind::BaselineAdminNetworkPolicy,
                        namespace: None,
                        name: banp.metadata.name.clone(),
                        rule_index: Some(i),
                        rule_name,
                    };
                    return verdict(dir, decision, Tier::Baseline, Reason::Rule(rule));
                }
            }
        }
        let tenant_name = self.inv.tenant_name(&ep.namespace);
        let tenant = self.inv.tenant(tenant_name);
        let peer_tenant = peer.endpoint.map(|e| self.inv.tenant_name(&e.namespace));
        let decision = match tenant.isolation {
            IsolationMode::Flat | IsolationMode::Policy => Decision::Allow,
            IsolationMode::Multitenant => match peer_tenant {
                // Addresses outside the inventory belong to no tenant: multitenant mode separates tenants from
                // each other, not from the outside world (policies do that).
                None => Decision::Allow,
                Some(pt) if pt == tenant_name || tenant.global || self.inv.tenant(pt).global => {
                    Decision::Allow
                }
                Some(_) => Decision::Deny,
            },
        };
        verdict(
            dir,
            decision,
            Tier::Baseline,
            Reason::IsolationMode {
                mode: tenant.isolation,
                tenant: tenant_name.to_string(),
                peer_tenant: peer_tenant.map(str::to_string),
            },
        )
    }
}

fn np_ref(np: &NetworkPolicy, rule_index: Option<usize>) -> RuleRef {
    RuleRef {
        kind: PolicyKind::NetworkPolicy,
        namespace: np.metadata.namespace.clone(),
        name: np.metadata.name.clone(),
        rule_index,
        rule_name: None,
    }
}

fn contract_ref(c: &Contract, subject: Option<usize>) -> RuleRef {
    RuleRef {
        kind: PolicyKind::Contract,
        namespace: None,
        name: c.metadata.name.clone(),
        rule_index: subject,
        rule_name: subject
            .and_then(|i| c.spec.subjects.get(i))
            .and_then(|s| s.name.clone()),
    }
}
