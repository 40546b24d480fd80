//! The controller's flow metrics ([`FlowMetrics`]); the metrics module registers them.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters of the flow records the controller takes in and serves. No labels: per-node or
/// per-rule labels would grow with the cluster.
#[derive(Debug, Clone, Default)]
pub struct FlowMetrics {
    /// Records taken in from agents' batches.
    pub(crate) received: Counter,
    /// Held records dropped to make room (a full ring, or the bound over all nodes).
    pub(crate) evicted: Counter,
    /// Records the agents said they dropped on the way here (their `dropped` counts).
    pub(crate) agent_dropped: Counter,
    /// Times a follower fell behind and skipped records.
    pub(crate) follower_lags: Counter,
    /// Records followers skipped because they fell behind.
    pub(crate) follower_skipped: Counter,
    /// Records held now.
    pub(crate) held: Gauge,
    /// Followed streams open now.
    pub(crate) followers: Gauge,
}

impl FlowMetrics {
    /// Registers every metric in `registry` (names start with `seam_controller_flow` under the registry's `seam` prefix;
    /// counters get `_total` from the exposition format).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "controller_flow_records_received",
            "Flow records taken in from agents",
            self.received.clone(),
        );
        registry.register(
            "controller_flow_records_evicted",
            "Held flow records dropped to make room (ring per node or total bound full)",
            self.evicted.clone(),
        );
        registry.register(
            "controller_flow_records_agent_dropped",
            "Flow records agents reported dropped before reaching the controller",
            self.agent_dropped.clone(),
        );
        registry.register(
            "controller_flow_follower_lags",
            "Times a flow follower fell behind and skipped records",
            self.follower_lags.clone(),
        );
        registry.register(
            "controller_flow_follower_skipped_records",
            "Flow records followers skipped because they fell behind",
            self.follower_skipped.clone(),
        );
        registry.register(
            "controller_flow_records_held",
            "Flow records held in memory now",
            self.held.clone(),
        );
        registry.register(
            "controller_flow_followers",
            "Followed flow streams open now",
            self.followers.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed() {
        let metrics = FlowMetrics::default();
        metrics.received.inc_by(3);
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("controller_flow_records_received_total 3"),
            "{text}"
        );
        for name in [
            "controller_flow_records_evicted_total",
            "controller_flow_records_agent_dropped_total",
            "controller_flow_follower_lags_total",
            "controller_flow_follower_skipped_records_total",
            "controller_flow_records_held",
            "controller_flow_followers",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }
}
