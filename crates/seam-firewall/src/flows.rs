//! What each flow sample of a node's table stands for: the map from a sample's NFLOG prefix
//! ([`seam_nft::names::sample_prefix`], written by [`crate::render`] when the renderer samples)
//! back to the rule that sent it, its direction, tier, policy and the reason a flow record gives.
//! The agent builds it from the same [`NodeRuleset`] it renders, so the two cannot disagree.

use std::collections::HashMap;

use seam_model::flow::{FlowDirection, FlowReason};
use seam_nft::names::{sample_prefix, SampleKind};
use seam_policy::Direction;

use crate::compile::direction_str;
use crate::ir::{Action, NodeRuleset, RuleId, Tier};
use crate::render::{nft_comment, sample_kind};

/// The rule behind a sample prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledRule {
    /// The rule's id (several IR rules may share one: one policy rule over two protocols).
    pub rule: RuleId,
    /// Its comment in the kernel ([`nft_comment`]): what its counters, and the counts of
    /// samples its limit suppressed, are listed by.
    pub comment: String,
    /// The direction whose chains hold it.
    pub direction: FlowDirection,
    /// Its tier.
    pub tier: Tier,
    /// Allow, deny or Pass.
    pub kind: SampleKind,
    /// The policy or contract, as `seam explain` names it (`NetworkPolicy prod/web`); `None` for
    /// isolation and the isolation mode's defaults.
    pub policy: Option<String>,
    /// Why a record of it was decided so.
    pub reason: FlowReason,
}

/// Every sample prefix of the ruleset's table and the rule behind it.
pub fn sampled_rules(ruleset: &NodeRuleset) -> HashMap<String, SampledRule> {
    let mut out = HashMap::new();
    for dir in [Direction::Egress, Direction::Ingress] {
        for chain in ruleset.chains(dir) {
            for rule in &chain.rules {
                let kind = sample_kind(rule.action);
                let comment = nft_comment(&rule.id);
                let prefix = sample_prefix(kind, dir == Direction::Egress, &comment);
                out.entry(prefix).or_insert_with(|| SampledRule {
                    rule: rule.id.clone(),
                    comment,
                    direction: match dir {
                        Direction::Egress => FlowDirection::Egress,
                        Direction::Ingress => FlowDirection::Ingress,
                    },
                    tier: chain.tier,
                    kind,
                    policy: policy_of(&rule.id),
                    reason: reason_of(&rule.id, rule.action),
                });
            }
        }
    }
    out
}

/// The policy a rule id belongs to, as `seam explain` names it (`np/x/web/ingress/0` →
/// `NetworkPolicy x/web`); `None` for the isolation rule and the isolation mode's rules.
pub fn policy_of(id: &RuleId) -> Option<String> {
    let mut parts = id.as_str().split('/');
    let kind = parts.next()?;
    let named = |kind: &str, rest: &mut std::str::Split<'_, char>| {
        rest.next().map(|name| format!("{kind} {name}"))
    };
    match kind {
        "np" => {
            let ns = parts.next()?;
            let name = parts.next()?;
            Some(format!("NetworkPolicy {ns}/{name}"))
        }
        "anp" => named("AdminNetworkPolicy", &mut parts),
        "banp" => named("BaselineAdminNetworkPolicy", &mut parts),
        "cnp" => named("ClusterNetworkPolicy", &mut parts),
        "contract" => named("Contract", &mut parts),
        "group" => named("EndpointGroup", &mut parts),
        _ => None,
    }
}

/// The reason a record of this rule gives: isolation for the namespace tier's isolation rule,
/// the isolation mode's default for its rules (`default/<dir>`, `mode/…`), else the rule.
pub fn reason_of(id: &RuleId, action: Action) -> FlowReason {
    let text = id.as_str();
    let isolation = [Direction::Egress, Direction::Ingress]
        .iter()
        .any(|d| text == format!("ns-isolation/{}", direction_str(*d)));
    if isolation {
        FlowReason::Isolation
    } else if text.starts_with("default/") || text.starts_with("mode/") {
        match action {
            Action::Allow => FlowReason::DefaultAllow,
            Action::Deny | Action::Pass => FlowReason::DefaultDeny,
        }
    } else {
        FlowReason::Rule
    }
}

#[cfg(test)]
mod tests;
