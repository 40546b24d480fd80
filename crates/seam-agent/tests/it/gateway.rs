//! The gateway loop on a fake kernel: LoadBalancer addresses follow ownership and the lease, and
//! removed UDP backends have their conntrack entries deleted once the table without them is
//! applied.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use seam_agent::Agent;
use seam_dataplane::fake::FakeKernel;
use seam_model::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeLease, NodeRole, PortProtocol, Service,
    ServicePort, ServiceSpec, ServiceStatus, ServiceType, TransitEncap,
};
use seam_nft::conntrack::StaleFlow;
use seam_nft::services::{DesiredServices, Frontend, FrontendKey};
use seam_store::AnyStore;

use crate::harness::{agent_config, eventually, wait_ready, Controller};

fn lb_service(ip: Ipv4Addr) -> Service {
    Service {
        name: "web".into(),
        namespace: "blue".into(),
        labels: Default::default(),
        annotations: Default::default(),
        spec: ServiceSpec {
            service_type: ServiceType::LoadBalancer,
            ports: vec![ServicePort {
                name: None,
                protocol: PortProtocol::Tcp,
                port: 80,
                target_port: None,
                node_port: Some(30080),
                app_protocol: None,
            }],
            ..Default::default()
        },
        status: ServiceStatus {
            load_balancer: LoadBalancerStatus {
                ingress: vec![LoadBalancerIngress { ip, ip_mode: None }],
            },
            conditions: vec![],
        },
    }
}

/// A controller and agent `node` (underlay 198.18.1.1 for a gateway, .11 else) on a fake
/// kernel, ready.
async fn start_agent(
    dir: &std::path::Path,
    node: &str,
    role: NodeRole,
) -> (Controller, seam_agent::Running<FakeKernel>) {
    let ctl = Controller::start(&dir.join("ctl.sock"), Default::default()).await;
    let last = if role == NodeRole::Gateway { 1 } else { 11 };
    let mut cfg = agent_config(dir, node, Ipv4Addr::new(198, 18, 1, last), &ctl.sock);
    cfg.role = role;
    let sock = cfg.socket.clone();
    let running = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    wait_ready(&sock).await;
    (ctl, running)
}

#[tokio::test]
async fn a_gateway_serves_what_it_owns_while_its_lease_lives_and_forgets_removed_udp_backends() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctl, running) = start_agent(dir.path(), "gw1", NodeRole::Gateway).await;
    let agent = running.agent.clone();
    let lb = Ipv4Addr::new(203, 0, 113, 101);
    {
        // What the controller would show: gw1 alone holds a lease, one LoadBalancer Service.
        let mut view = agent.view.write().await;
        view.nodes.insert(
            "gw1".into(),
            Node {
                name: "gw1".into(),
                underlay_ip: Ipv4Addr::new(198, 18, 1, 1),
                role: NodeRole::Gateway,
                transit_encap: TransitEncap::CrossSubnet,
                underlay_prefix_len: Some(15),
                underlay_mac: None,
                segment_encap: Default::default(),
            },
        );
        view.node_leases
            .insert("gw1".into(), NodeLease { node: "gw1".into() });
        let s = lb_service(lb);
        view.services.insert(s.key(), s);
    }
    *agent.lease_renewed_at.lock().unwrap() = Some(Instant::now());
    let kernel = Arc::new(FakeKernel::default());
    let task = tokio::spawn(seam_agent::gateway::run(
        agent.clone(),
        SharedFake(kernel.clone()),
        Some("eth1".into()),
    ));
    eventually("gw1 serves its address", || async {
        kernel
            .state()
            .lb_addresses
            .get("eth1")
            .is_some_and(|a| a.contains(&lb))
    })
    .await;
    assert_eq!(
        kernel.state().announcements,
        vec![("eth1".to_string(), lb); 3]
    );

    // Its lease is gone (the controller says so): it gives the address up.
    agent.view.write().await.node_leases.clear();
    agent.view.write().await.revision += 1;
    eventually("gw1 gives its address up", || async {
        kernel
            .state()
            .lb_addresses
            .get("eth1")
            .is_some_and(|a| a.is_empty())
    })
    .await;

    // A UDP frontend gets backends, then loses backend A, once the tables are applied.
    let (a, b) = (
        (Ipv4Addr::new(10, 240, 0, 5), 53),
        (Ipv4Addr::new(10, 240, 1, 5), 53),
    );
    let key = FrontendKey::Address {
        addr: Ipv4Addr::new(10, 96, 0, 10),
        protocol: PortProtocol::Udp,
        port: 53,
    };
    let services = |backends: &[(Ipv4Addr, u16)]| {
        Arc::new(DesiredServices {
            frontends: vec![Frontend {
                key,
                service: "kube-system/dns:53".into(),
                backends: backends.to_vec(),
                affinity_timeout: None,
                masquerade_outside: false,
            }],
            ..Default::default()
        })
    };
    // Its first backends: the entries datagrams made before, untranslated, go.
    agent.applied_services.send_replace(services(&[a, b]));
    let untranslated = StaleFlow {
        frontend: key,
        backend: None,
    };
    eventually("the untranslated entries are deleted", || async {
        kernel.state().conntrack_deleted == [untranslated]
    })
    .await;
    agent.applied_services.send_replace(services(&[b]));
    eventually("A's entries are deleted", || async {
        kernel.state().conntrack_deleted
            == [
                untranslated,
                StaleFlow {
                    frontend: key,
                    backend: Some(a),
                },
            ]
    })
    .await;
    task.abort();
    running.abort();
}

/// The fake kernel, shared with the test that looks at it.
struct SharedFake(Arc<FakeKernel>);

impl seam_dataplane::lb::LbKernel for SharedFake {
    async fn observe_lb(
        &self,
        ifname: &str,
    ) -> seam_dataplane::Result<std::collections::BTreeSet<Ipv4Addr>> {
        self.0.observe_lb(ifname).await
    }

    async fn apply_lb(
        &self,
        ifname: &str,
        op: &seam_dataplane::lb::LbOp,
    ) -> seam_dataplane::Result<()> {
        self.0.apply_lb(ifname, op).await
    }
}

impl seam_dataplane::lb::ConntrackKernel for SharedFake {
    async fn delete_conntrack(&self, flows: &[StaleFlow]) -> seam_dataplane::Result<usize> {
        self.0.delete_conntrack(flows).await
    }
}

#[tokio::test]
async fn a_node_that_snats_node_port_clients_loosens_its_underlay_reverse_path_filter() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctl, running) = start_agent(dir.path(), "n1", NodeRole::Worker).await;
    let agent = running.agent.clone();
    let kernel = FakeKernel::default();
    let reconcile = || async {
        let (want, nat) = seam_agent::transit::desired_transit(&agent).await;
        seam_agent::transit::reconcile_transit(&kernel, &want, nat.as_ref())
            .await
            .unwrap();
        kernel.state().transit.underlay_loose
    };
    // A worker with no Service: reverse-path filtering stays as the operator set it.
    assert!(!reconcile().await);

    // A Service with a NodePort (externalTrafficPolicy Cluster): every node SNATs its clients to
    // its underlay address, and a backend on another node replies to it from a pod address
    // (routed here into the segment's bridge) over the underlay.
    let mut service = lb_service(Ipv4Addr::new(203, 0, 113, 101));
    service.spec.service_type = ServiceType::NodePort;
    service.status = ServiceStatus::default();
    let mut local = service.clone();
    local.name = "local".into();
    local.spec.external_traffic_policy = seam_model::TrafficPolicy::Local;
    // Local keeps the client's address: nothing to loosen.
    agent.view.write().await.services.insert(local.key(), local);
    assert!(!reconcile().await);
    agent
        .view
        .write()
        .await
        .services
        .insert(service.key(), service);
    assert!(reconcile().await);
    running.abort();
}
