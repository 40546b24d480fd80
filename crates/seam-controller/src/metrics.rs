//! The controller's Prometheus metrics ([`ControllerMetrics`]): API requests by route template,
//! method and status code, store request latency by operation, how far behind the newest
//! revision the watch streams send, and whether this replica leads. [`registry`] builds what
//! `GET /metrics` encodes (readers and admins only: [`crate::authz`]); it is the one place where
//! every metric of the controller is registered.
//!
//! Labels are bounded: a route is its template (`/v1/nodes/{*name}`, never the name), a method
//! one of five, a store operation one of three.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use seam_store::Datastore;

use crate::controller::{Controller, Role};

/// A store operation.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum StoreOp {
    /// One key.
    get,
    /// A prefix (lists, snapshots).
    list,
    /// A transaction (every write).
    txn,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Outcome {
    ok,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    op: StoreOp,
    result: Outcome,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
enum HttpMethod {
    GET,
    PUT,
    POST,
    DELETE,
    OTHER,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: HttpMethod,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: HttpMethod,
}

/// Latency buckets from 100 µs to about 13 s (×2 each).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// What the controller counts. Cheap to clone (handles to shared atomics).
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    store: Family<StoreLabels, Histogram>,
    watch_lag: Histogram,
    watch_streams: Gauge<i64, AtomicI64>,
    /// The newest store revision this controller has seen (its commits and its watch streams).
    newest: Arc<AtomicU64>,
    leader: Gauge<i64, AtomicI64>,
    store_revision: Gauge<i64, AtomicI64>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        ControllerMetrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            store: Family::new_with_constructor(latency_histogram),
            watch_lag: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            watch_streams: Gauge::default(),
            newest: Arc::default(),
            leader: Gauge::default(),
            store_revision: Gauge::default(),
        }
    }
}

/// Counts one open watch stream while it lives.
#[derive(Debug)]
pub(crate) struct WatchStream {
    streams: Gauge<i64, AtomicI64>,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.streams.dec();
    }
}

impl ControllerMetrics {
    /// Registers every metric under `registry` (the `seam` prefix: [`registry`]).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("controller");
        r.register(
            "api_requests",
            "API requests answered, by route template, method and status code",
            self.requests.clone(),
        );
        r.register_with_unit(
            "api_request_duration",
            "Time to answer an API request (to its first byte for a watch), by route template and method",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        r.register_with_unit(
            "store_request_duration",
            "Time of a store request, by operation and result",
            Unit::Seconds,
            self.store.clone(),
        );
        r.register(
            "watch_lag_revisions",
            "For each event a watch stream sends: how many revisions it is behind the newest this controller has seen",
            self.watch_lag.clone(),
        );
        r.register(
            "watch_streams",
            "Watch streams open",
            self.watch_streams.clone(),
        );
        r.register(
            "leader",
            "1 while this controller may write (a single controller, or the elected leader), 0 as a standby",
            self.leader.clone(),
        );
        r.register(
            "store_revision",
            "The store's revision when last scraped",
            self.store_revision.clone(),
        );
    }

    /// Records one store request.
    pub(crate) fn observe_store(&self, op: StoreOp, ok: bool, took: Duration) {
        let result = if ok { Outcome::ok } else { Outcome::error };
        self.store
            .get_or_create(&StoreLabels { op, result })
            .observe(took.as_secs_f64());
    }

    /// A revision this controller saw committed or streamed.
    pub(crate) fn saw_revision(&self, revision: u64) {
        self.newest.fetch_max(revision, Ordering::Relaxed);
    }

    /// A watch stream sends an event of `revision`.
    pub(crate) fn watch_sent(&self, revision: u64) {
        let newest = self
            .newest
            .fetch_max(revision, Ordering::Relaxed)
            .max(revision);
        self.watch_lag
            .observe(newest.saturating_sub(revision) as f64);
    }

    /// A watch stream opens; it is counted until the value is dropped.
    pub(crate) fn watch_opened(&self) -> WatchStream {
        self.watch_streams.inc();
        WatchStream {
            streams: self.watch_streams.clone(),
        }
    }

    fn request(&self, route: String, method: &Method, code: u16, took: Duration) {
        let method = match *method {
            Method::GET | Method::HEAD => HttpMethod::GET,
            Method::PUT => HttpMethod::PUT,
            Method::POST => HttpMethod::POST,
            Method::DELETE => HttpMethod::DELETE,
            _ => HttpMethod::OTHER,
        };
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                code,
            })
            .inc();
    }
}

/// Times `f`, a store request, as `op`.
pub(crate) async fn timed<T, E>(
    controller: &Controller,
    op: StoreOp,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = f.await;
    controller
        .metrics()
        .observe_store(op, result.is_ok(), started.elapsed());
    result
}

/// Middleware: counts every request by its route template (`unmatched` for no route).
pub(crate) async fn track(
    State(controller): State<Controller>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    controller.metrics().request(
        route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The controller's registry with the `seam_` prefix: every metric `GET /metrics` serves. The
/// one place to wire in another part's metrics (`x.register(&mut registry)`).
pub fn registry(controller: &Controller) -> Registry {
    let mut registry = Registry::with_prefix("seam");
    controller.metrics().register(&mut registry);
    controller.flow_metrics().register(&mut registry);
    registry
}

/// How long readiness and a scrape wait for the store.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the controller is ready to serve (`GET /readyz`): its store answers (a revision read
/// within 2 s) and, as a replica, it knows its role (it leads, or it stands by and knows the
/// leader). `Err` says why not.
pub async fn readiness(controller: &Controller) -> Result<u64, String> {
    let store = controller.store();
    let revision = match tokio::time::timeout(
        STORE_CHECK_TIMEOUT,
        timed(controller, StoreOp::get, store.revision()),
    )
    .await
    {
        Ok(Ok(revision)) => revision,
        Ok(Err(e)) => return Err(format!("the store is not reachable: {e}")),
        Err(_) => {
            return Err(format!(
                "the store did not answer within {} s",
                STORE_CHECK_TIMEOUT.as_secs()
            ))
        }
    };
    if controller.replica().is_some() {
        match controller.role() {
            Role::Leader { .. } | Role::Standby { leader: Some(_) } => {}
            _ => return Err("this replica does not know its role yet (no leader known)".into()),
        }
    }
    Ok(revision)
}

/// `GET /readyz`: 200 `ok`, or 503 with why not.
pub(crate) async fn readyz(State(controller): State<Controller>) -> Response {
    match readiness(&controller).await {
        Ok(_) => "ok\n".into_response(),
        Err(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// `GET /metrics`: what is read rather than counted (role, store revision) brought up to date,
/// then every metric as OpenMetrics text.
pub(crate) async fn metrics(State(controller): State<Controller>) -> Response {
    let m = controller.metrics();
    let leads = matches!(controller.role(), Role::Single | Role::Leader { .. });
    m.leader.set(i64::from(leads));
    if let Ok(Ok(revision)) = tokio::time::timeout(
        STORE_CHECK_TIMEOUT,
        timed(&controller, StoreOp::get, controller.store().revision()),
    )
    .await
    {
        m.store_revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
        m.saw_revision(revision);
    }
    let mut body = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry(&controller)) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn scrape(m: &ControllerMetrics) -> String {
        let mut r = Registry::with_prefix("seam");
        m.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn store_requests_requests_and_watch_lag_move_their_metrics() {
        let m = ControllerMetrics::default();
        m.observe_store(StoreOp::txn, true, Duration::from_millis(2));
        m.observe_store(StoreOp::txn, false, Duration::from_millis(2));
        m.request(
            "/v1/nodes/{*name}".into(),
            &Method::PUT,
            201,
            Duration::from_millis(1),
        );
        m.saw_revision(10);
        m.watch_sent(7);
        let stream = m.watch_opened();
        let text = scrape(&m);
        assert_eq!(
            sample(
                &text,
                r#"seam_controller_store_request_duration_seconds_count{op="txn",result="error"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"seam_controller_api_requests_total{route="/v1/nodes/{*name}",method="PUT",code="201"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "seam_controller_watch_lag_revisions_sum"),
            Some(3.0)
        );
        assert_eq!(sample(&text, "seam_controller_watch_streams"), Some(1.0));
        drop(stream);
        assert_eq!(
            sample(&scrape(&m), "seam_controller_watch_streams"),
            Some(0.0)
        );
    }
}
