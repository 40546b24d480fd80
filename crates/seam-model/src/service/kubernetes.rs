//! The Service objects written back as Kubernetes writes them (`kubectl get -o yaml`'s shape):
//! what `seam get services -o yaml` can print and `seam apply -f` reads again
//! ([`crate::manifest::parse_value`] of the value gives the object back, its status aside: a
//! Service's status is the controller's to write).

use serde_json::{json, Map, Value};

use super::{
    AddressPool, ClusterIp, EndpointSlice, Service, ServiceType, SessionAffinity, TargetPort,
    TrafficPolicy, ENDPOINT_SLICE_API_VERSION, SERVICE_API_VERSION, SERVICE_NAME_LABEL,
};

fn policy(p: TrafficPolicy) -> &'static str {
    match p {
        TrafficPolicy::Cluster => "Cluster",
        TrafficPolicy::Local => "Local",
    }
}

/// `metadata` with the maps left out when empty.
fn metadata(
    name: &str,
    namespace: Option<&str>,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    if let Some(ns) = namespace {
        m.insert("namespace".into(), json!(ns));
    }
    if !labels.is_empty() {
        m.insert("labels".into(), json!(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), json!(annotations));
    }
    Value::Object(m)
}

impl Service {
    /// The Service as a `v1 Service` document, status included (`loadBalancer.ingress`,
    /// `conditions`), with Kubernetes' spelling of every field.
    pub fn to_kubernetes(&self) -> Value {
        let spec = &self.spec;
        let mut s = Map::new();
        let kind = match spec.service_type {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        };
        s.insert("type".into(), json!(kind));
        if let Some(selector) = &spec.selector {
            s.insert("selector".into(), json!(selector));
        }
        let ports: Vec<Value> = spec
            .ports
            .iter()
            .map(|p| {
                let mut m = Map::new();
                if let Some(n) = &p.name {
                    m.insert("name".into(), json!(n));
                }
                m.insert("protocol".into(), json!(p.protocol.as_str()));
                m.insert("port".into(), json!(p.port));
                match &p.target_port {
                    Some(TargetPort::Number(n)) => {
                        m.insert("targetPort".into(), json!(n));
                    }
                    Some(TargetPort::Name(n)) => {
                        m.insert("targetPort".into(), json!(n));
                    }
                    None => {}
                }
                if let Some(n) = p.node_port {
                    m.insert("nodePort".into(), json!(n));
                }
                if let Some(a) = &p.app_protocol {
                    m.insert("appProtocol".into(), json!(a));
                }
                Value::Object(m)
            })
            .collect();
        s.insert("ports".into(), Value::Array(ports));
        let cluster_ip = match spec.cluster_ip {
            ClusterIp::Auto => None,
            ClusterIp::Headless => Some("None".to_string()),
            ClusterIp::Address(ip) => Some(ip.to_string()),
        };
        if let Some(ip) = cluster_ip {
            s.insert("clusterIP".into(), json!(ip));
            s.insert("clusterIPs".into(), json!([ip]));
        }
        s.insert("ipFamilies".into(), json!(["IPv4"]));
        s.insert("ipFamilyPolicy".into(), json!("SingleStack"));
        if !spec.external_ips.is_empty() {
            s.insert("externalIPs".into(), json!(spec.external_ips));
        }
        match spec.session_affinity {
            SessionAffinity::None => {
                s.insert("sessionAffinity".into(), json!("None"));
            }
            SessionAffinity::ClientIp { timeout_seconds } => {
                s.insert("sessionAffinity".into(), json!("ClientIP"));
                s.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": timeout_seconds}}),
                );
            }
        }
        // Kubernetes keeps the field off a Service not reachable from outside.
        if spec.service_type != ServiceType::ClusterIP || !spec.external_ips.is_empty() {
            s.insert(
                "externalTrafficPolicy".into(),
                json!(policy(spec.external_traffic_policy)),
            );
        }
        s.insert(
            "internalTrafficPolicy".into(),
            json!(policy(spec.internal_traffic_policy)),
        );
        if spec.publish_not_ready_addresses {
            s.insert("publishNotReadyAddresses".into(), json!(true));
        }
        if let Some(ip) = spec.load_balancer_ip {
            s.insert("loadBalancerIP".into(), json!(ip));
        }
        if let Some(a) = spec.allocate_load_balancer_node_ports {
            s.insert("allocateLoadBalancerNodePorts".into(), json!(a));
        }
        // `status` is already in Kubernetes' shape; `loadBalancer: {}` as kubectl prints it.
        let mut status = serde_json::to_value(&self.status).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut status {
            m.entry("loadBalancer").or_insert_with(|| json!({}));
        }
        json!({
            "apiVersion": SERVICE_API_VERSION,
            "kind": "Service",
            "metadata": metadata(&self.name, Some(&self.namespace), &self.labels, &self.annotations),
            "spec": Value::Object(s),
            "status": status,
        })
    }
}

impl EndpointSlice {
    /// The slice as a `discovery.k8s.io/v1 EndpointSlice` document (`addressType: IPv4`, the
    /// [`SERVICE_NAME_LABEL`] naming its Service).
    pub fn to_kubernetes(&self) -> Value {
        let mut labels = self.labels.clone();
        labels.insert(SERVICE_NAME_LABEL.into(), self.service.clone());
        // Serde's shape of the endpoints and ports is Kubernetes' (camelCase, same fields).
        let endpoints = serde_json::to_value(&self.endpoints).unwrap_or_else(|_| json!([]));
        let ports = serde_json::to_value(&self.ports).unwrap_or_else(|_| json!([]));
        json!({
            "apiVersion": ENDPOINT_SLICE_API_VERSION,
            "kind": "EndpointSlice",
            "metadata": metadata(&self.name, Some(&self.namespace), &labels, &Default::default()),
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        })
    }
}

impl AddressPool {
    /// The pool as a `seam.dev/v1alpha1 AddressPool` document.
    pub fn to_kubernetes(&self) -> Value {
        let addresses: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
        json!({
            "apiVersion": crate::API_VERSION,
            "kind": "AddressPool",
            "metadata": {"name": self.name},
            "spec": {"addresses": addresses, "autoAssign": self.auto_assign},
        })
    }
}
