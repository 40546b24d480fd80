//! Health that tests something: `/healthz` says the process serves, `/readyz` that its store
//! answers and (a replica) that it knows its role; `/metrics` for readers and admins, with the
//! requests it answered by route template.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use seam_controller::{router_as, Caller, Controller, ControllerConfig, ReplicaConfig};
use seam_model::{CallerRole, Identity};
use seam_store::testing::EtcdCluster;
use seam_store::AnyStore;
use tower::ServiceExt;

async fn get(c: &Controller, caller: Caller, path: &str) -> (StatusCode, String) {
    let request = Request::builder().uri(path).body(Body::empty()).unwrap();
    let response = router_as(c.clone(), caller).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn known(role: CallerRole, name: &str) -> Caller {
    Caller::Known(Identity::of(role, name))
}

#[tokio::test]
async fn metrics_are_for_readers_and_admins_and_count_requests_by_route_template() {
    let c = Controller::new(ControllerConfig::default(), AnyStore::memory()).unwrap();
    assert_eq!(
        get(&c, Caller::Anonymous, "/healthz").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&c, Caller::Anonymous, "/readyz").await,
        (StatusCode::OK, "ok\n".to_string())
    );
    assert_eq!(
        get(&c, known(CallerRole::Reader, "r"), "/v1/nodes/n1")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&c, Caller::Anonymous, "/metrics").await.0,
        StatusCode::UNAUTHORIZED
    );
    // (A node is refused too: the authorization table's unit test.)
    assert_eq!(
        get(&c, known(CallerRole::Adapter, "k8s"), "/metrics")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, text) = get(&c, known(CallerRole::Reader, "prometheus"), "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    for line in [
        // The route's template, never the name in the path.
        r#"seam_controller_api_requests_total{route="/v1/nodes/{*name}",method="GET",code="404"} 1"#,
        r#"seam_controller_api_requests_total{route="/metrics",method="GET",code="401"} 1"#,
        r#"seam_controller_api_requests_total{route="/metrics",method="GET",code="403"} 1"#,
        "seam_controller_leader 1",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    assert!(
        text.contains(
            r#"seam_controller_store_request_duration_seconds_count{op="get",result="ok"}"#
        ),
        "{text}"
    );
    assert!(!text.contains("/v1/nodes/n1"), "{text}");
    assert_eq!(
        get(&c, known(CallerRole::Admin, "alice"), "/metrics")
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_replica_that_knows_no_leader_is_not_ready() {
    let replica = ReplicaConfig {
        id: "r1".into(),
        advertise: "http://192.0.2.1:7443".into(),
        lease_ttl: Duration::from_secs(5),
    };
    // No election runs: the replica stands by and knows no leader.
    let c =
        Controller::replicated(ControllerConfig::default(), AnyStore::memory(), replica).unwrap();
    let (status, body) = get(&c, Caller::Anonymous, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("role"), "{body}");
    assert_eq!(
        get(&c, Caller::Anonymous, "/healthz").await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_whose_store_is_down_is_alive_but_not_ready() {
    let mut etcd = EtcdCluster::start()
        .await
        .unwrap_or_else(|e| panic!("this test needs a real etcd: {e}"));
    let store = AnyStore::connect_etcd(etcd.config("/health"))
        .await
        .unwrap();
    let c = Controller::new(ControllerConfig::default(), store).unwrap();
    assert_eq!(
        get(&c, Caller::Anonymous, "/readyz").await,
        (StatusCode::OK, "ok\n".to_string())
    );
    etcd.kill(0);
    let started = std::time::Instant::now();
    let (status, body) = get(&c, Caller::Anonymous, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("store"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "readiness answers in time with the store down: {:?}",
        started.elapsed()
    );
    assert_eq!(
        get(&c, Caller::Anonymous, "/healthz").await.0,
        StatusCode::OK
    );
    // A scrape still answers (it is how the operator sees the store's errors).
    let (status, text) = get(&c, known(CallerRole::Admin, "alice"), "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{text}");
}
