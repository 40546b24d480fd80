//! Service, EndpointSlice and AddressPool manifests: real Kubernetes output decodes, every
//! refusal names its path.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::manifest::{parse_manifests, parse_value, Manifest, ManifestError};
use crate::service::*;
use crate::{ApplyObject, PortProtocol};

/// `kubectl get svc web -o yaml` of a ClusterIP Service on a 1.30 cluster.
const KUBECTL_CLUSTER_IP: &str = r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"v1","kind":"Service","metadata":{"annotations":{},"labels":{"app":"web"},"name":"web","namespace":"shop"},"spec":{"ports":[{"name":"http","port":80,"targetPort":"http"}],"selector":{"app":"web"}}}
  creationTimestamp: "2024-05-02T10:11:12Z"
  labels:
    app: web
  name: web
  namespace: shop
  resourceVersion: "48213"
  uid: 6f1c3a52-8d0e-4c47-b1b5-2f3a9d1e7c10
spec:
  clusterIP: 10.96.41.7
  clusterIPs:
  - 10.96.41.7
  internalTrafficPolicy: Cluster
  ipFamilies:
  - IPv4
  ipFamilyPolicy: SingleStack
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: http
  - name: metrics
    port: 9090
    protocol: TCP
    targetPort: 9090
  selector:
    app: web
  sessionAffinity: None
  type: ClusterIP
status:
  loadBalancer: {}
"#;

/// `kubectl get svc gw -o yaml` of a LoadBalancer Service with eTP Local, as the API server
/// completes it (node ports, health check port, ingress written by a provider).
const KUBECTL_LOAD_BALANCER: &str = r#"
apiVersion: v1
kind: Service
metadata:
  creationTimestamp: "2024-05-02T10:11:12Z"
  finalizers:
  - service.kubernetes.io/load-balancer-cleanup
  name: gw
  namespace: default
  annotations:
    seam.dev/address-pool: public
  resourceVersion: "991"
  uid: 0b6c1f0e-2b7e-4a57-9a8e-3d0c3b5e8a21
  managedFields:
  - apiVersion: v1
    fieldsType: FieldsV1
    fieldsV1: {"f:spec": {"f:ports": {}}}
    manager: kubectl-client-side-apply
    operation: Update
    time: "2024-05-02T10:11:12Z"
spec:
  allocateLoadBalancerNodePorts: true
  clusterIP: 10.96.200.3
  clusterIPs: [10.96.200.3]
  externalTrafficPolicy: Local
  healthCheckNodePort: 31456
  internalTrafficPolicy: Cluster
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  loadBalancerIP: 198.51.100.10
  ports:
  - name: https
    nodePort: 30443
    port: 443
    protocol: TCP
    targetPort: 8443
  - name: dns
    nodePort: 30053
    port: 53
    protocol: UDP
    targetPort: 5353
  selector:
    app: gw
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 600
  type: LoadBalancer
status:
  loadBalancer:
    ingress:
    - ip: 198.51.100.10
      ipMode: VIP
"#;

/// The API server's own Service and its EndpointSlice (`kubectl get -o yaml`).
const KUBERNETES_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  creationTimestamp: "2024-05-01T08:00:00Z"
  labels:
    component: apiserver
    provider: kubernetes
  name: kubernetes
  namespace: default
  resourceVersion: "199"
  uid: 3d9b0a1c-5c43-4e61-9a0e-7b9a3c2f1d00
spec:
  clusterIP: 10.96.0.1
  clusterIPs:
  - 10.96.0.1
  internalTrafficPolicy: Cluster
  ipFamilies:
  - IPv4
  ipFamilyPolicy: SingleStack
  ports:
  - name: https
    port: 443
    protocol: TCP
    targetPort: 6443
  sessionAffinity: None
  type: ClusterIP
status:
  loadBalancer: {}
---
addressType: IPv4
apiVersion: discovery.k8s.io/v1
endpoints:
- addresses:
  - 172.18.0.2
  conditions:
    ready: true
kind: EndpointSlice
metadata:
  creationTimestamp: "2024-05-01T08:00:00Z"
  generation: 1
  labels:
    kubernetes.io/service-name: kubernetes
  name: kubernetes
  namespace: default
  resourceVersion: "201"
  uid: 8a1e2f3c-0000-4000-8000-000000000001
ports:
- name: https
  port: 6443
  protocol: TCP
"#;

/// An EndpointSlice written by Kubernetes' EndpointSlice controller for a selector Service.
const CONTROLLER_SLICE: &str = r#"
addressType: IPv4
apiVersion: discovery.k8s.io/v1
endpoints:
- addresses:
  - 10.244.1.5
  conditions:
    ready: true
    serving: true
    terminating: false
  nodeName: worker-1
  targetRef:
    kind: Pod
    name: web-7d4b9c8f6-x2k8p
    namespace: shop
    uid: 1c0e8f7a-1111-4222-8333-444455556666
  zone: zone-a
  hints:
    forZones:
    - name: zone-a
- addresses:
  - 10.244.2.9
  conditions:
    ready: false
    serving: true
    terminating: true
  nodeName: worker-2
kind: EndpointSlice
metadata:
  annotations:
    endpoints.kubernetes.io/last-change-trigger-time: "2024-05-02T10:12:00Z"
  generateName: web-
  generation: 4
  labels:
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
    kubernetes.io/service-name: web
  name: web-abc12
  namespace: shop
  ownerReferences:
  - apiVersion: v1
    blockOwnerDeletion: true
    controller: true
    kind: Service
    name: web
    uid: 6f1c3a52-8d0e-4c47-b1b5-2f3a9d1e7c10
  resourceVersion: "48250"
  uid: 9e9e9e9e-0000-4000-8000-000000000002
ports:
- name: http
  port: 8080
  protocol: TCP
"#;

fn one(text: &str) -> Manifest {
    match parse_manifests(text) {
        Ok(mut objects) if objects.len() == 1 => objects.remove(0),
        Ok(objects) => panic!("{} objects", objects.len()),
        Err(e) => panic!("{e}"),
    }
}

fn service(text: &str) -> Service {
    match one(text) {
        Manifest::Service(s) => s,
        other => panic!("not a Service: {other:?}"),
    }
}

/// The problems of a refused manifest, as `path: message` lines.
fn refused(text: &str) -> Vec<(String, String)> {
    match parse_manifests(text) {
        Err(ManifestError::Invalid(problems)) => {
            problems.into_iter().map(|p| (p.path, p.message)).collect()
        }
        Err(e) => panic!("refused otherwise: {e}"),
        Ok(o) => panic!("accepted: {o:?}"),
    }
}

#[test]
fn kubectl_output_of_a_cluster_ip_service_decodes() {
    let s = service(KUBECTL_CLUSTER_IP);
    let expected = Service {
        name: "web".into(),
        namespace: "shop".into(),
        labels: BTreeMap::from([("app".into(), "web".into())]),
        annotations: BTreeMap::new(),
        spec: ServiceSpec {
            service_type: ServiceType::ClusterIP,
            selector: Some(BTreeMap::from([("app".into(), "web".into())])),
            ports: vec![
                ServicePort {
                    name: Some("http".into()),
                    protocol: PortProtocol::Tcp,
                    port: 80,
                    target_port: Some(TargetPort::Name("http".into())),
                    node_port: None,
                    app_protocol: None,
                },
                ServicePort {
                    name: Some("metrics".into()),
                    protocol: PortProtocol::Tcp,
                    port: 9090,
                    target_port: Some(TargetPort::Number(9090)),
                    node_port: None,
                    app_protocol: None,
                },
            ],
            cluster_ip: ClusterIp::Address(Ipv4Addr::new(10, 96, 41, 7)),
            ..ServiceSpec::default()
        },
        status: ServiceStatus::default(),
    };
    assert_eq!(s, expected);
}

#[test]
fn kubectl_output_of_a_load_balancer_service_decodes() {
    let s = service(KUBECTL_LOAD_BALANCER);
    assert_eq!(s.key(), "default/gw");
    assert_eq!(s.address_pool(), Some("public"));
    assert_eq!(s.spec.service_type, ServiceType::LoadBalancer);
    assert_eq!(s.spec.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(s.spec.internal_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(
        s.spec.session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 600
        }
    );
    assert_eq!(
        s.spec.load_balancer_ip,
        Some(Ipv4Addr::new(198, 51, 100, 10))
    );
    assert_eq!(s.spec.allocate_load_balancer_node_ports, Some(true));
    let ports: Vec<_> = s
        .spec
        .ports
        .iter()
        .map(|p| (p.port, p.protocol, p.node_port, p.target_port.clone()))
        .collect();
    assert_eq!(
        ports,
        [
            (
                443,
                PortProtocol::Tcp,
                Some(30443),
                Some(TargetPort::Number(8443))
            ),
            (
                53,
                PortProtocol::Udp,
                Some(30053),
                Some(TargetPort::Number(5353))
            ),
        ]
    );
    // Kubernetes' status is dropped: the controller writes Seam's.
    assert!(s.status.is_empty());
}

#[test]
fn the_api_servers_service_and_slice_decode() {
    let objects = parse_manifests(KUBERNETES_SERVICE).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = objects.iter().map(Manifest::describe).collect();
    assert_eq!(
        names,
        [
            "Service default/kubernetes",
            "EndpointSlice default/kubernetes"
        ]
    );
    let Manifest::Service(s) = &objects[0] else {
        panic!("not a Service")
    };
    assert_eq!(s.spec.selector, None);
    assert_eq!(
        s.spec.cluster_ip,
        ClusterIp::Address(Ipv4Addr::new(10, 96, 0, 1))
    );
    let Manifest::EndpointSlice(slice) = &objects[1] else {
        panic!("not a slice")
    };
    assert_eq!(slice.service, "kubernetes");
    assert_eq!(
        slice.endpoints,
        [SliceEndpoint {
            addresses: vec![Ipv4Addr::new(172, 18, 0, 2)],
            conditions: EndpointConditions {
                ready: Some(true),
                serving: None,
                terminating: None,
            },
            node_name: None,
            hostname: None,
            zone: None,
            target_ref: None,
        }]
    );
    assert_eq!(
        slice.ports,
        [SlicePort {
            name: Some("https".into()),
            port: 6443,
            protocol: PortProtocol::Tcp,
            app_protocol: None,
        }]
    );
}

#[test]
fn a_controller_written_slice_decodes_with_hints_dropped() {
    let Manifest::EndpointSlice(slice) = one(CONTROLLER_SLICE) else {
        panic!("not a slice")
    };
    assert_eq!(slice.key(), "shop/web-abc12");
    assert_eq!(slice.service, "web");
    assert_eq!(slice.labels.len(), 2);
    assert_eq!(slice.endpoints.len(), 2);
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("worker-1"));
    assert_eq!(slice.endpoints[0].zone.as_deref(), Some("zone-a"));
    assert_eq!(
        slice.endpoints[0]
            .target_ref
            .as_ref()
            .and_then(|r| r.get("name"))
            .and_then(|n| n.as_str()),
        Some("web-7d4b9c8f6-x2k8p")
    );
    assert_eq!(
        slice.endpoints[1].conditions,
        EndpointConditions {
            ready: Some(false),
            serving: Some(true),
            terminating: Some(true),
        }
    );
}

#[test]
fn objects_round_trip_through_the_apply_request() {
    let text = [
        KUBECTL_CLUSTER_IP,
        KUBECTL_LOAD_BALANCER,
        KUBERNETES_SERVICE,
        CONTROLLER_SLICE,
    ]
    .join("---\n");
    let objects = parse_manifests(&text).unwrap_or_else(|e| panic!("{e}"));
    let request = crate::manifest::apply_request(&objects).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_string(&request).unwrap_or_default();
    let back: crate::Apply = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(back, request);
    for object in &request.objects {
        match object {
            ApplyObject::Service(s) => assert_eq!(s.validate(), Ok(())),
            ApplyObject::EndpointSlice(s) => assert_eq!(s.validate(), Ok(())),
            other => panic!("{other:?}"),
        }
    }
    // The stored form spells the addresses as Kubernetes does.
    assert!(
        json.contains(r#""clusterIP":{"address":"10.96.41.7"}"#),
        "{json}"
    );
    assert!(
        json.contains(r#""loadBalancerIP":"198.51.100.10""#),
        "{json}"
    );
}

#[test]
fn parse_value_takes_the_api_servers_json() {
    let value = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dns", "namespace": "kube-system", "uid": "x", "resourceVersion": "7",
                     "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": "None", "selector": {"k8s-app": "kube-dns"},
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
        "status": {"loadBalancer": {}}
    });
    let Ok(Manifest::Service(s)) = parse_value(value) else {
        panic!("refused")
    };
    assert!(s.is_headless());
    assert_eq!(s.spec.ports.len(), 2);
    let bad = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
    let Err(ManifestError::Invalid(problems)) = parse_value(bad) else {
        panic!("accepted")
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].path, "spec.type");
    assert!(problems[0].message.contains("not supported"));
    assert_eq!(problems[1].path, "spec.ports");
}

#[test]
fn a_headless_service_without_selector_keeps_kubernetes_dual_stack_defaults() {
    // What the API server makes of a headless Service without selector: RequireDualStack.
    let s = service(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec:\n  clusterIP: None\n  clusterIPs: [None]\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n  ports: [{name: pg, port: 5432, protocol: TCP, targetPort: 5432}]\n",
    );
    assert!(s.is_headless());
    assert_eq!(s.spec.selector, None);
}

/// `kubectl get svc -A -o yaml`: a `v1 List`.
#[test]
fn a_kubectl_list_decodes_item_by_item() {
    let text = format!(
        "apiVersion: v1\nkind: List\nmetadata: {{resourceVersion: \"\"}}\nitems:\n{}",
        [KUBECTL_CLUSTER_IP, KUBECTL_LOAD_BALANCER]
            .iter()
            .map(|doc| {
                let doc = doc.trim_start_matches('\n');
                let mut lines = doc.lines();
                let first = lines.next().unwrap_or_default();
                let rest: Vec<String> = lines.map(|l| format!("  {l}")).collect();
                format!("- {first}\n{}\n", rest.join("\n"))
            })
            .collect::<String>()
    );
    let objects = parse_manifests(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let names: Vec<String> = objects.iter().map(Manifest::describe).collect();
    assert_eq!(names, ["Service shop/web", "Service default/gw"]);
}

#[test]
fn defaults_are_kubernetes_defaults() {
    let s = service(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 0, nodePort: 0}]\n  sessionAffinity: ClientIP\n",
    );
    assert_eq!(s.namespace, "default");
    // Empty strings are the fields left out.
    let empty = service(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: \"\"\n  sessionAffinity: \"\"\n  externalTrafficPolicy: \"\"\n  clusterIP: \"\"\n  selector: {app: web}\n  ports: [{port: 80, protocol: \"\", targetPort: \"\"}]\n",
    );
    assert_eq!(
        empty.spec,
        ServiceSpec {
            selector: Some(BTreeMap::from([("app".into(), "web".into())])),
            ports: vec![ServicePort {
                name: None,
                protocol: PortProtocol::Tcp,
                port: 80,
                target_port: None,
                node_port: None,
                app_protocol: None,
            }],
            ..ServiceSpec::default()
        }
    );
    assert_eq!(s.spec.service_type, ServiceType::ClusterIP);
    assert_eq!(s.spec.cluster_ip, ClusterIp::Auto);
    assert_eq!(s.spec.ports[0].protocol, PortProtocol::Tcp);
    assert_eq!(s.spec.ports[0].target_port, None);
    assert_eq!(s.spec.ports[0].node_port, None);
    assert_eq!(
        s.spec.session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: DEFAULT_AFFINITY_TIMEOUT_SECONDS
        }
    );
}

/// A Service with `spec` lines replaced, for refusal cases.
fn svc(spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n{spec}"
    )
}

#[test]
fn every_service_refusal_names_its_path() {
    let ports = "  selector: {app: web}\n  ports: [{port: 80}]\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (svc(&format!("{ports}  type: ExternalName\n")), "spec.type", "not supported"),
        (svc(&format!("{ports}  type: Bogus\n")), "spec.type", "not ClusterIP"),
        (svc(&format!("{ports}  externalName: a.b\n")), "spec.externalName", "does not support"),
        (svc(&format!("{ports}  clusterIP: fd00::1\n")), "spec.clusterIP", "IPv6"),
        (svc(&format!("{ports}  clusterIP: 10.96.0.300\n")), "spec.clusterIP", "not an IPv4"),
        (svc(&format!("{ports}  clusterIP: 127.0.0.1\n")), "spec.clusterIP", "loopback"),
        (svc(&format!("{ports}  clusterIPs: [10.96.0.5, fd00::5]\n")), "spec.clusterIPs", "dual-stack"),
        (svc(&format!("{ports}  clusterIP: 10.96.0.5\n  clusterIPs: [10.96.0.6]\n")), "spec.clusterIPs[0]", "differs"),
        (svc(&format!("{ports}  ipFamilies: [IPv6]\n")), "spec.ipFamilies[0]", "IPv6"),
        (svc(&format!("{ports}  ipFamilies: [IPv4, IPv6]\n")), "spec.ipFamilies", "dual-stack"),
        (svc(&format!("{ports}  ipFamilyPolicy: RequireDualStack\n")), "spec.ipFamilyPolicy", "not supported"),
        (svc(&format!("{ports}  externalIPs: [192.0.2.1, 192.0.2.1]\n")), "spec.externalIPs[1]", "twice"),
        (svc(&format!("{ports}  externalIPs: [224.0.0.1]\n")), "spec.externalIPs[0]", "multicast"),
        (svc(&format!("{ports}  sessionAffinity: Cookie\n")), "spec.sessionAffinity", "not supported"),
        (svc(&format!("{ports}  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 5}}}}\n")), "spec.sessionAffinityConfig", "sessionAffinity is None"),
        (svc(&format!("{ports}  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 0}}}}\n")), "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "1..=86400"),
        (svc(&format!("{ports}  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 86401}}}}\n")), "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "1..=86400"),
        (svc(&format!("{ports}  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: -1}}}}\n")), "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "1..=86400"),
        (svc(&format!("{ports}  externalTrafficPolicy: Local\n")), "spec.externalTrafficPolicy", "NodePort and LoadBalancer"),
        (svc(&format!("{ports}  externalTrafficPolicy: OnlyLocal\n")), "spec.externalTrafficPolicy", "not Cluster or Local"),
        (svc(&format!("{ports}  externalTrafficPolicy: Cluster\n")), "spec.externalTrafficPolicy", "may only be set"),
        (svc(&format!("{ports}  type: NodePort\n  externalTrafficPolicy: OnlyLocal\n")), "spec.externalTrafficPolicy", "not Cluster or Local"),
        (svc("  ports: [{port: 80, appProtocol: \"not valid\"}]\n"), "spec.ports[0].appProtocol", "application protocol"),
        (svc(&format!("{ports}  internalTrafficPolicy: Global\n")), "spec.internalTrafficPolicy", "not Cluster or Local"),
        (svc(&format!("{ports}  loadBalancerIP: 198.51.100.1\n")), "spec.loadBalancerIP", "LoadBalancer"),
        (svc(&format!("{ports}  allocateLoadBalancerNodePorts: false\n")), "spec.allocateLoadBalancerNodePorts", "LoadBalancer"),
        (svc(&format!("{ports}  type: NodePort\n  healthCheckNodePort: 31000\n")), "spec.healthCheckNodePort", "not supported"),
        (svc(&format!("{ports}  type: LoadBalancer\n  loadBalancerSourceRanges: [10.0.0.0/8]\n")), "spec.loadBalancerSourceRanges", "not supported"),
        (svc(&format!("{ports}  type: LoadBalancer\n  loadBalancerClass: example.com/lb\n")), "spec.loadBalancerClass", "not supported"),
        (svc(&format!("{ports}  type: NodePort\n  clusterIP: None\n")), "spec.clusterIP", "headless"),
        (svc(&format!("{ports}  topologyKeys: [\"*\"]\n")), "spec.topologyKeys", "unknown field"),
        (svc("  selector: {}\n  ports: [{port: 80}]\n"), "spec.selector", "empty selector"),
        (svc("  selector: {\"bad key!\": x}\n  ports: [{port: 80}]\n"), "spec.selector.bad key!", "label key"),
        (svc("  selector: {app: web}\n"), "spec.ports", "at least one port"),
        (svc("  ports: [{port: 0}]\n"), "spec.ports[0].port", "not a port number"),
        (svc("  ports: [{port: 70000}]\n"), "spec.ports[0].port", "not a port number"),
        (svc("  ports: [{port: 80, protocol: ICMP}]\n"), "spec.ports[0].protocol", "TCP, UDP or SCTP"),
        (svc("  ports: [{port: 80, targetPort: \"8080\"}]\n"), "spec.ports[0].targetPort", "port name"),
        (svc("  ports: [{port: 80, targetPort: Http_Port}]\n"), "spec.ports[0].targetPort", "port name"),
        (svc("  ports: [{port: 80, targetPort: 65536}]\n"), "spec.ports[0].targetPort", "not a port number"),
        (svc("  ports: [{port: 80, targetPort: [1]}]\n"), "spec.ports[0].targetPort", "neither"),
        (svc("  ports: [{port: 80, nodePort: 30080}]\n"), "spec.ports[0].nodePort", "ClusterIP"),
        (svc("  type: NodePort\n  ports: [{port: 80, nodePort: 99999}]\n"), "spec.ports[0].nodePort", "not a port number"),
        (svc("  type: NodePort\n  ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]\n"), "spec.ports[1].nodePort", "twice"),
        (svc("  ports: [{name: a, port: 80}, {port: 81}]\n"), "spec.ports[1].name", "required"),
        (svc("  ports: [{name: a, port: 80}, {name: a, port: 81}]\n"), "spec.ports[1].name", "twice"),
        (svc("  ports: [{name: Web_1, port: 80}]\n"), "spec.ports[0].name", "DNS label"),
        (svc("  ports: [{name: a, port: 80}, {name: b, port: 80}]\n"), "spec.ports[1].port", "80/TCP is listed twice"),
        (svc("  ports: [{port: 80, colour: red}]\n"), "spec.ports[0].colour", "unknown field"),
    ];
    for (text, path, message) in &cases {
        let problems = refused(text);
        assert!(
            problems
                .iter()
                .any(|(p, m)| p == path && m.contains(message)),
            "want {path}: …{message}… in {problems:#?} for\n{text}"
        );
    }
    // externalTrafficPolicy on a ClusterIP Service with external IPs (Kubernetes 1.28).
    let s = service(&svc(&format!(
        "{ports}  externalIPs: [192.0.2.7]\n  externalTrafficPolicy: Local\n"
    )));
    assert_eq!(s.spec.external_traffic_policy, TrafficPolicy::Local);
    // Same port number, other protocol: fine (DNS on TCP and UDP).
    let s = service(&svc(
        "  ports: [{name: a, port: 53, protocol: UDP}, {name: b, port: 53}]\n",
    ));
    assert_eq!(s.spec.ports.len(), 2);
}

#[test]
fn service_metadata_refusals_name_their_path() {
    let cases = [
        ("metadata: {name: 1web}", "metadata.name", "Service name"),
        ("metadata: {name: web.x}", "metadata.name", "Service name"),
        (
            "metadata: {name: web, namespace: Shop}",
            "metadata.namespace",
            "valid name",
        ),
        (
            "metadata: {name: web, labels: {app: \"a b\"}}",
            "metadata.labels.app",
            "label value",
        ),
        (
            "metadata: {name: web, annotations: {seam.dev/adress-pool: p}}",
            "metadata.annotations.seam.dev/adress-pool",
            "unknown Seam annotation",
        ),
        (
            "metadata: {name: web, annotations: {seam.dev/address-pool: Bad_Pool}}",
            "metadata.annotations.seam.dev/address-pool",
            "valid name",
        ),
        (
            "metadata: {name: web, colour: red}",
            "metadata.colour",
            "unknown field",
        ),
    ];
    for (meta, path, message) in cases {
        let text = format!("apiVersion: v1\nkind: Service\n{meta}\nspec: {{selector: {{a: b}}, ports: [{{port: 80}}]}}\n");
        let problems = refused(&text);
        assert!(
            problems
                .iter()
                .any(|(p, m)| p == path && m.contains(message)),
            "want {path}: …{message}… in {problems:#?}"
        );
    }
    // Foreign annotations are dropped, not refused.
    let s = service("apiVersion: v1\nkind: Service\nmetadata: {name: web, annotations: {meta.helm.sh/release-name: shop}}\nspec: {selector: {a: b}, ports: [{port: 80}]}\n");
    assert!(s.annotations.is_empty());
}

fn slice(body: &str) -> String {
    format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\n{body}")
}

#[test]
fn every_endpoint_slice_refusal_names_its_path() {
    let ok_endpoint = "endpoints: [{addresses: [10.0.0.1]}]\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (slice(&format!("addressType: IPv6\n{ok_endpoint}")), "addressType", "not supported"),
        (slice(&format!("addressType: FQDN\n{ok_endpoint}")), "addressType", "not supported"),
        (slice(ok_endpoint), "", "addressType"),
        (
            format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1}}\naddressType: IPv4\n{ok_endpoint}"),
            "metadata.labels",
            "kubernetes.io/service-name",
        ),
        (
            format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, labels: {{kubernetes.io/service-name: 9web}}}}\naddressType: IPv4\n{ok_endpoint}"),
            "metadata.labels.kubernetes.io/service-name",
            "Service name",
        ),
        (slice("addressType: IPv4\nendpoints: [{addresses: []}]\n"), "endpoints[0].addresses", "at least one"),
        (slice("addressType: IPv4\nendpoints: [{addresses: [\"fd00::1\"]}]\n"), "endpoints[0].addresses[0]", "IPv6"),
        (slice("addressType: IPv4\nendpoints: [{addresses: [0.0.0.0]}]\n"), "endpoints[0].addresses[0]", "0.0.0.0/8"),
        (slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], nodeName: \"Node 1\"}]\n"), "endpoints[0].nodeName", "valid name"),
        (slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], hostname: a.b}]\n"), "endpoints[0].hostname", "DNS label"),
        (slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], zone: \"a b\"}]\n"), "endpoints[0].zone", "label value"),
        (slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], targetRef: pod}]\n"), "endpoints[0].targetRef", "object"),
        (slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {healthy: true}}]\n"), "endpoints[0].conditions.healthy", "unknown field"),
        (slice("addressType: IPv4\nports: [{name: http}]\n"), "ports[0].port", "required"),
        (slice("addressType: IPv4\nports: [{name: http, port: 0}]\n"), "ports[0].port", "not a port number"),
        (slice("addressType: IPv4\nports: [{name: http, port: 80}, {name: http, port: 81}]\n"), "ports[1].name", "twice"),
        (slice("addressType: IPv4\nports: [{port: 80}, {port: 81}]\n"), "ports[1].name", "twice"),
        (slice("addressType: IPv4\nports: [{name: HTTP, port: 80}]\n"), "ports[0].name", "DNS label"),
        (slice("addressType: IPv4\nports: [{name: http, port: 80, protocol: ICMP}]\n"), "ports[0].protocol", "TCP, UDP or SCTP"),
        (slice("addressType: IPv4\nmetadata2: {}\n"), "metadata2", "unknown field"),
    ];
    for (text, path, message) in &cases {
        let problems = refused(text);
        assert!(
            problems
                .iter()
                .any(|(p, m)| p == path && m.contains(message)),
            "want {path:?}: …{message}… in {problems:#?} for\n{text}"
        );
    }
    // An empty slice (`endpoints: null`, as kubectl prints one) is fine.
    let Manifest::EndpointSlice(s) =
        one(&slice("addressType: IPv4\nendpoints: null\nports: null\n"))
    else {
        panic!("not a slice")
    };
    assert!(s.endpoints.is_empty() && s.ports.is_empty());
}

#[test]
fn address_pools() {
    let text = "apiVersion: seam.dev/v1alpha1\nkind: AddressPool\nmetadata: {name: public, annotations: {note: x}}\nspec:\n  addresses: [198.51.100.0/28, 203.0.113.7]\n  autoAssign: false\n";
    assert_eq!(
        one(text),
        Manifest::AddressPool(AddressPool {
            name: "public".into(),
            addresses: vec![
                "198.51.100.0/28".parse().unwrap_or_else(|e| panic!("{e}")),
                "203.0.113.7/32".parse().unwrap_or_else(|e| panic!("{e}")),
            ],
            auto_assign: false,
        })
    );
    assert_eq!(one(text).describe(), "AddressPool public");
    let pool = |spec: &str| {
        format!("apiVersion: seam.dev/v1alpha1\nkind: AddressPool\nmetadata: {{name: p}}\nspec: {spec}\n")
    };
    let cases = [
        (pool("{addresses: []}"), "spec.addresses", "at least one"),
        (pool("{addresses: [198.51.100.0/24, 198.51.100.128/25]}"), "spec.addresses[1]", "overlaps addresses[0]"),
        (pool("{addresses: [198.51.100.1/24]}"), "spec.addresses[0]", "host bits"),
        (pool("{addresses: [198.51.100.1-198.51.100.9]}"), "spec.addresses[0]", "ranges"),
        (pool("{addresses: [\"fd00::/64\"]}"), "spec.addresses[0]", "IPv6"),
        (pool("{addresses: [0.0.0.0/0]}"), "spec.addresses[0]", "0.0.0.0/8"),
        (pool("{addresses: [10.0.0.0/33]}"), "spec.addresses[0]", "not an IPv4 prefix"),
        (pool("{addresses: [10.0.0.0/24], autoassign: true}"), "spec.autoassign", "unknown field"),
        (
            "apiVersion: seam.dev/v1alpha1\nkind: AddressPool\nmetadata: {name: p, namespace: x}\nspec: {addresses: [10.0.0.0/24]}\n".to_string(),
            "metadata.namespace",
            "cluster-scoped",
        ),
        (
            "apiVersion: seam.dev/v1alpha1\nkind: AddressPool\nmetadata: {name: P}\nspec: {addresses: [10.0.0.0/24]}\n".to_string(),
            "metadata.name",
            "valid name",
        ),
    ];
    for (text, path, message) in &cases {
        let problems = refused(text);
        assert!(
            problems
                .iter()
                .any(|(p, m)| p == path && m.contains(message)),
            "want {path:?}: …{message}… in {problems:#?} for\n{text}"
        );
    }
}

#[test]
fn objects_written_as_kubernetes_writes_them_read_back_the_same() {
    let text = [
        KUBECTL_CLUSTER_IP,
        KUBECTL_LOAD_BALANCER,
        KUBERNETES_SERVICE,
        CONTROLLER_SLICE,
        "apiVersion: seam.dev/v1alpha1\nkind: AddressPool\nmetadata: {name: public}\nspec: {addresses: [198.51.100.0/28], autoAssign: false}\n",
    ]
    .join("---\n");
    let objects = parse_manifests(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(objects.len(), 6);
    let mut values = Vec::new();
    for object in &objects {
        let value = match object {
            Manifest::Service(s) => s.to_kubernetes(),
            Manifest::EndpointSlice(s) => s.to_kubernetes(),
            Manifest::AddressPool(p) => p.to_kubernetes(),
            other => panic!("{other:?}"),
        };
        let back = parse_value(value.clone()).unwrap_or_else(|e| panic!("{e}\n{value:#}"));
        assert_eq!(&back, object, "{value:#}");
        values.push(value);
    }
    // Through YAML text too, as `seam get services -o yaml` would print them.
    let yaml = serde_saphyr::to_string_multiple(&values).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        parse_manifests(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")),
        objects
    );

    // The controller's status is written out, and dropped again on the way in.
    let Manifest::Service(mut s) = objects[1].clone() else {
        panic!("not a Service")
    };
    s.status.load_balancer.ingress.push(LoadBalancerIngress {
        ip: Ipv4Addr::new(198, 51, 100, 10),
        ip_mode: Some("VIP".into()),
    });
    s.status.conditions.push(Condition {
        condition_type: "AddressAllocated".into(),
        status: "True".into(),
        reason: "Allocated".into(),
        message: "198.51.100.10 from pool public".into(),
        last_transition_time: None,
    });
    let value = s.to_kubernetes();
    assert_eq!(
        value.pointer("/status/loadBalancer/ingress/0/ip"),
        Some(&serde_json::json!("198.51.100.10"))
    );
    assert_eq!(
        value.pointer("/status/conditions/0/type"),
        Some(&serde_json::json!("AddressAllocated"))
    );
    assert_eq!(
        value.pointer("/spec/clusterIP"),
        Some(&serde_json::json!("10.96.200.3"))
    );
    let Ok(Manifest::Service(back)) = parse_value(value) else {
        panic!("refused")
    };
    assert!(back.status.is_empty());
    assert_eq!(back.spec, s.spec);
}
