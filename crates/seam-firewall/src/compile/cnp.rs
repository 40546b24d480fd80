//! ClusterNetworkPolicies (v1alpha2): the ANP shape in the admin or the baseline tier, rules
//! `cnp/<name>/<dir>/<i>`.

use seam_policy::{AnpAction, ClusterNetworkPolicy, Direction};

use super::anp::anp_action;
use super::{Ctx, FragOut, DIRS};
use crate::ir::Action;

/// Pass cannot pass validation in the baseline tier; the engine lets such a rule match nothing.
fn baseline_action(a: AnpAction) -> Option<Action> {
    match a {
        AnpAction::Allow => Some(Action::Allow),
        AnpAction::Deny => Some(Action::Deny),
        AnpAction::Pass => None,
    }
}

impl Ctx<'_, '_> {
    /// The rules of a CNP in both directions, with the actions of its tier.
    pub(super) fn cnp_fragment(&self, f: &mut FragOut, cnp: &ClusterNetworkPolicy) {
        let action = if cnp.is_admin() {
            anp_action
        } else {
            baseline_action
        };
        for dir in DIRS {
            self.cnp_rules(f, dir, cnp, action);
        }
    }

    /// The rules of a CNP (lowered to the ANP shape) for the local endpoints its subject selects.
    fn cnp_rules(
        &self,
        f: &mut FragOut,
        dir: Direction,
        cnp: &ClusterNetworkPolicy,
        action: impl Fn(AnpAction) -> Option<Action>,
    ) {
        let (ingress, egress) = match dir {
            Direction::Ingress => (cnp.ingress_rules(), Vec::new()),
            Direction::Egress => (Vec::new(), cnp.egress_rules()),
        };
        let rules = self.policy_rules(dir, &ingress, &egress, action);
        self.admin_rules(
            f,
            dir,
            &format!("cnp/{}", cnp.metadata.name),
            &cnp.spec.subject,
            rules,
        );
    }
}
