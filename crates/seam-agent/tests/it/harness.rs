//! Shared set-up: an in-process controller on a Unix socket (memory store), agents on fake
//! kernels, and a client that speaks the real agent socket protocol.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use seam_agent::{Agent, AgentConfig, Running};
use seam_client::ControllerClient;
use seam_controller::{ControllerConfig, Listener};
use seam_dataplane::fake::FakeKernel;
use seam_dataplane::{NodeKernel, Underlay};
use seam_model::agent_rpc::{
    AgentOp, AgentReply, AgentRequest, AttachResult, Attachment, AttachmentId, AttachmentKey,
    PROTOCOL_VERSION,
};
use seam_model::{Endpoint, NodeRole, TransitEncap};
use seam_store::AnyStore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

/// The CNI network name every test uses unless it says otherwise.
pub const NETWORK: &str = "seam";

/// How long any "eventually" condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// A controller serving on a Unix socket until dropped.
pub struct Controller {
    /// Its socket.
    pub sock: PathBuf,
    /// A client for assertions.
    pub client: ControllerClient,
    stop: Option<oneshot::Sender<()>>,
}

impl Controller {
    /// Starts a controller (memory store) on `sock` and waits until it answers.
    pub async fn start(sock: &Path, config: ControllerConfig) -> Controller {
        Controller::start_with_store(sock, config, AnyStore::memory()).await
    }

    /// Starts a controller over `store` (the caller keeps a clone to write into it directly,
    /// past the API) on `sock` and waits until it answers.
    pub async fn start_with_store(
        sock: &Path,
        config: ControllerConfig,
        store: AnyStore,
    ) -> Controller {
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = vec![Listener::Unix(sock.to_path_buf())];
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = seam_controller::serve(config, store, listeners, shutdown).await {
                panic!("controller failed: {e}");
            }
        });
        let client = ControllerClient::new(&endpoint(sock)).unwrap();
        eventually("controller answers", || async {
            client.healthz().await.is_ok()
        })
        .await;
        Controller {
            sock: sock.to_path_buf(),
            client,
            stop: Some(stop),
        }
    }

    /// Every endpoint on the controller, by name.
    pub async fn endpoints(&self) -> Vec<Endpoint> {
        self.client.list_endpoints().await.unwrap()
    }

    /// The endpoint called `name`, if the controller has it.
    pub async fn endpoint(&self, name: &str) -> Option<Endpoint> {
        self.endpoints().await.into_iter().find(|e| e.name == name)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `unix:<path>`.
pub fn endpoint(sock: &Path) -> String {
    format!("unix:{}", sock.display())
}

/// The agent configuration the brief prescribes, for node `node` with underlay address `ip`.
pub fn agent_config(dir: &Path, node: &str, ip: Ipv4Addr, controller: &Path) -> AgentConfig {
    AgentConfig {
        node: node.to_string(),
        role: NodeRole::Worker,
        underlay: Underlay {
            ifname: "eth0".into(),
            ip,
            prefix_len: 15,
        },
        transit_encap: TransitEncap::CrossSubnet,
        underlay_mac: None,
        segment_encap: Default::default(),
        external_interface: None,
        mtu: 1450,
        socket: dir.join(format!("{node}-seamd.sock")),
        controller: endpoint(controller),
        quarantine_ms: 60_000,
        block_release_after_ms: 300_000,
        reassert_interval: seam_agent::DEFAULT_REASSERT_INTERVAL,
        serves_lb_addresses: true,
    }
}

/// The standard set-up: a temp dir, a per-namespace controller, and agent `n1` on a fake kernel.
pub struct Cluster {
    /// Holds every socket; removed on drop.
    pub dir: tempfile::TempDir,
    /// The controller.
    pub ctl: Controller,
    /// Agent `n1`.
    pub n1: Running<FakeKernel>,
    /// Its CNI socket.
    pub sock: PathBuf,
}

impl Cluster {
    /// Default controller configuration.
    pub async fn start() -> Cluster {
        Cluster::with_config(ControllerConfig::default()).await
    }

    /// A controller with `config`, and `n1` once it reports ready.
    pub async fn with_config(config: ControllerConfig) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ctl = Controller::start(&dir.path().join("ctl.sock"), config).await;
        let cfg = agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl.sock);
        let sock = cfg.socket.clone();
        let n1 = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
            .await
            .unwrap();
        wait_ready(&sock).await;
        Cluster { dir, ctl, n1, sock }
    }

    /// The fake kernel of `n1`.
    pub fn kernel(&self) -> &FakeKernel {
        &self.n1.agent.kernel
    }
}

/// Sends one request line and reads one reply line, as `seam-cni` does.
pub async fn call(sock: &Path, op: AgentOp) -> AgentReply {
    let mut line = serde_json::to_vec(&AgentRequest {
        protocol: PROTOCOL_VERSION,
        op,
    })
    .unwrap();
    line.push(b'\n');
    let reply = raw_call(sock, &line).await;
    serde_json::from_str(&reply)
        .unwrap_or_else(|e| panic!("reply is not an AgentReply ({e}): {reply:?}"))
}

/// Sends `bytes`, closes the write half and returns the one reply line.
pub async fn raw_call(sock: &Path, bytes: &[u8]) -> String {
    let io = async {
        let mut stream = connect(sock).await?;
        stream.write_all(bytes).await?;
        stream.shutdown().await?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    match tokio::time::timeout(PATIENCE, io).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => panic!("agent socket {}: {e}", sock.display()),
        Err(_) => panic!("agent socket {} did not answer", sock.display()),
    }
}

/// Connects, waiting while the listen backlog is full (a non-blocking connect to a busy Unix
/// socket fails with EAGAIN where the plug-in's blocking connect would wait).
async fn connect(sock: &Path) -> std::io::Result<UnixStream> {
    loop {
        match UnixStream::connect(sock).await {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => return other,
        }
    }
}

/// Polls STATUS until the agent says it can serve ADD.
pub async fn wait_ready(sock: &Path) {
    eventually("agent reports ready", || async {
        sock.exists() && call(sock, status()).await == AgentReply::Done
    })
    .await;
}

/// Waits until `check` holds, failing the test after a while.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An ADD of pod `pod` in namespace `ns` (container id = pod name, interface eth0).
pub fn pod(ns: &str, pod: &str) -> Attachment {
    Attachment {
        network: NETWORK.into(),
        key: AttachmentKey {
            container_id: pod.into(),
            ifname: "eth0".into(),
        },
        netns: format!("/var/run/netns/{pod}"),
        namespace: ns.into(),
        pod_name: Some(pod.into()),
        segment: None,
        labels: Default::default(),
        ports: Vec::new(),
    }
}

/// STATUS.
pub fn status() -> AgentOp {
    AgentOp::Status {
        network: NETWORK.into(),
    }
}

/// ADD that must succeed.
pub async fn add(sock: &Path, a: &Attachment) -> AttachResult {
    match call(sock, AgentOp::Add(a.clone())).await {
        AgentReply::Attached(r) => r,
        other => panic!("ADD {} failed: {other:?}", a.key.container_id),
    }
}

/// DEL of `container_id`/eth0 in [`NETWORK`].
pub async fn del(sock: &Path, container_id: &str) -> AgentReply {
    call(
        sock,
        AgentOp::Del(AttachmentId {
            network: NETWORK.into(),
            key: AttachmentKey {
                container_id: container_id.into(),
                ifname: "eth0".into(),
            },
            netns: String::new(),
        }),
    )
    .await
}

/// The host port name of `container_id`/eth0 in [`NETWORK`].
pub fn port(container_id: &str) -> String {
    seam_dataplane::host_ifname(NETWORK, container_id, "eth0")
}

/// Every lease of an agent as (container id, ifname) → (ip, bound?).
pub async fn leases<K: NodeKernel + 'static>(
    running: &Running<K>,
) -> std::collections::BTreeMap<String, (Ipv4Addr, bool)> {
    running
        .agent
        .leases
        .lock()
        .await
        .leases()
        .map(|l| {
            (
                l.key.container_id.clone(),
                (l.ip, l.state == seam_ipam::LeaseState::Bound),
            )
        })
        .collect()
}

/// What a [`GatedController`] answers `PUT /v1/endpoints/…` with instead of the controller:
/// status, reason and message of the error body, after a delay; `None` lets the request
/// through.
pub type Gate = std::sync::Arc<std::sync::Mutex<Option<(u16, &'static str, String, Duration)>>>;

/// A real controller (memory store) whose endpoint writes the test can answer itself: a newer
/// controller with a rule this agent cannot check, a conflict, a standby with no leader.
pub struct GatedController {
    /// Its socket.
    pub sock: PathBuf,
    /// A client for assertions.
    pub client: ControllerClient,
    /// The answer to endpoint writes.
    pub gate: Gate,
    /// How long block releases (`DELETE /v1/blocks/…`) are held before they go through;
    /// `None` lets them through at once.
    pub release_hang: std::sync::Arc<std::sync::Mutex<Option<Duration>>>,
    /// How many block releases have been held so far.
    pub releases_held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

/// What the middleware of a [`GatedController`] holds.
#[derive(Clone)]
struct Gates {
    endpoints: Gate,
    release_hang: std::sync::Arc<std::sync::Mutex<Option<Duration>>>,
    releases_held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl GatedController {
    /// Starts it on `sock`, letting everything through, and waits until it answers.
    pub async fn start(sock: &Path) -> GatedController {
        let controller =
            seam_controller::Controller::new(ControllerConfig::default(), AnyStore::memory())
                .unwrap();
        let gates = Gates {
            endpoints: Gate::default(),
            release_hang: Default::default(),
            releases_held: Default::default(),
        };
        let app = seam_controller::router_as(
            controller,
            seam_controller::Caller::Known(seam_model::Identity::local_admin()),
        )
        .layer(axum::middleware::from_fn_with_state(gates.clone(), gated));
        let listener = tokio::net::UnixListener::bind(sock).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        let client = ControllerClient::new(&endpoint(sock)).unwrap();
        eventually("controller answers", || async {
            client.healthz().await.is_ok()
        })
        .await;
        GatedController {
            sock: sock.to_path_buf(),
            client,
            gate: gates.endpoints,
            release_hang: gates.release_hang,
            releases_held: gates.releases_held,
            stop: Some(stop),
        }
    }

    /// Answers endpoint writes with `status` from now on (`None`: lets them through).
    pub fn answer(&self, answer: Option<(u16, &'static str, &str)>) {
        *self.gate.lock().unwrap() = answer.map(|(s, r, m)| (s, r, m.to_string(), Duration::ZERO));
    }

    /// Holds endpoint writes for `delay`, then answers 503 (a controller that hangs).
    pub fn hang(&self, delay: Duration) {
        *self.gate.lock().unwrap() = Some((503, "Unavailable", "hung".to_string(), delay));
    }

    /// Holds block releases for `delay` before letting them through (a controller that hangs
    /// on them); `None` lets them through at once.
    pub fn hang_releases(&self, delay: Option<Duration>) {
        *self.release_hang.lock().unwrap() = delay;
    }

    /// The endpoint called `name`, if the controller has it.
    pub async fn endpoint(&self, name: &str) -> Option<Endpoint> {
        let all = self.client.list_endpoints().await.unwrap();
        all.into_iter().find(|e| e.name == name)
    }
}

impl Drop for GatedController {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn gated(
    axum::extract::State(gates): axum::extract::State<Gates>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if request.method() == axum::http::Method::DELETE
        && request.uri().path().starts_with("/v1/blocks/")
    {
        let hang = *gates.release_hang.lock().unwrap();
        if let Some(delay) = hang {
            gates
                .releases_held
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(delay).await;
        }
        return next.run(request).await;
    }
    let answer = gates.endpoints.lock().unwrap().clone();
    match answer {
        Some((status, reason, message, delay))
            if request.method() == axum::http::Method::PUT
                && request.uri().path().starts_with("/v1/endpoints/") =>
        {
            tokio::time::sleep(delay).await;
            let body = seam_model::ApiError {
                reason: reason.to_string(),
                message,
            };
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                axum::Json(body),
            )
                .into_response()
        }
        _ => next.run(request).await,
    }
}
