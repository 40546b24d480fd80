//! Conditional writes (ETag / If-Match), what a refused segment delete names, and "strict at
//! the door, lenient inside" for stored objects.

use seam_client::Versioned;
use seam_controller::ControllerConfig;
use seam_model::{ObjectKind, Segment};
use seam_store::{AnyStore, Datastore, Txn, TxnOutcome};
use serde_json::json;

use crate::server::{endpoint, node, segment, Server};

#[tokio::test]
async fn a_write_with_a_stale_revision_is_a_409_naming_both_revisions() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_segment(&segment("vms", "192.168.10.0/24", 100))
        .await
        .unwrap();
    let read: Versioned<Segment> = c.get_versioned(ObjectKind::Segment, "vms").await.unwrap();

    // Two read-modify-writes from the same read: the first lands ...
    let mut first = read.object.clone();
    first.snat = true;
    c.put_if(ObjectKind::Segment, "vms", &first, read.revision)
        .await
        .unwrap();
    let now = c
        .get_versioned::<Segment>(ObjectKind::Segment, "vms")
        .await
        .unwrap();
    assert!(now.revision > read.revision);
    // ... the second is refused instead of undoing the first.
    let mut second = read.object.clone();
    second.tenant = "t2".into();
    let err = c
        .put_if(ObjectKind::Segment, "vms", &second, read.revision)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(err.is_revision_conflict(), "{err}");
    let message = err.to_string();
    assert!(message.contains("segment \"vms\""), "{message}");
    assert!(
        message.contains(&format!("is at revision {}", now.revision)),
        "{message}"
    );
    assert!(
        message.contains(&format!("expected revision {}", read.revision)),
        "{message}"
    );
    let stored = c.get_segment("vms").await.unwrap();
    assert!(stored.snat && stored.tenant == "t1", "{stored:?}");

    // Deletes too; a write without a precondition stays unconditional.
    let err = c
        .delete_if(ObjectKind::Segment, "vms", read.revision)
        .await
        .unwrap_err();
    assert!(err.is_revision_conflict(), "{err}");
    c.put_segment(&second).await.unwrap();
    let fresh = c
        .get_versioned::<Segment>(ObjectKind::Segment, "vms")
        .await
        .unwrap();
    c.delete_if(ObjectKind::Segment, "vms", fresh.revision)
        .await
        .unwrap();
    // A conditional write of an object that is gone says so.
    let err = c
        .put_if(ObjectKind::Segment, "vms", &second, fresh.revision)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no longer exists"), "{err}");
    assert!(c.get_segment("vms").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_modify_write_retries_a_concurrent_change_and_loses_nothing() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_segment(&segment("vms", "192.168.10.0/24", 100))
        .await
        .unwrap();
    // Between this update's read and its write, another writer turns SNAT on (what two
    // `seam segment` commands at once do).
    let other = c.clone();
    let mut calls = 0;
    let stored: Segment = c
        .update(ObjectKind::Segment, "vms", 3, |s: &mut Segment| {
            calls += 1;
            if calls == 1 {
                let mut concurrent = s.clone();
                concurrent.snat = true;
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current()
                        .block_on(other.put_segment(&concurrent))
                        .unwrap()
                });
            }
            s.tenant = "t2".into();
            true
        })
        .await
        .unwrap();
    assert_eq!(calls, 2, "the update read again after the conflict");
    assert!(stored.snat && stored.tenant == "t2", "{stored:?}");
    let on_server = c.get_segment("vms").await.unwrap();
    assert!(on_server.snat && on_server.tenant == "t2", "{on_server:?}");

    // A writer that never stops racing: the update gives up, says why, and writes nothing.
    let err = c
        .update(ObjectKind::Segment, "vms", 3, |s: &mut Segment| {
            let mut concurrent = s.clone();
            concurrent.snat = !concurrent.snat;
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(other.put_segment(&concurrent))
                    .unwrap()
            });
            s.tenant = "t3".into();
            true
        })
        .await
        .unwrap_err();
    assert!(err.is_revision_conflict(), "{err}");
    assert_eq!(c.get_segment("vms").await.unwrap().tenant, "t2");
}

#[tokio::test]
async fn deleting_a_segment_in_use_names_what_uses_it() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    c.put_segment(&segment("vms", "192.168.10.0/24", 100))
        .await
        .unwrap();
    let block = c.claim_block("vms", "n1").await.unwrap();
    // 25 pods need two /28 blocks of n1 (pod addresses must lie in their node's blocks).
    let second = c.claim_block("vms", "n1").await.unwrap();
    let addresses = block
        .cidr
        .hosts()
        .chain(second.cidr.hosts())
        .filter(|ip| *ip != std::net::Ipv4Addr::new(192, 168, 10, 1));
    for (i, ip) in addresses.take(25).enumerate() {
        let name = format!("default/web-{i:02}");
        c.put_endpoint(&endpoint(&name, "vms", "n1", ip.octets()))
            .await
            .unwrap();
    }
    let err = c.delete_segment("vms").await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    let message = err.to_string();
    assert!(message.contains(&block.key()), "{message}");
    assert!(message.contains(&second.key()), "{message}");
    for i in 0..18u8 {
        let name = format!("default/web-{i:02}");
        assert!(message.contains(&name), "{name} missing: {message}");
    }
    // Bounded: 2 blocks + 25 endpoints, 20 named.
    assert!(message.contains("and 7 more"), "{message}");
    assert!(c.get_segment("vms").await.is_ok());
}

#[tokio::test]
async fn the_api_refuses_unknown_fields_but_stored_ones_are_tolerated() {
    let store = AnyStore::memory();
    let srv = Server::start(ControllerConfig::default(), store.clone()).await;
    let c = &srv.client;

    // The door: a typo in a body is an error naming the field, for every kind.
    let bodies = [
        (
            "/v1/nodes/n1",
            json!({"name": "n1", "underlayIp": "198.18.0.1", "zone": "a"}),
            "zone",
        ),
        (
            "/v1/segments/vms",
            json!({"name": "vms", "tenant": "t1", "subnet": "192.168.10.0/24",
                   "gateway": "192.168.10.1", "vni": 100, "blockPrefix": 28, "snta": true}),
            "snta",
        ),
        (
            "/v1/namespaces/web",
            json!({"name": "web", "lables": {}}),
            "lables",
        ),
        (
            "/v1/tenants/t1",
            json!({"name": "t1", "isolaton": "flat"}),
            "isolaton",
        ),
        (
            "/v1/policies/NetworkPolicy/web/p",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": "p", "namespace": "web"},
                   "spec": {"podSelector": {}, "futureMode": "strict"}}),
            "futureMode",
        ),
    ];
    for (path, body, field) in bodies {
        let r = c
            .request_raw("PUT", path, serde_json::to_vec(&body).unwrap())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 400, "{path}: {text}");
        assert!(
            text.contains(&format!("unknown field `{field}`")),
            "{path}: {text}"
        );
    }
    assert!(c.list_nodes().await.unwrap().is_empty());

    // Inside: what a newer controller stored is read, and the controller's own writes that
    // read it (an endpoint checks its segment and node) still work.
    let objects = [
        (
            "/seam/v1/nodes/n1",
            json!({"name": "n1", "underlayIp": "198.18.0.1", "zone": "a"}),
        ),
        (
            "/seam/v1/segments/vms",
            json!({"name": "vms", "tenant": "t1", "subnet": "192.168.10.0/24",
                   "gateway": "192.168.10.1", "vni": 100, "blockPrefix": 28, "mtu": 9000}),
        ),
    ];
    let mut txn = Txn::new();
    for (key, value) in &objects {
        txn = txn.put(*key, serde_json::to_vec(value).unwrap());
    }
    assert!(matches!(
        store.txn(txn).await.unwrap(),
        TxnOutcome::Committed { .. }
    ));
    assert_eq!(c.get_node("n1").await.unwrap().name, "n1");
    let snapshot = c.snapshot().await.unwrap();
    assert_eq!((snapshot.nodes.len(), snapshot.segments.len()), (1, 1));
    c.claim_block("vms", "n1").await.unwrap();
    c.put_endpoint(&endpoint("default/web-0", "vms", "n1", [192, 168, 10, 5]))
        .await
        .unwrap();
}

/// A write that does not honour `If-Match` refuses it rather than carry the request out
/// unconditionally.
#[tokio::test]
async fn if_match_on_a_write_that_cannot_honour_it_is_refused_with_nothing_changed() {
    use axum::body::Body;
    use tower::ServiceExt;

    let c =
        seam_controller::Controller::new(ControllerConfig::default(), AnyStore::memory()).unwrap();
    c.put_node(node("n1", 1)).await.unwrap();
    c.put_segment(segment("vms", "192.168.10.0/24", 100))
        .await
        .unwrap();
    let block = c.claim_block("vms", "n1").await.unwrap();
    let path = format!("/v1/blocks/{}", block.key());
    let request = axum::http::Request::delete(path.as_str())
        .header("If-Match", "\"1\"")
        .body(Body::empty())
        .unwrap();
    let resp = seam_controller::router_as(
        c.clone(),
        seam_controller::Caller::Known(seam_model::Identity::local_admin()),
    )
    .oneshot(request)
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(c.snapshot().await.unwrap().blocks, vec![block]);
}
