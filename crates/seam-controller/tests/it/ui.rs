//! The page (`/ui/`) and `GET /v1/explain`, through the router with the caller a listener
//! would attach.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use seam_controller::{router_as, Caller, Controller, ControllerConfig};
use seam_model::{CallerRole, Identity};
use serde_json::json;
use tower::ServiceExt;

use crate::server::{endpoint, node, segment};

struct Answer {
    status: StatusCode,
    content_type: String,
    body: String,
}

async fn get(c: &Controller, caller: Caller, path: &str) -> Answer {
    let request = Request::builder().uri(path).body(Body::empty()).unwrap();
    let response = router_as(c.clone(), caller).oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn reader() -> Caller {
    Caller::Known(Identity::of(CallerRole::Reader, "alice"))
}

/// A web pod and a db pod in `default`; db admits only TCP 5432 from the namespace's pods.
async fn cluster() -> Controller {
    let store = crate::authz::joined_store(&["n1"]).await;
    let c = Controller::new(ControllerConfig::default(), store).unwrap();
    c.put_node(node("n1", 1)).await.unwrap();
    c.put_segment(segment("s1", "192.168.0.0/24", 7))
        .await
        .unwrap();
    let block = c.claim_block("s1", "n1").await.unwrap();
    let mut hosts = block.cidr.hosts().skip(2);
    let web = endpoint("default/web", "s1", "n1", hosts.next().unwrap().octets());
    let mut db = endpoint("default/db", "s1", "n1", hosts.next().unwrap().octets());
    db.labels = [("app".to_string(), "db".to_string())].into();
    c.put_endpoint(web).await.unwrap();
    c.put_endpoint(db).await.unwrap();
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 5432}]}]
        }
    });
    let request = Request::builder()
        .method("PUT")
        .uri("/v1/policies/networkpolicies/default/db")
        .header("content-type", "application/json")
        .body(Body::from(policy.to_string()))
        .unwrap();
    let admin = Caller::Known(Identity::local_admin());
    let response = router_as(c.clone(), admin).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    c
}

#[tokio::test]
async fn explain_gives_the_engines_verdict_as_text_or_json() {
    let c = cluster().await;
    let denied = get(
        &c,
        reader(),
        "/v1/explain?src=default%2Fweb&dst=default%2Fdb&port=80%2Ftcp&output=text",
    )
    .await;
    assert_eq!(denied.status, StatusCode::OK, "{}", denied.body);
    assert!(denied.content_type.starts_with("text/plain"));
    assert!(denied.body.contains("DENIED"), "{}", denied.body);
    assert!(denied.body.contains("default/db"), "{}", denied.body);

    let allowed = get(
        &c,
        reader(),
        "/v1/explain?src=default/web&dst=default/db&port=5432/tcp",
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    assert!(allowed.content_type.starts_with("application/json"));
    let value: serde_json::Value = serde_json::from_str(&allowed.body).unwrap();
    assert_eq!(value["dst"], "default/db", "{value}");
    assert_eq!(value["allowed"], true, "{value}");
    assert_eq!(value["ingress"]["rule"]["name"], "db", "{value}");
}

#[tokio::test]
async fn bad_explain_queries_name_the_field() {
    let c = cluster().await;
    for (query, field) in [
        ("src=default/web&dst=default/db&port=80/tcpx", "port"),
        ("src=web&dst=default/db&port=80", "src"),
        (
            "src=default/web&dst=default/nope&port=80",
            "unknown endpoint",
        ),
        (
            "src=default/web&dst=default/db&port=80&output=yaml",
            "output",
        ),
        (
            "src=default/web&dst=default/db&port=80&colour=red",
            "colour",
        ),
        ("src=default/web&port=80", "dst"),
    ] {
        let answer = get(&c, reader(), &format!("/v1/explain?{query}")).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            answer.body
        );
        assert!(answer.body.contains(field), "{query}: {}", answer.body);
    }
}

#[tokio::test]
async fn the_page_is_served_to_readers_and_not_to_nodes_or_strangers() {
    let c = cluster().await;
    let page = get(&c, reader(), "/ui/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.body.contains("<script src=\"/ui/app.js\">"));
    let script = get(&c, reader(), "/ui/app.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.content_type.starts_with("text/javascript"));
    assert!(script.body.contains("/v1/flows"));
    let redirect = get(&c, reader(), "/ui").await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);

    let node = Caller::Known(Identity::node("n1", 1));
    assert_eq!(
        get(&c, node.clone(), "/ui/").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(
            &c,
            node,
            "/v1/explain?src=default/web&dst=default/db&port=80"
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&c, Caller::Anonymous, "/ui/").await.status,
        StatusCode::UNAUTHORIZED
    );
}
