//! The agent's Prometheus metrics: what it counts as it works ([`AgentMetrics`]: CNI requests,
//! reconcile passes, firewall writes) and what it reads at each scrape (the node's table size, its
//! addresses, and the kernel's counters of the rules that drop). [`registry`] builds the
//! registry `GET /metrics` encodes ([`crate::api`]): the one place where every metric of the
//! agent is registered.
//!
//! Label cardinality is bounded by construction: CNI verb and result, how a table was written,
//! a policy tier and a drop reason. No label names a pod, a rule or an address: the per-rule
//! counters are served as JSON by `GET /v1/counters` instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use seam_nft::listing::RuleCounter;
use seam_nft::names::{ADMIN_CHAIN_PREFIX, BASELINE_CHAIN_PREFIX, NAMESPACE_CHAIN_PREFIX};
use seam_nft::rule::NftVerdict;
use seam_nft::table::{ChainBody, TableModel};

/// A CNI verb, as the agent's socket receives it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum Verb {
    /// ADD.
    ADD,
    /// DEL.
    DEL,
    /// CHECK.
    CHECK,
    /// GC.
    GC,
    /// STATUS.
    STATUS,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Answered with a result.
    ok,
    /// Answered with an error.
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CniLabels {
    verb: Verb,
    result: Outcome,
}

/// How the firewall reached the kernel.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ApplyMode {
    /// Changed in place (a netlink batch).
    delta,
    /// Written whole (`nft -f`).
    whole,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApplyLabels {
    mode: ApplyMode,
    result: Outcome,
}

/// The policy tier of a rule that drops.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DropTier {
    /// AdminNetworkPolicies, admin-tier ClusterNetworkPolicies and Contracts.
    admin,
    /// NetworkPolicies, namespace-tier Contracts and the isolation they imply.
    namespace,
    /// Baseline policies and the isolation mode's default.
    baseline,
    /// Rules outside the tier chains (e.g. IPv6 on Seam's ports).
    other,
}

/// Why a rule drops.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DropReason {
    /// A deny rule of a policy or contract.
    rule,
    /// An endpoint selected by a policy allows only what the policy allows (`ns-isolation/…`).
    isolation,
    /// Multitenant mode: traffic between tenants (`mode/multitenant/…`).
    tenant,
    /// The default of the direction (`default/…`).
    default,
}

/// The labels of a drop counter.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct DropLabels {
    /// The tier of the rule that dropped.
    pub tier: DropTier,
    /// Why it dropped.
    pub reason: DropReason,
}

/// Packets and bytes dropped, by tier and reason: sums of the kernel's rule counters, read at
/// each scrape (they restart from zero when the table is written whole, which Prometheus reads
/// as a counter reset).
#[derive(Debug, Default)]
struct DropCounts {
    packets: bool,
    values: Arc<Mutex<BTreeMap<DropLabels, RuleCounter>>>,
}

impl EncodeMetric for DropCounts {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (labels, counter) in values.iter() {
            let value = if self.packets {
                counter.packets
            } else {
                counter.bytes
            };
            encoder
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Latency buckets from 100 µs to about 13 s (×2 each).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// What the agent counts. Cheap to share (every metric is a handle to shared atomics).
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    cni: Family<CniLabels, Histogram>,
    reconcile: Histogram,
    reconcile_failures: Counter,
    firewall_apply: Family<ApplyLabels, Histogram>,
    table_rules: Gauge<i64, AtomicI64>,
    table_sets: Gauge<i64, AtomicI64>,
    leases: Gauge<i64, AtomicI64>,
    free: Gauge<i64, AtomicI64>,
    blocks: Gauge<i64, AtomicI64>,
    counter_reads_failed: Counter<u64, AtomicU64>,
    ready: Gauge<i64, AtomicI64>,
    /// The drop rules of the table last written: nft comment → labels.
    drop_rules: Arc<Mutex<HashMap<String, DropLabels>>>,
    drops: Arc<Mutex<BTreeMap<DropLabels, RuleCounter>>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            cni: Family::new_with_constructor(latency_histogram),
            reconcile: latency_histogram(),
            reconcile_failures: Counter::default(),
            firewall_apply: Family::new_with_constructor(latency_histogram),
            table_rules: Gauge::default(),
            table_sets: Gauge::default(),
            leases: Gauge::default(),
            free: Gauge::default(),
            blocks: Gauge::default(),
            counter_reads_failed: Counter::default(),
            ready: Gauge::default(),
            drop_rules: Arc::default(),
            drops: Arc::default(),
        }
    }
}

/// Address totals of the node's blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressTotals {
    /// Leases held (pending or bound).
    pub leases: usize,
    /// Addresses free for new leases.
    pub free: usize,
    /// Address blocks held.
    pub blocks: usize,
}

impl AgentMetrics {
    /// Registers every metric under `registry` (give it the `seam` prefix: [`registry`]).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("agent");
        r.register_with_unit(
            "cni_request_duration",
            "Time to answer a CNI request on the agent's socket, by verb and result",
            Unit::Seconds,
            self.cni.clone(),
        );
        r.register_with_unit(
            "reconcile_duration",
            "Time of one dataplane reconcile pass (links, then the firewall)",
            Unit::Seconds,
            self.reconcile.clone(),
        );
        r.register(
            "reconcile_failures",
            "Reconcile passes that failed (retried)",
            self.reconcile_failures.clone(),
        );
        r.register_with_unit(
            "firewall_apply_duration",
            "Time to write the node's table to the kernel, by how (in place or whole) and result",
            Unit::Seconds,
            self.firewall_apply.clone(),
        );
        r.register(
            "firewall_rules",
            "Rules in the node's table inet seam as last written (policy rules)",
            self.table_rules.clone(),
        );
        r.register(
            "firewall_sets",
            "Address sets in the node's table inet seam as last written",
            self.table_sets.clone(),
        );
        r.register(
            "drop_packets",
            "Packets dropped by the node's policy rules, by tier and reason (kernel counters)",
            DropCounts {
                packets: true,
                values: self.drops.clone(),
            },
        );
        r.register(
            "drop_bytes",
            "Bytes dropped by the node's policy rules, by tier and reason (kernel counters)",
            DropCounts {
                packets: false,
                values: self.drops.clone(),
            },
        );
        r.register(
            "counter_reads_failed",
            "Scrapes whose read of the kernel's rule counters failed",
            self.counter_reads_failed.clone(),
        );
        r.register(
            "ready",
            "1 once the agent has had its first full view of the controller and written the node's table",
            self.ready.clone(),
        );
        r.register(
            "leases",
            "Address leases held on this node",
            self.leases.clone(),
        );
        r.register(
            "addresses_free",
            "Free addresses in this node's blocks (quarantined ones not counted)",
            self.free.clone(),
        );
        r.register(
            "blocks",
            "Address blocks this node holds",
            self.blocks.clone(),
        );
    }

    /// Records one CNI request.
    pub fn observe_cni(&self, verb: Verb, ok: bool, took: Duration) {
        let result = if ok { Outcome::ok } else { Outcome::error };
        self.cni
            .get_or_create(&CniLabels { verb, result })
            .observe(took.as_secs_f64());
    }

    /// Records one reconcile pass.
    pub fn observe_reconcile(&self, ok: bool, took: Duration) {
        self.reconcile.observe(took.as_secs_f64());
        if !ok {
            self.reconcile_failures.inc();
        }
    }

    /// Records one write of the table.
    pub fn observe_firewall_apply(&self, mode: ApplyMode, ok: bool, took: Duration) {
        let result = if ok { Outcome::ok } else { Outcome::error };
        self.firewall_apply
            .get_or_create(&ApplyLabels { mode, result })
            .observe(took.as_secs_f64());
    }

    /// Takes note of the table now in the kernel: its size, and which of its rules drop (by
    /// comment, with their tier and reason). A table read back from the kernel (its chains
    /// [`ChainBody::Adopted`]) tells neither; the next write does.
    pub fn table_written(&self, model: &TableModel) {
        let mut rules = 0usize;
        let mut drops = HashMap::new();
        for (chain, body) in &model.chains {
            let ChainBody::Rules(list) = body else {
                continue;
            };
            rules += list.len();
            for rule in list {
                if rule.verdict == NftVerdict::Drop {
                    drops.insert(rule.comment.clone(), classify(chain, &rule.comment));
                }
            }
        }
        self.table_rules
            .set(i64::try_from(rules).unwrap_or(i64::MAX));
        self.table_sets
            .set(i64::try_from(model.sets.len()).unwrap_or(i64::MAX));
        *self.drop_rules.lock().unwrap_or_else(|p| p.into_inner()) = drops;
    }

    /// Sums the kernel's counters of the drop rules by labels (what the next scrape shows).
    pub fn counters_read(&self, counters: &BTreeMap<String, RuleCounter>) {
        let rules = self.drop_rules.lock().unwrap_or_else(|p| p.into_inner());
        let mut sums: BTreeMap<DropLabels, RuleCounter> = BTreeMap::new();
        for (comment, labels) in rules.iter() {
            let entry = sums.entry(*labels).or_default();
            if let Some(c) = counters.get(comment) {
                entry.packets += c.packets;
                entry.bytes += c.bytes;
            }
        }
        *self.drops.lock().unwrap_or_else(|p| p.into_inner()) = sums;
    }

    /// A scrape could not read the kernel's counters (the drop counters keep their last values).
    pub fn counters_failed(&self) {
        self.counter_reads_failed.inc();
    }

    /// Sets whether the agent is ready (`GET /readyz`).
    pub fn ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Sets the address totals.
    pub fn addresses(&self, totals: AddressTotals) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.leases.set(n(totals.leases));
        self.free.set(n(totals.free));
        self.blocks.set(n(totals.blocks));
    }
}

/// The tier (from the chain's prefix) and reason (from the rule id in the comment) of a drop rule.
pub fn classify(chain: &str, comment: &str) -> DropLabels {
    let tier = if chain.starts_with(ADMIN_CHAIN_PREFIX) {
        DropTier::admin
    } else if chain.starts_with(NAMESPACE_CHAIN_PREFIX) {
        DropTier::namespace
    } else if chain.starts_with(BASELINE_CHAIN_PREFIX) {
        DropTier::baseline
    } else {
        DropTier::other
    };
    let reason = if comment.starts_with("ns-isolation/") {
        DropReason::isolation
    } else if comment.starts_with("mode/multitenant/") {
        DropReason::tenant
    } else if comment.starts_with("default/") {
        DropReason::default
    } else {
        DropReason::rule
    };
    DropLabels { tier, reason }
}

/// The agent's registry with the `seam_` prefix: every metric `GET /metrics` serves. The one
/// place to wire in the metrics of another part of the agent (`x.register(&mut registry)`).
pub fn registry(metrics: &AgentMetrics) -> Registry {
    let mut registry = Registry::with_prefix("seam");
    metrics.register(&mut registry);
    registry
}

/// The registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        // Writing to a String cannot fail; a metric's own encoder could.
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

#[cfg(test)]
mod tests;
