//! Objects created, changed and deleted in Kubernetes show up, change and go in the controller.

use std::collections::BTreeMap;

use seam_k8s::WatchedKind as K;
use seam_model::IsolationMode;
use serde_json::json;

use crate::apiserver::ApiServer;
use crate::harness::{eventually, namespace, netpol, pod, port_of, Env};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_tenants_and_policies_follow_kubernetes() {
    let api = ApiServer::start().await;
    api.apply(
        K::Tenant,
        json!({"metadata": {"name": "t1"}, "spec": {"isolation": "multitenant"}}),
    );
    api.apply(K::Tenant, json!({"metadata": {"name": "t2"}}));
    api.apply(
        K::Namespace,
        namespace(
            "shop",
            json!({"team": "a"}),
            json!({"seam.dev/tenant": "t1"}),
        ),
    );
    api.apply(K::Namespace, namespace("scratch", json!({}), json!({})));
    api.apply(K::NetworkPolicy, netpol("shop", "db", 5432));
    api.apply(
        K::AdminNetworkPolicy,
        json!({"metadata": {"name": "no-ext"}, "spec": {
            "priority": 10, "subject": {"namespaces": {}},
            "egress": [{"name": "ext", "action": "Deny", "to": [{"networks": ["203.0.113.0/24"]}]}]
        }}),
    );
    api.apply(
        K::BaselineAdminNetworkPolicy,
        json!({"metadata": {"name": "default"}, "spec": {
            "subject": {"namespaces": {}},
            "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]
        }}),
    );
    api.apply(
        K::ClusterNetworkPolicy,
        json!({"metadata": {"name": "web"}, "spec": {
            "tier": "Admin", "priority": 7,
            "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "web"}}}},
            "ingress": [{"name": "lab", "action": "Accept", "from": [{"namespaces": {}}],
                         "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}]
        }}),
    );
    api.apply(
        K::EndpointGroup,
        json!({"metadata": {"name": "epg-web"}, "spec": {"selectors": [{"namespaces": ["shop"]}]}}),
    );
    api.apply(
        K::Contract,
        json!({"metadata": {"name": "web"}, "spec": {
            "consumers": ["epg-web"], "providers": ["epg-web"],
            "subjects": [{"name": "web", "filters": [{"protocol": "TCP", "ports": [80]}]}],
            "action": "allow"
        }}),
    );
    let env = Env::start(api).await;
    let c = &env.client;

    let shop = eventually("namespace shop", || async {
        c.get_namespace("shop").await.ok()
    })
    .await;
    assert_eq!(shop.labels["team"], "a");
    assert_eq!(shop.labels["kubernetes.io/metadata.name"], "shop");
    assert_eq!(shop.tenant.as_deref(), Some("t1"));
    let t1 = eventually("tenant t1", || async { c.get_tenant("t1").await.ok() }).await;
    assert_eq!(t1.isolation, IsolationMode::Multitenant);

    let db = env
        .wait_policy("NetworkPolicy", Some("shop"), "db", |_| true)
        .await;
    assert_eq!(port_of(&db), Some(5432));
    // Server-side metadata is not forwarded; the adapter marks what it forwarded.
    assert_eq!(db["metadata"].get("resourceVersion"), None);
    assert_eq!(
        db["metadata"]["annotations"]["seam.dev/managed-by"],
        "seam-k8s"
    );
    for (kind, name) in [
        ("AdminNetworkPolicy", "no-ext"),
        ("BaselineAdminNetworkPolicy", "default"),
        ("ClusterNetworkPolicy", "web"),
        ("EndpointGroup", "epg-web"),
        ("Contract", "web"),
    ] {
        env.wait_policy(kind, None, name, |_| true).await;
    }

    // Changes.
    env.api.apply(K::NetworkPolicy, netpol("shop", "db", 6432));
    env.api.apply(
        K::Namespace,
        namespace(
            "shop",
            json!({"team": "b"}),
            json!({"seam.dev/tenant": "t1"}),
        ),
    );
    env.wait_policy("NetworkPolicy", Some("shop"), "db", |p| {
        port_of(p) == Some(6432)
    })
    .await;
    eventually("namespace shop relabelled", || async {
        let ns = c.get_namespace("shop").await.ok()?;
        (ns.labels.get("team").map(String::as_str) == Some("b")).then_some(())
    })
    .await;

    // Deletions.
    env.api.delete(K::NetworkPolicy, "shop/db");
    env.api.delete(K::Contract, "web");
    env.api.delete(K::ClusterNetworkPolicy, "web");
    env.api.delete(K::Tenant, "t2");
    env.api.delete(K::Namespace, "scratch");
    env.wait_policy_gone("NetworkPolicy", Some("shop"), "db")
        .await;
    env.wait_policy_gone("Contract", None, "web").await;
    env.wait_policy_gone("ClusterNetworkPolicy", None, "web")
        .await;
    eventually("tenant t2 deleted", || async {
        c.get_tenant("t2")
            .await
            .err()
            .filter(|e| e.is_not_found())
            .map(drop)
    })
    .await;
    eventually("namespace scratch deleted", || async {
        c.get_namespace("scratch")
            .await
            .err()
            .filter(|e| e.is_not_found())
            .map(drop)
    })
    .await;
    // What was not deleted is still there.
    assert!(env.policy("EndpointGroup", None, "epg-web").await.is_some());
    assert!(c.get_namespace("shop").await.is_ok());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_label_their_endpoints() {
    let api = ApiServer::start().await;
    api.apply(K::Namespace, namespace("shop", json!({}), json!({})));
    api.apply(
        K::Pod,
        pod(
            "shop",
            "web-7d4b9c-x2x",
            json!({"app": "web", "pod-template-hash": "7d4b9c"}),
            Some("web-7d4b9c"),
        ),
    );
    let env = Env::start(api).await;
    let c = &env.client;
    eventually("namespace shop", || async {
        c.get_namespace("shop").await.ok()
    })
    .await;

    // The agent publishes the endpoint after CNI ADD, without the pod's labels.
    env.publish_pod("shop", "web-7d4b9c-x2x", "n1", 0).await;
    let wanted = labels(&[
        ("app", "web"),
        ("pod-template-hash", "7d4b9c"),
        ("seam.dev/deployment", "web"),
    ]);
    let labelled = |wanted: BTreeMap<String, String>| {
        let c = c.clone();
        move || {
            let c = c.clone();
            let wanted = wanted.clone();
            async move {
                let ep = c.get_endpoint("shop/web-7d4b9c-x2x").await.ok()?;
                (ep.labels == wanted).then_some(ep)
            }
        }
    };
    let ep = eventually("endpoint labelled", labelled(wanted.clone())).await;
    // The pod's named ports came along (a Service's named targetPort resolves against them).
    assert_eq!(
        ep.ports,
        vec![seam_model::ContainerPort {
            name: "http".into(),
            port: 8080,
            protocol: seam_model::PortProtocol::Tcp
        }]
    );
    // Only the labels and ports changed: the agent's fields are as it published them.
    assert_eq!(ep.node, "n1");
    assert_eq!(ep.container_id.as_deref(), Some("cid-web-7d4b9c-x2x"));

    // Relabelled in Kubernetes: a label removed there is removed from the endpoint.
    env.api.apply(
        K::Pod,
        pod(
            "shop",
            "web-7d4b9c-x2x",
            json!({"app": "shop-web", "pod-template-hash": "7d4b9c"}),
            Some("web-7d4b9c"),
        ),
    );
    let relabelled = labels(&[
        ("app", "shop-web"),
        ("pod-template-hash", "7d4b9c"),
        ("seam.dev/deployment", "web"),
    ]);
    eventually("endpoint relabelled", labelled(relabelled.clone())).await;

    // An agent that republishes its endpoint without labels (its resync) is corrected.
    env.publish_pod("shop", "web-7d4b9c-x2x", "n1", 0).await;
    eventually("labels restored", labelled(relabelled)).await;

    // A pod the adapter saw first and whose endpoint appears later: labelled on arrival.
    env.api
        .apply(K::Pod, pod("shop", "solo", json!({"role": "batch"}), None));
    // Barrier: the writer handles inputs in order, so once this policy is in, the pod was seen.
    env.api
        .apply(K::NetworkPolicy, netpol("shop", "barrier", 1));
    env.wait_policy("NetworkPolicy", Some("shop"), "barrier", |_| true)
        .await;
    env.publish_pod("shop", "solo", "n1", 1).await;
    eventually("late endpoint labelled", || async {
        let ep = c.get_endpoint("shop/solo").await.ok()?;
        (ep.labels == labels(&[("role", "batch")])).then_some(())
    })
    .await;

    // Pod deleted, then its endpoint removed by the agent (CNI DEL): the adapter never puts it
    // back.
    env.api.delete(K::Pod, "shop/solo");
    c.delete_endpoint("shop/solo").await.unwrap();
    env.api
        .apply(K::NetworkPolicy, netpol("shop", "barrier", 2));
    env.wait_policy("NetworkPolicy", Some("shop"), "barrier", |p| {
        port_of(p) == Some(2)
    })
    .await;
    assert!(c
        .get_endpoint("shop/solo")
        .await
        .is_err_and(|e| e.is_not_found()));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_slices_and_nodes_are_kept_in_the_view() {
    let api = ApiServer::start().await;
    api.apply(
        K::Service,
        json!({"metadata": {"name": "web", "namespace": "shop"},
               "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]}}),
    );
    api.apply(
        K::EndpointSlice,
        json!({"metadata": {"name": "web-abc", "namespace": "shop",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.240.0.5"], "conditions": {"ready": true}}],
               "ports": [{"port": 8080, "protocol": "TCP"}]}),
    );
    api.apply(
        K::Node,
        json!({"metadata": {"name": "n1"},
               "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.1"}]}}),
    );
    let env = Env::start(api).await;
    eventually("view filled", || async {
        let view = env.view.snapshot();
        (view.services.contains_key("shop/web")
            && view.nodes.contains_key("n1")
            && view.slices_of("shop/web").len() == 1)
            .then_some(())
    })
    .await;
    let view = env.view.snapshot();
    let ip = view.services["shop/web"]
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone());
    assert_eq!(ip.as_deref(), Some("10.96.0.10"));
    assert_eq!(
        view.slices_of("shop/web")[0].endpoints[0].addresses,
        ["10.240.0.5"]
    );

    env.api.delete(K::Service, "shop/web");
    env.api.delete(K::Node, "n1");
    eventually("view emptied", || async {
        let view = env.view.snapshot();
        (!view.services.contains_key("shop/web") && view.nodes.is_empty()).then_some(())
    })
    .await;
    // Nothing of these reaches the controller (it has no such objects).
    assert!(env.client.list_nodes().await.unwrap().is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_kubernetes_names_label_their_endpoints_too() {
    // A namespace of 63 and a pod name of 253 characters: before issue 15, the namespace got no
    // segment and the pod's endpoint (`ns/pod`, 317 characters) was refused.
    let ns = format!("shop-{}", "s".repeat(58));
    let name = format!(
        "{}.{}.{}.{}",
        "w".repeat(63),
        "e".repeat(63),
        "b".repeat(63),
        "x".repeat(61)
    );
    assert_eq!((ns.len(), name.len()), (63, 253));
    let api = ApiServer::start().await;
    api.apply(K::Namespace, namespace(&ns, json!({}), json!({})));
    api.apply(K::Pod, pod(&ns, &name, json!({"app": "web"}), None));
    let env = Env::start(api).await;
    let c = &env.client;
    eventually("the namespace", || async {
        c.get_namespace(&ns).await.ok()
    })
    .await;
    env.publish_pod(&ns, &name, "n1", 0).await;
    let ep_name = format!("{ns}/{name}");
    let ep = eventually("endpoint labelled", || async {
        let ep = c.get_endpoint(&ep_name).await.ok()?;
        (ep.labels == labels(&[("app", "web")])).then_some(ep)
    })
    .await;
    assert_eq!(ep.segment, format!("ns-{ns}"));
    env.stop().await;
}
