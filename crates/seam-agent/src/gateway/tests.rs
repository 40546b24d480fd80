#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use seam_dataplane::fake::FakeKernel;
use seam_model::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeLease, PortProtocol, Service, ServicePort,
    ServiceSpec, ServiceStatus, ServiceType,
};
use seam_nft::services::{Frontend, FrontendKey};

fn node(name: &str, k: u8, role: NodeRole) -> Node {
    Node {
        name: name.into(),
        underlay_ip: Ipv4Addr::new(198, 18, 1, k),
        role,
        transit_encap: Default::default(),
        underlay_prefix_len: Some(15),
        underlay_mac: None,
        segment_encap: Default::default(),
    }
}

fn lb_service(name: &str, ips: &[Ipv4Addr]) -> Service {
    Service {
        name: name.into(),
        namespace: "web".into(),
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
                ingress: ips
                    .iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: *ip,
                        ip_mode: None,
                    })
                    .collect(),
            },
            conditions: vec![],
        },
    }
}

fn view(leases: &[&str]) -> ClusterView {
    let mut view = ClusterView::default();
    for n in [
        node("gw1", 1, NodeRole::Gateway),
        node("gw2", 2, NodeRole::Gateway),
        node("n1", 11, NodeRole::Worker),
    ] {
        view.nodes.insert(n.name.clone(), n);
    }
    let ips: Vec<Ipv4Addr> = (101..=110).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect();
    let s = lb_service("web", &ips);
    view.services.insert(s.key(), s);
    for l in leases {
        view.node_leases.insert(
            l.to_string(),
            NodeLease {
                node: l.to_string(),
            },
        );
    }
    view
}

#[tokio::test]
async fn the_owner_gateway_puts_its_addresses_on_the_interface_and_gives_them_up_when_its_lease_goes(
) {
    let both = view(&["gw1", "gw2"]);
    let gw1 = served_lb_addresses(&both, "gw1", NodeRole::Gateway);
    let gw2 = served_lb_addresses(&both, "gw2", NodeRole::Gateway);
    assert_eq!(gw1.len() + gw2.len(), 10);
    assert!(gw1.is_disjoint(&gw2));
    assert!(served_lb_addresses(&both, "n1", NodeRole::Worker).is_empty());

    let k1 = FakeKernel::default();
    // Something of the operator's is not Seam's: observe_lb does not list it, nothing touches it.
    assert_eq!(
        reconcile_lb(&k1, "eth1", &gw1, 6, true).await.unwrap(),
        gw1.len()
    );
    assert_eq!(k1.state().lb_addresses["eth1"], gw1);
    assert_eq!(k1.state().announcements.len(), 3 * gw1.len());
    // Converged: a second pass only refreshes the lifetimes, and announces nothing.
    assert_eq!(
        reconcile_lb(&k1, "eth1", &gw1, 6, false).await.unwrap(),
        gw1.len()
    );
    assert_eq!(k1.state().announcements.len(), 3 * gw1.len());
    // A restarted agent adopts what is there and announces it again.
    assert_eq!(
        reconcile_lb(&k1, "eth1", &gw1, 6, true).await.unwrap(),
        gw1.len()
    );
    assert_eq!(k1.state().lb_addresses["eth1"], gw1);

    // gw2's lease expires: gw1 takes gw2's addresses too; gw2, seeing the same, gives all up.
    let only_gw1 = view(&["gw1"]);
    let all = served_lb_addresses(&only_gw1, "gw1", NodeRole::Gateway);
    assert_eq!(all.len(), 10);
    reconcile_lb(&k1, "eth1", &all, 6, false).await.unwrap();
    assert_eq!(k1.state().lb_addresses["eth1"], all);
    let k2 = FakeKernel::default();
    reconcile_lb(&k2, "eth1", &gw2, 6, false).await.unwrap();
    let gone = served_lb_addresses(&only_gw1, "gw2", NodeRole::Gateway);
    assert!(gone.is_empty());
    reconcile_lb(&k2, "eth1", &gone, 6, false).await.unwrap();
    assert!(k2.state().lb_addresses["eth1"].is_empty());

    // gw2 is back: exactly its addresses move back, gw1 keeps the rest.
    reconcile_lb(&k1, "eth1", &gw1, 6, false).await.unwrap();
    assert_eq!(k1.state().lb_addresses["eth1"], gw1);
}

#[tokio::test]
async fn removed_udp_backends_have_their_conntrack_entries_deleted() {
    let fe = |protocol, backends: &[(Ipv4Addr, u16)]| Frontend {
        key: FrontendKey::Address {
            addr: Ipv4Addr::new(10, 96, 0, 10),
            protocol,
            port: 53,
        },
        service: "kube-system/dns:53".into(),
        backends: backends.to_vec(),
        affinity_timeout: None,
        masquerade_outside: false,
    };
    let (a, b) = (
        (Ipv4Addr::new(10, 240, 0, 5), 53),
        (Ipv4Addr::new(10, 240, 1, 5), 53),
    );
    let old = DesiredServices {
        frontends: vec![
            fe(PortProtocol::Tcp, &[a, b]),
            fe(PortProtocol::Udp, &[a, b]),
        ],
        ..Default::default()
    };
    let new = DesiredServices {
        frontends: vec![fe(PortProtocol::Tcp, &[b]), fe(PortProtocol::Udp, &[b])],
        ..Default::default()
    };
    let k = FakeKernel::default();
    assert_eq!(forget_stale_flows(&k, &old, &new).await.unwrap(), 1);
    assert_eq!(
        k.state().conntrack_deleted,
        [seam_nft::conntrack::StaleFlow {
            frontend: fe(PortProtocol::Udp, &[]).key,
            backend: Some(a)
        }]
    );
    // Nothing removed: nothing asked of the kernel.
    assert_eq!(forget_stale_flows(&k, &new, &new).await.unwrap(), 0);
    assert_eq!(k.state().conntrack_deleted.len(), 1);
}

#[test]
fn addresses_live_as_long_as_what_is_left_of_the_lease() {
    let t0 = Instant::now();
    assert_eq!(lease_left(None, t0), None);
    assert_eq!(lease_left(Some(t0), t0), Some(6));
    assert_eq!(
        lease_left(Some(t0), t0 + Duration::from_millis(2500)),
        Some(3)
    );
    assert_eq!(lease_left(Some(t0), t0 + Duration::from_millis(5500)), None);
    assert_eq!(lease_left(Some(t0), t0 + Duration::from_secs(60)), None);
}
