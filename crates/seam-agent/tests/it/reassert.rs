//! The agent's own records on the controller: re-asserted when edited or deleted by hand (at
//! once on the watch event, and periodically); objects written by a newer Seam (unknown
//! fields) do not stop it; a live pod keeps its port when its segment is pulled away.

use std::net::Ipv4Addr;
use std::time::Duration;

use seam_agent::Agent;
use seam_controller::ControllerConfig;
use seam_dataplane::fake::FakeKernel;
use seam_model::{endpoint_mac, Node};
use seam_store::{AnyStore, Datastore, Txn, TxnOutcome};
use serde_json::json;

use crate::harness::{add, agent_config, eventually, pod, port, wait_ready, Cluster, Controller};

const N1_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

/// Writes `(key, JSON)` pairs straight into the controller's store, past the API's checks.
async fn write_store(store: &AnyStore, objects: &[(&str, serde_json::Value)]) {
    let mut txn = Txn::new();
    for (key, value) in objects {
        txn = txn.put(*key, serde_json::to_vec(value).unwrap());
    }
    assert!(matches!(
        store.txn(txn).await.unwrap(),
        TxnOutcome::Committed { .. }
    ));
}

async fn node_ip(c: &Controller, name: &str) -> Option<Ipv4Addr> {
    c.client.get_node(name).await.ok().map(|n| n.underlay_ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_record_edited_by_hand_is_corrected_at_once() {
    // The periodic re-assert (30 s by default) is longer than the test's patience: only the
    // watch event can bring the correction in time.
    let c = Cluster::start().await;
    let mut wrong = c.ctl.client.get_node("n1").await.unwrap();
    assert_eq!(wrong.underlay_ip, N1_IP);
    wrong.underlay_ip = Ipv4Addr::new(198, 18, 0, 99);
    c.ctl.client.put_node(&wrong).await.unwrap();
    eventually("n1 publishes its own underlay address again", || async {
        node_ip(&c.ctl, "n1").await == Some(N1_IP)
    })
    .await;
    // And it stays so: the agent's own write does not start a loop of writes.
    let before = c.ctl.client.snapshot().await.unwrap().revision;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(c.ctl.client.snapshot().await.unwrap().revision, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_record_is_corrected_within_the_reassert_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::memory();
    let ctl = Controller::start_with_store(
        &dir.path().join("ctl.sock"),
        ControllerConfig::default(),
        store.clone(),
    )
    .await;
    let mut cfg = agent_config(dir.path(), "n1", N1_IP, &ctl.sock);
    cfg.reassert_interval = Duration::from_secs(1);
    let sock = cfg.socket.clone();
    let _n1 = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    wait_ready(&sock).await;

    // One transaction moves n1 away and lets a node n9 take n1's address, so the re-assert the
    // watch event triggers is refused (the address is taken) ...
    let wrong = Ipv4Addr::new(198, 18, 0, 99);
    write_store(
        &store,
        &[
            (
                "/seam/v1/nodes/n1",
                json!({"name": "n1", "underlayIp": wrong.to_string(), "underlayPrefixLen": 15}),
            ),
            (
                "/seam/v1/nodes/n9",
                json!({"name": "n9", "underlayIp": N1_IP.to_string()}),
            ),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(node_ip(&ctl, "n1").await, Some(wrong));
    // ... and once n9 is gone (an event about another node, which n1 has no reason to act on),
    // only the periodic re-assert can put n1 right.
    ctl.client.delete_node("n9").await.unwrap();
    eventually("the periodic re-assert publishes n1 again", || async {
        node_ip(&ctl, "n1").await == Some(N1_IP)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_deleted_or_edited_by_hand_comes_back() {
    let c = Cluster::start().await;
    let r = add(&c.sock, &pod("web", "p1")).await;
    eventually("the endpoint is published", || async {
        c.ctl.endpoint("web/p1").await.is_some()
    })
    .await;
    c.ctl.client.delete_endpoint("web/p1").await.unwrap();
    eventually("the deleted endpoint comes back", || async {
        c.ctl
            .endpoint("web/p1")
            .await
            .is_some_and(|e| e.ip == r.address.addr())
    })
    .await;

    // A wrong address is corrected; labels set through the API are the controller's and stay.
    let mut edited = c.ctl.endpoint("web/p1").await.unwrap();
    edited.ip = Ipv4Addr::from(u32::from(r.address.addr()) + 1);
    edited.mac = endpoint_mac(edited.ip);
    edited.labels.insert("team".into(), "blue".into());
    c.ctl.client.put_endpoint(&edited).await.unwrap();
    eventually("the endpoint's address is put right", || async {
        c.ctl.endpoint("web/p1").await.is_some_and(|e| {
            e.ip == r.address.addr() && e.labels.get("team").map(String::as_str) == Some("blue")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_pod_keeps_its_port_when_its_segment_vanishes() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::memory();
    let ctl = Controller::start_with_store(
        &dir.path().join("ctl.sock"),
        ControllerConfig::default(),
        store.clone(),
    )
    .await;
    let cfg = agent_config(dir.path(), "n1", N1_IP, &ctl.sock);
    let sock = cfg.socket.clone();
    let n1 = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    wait_ready(&sock).await;
    let r = add(&sock, &pod("web", "p1")).await;
    let vni = ctl.client.get_segment(&r.segment).await.unwrap().vni;
    let host_port = port("p1");
    assert_eq!(
        n1.agent.kernel.state().observed.host_ports.get(&host_port),
        Some(&Some(vni))
    );

    // The segment is pulled from under the pod (the API refuses this; a store edit does not).
    let key = format!("/seam/v1/segments/{}", r.segment);
    let outcome = store.txn(Txn::new().delete(&key)).await.unwrap();
    assert!(matches!(outcome, TxnOutcome::Committed { .. }));
    eventually("n1 sees the segment gone", || async {
        !n1.agent.view.read().await.segments.contains_key(&r.segment)
    })
    .await;
    seam_agent::reconcile::reconcile_once(&n1.agent)
        .await
        .unwrap();
    let observed = n1.agent.kernel.state().observed;
    assert!(
        observed.segments.contains_key(&vni),
        "the segment's devices were removed: {observed:?}"
    );
    assert_eq!(
        observed.host_ports.get(&host_port),
        Some(&Some(vni)),
        "the live pod's port lost its bridge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_with_fields_this_agent_does_not_know_do_not_stop_it() {
    // What a newer controller could store: every kind the agent reads, with fields this
    // version's types do not have, written past the API (which refuses them).
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::memory();
    let remote_ip = Ipv4Addr::new(10, 240, 0, 200);
    let remote_node = Ipv4Addr::new(198, 18, 0, 50);
    write_store(
        &store,
        &[
            (
                "/seam/v1/nodes/n0",
                json!({"name": "n0", "underlayIp": remote_node.to_string(), "zone": "a"}),
            ),
            (
                "/seam/v1/segments/ns-web",
                json!({
                    "name": "ns-web", "tenant": "web", "subnet": "10.240.0.0/20",
                    "gateway": "10.240.0.1", "vni": 4000, "blockPrefix": 26, "namespace": "web",
                    "mtuOverride": 9000, "future": {"nested": [1, 2]}
                }),
            ),
            (
                "/seam/v1/namespaces/web",
                json!({"name": "web", "labels": {"kubernetes.io/metadata.name": "web"}, "quota": 3}),
            ),
            (
                "/seam/v1/endpoints/web/remote",
                json!({
                    "name": "web/remote", "kind": "pod", "namespace": "web", "segment": "ns-web",
                    "node": "n0", "ip": remote_ip.to_string(),
                    "mac": endpoint_mac(remote_ip).to_string(), "weight": 7,
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "appProtocol": "h2"}]
                }),
            ),
            (
                "/seam/v1/policies/NetworkPolicy/web/ingress-only",
                json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "ingress-only", "namespace": "web", "generation": 3},
                    "status": {"conditions": []},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
                }),
            ),
            (
                // Unknown inside `spec`: dropping the field would admit every source on 5432, so
                // the agent leaves this one out instead, as any undecodable stored policy.
                "/seam/v1/policies/NetworkPolicy/web/db",
                json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "db", "namespace": "web"},
                    "spec": {
                        "podSelector": {}, "policyTypes": ["Ingress"],
                        "ingress": [{"newSourceField": [{"cidr": "10.9.9.0/24"}], "ports": [{"port": 5432}]}]
                    }
                }),
            ),
        ],
    )
    .await;
    let ctl = Controller::start_with_store(
        &dir.path().join("ctl.sock"),
        ControllerConfig::default(),
        store.clone(),
    )
    .await;
    let cfg = agent_config(dir.path(), "n1", N1_IP, &ctl.sock);
    let sock = cfg.socket.clone();
    let n1 = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    // The snapshot holds them all: the agent syncs ...
    wait_ready(&sock).await;
    assert_eq!(
        n1.agent.view.read().await.policies.len(),
        2,
        "the stored policies are in the view"
    );
    // ... attaches a pod to the segment with the unknown fields ...
    let r = add(&sock, &pod("web", "p1")).await;
    assert_eq!(r.segment, "ns-web");
    let kernel = &n1.agent.kernel;
    // ... enforces the policy whose unknown fields are outside `spec` (the pod is its subject)
    // and not the other one's rule, widened to every source.
    let pod_ip = r.address.addr().to_string();
    let applied = || async {
        n1.agent
            .applied_firewall
            .lock()
            .await
            .as_ref()
            .map(seam_nft::table::full_text)
            .unwrap_or_default()
    };
    eventually("n1's firewall holds the pod", || async {
        applied().await.contains(&pod_ip)
    })
    .await;
    let rules = applied().await;
    assert!(rules.contains("np/web/ingress-only/subject"), "{rules}");
    assert!(
        !rules.contains("np/web/db") && !rules.contains("5432"),
        "no rule of the policy with an unknown field in its spec: {rules}"
    );
    // ... and reconciles the remote endpoint that has them.
    eventually("n1 learns the remote pod from the snapshot", || async {
        kernel
            .state()
            .observed
            .fdb
            .contains(&(4000, endpoint_mac(remote_ip), remote_node))
    })
    .await;

    // The same through the watch: a node moved and a new endpoint, both with unknown fields.
    let moved = Ipv4Addr::new(198, 18, 0, 51);
    let second = Ipv4Addr::new(10, 240, 0, 201);
    write_store(
        &store,
        &[
            (
                "/seam/v1/nodes/n0",
                json!({"name": "n0", "underlayIp": moved.to_string(), "zone": "b", "rack": 4}),
            ),
            (
                "/seam/v1/endpoints/web/remote2",
                json!({
                    "name": "web/remote2", "kind": "pod", "namespace": "web", "segment": "ns-web",
                    "node": "n0", "ip": second.to_string(),
                    "mac": endpoint_mac(second).to_string(), "priority": "high"
                }),
            ),
        ],
    )
    .await;
    eventually(
        "n1 follows the watch events with unknown fields",
        || async {
            let fdb = kernel.state().observed.fdb;
            fdb.contains(&(4000, endpoint_mac(second), moved))
                && fdb.contains(&(4000, endpoint_mac(remote_ip), moved))
        },
    )
    .await;
    // Its own pod's endpoint was published into the segment the controller stored.
    eventually("the pod's endpoint is on the controller", || async {
        ctl.endpoint("web/p1")
            .await
            .is_some_and(|e| e.ip == r.address.addr())
    })
    .await;
    let _: Node = ctl.client.get_node("n0").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_starts_on_local_records_a_newer_agent_wrote() {
    // After a downgrade the lease store holds what the newer agent wrote: a cached segment and
    // block with fields this version does not know.
    let c = Cluster::start().await;
    let local = AnyStore::memory();
    write_store(
        &local,
        &[
            (
                "/segments/ns-old",
                json!({
                    "name": "ns-old", "tenant": "old", "subnet": "10.250.0.0/24",
                    "gateway": "10.250.0.1", "vni": 4001, "blockPrefix": 26, "namespace": "old",
                    "mtuOverride": 9000
                }),
            ),
            (
                "/blocks/ns-old/10.250.0.0-26",
                json!({"segment": "ns-old", "node": "n2", "cidr": "10.250.0.0/26", "releaseAfter": 5}),
            ),
        ],
    )
    .await;
    let cfg = agent_config(
        c.dir.path(),
        "n2",
        Ipv4Addr::new(198, 18, 0, 12),
        &c.ctl.sock,
    );
    let sock = cfg.socket.clone();
    let n2 = Agent::start(cfg, FakeKernel::default(), local)
        .await
        .expect("the agent starts");
    wait_ready(&sock).await;
    add(&sock, &pod("web", "p2")).await;
    drop(n2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_name_taken_over_by_another_node_is_left_to_it() {
    // A StatefulSet pod force-deleted on n1 (its kubelet gone, seamd still up) is created again
    // on n2 under the same name before n1's DEL: n2's record is the live one.
    let c = Cluster::start().await;
    add(&c.sock, &pod("web", "web-0")).await;
    eventually("n1 publishes web/web-0", || async {
        c.ctl.endpoint("web/web-0").await.is_some()
    })
    .await;
    let n2 = Node {
        name: "n2".into(),
        underlay_ip: Ipv4Addr::new(198, 18, 0, 12),
        role: Default::default(),
        transit_encap: Default::default(),
        underlay_prefix_len: None,
        underlay_mac: None,
        segment_encap: Default::default(),
    };
    c.ctl.client.put_node(&n2).await.unwrap();
    let block = c.ctl.client.claim_block("ns-web", "n2").await.unwrap();
    let mut moved = c.ctl.endpoint("web/web-0").await.unwrap();
    moved.node = "n2".into();
    moved.container_id = Some("sandbox-on-n2".into());
    moved.ip = block.cidr.hosts().nth(2).unwrap();
    moved.mac = endpoint_mac(moved.ip);
    c.ctl.client.put_endpoint(&moved).await.unwrap();

    // Well past the re-assert delay of a contradicting event: n1 has not written it back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.ctl.endpoint("web/web-0").await.unwrap(), moved);

    // n1's DEL comes at last: it does not delete n2's record either.
    crate::harness::del(&c.sock, "web-0").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.ctl.endpoint("web/web-0").await.unwrap(), moved);
}
