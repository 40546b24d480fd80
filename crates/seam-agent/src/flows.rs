//! Flow records from the dataplane. With flow recording on, the node's `table inet seam`
//! samples every verdict to an NFLOG group (`seam_firewall::render::table::Renderer::
//! with_sampling`; allowed new connections, drops and Passes under per-rule limits). `seamd`
//! reads the group (`seam_linux::nflog`) and hands the samples to [`start`]'s recorder, which
//! turns each into a record ([`decode`]: the rule behind the sample's prefix, both ends resolved
//! against the view, the Service from the connection's original destination when NFLOG gives
//! it, else looked up in conntrack off the hot path, see [`service`]), applies the
//! per-node limit, keeps the newest [`ring::RING_CAPACITY`] in a ring (served by [`http::router`])
//! and queues them for the controller ([`outbox`], `POST /v1/flows` every 200 ms, bounded: what
//! the controller cannot take is dropped and counted, the agent never waits for it).
//!
//! Suppressed samples: the kernel counts what each rule's limit suppressed (see
//! `seam_nft::NftSample::limit`); the recorder reads those counts from the table's listing once a
//! second while drop samples arrive, and the agent's own node limit counts the rest; both go into
//! the next record of the rule (`FlowRecord::suppressed`).

pub mod decode;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod ring;
pub mod service;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seam_dataplane::{Firewall, NodeKernel};
use seam_model::flow::FlowVerdict;
use seam_nft::nflog::Sample;
use seam_nft::FlowSampling;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Agent;
pub use decode::{Decoded, Decoder, Flow, Resolver, RuleMap};
pub use http::router;
pub use metrics::FlowMetrics;
pub use outbox::Outbox;
pub use ring::FlowRing;
pub use service::{ConntrackGet, ServiceLookups};

/// The agent's flow recording settings (`seamd --flows on --flow-group … --flow-drop-rate …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// The NFLOG group the table samples to.
    pub group: u16,
    /// Drop (and Pass) samples per second of each rule, at most (in the kernel).
    pub drop_rate: u32,
    /// Drop (and Pass) samples per second of the whole node, at most (in the agent).
    pub node_drop_rate: u32,
    /// Allowed connection samples per second of each rule, at most (`None`: all).
    pub allow_rate: Option<u32>,
}

/// Bytes of each sampled packet: an IPv4 header with options (60) and the transport ports.
pub const SNAPLEN: u32 = seam_nft::rule::FLOW_SNAPLEN;

impl FlowConfig {
    /// How the table samples.
    pub fn sampling(&self) -> FlowSampling {
        FlowSampling {
            group: self.group,
            drop_rate: self.drop_rate,
            allow_rate: self.allow_rate,
            snaplen: SNAPLEN,
        }
    }
}

/// One read of the NFLOG group.
#[derive(Debug, Clone, Default)]
pub struct SampleBatch {
    /// The samples.
    pub samples: Vec<Sample>,
    /// The kernel dropped samples before this read (its socket buffer was full).
    pub lost: bool,
}

/// Reads the kernel's counts of suppressed samples per rule comment (blocking: it lists the
/// table); `Err` says why it could not.
pub type SuppressedReader =
    Arc<dyn Fn() -> Result<BTreeMap<String, u64>, String> + Send + Sync + 'static>;

/// What the recorder reads from the kernel besides the samples.
pub struct FlowKernel {
    /// The suppressed counts of the table's rules.
    pub suppressed: SuppressedReader,
    /// Conntrack entries by tuple, for the Service of a translated connection (`None`: records
    /// name the Service only when NFLOG gives the original destination).
    pub conntrack: Option<ConntrackGet>,
}

impl std::fmt::Debug for FlowKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowKernel")
            .field("conntrack", &self.conntrack.is_some())
            .finish_non_exhaustive()
    }
}

/// The recorder's shared state: the ring, the queue to the controller, the metrics.
#[derive(Debug)]
pub struct FlowRecorder {
    node: String,
    ring: Mutex<FlowRing>,
    outbox: Outbox,
    metrics: FlowMetrics,
}

impl FlowRecorder {
    /// An empty recorder of `node`.
    pub fn new(node: &str) -> FlowRecorder {
        FlowRecorder {
            node: node.to_string(),
            ring: Mutex::new(FlowRing::default()),
            outbox: Outbox::default(),
            metrics: FlowMetrics::default(),
        }
    }

    /// The node whose flows these are.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Its metrics (register them with [`FlowMetrics::register`]).
    pub fn metrics(&self) -> &FlowMetrics {
        &self.metrics
    }

    /// The queue to the controller.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The newest `limit` flows of the ring at or after `since_ms`, oldest first.
    pub fn recent(&self, since_ms: u64, limit: usize) -> Vec<Flow> {
        self.ring
            .lock()
            .map(|r| r.recent(since_ms, limit))
            .unwrap_or_default()
    }

    /// Keeps one decoded flow: in the ring and queued for the controller.
    pub fn keep(&self, flow: Flow) {
        self.metrics.emitted.inc();
        if !self.outbox.push(flow.clone()) {
            self.metrics.dropped.inc();
        }
        if let Ok(mut ring) = self.ring.lock() {
            ring.push(flow);
        }
    }
}

/// Turns flow sampling on in the node's table: the next reconcile pass renders every policy rule
/// with its sample (chains with samples have other names, so the table changes in place).
pub async fn enable<K: NodeKernel + Firewall + 'static>(agent: &Agent<K>, config: &FlowConfig) {
    agent.firewall_compiler.lock().await.1 =
        seam_firewall::render::table::Renderer::with_sampling(Some(config.sampling()));
    agent.reconcile_now.notify_one();
}

/// How often the resolver is brought up to the view and the suppressed counts are read.
const REFRESH: Duration = Duration::from_secs(1);

/// Starts recording: turns sampling on in the table, decodes what `samples` brings, pushes the
/// records to the controller. Returns the recorder (its ring, metrics and route) and the tasks.
pub async fn start<K: NodeKernel + Firewall + 'static>(
    agent: Arc<Agent<K>>,
    config: FlowConfig,
    samples: mpsc::Receiver<SampleBatch>,
    kernel: FlowKernel,
) -> (Arc<FlowRecorder>, Vec<JoinHandle<()>>) {
    enable(&agent, &config).await;
    let recorder = Arc::new(FlowRecorder::new(&agent.config.node));
    let lookups = kernel.conntrack.and_then(|get| {
        ServiceLookups::spawn(get, recorder.clone())
            .map_err(|e| {
                tracing::warn!(error = %e, "starting the conntrack lookups of flow records failed: records name the backend, not the Service")
            })
            .ok()
    });
    let tasks = vec![
        tokio::spawn(record(
            agent.clone(),
            recorder.clone(),
            Decoder::new(config.node_drop_rate),
            (samples, config.allow_rate),
            (kernel.suppressed, lookups),
        )),
        tokio::spawn(push(agent, recorder.clone())),
    ];
    (recorder, tasks)
}

/// Reads the kernel's suppressed counts on a thread of its own: not on the runtime, and not on
/// its blocking pool either (seamd keeps one blocking thread, which the table's writes need).
async fn read_suppressed(reader: &SuppressedReader) -> Option<BTreeMap<String, u64>> {
    let reader = reader.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("seam-flow-counts".into())
        .spawn(move || {
            let _ = tx.send(reader());
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "starting the suppressed-count reader failed");
        return None;
    }
    match rx.await {
        Ok(Ok(totals)) => Some(totals),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "reading suppressed flow samples failed");
            None
        }
        Err(_) => None,
    }
}

/// The resolver, rebuilt when the view or the Services changed (looked at once a second at
/// most).
struct Resolving {
    resolver: Resolver,
    revision: Option<u64>,
    services: Option<Arc<seam_nft::services::DesiredServices>>,
    checked: Option<Instant>,
}

impl Resolving {
    async fn refresh<K>(&mut self, agent: &Agent<K>) {
        if self.checked.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        self.checked = Some(Instant::now());
        let services = agent.applied_services.borrow().clone();
        let view = agent.view.read().await;
        let same_services = self
            .services
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &services));
        if self.revision == Some(view.revision) && same_services {
            return;
        }
        let local = view.nodes.get(&agent.config.node).map(|n| n.underlay_ip);
        self.resolver = Resolver::new(&view, &services).with_local(local);
        self.revision = Some(view.revision);
        self.services = Some(services);
    }
}

async fn record<K: NodeKernel + Firewall + 'static>(
    agent: Arc<Agent<K>>,
    recorder: Arc<FlowRecorder>,
    mut decoder: Decoder,
    (mut samples, allow_rate): (mpsc::Receiver<SampleBatch>, Option<u32>),
    (suppressed, lookups): (SuppressedReader, Option<ServiceLookups>),
) {
    let rules = agent.flow_rules.subscribe();
    let mut resolving = Resolving {
        resolver: Resolver::default(),
        revision: None,
        services: None,
        checked: None,
    };
    // What the kernel counted before this agent started is no record's.
    if let Some(totals) = read_suppressed(&suppressed).await {
        decoder.kernel_baseline(totals);
    }
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Drop samples came since the last reading (so the limits may have suppressed some), or in
    // the second before it (the counts of its last moments).
    let (mut limited, mut limited_before) = (false, false);
    // Allowed records since the last tick: an allow rule's limit can only have suppressed
    // anything when at least its rate of them came (cheaper than reading the listing always).
    let mut allowed = 0u64;
    loop {
        tokio::select! {
            batch = samples.recv() => {
                let Some(batch) = batch else { break };
                if batch.lost {
                    recorder.metrics.lost.inc();
                }
                resolving.refresh(&agent).await;
                decoder.set_rules(rules.borrow().clone());
                let now = crate::now_ms();
                for sample in &batch.samples {
                    match decoder.decode(sample, now, &resolving.resolver) {
                        Decoded::Record(flow) => {
                            match flow.verdict {
                                FlowVerdict::Denied => limited = true,
                                FlowVerdict::Allowed => allowed += 1,
                            }
                            keep(&recorder, lookups.as_ref(), &resolving.resolver, *flow);
                        }
                        Decoded::Suppressed => {
                            limited = true;
                            recorder.metrics.suppressed.inc();
                        }
                        Decoded::Pass => limited = true,
                        Decoded::Unknown => {}
                    }
                }
            }
            _ = tick.tick() => {
                limited |= allow_rate.is_some_and(|rate| allowed >= u64::from(rate));
                allowed = 0;
                if limited || limited_before {
                    if let Some(totals) = read_suppressed(&suppressed).await {
                        let n = decoder.kernel_suppressed(totals);
                        recorder.metrics.suppressed.inc_by(n);
                    }
                }
                limited_before = limited;
                limited = false;
            }
        }
    }
}

/// Keeps a record, after its conntrack lookup when it is a Service backend's (the worker keeps
/// it then; a full queue keeps it at once, without its Service, counted).
fn keep(
    recorder: &FlowRecorder,
    lookups: Option<&ServiceLookups>,
    resolver: &Resolver,
    flow: Flow,
) {
    let Some((lookups, lookup)) = lookups.zip(service::plan(&flow, resolver)) else {
        return recorder.keep(flow);
    };
    if let Err(flow) = lookups.submit(flow, lookup) {
        recorder.metrics.service_failed.inc();
        recorder.keep(*flow);
    }
}

async fn push<K: NodeKernel + Firewall + 'static>(
    agent: Arc<Agent<K>>,
    recorder: Arc<FlowRecorder>,
) {
    let mut tick = tokio::time::interval(outbox::PUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        while let Some(batch) = recorder.outbox.take_batch(&recorder.node) {
            let full = batch.records.len() == outbox::MAX_BATCH;
            let sent =
                tokio::time::timeout(outbox::PUSH_TIMEOUT, agent.client.post_flows(&batch)).await;
            match sent {
                Ok(Ok(())) => {
                    if failing {
                        tracing::info!("the controller takes flow records again");
                    }
                    failing = false;
                }
                outcome => {
                    if !failing {
                        let error = match outcome {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {:?}", outbox::PUSH_TIMEOUT),
                        };
                        tracing::warn!(%error, "the controller did not take flow records; dropping them (counted) until it does");
                    }
                    failing = true;
                    recorder.metrics.dropped.inc_by(batch.records.len() as u64);
                    recorder.outbox.failed(&batch);
                    break;
                }
            }
            if !full {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
