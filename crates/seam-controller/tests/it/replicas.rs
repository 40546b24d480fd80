//! Controller replicas on one etcd: real `seam-controller` processes, one leads, a standby
//! takes over when the leader is killed, and no allocation is handed out twice across it.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use seam_client::ControllerClient;
use seam_model::Node;
use seam_store::testing::EtcdCluster;

/// A `seam-controller` process, killed on drop.
struct Replica {
    endpoint: String,
    child: Option<Child>,
}

impl Replica {
    fn start(etcd: &EtcdCluster, prefix: &str) -> Replica {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_seam-controller"))
            .args([
                "--listen",
                &format!("tcp:127.0.0.1:{port}"),
                "--store",
                &format!("etcd:{}", etcd.endpoints().join(",")),
                "--store-prefix",
                prefix,
                "--lease-ttl-ms",
                "2000",
                // Loopback only; these tests are about the election, not the transport.
                "--insecure-plain-tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Replica {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        }
    }

    fn client(&self) -> ControllerClient {
        ControllerClient::new(&self.endpoint)
            .unwrap()
            .with_timeout(Duration::from_secs(2))
    }

    async fn role(&self) -> Option<String> {
        self.client().leader().await.ok().map(|l| l.role)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn etcd() -> EtcdCluster {
    EtcdCluster::start()
        .await
        .unwrap_or_else(|e| panic!("the replica tests need a real etcd: {e}"))
}

/// Waits until exactly one replica leads and returns its index.
async fn leader_of(replicas: &[Replica], within: Duration) -> usize {
    let start = Instant::now();
    loop {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if r.role().await.as_deref() == Some("leader") {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        if let [one] = leaders[..] {
            return one;
        }
        assert!(start.elapsed() < within, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node(i: u8) -> Node {
    serde_json::from_value(serde_json::json!({
        "name": format!("n{i}"),
        "underlayIp": format!("192.0.2.{}", i + 1),
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_within_five_seconds_of_a_leader_kill() {
    let etcd = etcd().await;
    let mut replicas = vec![Replica::start(&etcd, "/t1"), Replica::start(&etcd, "/t1")];
    let first = leader_of(&replicas, Duration::from_secs(10)).await;
    let other = 1 - first;
    assert_eq!(replicas[other].role().await.as_deref(), Some("standby"));

    // A standby serves reads and refuses writes, naming the leader.
    let standby = replicas[other].client();
    standby.list_nodes().await.unwrap();
    let err = standby.put_node(&node(1)).await.unwrap_err();
    assert!(err.is_not_leader(), "{err}");
    assert!(err.to_string().contains(&replicas[first].endpoint), "{err}");
    // A client given both endpoints writes through the leader whichever it tries first.
    let both = ControllerClient::new(&format!(
        "{},{}",
        replicas[other].endpoint, replicas[first].endpoint
    ))
    .unwrap();
    both.put_node(&node(1)).await.unwrap();

    replicas[first].kill();
    let killed = Instant::now();
    let new = leader_of(&replicas, Duration::from_secs(5)).await;
    assert_eq!(new, other);
    eprintln!("new leader after {:?}", killed.elapsed());
    both.put_node(&node(2)).await.unwrap();
    assert_eq!(both.list_nodes().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_allocations_across_a_fail_over_are_unique() {
    let etcd = etcd().await;
    let mut replicas = vec![Replica::start(&etcd, "/t2"), Replica::start(&etcd, "/t2")];
    leader_of(&replicas, Duration::from_secs(10)).await;
    let client = ControllerClient::new(&format!(
        "{},{}",
        replicas[0].endpoint, replicas[1].endpoint
    ))
    .unwrap()
    .with_timeout(Duration::from_secs(2));
    // Nine nodes: each block of a segment goes to another node (a node holding two unused
    // blocks of a segment gets no third).
    for i in 0..9 {
        client.put_node(&node(i)).await.unwrap();
    }

    // Every 10th allocation is a new namespace segment (subnet + VNI), the others blocks.
    let mut segments = Vec::new();
    let mut blocks = Vec::new();
    let mut killed_at = None;
    let mut retries = 0;
    for i in 0..1000u32 {
        if i == 500 {
            let leader = leader_of(&replicas, Duration::from_secs(5)).await;
            replicas[leader].kill();
            killed_at = Some(Instant::now());
        }
        let started = Instant::now();
        loop {
            let result = if i % 10 == 0 {
                client
                    .ensure_segment(&format!("ns{}", i / 10))
                    .await
                    .map(|s| segments.push(s))
            } else {
                let segment = format!("ns-ns{}", i / 10);
                let node = format!("n{}", i % 10 - 1);
                client
                    .claim_block(&segment, &node)
                    .await
                    .map(|b| blocks.push(b))
            };
            match result {
                Ok(()) => {
                    if i == 500 {
                        if let Some(at) = killed_at {
                            eprintln!(
                                "first write after the leader kill served after {:?}",
                                at.elapsed()
                            );
                        }
                    }
                    break;
                }
                // During the fail-over no replica leads (503) or the dead one is unreachable.
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    retries += 1;
                    eprintln!("allocation {i} retried: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("allocation {i} failed for 10 s: {e}"),
            }
        }
    }
    assert!(killed_at.is_some());
    eprintln!("{retries} retries during the fail-over");

    // No subnet, VNI or block was handed out twice, and what was handed out is what is stored.
    let cidrs: BTreeSet<_> = blocks.iter().map(|b| b.cidr).collect();
    assert_eq!(cidrs.len(), blocks.len(), "a block was handed out twice");
    let vnis: BTreeSet<_> = segments.iter().map(|s| s.vni).collect();
    let subnets: BTreeSet<_> = segments.iter().map(|s| s.subnet).collect();
    assert_eq!(vnis.len(), 100, "a VNI was handed out twice");
    assert_eq!(subnets.len(), 100, "a subnet was handed out twice");
    let snapshot = client.snapshot().await.unwrap();
    let stored: BTreeSet<_> = snapshot.blocks.iter().map(|b| b.cidr).collect();
    assert!(
        cidrs.is_subset(&stored),
        "an acknowledged block is not stored"
    );
    let stored_vnis: BTreeSet<_> = snapshot.segments.iter().map(|s| s.vni).collect();
    assert_eq!(stored_vnis.len(), snapshot.segments.len());
}

/// An apply at its bounds (100 objects, a body of almost 1 MiB) is one fenced transaction that a
/// default etcd accepts (at most 128 operations, 1.5 MiB per request): the bounds are chosen so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_at_its_bounds_is_one_transaction_etcd_accepts() {
    use seam_model::bounds::{encoded_len, MAX_APPLY_OBJECTS, MAX_BODY_BYTES};
    use seam_model::{ApplyObject, Tenant};

    let etcd = etcd().await;
    let replicas = vec![Replica::start(&etcd, "/apply")];
    leader_of(&replicas, Duration::from_secs(10)).await;
    let c = replicas[0].client().with_timeout(Duration::from_secs(10));

    // `n` peers of address blocks under `first`.0.0.0/8, each with 100 exceptions.
    let blocks = |n: usize, first: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| {
                let except: Vec<String> =
                    (0..100).map(|j| format!("{first}.{i}.{j}.0/24")).collect();
                serde_json::json!({"ipBlock": {"cidr": format!("{first}.{i}.0.0/16"), "except": except}})
            })
            .collect()
    };
    let policy = |k: usize| {
        ApplyObject::Policy(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": format!("big-{k}"), "namespace": "blue"},
            "spec": {"podSelector": {}, "ingress": [{"from": blocks(100, 10)}, {"from": blocks(55, 11)}]}
        }))
    };
    let mut objects: Vec<ApplyObject> = (0..4).map(policy).collect();
    objects.extend(
        (objects.len()..MAX_APPLY_OBJECTS)
            .map(|i| ApplyObject::Tenant(Tenant::named(&format!("t{i}")))),
    );
    let body = encoded_len(&serde_json::json!({ "objects": objects }));
    assert!(
        body > MAX_BODY_BYTES * 9 / 10 && body <= MAX_BODY_BYTES,
        "the test's apply is near the body bound: {body}"
    );
    let applied = c.apply(&objects).await.unwrap();
    assert_eq!(applied.objects.len(), MAX_APPLY_OBJECTS);
    assert_eq!(c.list_policies().await.unwrap().len(), 4);
    assert_eq!(c.list_tenants().await.unwrap().len(), MAX_APPLY_OBJECTS - 4);
}
