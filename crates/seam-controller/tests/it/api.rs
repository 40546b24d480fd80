//! CRUD, ensure-segment, endpoint checks, bad input and restart, through the client.

use std::sync::Arc;

use seam_client::ClientError;
use seam_controller::{ControllerConfig, SegmentMode};
use seam_store::AnyStore;

use crate::server::{endpoint, node, segment, Server};

#[tokio::test]
async fn node_segment_endpoint_crud() {
    let srv = Server::memory().await;
    let c = &srv.client;

    assert_eq!(c.put_node(&node("n1", 1)).await.unwrap(), node("n1", 1));
    c.put_node(&node("n2", 2)).await.unwrap();
    // Replacing is allowed; a second node on the same underlay address is not.
    let mut n2 = node("n2", 3);
    c.put_node(&n2).await.unwrap();
    n2.name = "n3".into();
    assert!(c.put_node(&n2).await.unwrap_err().is_conflict());
    assert_eq!(c.get_node("n2").await.unwrap(), node("n2", 3));
    assert_eq!(c.list_nodes().await.unwrap().len(), 2);
    assert!(c.get_node("nope").await.unwrap_err().is_not_found());

    let s1 = segment("vms", "192.168.10.0/24", 100);
    assert_eq!(c.put_segment(&s1).await.unwrap(), s1);
    assert_eq!(c.get_segment("vms").await.unwrap(), s1);
    // Overlapping subnet and taken VNI are conflicts.
    let err = c
        .put_segment(&segment("other", "192.168.10.128/25", 101))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(
        err.to_string().contains("overlaps segment \"vms\""),
        "{err}"
    );
    let err = c
        .put_segment(&segment("other", "192.168.11.0/24", 100))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("vni 100"), "{err}");
    assert_eq!(c.list_segments().await.unwrap(), vec![s1.clone()]);

    // A pod's address is in a block of its node.
    let block = c.claim_block("vms", "n1").await.unwrap();
    let ep = endpoint("default/web-0", "vms", "n1", [192, 168, 10, 5]);
    assert_eq!(c.put_endpoint(&ep).await.unwrap(), ep);
    assert_eq!(c.get_endpoint("default/web-0").await.unwrap(), ep);
    assert_eq!(c.list_endpoints().await.unwrap(), vec![ep.clone()]);

    // In use: the segment and the node cannot go while the endpoint exists.
    assert!(c.delete_segment("vms").await.unwrap_err().is_conflict());
    assert!(c.delete_node("n1").await.unwrap_err().is_conflict());

    c.delete_endpoint("default/web-0").await.unwrap();
    c.delete_endpoint("default/web-0").await.unwrap(); // idempotent
    assert!(c.list_endpoints().await.unwrap().is_empty());
    c.release_block_held_by(&block.key(), "n1").await.unwrap();
    c.delete_segment("vms").await.unwrap();
    assert!(c.delete_segment("vms").await.unwrap_err().is_not_found());
    c.delete_node("n1").await.unwrap();
    assert_eq!(c.list_nodes().await.unwrap(), vec![node("n2", 3)]);
    srv.stop().await;
}

#[tokio::test]
async fn endpoint_checks() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    c.put_segment(&segment("vms", "192.168.10.0/24", 100))
        .await
        .unwrap();
    // A pod's address is in a block of its node.
    c.claim_block("vms", "n1").await.unwrap();

    let err = c
        .put_endpoint(&endpoint("a", "nope", "n1", [192, 168, 10, 5]))
        .await
        .unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("segment \"nope\""),
        "{err}"
    );
    let err = c
        .put_endpoint(&endpoint("a", "vms", "nope", [192, 168, 10, 5]))
        .await
        .unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("node \"nope\""),
        "{err}"
    );
    for (ip, what) in [
        ([192, 168, 11, 5], "outside segment"),
        ([192, 168, 10, 1], "gateway"),
        ([192, 168, 10, 255], "not a host address"),
    ] {
        let err = c
            .put_endpoint(&endpoint("a", "vms", "n1", ip))
            .await
            .unwrap_err();
        assert!(err.is_invalid(), "{err}");
        assert!(
            err.to_string().contains("ip: ") && err.to_string().contains(what),
            "{err}"
        );
    }

    c.put_endpoint(&endpoint("a", "vms", "n1", [192, 168, 10, 5]))
        .await
        .unwrap();
    // Same IP, other endpoint: conflict naming the holder.
    let err = c
        .put_endpoint(&endpoint("b", "vms", "n1", [192, 168, 10, 5]))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains("held by endpoint \"a\""), "{err}");
    // Same MAC, other IP: conflict.
    let mut b = endpoint("b", "vms", "n1", [192, 168, 10, 6]);
    b.mac = endpoint("a", "vms", "n1", [192, 168, 10, 5]).mac;
    let err = c.put_endpoint(&b).await.unwrap_err();
    assert!(
        err.is_conflict() && err.to_string().contains("mac"),
        "{err}"
    );
    // Re-putting the same endpoint is fine.
    c.put_endpoint(&endpoint("a", "vms", "n1", [192, 168, 10, 5]))
        .await
        .unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn per_namespace_segments_are_carved_from_the_pool() {
    let srv = Server::memory().await;
    let c = &srv.client;
    // An explicit segment at the start of the pool is skipped.
    c.put_segment(&segment("vms", "10.240.0.0/24", 4096))
        .await
        .unwrap();
    let a = c.ensure_segment("team-a").await.unwrap();
    assert_eq!(a.name, "ns-team-a");
    assert_eq!(a.tenant, "team-a");
    assert_eq!(a.namespace.as_deref(), Some("team-a"));
    assert_eq!(a.subnet.to_string(), "10.240.16.0/20");
    assert_eq!(a.gateway.to_string(), "10.240.16.1");
    assert_eq!(a.vni, 4097);
    assert_eq!(a.block_prefix, 26);
    let b = c.ensure_segment("team-b").await.unwrap();
    assert_eq!(b.subnet.to_string(), "10.240.32.0/20");
    assert_eq!(b.vni, 4098);
    assert_eq!(c.ensure_segment("team-a").await.unwrap(), a);

    let err = c.ensure_segment("Not_Valid").await.unwrap_err();
    assert!(
        err.is_invalid() && err.to_string().contains("namespace"),
        "{err}"
    );
    // Every namespace Kubernetes allows gets a segment (issue 15: 61+ characters did not).
    let long = c.ensure_segment(&"x".repeat(63)).await.unwrap();
    assert_eq!(long.name, format!("ns-{}", "x".repeat(63)));
    assert_eq!(c.get_segment(&long.name).await.unwrap(), long);
    let err = c.ensure_segment(&"x".repeat(64)).await.unwrap_err();
    assert!(
        err.is_invalid() && err.to_string().contains("namespace"),
        "{err}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn pool_exhaustion_is_reported() {
    let config = ControllerConfig {
        pool: "10.0.0.0/23".parse().unwrap(),
        segment_prefix: 24,
        block_prefix: 26,
        ..ControllerConfig::default()
    };
    let srv = Server::start(config, AnyStore::memory()).await;
    srv.client.ensure_segment("a").await.unwrap();
    srv.client.ensure_segment("b").await.unwrap();
    let err = srv.client.ensure_segment("c").await.unwrap_err();
    assert!(err.is_exhausted(), "{err}");
    assert!(err.to_string().contains("10.0.0.0/23"), "{err}");
    srv.stop().await;
}

#[tokio::test]
async fn flat_mode_has_one_cluster_segment() {
    let config = ControllerConfig {
        segment_mode: SegmentMode::Flat,
        ..ControllerConfig::default()
    };
    let srv = Server::start(config, AnyStore::memory()).await;
    let a = srv.client.ensure_segment("a").await.unwrap();
    let b = srv.client.ensure_segment("b").await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a.name, "cluster");
    assert_eq!(a.tenant, "cluster");
    assert_eq!(a.namespace, None);
    assert_eq!(a.subnet.to_string(), "10.240.0.0/12");
    assert_eq!(a.gateway.to_string(), "10.240.0.1");
    assert_eq!(a.vni, 4096);
    srv.stop().await;
}

#[tokio::test]
async fn concurrent_ensure_yields_one_segment() {
    let srv = Server::memory().await;
    let client = Arc::new(srv.client.clone());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.ensure_segment("busy").await }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap());
    }
    assert!(got.iter().all(|s| *s == got[0]));
    assert_eq!(srv.client.list_segments().await.unwrap().len(), 1);
    srv.stop().await;
}

/// Each bad request is answered 400 naming the field, and nothing is written.
#[tokio::test]
async fn bad_input_is_rejected_without_writing() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    let before = c.snapshot().await.unwrap();

    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "PUT",
            "/v1/nodes/n2",
            r#"{"name":"n2","underlayIp":"198.18.0.2","colour":"red"}"#,
            "unknown field `colour`",
        ),
        (
            "PUT",
            "/v1/nodes/n2",
            r#"{"name":"n2","underlayIp":"not-an-ip"}"#,
            "underlayIp",
        ),
        (
            "PUT",
            "/v1/nodes/n2",
            r#"{"name":"n3","underlayIp":"198.18.0.2"}"#,
            "name: \"n3\" does not match the name in the path \"n2\"",
        ),
        ("PUT", "/v1/nodes/n2", r#"{"name":"n2","#, "EOF"),
        (
            "PUT",
            "/v1/segments/s",
            r#"{"name":"s","tenant":"t","subnet":"10.1.0.0/16","gateway":"10.2.0.1","vni":0,"blockPrefix":8}"#,
            "gateway",
        ),
        (
            "PUT",
            "/v1/segments/s",
            r#"{"name":"s","tenant":"t","subnet":"10.1.0.0/16","gateway":"10.1.0.1","vni":0,"blockPrefix":24}"#,
            "vni: 0 is outside",
        ),
        (
            "PUT",
            "/v1/endpoints/default/p",
            r#"{"name":"default/p","kind":"pod","namespace":"default","segment":"s","node":"n1","ip":"10.1.0.5","mac":"zz"}"#,
            "mac",
        ),
        (
            "POST",
            "/v1/ensure-segment",
            r#"{"namespace":"a","extra":true}"#,
            "unknown field `extra`",
        ),
        (
            "POST",
            "/v1/claim-block",
            r#"{"segment":"s"}"#,
            "missing field `node`",
        ),
        ("POST", "/v1/claim-block", "[]", "ClaimBlock"),
    ];
    for (method, path, body, needle) in cases {
        let resp = c
            .request_raw(method, path, body.as_bytes().to_vec())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&resp.body);
        assert_eq!(resp.status, 400, "{method} {path} {body}: {text}");
        let api: seam_model::ApiError = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(api.reason, "Invalid");
        assert!(
            api.message.contains(needle),
            "{path} {body}: {}",
            api.message
        );
    }
    let after = c.snapshot().await.unwrap();
    assert_eq!(after, before, "a rejected request changed the store");

    // Unknown routes are 404 with a structured body.
    let resp = c
        .request_raw("GET", "/v1/things", Vec::new())
        .await
        .unwrap();
    assert_eq!(resp.status, 404);
    srv.stop().await;
}

#[tokio::test]
async fn embedded_store_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("controller.redb");
    let srv = Server::start(
        ControllerConfig::default(),
        AnyStore::open_embedded(&file).unwrap(),
    )
    .await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    let seg = c.ensure_segment("default").await.unwrap();
    let block = c.claim_block(&seg.name, "n1").await.unwrap();
    let mut ip = block.cidr.hosts();
    ip.next();
    let ip = ip.next().unwrap().octets();
    c.put_endpoint(&endpoint("default/web-0", &seg.name, "n1", ip))
        .await
        .unwrap();
    // A watch stream open at shutdown must not keep the server alive.
    let _watch = c.watch(0).await.unwrap();
    let before = c.snapshot().await.unwrap();
    srv.stop().await;

    let srv = Server::start(
        ControllerConfig::default(),
        AnyStore::open_embedded(&file).unwrap(),
    )
    .await;
    let after = srv.client.snapshot().await.unwrap();
    assert_eq!(after, before);
    // Allocation continues where it stopped.
    let next = srv.client.claim_block(&seg.name, "n1").await.unwrap();
    assert_ne!(next.cidr, block.cidr);
    assert_eq!(srv.client.ensure_segment("default").await.unwrap(), seg);
    srv.stop().await;
}

#[tokio::test]
async fn transport_errors_name_the_endpoint() {
    let client = seam_client::ControllerClient::new("unix:/nonexistent/seam.sock").unwrap();
    let err = client.healthz().await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/seam.sock"), "{err}");
    assert!(seam_client::ControllerClient::new("ftp://x").is_err());
}
