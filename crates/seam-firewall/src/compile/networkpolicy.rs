//! NetworkPolicies: the namespace tier, allow rules `np/<ns>/<name>/<dir>/<i>`; their subjects are isolated in the
//! direction they name (the isolation rule, see `fragment.rs`).

use ipnet::IpNet;
use seam_policy::{
    Direction, Endpoint, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, PolicyType, PortRef,
};

use super::ports::{port_u16, PortAlt};
use super::{addrs, dir_index, direction_str, emit, sides, Ctx, FragOut, PeerTest, DIRS};
use crate::addr::AddrSet;
use crate::ir::{Action, AddrMatch, RuleId};

impl<'a> Ctx<'_, 'a> {
    pub(super) fn np_fragment(&self, f: &mut FragOut, np: &NetworkPolicy) {
        for dir in DIRS {
            let policy_type = match dir {
                Direction::Ingress => PolicyType::Ingress,
                Direction::Egress => PolicyType::Egress,
            };
            if !np.isolates(policy_type) {
                continue;
            }
            let ns = np.namespace();
            let subject = addrs(
                self.locals_in(ns)
                    .filter(|e| e.kind.is_podlike() && np.spec.pod_selector.matches(&e.labels)),
            );
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
                let alts = self.l4_alts(f, np_port_alts(ports));
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
    /// The peer sets of a NetworkPolicy's fragment, by name, as [`Ctx::np_fragment`] interns them: for a
    /// change that can only have changed their members.
    pub(crate) fn np_peer_sets(&self, np: &NetworkPolicy) -> Vec<(String, AddrSet)> {
        let mut out = Vec::new();
        for dir in DIRS {
            let policy_type = match dir {
                Direction::Ingress => PolicyType::Ingress,
                Direction::Egress => PolicyType::Egress,
            };
            if !np.isolates(policy_type) {
                continue;
            }
            let ns = np.namespace();
            let subject = self
                .locals_in(ns)
                .any(|e| e.kind.is_podlike() && np.spec.pod_selector.matches(&e.labels));
            if !subject {
                continue;
            }
            let prefix = format!("np/{ns}/{}", np.metadata.name);
            let d = direction_str(dir);
            let rules: Vec<&[NetworkPolicyPeer]> = match dir {
                Direction::Ingress => np.spec.ingress.iter().map(|r| r.from.as_slice()).collect(),
                Direction::Egress => np.spec.egress.iter().map(|r| r.to.as_slice()).collect(),
            };
            for (i, peers) in rules.into_iter().enumerate() {
                if !peers.is_empty() {
                    out.push((
                        format!("{prefix}/{d}/{i}/peer"),
                        self.np_peer_set(ns, peers),
                    ));
                }
            }
        }
        // The fragment read these peers already (and keeps counting them).
        self.used.borrow_mut().clear();
        out
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
            let test = || PeerTest::Np {
                ns: p
                    .namespace_selector
                    .is_none()
                    .then(|| policy_ns.to_string()),
                namespace_selector: p.namespace_selector.clone(),
                pod_selector: p.pod_selector.clone(),
            };
            let members = self.peer_members(key, test, || match &p.namespace_selector {
                Some(sel) => addrs(self.idx.in_namespaces(|l| sel.matches(l)).filter(pod_ok)),
                None => addrs(self.idx.in_ns(policy_ns).filter(pod_ok)),
            });
            s.extend(&members);
        }
        s
    }
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
