//! The Service objects of a manifest, as Kubernetes and its users write them: `v1 Service`,
//! `discovery.k8s.io/v1 EndpointSlice` and `seam.dev/v1alpha1 AddressPool`.
//!
//! - Unknown fields are refused with their path.
//! - What the API server or other controllers set on an object read back from Kubernetes
//!   (`kubectl get -o yaml`, the Kubernetes adapter's objects) is accepted and dropped: the
//!   server-set metadata (`uid`, `resourceVersion`, `creationTimestamp`, `generation`,
//!   `managedFields`, `ownerReferences`, `finalizers`, …), `status` (a Service's status is Seam's controller's to
//!   write: its LoadBalancer address and conditions), annotations other than Seam's own, an
//!   EndpointSlice endpoint's `hints` and `deprecatedTopology`, a Service's
//!   `trafficDistribution` (preferences an implementation may ignore, Kubernetes says).
//! - What Seam does not implement is refused, never ignored: `type: ExternalName`, IPv6 and
//!   dual-stack (`ipFamilies`, `ipFamilyPolicy: RequireDualStack`, a second `clusterIPs`; a
//!   headless Service's families are accepted: it has no address to translate),
//!   `loadBalancerSourceRanges`, `loadBalancerClass`, `healthCheckNodePort` (accepted and dropped
//!   only where the API server allocates it itself: a LoadBalancer Service with
//!   `externalTrafficPolicy: Local`; Seam's gateways serve the address, nothing probes that port),
//!   `sessionAffinity` other than `None` and `ClientIP`, EndpointSlices of `addressType` other
//!   than `IPv4`.
//! - Defaults are Kubernetes': namespace `default`, type `ClusterIP`, protocol `TCP`,
//!   `targetPort` = `port` (also when 0 or empty), `nodePort: 0` = allocate, ClientIP affinity
//!   timeout 10800 s.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use super::{decode_with_path, problem, Manifest, ManifestProblem};
use crate::error::ValidationError;
use crate::objects::PortProtocol;
use crate::service::{
    AddressPool, ClusterIp, EndpointConditions, EndpointSlice, Service, ServicePort, ServiceSpec,
    ServiceStatus, ServiceType, SessionAffinity, SliceEndpoint, SlicePort, TargetPort,
    TrafficPolicy, ADDRESS_POOL_ANNOTATION, DEFAULT_AFFINITY_TIMEOUT_SECONDS, SERVICE_NAME_LABEL,
};

/// The namespace of a namespaced object that names none (kubectl's default).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The prefix of Seam's own annotations: one Seam does not know is refused (a typo must not be
/// dropped silently like a foreign annotation).
const SEAM_ANNOTATION_PREFIX: &str = "seam.dev/";

/// The problems of one document.
struct Found {
    document: usize,
    object: Option<String>,
    problems: Vec<ManifestProblem>,
}

impl Found {
    fn add(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(problem(
            self.document,
            self.object.clone(),
            path,
            message.into(),
        ));
    }

    /// Adds a model validation's problems under their manifest paths (`path` maps them), except
    /// at a path already reported while decoding (one message per field).
    fn add_invalid(&mut self, e: ValidationError, path: impl Fn(&str) -> String) {
        for f in e.errors {
            let at = path(&f.path);
            if !self.problems.iter().any(|p| p.path == at) {
                self.add(&at, f.message);
            }
        }
    }

    fn finish(self, object: Manifest) -> Result<Manifest, Vec<ManifestProblem>> {
        if self.problems.is_empty() {
            Ok(object)
        } else {
            Err(self.problems)
        }
    }
}

/// `metadata`, with what the API server and controllers set (Kubernetes `ObjectMeta`) accepted
/// so that an object read back from Kubernetes applies, and dropped (Seam's store keeps its own).
// The server-set fields are decoded only to be accepted: never read.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    // Server-set: dropped. (`flatten` cannot be used here: serde does not combine it with
    // `deny_unknown_fields`.)
    #[serde(default)]
    uid: Option<IgnoredAny>,
    #[serde(default)]
    resource_version: Option<IgnoredAny>,
    #[serde(default)]
    creation_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    generation: Option<IgnoredAny>,
    #[serde(default)]
    managed_fields: Option<IgnoredAny>,
    #[serde(default)]
    owner_references: Option<IgnoredAny>,
    #[serde(default)]
    finalizers: Option<IgnoredAny>,
    #[serde(default)]
    generate_name: Option<IgnoredAny>,
    #[serde(default)]
    self_link: Option<IgnoredAny>,
    #[serde(default)]
    deletion_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    deletion_grace_period_seconds: Option<IgnoredAny>,
}

impl Meta {
    /// The annotations Seam keeps (`keep`), refusing an unknown Seam annotation and dropping the
    /// others (kubectl's `last-applied-configuration`, Helm's, other controllers').
    fn annotations(&self, found: &mut Found, keep: &[&str]) -> BTreeMap<String, String> {
        let mut kept = BTreeMap::new();
        for (k, v) in &self.annotations {
            if keep.contains(&k.as_str()) {
                kept.insert(k.clone(), v.clone());
            } else if k.starts_with(SEAM_ANNOTATION_PREFIX) {
                let known = if keep.is_empty() {
                    "none".to_string()
                } else {
                    keep.join(", ")
                };
                found.add(
                    &format!("metadata.annotations.{k}"),
                    format!("unknown Seam annotation (known here: {known})"),
                );
            }
        }
        kept
    }

    fn namespace(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    }
}

/// A `v1 Service` document (without `apiVersion` and `kind`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceDoc {
    metadata: Meta,
    #[serde(default)]
    spec: ServiceSpecDoc,
    /// The controller writes a Service's status; what Kubernetes reports is dropped.
    #[serde(default)]
    status: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceSpecDoc {
    #[serde(rename = "type", default)]
    service_type: Option<String>,
    #[serde(default)]
    selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    ports: Option<Vec<ServicePortDoc>>,
    #[serde(rename = "clusterIP", default)]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs", default)]
    cluster_ips: Option<Vec<String>>,
    #[serde(default)]
    ip_families: Option<Vec<String>>,
    #[serde(default)]
    ip_family_policy: Option<String>,
    #[serde(rename = "externalIPs", default)]
    external_ips: Option<Vec<String>>,
    #[serde(default)]
    session_affinity: Option<String>,
    #[serde(default)]
    session_affinity_config: Option<AffinityConfigDoc>,
    #[serde(default)]
    external_traffic_policy: Option<String>,
    #[serde(default)]
    internal_traffic_policy: Option<String>,
    #[serde(default)]
    publish_not_ready_addresses: Option<bool>,
    #[serde(rename = "loadBalancerIP", default)]
    load_balancer_ip: Option<String>,
    #[serde(default)]
    allocate_load_balancer_node_ports: Option<bool>,
    #[serde(default)]
    health_check_node_port: Option<IgnoredAny>,
    #[serde(default)]
    load_balancer_source_ranges: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    load_balancer_class: Option<IgnoredAny>,
    #[serde(default)]
    external_name: Option<IgnoredAny>,
    /// A routing preference (`PreferClose`) Kubernetes lets implementations ignore: dropped.
    #[serde(default)]
    traffic_distribution: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServicePortDoc {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    port: i64,
    #[serde(default)]
    target_port: Option<Value>,
    #[serde(default)]
    node_port: Option<i64>,
    #[serde(default)]
    app_protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AffinityConfigDoc {
    #[serde(rename = "clientIP", default)]
    client_ip: Option<ClientIpConfigDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientIpConfigDoc {
    #[serde(default)]
    timeout_seconds: Option<i64>,
}

/// A port number of a manifest: 1..=65535, else a problem at `path` (and 0, which validation
/// would report again at the same path; [`Found::add_invalid`] keeps one message).
fn port_number(found: &mut Found, path: &str, n: i64) -> u16 {
    match u16::try_from(n) {
        Ok(p) if p != 0 => p,
        _ => {
            found.add(path, format!("{n} is not a port number (1..=65535)"));
            0
        }
    }
}

fn protocol(found: &mut Found, path: &str, text: Option<&str>) -> PortProtocol {
    match text {
        None => PortProtocol::Tcp,
        Some(t) => PortProtocol::parse(t).unwrap_or_else(|| {
            found.add(
                path,
                format!("unsupported protocol {t:?} (TCP, UDP or SCTP)"),
            );
            PortProtocol::Tcp
        }),
    }
}

/// An IPv4 address of a manifest; IPv6 is refused as unsupported, anything else as invalid.
fn ipv4(found: &mut Found, path: &str, text: &str) -> Option<Ipv4Addr> {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Some(ip),
        Ok(IpAddr::V6(_)) => {
            found.add(
                path,
                format!("{text} is IPv6: not supported (Seam's Services are IPv4 only)"),
            );
            None
        }
        Err(_) => {
            found.add(path, format!("{text:?} is not an IPv4 address"));
            None
        }
    }
}

fn traffic_policy(found: &mut Found, path: &str, text: Option<&str>) -> TrafficPolicy {
    match text {
        None | Some("Cluster") => TrafficPolicy::Cluster,
        Some("Local") => TrafficPolicy::Local,
        Some(other) => {
            found.add(path, format!("{other:?} is not Cluster or Local"));
            TrafficPolicy::Cluster
        }
    }
}

/// `clusterIP` text: empty = allocate, `None` = headless.
fn cluster_ip(found: &mut Found, path: &str, text: &str) -> ClusterIp {
    match text {
        "" => ClusterIp::Auto,
        "None" => ClusterIp::Headless,
        t => ipv4(found, path, t).map_or(ClusterIp::Auto, ClusterIp::Address),
    }
}

pub(super) fn decode_service(
    document: usize,
    object: Option<String>,
    doc: Value,
) -> Result<Manifest, Vec<ManifestProblem>> {
    let parsed: ServiceDoc = decode_with_path(doc)
        .map_err(|(path, message)| vec![problem(document, object.clone(), &path, message)])?;
    let _ = parsed.status;
    let mut found = Found {
        document,
        object,
        problems: Vec::new(),
    };
    let meta = &parsed.metadata;
    let annotations = meta.annotations(&mut found, &[ADDRESS_POOL_ANNOTATION]);
    let spec = service_spec(&mut found, parsed.spec);
    let service = Service {
        name: meta.name.clone(),
        namespace: meta.namespace(),
        labels: meta.labels.clone(),
        annotations,
        spec,
        status: ServiceStatus::default(),
    };
    if let Err(e) = service.validate() {
        found.add_invalid(e, |p| match p {
            "." => String::new(),
            "name" | "namespace" => format!("metadata.{p}"),
            p if p.starts_with("labels.") || p.starts_with("annotations.") => {
                format!("metadata.{p}")
            }
            p => p.to_string(),
        });
    }
    found.finish(Manifest::Service(service))
}

fn service_spec(found: &mut Found, mut doc: ServiceSpecDoc) -> ServiceSpec {
    // Kubernetes reads an empty string in these fields as the field left out (its default).
    for field in [
        &mut doc.service_type,
        &mut doc.session_affinity,
        &mut doc.external_traffic_policy,
        &mut doc.internal_traffic_policy,
        &mut doc.ip_family_policy,
    ] {
        if field.as_deref() == Some("") {
            *field = None;
        }
    }
    let service_type = match doc.service_type.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIP,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => {
            found.add(
                "spec.type",
                "ExternalName Services are not supported (a DNS alias: nothing to balance)",
            );
            ServiceType::ClusterIP
        }
        Some(other) => {
            found.add(
                "spec.type",
                format!("{other:?} is not ClusterIP, NodePort or LoadBalancer"),
            );
            ServiceType::ClusterIP
        }
    };
    if doc.external_name.is_some() && doc.service_type.as_deref() != Some("ExternalName") {
        found.add(
            "spec.externalName",
            "only for type ExternalName, which Seam does not support",
        );
    }

    let ports = doc
        .ports
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, p)| service_port(found, i, p))
        .collect();

    let mut cluster = doc
        .cluster_ip
        .as_deref()
        .map(|t| cluster_ip(found, "spec.clusterIP", t));
    if let Some(ips) = &doc.cluster_ips {
        if ips.len() > 1 {
            found.add(
                "spec.clusterIPs",
                "dual-stack is not supported (Seam's Services are IPv4 only): give one address",
            );
        } else if let Some(first) = ips.first() {
            let from_list = cluster_ip(found, "spec.clusterIPs[0]", first);
            match cluster {
                Some(c) if c != from_list => found.add(
                    "spec.clusterIPs[0]",
                    format!(
                        "{first:?} differs from spec.clusterIP ({:?})",
                        doc.cluster_ip.as_deref().unwrap_or("")
                    ),
                ),
                Some(_) => {}
                None => cluster = Some(from_list),
            }
        }
    }
    // A headless Service has no address to translate: its families say which addresses DNS
    // gives, not Seam's business. Kubernetes defaults a headless Service without selector to
    // RequireDualStack even on a single-stack cluster, so the adapter forwards such Services.
    let headless = cluster == Some(ClusterIp::Headless);
    if let Some(families) = doc.ip_families.as_ref().filter(|_| !headless) {
        if families.len() > 1 {
            found.add(
                "spec.ipFamilies",
                "dual-stack is not supported (Seam's Services are IPv4 only)",
            );
        }
        for (i, f) in families.iter().enumerate() {
            match f.as_str() {
                "IPv4" => {}
                "IPv6" => found.add(
                    &format!("spec.ipFamilies[{i}]"),
                    "IPv6 is not supported (Seam's Services are IPv4 only)",
                ),
                other => found.add(
                    &format!("spec.ipFamilies[{i}]"),
                    format!("{other:?} is not IPv4 or IPv6"),
                ),
            }
        }
    }
    match doc.ip_family_policy.as_deref() {
        // PreferDualStack is single-stack where only one family exists, as Kubernetes resolves it.
        None | Some("SingleStack") | Some("PreferDualStack") => {}
        Some("RequireDualStack") if headless => {}
        Some("RequireDualStack") => found.add(
            "spec.ipFamilyPolicy",
            "RequireDualStack is not supported (Seam's Services are IPv4 only)",
        ),
        Some(other) => found.add(
            "spec.ipFamilyPolicy",
            format!("{other:?} is not SingleStack, PreferDualStack or RequireDualStack"),
        ),
    }

    let external_ips = doc
        .external_ips
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, t)| ipv4(found, &format!("spec.externalIPs[{i}]"), t))
        .collect();

    let session_affinity = match doc.session_affinity.as_deref() {
        None | Some("None") => {
            if doc.session_affinity_config.is_some() {
                found.add(
                    "spec.sessionAffinityConfig",
                    "must not be set when sessionAffinity is None",
                );
            }
            SessionAffinity::None
        }
        Some("ClientIP") => {
            let timeout = doc
                .session_affinity_config
                .and_then(|c| c.client_ip)
                .and_then(|c| c.timeout_seconds);
            let timeout_seconds = match timeout {
                None => DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                Some(t) => u32::try_from(t).unwrap_or_else(|_| {
                    found.add(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!(
                            "{t} is not in 1..={}",
                            crate::service::MAX_AFFINITY_TIMEOUT_SECONDS
                        ),
                    );
                    0
                }),
            };
            SessionAffinity::ClientIp { timeout_seconds }
        }
        Some(other) => {
            found.add(
                "spec.sessionAffinity",
                format!("{other:?} is not supported (None or ClientIP)"),
            );
            SessionAffinity::None
        }
    };

    // Kubernetes refuses the field, whatever its value, on a Service not reachable from outside.
    if doc.external_traffic_policy.is_some()
        && service_type == ServiceType::ClusterIP
        && doc.external_ips.as_ref().is_none_or(Vec::is_empty)
    {
        found.add(
            "spec.externalTrafficPolicy",
            "may only be set for NodePort and LoadBalancer Services or Services with externalIPs",
        );
    }
    let external_traffic_policy = traffic_policy(
        found,
        "spec.externalTrafficPolicy",
        doc.external_traffic_policy.as_deref(),
    );
    let internal_traffic_policy = traffic_policy(
        found,
        "spec.internalTrafficPolicy",
        doc.internal_traffic_policy.as_deref(),
    );

    let load_balancer_ip = match doc.load_balancer_ip.as_deref() {
        None | Some("") => None,
        Some(t) => ipv4(found, "spec.loadBalancerIP", t),
    };

    if doc.health_check_node_port.is_some()
        && !(service_type == ServiceType::LoadBalancer
            && external_traffic_policy == TrafficPolicy::Local)
    {
        found.add(
            "spec.healthCheckNodePort",
            "not supported (Seam serves LoadBalancer addresses at its gateways: no external load balancer probes the nodes)",
        );
    }
    if doc
        .load_balancer_source_ranges
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        found.add(
            "spec.loadBalancerSourceRanges",
            "not supported (restrict the clients with a NetworkPolicy on the backends)",
        );
    }
    if doc.load_balancer_class.is_some() {
        found.add(
            "spec.loadBalancerClass",
            "not supported (Seam serves every LoadBalancer Service itself)",
        );
    }
    let _ = doc.traffic_distribution;

    ServiceSpec {
        service_type,
        selector: doc.selector,
        ports,
        cluster_ip: cluster.unwrap_or_default(),
        external_ips,
        session_affinity,
        external_traffic_policy,
        internal_traffic_policy,
        publish_not_ready_addresses: doc.publish_not_ready_addresses.unwrap_or(false),
        load_balancer_ip,
        allocate_load_balancer_node_ports: doc.allocate_load_balancer_node_ports,
    }
}

fn service_port(found: &mut Found, i: usize, doc: ServicePortDoc) -> ServicePort {
    let at = |field: &str| format!("spec.ports[{i}].{field}");
    let port = port_number(found, &at("port"), doc.port);
    let target_port = match doc.target_port {
        None | Some(Value::Null) => None,
        // Kubernetes: 0 and "" mean the Service port.
        Some(Value::Number(n)) if n.as_i64() == Some(0) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => Some(TargetPort::Number(port_number(found, &at("targetPort"), v))),
            None => {
                found.add(&at("targetPort"), format!("{n} is not a port number"));
                None
            }
        },
        Some(Value::String(s)) => Some(TargetPort::Name(s)),
        Some(other) => {
            found.add(
                &at("targetPort"),
                format!("{other} is neither a port number nor a port name"),
            );
            None
        }
    };
    let node_port = match doc.node_port {
        // Kubernetes: 0 asks for an allocated port.
        None | Some(0) => None,
        Some(n) => Some(port_number(found, &at("nodePort"), n)),
    };
    ServicePort {
        name: doc.name.filter(|n| !n.is_empty()),
        protocol: protocol(
            found,
            &at("protocol"),
            doc.protocol.as_deref().filter(|p| !p.is_empty()),
        ),
        port,
        target_port,
        node_port,
        app_protocol: doc.app_protocol,
    }
}

/// A `discovery.k8s.io/v1 EndpointSlice` document (without `apiVersion` and `kind`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SliceDoc {
    metadata: Meta,
    address_type: String,
    #[serde(default)]
    endpoints: Option<Vec<SliceEndpointDoc>>,
    #[serde(default)]
    ports: Option<Vec<SlicePortDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SliceEndpointDoc {
    addresses: Vec<String>,
    #[serde(default)]
    conditions: Option<EndpointConditions>,
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    target_ref: Option<Value>,
    /// Topology hints (Kubernetes lets implementations ignore them): dropped.
    #[serde(default)]
    hints: Option<IgnoredAny>,
    /// `v1beta1`'s topology, still served by `v1`: dropped.
    #[serde(default)]
    deprecated_topology: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SlicePortDoc {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    app_protocol: Option<String>,
}

pub(super) fn decode_endpoint_slice(
    document: usize,
    object: Option<String>,
    doc: Value,
) -> Result<Manifest, Vec<ManifestProblem>> {
    let parsed: SliceDoc = decode_with_path(doc)
        .map_err(|(path, message)| vec![problem(document, object.clone(), &path, message)])?;
    let mut found = Found {
        document,
        object,
        problems: Vec::new(),
    };
    let meta = &parsed.metadata;
    let _ = meta.annotations(&mut found, &[]);
    match parsed.address_type.as_str() {
        "IPv4" => {}
        "IPv6" => found.add(
            "addressType",
            "IPv6 is not supported (Seam's Services are IPv4 only)",
        ),
        "FQDN" => found.add(
            "addressType",
            "FQDN is not supported (a backend must be an IPv4 address)",
        ),
        other => found.add(
            "addressType",
            format!("{other:?} is not IPv4, IPv6 or FQDN"),
        ),
    }
    let service = match meta.labels.get(SERVICE_NAME_LABEL) {
        Some(s) => s.clone(),
        None => {
            found.add(
                "metadata.labels",
                format!("the label {SERVICE_NAME_LABEL} is required (it names the Service whose backends these are)"),
            );
            String::new()
        }
    };
    let endpoints = parsed
        .endpoints
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let addresses = e
                .addresses
                .iter()
                .enumerate()
                .filter_map(|(j, a)| ipv4(&mut found, &format!("endpoints[{i}].addresses[{j}]"), a))
                .collect();
            if let Some(r) = &e.target_ref {
                if !r.is_object() {
                    found.add(
                        &format!("endpoints[{i}].targetRef"),
                        "must be an object reference",
                    );
                }
            }
            let _ = (e.hints, e.deprecated_topology);
            SliceEndpoint {
                addresses,
                conditions: e.conditions.unwrap_or_default(),
                node_name: e.node_name,
                hostname: e.hostname,
                zone: e.zone,
                target_ref: e.target_ref,
            }
        })
        .collect::<Vec<_>>();
    let ports = parsed
        .ports
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let at = |field: &str| format!("ports[{i}].{field}");
            let port = match p.port {
                Some(n) => port_number(&mut found, &at("port"), n),
                None => {
                    found.add(
                        &at("port"),
                        "required (a slice port without a number serves no Service port)",
                    );
                    0
                }
            };
            SlicePort {
                name: p.name.filter(|n| !n.is_empty()),
                port,
                protocol: protocol(
                    &mut found,
                    &at("protocol"),
                    p.protocol.as_deref().filter(|p| !p.is_empty()),
                ),
                app_protocol: p.app_protocol,
            }
        })
        .collect();
    let slice = EndpointSlice {
        name: meta.name.clone(),
        namespace: meta.namespace(),
        service,
        labels: meta.labels.clone(),
        endpoints,
        ports,
    };
    if let Err(e) = slice.validate() {
        let service_label = format!("metadata.labels.{SERVICE_NAME_LABEL}");
        found.add_invalid(e, |p| match p {
            "." => String::new(),
            "name" | "namespace" => format!("metadata.{p}"),
            "service" => service_label.clone(),
            p if p.starts_with("labels.") => format!("metadata.{p}"),
            p => p.to_string(),
        });
    }
    // A missing label was reported at `metadata.labels`; the empty name it left is not news.
    if !meta.labels.contains_key(SERVICE_NAME_LABEL) {
        let service_label = format!("metadata.labels.{SERVICE_NAME_LABEL}");
        found.problems.retain(|p| p.path != service_label);
    }
    found.finish(Manifest::EndpointSlice(slice))
}

/// A `seam.dev/v1alpha1 AddressPool` document (without `apiVersion` and `kind`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolDoc {
    /// Its name; labels and annotations are accepted and dropped (a pool keeps none).
    metadata: Meta,
    spec: PoolSpecDoc,
    #[serde(default)]
    status: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PoolSpecDoc {
    addresses: Vec<String>,
    #[serde(default)]
    auto_assign: Option<bool>,
}

pub(super) fn decode_address_pool(
    document: usize,
    object: Option<String>,
    doc: Value,
) -> Result<Manifest, Vec<ManifestProblem>> {
    let parsed: PoolDoc = decode_with_path(doc)
        .map_err(|(path, message)| vec![problem(document, object.clone(), &path, message)])?;
    let mut found = Found {
        document,
        object,
        problems: Vec::new(),
    };
    let _ = parsed.status;
    let _ = parsed.metadata.annotations(&mut found, &[]);
    if parsed.metadata.namespace.is_some() {
        found.add(
            "metadata.namespace",
            "an AddressPool is cluster-scoped: leave the namespace out",
        );
    }
    let addresses = parsed
        .spec
        .addresses
        .iter()
        .enumerate()
        .filter_map(|(i, t)| pool_prefix(&mut found, &format!("spec.addresses[{i}]"), t))
        .collect();
    let pool = AddressPool {
        name: parsed.metadata.name,
        addresses,
        auto_assign: parsed.spec.auto_assign.unwrap_or(true),
    };
    if let Err(e) = pool.validate() {
        found.add_invalid(e, |p| match p {
            "." => String::new(),
            "name" => "metadata.name".to_string(),
            p => format!("spec.{p}"),
        });
    }
    found.finish(Manifest::AddressPool(pool))
}

/// A pool entry: a prefix, or one address (a /32). Ranges (`a-b`, MetalLB's other form) are
/// refused: prefixes say the same.
fn pool_prefix(found: &mut Found, path: &str, text: &str) -> Option<Ipv4Net> {
    if text.contains('-') {
        found.add(
            path,
            format!("{text:?}: address ranges are not supported, give prefixes (a.b.c.d/len)"),
        );
        return None;
    }
    if let Some((addr, _)) = text.split_once('/') {
        if addr.contains(':') {
            found.add(
                path,
                format!("{text} is IPv6: not supported (Seam's Services are IPv4 only)"),
            );
            return None;
        }
        return match text.parse::<Ipv4Net>() {
            Ok(n) => Some(n),
            Err(_) => {
                found.add(
                    path,
                    format!("{text:?} is not an IPv4 prefix (a.b.c.d/len)"),
                );
                None
            }
        };
    }
    ipv4(found, path, text).map(Ipv4Net::from)
}

#[cfg(test)]
mod tests;
