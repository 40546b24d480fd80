//! Routed segments on a fake kernel: which remote endpoints a node reaches routed (both nodes
//! publish `segmentEncap: crossSubnet` in one subnet, and the segment is `routed`), and the order
//! the two loops keep during a switch: the route before the gateway-MAC neighbour entry going
//! routed, the endpoint's MAC back before the route goes.

use std::net::Ipv4Addr;

use seam_agent::Agent;
use seam_dataplane::fake::FakeKernel;
use seam_model::{
    endpoint_mac, gateway_mac, Endpoint, EndpointKind, Node, NodeRole, Segment, SegmentForwarding,
    TransitEncap,
};
use seam_store::AnyStore;

use crate::harness::{agent_config, wait_ready, Controller};

fn node(name: &str, last: u8, segment_encap: TransitEncap) -> Node {
    Node {
        name: name.into(),
        underlay_ip: Ipv4Addr::new(198, 18, 0, last),
        role: NodeRole::Worker,
        transit_encap: TransitEncap::CrossSubnet,
        underlay_prefix_len: Some(15),
        underlay_mac: None,
        segment_encap,
    }
}

fn segment(name: &str, vni: u32, third: u8, forwarding: SegmentForwarding) -> Segment {
    Segment {
        name: name.into(),
        tenant: "default".into(),
        subnet: format!("10.240.{third}.0/24").parse().unwrap(),
        gateway: Ipv4Addr::new(10, 240, third, 1),
        vni,
        block_prefix: 26,
        namespace: None,
        snat: false,
        forwarding,
    }
}

fn pod(name: &str, segment: &str, node: &str, ip: Ipv4Addr) -> Endpoint {
    Endpoint {
        name: format!("default/{name}"),
        kind: EndpointKind::Pod,
        namespace: "default".into(),
        segment: segment.into(),
        node: node.into(),
        ip,
        mac: endpoint_mac(ip),
        labels: Default::default(),
        container_id: None,
        ifname: None,
        ports: Vec::new(),
        conditions: None,
    }
}

#[tokio::test]
async fn a_routed_peer_gets_its_route_before_the_gateway_mac_and_loses_it_after() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&dir.path().join("ctl.sock"), Default::default()).await;
    let mut cfg = agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl.sock);
    cfg.segment_encap = TransitEncap::CrossSubnet;
    let sock = cfg.socket.clone();
    let running = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    wait_ready(&sock).await;
    let agent = running.agent.clone();
    let (on_n2, in_overlay, on_n3) = (
        Ipv4Addr::new(10, 240, 1, 2),
        Ipv4Addr::new(10, 240, 2, 2),
        Ipv4Addr::new(10, 240, 1, 3),
    );
    {
        let mut view = agent.view.write().await;
        for n in [
            node("n1", 11, TransitEncap::CrossSubnet),
            node("n2", 12, TransitEncap::CrossSubnet),
            // An agent that does not know routed segments.
            node("n3", 13, TransitEncap::Always),
        ] {
            view.nodes.insert(n.name.clone(), n);
        }
        for s in [
            segment("blue", 4101, 1, SegmentForwarding::Routed),
            segment("l2", 4102, 2, SegmentForwarding::Overlay),
        ] {
            view.segments.insert(s.name.clone(), s);
        }
        for e in [
            pod("a", "blue", "n2", on_n2),
            pod("b", "l2", "n2", in_overlay),
            pod("c", "blue", "n3", on_n3),
        ] {
            view.endpoints.insert(e.name.clone(), e);
        }
    }
    let want = seam_agent::reconcile::desired(&agent).await;
    let routed: Vec<(Ipv4Addr, bool)> = want.remote.iter().map(|r| (r.ip, r.routed)).collect();
    assert_eq!(
        routed,
        [(on_n2, true), (on_n3, false), (in_overlay, false)],
        "only the routed segment's endpoint on the routed peer"
    );
    let (transit, _) = seam_agent::transit::desired_transit(&agent).await;
    let routes: Vec<(Ipv4Addr, Ipv4Addr, bool)> = transit
        .routes
        .iter()
        .map(|r| (r.dst, r.via, r.direct))
        .collect();
    let n2 = Ipv4Addr::new(198, 18, 0, 12);
    assert_eq!(routes, [(on_n2, n2, true)]);
    assert!(transit.loose_underlay, "a node that publishes crossSubnet");

    // The segment pass first: no route yet, so the endpoint's own MAC.
    let kernel = &agent.kernel;
    let neighbour = |ip: Ipv4Addr| {
        kernel
            .state()
            .observed
            .neighbours
            .iter()
            .find(|n| n.1 == ip)
            .map(|n| n.2)
    };
    let blue_gw = gateway_mac(4101);
    seam_agent::reconcile::reconcile_once(&agent).await.unwrap();
    assert_eq!(neighbour(on_n2), Some(endpoint_mac(on_n2)));
    // The transit adds the route; the next segment pass points the entry at the gateway MAC.
    seam_agent::transit::reconcile_transit(kernel.as_ref(), &transit, None)
        .await
        .unwrap();
    assert!(kernel.state().transit.direct_routes.contains(&(on_n2, n2)));
    seam_agent::reconcile::reconcile_once(&agent).await.unwrap();
    assert_eq!(neighbour(on_n2), Some(blue_gw));
    assert_eq!(neighbour(in_overlay), Some(endpoint_mac(in_overlay)));

    // n2 goes back to `always`: the transit keeps the route while the entry holds the gateway
    // MAC, the segment pass puts the endpoint's MAC back, then the route goes.
    if let Some(n) = agent.view.write().await.nodes.get_mut("n2") {
        n.segment_encap = TransitEncap::Always;
    }
    let (transit, _) = seam_agent::transit::desired_transit(&agent).await;
    assert!(transit.routes.is_empty());
    seam_agent::transit::reconcile_transit(kernel.as_ref(), &transit, None)
        .await
        .unwrap();
    assert!(
        kernel.state().transit.direct_routes.contains(&(on_n2, n2)),
        "held while pods may hold the gateway MAC"
    );
    seam_agent::reconcile::reconcile_once(&agent).await.unwrap();
    assert_eq!(neighbour(on_n2), Some(endpoint_mac(on_n2)));
    seam_agent::transit::reconcile_transit(kernel.as_ref(), &transit, None)
        .await
        .unwrap();
    assert!(kernel.state().transit.direct_routes.is_empty());
    // The FDB entry stayed throughout.
    assert!(kernel
        .state()
        .observed
        .fdb
        .contains(&(4101, endpoint_mac(on_n2), n2)));
}
