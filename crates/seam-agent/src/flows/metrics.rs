//! The flow recorder's metrics (no labels: bounded cardinality).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Counts of the flow recorder.
#[derive(Debug, Clone, Default)]
pub struct FlowMetrics {
    /// Records made (and kept in the ring).
    pub emitted: Counter,
    /// Samples the rate limits suppressed (per rule in the kernel, per node in the agent).
    pub suppressed: Counter,
    /// Records dropped on the way to the controller (queue full, or the controller did not take
    /// their batch).
    pub dropped: Counter,
    /// Reads of the NFLOG socket at which the kernel had dropped samples (its buffer was full;
    /// how many it dropped is not known), plus batches of samples the recorder could not keep up
    /// with.
    pub lost: Counter,
    /// Records whose Service was found by a conntrack lookup (`flows::service`).
    pub service_found: Counter,
    /// Records left without their Service because its lookup failed: the queue of lookups was
    /// full, the kernel refused or did not answer, or the connection's entry was gone.
    pub service_failed: Counter,
}

impl FlowMetrics {
    /// Registers the metrics (`seam_flow_records_emitted_total`, …).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "flow_records_emitted",
            "Flow records made from the dataplane's samples",
            self.emitted.clone(),
        );
        registry.register(
            "flow_samples_suppressed",
            "Flow samples suppressed by the rate limits (per rule and per node)",
            self.suppressed.clone(),
        );
        registry.register(
            "flow_records_dropped",
            "Flow records dropped on the way to the controller (queue full or controller slow)",
            self.dropped.clone(),
        );
        registry.register(
            "flow_samples_lost",
            "Reads at which the kernel had dropped flow samples (socket buffer full)",
            self.lost.clone(),
        );
        registry.register(
            "flow_service_lookups_found",
            "Flow records whose Service was found by a conntrack lookup",
            self.service_found.clone(),
        );
        registry.register(
            "flow_service_lookups_failed",
            "Flow records of a Service's backend left without the Service (lookup failed or dropped)",
            self.service_failed.clone(),
        );
    }
}
