//! The BaselineAdminNetworkPolicy: the baseline tier after the baseline CNPs, rules `banp/<name>/<dir>/<i>`.

use seam_policy::{BanpAction, BaselineAdminNetworkPolicy};

use super::{Ctx, FragOut, DIRS};
use crate::ir::Action;

fn banp_action(a: BanpAction) -> Option<Action> {
    Some(match a {
        BanpAction::Allow => Action::Allow,
        BanpAction::Deny => Action::Deny,
    })
}

impl Ctx<'_, '_> {
    /// The rules of the BANP in both directions.
    pub(super) fn banp_fragment(&self, f: &mut FragOut, banp: &BaselineAdminNetworkPolicy) {
        for dir in DIRS {
            let rules = self.policy_rules(dir, &banp.spec.ingress, &banp.spec.egress, banp_action);
            self.admin_rules(
                f,
                dir,
                &format!("banp/{}", banp.metadata.name),
                &banp.spec.subject,
                rules,
            );
        }
    }
}
