//! The watch stream: order, resume, deletes, compaction.

use std::time::Duration;

use seam_client::{ClientError, WatchStream};
use seam_controller::ControllerConfig;
use seam_model::{ObjectKind, WatchEvent};
use seam_store::{AnyStore, MemoryStore, StoreConfig};

use crate::server::{node, segment, Server};

async fn next(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("no watch event within 5s")
        .expect("watch ended")
        .expect("watch failed")
}

#[tokio::test]
async fn watch_sees_changes_in_order_and_resumes() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let start = c.snapshot().await.unwrap().revision;
    let mut w = c.watch(start + 1).await.unwrap();

    c.put_node(&node("n1", 1)).await.unwrap();
    c.put_segment(&segment("vms", "192.168.0.0/24", 9))
        .await
        .unwrap();
    let block = c.claim_block("vms", "n1").await.unwrap();
    c.release_block_held_by(&block.key(), "n1").await.unwrap();
    c.delete_node("n1").await.unwrap();

    let events = [
        next(&mut w).await,
        next(&mut w).await,
        next(&mut w).await,
        next(&mut w).await,
        next(&mut w).await,
    ];
    let seen: Vec<(ObjectKind, &str, bool)> = events
        .iter()
        .map(|e| (e.kind, e.name.as_str(), e.object.is_some()))
        .collect();
    assert_eq!(
        seen,
        [
            (ObjectKind::Node, "n1", true),
            (ObjectKind::Segment, "vms", true),
            (ObjectKind::Block, block.key().as_str(), true),
            (ObjectKind::Block, block.key().as_str(), false),
            (ObjectKind::Node, "n1", false),
        ]
    );
    assert!(events.windows(2).all(|p| p[0].revision < p[1].revision));
    let n1: seam_model::Node = serde_json::from_value(events[0].object.clone().unwrap()).unwrap();
    assert_eq!(n1, node("n1", 1));
    assert_eq!(w.last_revision(), Some(events[4].revision));

    // Resuming from the third event replays from there.
    let mut resumed = c.watch(events[2].revision).await.unwrap();
    assert_eq!(next(&mut resumed).await, events[2]);
    assert_eq!(next(&mut resumed).await, events[3]);
    assert_eq!(next(&mut resumed).await, events[4]);
    srv.stop().await;
}

#[tokio::test]
async fn watch_from_compacted_revision_is_gone() {
    let store = MemoryStore::with_config(StoreConfig {
        history: 3,
        ..StoreConfig::default()
    });
    let srv = Server::start(ControllerConfig::default(), AnyStore::from(store)).await;
    let c = &srv.client;
    for i in 1..=10u8 {
        c.put_node(&node(&format!("n{i}"), i)).await.unwrap();
    }
    let err = c.watch(1).await.unwrap_err();
    assert!(matches!(err, ClientError::Gone { .. }), "{err}");
    assert_eq!(err.status(), Some(410));
    // Re-listing and watching from the snapshot works.
    let snap = c.snapshot().await.unwrap();
    assert_eq!(snap.nodes.len(), 10);
    let mut w = c.watch(snap.revision + 1).await.unwrap();
    c.delete_node("n1").await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.name.as_str(), e.object),
        (ObjectKind::Node, "n1", None)
    );
    srv.stop().await;
}

#[tokio::test]
async fn bad_watch_query_is_invalid() {
    let srv = Server::memory().await;
    let resp = srv
        .client
        .request_raw("GET", "/v1/watch?revision=abc", Vec::new())
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    srv.stop().await;
}

/// An idle stream sends an empty line every ten seconds (paused clock: no real waiting).
#[tokio::test(start_paused = true)]
async fn idle_watch_sends_heartbeats() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let c =
        seam_controller::Controller::new(ControllerConfig::default(), AnyStore::memory()).unwrap();
    let request = axum::http::Request::get("/v1/watch?revision=0")
        .body(Body::empty())
        .unwrap();
    let resp = seam_controller::router_as(
        c.clone(),
        seam_controller::Caller::Known(seam_model::Identity::local_admin()),
    )
    .oneshot(request)
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let before = tokio::time::Instant::now();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&frame[..], b"\n");
    assert!(before.elapsed() >= seam_controller::HEARTBEAT_INTERVAL);
    // Stopping watches ends the stream.
    c.stop_watches();
    assert!(body.frame().await.is_none());
}

/// A watch that receives nothing, not even a heartbeat, fails instead of hanging.
#[tokio::test]
async fn silent_watch_times_out_on_the_client() {
    let srv = Server::memory().await;
    let client = srv
        .client
        .clone()
        .with_watch_idle_timeout(Duration::from_millis(200));
    let mut w = client.watch(0).await.unwrap();
    let err = w.next().await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(w.next().await.is_none());
    srv.stop().await;
}

/// A malformed object in the store (written by hand into etcd, say) is skipped with a log line by
/// the snapshot and the watch, so agents keep syncing everything else.
#[tokio::test]
async fn a_corrupt_stored_object_is_skipped_by_snapshot_and_watch() {
    use seam_store::{Datastore, Op, Txn};

    let store = AnyStore::memory();
    let c = seam_controller::Controller::new(ControllerConfig::default(), store.clone()).unwrap();
    let client_before = c.snapshot().await.unwrap();
    let mut corrupt = Txn::new();
    corrupt.success.push(Op::Put {
        key: "/seam/v1/endpoints/blue/broken".into(),
        value: b"{not json".to_vec(),
        lease: None,
    });
    store.txn(corrupt).await.unwrap();
    let snap = c.snapshot().await.unwrap();
    assert!(snap.revision > client_before.revision);
    assert!(snap.endpoints.is_empty(), "{:?}", snap.endpoints);
}

/// Stored policy objects are served as stored: one a reader cannot read (a kind or version a
/// newer Seam added, or not a policy at all) still reaches it, and the reader (seam-client) keeps
/// it apart by name rather than losing it; a field it does not know outside `spec` is dropped, and
/// every other object still syncs.
#[tokio::test]
async fn a_stored_policy_a_reader_cannot_read_is_served_and_kept_apart_by_name() {
    use seam_store::{Datastore, Op, Txn};

    let store = AnyStore::memory();
    let srv = Server::start(ControllerConfig::default(), store.clone()).await;
    let np = |name: &str| {
        serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "web"}, "spec": {"podSelector": {}}})
    };
    let mut newer = np("newer");
    newer["metadata"]["generation"] = serde_json::json!(3);
    let mut future = np("future");
    future["apiVersion"] = serde_json::json!("networking.k8s.io/v2");
    let broken = serde_json::json!([1, 2]);
    let mut txn = Txn::new();
    for (name, value) in [
        ("broken", &broken),
        ("future", &future),
        ("newer", &newer),
        ("ok", &np("ok")),
    ] {
        txn.success.push(Op::Put {
            key: format!("/seam/v1/policies/NetworkPolicy/web/{name}"),
            value: serde_json::to_vec(value).unwrap(),
            lease: None,
        });
    }
    store.txn(txn).await.unwrap();
    // The controller serves all four as stored ...
    let c = seam_controller::Controller::new(ControllerConfig::default(), store.clone()).unwrap();
    let served = c.snapshot().await.unwrap().policies;
    assert_eq!(served, [broken, future, newer, np("ok")]);
    // ... and its reader types the two it can, keeping the other two apart with why.
    let snap = srv.client.snapshot().await.unwrap();
    let names: Vec<&str> = snap
        .policies
        .iter()
        .map(|p| p.metadata().name.as_str())
        .collect();
    assert_eq!(names, ["newer", "ok"]);
    let unreadable: Vec<Option<&str>> = snap
        .unreadable_policies
        .iter()
        .map(|u| u.name.as_deref())
        .collect();
    assert_eq!(unreadable, [None, Some("NetworkPolicy/web/future")]);
    assert!(
        snap.unreadable_policies[1]
            .error
            .contains("unsupported object kind"),
        "{:?}",
        snap.unreadable_policies
    );
    srv.stop().await;
}
