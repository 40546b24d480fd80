//! 410 Gone makes the watcher re-list, and the end state is still right; bookmarks let a watch
//! resume where it was without a re-list.

use seam_k8s::WatchedKind as K;
use serde_json::json;

use crate::apiserver::{ApiServer, GoneMode};
use crate::harness::{eventually, namespace, netpol, port_of, Env};

async fn gone_forces_a_relist(mode: GoneMode) {
    let api = ApiServer::start().await;
    api.set_gone_mode(mode);
    api.apply(K::Namespace, namespace("shop", json!({}), json!({})));
    api.apply(K::NetworkPolicy, netpol("shop", "a", 1));
    api.apply(K::NetworkPolicy, netpol("shop", "b", 2));
    let env = Env::start(api).await;
    env.wait_policy("NetworkPolicy", Some("shop"), "a", |_| true)
        .await;
    env.wait_policy("NetworkPolicy", Some("shop"), "b", |_| true)
        .await;
    eventually("the policy watch open", || async {
        (env.api.watchers(K::NetworkPolicy) == 1).then_some(())
    })
    .await;
    let lists = env.api.lists(K::NetworkPolicy);

    // Changes the watch never sees, then the history is compacted and the watch cut: the
    // watcher comes back with a resourceVersion that is too old.
    env.api.delete_unseen(K::NetworkPolicy, "shop/a");
    env.api
        .apply_unseen(K::NetworkPolicy, netpol("shop", "b", 20));
    env.api
        .apply_unseen(K::NetworkPolicy, netpol("shop", "c", 3));
    env.api.compact_and_disconnect(K::NetworkPolicy);

    env.wait_policy_gone("NetworkPolicy", Some("shop"), "a")
        .await;
    env.wait_policy("NetworkPolicy", Some("shop"), "b", |p| {
        port_of(p) == Some(20)
    })
    .await;
    env.wait_policy("NetworkPolicy", Some("shop"), "c", |_| true)
        .await;
    assert!(
        env.api.lists(K::NetworkPolicy) > lists,
        "no re-list after 410"
    );

    // And the new watch delivers changes again.
    env.api.apply(K::NetworkPolicy, netpol("shop", "d", 4));
    env.wait_policy("NetworkPolicy", Some("shop"), "d", |_| true)
        .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_as_an_error_event_forces_a_relist() {
    gone_forces_a_relist(GoneMode::Event).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_as_http_410_forces_a_relist() {
    gone_forces_a_relist(GoneMode::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_let_a_watch_resume_without_a_relist() {
    let api = ApiServer::start().await;
    api.apply(K::NetworkPolicy, netpol("shop", "a", 1));
    let env = Env::start(api).await;
    env.wait_policy("NetworkPolicy", Some("shop"), "a", |_| true)
        .await;
    eventually("the policy watch open", || async {
        (env.api.watchers(K::NetworkPolicy) == 1).then_some(())
    })
    .await;
    let lists = env.api.lists(K::NetworkPolicy);

    // Other kinds move the resourceVersion on; only the bookmark tells the policy watcher.
    env.api.apply(
        K::Service,
        json!({"metadata": {"name": "x", "namespace": "shop"}, "spec": {}}),
    );
    let bookmark = env.api.bookmark(K::NetworkPolicy);
    // Everything before the bookmark is forgotten: resuming from an older version would be 410.
    env.api.compact_and_disconnect(K::NetworkPolicy);
    env.api.apply(K::NetworkPolicy, netpol("shop", "b", 2));

    env.wait_policy("NetworkPolicy", Some("shop"), "b", |_| true)
        .await;
    assert_eq!(env.api.lists(K::NetworkPolicy), lists, "re-listed");
    assert_eq!(
        env.api.watch_versions(K::NetworkPolicy).last(),
        Some(&bookmark),
        "the watch did not resume from the bookmark"
    );
    env.stop().await;
}
