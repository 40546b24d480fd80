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
