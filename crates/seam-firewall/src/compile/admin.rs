//! What ANPs, CNPs and the BANP share: an admin subject (the node's endpoints it selects), peers by namespace
//! and pod selectors (and networks), and per rule one action; lowered to rules `<prefix>/<dir>/<i>`.

use ipnet::IpNet;
use seam_policy::{
    AdminEgressPeer, AdminEgressRule, AdminIngressPeer, AdminIngressRule, AdminPort, AdminSubject,
    Direction, Endpoint, NamespacedPods, Protocol,
};

use super::ports::{port_u16, PortAlt};
use super::{addrs, dir_index, direction_str, emit, insert_ipnet, sides, Ctx, FragOut, PeerTest};
use crate::addr::AddrSet;
use crate::ir::{Action, AddrMatch, RuleId};

/// Per rule of an ANP, CNP or BANP in one direction: its ports, its IR action (`None`: not realized) and its peers.
pub(super) type AdminRules<'r> = Vec<(Option<&'r [AdminPort]>, Option<Action>, AddrSet)>;

impl<'a> Ctx<'_, 'a> {
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
    fn admin_peer_set(
        &self,
        namespaces: Option<&seam_policy::LabelSelector>,
        pods: Option<&NamespacedPods>,
        networks: Option<&Vec<IpNet>>,
    ) -> AddrSet {
        let key = serde_json::to_string(&(namespaces, pods))
            .ok()
            .map(|k| format!("admin\0{k}"));
        let test = || PeerTest::Admin {
            namespaces: namespaces.cloned(),
            pods: pods.cloned(),
        };
        let mut s = self.peer_members(key, test, || self.admin_peer_members(namespaces, pods));
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
                .by_ns()
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
    /// Ports, IR action (`None`: the rule is not realized) and peer set of each rule of the direction.
    pub(super) fn policy_rules<'r, A: Copy>(
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
    pub(super) fn admin_rules(
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
            let alts = self.l4_alts(f, admin_port_alts(ports));
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
