//! A controller served on a temporary Unix socket, plus object builders.

use std::collections::BTreeMap;
use std::time::Duration;

use seam_client::ControllerClient;
use seam_controller::{ControllerConfig, Listener, ServeError};
use seam_model::{endpoint_mac, Endpoint, EndpointKind, Node, NodeRole, Segment};
use seam_store::AnyStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Server {
    pub client: ControllerClient,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
    // Keeps the socket directory alive.
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start(config: ControllerConfig, store: AnyStore) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.sock");
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = vec![Listener::Unix(path.clone())];
        let task = tokio::spawn(seam_controller::serve(config, store, listeners, async {
            let _ = stopped.await;
        }));
        let client = ControllerClient::new(&format!("unix:{}", path.display())).unwrap();
        for _ in 0..200 {
            if client.healthz().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        client.healthz().await.unwrap();
        let mode = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        Server {
            client,
            stop,
            task,
            _dir: dir,
        }
    }

    pub async fn memory() -> Server {
        Server::start(ControllerConfig::default(), AnyStore::memory()).await
    }

    /// Shuts down gracefully and waits until the store is released.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("controller did not shut down")
            .unwrap()
            .unwrap();
    }
}

pub fn node(name: &str, last_octet: u8) -> Node {
    Node {
        name: name.to_string(),
        underlay_ip: [198, 18, 0, last_octet].into(),
        role: NodeRole::Worker,
        transit_encap: Default::default(),
        underlay_prefix_len: None,
        underlay_mac: None,
        segment_encap: Default::default(),
    }
}

pub fn segment(name: &str, subnet: &str, vni: u32) -> Segment {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    Segment {
        name: name.to_string(),
        tenant: "t1".to_string(),
        subnet,
        gateway: (u32::from(subnet.network()) + 1).into(),
        vni,
        block_prefix: 28,
        namespace: None,
        snat: false,
        forwarding: Default::default(),
    }
}

pub fn endpoint(name: &str, segment: &str, node: &str, ip: [u8; 4]) -> Endpoint {
    Endpoint {
        name: name.to_string(),
        kind: EndpointKind::Pod,
        namespace: "default".to_string(),
        segment: segment.to_string(),
        node: node.to_string(),
        ip: ip.into(),
        mac: endpoint_mac(ip.into()),
        labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
        container_id: Some("c0ffee".to_string()),
        ifname: Some("eth0".to_string()),
        ports: Vec::new(),
        conditions: None,
    }
}
