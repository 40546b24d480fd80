//! Flow records from every agent: `POST /v1/flows` (a node posts a [`FlowBatch`] of its own
//! records) and `GET /v1/flows` (readers: NDJSON, one [`FlowRecord`] per line, oldest first,
//! filtered by a [`FlowFilter`]; with `follow=true` the stream goes on with new records).
//!
//! Held in memory only ([`ring`]): bounded per node and in all, never in the store. Taking a
//! batch in never waits for a reader: followers get records through a broadcast channel, and
//! one that falls more than [`FlowLimits::follow_buffer`] records behind skips to the newest
//! and is sent a [`FlowsLagged`] line saying how many it missed. A followed stream counts
//! against its client's watch streams (`--max-watches-per-client`) and sends an empty line as
//! heartbeat when idle, as the watch does.
//!
//! Replicas: only the leader (or a single controller) takes and serves flows; a standby answers
//! 503 `NotLeader`, so seam-client moves agents and readers on to the leader (design.md).

mod metrics;
mod ring;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use seam_model::flow::{
    FlowBatch, FlowFilter, FlowsLagged, PolicyFilter, DEFAULT_FLOW_LIMIT, FLOWS_DROPPED_HEADER,
};
use seam_model::{FieldError, ObjectKind, ValidationError};
use tokio::sync::broadcast;

pub use metrics::FlowMetrics;
pub use ring::{FlowLimits, DEFAULT_FLOWS_PER_NODE, DEFAULT_FLOWS_TOTAL, DEFAULT_FOLLOW_BUFFER};

use crate::controller::{Controller, Role};
use crate::error::{Error, Result};
use crate::http::HEARTBEAT_INTERVAL;
use ring::{Held, Rings};

/// The flow routes, merged into [`crate::router`].
pub(crate) fn routes() -> Router<Controller> {
    Router::new().route("/v1/flows", get(get_flows).post(post_flows))
}

/// The controller's flow records: the rings, the channel followers read, the metrics.
#[derive(Debug)]
pub(crate) struct Flows {
    state: Mutex<Shared>,
    metrics: FlowMetrics,
}

#[derive(Debug)]
struct Shared {
    rings: Rings,
    live: broadcast::Sender<Arc<Held>>,
}

impl Shared {
    fn new(limits: FlowLimits) -> Shared {
        let rings = Rings::new(limits);
        let (live, _) = broadcast::channel(rings.limits().follow_buffer);
        Shared { rings, live }
    }
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            state: Mutex::new(Shared::new(FlowLimits::default())),
            metrics: FlowMetrics::default(),
        }
    }
}

impl Flows {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the limits; records held so far are dropped (set it at start).
    pub(crate) fn set_limits(&self, limits: FlowLimits) {
        *self.lock() = Shared::new(limits);
        self.metrics.held.set(0);
    }

    pub(crate) fn metrics(&self) -> &FlowMetrics {
        &self.metrics
    }

    /// Takes a batch in: its records into their nodes' rings and to every follower, its
    /// `dropped` counted against `node`. Never waits for a follower.
    pub(crate) fn ingest(&self, node: &str, batch: FlowBatch) {
        let mut state = self.lock();
        state.rings.note_dropped(node, batch.dropped);
        let (held, pushed) = state.rings.push(batch.records);
        for h in held {
            // An error only means nobody follows right now.
            let _ = state.live.send(h);
        }
        self.metrics.received.inc_by(pushed.received);
        self.metrics.evicted.inc_by(pushed.evicted);
        self.metrics.agent_dropped.inc_by(batch.dropped);
        self.metrics
            .held
            .set(i64::try_from(state.rings.held()).unwrap_or(i64::MAX));
    }

    /// The records held that pass `filter` (the newest `limit`, oldest first), what agents
    /// dropped, and, for a follower, the channel of every record that arrives after them (taken
    /// under the same lock, so nothing is sent twice or missed in between).
    fn read(&self, filter: &FlowFilter, now_ms: u64) -> Read {
        let state = self.lock();
        let limit = filter.limit.unwrap_or(DEFAULT_FLOW_LIMIT);
        Read {
            held: state.rings.select(filter, now_ms, limit),
            agent_dropped: state.rings.agent_dropped(),
            live: filter.follow.then(|| state.live.subscribe()),
        }
    }
}

/// What [`Flows::read`] found.
struct Read {
    held: Vec<Arc<Held>>,
    agent_dropped: u64,
    live: Option<broadcast::Receiver<Arc<Held>>>,
}

impl Controller {
    /// The same controller keeping flow records within `limits` (default [`FlowLimits`]).
    pub fn with_flow_limits(self, limits: FlowLimits) -> Self {
        self.inner.flows.set_limits(limits);
        self
    }

    /// The flow metrics, for the controller's metrics registry.
    pub fn flow_metrics(&self) -> &FlowMetrics {
        self.inner.flows.metrics()
    }

    /// Flows are taken and served by the leader only: a standby sends callers on.
    fn refuse_standby(&self) -> Result<()> {
        match self.role() {
            Role::Standby { leader } => Err(Error::NotLeader { leader }),
            _ => Ok(()),
        }
    }

    /// Refuses a policy filter that names no stored policy object: a typo would otherwise
    /// look like "no flows".
    async fn check_policy_exists(&self, filter: &PolicyFilter) -> Result<()> {
        let stored = self.list_json(ObjectKind::Policy).await?;
        let found = stored.iter().any(|object| {
            let kind = object.get("kind").and_then(|v| v.as_str()).unwrap_or("");
            let meta = object.get("metadata");
            let name = meta
                .and_then(|m| m.get("name"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let namespace = meta
                .and_then(|m| m.get("namespace"))
                .and_then(|v| v.as_str());
            filter.matches_object(kind, namespace, name)
        });
        if found {
            Ok(())
        } else {
            Err(Error::UnknownPolicy {
                policy: filter.to_string(),
            })
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `POST /v1/flows`: a batch of one node's records (204). A node posts only its own records:
/// one record of another node refuses the whole batch (403), nothing kept.
async fn post_flows(State(c): State<Controller>, body: Bytes) -> Result<StatusCode> {
    c.refuse_standby()?;
    if let Some(serving) = crate::caller::serving() {
        c.limits().admit_flows(&serving.caller)?;
    }
    let batch: FlowBatch = crate::http::decode_body("FlowBatch", &body)?;
    let mut errors = Vec::new();
    for (i, record) in batch.records.iter().enumerate() {
        if !seam_model::is_valid_name(&record.node) {
            errors.push(FieldError {
                path: format!("records[{i}].node"),
                message: format!("{:?} is not a node name", record.node),
            });
        }
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(ValidationError {
            kind: "FlowBatch",
            name: String::new(),
            errors,
        }));
    }
    for record in &batch.records {
        crate::authz::check_own(&record.node, || {
            format!("post flow records of node {}", record.node)
        })?;
    }
    // A node's batch (and its `dropped`) is its own; an administrator's is counted against the
    // node of its first record.
    let node = crate::authz::calling_node()
        .or_else(|| batch.records.first().map(|r| r.node.clone()))
        .unwrap_or_default();
    c.inner.flows.ingest(&node, batch);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/flows?from=&to=&node=&verdict=&policy=&since=&limit=&follow=true`.
async fn get_flows(State(c): State<Controller>, RawQuery(query): RawQuery) -> Result<Response> {
    let filter = FlowFilter::from_query(query.as_deref().unwrap_or(""))?;
    c.refuse_standby()?;
    if let Some(policy) = &filter.policy {
        c.check_policy_exists(policy).await?;
    }
    let slot = if filter.follow {
        let caller = crate::caller::serving().map_or(crate::Caller::Anonymous, |s| s.caller);
        Some(c.limits().watch_slot(&caller)?)
    } else {
        None
    };
    let Read {
        held,
        agent_dropped,
        live,
    } = c.inner.flows.read(&filter, now_ms());
    let mut backlog = Vec::new();
    for h in &held {
        backlog.extend_from_slice(h.line());
    }
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        ),
        (
            header::HeaderName::from_static(FLOWS_DROPPED_HEADER),
            HeaderValue::from(agent_dropped),
        ),
    ];
    let Some(live) = live else {
        return Ok((headers, backlog).into_response());
    };
    let metrics = c.flow_metrics().clone();
    metrics.followers.inc();
    let follow = Follow {
        _slot: slot,
        _follower: Follower(metrics.clone()),
        metrics,
        live,
        filter,
        stop: c.stopped(),
        heartbeat: tokio::time::interval_at(
            tokio::time::Instant::now() + HEARTBEAT_INTERVAL,
            HEARTBEAT_INTERVAL,
        ),
    };
    let first =
        futures::stream::once(
            async move { Ok::<_, std::convert::Infallible>(Bytes::from(backlog)) },
        );
    let stream = futures::StreamExt::chain(first, follow.into_stream());
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// The most bytes of records one chunk of a followed stream carries.
const MAX_CHUNK: usize = 64 * 1024;

/// Counts an open follower until dropped.
struct Follower(FlowMetrics);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.followers.dec();
    }
}

/// A followed stream after its backlog.
struct Follow {
    _slot: Option<crate::limits::WatchSlot>,
    _follower: Follower,
    metrics: FlowMetrics,
    live: broadcast::Receiver<Arc<Held>>,
    filter: FlowFilter,
    stop: tokio::sync::watch::Receiver<bool>,
    heartbeat: tokio::time::Interval,
}

impl Follow {
    fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        futures::stream::unfold(self, |mut st| async move {
            let line = st.next_line().await?;
            Some((Ok(line), st))
        })
    }

    /// The next lines: the matching records that have arrived (up to [`MAX_CHUNK`] bytes in
    /// one chunk, so a busy stream is not one write per record), a [`FlowsLagged`] notice, or a
    /// heartbeat; `None` ends the stream (shutdown).
    async fn next_line(&mut self) -> Option<Bytes> {
        let mut out = Vec::new();
        loop {
            // `recv`, `tick` and `wait_for` are cancel-safe.
            let received = tokio::select! {
                received = self.live.recv() => received,
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(b"\n")),
                _ = self.stop.wait_for(|stopped| *stopped) => return None,
            };
            match received {
                Err(broadcast::error::RecvError::Closed) => return None,
                other => self.add(other, &mut out),
            }
            // Whatever else is already there goes in the same chunk.
            while out.len() < MAX_CHUNK {
                match self.live.try_recv() {
                    Ok(held) => self.add(Ok(held), &mut out),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        self.add(Err(broadcast::error::RecvError::Lagged(n)), &mut out)
                    }
                    Err(_) => break,
                }
            }
            if !out.is_empty() {
                self.heartbeat.reset();
                return Some(Bytes::from(out));
            }
        }
    }

    /// Appends what `received` says: a record that matches, or the notice of a lag.
    fn add(&self, received: Result<Arc<Held>, broadcast::error::RecvError>, out: &mut Vec<u8>) {
        match received {
            Ok(held) => {
                if self.filter.matches(&held.record, now_ms()) {
                    out.extend_from_slice(held.line());
                }
            }
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                self.metrics.follower_lags.inc();
                self.metrics.follower_skipped.inc_by(skipped);
                tracing::debug!(skipped, "a flow follower fell behind");
                if serde_json::to_writer(&mut *out, &FlowsLagged { lagged: skipped }).is_ok() {
                    out.push(b'\n');
                }
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }
}
