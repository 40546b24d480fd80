//! The agent's own HTTPS API (`seamd --api-listen`, port [`seam_model::counters::AGENT_API_PORT`]
//! by default): TLS 1.3 with the node's certificate ([`seam_pki::server_config`]; clients check
//! that it names the node), client certificates of the Seam CA read as identities like the
//! controller reads them.
//!
//! Routes:
//! - `GET /healthz` (anyone): the process serves;
//! - `GET /readyz` (anyone): 200 once the agent has had its first full view of the controller
//!   and written the node's firewall table ([`Agent::readiness`]), else 503 with what it waits
//!   for;
//! - `GET /metrics` (reader, admin): Prometheus metrics ([`crate::metrics`]), OpenMetrics text;
//!   the drop counters in it are as of the scrape before (each scrape reads the kernel's
//!   counters in the background for the next one, never on its own path);
//! - `GET /v1/counters` (reader, admin): the packets and bytes of every rule of the node's
//!   `inet seam` table, by rule comment ([`seam_model::counters::NodeCounters`]); 503 before the
//!   agent is ready (the table it would read is not the node's policy yet).
//!
//! A client without a certificate gets 401 on the last two, a node or adapter 403: the counters
//! say which traffic each policy lets through, which is for the cluster's operators.
//!
//! Other parts of the agent that serve something here expose a `Router` of their own; [`router`]
//! merges them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use seam_dataplane::RuleCounters;
use seam_model::counters::{Counted, NodeCounters};
use seam_model::identity::{Identity, Role};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Agent;

/// Connections served at once; more are closed at accept (a scraper and a few CLIs need few).
const MAX_CONNECTIONS: usize = 64;
/// A TLS handshake slower than this is cut.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request whose header takes longer than this is cut (idle keep-alive connections too).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest read of the kernel's counters a request waits for.
const COUNTER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the node certificate's files are checked for a renewed certificate.
const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// Who is calling, as the TLS connection authenticated it (put in each request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCaller {
    /// No client certificate (or one that names no Seam identity).
    Anonymous,
    /// The identity of a verified client certificate.
    Known(Identity),
}

/// What the API's handlers share.
struct ApiState<K> {
    agent: Arc<Agent<K>>,
    registry: Registry,
    /// Set while a background read of the kernel's counters for the drop metrics runs.
    refreshing: Arc<std::sync::atomic::AtomicBool>,
}

/// The API's routes over `agent`, with `registry` served on `/metrics` (build it with
/// [`crate::metrics::registry`]). Requests must carry an [`ApiCaller`] (see [`serve`]); one that
/// does not is anonymous.
pub fn router<K: RuleCounters + 'static>(agent: Arc<Agent<K>>, registry: Registry) -> Router {
    let state = Arc::new(ApiState {
        agent,
        registry,
        refreshing: Arc::default(),
    });
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<K>))
        .route("/metrics", get(metrics::<K>))
        .route("/v1/counters", get(counters::<K>))
        .with_state(state)
}

/// `extra` (another part of the agent's routes, such as the flow records of
/// [`crate::flows::router`]) for readers and admins only, as `/metrics` and `/v1/counters` are.
pub fn for_readers(extra: Router) -> Router {
    extra.layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            let (parts, body) = request.into_parts();
            if let Some(refusal) = refused(&parts) {
                return refusal;
            }
            next.run(axum::extract::Request::from_parts(parts, body))
                .await
        },
    ))
}

async fn readyz<K>(State(state): State<Arc<ApiState<K>>>) -> Response {
    match state.agent.readiness() {
        Ok(()) => "ok\n".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// The refusal of a caller that is not a reader or an admin (401 without an identity, 403 with
/// another role); `None` lets it through.
fn refused(request: &axum::http::request::Parts) -> Option<Response> {
    let caller = request
        .extensions
        .get::<ApiCaller>()
        .cloned()
        .unwrap_or(ApiCaller::Anonymous);
    match caller {
        ApiCaller::Known(id) if matches!(id.role, Role::Reader | Role::Admin) => None,
        ApiCaller::Known(id) => Some(
            (
                StatusCode::FORBIDDEN,
                format!(
                    "{} {} may not read this node's metrics or counters (readers and admins may)\n",
                    id.role, id.name
                ),
            )
                .into_response(),
        ),
        ApiCaller::Anonymous => Some(
            (
                StatusCode::UNAUTHORIZED,
                "a client certificate of a reader or an admin is required\n",
            )
                .into_response(),
        ),
    }
}

/// Reads the kernel's counters, bounded in time; `Err` says why not.
async fn read_counters<K: RuleCounters>(
    agent: &Agent<K>,
) -> Result<std::collections::BTreeMap<String, seam_nft::listing::RuleCounter>, String> {
    match tokio::time::timeout(COUNTER_READ_TIMEOUT, agent.kernel.rule_counters()).await {
        Ok(Ok(counters)) => Ok(counters),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "reading the kernel's counters took more than {} s",
            COUNTER_READ_TIMEOUT.as_secs()
        )),
    }
}

async fn metrics<K: RuleCounters + 'static>(
    State(state): State<Arc<ApiState<K>>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    if let Some(refusal) = refused(&parts) {
        return refusal;
    }
    let agent = &state.agent;
    // The drop counters come from the kernel's listing of the table (`nft -j`), which costs
    // tens of milliseconds with hundreds of pods: it runs after the scrape, in the background,
    // and the next scrape shows it (one at a time). A scrape never waits for the kernel, and
    // the drops it shows are as of the scrape before.
    if !state
        .refreshing
        .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        let (agent, refreshing) = (agent.clone(), state.refreshing.clone());
        tokio::spawn(async move {
            match read_counters(&agent).await {
                Ok(counters) => agent.metrics.counters_read(&counters),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: reading the rule counters failed");
                    agent.metrics.counters_failed();
                }
            }
            refreshing.store(false, std::sync::atomic::Ordering::Release);
        });
    }
    let totals = agent.leases.lock().await.address_totals();
    agent.metrics.addresses(totals);
    agent.metrics.ready(agent.readiness().is_ok());
    let body = crate::metrics::encode(&state.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn counters<K: RuleCounters>(
    State(state): State<Arc<ApiState<K>>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    if let Some(refusal) = refused(&parts) {
        return refusal;
    }
    let agent = &state.agent;
    if let Err(why) = agent.readiness() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("agent not ready, no counters yet: {why}\n"),
        )
            .into_response();
    }
    match read_counters(agent).await {
        Ok(counters) => Json(NodeCounters {
            node: agent.config.node.clone(),
            rules: counters
                .into_iter()
                .map(|(comment, c)| {
                    (
                        comment,
                        Counted {
                            packets: c.packets,
                            bytes: c.bytes,
                        },
                    )
                })
                .collect(),
        })
        .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the rule counters failed: {e}\n"),
        )
            .into_response(),
    }
}

/// The TLS settings of the API: TLS 1.3, the node's certificate (`cert`, re-read on renewal by
/// [`serve`]), client certificates verified against the CA in `ca_pem` (optional: anonymous
/// clients reach the health routes).
pub fn tls_config(
    ca_pem: &str,
    cert: Arc<seam_pki::ReloadingCert>,
) -> Result<Arc<rustls::ServerConfig>, seam_pki::PkiError> {
    seam_pki::server_config(ca_pem, cert)
}

/// Serves `app` on `listener` over TLS (`tls`) until the task is dropped, each request with the
/// [`ApiCaller`] its connection authenticated. `cert`, when given, is re-read every 30 s so a
/// renewed node certificate is presented without a restart.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    cert: Option<Arc<seam_pki::ReloadingCert>>,
    app: Router,
) {
    if let Some(cert) = cert {
        tokio::spawn(reload(cert));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "agent API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "agent API: connection cap reached, closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "agent API: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let caller = caller_of(tls.get_ref().1, peer);
            serve_connection(tls, caller, app).await;
        });
    }
}

/// The caller a verified TLS connection names.
fn caller_of(conn: &rustls::ServerConnection, peer: SocketAddr) -> ApiCaller {
    let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
        return ApiCaller::Anonymous;
    };
    match seam_pki::identity_of(cert.as_ref()) {
        Ok(identity) => ApiCaller::Known(identity),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "agent API: client certificate names no Seam identity");
            ApiCaller::Anonymous
        }
    }
}

async fn serve_connection<S>(stream: S, caller: ApiCaller, app: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(caller.clone());
        let mut app = app.clone();
        // The router is always ready (axum's contract), so `call` needs no `poll_ready`.
        async move { tower::Service::call(&mut app, request).await }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "agent API: connection ended with an error");
    }
}

async fn reload(cert: Arc<seam_pki::ReloadingCert>) {
    let mut tick = tokio::time::interval(CERT_RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cert = cert.clone();
        match tokio::task::spawn_blocking(move || cert.reload()).await {
            Ok(Ok(true)) => tracing::info!("agent API: node certificate reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "agent API: node certificate not reloaded"),
            Err(e) => tracing::warn!(error = %e, "agent API: certificate reload task failed"),
        }
    }
}
