//! Services and EndpointSlices reach the controller (the `default/kubernetes` Service and its
//! slice included; slices of Services with a selector, ExternalName Services and IPv6 slices
//! not), deletions follow, a restarted adapter removes what Kubernetes lost meanwhile (only its
//! own objects), and Seam's LoadBalancer address is written back into the Service's status.

use seam_client::ControllerClient;
use seam_k8s::services::SkipReason;
use seam_k8s::WatchedKind as K;
use seam_model::ApplyObject;
use serde_json::{json, Value};

use crate::apiserver::ApiServer;
use crate::harness::{eventually, namespace, Env};

/// `GET /v1/{plural}/{namespace}/{name}` as JSON, `None` when the controller has none.
async fn get(client: &ControllerClient, plural: &str, key: &str) -> Option<Value> {
    let response = client
        .request_raw("GET", &format!("/v1/{plural}/{key}"), Vec::new())
        .await
        .unwrap();
    match response.status {
        200 => Some(serde_json::from_slice(&response.body).unwrap()),
        404 => None,
        other => panic!(
            "GET {plural}/{key}: {other} {}",
            String::from_utf8_lossy(&response.body)
        ),
    }
}

async fn wait(env: &Env, plural: &str, key: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("{plural} {key} in the controller"), || async {
        get(&env.client, plural, key).await.filter(|v| check(v))
    })
    .await
}

async fn wait_gone(env: &Env, plural: &str, key: &str) {
    eventually(
        &format!("{plural} {key} gone from the controller"),
        || async { get(&env.client, plural, key).await.is_none().then_some(()) },
    )
    .await;
}

fn kubernetes_service() -> Value {
    json!({
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": 6443}],
                 "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "type": "ClusterIP",
                 "sessionAffinity": "None", "ipFamilies": ["IPv4"],
                 "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}}
    })
}

fn kubernetes_slice(addresses: &[&str]) -> Value {
    json!({
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": addresses.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]
    })
}

fn web_service() -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "shop",
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"selector": {"app": "web"}, "type": "LoadBalancer",
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
                 "clusterIP": "10.96.5.5", "clusterIPs": ["10.96.5.5"],
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": true},
        "status": {"loadBalancer": {}}
    })
}

fn web_slice(name: &str, address_type: &str, address: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web",
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": address_type,
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

fn ingress_ip(service: &Value) -> Option<String> {
    service
        .pointer("/status/loadBalancer/ingress/0/ip")
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_slices_follow_kubernetes_and_the_address_goes_back() {
    let api = ApiServer::start().await;
    api.apply(K::Namespace, namespace("default", json!({}), json!({})));
    api.apply(K::Namespace, namespace("shop", json!({}), json!({})));
    api.apply(K::Service, kubernetes_service());
    api.apply(K::EndpointSlice, kubernetes_slice(&["192.168.10.2"]));
    api.apply(K::Service, web_service());
    api.apply(
        K::EndpointSlice,
        web_slice("web-abcde", "IPv4", "10.244.1.5"),
    );
    api.apply(K::EndpointSlice, web_slice("web-v6", "IPv6", "fd00::5"));
    api.apply(
        K::Service,
        json!({"metadata": {"name": "db", "namespace": "shop"},
               "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
    );
    let env = Env::start(api).await;
    env.client
        .apply(&[ApplyObject::AddressPool(seam_model::AddressPool {
            name: "public".into(),
            addresses: vec!["203.0.113.16/28".parse().unwrap()],
            auto_assign: true,
        })])
        .await
        .unwrap();

    let kubernetes = wait(&env, "services", "default/kubernetes", |_| true).await;
    assert_eq!(kubernetes["spec"]["clusterIP"]["address"], "10.96.0.1");
    assert_eq!(
        kubernetes["labels"]["seam.dev/managed-by"], "seam-k8s",
        "{kubernetes}"
    );
    let slice = wait(&env, "endpointslices", "default/kubernetes", |_| true).await;
    assert_eq!(slice["endpoints"][0]["addresses"][0], "192.168.10.2");
    wait(&env, "services", "shop/web", |_| true).await;

    // Seam's address for the LoadBalancer is written into the Kubernetes Service's status.
    let address = eventually("the LoadBalancer address in Kubernetes", || async {
        env.api
            .get(K::Service, "shop/web")
            .as_ref()
            .and_then(ingress_ip)
    })
    .await;
    let stored = get(&env.client, "services", "shop/web").await.unwrap();
    assert_eq!(ingress_ip(&stored).as_deref(), Some(address.as_str()));
    assert!(address.starts_with("203.0.113."), "{address}");

    // Not forwarded, and counted with the reason.
    assert!(get(&env.client, "endpointslices", "shop/web-abcde")
        .await
        .is_none());
    assert!(get(&env.client, "endpointslices", "shop/web-v6")
        .await
        .is_none());
    assert!(get(&env.client, "services", "shop/db").await.is_none());
    let skipped = env.view.snapshot().skipped;
    assert_eq!(
        skipped.get("Service shop/db"),
        Some(&SkipReason::ExternalName)
    );
    assert_eq!(
        skipped.get("EndpointSlice shop/web-v6"),
        Some(&SkipReason::Ipv6Slice)
    );

    // Changes and deletions follow.
    env.api.apply(
        K::EndpointSlice,
        kubernetes_slice(&["192.168.10.2", "192.168.10.3"]),
    );
    wait(&env, "endpointslices", "default/kubernetes", |s| {
        s["endpoints"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    env.api.delete(K::Service, "shop/web");
    wait_gone(&env, "services", "shop/web").await;
    // The status patch was made once: the echo of the patched Service changes nothing.
    assert_eq!(env.api.status_patches(K::Service), 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_kubernetes_lost_while_the_adapter_was_away_is_removed_and_nothing_else() {
    let api = ApiServer::start().await;
    api.apply(K::Namespace, namespace("default", json!({}), json!({})));
    api.apply(K::Service, kubernetes_service());
    api.apply(K::EndpointSlice, kubernetes_slice(&["192.168.10.2"]));
    api.apply(
        K::Service,
        json!({"metadata": {"name": "legacy", "namespace": "default"},
               "spec": {"ports": [{"port": 80}], "clusterIP": "10.96.7.7"}}),
    );
    api.apply(
        K::EndpointSlice,
        json!({"metadata": {"name": "legacy-1", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "legacy"}},
               "addressType": "IPv4", "endpoints": [{"addresses": ["192.168.20.1"]}],
               "ports": [{"port": 80}]}),
    );
    let mut env = Env::start(api).await;
    wait(&env, "endpointslices", "default/legacy-1", |_| true).await;
    wait(&env, "endpointslices", "default/kubernetes", |_| true).await;
    // A Service applied by hand (`seam apply`): not the adapter's.
    let by_hand: seam_model::Service = serde_json::from_value(json!({
        "name": "by-hand", "namespace": "default",
        "spec": {"ports": [{"port": 80}], "selector": {"app": "x"}}
    }))
    .unwrap();
    env.client
        .apply(&[ApplyObject::Service(by_hand)])
        .await
        .unwrap();

    env.restart_adapter(|api| {
        api.delete_unseen(K::EndpointSlice, "default/legacy-1");
        api.delete_unseen(K::Service, "default/legacy");
    })
    .await;
    wait_gone(&env, "endpointslices", "default/legacy-1").await;
    wait_gone(&env, "services", "default/legacy").await;
    assert!(get(&env.client, "services", "default/by-hand")
        .await
        .is_some());
    assert!(get(&env.client, "services", "default/kubernetes")
        .await
        .is_some());
    assert!(get(&env.client, "endpointslices", "default/kubernetes")
        .await
        .is_some());
    env.stop().await;
}

/// Pod `shop/name` labelled `app=web`, with its `Ready` condition and, when `deleting`, a
/// `deletionTimestamp` (in its grace period).
fn web_pod(name: &str, ready: bool, deleting: bool) -> Value {
    let mut pod = crate::harness::pod("shop", name, json!({"app": "web"}), None);
    let status = if ready { "True" } else { "False" };
    pod["status"] = json!({"phase": "Running",
                           "conditions": [{"type": "Ready", "status": status}]});
    if deleting {
        pod["metadata"]["deletionTimestamp"] = json!("2026-12-07T12:00:00Z");
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    }
    pod
}

/// The endpoints Service `shop/web` sends new connections to, as every agent (and `seam get
/// services`) computes them from the controller's snapshot.
async fn used_backends(client: &ControllerClient) -> Option<Vec<String>> {
    let snapshot = client.snapshot().await.ok()?;
    let service = snapshot
        .services
        .iter()
        .find(|s| s.namespace == "shop" && s.name == "web")?;
    let resolved = seam_model::resolve(service, &snapshot.endpoints, &snapshot.endpoint_slices);
    let port = resolved.first()?;
    Some(
        seam_model::usable(
            &port.backends,
            service.spec.publish_not_ready_addresses,
            None,
        )
        .iter()
        .filter_map(|b| b.endpoint.clone())
        .collect(),
    )
}

async fn wait_used(env: &Env, what: &str, want: &[&str]) {
    eventually(what, || async {
        let used = used_backends(&env.client).await?;
        (used == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_readiness_and_deletion_decide_whether_its_service_uses_it() {
    let api = ApiServer::start().await;
    api.apply(K::Namespace, namespace("shop", json!({}), json!({})));
    api.apply(
        K::Service,
        json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"app": "web"}, "type": "ClusterIP",
                     "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}
        }),
    );
    // web-1 is running but its readiness probe has not passed; web-2 is Ready.
    api.apply(K::Pod, web_pod("web-1", false, false));
    api.apply(K::Pod, web_pod("web-2", true, false));
    let env = Env::start(api).await;
    wait(&env, "services", "shop/web", |_| true).await;
    env.publish_pod("shop", "web-1", "n1", 0).await;
    env.publish_pod("shop", "web-2", "n1", 1).await;
    wait_used(&env, "only the ready pod is used", &["shop/web-2"]).await;
    let web1 = env.client.get_endpoint("shop/web-1").await.unwrap();
    let state = web1.state();
    assert!(
        !state.ready && !state.serving && !state.terminating,
        "{state:?}"
    );
    // The Ready pod's record is left as the agent wrote it: no conditions means ready.
    let web2 = env.client.get_endpoint("shop/web-2").await.unwrap();
    assert_eq!(web2.conditions, None);

    // The probe passes: both are used, and web-1's record has no conditions left.
    env.api.apply(K::Pod, web_pod("web-1", true, false));
    wait_used(&env, "both pods are used", &["shop/web-1", "shop/web-2"]).await;
    assert_eq!(
        env.client
            .get_endpoint("shop/web-1")
            .await
            .unwrap()
            .conditions,
        None
    );

    // web-2 is deleted and runs through its grace period: terminating, still serving, not
    // used while web-1 is ready.
    env.api.apply(K::Pod, web_pod("web-2", true, true));
    wait_used(&env, "the terminating pod is left out", &["shop/web-1"]).await;
    let state = env.client.get_endpoint("shop/web-2").await.unwrap().state();
    assert!(
        !state.ready && state.serving && state.terminating,
        "{state:?}"
    );

    // web-1 fails its probe: nothing is ready, so the serving terminating pod finishes the work.
    env.api.apply(K::Pod, web_pod("web-1", false, false));
    wait_used(
        &env,
        "the serving terminating pod as the fallback",
        &["shop/web-2"],
    )
    .await;

    // An agent that republishes its record without conditions (its resync) is corrected.
    env.publish_pod("shop", "web-1", "n1", 0).await;
    eventually("web-1 not ready again", || async {
        let ep = env.client.get_endpoint("shop/web-1").await.ok()?;
        (!ep.state().ready).then_some(())
    })
    .await;
    wait_used(&env, "still only the terminating pod", &["shop/web-2"]).await;
    env.stop().await;
}
