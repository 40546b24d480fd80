//! The adapter's Prometheus metrics ([`AdapterMetrics`]: watch events by kind, writes to the
//! controller by outcome, watch failures by source), its readiness (every watched kind listed
//! once and the controller's snapshot read), and the small HTTP server that serves them with
//! `/healthz` and `/readyz` ([`router`], `seam-k8s --metrics-listen`). [`registry`] is the one
//! place where the adapter's metrics are registered.
//!
//! Plain HTTP: kubelet probes it, and the metrics name kinds and counts only (no object, no
//! address). Labels are bounded: a kind is one of the watched kinds.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::resource::WatchedKind;

/// What a watch delivered.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WatchEvent {
    /// A full list (at start, and after the API server forgot the watch's revision).
    relist,
    /// An object added or changed.
    apply,
    /// An object deleted.
    delete,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: String,
    event: WatchEvent,
}

/// How a write to the controller ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WriteResult {
    /// The controller holds it.
    ok,
    /// Refused for good (until the object changes).
    rejected,
    /// Refused for now (existing state): retried later.
    retry,
    /// The controller could not be reached: retried with backoff.
    unavailable,
}

/// What was written.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WriteOp {
    /// Created or replaced.
    put,
    /// Deleted.
    delete,
    /// A pod's labels onto its endpoint.
    relabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    op: WriteOp,
    result: WriteResult,
}

/// Where a watch failed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WatchSource {
    /// The Kubernetes API server.
    kubernetes,
    /// The Seam controller.
    controller,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    source: WatchSource,
}

/// What the adapter counts, and what its readiness waits for. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AdapterMetrics {
    events: Family<EventLabels, Counter>,
    writes: Family<WriteLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    listed: Arc<Mutex<BTreeSet<WatchedKind>>>,
    watched: Arc<AtomicUsize>,
    controller_read: Arc<AtomicBool>,
}

impl AdapterMetrics {
    /// Registers every metric under `registry` (the `seam` prefix: [`registry`]).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("k8s");
        r.register(
            "watch_events",
            "Events the Kubernetes watches delivered, by kind and event",
            self.events.clone(),
        );
        r.register(
            "writes",
            "Writes to the controller, by operation and result",
            self.writes.clone(),
        );
        r.register(
            "watch_errors",
            "Watch failures (each retried with backoff), by source",
            self.errors.clone(),
        );
    }

    /// How many kinds the adapter watches (readiness waits for a list of each).
    pub fn watching(&self, kinds: usize) {
        self.watched.store(kinds, Ordering::Release);
    }

    /// A watch delivered `event` for `kind`.
    pub fn event(&self, kind: WatchedKind, event: WatchEvent) {
        if event == WatchEvent::relist {
            self.listed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(kind);
        }
        self.events
            .get_or_create(&EventLabels {
                kind: kind.to_string(),
                event,
            })
            .inc();
    }

    /// The controller's snapshot was read.
    pub fn controller_read(&self) {
        self.controller_read.store(true, Ordering::Release);
    }

    /// A write ended with `result`.
    pub fn write(&self, op: WriteOp, result: WriteResult) {
        self.writes.get_or_create(&WriteLabels { op, result }).inc();
    }

    /// A watch failed.
    pub fn watch_failed(&self, source: WatchSource) {
        self.errors.get_or_create(&ErrorLabels { source }).inc();
    }

    /// Ready once the controller's snapshot was read and every watched kind listed; `Err` says
    /// what is still awaited.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.controller_read.load(Ordering::Acquire) {
            return Err("waiting for the controller's snapshot".into());
        }
        let listed = self.listed.lock().unwrap_or_else(|p| p.into_inner()).len();
        let watched = self.watched.load(Ordering::Acquire);
        if listed < watched {
            return Err(format!("{listed} of {watched} watched kinds listed"));
        }
        Ok(())
    }
}

/// The adapter's registry with the `seam_` prefix: every metric `GET /metrics` serves. The one
/// place to wire in another part's metrics.
pub fn registry(metrics: &AdapterMetrics) -> Registry {
    let mut registry = Registry::with_prefix("seam");
    metrics.register(&mut registry);
    registry
}

/// `/healthz` (the process serves), `/readyz` ([`AdapterMetrics::readiness`]) and `/metrics`.
pub fn router(metrics: AdapterMetrics) -> axum::Router {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let registry = Arc::new(registry(&metrics));
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = metrics.readiness();
                async move {
                    match ready {
                        Ok(()) => "ok\n".into_response(),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let mut body = String::new();
                if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry) {
                    tracing::warn!(error = %e, "encoding metrics failed");
                }
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &AdapterMetrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry(m)).unwrap();
        out
    }

    #[test]
    fn events_and_writes_move_their_counters_and_readiness_waits_for_every_list() {
        let m = AdapterMetrics::default();
        m.watching(2);
        assert!(m.readiness().is_err());
        m.controller_read();
        m.event(WatchedKind::Namespace, WatchEvent::relist);
        assert_eq!(
            m.readiness(),
            Err("1 of 2 watched kinds listed".to_string())
        );
        m.event(WatchedKind::NetworkPolicy, WatchEvent::relist);
        m.event(WatchedKind::NetworkPolicy, WatchEvent::apply);
        assert_eq!(m.readiness(), Ok(()));
        m.write(WriteOp::put, WriteResult::ok);
        m.write(WriteOp::put, WriteResult::unavailable);
        m.watch_failed(WatchSource::controller);
        let text = scrape(&m);
        for line in [
            r#"seam_k8s_watch_events_total{kind="NetworkPolicy",event="apply"} 1"#,
            r#"seam_k8s_writes_total{op="put",result="ok"} 1"#,
            r#"seam_k8s_writes_total{op="put",result="unavailable"} 1"#,
            r#"seam_k8s_watch_errors_total{source="controller"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}
