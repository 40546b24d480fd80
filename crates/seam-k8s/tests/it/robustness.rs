//! Malformed objects are skipped, refused objects are logged and left, a controller outage is
//! retried, and a controller that lost its store is filled again.

use std::time::Duration;

use seam_k8s::WatchedKind as K;
use serde_json::json;

use crate::apiserver::ApiServer;
use crate::harness::{eventually, namespace, netpol, port_of, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_refused_objects_are_skipped_and_later_ones_flow() {
    let api = ApiServer::start().await;
    api.apply(K::Namespace, namespace("shop", json!({}), json!({})));
    // In the first list: a Pod that does not decode, a NetworkPolicy with malformed metadata,
    // and one Seam refuses (a field seam-policy does not know).
    api.apply(
        K::Pod,
        json!({"metadata": {"name": "bad", "namespace": "shop"}, "spec": {"containers": "nope"}}),
    );
    api.apply(
        K::NetworkPolicy,
        json!({"metadata": {"name": "bad-meta", "namespace": "shop", "labels": 5}, "spec": {}}),
    );
    let mut refused = netpol("shop", "refused", 80);
    refused["spec"]["bogus"] = json!(true);
    api.apply(K::NetworkPolicy, refused);
    api.apply(K::NetworkPolicy, netpol("shop", "good1", 1));
    let env = Env::start(api).await;

    env.wait_policy("NetworkPolicy", Some("shop"), "good1", |_| true)
        .await;
    assert_eq!(
        env.policy("NetworkPolicy", Some("shop"), "bad-meta").await,
        None
    );
    assert_eq!(
        env.policy("NetworkPolicy", Some("shop"), "refused").await,
        None
    );

    // The same through the watch.
    env.api.apply(
        K::NetworkPolicy,
        json!({"metadata": {"name": "bad2", "namespace": "shop", "annotations": [1]}, "spec": {}}),
    );
    env.api.apply(
        K::Pod,
        json!({"metadata": {"name": "bad2", "namespace": "shop"}, "spec": 7}),
    );
    let mut refused2 = netpol("shop", "refused2", 80);
    refused2["spec"]["policyTypes"] = json!(["Sideways"]);
    env.api.apply(K::NetworkPolicy, refused2);
    env.api.apply(K::NetworkPolicy, netpol("shop", "good2", 2));
    env.wait_policy("NetworkPolicy", Some("shop"), "good2", |_| true)
        .await;
    assert_eq!(
        env.policy("NetworkPolicy", Some("shop"), "bad2").await,
        None
    );
    assert_eq!(
        env.policy("NetworkPolicy", Some("shop"), "refused2").await,
        None
    );

    // A refused object that is fixed goes through.
    env.api
        .apply(K::NetworkPolicy, netpol("shop", "refused", 80));
    env.wait_policy("NetworkPolicy", Some("shop"), "refused", |p| {
        port_of(p) == Some(80)
    })
    .await;

    // A re-list with the malformed objects still in it delivers the good ones.
    env.api
        .apply_unseen(K::NetworkPolicy, netpol("shop", "good3", 3));
    env.api.compact_and_disconnect(K::NetworkPolicy);
    env.wait_policy("NetworkPolicy", Some("shop"), "good3", |_| true)
        .await;
    assert!(env
        .policy("NetworkPolicy", Some("shop"), "good1")
        .await
        .is_some());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_outage_is_retried_and_a_fresh_controller_is_filled_again() {
    let api = ApiServer::start().await;
    api.apply(
        K::Namespace,
        namespace("shop", json!({"team": "a"}), json!({})),
    );
    api.apply(K::NetworkPolicy, netpol("shop", "a", 1));
    api.apply(
        K::Tenant,
        json!({"metadata": {"name": "t1"}, "spec": {"global": true}}),
    );
    // The adapter starts before any controller exists.
    let mut env = Env::adapter_only(api);
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.start_controller().await;
    env.wait_policy("NetworkPolicy", Some("shop"), "a", |_| true)
        .await;

    // The controller goes away; Kubernetes changes meanwhile.
    env.stop_controller().await;
    env.api.apply(K::NetworkPolicy, netpol("shop", "b", 2));
    env.api.apply(K::NetworkPolicy, netpol("shop", "a", 10));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A controller with an empty store comes back: everything is applied again, latest state.
    env.start_controller().await;
    env.wait_policy("NetworkPolicy", Some("shop"), "a", |p| {
        port_of(p) == Some(10)
    })
    .await;
    env.wait_policy("NetworkPolicy", Some("shop"), "b", |_| true)
        .await;
    let c = env.client.clone();
    eventually("namespace and tenant again", || async {
        let ns = c.get_namespace("shop").await.ok()?;
        let t = c.get_tenant("t1").await.ok()?;
        (ns.labels.get("team").map(String::as_str) == Some("a") && t.global).then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_deleted_while_the_adapter_was_away_are_removed_at_start() {
    let api = ApiServer::start().await;
    api.apply(K::NetworkPolicy, netpol("shop", "stays", 1));
    api.apply(K::NetworkPolicy, netpol("shop", "goes", 2));
    let env = Env::start(api).await;
    env.wait_policy("NetworkPolicy", Some("shop"), "goes", |_| true)
        .await;
    // A policy applied by hand (not by the adapter) must survive the clean-up.
    env.client
        .put_policy(
            "NetworkPolicy",
            Some("shop"),
            "by-hand",
            &json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "by-hand", "namespace": "shop"},
                    "spec": {"podSelector": {}}}),
        )
        .await
        .unwrap();

    // The adapter is down while `goes` is deleted in Kubernetes; a new one starts.
    let mut env = env;
    env.restart_adapter(|api| api.delete(K::NetworkPolicy, "shop/goes"))
        .await;
    env.wait_policy_gone("NetworkPolicy", Some("shop"), "goes")
        .await;
    assert!(env
        .policy("NetworkPolicy", Some("shop"), "stays")
        .await
        .is_some());
    assert!(env
        .policy("NetworkPolicy", Some("shop"), "by-hand")
        .await
        .is_some());
    env.stop().await;
}
