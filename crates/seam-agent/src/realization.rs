//! What this node enforces: per policy object and tenant, the generation its kernel's table
//! holds, or why the object is not in force (the agent could not read it, or it does not
//! validate: kept by name, reported and never in force), reported to the controller
//! (`PUT /v1/realization/<node>`) when it changes. See [`seam_model::realization`].
//!
//! Each reconcile pass notes, under the same hold of the view the firewall compiler reads, what
//! the view holds ([`Realization::observe`]: only the objects the pass's changes name are looked
//! at again); once the table compiled from that view is in the kernel (a write that succeeded, or
//! nothing to write), that becomes the report ([`Realization::enforced`]). A pass that fails to
//! compile or write leaves the objects at the generations of the last pass that succeeded and
//! says why in the report's `error`. [`run`] sends the report, a short while after it changed
//! (a burst of passes is one request), and again after a failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use seam_dataplane::{Firewall, NodeKernel};
use seam_firewall::ViewChanges;
use seam_model::realization::{shorten, MAX_REALIZATION_ERROR_LEN};
use seam_model::{tenant_realization_name, AsStoredPolicy, NodeRealization, ObjectRealization};

use crate::view::ClusterView;
use crate::Agent;

/// How long a changed report waits for the passes of the same burst before it is sent.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// First wait after a report could not be sent; doubled up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The node's realization: what the view holds and what the kernel enforces.
#[derive(Debug, Default)]
pub struct Realization {
    /// What the view holds now, as the last pass observed it.
    observed: BTreeMap<String, ObjectRealization>,
    /// `observed` changed since it was last enforced.
    observed_changed: bool,
    /// What the kernel enforces: the report.
    report: NodeRealization,
    /// The report as the controller last accepted it (`None`: send it anyway).
    sent: Option<NodeRealization>,
}

impl Realization {
    /// A node's realization before anything is enforced.
    pub fn new(node: &str) -> Self {
        Realization {
            report: NodeRealization {
                node: node.to_string(),
                ..NodeRealization::default()
            },
            ..Realization::default()
        }
    }

    /// Notes what `view` holds of the objects `changes` names (every object when it says
    /// everything may have changed): each policy object and tenant with its generation, and
    /// the error of a policy object that cannot be in force.
    pub fn observe(&mut self, view: &ClusterView, changes: &ViewChanges) {
        if changes.everything {
            self.observed.clear();
            let policies = view.policies.keys().cloned();
            let tenants = view.tenants.keys().map(|t| tenant_realization_name(t));
            for name in policies.chain(tenants).collect::<Vec<_>>() {
                self.observe_one(view, &name);
            }
            self.observed_changed = true;
            return;
        }
        let policies = changes.documents.iter().cloned();
        let tenants = changes.tenants.iter().map(|t| tenant_realization_name(t));
        for name in policies.chain(tenants) {
            self.observe_one(view, &name);
        }
    }

    /// Notes object `name` (a policy store name or a tenant's realization name) as `view`
    /// holds it, or its absence.
    fn observe_one(&mut self, view: &ClusterView, name: &str) {
        let present = match name.strip_prefix("Tenant/_/") {
            Some(tenant) => view.tenants.contains_key(tenant).then_some(None),
            None => view.policies.get(name).map(policy_error),
        };
        let now = match (present, view.generations.get(name)) {
            (Some(error), Some(&generation)) => Some(ObjectRealization { generation, error }),
            _ => None,
        };
        let before = match &now {
            Some(now) => self.observed.insert(name.to_string(), now.clone()),
            None => self.observed.remove(name),
        };
        if before != now {
            self.observed_changed = true;
        }
    }

    /// The table compiled from the view last observed is in the kernel: what it holds is what
    /// the node enforces. True when the report changed.
    pub fn enforced(&mut self) -> bool {
        let mut changed = self.report.error.take().is_some();
        if self.observed_changed {
            self.observed_changed = false;
            if self.report.objects != self.observed {
                self.report.objects = self.observed.clone();
                changed = true;
            }
        }
        changed
    }

    /// A pass failed to compile or write the table: the node still enforces what it did, and
    /// says why it does not enforce more. True when the report changed.
    pub fn failed(&mut self, error: &str) -> bool {
        let error = shorten(error, MAX_REALIZATION_ERROR_LEN).to_string();
        if self.report.error.as_ref() == Some(&error) {
            return false;
        }
        self.report.error = Some(error);
        true
    }

    /// The report, when it differs from what the controller last accepted.
    pub fn unsent(&self) -> Option<NodeRealization> {
        (self.sent.as_ref() != Some(&self.report)).then(|| self.report.clone())
    }

    /// What the node enforces now (for tests and diagnostics).
    pub fn report(&self) -> &NodeRealization {
        &self.report
    }

    /// The controller accepted `report`.
    fn accepted(&mut self, report: NodeRealization) {
        self.sent = Some(report);
    }

    /// Sends the report again even when unchanged (the controller may have lost it: a new
    /// session after an outage, the node record deleted and written again).
    pub fn resend(&mut self) {
        self.sent = None;
    }
}

/// Why a policy object of the view cannot be in force, if it cannot: the agent could not read
/// it, or it does not validate (the firewall compiler leaves both out, with the same words).
fn policy_error(policy: &impl AsStoredPolicy) -> Option<String> {
    let error = match policy.as_stored() {
        Ok(object) => object.validate().err()?.to_string(),
        Err(unreadable) => unreadable.error.clone(),
    };
    let text = format!("stored policy object ignored: {error}");
    Some(shorten(&text, MAX_REALIZATION_ERROR_LEN).to_string())
}

/// Runs forever: sends the report to the controller whenever it changed (after [`DEBOUNCE`]),
/// retrying with backoff until the controller accepts it.
pub async fn run<K: NodeKernel + Firewall + 'static>(agent: Arc<Agent<K>>) {
    let mut retry = RETRY_MIN;
    loop {
        agent.realization_changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
        loop {
            let unsent = agent.realization().unsent();
            let Some(report) = unsent else { break };
            match agent.client.put_realization(&report).await {
                Ok(()) => {
                    tracing::debug!(
                        objects = report.objects.len(),
                        "reported what this node enforces"
                    );
                    agent.realization().accepted(report);
                    retry = RETRY_MIN;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = retry.as_millis() as u64, "reporting what this node enforces failed");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
