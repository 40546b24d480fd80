use serde_json::json;

use super::*;

fn raw(value: Value) -> RawObject {
    RawObject::from_value(value)
}

#[test]
fn namespace_carries_labels_and_tenant_annotation() {
    let spec = namespace(&raw(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": "shop", "uid": "u1", "resourceVersion": "7",
            "labels": {"team": "a"},
            "annotations": {"seam.dev/tenant": "t1", "other": "x"}
        },
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
    })))
    .unwrap();
    assert_eq!(spec.namespace.name, "shop");
    assert_eq!(spec.namespace.labels["team"], "a");
    assert_eq!(spec.namespace.labels["kubernetes.io/metadata.name"], "shop");
    assert_eq!(spec.namespace.tenant.as_deref(), Some("t1"));
    assert!(spec.tenant_from_annotation);

    let plain = namespace(&raw(json!({"metadata": {"name": "b"}}))).unwrap();
    assert_eq!(plain.namespace.tenant, None);
    assert!(!plain.tenant_from_annotation);
}

#[test]
fn namespace_with_invalid_tenant_is_refused_with_its_key() {
    let err = namespace(&raw(json!({
        "metadata": {"name": "shop", "annotations": {"seam.dev/tenant": "Not_A_Name"}}
    })))
    .unwrap_err();
    assert!(matches!(err, TranslateError::Invalid { ref key, .. } if key == "shop"));
}

fn pod_json(labels: Value, owner: Option<&str>) -> Value {
    let mut meta = json!({"name": "web-7d4b9c-x2x", "namespace": "shop", "labels": labels});
    if let Some(owner) = owner {
        meta["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
            "uid": "rs-uid", "controller": true
        }]);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"podIP": "10.240.0.5", "phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

#[test]
fn pod_labels_and_deployment_from_its_replicaset() {
    let mapping = pod(&raw(pod_json(
        json!({"app": "web", "pod-template-hash": "7d4b9c"}),
        Some("web-7d4b9c"),
    )))
    .unwrap();
    let PodMapping::Labels(labels) = mapping else {
        panic!("{mapping:?}")
    };
    assert_eq!(labels.endpoint, "shop/web-7d4b9c-x2x");
    assert_eq!(labels.labels["app"], "web");
    assert_eq!(labels.labels[DEPLOYMENT_LABEL], "web");
    assert_eq!(labels.pod_ip, Some([10, 240, 0, 5].into()));
    // Ready and not terminating: no conditions, which is what the endpoint means without.
    assert_eq!(labels.conditions, None);
}

#[test]
fn pod_named_ports_of_containers_and_sidecars_are_kept_sorted() {
    let mut p = pod_json(json!({"app": "web"}), None);
    p["spec"]["containers"] = json!([
        {"name": "main", "image": "x", "ports": [
            {"name": "http", "containerPort": 8080},
            {"containerPort": 9000},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "Bad_Name", "containerPort": 81}
        ]}
    ]);
    p["spec"]["initContainers"] = json!([
        {"name": "proxy", "image": "x", "restartPolicy": "Always",
         "ports": [{"name": "admin", "containerPort": 15000}]},
        {"name": "setup", "image": "x", "ports": [{"name": "ignored", "containerPort": 1}]}
    ]);
    let PodMapping::Labels(labels) = pod(&raw(p)).unwrap() else {
        panic!("not mapped")
    };
    let ports: Vec<(&str, u16, seam_model::PortProtocol)> = labels
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.protocol))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("admin", 15000, seam_model::PortProtocol::Tcp),
            ("dns", 53, seam_model::PortProtocol::Udp),
            ("http", 8080, seam_model::PortProtocol::Tcp),
        ]
    );
}

#[test]
fn pod_without_a_deployment_gets_no_deployment_label() {
    // A ReplicaSet made by hand: no pod-template-hash label.
    let by_hand = pod(&raw(pod_json(json!({"app": "web"}), Some("web-rs")))).unwrap();
    // A hash that is not the ReplicaSet's suffix.
    let odd = pod(&raw(pod_json(
        json!({"pod-template-hash": "zzz"}),
        Some("web-7d4b9c"),
    )))
    .unwrap();
    for mapping in [by_hand, odd] {
        let PodMapping::Labels(labels) = mapping else {
            panic!("{mapping:?}")
        };
        assert!(!labels.labels.contains_key(DEPLOYMENT_LABEL), "{labels:?}");
    }
}

#[test]
fn host_network_and_finished_pods_are_left_alone() {
    let mut host = pod_json(json!({}), None);
    host["spec"]["hostNetwork"] = json!(true);
    let mut done = pod_json(json!({}), None);
    done["status"]["phase"] = json!("Succeeded");
    for (value, reason) in [(host, "host network"), (done, "finished")] {
        assert_eq!(pod(&raw(value)).unwrap(), PodMapping::Untouched(reason));
    }
}

#[test]
fn pod_conditions_are_the_endpointslice_controllers() {
    // (Ready condition, deletionTimestamp set) -> (ready, serving, terminating), None for the
    // plain ready pod. Kubernetes: serving = Ready; terminating = deletionTimestamp; ready =
    // serving and not terminating.
    let ready = |status: Option<&str>| match status {
        None => json!([{"type": "PodScheduled", "status": "True"}]),
        Some(s) => {
            json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": s}])
        }
    };
    let cases = [
        ("ready pod", Some("True"), false, None),
        (
            "readiness probe failing",
            Some("False"),
            false,
            Some((false, false, false)),
        ),
        (
            "readiness unknown",
            Some("Unknown"),
            false,
            Some((false, false, false)),
        ),
        (
            "no Ready condition yet (starting)",
            None,
            false,
            Some((false, false, false)),
        ),
        (
            "ready pod in its grace period",
            Some("True"),
            true,
            Some((false, true, true)),
        ),
        (
            "not ready and terminating",
            Some("False"),
            true,
            Some((false, false, true)),
        ),
    ];
    for (what, status, deleting, want) in cases {
        let mut p = pod_json(json!({"app": "web"}), None);
        p["status"]["conditions"] = ready(status);
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        }
        let PodMapping::Labels(labels) = pod(&raw(p)).unwrap() else {
            panic!("{what}: not mapped")
        };
        let want = want.map(
            |(ready, serving, terminating)| seam_model::EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            },
        );
        assert_eq!(labels.conditions, want, "{what}");
        // A terminating pod keeps its labels: its endpoint stays selected, only not ready.
        assert_eq!(labels.labels["app"], "web", "{what}");
    }
    // A pod without any status (just created) is not ready either.
    let mut p = pod_json(json!({}), None);
    p.as_object_mut().unwrap().remove("status");
    let PodMapping::Labels(labels) = pod(&raw(p)).unwrap() else {
        panic!("not mapped")
    };
    assert_eq!(labels.conditions.and_then(|c| c.ready), Some(false));
}

#[test]
fn an_endpoint_differs_when_its_conditions_do() {
    let PodMapping::Labels(mut labels) = pod(&raw(pod_json(json!({"app": "web"}), None))).unwrap()
    else {
        panic!("not mapped")
    };
    let ip = std::net::Ipv4Addr::new(10, 240, 0, 5);
    let mut endpoint = seam_model::Endpoint {
        name: labels.endpoint.clone(),
        kind: seam_model::EndpointKind::Pod,
        namespace: "shop".into(),
        segment: "shop".into(),
        node: "n1".into(),
        ip,
        mac: seam_model::endpoint_mac(ip),
        labels: labels.labels.clone(),
        container_id: None,
        ifname: None,
        ports: Vec::new(),
        conditions: None,
    };
    assert!(!labels.differs(&endpoint));
    labels.conditions = Some(seam_model::EndpointConditions {
        ready: Some(false),
        serving: Some(false),
        terminating: Some(false),
    });
    assert!(labels.differs(&endpoint));
    endpoint.conditions = labels.conditions;
    assert!(!labels.differs(&endpoint));
}

#[test]
fn malformed_pod_is_a_decode_error_naming_its_key() {
    let err = pod(&raw(json!({
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {"containers": "not a list"}
    })))
    .unwrap_err();
    assert!(matches!(err, TranslateError::Decode { ref key, .. } if key == "shop/p"));
    assert!(err.to_string().contains("shop/p"), "{err}");
}

#[test]
fn policy_is_forwarded_with_only_the_metadata_seam_accepts() {
    // A list item of a built-in kind: no apiVersion or kind.
    let obj = raw(json!({
        "metadata": {
            "name": "db", "namespace": "shop", "uid": "u", "resourceVersion": "42",
            "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
            "labels": {"team": "a"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                "note": "keep"
            }
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        "status": {}
    }));
    let spec = policy(WatchedKind::NetworkPolicy, &obj).unwrap();
    assert_eq!(spec.kind, "NetworkPolicy");
    assert_eq!(spec.namespace.as_deref(), Some("shop"));
    assert_eq!(spec.name, "db");
    assert_eq!(
        spec.object,
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": "db", "namespace": "shop",
                "labels": {"team": "a"},
                "annotations": {"note": "keep", "seam.dev/managed-by": "seam-k8s"}
            },
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        })
    );
    assert!(is_managed(&spec.object));
}

#[test]
fn cluster_scoped_policy_loses_any_namespace_and_keeps_its_api_version() {
    let obj = raw(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "ignored"},
        "spec": {"tier": "Admin", "priority": 5, "subject": {"namespaces": {}}}
    }));
    let spec = policy(WatchedKind::ClusterNetworkPolicy, &obj).unwrap();
    assert_eq!(spec.namespace, None);
    assert_eq!(spec.object["metadata"].get("namespace"), None);
    assert_eq!(
        spec.object["apiVersion"],
        "policy.networking.k8s.io/v1alpha2"
    );
    let group = policy(
        WatchedKind::EndpointGroup,
        &raw(json!({"metadata": {"name": "g"}, "spec": {}})),
    )
    .unwrap();
    assert_eq!(group.object["apiVersion"], "seam.dev/v1alpha1");
}

#[test]
fn policy_with_malformed_metadata_is_refused() {
    let err = policy(
        WatchedKind::NetworkPolicy,
        &raw(json!({"metadata": {"name": "x", "namespace": "n", "labels": 5}, "spec": {}})),
    )
    .unwrap_err();
    assert!(matches!(err, TranslateError::Decode { ref key, .. } if key == "n/x"));
    let unnamed = policy(WatchedKind::Contract, &raw(json!({"spec": {}}))).unwrap_err();
    assert!(matches!(
        unnamed,
        TranslateError::MissingMeta { field: "name", .. }
    ));
}

#[test]
fn tenant_crd() {
    let t = tenant(&raw(json!({
        "apiVersion": "seam.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "t1", "uid": "x"},
        "spec": {"isolation": "multitenant", "global": true}
    })))
    .unwrap();
    assert_eq!(
        t,
        seam_model::Tenant {
            name: "t1".into(),
            isolation: seam_model::IsolationMode::Multitenant,
            global: true
        }
    );
    assert_eq!(
        tenant(&raw(json!({"metadata": {"name": "t2"}}))).unwrap(),
        seam_model::Tenant::named("t2")
    );
    let bad = tenant(&raw(
        json!({"metadata": {"name": "t3"}, "spec": {"isolation": "subnet"}}),
    ))
    .unwrap_err();
    assert!(matches!(bad, TranslateError::Decode { ref key, .. } if key == "t3"));
}

#[test]
fn raw_object_keeps_the_key_of_malformed_metadata() {
    let obj = raw(
        json!({"metadata": {"name": "p", "namespace": "n", "resourceVersion": "9", "labels": [1]}}),
    );
    assert_eq!(obj.key(), "n/p");
    assert_eq!(obj.metadata.resource_version.as_deref(), Some("9"));
}
