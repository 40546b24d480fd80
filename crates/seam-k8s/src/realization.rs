//! The `Ready` condition in the status of Seam's own CRDs (EndpointGroup, Contract, Tenant):
//! whether every node that must enforce the object enforces the version Kubernetes holds.
//!
//! The adapter forwards a Kubernetes object at `metadata.generation` G; the controller stores it
//! at its own generation S (a store revision). The first realization status the adapter reads
//! after that write names S: the adapter is the only writer of the objects it manages (the
//! controller refuses other writers, `seam.dev/managed-by`), and it reads after it wrote. Once
//! every node enforces S or newer, the condition is `Ready=True` with `observedGeneration: G`
//! ("realized on 10/10 nodes"); until then `Ready=False` (reason `Realizing`, or `Error` when a
//! node cannot enforce it) with the newest generation realized everywhere before, if any, as
//! `observedGeneration`, and the message naming the nodes behind. NetworkPolicy and the
//! policy.networking.k8s.io kinds are not Seam's: their status is left alone.
//!
//! [`ready_condition`] is pure; [`crate::sync`] reads the status from the controller (every
//! [`STATUS_INTERVAL`] while it manages such objects) and writes the condition when it changed
//! (a merge patch of the status subresource).

use std::time::Duration;

use seam_model::ObjectStatus;
use serde_json::{json, Value};

use crate::resource::WatchedKind;

/// The condition's type.
pub const READY: &str = "Ready";

/// How often the adapter reads the realization status while it manages Seam CRD objects.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many nodes behind are named in a condition's message.
const NAMED_LAGGARDS: usize = 3;

/// Whether objects of `kind` are Seam's own CRDs, whose status the adapter writes.
pub fn writes_status(kind: WatchedKind) -> bool {
    matches!(
        kind,
        WatchedKind::EndpointGroup | WatchedKind::Contract | WatchedKind::Tenant
    )
}

/// A `Ready` condition, without its `lastTransitionTime` (set when it is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Every node enforces the forwarded generation.
    pub realized: bool,
    /// `Realized`, `Realizing` or `Error`.
    pub reason: &'static str,
    /// `realized on 9/10 nodes`, then the nodes behind.
    pub message: String,
    /// The Kubernetes generation realized on every node, if any.
    pub observed_generation: Option<i64>,
}

impl Ready {
    /// The condition as the status subresource holds it, with `lastTransitionTime` `at`
    /// (RFC 3339).
    pub fn to_value(&self, at: &str) -> Value {
        let mut condition = json!({
            "type": READY,
            "status": if self.realized { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": at,
        });
        if let Some(g) = self.observed_generation {
            condition["observedGeneration"] = json!(g);
        }
        condition
    }
}

/// The `Ready` condition of an object forwarded at Kubernetes generation `forwarded`, which the
/// controller stored at generation `stored`, given its realization `status`; `realized_before`
/// is the newest Kubernetes generation realized everywhere before.
pub fn ready_condition(
    status: &ObjectStatus,
    stored: u64,
    forwarded: i64,
    realized_before: Option<i64>,
) -> Ready {
    let mut message = format!("realized on {} nodes", status.fraction());
    if status.is_realized_at(stored) {
        return Ready {
            realized: true,
            reason: "Realized",
            message,
            observed_generation: Some(forwarded),
        };
    }
    let behind: Vec<String> = status
        .laggards
        .iter()
        .take(NAMED_LAGGARDS)
        .map(|l| format!("{} {}", l.node, l.describe()))
        .collect();
    message.push_str("; ");
    message.push_str(&behind.join("; "));
    if status.laggards.len() > NAMED_LAGGARDS {
        message.push_str(&format!(
            "; and {} more",
            status.laggards.len() - NAMED_LAGGARDS
        ));
    }
    Ready {
        realized: false,
        reason: if status.laggards.iter().any(|l| l.error.is_some()) {
            "Error"
        } else {
            "Realizing"
        },
        message,
        observed_generation: realized_before,
    }
}

/// What the adapter keeps of one Seam CRD object it forwards.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Tracked {
    /// The object's kind.
    pub(crate) kind: Option<WatchedKind>,
    /// Its `metadata.generation` as last seen.
    pub(crate) current: Option<i64>,
    /// The generation the controller holds (forwarded, or the same once translated).
    pub(crate) forwarded: Option<i64>,
    /// The controller's generation of what was forwarded; learnt at the next status read.
    pub(crate) stored: Option<u64>,
    /// The newest Kubernetes generation realized on every node.
    pub(crate) realized: Option<i64>,
    /// The condition last written, and when its status last changed.
    pub(crate) written: Option<(Ready, String)>,
}

impl Tracked {
    /// The controller holds the current generation: written now (`wrote`) or already the same.
    pub(crate) fn forwarded(&mut self, wrote: bool) {
        if self.forwarded != self.current || wrote {
            self.forwarded = self.current;
            if wrote {
                self.stored = None;
            }
        }
    }
}

/// RFC 3339 now, for `lastTransitionTime`.
pub(crate) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_model::Laggard;

    fn status(realized: usize, laggards: Vec<Laggard>) -> ObjectStatus {
        ObjectStatus {
            name: "Contract/_/web".into(),
            generation: 40,
            realized,
            required: realized + laggards.len(),
            laggards,
        }
    }

    #[test]
    fn ready_once_every_node_enforces_what_was_forwarded() {
        let ready = ready_condition(&status(10, vec![]), 40, 3, Some(2));
        assert_eq!(
            ready,
            Ready {
                realized: true,
                reason: "Realized",
                message: "realized on 10/10 nodes".into(),
                observed_generation: Some(3),
            }
        );
        let value = ready.to_value("2026-12-07T19:00:00Z");
        assert_eq!(value["type"], "Ready");
        assert_eq!(value["status"], "True");
        assert_eq!(value["observedGeneration"], 3);
    }

    #[test]
    fn not_ready_names_the_nodes_behind_and_keeps_the_generation_realized_before() {
        let behind = vec![
            Laggard {
                node: "n2".into(),
                generation: Some(38),
                ..Laggard::default()
            },
            Laggard {
                node: "n3".into(),
                unreported: true,
                ..Laggard::default()
            },
        ];
        let ready = ready_condition(&status(8, behind.clone()), 40, 3, Some(2));
        assert_eq!(
            ready,
            Ready {
                realized: false,
                reason: "Realizing",
                message: "realized on 8/10 nodes; n2 at generation 38; n3 has not reported".into(),
                observed_generation: Some(2),
            }
        );
        assert_eq!(
            ready.to_value("t")["status"],
            "False",
            "{:?}",
            ready.to_value("t")
        );
        // One node cannot enforce it: the reason says so.
        let mut broken = behind;
        broken[0].error = Some("stored policy object ignored: …".into());
        let ready = ready_condition(&status(8, broken), 40, 3, None);
        assert_eq!(ready.reason, "Error");
        assert!(ready.to_value("t").get("observedGeneration").is_none());
        // A newer Seam generation than the one forwarded does not hold the condition back.
        let newer = vec![Laggard {
            node: "n2".into(),
            generation: Some(41),
            error: None,
            unreported: false,
        }];
        let mut moved_on = status(9, newer);
        moved_on.generation = 45;
        assert!(ready_condition(&moved_on, 40, 3, None).realized);
    }

    #[test]
    fn only_seam_crds_get_a_status() {
        assert!(writes_status(WatchedKind::Contract));
        assert!(writes_status(WatchedKind::Tenant));
        assert!(!writes_status(WatchedKind::NetworkPolicy));
        assert!(!writes_status(WatchedKind::AdminNetworkPolicy));
        assert!(now().ends_with('Z'));
    }
}
