#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::*;

/// Server-set metadata as kube-apiserver returns it.
fn server_meta(meta: Value) -> Value {
    let mut meta = meta;
    let m = meta.as_object_mut().unwrap();
    m.insert("uid".into(), json!("0b7c6b38-1d0e-4d0c-9a8f-3f1e2a4b5c6d"));
    m.insert("resourceVersion".into(), json!("193"));
    m.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
    m.insert(
        "managedFields".into(),
        json!([{"manager": "kube-apiserver", "operation": "Update", "apiVersion": "v1"}]),
    );
    meta
}

/// `default/kubernetes` as kube-apiserver creates it (a list item: no apiVersion nor kind).
fn kubernetes_service() -> RawObject {
    RawObject::from_value(json!({
        "metadata": server_meta(json!({
            "name": "kubernetes", "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"}
        })),
        "spec": {
            "ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": 6443}],
            "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "type": "ClusterIP",
            "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster"
        },
        "status": {"loadBalancer": {}}
    }))
}

fn forward(obj: &RawObject) -> ForwardedService {
    match service(obj).unwrap_or_else(|e| panic!("{}", crate::sync::error_chain(&e))) {
        ServiceMapping::Forward(f) => *f,
        ServiceMapping::Skip(reason) => panic!("skipped: {reason}"),
    }
}

#[test]
fn the_kubernetes_service_is_forwarded_without_a_selector() {
    let f = forward(&kubernetes_service());
    let s = &f.service;
    assert_eq!(s.key(), "default/kubernetes");
    assert!(!has_selector(s));
    assert_eq!(
        s.spec.cluster_ip,
        seam_model::ClusterIp::Address(Ipv4Addr::new(10, 96, 0, 1))
    );
    assert_eq!(s.spec.ports.len(), 1);
    assert_eq!(s.spec.ports[0].port, 443);
    assert_eq!(
        s.spec.ports[0].target_port,
        Some(seam_model::TargetPort::Number(6443))
    );
    assert!(is_managed(&s.labels));
    assert_eq!(s.labels["component"], "apiserver");
    assert!(!f.write_status, "not a LoadBalancer");
    assert!(s.status.is_empty());
}

#[test]
fn external_name_and_ipv6_only_services_are_skipped() {
    let external = RawObject::from_value(json!({
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "db.example.com"}
    }));
    assert_eq!(
        service(&external).unwrap(),
        ServiceMapping::Skip(SkipReason::ExternalName)
    );
    let v6 = RawObject::from_value(json!({
        "metadata": {"name": "web6", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}],
                 "clusterIP": "fd00::10", "clusterIPs": ["fd00::10"],
                 "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}
    }));
    assert_eq!(
        service(&v6).unwrap(),
        ServiceMapping::Skip(SkipReason::Ipv6Service)
    );
}

#[test]
fn a_dual_stack_service_is_forwarded_with_its_ipv4_cluster_ip() {
    let obj = RawObject::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop",
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                     "seam.dev/address-pool": "public"}},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}],
                 "type": "LoadBalancer", "externalTrafficPolicy": "Local",
                 "healthCheckNodePort": 31999, "allocateLoadBalancerNodePorts": true,
                 "clusterIP": "fd00::10", "clusterIPs": ["fd00::10", "10.96.3.4"],
                 "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "PreferDualStack",
                 "sessionAffinity": "ClientIP",
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10", "ipMode": "VIP"}]}}
    }));
    let f = forward(&obj);
    let s = &f.service;
    assert!(f.write_status);
    assert!(has_selector(s));
    assert_eq!(
        s.spec.cluster_ip,
        seam_model::ClusterIp::Address(Ipv4Addr::new(10, 96, 3, 4))
    );
    assert_eq!(s.spec.service_type, seam_model::ServiceType::LoadBalancer);
    assert_eq!(
        s.spec.external_traffic_policy,
        seam_model::TrafficPolicy::Local
    );
    assert_eq!(
        s.spec.session_affinity,
        seam_model::SessionAffinity::ClientIp {
            timeout_seconds: 60
        }
    );
    assert_eq!(s.spec.ports[0].node_port, Some(30080));
    assert_eq!(
        s.spec.ports[0].target_port,
        Some(seam_model::TargetPort::Name("http".into()))
    );
    // Only the annotation Seam reads; the status is the controller's, not taken from Kubernetes.
    assert_eq!(
        s.annotations.keys().collect::<Vec<_>>(),
        vec![seam_model::ADDRESS_POOL_ANNOTATION]
    );
    assert!(s.status.is_empty());
}

#[test]
fn a_load_balancer_of_another_class_gets_what_kube_proxy_would_give_it() {
    let obj = |allocate: bool| {
        RawObject::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"app": "web"}, "type": "LoadBalancer",
                     "loadBalancerClass": "example.com/other",
                     "allocateLoadBalancerNodePorts": allocate,
                     "ports": [{"port": 80, "nodePort": 30080}], "clusterIP": "10.96.3.4"}
        }))
    };
    let f = forward(&obj(true));
    assert!(!f.write_status, "its status is the other load balancer's");
    assert_eq!(
        f.service.spec.service_type,
        seam_model::ServiceType::NodePort
    );
    assert_eq!(f.service.spec.ports[0].node_port, Some(30080));
    let f = forward(&obj(false));
    assert_eq!(
        f.service.spec.service_type,
        seam_model::ServiceType::ClusterIP
    );
    assert_eq!(f.service.spec.ports[0].node_port, None);
    let own = RawObject::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "type": "LoadBalancer",
                 "loadBalancerClass": LOAD_BALANCER_CLASS, "ports": [{"port": 80}]}
    }));
    let f = forward(&own);
    assert!(f.write_status);
    assert_eq!(
        f.service.spec.service_type,
        seam_model::ServiceType::LoadBalancer
    );
}

fn kubernetes_slice(address_type: &str) -> RawObject {
    RawObject::from_value(json!({
        "metadata": server_meta(json!({
            "name": "kubernetes", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes",
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
        })),
        "addressType": address_type,
        "endpoints": [{"addresses": ["192.168.10.2"], "conditions": {"ready": true},
                       "hints": {"forZones": [{"name": "a"}]}},
                      {"addresses": ["192.168.10.3"], "conditions": {"ready": false, "serving": true, "terminating": true},
                       "nodeName": "cp2"}],
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]
    }))
}

#[test]
fn the_kubernetes_endpoint_slice_is_forwarded() {
    let SliceMapping::Forward(slice) = endpoint_slice(&kubernetes_slice("IPv4")).unwrap() else {
        panic!("skipped")
    };
    assert_eq!(slice.key(), "default/kubernetes");
    assert_eq!(slice.service, "kubernetes");
    assert!(is_managed(&slice.labels));
    assert_eq!(slice.endpoints.len(), 2);
    assert_eq!(
        slice.endpoints[0].addresses,
        vec![Ipv4Addr::new(192, 168, 10, 2)]
    );
    assert_eq!(slice.endpoints[1].conditions.terminating, Some(true));
    assert_eq!(slice.endpoints[1].node_name.as_deref(), Some("cp2"));
    assert_eq!(slice.ports[0].port, 6443);
    assert_eq!(
        service_key_of_slice(&kubernetes_slice("IPv4")).as_deref(),
        Some("default/kubernetes")
    );
}

#[test]
fn ipv6_fqdn_and_orphan_slices_are_skipped() {
    assert_eq!(
        endpoint_slice(&kubernetes_slice("IPv6")).unwrap(),
        SliceMapping::Skip(SkipReason::Ipv6Slice)
    );
    assert_eq!(
        endpoint_slice(&kubernetes_slice("FQDN")).unwrap(),
        SliceMapping::Skip(SkipReason::FqdnSlice)
    );
    let orphan = RawObject::from_value(json!({
        "metadata": {"name": "x", "namespace": "default"},
        "addressType": "IPv4", "endpoints": []
    }));
    assert_eq!(
        endpoint_slice(&orphan).unwrap(),
        SliceMapping::Skip(SkipReason::NoService)
    );
}
