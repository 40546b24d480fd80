//! A node whose own underlay address changes, without an agent restart: the agent republishes
//! its Node (address, prefix length, MAC), rebinds its VXLAN devices, and decides routed or
//! VXLAN with its peers from the new subnet; with no IPv4 address at all it keeps the last one.

use std::net::Ipv4Addr;

use seam_agent::Agent;
use seam_dataplane::fake::FakeKernel;
use seam_dataplane::UnderlayInterface;
use seam_model::{endpoint_mac, MacAddr, Node, NodeRole, TransitEncap};
use seam_store::AnyStore;

use crate::harness::{add, agent_config, eventually, pod, wait_ready, Controller};

fn interface(address: Option<&str>, last: u8) -> UnderlayInterface {
    UnderlayInterface {
        addresses: address.into_iter().map(|a| a.parse().unwrap()).collect(),
        mac: Some(MacAddr([2, 0, 0, 0, 0, last])),
        mtu: 1500,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_its_underlay_address_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(&dir.path().join("ctl.sock"), Default::default()).await;
    let mut cfg = agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl.sock);
    cfg.segment_encap = TransitEncap::CrossSubnet;
    cfg.underlay_mac = Some(MacAddr([2, 0, 0, 0, 0, 11]));
    let sock = cfg.socket.clone();
    let kernel = FakeKernel::default();
    kernel.with_state(|s| {
        s.interfaces
            .insert("eth0".into(), interface(Some("198.18.0.11/15"), 11));
    });
    let running = Agent::start(cfg, kernel, AnyStore::memory()).await.unwrap();
    wait_ready(&sock).await;
    let agent = running.agent.clone();
    // A pod here, and one on n2, a peer of the same subnet that routes segments too.
    add(&sock, &pod("web", "a")).await;
    let n2_ip = Ipv4Addr::new(198, 18, 0, 12);
    ctl.client
        .put_node(&Node {
            name: "n2".into(),
            underlay_ip: n2_ip,
            role: NodeRole::Worker,
            transit_encap: TransitEncap::CrossSubnet,
            underlay_prefix_len: Some(15),
            underlay_mac: None,
            segment_encap: TransitEncap::CrossSubnet,
        })
        .await
        .unwrap();
    let block = ctl.client.claim_block("ns-web", "n2").await.unwrap();
    eventually("n1 publishes web/a", || async {
        ctl.endpoint("web/a").await.is_some()
    })
    .await;
    let mut b = ctl.endpoint("web/a").await.unwrap();
    b.name = "web/b".into();
    b.node = "n2".into();
    b.container_id = Some("b-on-n2".into());
    b.ip = block.cidr.hosts().nth(2).unwrap();
    b.mac = endpoint_mac(b.ip);
    ctl.client.put_endpoint(&b).await.unwrap();

    // What n1 publishes, whether it routes b, and where its VXLAN devices are bound.
    let published = || async {
        let n1 = ctl.client.get_node("n1").await.unwrap();
        (n1.underlay_ip, n1.underlay_prefix_len, n1.underlay_mac)
    };
    let routes_b = || async {
        let want = seam_agent::reconcile::desired(&agent).await;
        let (transit, _) = seam_agent::transit::desired_transit(&agent).await;
        let entry = want.remote.iter().find(|r| r.ip == b.ip).map(|r| r.routed);
        let routed = transit.routes.iter().any(|r| r.dst == b.ip && r.direct);
        (entry, routed)
    };
    let bound_to = |ip: Ipv4Addr| {
        let s = agent.kernel.state();
        !s.observed.segments.is_empty()
            && s.observed
                .segments
                .values()
                .all(|seg| seg.vxlan_local == Some(ip))
    };
    eventually("n1 routes b", || async {
        routes_b().await == (Some(true), true)
    })
    .await;
    let first = Ipv4Addr::new(198, 18, 0, 11);
    eventually("n1's devices on its first address", || async {
        bound_to(first)
    })
    .await;

    // Replaced in the same subnet, with a new MAC: published, devices rebound, still routed.
    let moved = |address: Option<&str>, last: u8| {
        agent.kernel.with_state(|s| {
            s.interfaces.insert("eth0".into(), interface(address, last));
        });
        agent.underlay_now.notify_one();
    };
    moved(Some("198.18.0.42/15"), 42);
    let second = Ipv4Addr::new(198, 18, 0, 42);
    eventually("n1 publishes 198.18.0.42/15", || async {
        published().await == (second, Some(15), Some(MacAddr([2, 0, 0, 0, 0, 42])))
    })
    .await;
    eventually("n1's devices are bound to the new address", || async {
        bound_to(second)
    })
    .await;
    assert_eq!(routes_b().await, (Some(true), true));

    // Another subnet: n2 is no longer on-link, so b goes back to the VXLAN.
    moved(Some("192.0.2.11/24"), 42);
    let third = Ipv4Addr::new(192, 0, 2, 11);
    eventually("n1 publishes 192.0.2.11/24", || async {
        published().await.0 == third && published().await.1 == Some(24)
    })
    .await;
    eventually("b through the VXLAN", || async {
        routes_b().await == (Some(false), false)
    })
    .await;
    eventually("n1's devices are bound to 192.0.2.11", || async {
        bound_to(third)
    })
    .await;

    // No IPv4 address at all: the node keeps the last one, published and bound.
    agent.kernel.with_state(|s| {
        s.interfaces.insert("eth0".into(), interface(None, 42));
    });
    let mut stuck = None;
    assert!(!seam_agent::underlay::follow_once(&agent, &mut stuck).await);
    assert_eq!(stuck, Some(seam_agent::underlay::Stuck::NoAddress));
    assert_eq!(agent.underlay().underlay.ip, third);
    assert_eq!(published().await.0, third);

    // Back in the subnet: routed again.
    moved(Some("198.18.0.11/15"), 11);
    eventually("n1 publishes 198.18.0.11/15 again", || async {
        published().await == (first, Some(15), Some(MacAddr([2, 0, 0, 0, 0, 11])))
    })
    .await;
    eventually("n1 routes b again", || async {
        routes_b().await == (Some(true), true)
    })
    .await;
    eventually("n1's devices are bound to 198.18.0.11", || async {
        bound_to(first)
    })
    .await;
    running.abort();
}
