//! Groups, what contracts name: `cluster`, `namespace/<ns>`, `deployment/<ns>/<name>` and EndpointGroups (their
//! selectors); members are every endpoint, not only the node's.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use seam_policy::{
    Endpoint, EndpointKind, EndpointSelector, Labels, CLUSTER_GROUP, NAMESPACE_GROUP_PREFIX,
};

use super::{addrs, insert_ipnet, Ctx};
use crate::addr::AddrSet;

fn in_net(net: &IpNet, addr: Ipv4Addr) -> bool {
    net.contains(&IpAddr::V4(addr))
}

impl<'a> Ctx<'_, 'a> {
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
        for (ns, eps) in self.idx.by_ns() {
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

    /// The addresses `e` gives the members of `group`, as [`Ctx::group_set_uncached`] counts
    /// them; `None` when the group also holds addresses no endpoint gives (a selector of
    /// addresses only).
    fn member_addrs(&self, group: &str, e: &Endpoint) -> Option<Vec<Ipv4Addr>> {
        let all = |yes: bool| Some(if yes { e.addresses.clone() } else { Vec::new() });
        if group == CLUSTER_GROUP {
            return all(e.kind != EndpointKind::External);
        }
        if let Some(ns) = group.strip_prefix(NAMESPACE_GROUP_PREFIX) {
            return all(e.namespace == ns);
        }
        if let Some(d) = seam_policy::deployment_group(group) {
            return all(
                e.namespace == d.0 && seam_policy::in_deployment(d, &e.namespace, &e.labels)
            );
        }
        let mut out = Vec::new();
        let Some(g) = self.set.endpoint_group(group) else {
            return Some(out);
        };
        for s in &g.spec.selectors {
            if s.is_cidr_only() {
                return None;
            }
            let selected = (s.namespaces.is_empty() || s.namespaces.contains(&e.namespace))
                && s.namespace_selector
                    .as_ref()
                    .is_none_or(|sel| sel.matches(self.ns_labels(&e.namespace)))
                && (s.kinds.is_empty() || s.kinds.contains(&e.kind))
                && s.labels.as_ref().is_none_or(|sel| sel.matches(&e.labels));
            if selected {
                out.extend(
                    e.addresses
                        .iter()
                        .filter(|a| s.cidrs.is_empty() || s.cidrs.iter().any(|n| in_net(n, **a))),
                );
            }
        }
        Some(out)
    }

    /// The members of `group` once the endpoints changed as `changes` say (each before and after),
    /// from its members `before`, without walking the inventory: what the changed endpoints gave
    /// goes, what they give now comes (no two endpoints share an address, or the pass is a full
    /// one). `None` when that cannot be known from the endpoints alone.
    pub(crate) fn group_set_after(
        &self,
        group: &str,
        before: &AddrSet,
        changes: &[(Option<&Endpoint>, Option<&Endpoint>)],
    ) -> Option<AddrSet> {
        let mut gone = Vec::new();
        let mut came = Vec::new();
        for (old, new) in changes {
            if let Some(old) = old {
                gone.extend(self.member_addrs(group, old)?);
            }
            if let Some(new) = new {
                came.extend(self.member_addrs(group, new)?);
            }
        }
        let mut out = before.clone();
        for a in gone {
            out.remove_net(ipnet::Ipv4Net::from(a));
        }
        out.extend(&AddrSet::from_addrs(came));
        Some(out)
    }

    pub(super) fn groups_set(&self, groups: &[String]) -> AddrSet {
        let mut out = AddrSet::new();
        for g in groups {
            out.extend(&self.group_set(g));
        }
        out
    }
}
