//! Authorization, the audit log and per-client limits, through the router with the caller a
//! listener would attach.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use seam_controller::{router_as, Caller, Controller, ControllerConfig, Limits};
use seam_model::{AuditRecord, CallerRole, Identity};
use seam_store::AnyStore;
use serde_json::Value;
use tower::ServiceExt;

use crate::server::{endpoint, node, segment};

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    retry_after: Option<String>,
    pub(crate) body: Value,
}

pub(crate) async fn send(
    c: &Controller,
    caller: Caller,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = router_as(c.clone(), caller).oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

pub(crate) fn node_caller(name: &str) -> Caller {
    Caller::Known(Identity::node(name, 1))
}

fn admin() -> Caller {
    Caller::Known(Identity::local_admin())
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> Option<Value> {
    Some(serde_json::to_value(value).unwrap())
}

/// A store in which `nodes` have joined (epoch 1), as their certificates say: the identity
/// records a node caller's requests are checked against.
pub(crate) async fn joined_store(nodes: &[&str]) -> AnyStore {
    let store = AnyStore::memory();
    for name in nodes {
        let record = seam_model::NodeIdentity {
            node: name.to_string(),
            epoch: 1,
            revoked: false,
            joined_at: "2026-12-07T00:00:00Z".to_string(),
        };
        let txn = seam_store::Txn::default().put(
            seam_controller::identities::identity_key(name),
            serde_json::to_vec(&record).unwrap(),
        );
        seam_store::Datastore::txn(&store, txn).await.unwrap();
    }
    store
}

/// Two nodes, a segment and one block of each.
async fn cluster() -> (Controller, seam_model::Block, seam_model::Block) {
    let store = joined_store(&["n1", "n2"]).await;
    let c = Controller::new(ControllerConfig::default(), store).unwrap();
    c.put_node(node("n1", 1)).await.unwrap();
    c.put_node(node("n2", 2)).await.unwrap();
    c.put_segment(segment("s1", "192.168.0.0/24", 7))
        .await
        .unwrap();
    let b1 = c.claim_block("s1", "n1").await.unwrap();
    let b2 = c.claim_block("s1", "n2").await.unwrap();
    (c, b1, b2)
}

pub(crate) fn assert_forbidden(answer: &Answer, rule: &str) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(answer.body["reason"], "Forbidden", "{}", answer.body);
    let message = answer.body["message"].as_str().unwrap();
    assert!(message.contains(rule), "{message:?} should name {rule:?}");
}

#[tokio::test]
async fn a_node_may_not_write_another_nodes_node_object() {
    let (c, _, _) = cluster().await;
    let before = c
        .get_json_versioned(seam_model::ObjectKind::Node, "n1")
        .await
        .unwrap();
    let mut hijack = node("n1", 1);
    hijack.underlay_ip = "10.9.9.9".parse().unwrap();
    let answer = send(&c, node_caller("n2"), "PUT", "/v1/nodes/n1", json(&hijack)).await;
    assert_forbidden(&answer, "node n2 may not write node n1");
    let answer = send(&c, node_caller("n2"), "DELETE", "/v1/nodes/n1", None).await;
    assert_forbidden(&answer, "node n2 may not write node n1");
    // Nothing changed: the object and its revision are the old ones.
    let get = send(&c, node_caller("n2"), "GET", "/v1/nodes/n1", None).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.body, before.0);
    let after = c
        .get_json_versioned(seam_model::ObjectKind::Node, "n1")
        .await
        .unwrap();
    assert_eq!(after.1, before.1);
    // Its own Node object it may write.
    let mut own = node("n2", 2);
    own.underlay_ip = "10.0.0.22".parse().unwrap();
    let answer = send(&c, node_caller("n2"), "PUT", "/v1/nodes/n2", json(&own)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // The body's name must be the path's, so the path decides whose object it is.
    let answer = send(&c, node_caller("n2"), "PUT", "/v1/nodes/n2", json(&hijack)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(
        c.get_json_versioned(seam_model::ObjectKind::Node, "n1")
            .await
            .unwrap(),
        before
    );
}

#[tokio::test]
async fn a_node_writes_only_endpoints_on_itself() {
    let (c, b1, b2) = cluster().await;
    let mine = endpoint(
        "default/a",
        "s1",
        "n1",
        b1.cidr.hosts().nth(2).unwrap().octets(),
    );
    let path = "/v1/endpoints/default/a";
    let answer = send(&c, node_caller("n1"), "PUT", path, json(&mine)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // n2 writing an endpoint on n1, replacing n1's with one on itself, deleting n1's.
    let theirs = endpoint(
        "default/b",
        "s1",
        "n1",
        b1.cidr.hosts().nth(3).unwrap().octets(),
    );
    let answer = send(
        &c,
        node_caller("n2"),
        "PUT",
        "/v1/endpoints/default/b",
        json(&theirs),
    )
    .await;
    assert_forbidden(
        &answer,
        "node n2 may not write endpoint \"default/b\" of node n1",
    );
    let stolen = endpoint(
        "default/a",
        "s1",
        "n2",
        b2.cidr.hosts().nth(2).unwrap().octets(),
    );
    let answer = send(&c, node_caller("n2"), "PUT", path, json(&stolen)).await;
    assert_forbidden(
        &answer,
        "node n2 may not write endpoint \"default/a\" of node n1",
    );
    let answer = send(&c, node_caller("n2"), "DELETE", path, None).await;
    assert_forbidden(
        &answer,
        "node n2 may not delete endpoint \"default/a\" of node n1",
    );
    let stored: Vec<seam_model::Endpoint> = c.snapshot().await.unwrap().endpoints;
    assert_eq!(stored, vec![mine.clone()]);

    // The adapter relabels it (a pod's labels, named ports and readiness), and does nothing
    // else to it: no other field, no new endpoint, no delete.
    let adapter = Caller::Known(Identity::of(CallerRole::Adapter, "seam-k8s"));
    let mut relabelled = mine.clone();
    relabelled.labels.insert("app".into(), "web".into());
    relabelled.ports.push(seam_model::ContainerPort {
        name: "http".into(),
        port: 8080,
        protocol: seam_model::PortProtocol::Tcp,
    });
    let answer = send(&c, adapter.clone(), "PUT", path, json(&relabelled)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // Its conditions too: the pod fails its readiness probe, then is deleted while Ready (its
    // grace period). Another node may not set them.
    let conditions = |ready, serving, terminating| {
        Some(seam_model::EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        })
    };
    let mut not_ready = relabelled.clone();
    not_ready.conditions = conditions(false, false, false);
    let answer = send(&c, adapter.clone(), "PUT", path, json(&not_ready)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let mut terminating = relabelled.clone();
    terminating.conditions = conditions(false, true, true);
    let answer = send(&c, node_caller("n2"), "PUT", path, json(&terminating)).await;
    assert_forbidden(
        &answer,
        "node n2 may not write endpoint \"default/a\" of node n1",
    );
    let stored: Vec<seam_model::Endpoint> = c.snapshot().await.unwrap().endpoints;
    assert_eq!(stored, vec![not_ready.clone()]);
    let answer = send(&c, adapter.clone(), "PUT", path, json(&terminating)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let stored: Vec<seam_model::Endpoint> = c.snapshot().await.unwrap().endpoints;
    let state = stored[0].state();
    assert!(
        state.serving && state.terminating && !state.ready,
        "{state:?}"
    );
    let mut moved = relabelled.clone();
    moved.ip = b1.cidr.hosts().nth(9).unwrap();
    moved.mac = seam_model::endpoint_mac(moved.ip);
    let answer = send(&c, adapter.clone(), "PUT", path, json(&moved)).await;
    assert_forbidden(
        &answer,
        "adapter seam-k8s may only change the labels, ports and conditions of an existing endpoint",
    );
    let answer = send(
        &c,
        adapter.clone(),
        "PUT",
        "/v1/endpoints/default/b",
        json(&theirs),
    )
    .await;
    assert_forbidden(
        &answer,
        "adapter seam-k8s may only change the labels, ports and conditions of an existing endpoint",
    );
    let answer = send(&c, adapter, "DELETE", path, None).await;
    assert_forbidden(&answer, "adapter seam-k8s may not DELETE endpoints");

    // Its own it may delete.
    let answer = send(&c, node_caller("n1"), "DELETE", path, None).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
}

#[tokio::test]
async fn a_node_claims_and_releases_only_its_own_blocks() {
    let (c, b1, b2) = cluster().await;
    let claim = serde_json::json!({"segment": "s1", "node": "n1"});
    let answer = send(
        &c,
        node_caller("n2"),
        "POST",
        "/v1/claim-block",
        Some(claim.clone()),
    )
    .await;
    assert_forbidden(&answer, "node n2 may not claim a block for node n1");
    let answer = send(
        &c,
        node_caller("n1"),
        "POST",
        "/v1/claim-block",
        Some(claim),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let b3: seam_model::Block = serde_json::from_value(answer.body).unwrap();

    // n2 releasing n1's block, with or without naming n1.
    for path in [
        format!("/v1/blocks/{}", b1.key()),
        format!("/v1/blocks/{}?node=n1", b1.key()),
        format!("/v1/blocks/{}?node=n2", b1.key()),
    ] {
        let answer = send(&c, node_caller("n2"), "DELETE", &path, None).await;
        assert_forbidden(&answer, "node n2 may not release");
    }
    let blocks = c.snapshot().await.unwrap().blocks;
    assert_eq!(blocks.len(), 3);
    // Its own it may.
    let answer = send(
        &c,
        node_caller("n2"),
        "DELETE",
        &format!("/v1/blocks/{}", b2.key()),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_eq!(c.snapshot().await.unwrap().blocks, vec![b1, b3]);
}

#[tokio::test]
async fn readers_read_and_anonymous_callers_only_join() {
    let (c, _, _) = cluster().await;
    let reader = Caller::Known(Identity::of(CallerRole::Reader, "alice"));
    let answer = send(&c, reader.clone(), "GET", "/v1/nodes", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.as_array().unwrap().len(), 2);
    for (method, path, body) in [
        ("PUT", "/v1/nodes/n1", json(&node("n1", 1))),
        (
            "PUT",
            "/v1/segments/s2",
            json(&segment("s2", "192.168.1.0/24", 8)),
        ),
        ("DELETE", "/v1/nodes/n2", None),
        (
            "POST",
            "/v1/ensure-segment",
            Some(serde_json::json!({"namespace": "x"})),
        ),
        (
            "POST",
            "/v1/apply",
            Some(serde_json::json!({"objects": []})),
        ),
    ] {
        let answer = send(&c, reader.clone(), method, path, body).await;
        assert_forbidden(&answer, "reader alice may only read");
    }

    let answer = send(&c, Caller::Anonymous, "GET", "/v1/nodes", None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["reason"], "Unauthenticated");
    assert!(answer.body["message"]
        .as_str()
        .unwrap()
        .contains("client certificate"));
    let answer = send(&c, Caller::Anonymous, "GET", "/healthz", None).await;
    assert_eq!(answer.status, StatusCode::OK);

    // The adapter writes what it translates from Kubernetes, not nodes.
    let adapter = Caller::Known(Identity::of(CallerRole::Adapter, "seam-k8s"));
    let answer = send(
        &c,
        adapter.clone(),
        "PUT",
        "/v1/namespaces/web",
        Some(serde_json::json!({"name": "web"})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = send(&c, adapter, "PUT", "/v1/nodes/n1", json(&node("n1", 1))).await;
    assert_forbidden(&answer, "adapter seam-k8s may not PUT nodes");
    assert_eq!(c.snapshot().await.unwrap().segments.len(), 1);
}

#[tokio::test]
async fn the_audit_log_names_who_wrote_what_with_both_revisions() {
    let (c, _, _) = cluster().await;
    let before = c
        .get_json_versioned(seam_model::ObjectKind::Node, "n2")
        .await
        .unwrap()
        .1;
    let mut moved = node("n2", 2);
    moved.underlay_ip = "10.0.0.22".parse().unwrap();
    let answer = send(&c, node_caller("n2"), "PUT", "/v1/nodes/n2", json(&moved)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let after = c
        .get_json_versioned(seam_model::ObjectKind::Node, "n2")
        .await
        .unwrap()
        .1;
    // A refused write leaves no record.
    let answer = send(
        &c,
        node_caller("n2"),
        "PUT",
        "/v1/nodes/n1",
        json(&node("n1", 1)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    let reader = Caller::Known(Identity::of(CallerRole::Reader, "alice"));
    let answer = send(&c, reader.clone(), "GET", "/v1/audit?limit=1", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let records: Vec<AuditRecord> = serde_json::from_value(answer.body).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.who, "node/n2");
    assert_eq!(r.verb, "PUT");
    assert_eq!(r.key, "/seam/v1/nodes/n2");
    assert_eq!(r.before, Some(before));
    assert_eq!(r.revision, after);
    assert!(r.at.ends_with('Z') && r.at.len() == 20, "{}", r.at);

    // Everything, oldest first: the setup's writes (made outside a request) come first.
    let all = send(&c, reader, "GET", "/v1/audit", None).await;
    let all: Vec<AuditRecord> = serde_json::from_value(all.body).unwrap();
    let keys: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r.who.as_str(), r.key.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("internal", "/seam/v1/nodes/n1"),
            ("internal", "/seam/v1/nodes/n2"),
            ("internal", "/seam/v1/segments/s1"),
            ("internal", keys[3].1),
            ("internal", keys[4].1),
            ("node/n2", "/seam/v1/nodes/n2"),
        ]
    );
    assert!(keys[3].1.starts_with("/seam/v1/blocks/s1/"));
    assert_eq!(all[0].before, None);
    // Nodes may not read it; the records stay out of snapshots.
    let answer = send(&c, node_caller("n1"), "GET", "/v1/audit", None).await;
    assert_forbidden(&answer, "node n1 may not read the audit log");
    let snapshot = send(&c, admin(), "GET", "/v1/snapshot", None).await;
    assert!(!snapshot.body.to_string().contains("audit"));
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_then_recovers() {
    let (c, _, _) = cluster().await;
    let c = c.with_limits(Limits {
        rate_limit: 20,
        max_watches_per_client: 8,
    });
    let mut refused = None;
    let started = std::time::Instant::now();
    for i in 0..100 {
        let answer = send(&c, node_caller("n1"), "GET", "/v1/nodes", None).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some((i, answer));
            break;
        }
        assert_eq!(answer.status, StatusCode::OK);
    }
    let (count, answer) = refused.expect("the rate limit never refused");
    // The burst (40), plus what 20/s refilled while the requests ran (a loaded machine is slow).
    let refilled = (20.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        (40..=41 + refilled).contains(&count),
        "refused after {count} requests (burst 40, {refilled} refilled)"
    );
    assert_eq!(answer.body["reason"], "RateLimited");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    // Others are not affected; root on the socket is not limited.
    let answer = send(&c, node_caller("n2"), "GET", "/v1/nodes", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    for _ in 0..100 {
        assert_eq!(
            send(&c, admin(), "GET", "/v1/nodes", None).await.status,
            StatusCode::OK
        );
    }
    // 20/s: a few requests' worth after a quarter second.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let answer = send(&c, node_caller("n1"), "GET", "/v1/nodes", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn a_client_may_hold_only_so_many_watches() {
    let (c, _, _) = cluster().await;
    let c = c.with_limits(Limits {
        rate_limit: 200,
        max_watches_per_client: 2,
    });
    let open = |caller: Caller| {
        let c = c.clone();
        async move {
            let request = Request::get("/v1/watch").body(Body::empty()).unwrap();
            router_as(c, caller).oneshot(request).await.unwrap()
        }
    };
    let first = open(node_caller("n1")).await;
    let second = open(node_caller("n1")).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = open(node_caller("n1")).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = third.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["reason"], "TooManyWatches");
    // Another node is not affected; a closed stream frees its slot.
    assert_eq!(open(node_caller("n2")).await.status(), StatusCode::OK);
    drop(first);
    assert_eq!(open(node_caller("n1")).await.status(), StatusCode::OK);
    drop(second);
}

#[tokio::test]
async fn the_adapter_writes_services_and_a_node_renews_only_its_own_lease() {
    let (c, _, _) = cluster().await;
    let adapter = Caller::Known(Identity::of(CallerRole::Adapter, "seam-k8s"));
    let service = serde_json::json!({
        "name": "front", "namespace": "web",
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}
    });
    let answer = send(
        &c,
        adapter.clone(),
        "PUT",
        "/v1/services/web/front",
        Some(service.clone()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // Stored with what was allocated for it.
    assert!(
        answer.body["spec"]["clusterIP"]["address"].is_string(),
        "{}",
        answer.body
    );
    assert!(
        answer.body["spec"]["ports"][0]["nodePort"].is_u64(),
        "{}",
        answer.body
    );
    // The path names the object: a body of another Service is refused.
    let answer = send(
        &c,
        adapter.clone(),
        "PUT",
        "/v1/services/web/back",
        Some(service),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    // Pools are the administrator's.
    let pool = serde_json::json!({"name": "public", "addresses": ["203.0.113.0/30"]});
    let answer = send(
        &c,
        adapter.clone(),
        "PUT",
        "/v1/addresspools/public",
        Some(pool.clone()),
    )
    .await;
    assert_forbidden(&answer, "adapter seam-k8s may not PUT address pools");
    let answer = send(&c, admin(), "PUT", "/v1/addresspools/public", Some(pool)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // Readers and nodes read them; a node may not write a Service.
    let reader = Caller::Known(Identity::of(CallerRole::Reader, "alice"));
    let answer = send(&c, reader, "GET", "/v1/services", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.as_array().unwrap().len(), 1);
    let answer = send(&c, node_caller("n1"), "GET", "/v1/services/web/front", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = send(
        &c,
        node_caller("n1"),
        "DELETE",
        "/v1/services/web/front",
        None,
    )
    .await;
    assert_forbidden(&answer, "node n1 may not DELETE services");

    // A node renews its own lease, and only its own.
    let answer = send(&c, node_caller("n1"), "PUT", "/v1/nodeleases/n1", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["node"], "n1");
    let answer = send(&c, node_caller("n2"), "PUT", "/v1/nodeleases/n1", None).await;
    assert_forbidden(&answer, "node n2 may not renew the lease of node n1");
    let answer = send(&c, node_caller("n1"), "GET", "/v1/nodeleases", None).await;
    assert_eq!(answer.body.as_array().unwrap().len(), 1, "{}", answer.body);

    // Every write is in the audit log with who wrote it, the allocations with the Service.
    let records = c.audit(100).await.unwrap();
    let service = records
        .iter()
        .find(|r| r.key == "/seam/v1/services/web/front")
        .expect("no audit record of the Service");
    assert_eq!(service.who, "adapter/seam-k8s");
    assert!(records
        .iter()
        .any(|r| r.key.starts_with("/seam/v1/allocations/clusterips/")));
    assert!(records
        .iter()
        .any(|r| r.key == "/seam/v1/nodeleases/n1" && r.who == "node/n1"));
}
