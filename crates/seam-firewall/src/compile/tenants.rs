//! Tenants: multitenant tenants deny peers of other non-global tenants (rules `mode/multitenant/<t>/<dir>`, in
//! the baseline tier); tenant-scoped contracts read the tenants' members.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::{Endpoint, IsolationMode};

use super::{addrs, dir_index, emit, multitenant_rule_id, sides, Ctx, FragOut, DIRS};
use crate::addr::AddrSet;
use crate::ir::{Action, AddrMatch, L4Match};

impl<'a> Ctx<'_, 'a> {
    pub(super) fn tenant_members(&self) -> &BTreeMap<&'a str, AddrSet> {
        self.tenant_members.get_or_init(|| {
            let mut by_tenant: BTreeMap<&'a str, Vec<Ipv4Addr>> = BTreeMap::new();
            for (ns, eps) in self.idx.by_ns() {
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
                    .by_ns()
                    .iter()
                    .filter(|(ns, _)| !self.idx.tenant(self.idx.tenant_name(ns)).global)
                    .flat_map(|(_, eps)| eps.iter().copied()),
            )
        })
    }
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
