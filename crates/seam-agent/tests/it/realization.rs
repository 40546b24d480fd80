//! What the agent reports it enforces: the generation of each policy object once a table holding
//! it is in the (fake) kernel, never one whose write failed, and the error of a policy it cannot
//! read.

use std::net::Ipv4Addr;
use std::time::Duration;

use seam_agent::Agent;
use seam_controller::ControllerConfig;
use seam_dataplane::fake::FakeKernel;
use seam_model::{ApplyObject, RealizationStatus};
use seam_store::{AnyStore, Datastore, Txn};
use serde_json::{json, Value};

use crate::harness::{add, agent_config, eventually, pod, wait_ready, Cluster, Controller};

const WEB: &str = "Contract/_/web";

fn contract(port: u16) -> Value {
    json!({
        "apiVersion": "seam.dev/v1alpha1", "kind": "Contract",
        "metadata": {"name": "web"},
        "spec": {"consumers": ["cluster"], "providers": ["cluster"],
                 "subjects": [{"filters": [{"protocol": "TCP", "ports": [port]}]}],
                 "action": "allow"}
    })
}

async fn status(ctl: &Controller) -> RealizationStatus {
    ctl.client.realization().await.unwrap()
}

/// The generation `n1` reported for `name`, and its error.
async fn reported(ctl: &Controller, name: &str) -> Option<(Option<u64>, Option<String>)> {
    let status = status(ctl).await;
    let object = status.object(name)?;
    if object.is_realized() {
        return Some((Some(object.generation), None));
    }
    let laggard = object.laggards.iter().find(|l| l.node == "n1")?;
    Some((laggard.generation, laggard.error.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_report_carries_a_generation_once_its_table_write_succeeded_and_never_before() {
    let c = Cluster::start().await;
    // A pod here, so that the contract gives this node rules (a change of it changes the table).
    add(&c.sock, &pod("web", "a")).await;
    let applied = c
        .ctl
        .client
        .apply(&[ApplyObject::Policy(contract(80))])
        .await
        .unwrap();
    let first = applied.revision.unwrap();
    eventually("n1 reports the contract's generation", || async {
        reported(&c.ctl, WEB).await == Some((Some(first), None))
    })
    .await;
    assert_eq!(status(&c.ctl).await.object(WEB).unwrap().fraction(), "1/1");

    // The kernel refuses every table write: the new generation is not reported, the failure is.
    c.kernel()
        .with_state(|s| s.fail_firewall = Some("EPERM".into()));
    let second = c
        .ctl
        .client
        .apply(&[ApplyObject::Policy(contract(443))])
        .await
        .unwrap()
        .revision
        .unwrap();
    eventually("n1 reports that its table write failed", || async {
        matches!(reported(&c.ctl, WEB).await, Some((Some(g), Some(e))) if g == first && e.contains("applying the firewall failed") && e.contains("EPERM"))
    })
    .await;
    // It keeps saying so while the kernel refuses (several retries).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (generation, _) = reported(&c.ctl, WEB).await.unwrap();
    assert_eq!(generation, Some(first));
    assert_eq!(
        c.n1.agent.realization().report().objects[WEB].generation,
        first
    );

    // The kernel takes the table again: the new generation is realized, the error gone.
    c.kernel().with_state(|s| s.fail_firewall = None);
    eventually("n1 reports the new generation", || async {
        reported(&c.ctl, WEB).await == Some((Some(second), None))
    })
    .await;
    assert!(status(&c.ctl).await.object(WEB).unwrap().is_realized());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_the_agent_cannot_read_is_reported_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::memory();
    // Written past the API (a newer Seam's): unknown inside `spec`, so never in force.
    let key = "/seam/v1/policies/NetworkPolicy/web/db";
    let future = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "web"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                 "ingress": [{"newSourceField": [{"cidr": "10.9.9.0/24"}]}]}
    });
    store
        .txn(Txn::new().put(key, serde_json::to_vec(&future).unwrap()))
        .await
        .unwrap();
    let ctl = Controller::start_with_store(
        &dir.path().join("ctl.sock"),
        ControllerConfig::default(),
        store,
    )
    .await;
    let cfg = agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl.sock);
    let sock = cfg.socket.clone();
    let _n1 = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    wait_ready(&sock).await;
    eventually("n1 reports the policy it cannot read", || async {
        matches!(reported(&ctl, "NetworkPolicy/web/db").await, Some((Some(_), Some(e))) if e.starts_with("stored policy object ignored") && e.contains("newSourceField"))
    })
    .await;
    let status = status(&ctl).await;
    let db = status.object("NetworkPolicy/web/db").unwrap();
    assert_eq!(db.fraction(), "0/1");
    assert_eq!(db.laggards[0].generation, Some(db.generation));
}
