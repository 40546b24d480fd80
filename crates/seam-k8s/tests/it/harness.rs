//! An in-process controller on a Unix socket, the adapter between it and the stand-in API
//! server, object builders and `eventually`.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use seam_client::ControllerClient;
use seam_controller::{ControllerConfig, Listener, ServeError};
use seam_k8s::{Adapter, ViewHandle};
use seam_model::{endpoint_mac, Endpoint, EndpointKind, Node, NodeRole};
use seam_store::AnyStore;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::apiserver::ApiServer;

/// How long a change may take to show up.
const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, failing the test after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A controller with a memory store serving on a Unix socket.
pub struct Controller {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Controller {
    pub async fn start(path: PathBuf) -> Controller {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(seam_controller::serve(
            ControllerConfig::default(),
            AnyStore::memory(),
            vec![Listener::Unix(path.clone())],
            async {
                let _ = stopped.await;
            },
        ));
        let client = ControllerClient::new(&format!("unix:{}", path.display())).unwrap();
        eventually("the controller to answer", || async {
            client.healthz().await.ok()
        })
        .await;
        Controller { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("controller did not shut down")
            .unwrap()
            .unwrap();
    }
}

/// Stand-in API server + controller + adapter.
pub struct Env {
    pub api: ApiServer,
    pub client: ControllerClient,
    pub view: ViewHandle,
    pub controller: Option<Controller>,
    socket: PathBuf,
    adapter: Option<AdapterTask>,
    _dir: tempfile::TempDir,
}

impl Env {
    /// Starts the controller, then the adapter against `api`.
    pub async fn start(api: ApiServer) -> Env {
        let mut env = Env::adapter_only(api);
        env.start_controller().await;
        env
    }

    /// Starts only the adapter: its controller socket does not exist yet.
    pub fn adapter_only(api: ApiServer) -> Env {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("controller.sock");
        let client = ControllerClient::new(&format!("unix:{}", socket.display())).unwrap();
        let (view, adapter) = spawn_adapter(&api, &client);
        Env {
            api,
            client,
            view,
            controller: None,
            socket,
            adapter: Some(adapter),
            _dir: dir,
        }
    }

    /// Stops the adapter, runs `between`, and starts a new adapter (with no memory of the old
    /// one) against the same API server and controller.
    pub async fn restart_adapter(&mut self, between: impl FnOnce(&ApiServer)) {
        let (stop, task) = self.adapter.take().unwrap();
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("adapter did not stop")
            .unwrap();
        between(&self.api);
        let (view, adapter) = spawn_adapter(&self.api, &self.client);
        self.view = view;
        self.adapter = Some(adapter);
    }

    /// Starts a controller with a new, empty store.
    pub async fn start_controller(&mut self) {
        assert!(self.controller.is_none());
        self.controller = Some(Controller::start(self.socket.clone()).await);
    }

    pub async fn stop_controller(&mut self) {
        self.controller.take().unwrap().stop().await;
    }

    /// Stops the adapter and checks that it stops promptly.
    pub async fn stop(mut self) {
        let (stop, task) = self.adapter.take().unwrap();
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("adapter did not stop")
            .unwrap();
        if let Some(c) = self.controller.take() {
            c.stop().await;
        }
    }

    /// The policy as the controller holds it, if it does.
    pub async fn policy(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        match self.client.get_policy(kind, namespace, name).await {
            Ok(v) => Some(v),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("get {kind} {name}: {e}"),
        }
    }

    /// Waits until the controller holds the policy and `check` accepts it.
    pub async fn wait_policy(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(&format!("{kind} {name} in the controller"), || async {
            self.policy(kind, namespace, name)
                .await
                .filter(|v| check(v))
        })
        .await
    }

    /// Waits until the controller no longer holds the policy.
    pub async fn wait_policy_gone(&self, kind: &str, namespace: Option<&str>, name: &str) {
        eventually(
            &format!("{kind} {name} gone from the controller"),
            || async {
                self.policy(kind, namespace, name)
                    .await
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    }

    /// Publishes the endpoint of pod `namespace/pod` as its node's agent would after CNI ADD
    /// (node, segment, block, then the endpoint, without labels).
    pub async fn publish_pod(
        &self,
        namespace: &str,
        pod: &str,
        node: &str,
        nth: usize,
    ) -> Endpoint {
        let c = &self.client;
        c.put_node(&Node {
            name: node.to_string(),
            underlay_ip: [198, 18, 0, 1].into(),
            role: NodeRole::Worker,
            transit_encap: Default::default(),
            underlay_prefix_len: None,
            underlay_mac: None,
            segment_encap: Default::default(),
        })
        .await
        .unwrap();
        let segment = c.ensure_segment(namespace).await.unwrap();
        let block = match c
            .list_blocks()
            .await
            .unwrap()
            .into_iter()
            .find(|b| b.segment == segment.name && b.node == node)
        {
            Some(b) => b,
            None => c.claim_block(&segment.name, node).await.unwrap(),
        };
        // Skips the first hosts: the gateway may be in the first block.
        let ip = block.cidr.hosts().nth(nth + 4).unwrap();
        let endpoint = Endpoint {
            name: format!("{namespace}/{pod}"),
            kind: EndpointKind::Pod,
            namespace: namespace.to_string(),
            segment: segment.name,
            node: node.to_string(),
            ip,
            mac: endpoint_mac(ip),
            labels: Default::default(),
            container_id: Some(format!("cid-{pod}")),
            ifname: Some("eth0".to_string()),
            ports: Vec::new(),
            conditions: None,
        };
        c.put_endpoint(&endpoint).await.unwrap()
    }
}

/// Logs to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=seam_k8s=debug`), to see
/// what the adapter logged for a skipped or refused object.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

type AdapterTask = (oneshot::Sender<()>, JoinHandle<()>);

fn spawn_adapter(api: &ApiServer, client: &ControllerClient) -> (ViewHandle, AdapterTask) {
    let adapter = Adapter::new(api.client(), client.clone());
    let view = adapter.view();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(adapter.run(async {
        let _ = stopped.await;
    }));
    (view, (stop, task))
}

pub fn namespace(name: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

pub fn netpol(namespace: &str, name: &str, port: u16) -> Value {
    json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": port}]}]
        }
    })
}

pub fn pod(namespace: &str, name: &str, labels: Value, owner: Option<&str>) -> Value {
    let mut meta = json!({"name": name, "namespace": namespace, "labels": labels});
    if let Some(owner) = owner {
        meta["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
            "uid": format!("uid-{owner}"), "controller": true, "blockOwnerDeletion": true
        }]);
    }
    json!({
        "metadata": meta,
        "spec": {"containers": [{"name": "main", "image": "busybox",
                                 "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}],
                 "nodeName": "n1"},
        "status": {"phase": "Pending"}
    })
}

/// The policy's port, for checks on NetworkPolicies built by [`netpol`].
pub fn port_of(policy: &Value) -> Option<u64> {
    policy
        .pointer("/spec/ingress/0/ports/0/port")
        .and_then(Value::as_u64)
}
