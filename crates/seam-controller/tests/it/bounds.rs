//! Objects bounded at the API door (labels, sizes, rules, the request body) and `POST /v1/apply`
//! writing every object or none, through the client.

use seam_model::bounds::{MAX_APPLY_OBJECTS, MAX_BODY_BYTES};
use seam_model::{ApiError, ApplyObject, Namespace, Tenant};
use serde_json::{json, Value};

use crate::server::{endpoint, node, segment, Server};

fn netpol(ns: &str, name: &str, rules: usize) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": vec![json!({"from": [{"podSelector": {}}], "ports": [{"port": 5432}]}); rules]
        }
    })
}

/// An AdminNetworkPolicy with `rules` ingress rules: a kind whose upstream API bounds its lists.
fn anp(name: &str, rules: usize) -> Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "AdminNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "priority": 10,
            "subject": {"namespaces": {}},
            "ingress": vec![json!({"action": "Allow", "from": [{"namespaces": {}}], "ports": [{"portNumber": {"protocol": "TCP", "port": 5432}}]}); rules]
        }
    })
}

fn group(name: &str) -> Value {
    json!({
        "apiVersion": "seam.dev/v1alpha1",
        "kind": "EndpointGroup",
        "metadata": {"name": name},
        "spec": {"selectors": [{"namespaces": ["blue"]}]}
    })
}

#[tokio::test]
async fn a_megabyte_label_value_on_an_endpoint_is_refused_naming_the_label() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    c.put_segment(&segment("vms", "192.168.10.0/24", 100))
        .await
        .unwrap();
    // A pod endpoint's address must lie in a block of its node.
    c.claim_block("vms", "n1").await.unwrap();
    let mut ep = endpoint("default/web-0", "vms", "n1", [192, 168, 10, 5]);
    ep.labels.insert("app".into(), "v".repeat(1_000_000));
    let err = c.put_endpoint(&ep).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("labels.app:"),
        "{}",
        &text[..text.len().min(2000)]
    );
    assert!(text.contains("MAX_RECORD_BYTES"), "{text}");
    assert!(text.len() < 2000, "the value is not echoed back whole");
    assert!(c
        .get_endpoint("default/web-0")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(c.list_endpoints().await.unwrap().is_empty());

    // A long but valid record of labels is refused for its size alone; a normal one is stored.
    ep.labels = (0..200)
        .map(|i| (format!("k{i:03}-{}", "k".repeat(58)), "v".repeat(63)))
        .collect();
    let err = c.put_endpoint(&ep).await.unwrap_err();
    assert!(
        err.is_invalid() && err.to_string().contains("MAX_RECORD_BYTES"),
        "{err}"
    );
    ep.labels = [("app".to_string(), "web".to_string())].into();
    c.put_endpoint(&ep).await.unwrap();

    // Namespaces, VMs and externals check their labels the same way.
    let mut ns = Namespace::named("blue");
    ns.labels.insert("team".into(), "x".repeat(64));
    let err = c.put_namespace(&ns).await.unwrap_err();
    assert!(err.to_string().contains("labels.team:"), "{err}");
    srv.stop().await;
}

#[tokio::test]
async fn an_oversized_body_gets_413_with_the_apis_json_error() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let body = format!(
        r#"{{"name":"n1","underlayIp":"10.0.0.1","pad":"{}"}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    for (method, path) in [("PUT", "/v1/nodes/n1"), ("POST", "/v1/apply")] {
        let resp = c
            .request_raw(method, path, body.clone().into_bytes())
            .await
            .unwrap();
        assert_eq!(resp.status, 413, "{method} {path}");
        let error: ApiError = serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
            panic!(
                "not the API's JSON error ({e}): {}",
                String::from_utf8_lossy(&resp.body)
            )
        });
        assert_eq!(error.reason, "TooLarge");
        assert!(
            error.message.contains("MAX_BODY_BYTES"),
            "{}",
            error.message
        );
    }
    assert!(c.list_nodes().await.unwrap().is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn a_policy_over_the_rule_bound_is_refused_naming_the_field() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_policy("adminnetworkpolicies", None, "db", &anp("db", 100))
        .await
        .unwrap();
    let err = c
        .put_policy("adminnetworkpolicies", None, "db", &anp("db", 101))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("spec.ingress: 101 items"), "{err}");
    // The stored object is the one with 100 rules.
    let stored = c
        .get_policy("adminnetworkpolicies", None, "db")
        .await
        .unwrap();
    assert_eq!(
        stored["spec"]["ingress"].as_array().map(Vec::len),
        Some(100)
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_network_policy_with_more_peers_than_the_anp_bound_is_accepted() {
    // Kubernetes bounds a NetworkPolicy only by its size: refusing a valid one would leave it
    // unenforced.
    let srv = Server::memory().await;
    let c = &srv.client;
    let peers: Vec<Value> = (0..150)
        .map(|i| json!({"ipBlock": {"cidr": format!("10.{i}.0.0/16")}}))
        .collect();
    let mut policy = netpol("blue", "db", 1);
    policy["spec"]["ingress"][0]["from"] = Value::Array(peers);
    c.put_policy("networkpolicies", Some("blue"), "db", &policy)
        .await
        .unwrap();
    let stored = c
        .get_policy("networkpolicies", Some("blue"), "db")
        .await
        .unwrap();
    assert_eq!(
        stored["spec"]["ingress"][0]["from"]
            .as_array()
            .map(Vec::len),
        Some(150)
    );
    // So is one with 150 rules, through apply as well.
    c.apply(&[ApplyObject::Policy(netpol("blue", "many", 150))])
        .await
        .unwrap();
    assert_eq!(
        c.get_policy("networkpolicies", Some("blue"), "many")
            .await
            .unwrap()["spec"]["ingress"]
            .as_array()
            .map(Vec::len),
        Some(150)
    );
    srv.stop().await;
}

fn objects(third: Value) -> Vec<ApplyObject> {
    vec![
        ApplyObject::Namespace(Namespace::named("blue")),
        ApplyObject::Tenant(Tenant::named("t1")),
        ApplyObject::Policy(third),
    ]
}

async fn nothing_applied(c: &seam_client::ControllerClient) {
    assert!(c.get_namespace("blue").await.unwrap_err().is_not_found());
    assert!(c.get_tenant("t1").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn apply_writes_every_object_or_none() {
    let srv = Server::memory().await;
    let c = &srv.client;

    // The third object is invalid: every problem is named with its document, nothing written.
    let mut bad = anp("db", 101);
    bad["metadata"]["labels"] = json!({"app": "-x"});
    let err = c.apply(&objects(bad)).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    let text = err.to_string();
    for needle in [
        "1 of 3 object(s) refused, nothing applied",
        "document 3 (AdminNetworkPolicy db)",
        "spec.ingress: 101 items",
        "metadata.labels.app",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    nothing_applied(c).await;

    // The third is refused for a reason only the controller knows: seam-k8s manages the stored
    // object of that name. Nothing is written, the managed object included.
    let mut managed = netpol("blue", "db", 1);
    managed["metadata"]["annotations"] = json!({"seam.dev/managed-by": "seam-k8s"});
    c.put_policy("networkpolicies", Some("blue"), "db", &managed)
        .await
        .unwrap();
    let err = c
        .apply(&objects(netpol("blue", "db", 2)))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(
        err.to_string()
            .contains("document 3 (NetworkPolicy blue/db): policy \"NetworkPolicy/blue/db\" is managed by \"seam-k8s\""),
        "{err}"
    );
    nothing_applied(c).await;
    let stored = c
        .get_policy("networkpolicies", Some("blue"), "db")
        .await
        .unwrap();
    assert_eq!(stored["spec"]["ingress"].as_array().map(Vec::len), Some(1));
    // The single PUT makes the same check.
    assert!(c
        .put_policy(
            "networkpolicies",
            Some("blue"),
            "db",
            &netpol("blue", "db", 2)
        )
        .await
        .unwrap_err()
        .is_conflict());

    // Two documents naming one object, and too many objects, are refused as a whole.
    let twice = vec![
        ApplyObject::Policy(group("g")),
        ApplyObject::Policy(group("g")),
    ];
    let err = c.apply(&twice).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("document 2 (EndpointGroup g): invalid Apply \"\": objects: names the same object as document 1"),
        "{err}"
    );
    let many: Vec<ApplyObject> = (0..=MAX_APPLY_OBJECTS)
        .map(|i| ApplyObject::Tenant(Tenant::named(&format!("t{i}"))))
        .collect();
    let err = c.apply(&many).await.unwrap_err();
    assert!(
        err.is_invalid() && err.to_string().contains("MAX_APPLY_OBJECTS"),
        "{err}"
    );
    assert!(c.list_tenants().await.unwrap().is_empty());

    // All good: every object stored as its single PUT stores it, in order.
    let applied = c.apply(&objects(netpol("blue", "web", 1))).await.unwrap();
    let names: Vec<String> = applied.objects.iter().map(ApplyObject::describe).collect();
    assert_eq!(
        names,
        ["Namespace blue", "Tenant t1", "NetworkPolicy blue/web"]
    );
    assert_eq!(
        c.get_namespace("blue").await.unwrap(),
        Namespace::named("blue")
    );
    assert_eq!(c.get_tenant("t1").await.unwrap(), Tenant::named("t1"));
    let stored = c
        .get_policy("networkpolicies", Some("blue"), "web")
        .await
        .unwrap();
    assert_eq!(ApplyObject::Policy(stored), applied.objects[2]);
    srv.stop().await;
}
