//! Flow records: who may post and read them, filters, following, and a follower that does not
//! read.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use seam_client::{ControllerClient, FlowEvent, FlowStream};
use seam_controller::{
    router_as, Caller, Controller, ControllerConfig, FlowLimits, Listener, ReplicaConfig,
};
use seam_model::flow::{
    FlowBatch, FlowDirection, FlowFilter, FlowPeer, FlowReason, FlowRecord, FlowVerdict,
    FlowsLagged, PeerKind,
};
use seam_model::{CallerRole, Identity};
use seam_store::AnyStore;
use serde_json::Value;
use tower::ServiceExt;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn peer(ip: [u8; 4], ns: &str, name: &str) -> FlowPeer {
    FlowPeer {
        ip: Ipv4Addr::from(ip),
        port: Some(8080),
        kind: PeerKind::Pod,
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
    }
}

/// A record of `node`: web/client → db/pg-0, allowed by NetworkPolicy db/allow-web, or denied
/// by the default.
fn record(node: &str, allowed: bool, age_ms: u64) -> FlowRecord {
    FlowRecord {
        time_ms: now_ms() - age_ms,
        node: node.to_string(),
        direction: FlowDirection::Ingress,
        protocol: "TCP".to_string(),
        src: peer([10, 1, 0, 5], "web", "client"),
        dst: peer([10, 2, 0, 7], "db", "pg-0"),
        verdict: if allowed {
            FlowVerdict::Allowed
        } else {
            FlowVerdict::Denied
        },
        reason: if allowed {
            FlowReason::Rule
        } else {
            FlowReason::Isolation
        },
        tier: Some("namespace".to_string()),
        policy: allowed.then(|| "NetworkPolicy db/allow-web".to_string()),
        rule: allowed.then(|| "np/db/allow-web/ingress/0".to_string()),
        service: None,
        suppressed: 0,
    }
}

fn batch(records: Vec<FlowRecord>) -> FlowBatch {
    FlowBatch {
        records,
        dropped: 0,
    }
}

/// A controller whose nodes n1 and n2 have joined, with NetworkPolicy db/allow-web stored.
async fn controller(limits: FlowLimits) -> Controller {
    let store = crate::authz::joined_store(&["n1", "n2"]).await;
    let c = Controller::new(ControllerConfig::default(), store)
        .unwrap()
        .with_flow_limits(limits);
    let policy = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": "db", "name": "allow-web"},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "web"}}}]}]
        }
    });
    c.put_policy("networkpolicies", "db/allow-web", policy)
        .await
        .unwrap();
    c
}

fn node(name: &str) -> Caller {
    Caller::Known(Identity::node(name, 1))
}

fn reader() -> Caller {
    Caller::Known(Identity::of(CallerRole::Reader, "alice"))
}

async fn send(
    c: &Controller,
    caller: Caller,
    method: &str,
    path: &str,
    body: Option<&FlowBatch>,
) -> axum::response::Response {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(serde_json::to_vec(b).unwrap())))
        .unwrap();
    router_as(c.clone(), caller).oneshot(request).await.unwrap()
}

async fn body_json(response: axum::response::Response) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The records a reader gets for `query` (not followed), as the lines say.
async fn read(c: &Controller, query: &str) -> Vec<FlowRecord> {
    let response = send(c, reader(), "GET", &format!("/v1/flows{query}"), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_node_posts_its_own_records_and_a_reader_reads_them_oldest_first() {
    let c = controller(FlowLimits::default()).await;
    let records = vec![record("n1", false, 2000), record("n1", true, 1000)];
    let response = send(
        &c,
        node("n1"),
        "POST",
        "/v1/flows",
        Some(&batch(records.clone())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(read(&c, "").await, records);
}

#[tokio::test]
async fn a_node_may_not_post_another_nodes_records_and_nothing_of_the_batch_is_kept() {
    let c = controller(FlowLimits::default()).await;
    let mixed = batch(vec![record("n2", true, 10), record("n1", true, 5)]);
    let response = send(&c, node("n2"), "POST", "/v1/flows", Some(&mixed)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = body_json(response).await;
    assert_eq!(body["reason"], "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("node n2 may not post flow records of node n1"),
        "{body}"
    );
    assert!(read(&c, "").await.is_empty());
}

#[tokio::test]
async fn only_readers_and_admins_read_flows_and_only_nodes_and_admins_post_them() {
    let c = controller(FlowLimits::default()).await;
    let one = batch(vec![record("n1", true, 0)]);
    let adapter = Caller::Known(Identity::of(CallerRole::Adapter, "seam-k8s"));
    for (caller, method, status) in [
        (reader(), "POST", StatusCode::FORBIDDEN),
        (adapter.clone(), "POST", StatusCode::FORBIDDEN),
        (adapter, "GET", StatusCode::FORBIDDEN),
        (node("n1"), "GET", StatusCode::FORBIDDEN),
        (Caller::Anonymous, "GET", StatusCode::UNAUTHORIZED),
        (Caller::Anonymous, "POST", StatusCode::UNAUTHORIZED),
    ] {
        let body = (method == "POST").then_some(&one);
        let response = send(&c, caller.clone(), method, "/v1/flows", body).await;
        assert_eq!(response.status(), status, "{caller} {method}");
    }
    assert!(read(&c, "").await.is_empty());
    // An administrator may post for any node.
    let admin = Caller::Known(Identity::local_admin());
    let response = send(&c, admin, "POST", "/v1/flows", Some(&one)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn filters_select_records_and_bad_ones_are_refused_by_name() {
    let c = controller(FlowLimits::default()).await;
    let mut other = record("n2", false, 3_600_000);
    other.src = peer([10, 3, 0, 9], "ops", "probe");
    let posts = [
        (
            "n1",
            vec![record("n1", true, 1000), record("n1", false, 500)],
        ),
        ("n2", vec![other.clone()]),
    ];
    for (n, records) in posts {
        let response = send(&c, node(n), "POST", "/v1/flows", Some(&batch(records))).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let count = |v: Vec<FlowRecord>| v.len();
    assert_eq!(count(read(&c, "").await), 3);
    assert_eq!(count(read(&c, "?from=web%2Fclient").await), 2);
    assert_eq!(count(read(&c, "?from=ops%2F").await), 1);
    assert_eq!(count(read(&c, "?from=10.3.0.0%2F16").await), 1);
    assert_eq!(count(read(&c, "?to=db%2Fpg-0&verdict=denied").await), 2);
    assert_eq!(count(read(&c, "?policy=allow-web").await), 1);
    assert_eq!(
        count(read(&c, "?policy=NetworkPolicy%20db%2Fallow-web").await),
        1
    );
    assert_eq!(count(read(&c, "?since=5m").await), 2);
    assert_eq!(count(read(&c, "?node=n2").await), 1);
    // The newest N, still oldest first.
    let newest = read(&c, "?limit=2").await;
    assert_eq!(newest.len(), 2);
    assert!(newest[0].time_ms <= newest[1].time_ms);
    assert_eq!(newest[1].verdict, FlowVerdict::Denied);

    for (query, field) in [
        ("?verdict=dropped", "verdict"),
        ("?since=5minutes", "since"),
        ("?from=web%2Fa%2Fb", "from"),
        ("?limit=0", "limit"),
        ("?colour=red", "query"),
    ] {
        let response = send(&c, reader(), "GET", &format!("/v1/flows{query}"), None).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body = body_json(response).await;
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{field}: ")),
            "{query}: {message}"
        );
    }
    let response = send(&c, reader(), "GET", "/v1/flows?policy=alow-web", None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = body_json(response).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no stored policy or contract is \"alow-web\""),
        "{body}"
    );
}

#[tokio::test]
async fn a_follower_that_does_not_read_never_holds_up_posting_and_is_told_what_it_missed() {
    let c = controller(FlowLimits {
        follow_buffer: 4,
        ..FlowLimits::default()
    })
    .await;
    let response = send(&c, reader(), "GET", "/v1/flows?follow=true", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The follower reads nothing while 50 batches arrive (from root on the controller's
    // socket, which no rate limit holds back): each is taken at once.
    let admin = Caller::Known(Identity::local_admin());
    for i in 0..50 {
        let r = record("n1", true, 50 - i);
        let posted = tokio::time::timeout(
            Duration::from_secs(2),
            send(
                &c,
                admin.clone(),
                "POST",
                "/v1/flows",
                Some(&batch(vec![r])),
            ),
        )
        .await
        .expect("a post waited for a follower");
        assert_eq!(posted.status(), StatusCode::NO_CONTENT);
    }
    // Then it reads: a notice of the 46 it missed, then the newest 4.
    let mut body = response.into_body();
    let mut text = Vec::new();
    while text.iter().filter(|b| **b == b'\n').count() < 5 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the follower got nothing")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.extend_from_slice(&data);
        }
    }
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let notice: FlowsLagged = serde_json::from_slice(lines[0]).unwrap();
    assert_eq!(notice.lagged, 46);
    let last: FlowRecord = serde_json::from_slice(lines[4]).unwrap();
    assert_eq!(last.time_ms, read(&c, "?limit=1").await[0].time_ms);
}

#[tokio::test]
async fn a_standby_replica_sends_flow_posts_and_readers_to_the_leader() {
    let c = Controller::replicated(
        ControllerConfig::default(),
        AnyStore::memory(),
        ReplicaConfig {
            id: "r2".to_string(),
            advertise: "http://127.0.0.1:1".to_string(),
            lease_ttl: Duration::from_secs(2),
        },
    )
    .unwrap();
    let admin = Caller::Known(Identity::local_admin());
    let one = batch(vec![record("n1", true, 0)]);
    for (method, body) in [("POST", Some(&one)), ("GET", None)] {
        let response = send(&c, admin.clone(), method, "/v1/flows", body).await;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method}"
        );
        assert_eq!(body_json(response).await["reason"], "NotLeader");
    }
}

/// A controller on a Unix socket (callers are the local administrator), for seam-client.
struct Served {
    client: ControllerClient,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn serve(c: Controller) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(seam_controller::serve_controller(
        c,
        vec![Listener::Unix(path.clone())],
        async {
            let _ = stopped.await;
        },
    ));
    let client = ControllerClient::new(&format!("unix:{}", path.display())).unwrap();
    for _ in 0..200 {
        if client.healthz().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Served {
        client,
        stop,
        _dir: dir,
    }
}

async fn next_record(stream: &mut FlowStream) -> FlowRecord {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("no flow within 5 s")
            .expect("the stream ended")
            .expect("the stream failed");
        if let FlowEvent::Record(r) = event {
            return r;
        }
    }
}

#[tokio::test]
async fn a_follower_gets_the_records_held_then_each_matching_one_posted_after_it_started() {
    let served = serve(controller(FlowLimits::default()).await).await;
    let client = &served.client;
    let held = record("n1", false, 100);
    client.post_flows(&batch(vec![held.clone()])).await.unwrap();
    let filter = FlowFilter::from_query("verdict=denied&follow=true").unwrap();
    let mut stream = client.flows(&filter).await.unwrap();
    assert_eq!(next_record(&mut stream).await, held);
    // An allowed record does not match; the denied one after it does.
    let later = record("n1", false, 0);
    let posted = FlowBatch {
        records: vec![record("n1", true, 0), later.clone()],
        dropped: 7,
    };
    client.post_flows(&posted).await.unwrap();
    assert_eq!(next_record(&mut stream).await, later);
    // The agents' drops are told to the next reader.
    let plain = client.flows(&FlowFilter::default()).await.unwrap();
    assert_eq!(plain.agent_dropped(), 7);
    assert_eq!(plain.records().await.unwrap().len(), 3);
    // A bad filter is the controller's message, unknown policies too.
    let err = client
        .flows(&FlowFilter::from_query("policy=nope").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let _ = served.stop.send(());
}
