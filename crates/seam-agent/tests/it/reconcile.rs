//! The reconcile loop: remote endpoints become FDB and neighbour entries, and nothing is
//! removed before the first full view of the controller.

use std::net::Ipv4Addr;
use std::time::Duration;

use seam_agent::Agent;
use seam_controller::ControllerConfig;
use seam_dataplane::fake::FakeKernel;
use seam_dataplane::ObservedSegment;
use seam_model::agent_rpc::AgentReply;
use seam_model::MacAddr;
use seam_store::AnyStore;

use crate::harness::{
    add, agent_config, call, del, eventually, status, wait_ready, Cluster, Controller,
};

const N2_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_pod_becomes_fdb_and_neighbour_entries() {
    let c = Cluster::start().await;
    let cfg2 = agent_config(c.dir.path(), "n2", N2_IP, &c.ctl.sock);
    let sock2 = cfg2.socket.clone();
    let n2 = Agent::start(cfg2, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    wait_ready(&sock2).await;

    let r = add(&sock2, &crate::harness::pod("web", "remote-1")).await;
    let vni = c.ctl.client.get_segment(&r.segment).await.unwrap().vni;
    let ip = r.address.addr();
    let mac = r.container_mac;

    let n1 = c.kernel();
    eventually("n1 learns the remote pod", || async {
        let o = n1.state().observed;
        o.fdb.contains(&(vni, mac, N2_IP)) && o.neighbours.contains(&(vni, ip, mac))
    })
    .await;
    // n1 has the segment's devices (so the entries have somewhere to live) but no port of it.
    assert!(n1.state().observed.segments.contains_key(&vni));
    assert!(n1.state().attachments.is_empty());
    // n2 does not point its own pod at itself.
    let o2 = n2.agent.kernel.state().observed;
    assert!(!o2.fdb.iter().any(|e| e.1 == mac), "{o2:?}");
    assert!(!o2.neighbours.iter().any(|e| e.1 == ip), "{o2:?}");

    // A local pod on n1 is not an FDB entry on n1, but becomes one on n2.
    let local = add(&c.sock, &crate::harness::pod("web", "local-1")).await;
    eventually("n2 learns n1's pod", || async {
        n2.agent.kernel.state().observed.fdb.contains(&(
            vni,
            local.container_mac,
            Ipv4Addr::new(198, 18, 0, 11),
        ))
    })
    .await;
    assert!(!n1
        .state()
        .observed
        .fdb
        .iter()
        .any(|e| e.1 == local.container_mac));

    assert_eq!(del(&sock2, "remote-1").await, AgentReply::Done);
    eventually("n1 forgets the remote pod", || async {
        let o = n1.state().observed;
        !o.fdb.iter().any(|e| e.1 == mac) && !o.neighbours.iter().any(|e| e.1 == ip)
    })
    .await;
    // The local pod survives every pass.
    assert!(n1.state().attachments.contains_key(&local.host_ifname));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_removed_before_the_first_sync() {
    let dir = tempfile::tempdir().unwrap();
    let ctl_sock = dir.path().join("ctl.sock");
    let cfg = agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl_sock);
    let sock = cfg.socket.clone();

    // What a previous run left: a segment the controller no longer has, with a remote entry.
    let stale_vni = 77;
    let stale_mac = MacAddr([0x02, 0, 0, 0, 0, 0x77]);
    let kernel = FakeKernel::default();
    kernel.with_state(|s| {
        s.observed.segments.insert(
            stale_vni,
            ObservedSegment {
                bridge_ok: true,
                vxlan_ok: true,
                gateway_ok: true,
                vxlan_local: None,
            },
        );
        s.observed.fdb.insert((stale_vni, stale_mac, N2_IP));
        s.observed
            .neighbours
            .insert((stale_vni, Ipv4Addr::new(10, 77, 0, 5), stale_mac));
    });
    let before = kernel.state().observed;
    let n1 = Agent::start(cfg, kernel, AnyStore::memory()).await.unwrap();

    // While the controller is away (several sync retries), the dataplane is left alone, even
    // when the loop is woken (as its periodic resync timer does every 30 s).
    for _ in 0..6 {
        n1.agent.reconcile_now.notify_one();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!n1.agent.is_ready());
    assert!(matches!(call(&sock, status()).await, AgentReply::Error(e) if e.code == 50));
    assert_eq!(n1.agent.kernel.state().observed, before);

    let _ctl = Controller::start(&ctl_sock, ControllerConfig::default()).await;
    wait_ready(&sock).await;
    eventually(
        "the stale segment is removed after the first sync",
        || async {
            !n1.agent
                .kernel
                .state()
                .observed
                .segments
                .contains_key(&stale_vni)
        },
    )
    .await;
    let after = n1.agent.kernel.state().observed;
    assert!(after.fdb.is_empty(), "{after:?}");
    assert!(after.neighbours.is_empty(), "{after:?}");
}
