//! Contracts: consumers and providers (groups) with subjects (filters), in the admin or the namespace tier, rules
//! `contract/<name>/<dir>/<subject>`; the local providers of a namespace-tier allow contract are isolated for
//! ingress.

use seam_policy::{Contract, ContractAction, ContractScope, ContractTier, Direction, Filter};

use super::ports::{merge_ranges, port_u16, L4Alts};
use super::{dir_index, direction_str, emit, Ctx, FragOut, DIRS};
use crate::addr::AddrSet;
use crate::ir::{Action, AddrMatch, L4Match, PortRange, RuleId};

impl Ctx<'_, '_> {
    /// The rules of a contract in both directions, and the providers it isolates.
    pub(super) fn contract_fragment(&self, f: &mut FragOut, c: &Contract) {
        let consumers = self.groups_set(&c.spec.consumers);
        let providers = self.groups_set(&c.spec.providers);
        for dir in DIRS {
            self.contract_rules(f, dir, c, &consumers, &providers);
        }
        if c.spec.tier == ContractTier::Namespace && c.spec.action == ContractAction::Allow {
            // Providers of a namespace-tier allow contract are isolated for ingress.
            f.iso[dir_index(Direction::Ingress)] = providers.intersection(self.local_addrs);
        }
    }

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
            .map(|(i, s)| (i, s.filters.iter().filter_map(filter_alt).collect()))
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
