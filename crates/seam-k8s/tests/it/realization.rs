//! The `Ready` condition the adapter writes into the status of Seam's CRDs: False until every
//! node enforces the version Kubernetes holds, then True with that `observedGeneration`. The
//! controller's nodes and their reports are written by the test (playing the agents); the
//! Kubernetes side is the stand-in API server (there is no kube-apiserver here).

use seam_k8s::WatchedKind as K;
use seam_model::{Node, NodeRealization, NodeRole, ObjectRealization};
use serde_json::{json, Value};

use crate::apiserver::ApiServer;
use crate::harness::{eventually, Env};

fn contract(generation: i64, port: u16) -> Value {
    json!({
        "metadata": {"name": "web", "generation": generation},
        "spec": {"consumers": ["cluster"], "providers": ["cluster"],
                 "subjects": [{"filters": [{"protocol": "TCP", "ports": [port]}]}],
                 "action": "allow"}
    })
}

/// Node `n1` reports it enforces what the controller holds now.
async fn n1_enforces_everything(env: &Env) {
    let snapshot = env.client.snapshot().await.unwrap();
    let report = NodeRealization {
        node: "n1".into(),
        objects: snapshot
            .generations
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    ObjectRealization {
                        generation: *g,
                        error: None,
                    },
                )
            })
            .collect(),
        error: None,
    };
    env.client.put_realization(&report).await.unwrap();
}

/// The Ready condition of `web` once it says `status` with `observed` and a message that
/// starts with `message`.
async fn ready(env: &Env, status: &str, observed: Option<i64>, message: &str) -> Value {
    eventually(
        &format!("Contract web Ready={status} at {observed:?}: {message}"),
        || async {
            let object = env.api.get(K::Contract, "web")?;
            let condition = object.pointer("/status/conditions/0")?.clone();
            (condition["type"] == "Ready"
                && condition["status"] == status
                && condition.get("observedGeneration").and_then(Value::as_i64) == observed
                && condition["message"].as_str()?.starts_with(message))
            .then_some(condition)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_is_ready_once_every_node_enforces_its_generation() {
    let env = Env::start(ApiServer::start().await).await;
    for (name, octet) in [("n1", 1), ("n2", 2)] {
        env.client
            .put_node(&Node {
                name: name.into(),
                underlay_ip: [198, 18, 0, octet].into(),
                role: NodeRole::Worker,
                transit_encap: Default::default(),
                underlay_prefix_len: None,
                underlay_mac: None,
                segment_encap: Default::default(),
            })
            .await
            .unwrap();
    }
    env.api.apply(K::Contract, contract(1, 80));
    env.wait_policy("Contract", None, "web", |_| true).await;

    // Nobody enforces it yet.
    let condition = ready(
        &env,
        "False",
        None,
        "realized on 0/2 nodes; n1 has not reported; n2 has not reported",
    )
    .await;
    assert_eq!(condition["reason"], "Realizing");
    // One node does: still not ready, the other is named.
    n1_enforces_everything(&env).await;
    ready(
        &env,
        "False",
        None,
        "realized on 1/2 nodes; n2 has not reported",
    )
    .await;

    // n2 is gone from the cluster (deleted): n1 is every node that must enforce it.
    env.client.delete_node("n2").await.unwrap();
    let condition = ready(&env, "True", Some(1), "realized on 1/1 nodes").await;
    assert_eq!(condition["reason"], "Realized");
    assert_eq!(condition["message"], "realized on 1/1 nodes");
    assert!(condition["lastTransitionTime"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    // A new generation: not ready until n1 enforces it; generation 1 is still the one realized.
    env.api.apply(K::Contract, contract(2, 443));
    env.wait_policy("Contract", None, "web", |p| {
        p.pointer("/spec/subjects/0/filters/0/ports/0") == Some(&json!(443))
    })
    .await;
    ready(
        &env,
        "False",
        Some(1),
        "realized on 0/1 nodes; n1 at generation",
    )
    .await;
    n1_enforces_everything(&env).await;
    ready(&env, "True", Some(2), "realized on 1/1 nodes").await;
    env.stop().await;
}
