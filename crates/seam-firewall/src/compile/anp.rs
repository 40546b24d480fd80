//! AdminNetworkPolicies (v1alpha1): the admin tier, rules `anp/<name>/<dir>/<i>`.

use seam_policy::{AdminNetworkPolicy, AnpAction};

use super::{Ctx, FragOut, DIRS};
use crate::ir::Action;

pub(super) fn anp_action(a: AnpAction) -> Option<Action> {
    Some(match a {
        AnpAction::Allow => Action::Allow,
        AnpAction::Deny => Action::Deny,
        AnpAction::Pass => Action::Pass,
    })
}

impl Ctx<'_, '_> {
    /// The rules of an ANP in both directions.
    pub(super) fn anp_fragment(&self, f: &mut FragOut, anp: &AdminNetworkPolicy) {
        for dir in DIRS {
            let rules = self.policy_rules(dir, &anp.spec.ingress, &anp.spec.egress, anp_action);
            self.admin_rules(
                f,
                dir,
                &format!("anp/{}", anp.metadata.name),
                &anp.spec.subject,
                rules,
            );
        }
    }
}
