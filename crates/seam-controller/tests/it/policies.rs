//! Policy objects and namespaces through the client: CRUD, validation with field paths (and
//! nothing stored on error), snapshot, watch, ensure-segment creating the namespace.

use std::time::Duration;

use seam_model::{Namespace, ObjectKind};
use serde_json::{json, Value};

use crate::server::Server;

fn netpol(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 5432}]}]
        }
    })
}

fn group(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "seam.dev/v1alpha1",
        "kind": "EndpointGroup",
        "metadata": {"name": name},
        "spec": {"selectors": [{"namespaces": [ns]}]}
    })
}

fn contract(name: &str) -> Value {
    json!({
        "apiVersion": "seam.dev/v1alpha1",
        "kind": "Contract",
        "metadata": {"name": name},
        "spec": {
            "consumers": ["epg-client"],
            "providers": ["epg-web"],
            "subjects": [{"name": "web", "filters": [{"protocol": "TCP", "ports": [80, 443]}]}],
            "action": "allow"
        }
    })
}

#[tokio::test]
async fn policy_crud_snapshot_and_watch() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let start = c.snapshot().await.unwrap().revision;
    let mut w = c.watch(start + 1).await.unwrap();

    let stored = c
        .put_policy("NetworkPolicy", Some("x"), "db", &netpol("x", "db"))
        .await
        .unwrap();
    // Stored in canonical form: the object read back is the object enforced.
    assert_eq!(stored["kind"], "NetworkPolicy");
    assert_eq!(stored["spec"]["ingress"][0]["ports"][0]["port"], 5432);
    c.put_policy(
        "endpointgroups",
        None,
        "epg-client",
        &group("epg-client", "blue"),
    )
    .await
    .unwrap();
    c.put_policy("EndpointGroup", None, "epg-web", &group("epg-web", "green"))
        .await
        .unwrap();
    c.put_policy("contracts", None, "contract-web", &contract("contract-web"))
        .await
        .unwrap();

    assert_eq!(
        c.get_policy("networkpolicies", Some("x"), "db")
            .await
            .unwrap(),
        stored
    );
    let all = c.list_policies().await.unwrap();
    let names: Vec<String> = all
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["kind"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "Contract/contract-web",
            "EndpointGroup/epg-client",
            "EndpointGroup/epg-web",
            "NetworkPolicy/db"
        ]
    );
    let snap = c.snapshot().await.unwrap();
    // The snapshot carries them typed; on the wire they are what the API serves, byte for byte.
    let typed: Vec<serde_json::Value> = snap
        .policies
        .iter()
        .map(seam_policy::PolicyObject::to_value)
        .collect();
    assert_eq!(typed, all);
    assert_eq!(
        serde_json::to_vec(&snap.policies).unwrap(),
        serde_json::to_vec(&all).unwrap()
    );

    let event = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, ObjectKind::Policy);
    assert_eq!(event.name, "NetworkPolicy/x/db");
    assert_eq!(event.object.as_ref(), Some(&stored));

    c.delete_policy("NetworkPolicy", Some("x"), "db")
        .await
        .unwrap();
    let err = c
        .delete_policy("NetworkPolicy", Some("x"), "db")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(c
        .get_policy("NetworkPolicy", Some("x"), "db")
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(c.list_policies().await.unwrap().len(), 3);
    srv.stop().await;
}

#[tokio::test]
async fn bad_policies_are_refused_with_the_field_path_and_change_nothing() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_policy("NetworkPolicy", Some("x"), "db", &netpol("x", "db"))
        .await
        .unwrap();
    let before = c.snapshot().await.unwrap();

    // Unknown field, deep inside: named with its path.
    let mut bad = netpol("x", "db");
    bad["spec"]["ingress"][0]["ports"][0]["prot"] = json!("TCP");
    let err = c
        .put_policy("NetworkPolicy", Some("x"), "db", &bad)
        .await
        .unwrap_err();
    assert!(err.is_invalid(), "{err}");
    assert_eq!(err.status(), Some(400));
    assert!(
        err.to_string().contains("spec.ingress[0].ports[0]") && err.to_string().contains("prot"),
        "{err}"
    );

    // Validation: every problem with its path.
    let mut bad = netpol("x", "db");
    bad["spec"]["ingress"][0]["ports"] =
        json!([{"port": "http", "endPort": 90}, {"port": 99, "endPort": 10}]);
    let err = c
        .put_policy("NetworkPolicy", Some("x"), "db", &bad)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("spec.ingress[0].ports[0].endPort")
            && msg.contains("spec.ingress[0].ports[1].endPort"),
        "{msg}"
    );

    // Unsupported kind, in the body and in the path.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    let err = c
        .put_policy("NetworkPolicy", Some("x"), "p", &pod)
        .await
        .unwrap_err();
    assert!(
        err.is_invalid() && err.to_string().contains("unsupported object kind"),
        "{err}"
    );
    let err = c.put_policy("pods", None, "p", &pod).await.unwrap_err();
    assert!(
        err.is_invalid() && err.to_string().contains("unsupported policy kind"),
        "{err}"
    );

    // Path and body disagree.
    let err = c
        .put_policy("NetworkPolicy", Some("y"), "other", &netpol("x", "db"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("metadata.namespace") && msg.contains("metadata.name"),
        "{msg}"
    );
    let err = c
        .put_policy("contracts", Some("x"), "db", &netpol("x", "db"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kind"), "{err}");

    // Not JSON at all.
    let raw = c
        .request_raw("PUT", "/v1/policies/contracts/_/x", b"{not json".to_vec())
        .await
        .unwrap();
    assert_eq!(raw.status, 400);

    let after = c.snapshot().await.unwrap();
    assert_eq!(
        after.revision, before.revision,
        "a refused write changed the store"
    );
    assert_eq!(after.policies, before.policies);
    srv.stop().await;
}

#[tokio::test]
async fn namespaces_crud_and_ensure_segment_creates_them() {
    let srv = Server::memory().await;
    let c = &srv.client;

    let mut blue = Namespace::named("blue");
    blue.labels.insert("team".into(), "a".into());
    blue.labels.remove(seam_model::NAMESPACE_NAME_LABEL);
    let stored = c.put_namespace(&blue).await.unwrap();
    // The controller sets the name label, as the Kubernetes API server does.
    assert_eq!(stored.labels[seam_model::NAMESPACE_NAME_LABEL], "blue");
    assert_eq!(stored.labels["team"], "a");
    assert_eq!(c.get_namespace("blue").await.unwrap(), stored);

    let mut bad = Namespace::named("Bad");
    bad.labels.insert("x".into(), "-".into());
    let err = c.put_namespace(&bad).await.unwrap_err();
    assert!(
        err.is_invalid() && err.to_string().contains("labels.x"),
        "{err}"
    );

    // ensure-segment creates the namespace when absent and keeps an existing one as it is.
    c.ensure_segment("green").await.unwrap();
    c.ensure_segment("blue").await.unwrap();
    assert_eq!(
        c.get_namespace("green").await.unwrap(),
        Namespace::named("green")
    );
    assert_eq!(c.get_namespace("blue").await.unwrap(), stored);
    let names: Vec<String> = c
        .list_namespaces()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["blue", "green"]);
    assert_eq!(c.snapshot().await.unwrap().namespaces.len(), 2);

    c.delete_namespace("green").await.unwrap();
    assert!(c
        .delete_namespace("green")
        .await
        .unwrap_err()
        .is_not_found());
    srv.stop().await;
}
