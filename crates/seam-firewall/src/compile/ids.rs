//! Rule ids: the names under which the IR's rules, the kernel's counters and `explain` meet.

use seam_policy::{Direction, DirectionVerdict, IsolationMode, PolicyKind, Reason, RuleRef};

use crate::ir::RuleId;

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

/// What every rule id of one policy object starts with (see [`rule_id`]): `np/<ns>/<name>/`,
/// `anp/<name>/`, … — how the kernel's counters, keyed by rule comment, add up to the object's
/// hits (`seam get policies -o wide`). A comment shortened by hashing (an id over 127 bytes or
/// with unsafe characters: `seam_nft::names::nft_comment`) does not start with it.
pub fn policy_rule_prefix(kind: PolicyKind, namespace: Option<&str>, name: &str) -> String {
    match kind {
        PolicyKind::NetworkPolicy => format!("np/{}/{name}/", namespace.unwrap_or("")),
        PolicyKind::AdminNetworkPolicy => format!("anp/{name}/"),
        PolicyKind::BaselineAdminNetworkPolicy => format!("banp/{name}/"),
        PolicyKind::ClusterNetworkPolicy => format!("cnp/{name}/"),
        PolicyKind::Contract => format!("contract/{name}/"),
        PolicyKind::EndpointGroup => format!("group/{name}/"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_id_of_a_policy_starts_with_its_prefix() {
        for kind in [
            PolicyKind::NetworkPolicy,
            PolicyKind::AdminNetworkPolicy,
            PolicyKind::BaselineAdminNetworkPolicy,
            PolicyKind::ClusterNetworkPolicy,
            PolicyKind::Contract,
            PolicyKind::EndpointGroup,
        ] {
            let namespace = (kind == PolicyKind::NetworkPolicy).then(|| "x".to_string());
            let prefix = policy_rule_prefix(kind, namespace.as_deref(), "web");
            for (index, direction) in [
                (Some(0), Direction::Egress),
                (Some(3), Direction::Ingress),
                (None, Direction::Ingress),
            ] {
                let rule = RuleRef {
                    kind,
                    namespace: namespace.clone(),
                    name: "web".into(),
                    rule_index: index,
                    rule_name: None,
                };
                let id = rule_id(&rule, direction);
                assert!(id.as_str().starts_with(&prefix), "{id} / {prefix}");
                // Not another object's whose name starts the same.
                let other = policy_rule_prefix(kind, namespace.as_deref(), "we");
                assert!(!id.as_str().starts_with(&other), "{id} / {other}");
            }
        }
    }
}
