//! Pure translation of Kubernetes `v1 Service` and `discovery.k8s.io/v1 EndpointSlice` objects
//! into Seam's ([`seam_model::Service`], [`seam_model::EndpointSlice`]).
//!
//! The typed Kubernetes object (k8s-openapi) is read for what decides whether it is forwarded at
//! all, then turned back into JSON (`serde_json::to_value`), trimmed of what Seam does not model
//! and cannot be asked to (server-set metadata, `status`, the IPv6 half of a dual-stack Service,
//! hints), and decoded by Seam's own manifest decoder — the one `seam apply -f` uses — so a
//! Kubernetes object and the same object applied by hand mean the same.
//!
//! Skipped, with a reason the caller logs and counts (never silently):
//! - ExternalName Services (DNS only: there is nothing to balance);
//! - Services without an IPv4 family (Seam's Services are IPv4);
//! - EndpointSlices whose `addressType` is not `IPv4`, or that name no Service.
//!
//! Which EndpointSlices are forwarded is decided by the caller (`sync.rs`): only those of
//! forwarded Services without a selector, because Seam computes the backends of a Service with a
//! selector from its own inventory (pods, VMs, external endpoints).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use seam_model::manifest::{parse_value, Manifest};
use serde_json::{Map, Value};

use crate::error::{Result, TranslateError};
use crate::resource::{RawObject, WatchedKind};
use crate::translate::{decode, MANAGED_BY};

/// The label the adapter puts on every Service and EndpointSlice it forwards, so that after a
/// restart it can tell its own (and delete those whose Kubernetes object went away meanwhile)
/// from objects applied with `seam apply`. A label rather than an annotation: Seam's
/// EndpointSlice keeps no annotations, and a Service keeps only the ones Seam reads.
pub const MANAGED_BY_LABEL: &str = seam_model::MANAGED_BY_ANNOTATION;

/// The `spec.loadBalancerClass` of LoadBalancer Services Seam gives an address to, besides those
/// that name no class. A Service naming another class belongs to another load balancer: Seam
/// still serves its ClusterIP and NodePorts (kube-proxy's part) but neither allocates an address
/// for it nor writes its status.
pub const LOAD_BALANCER_CLASS: &str = "seam.dev/address-pool";

/// Why a Kubernetes object is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SkipReason {
    /// `type: ExternalName`: a DNS alias, nothing to balance.
    ExternalName,
    /// A Service without the IPv4 family (`ipFamilies: [IPv6]`).
    Ipv6Service,
    /// An EndpointSlice of `addressType: IPv6`.
    Ipv6Slice,
    /// An EndpointSlice of `addressType: FQDN` (deprecated; not an address).
    FqdnSlice,
    /// An EndpointSlice without the `kubernetes.io/service-name` label.
    NoService,
}

impl SkipReason {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::ExternalName => "ExternalName Service: DNS only, nothing to balance",
            SkipReason::Ipv6Service => "IPv6-only Service: Seam's Services are IPv4",
            SkipReason::Ipv6Slice => "IPv6 EndpointSlice: Seam's Services are IPv4",
            SkipReason::FqdnSlice => "FQDN EndpointSlice: not an address",
            SkipReason::NoService => "EndpointSlice without the kubernetes.io/service-name label",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a Kubernetes Service becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceMapping {
    /// Forwarded as this Seam Service.
    Forward(Box<ForwardedService>),
    /// Not forwarded (anything forwarded earlier under its name is deleted).
    Skip(SkipReason),
}

/// A Service to forward, with what the adapter needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedService {
    /// The Seam Service (with [`MANAGED_BY_LABEL`]).
    pub service: seam_model::Service,
    /// Whether Seam's `status.loadBalancer.ingress` is written back to the Kubernetes Service
    /// (LoadBalancer Services of Seam's class or of none).
    pub write_status: bool,
}

/// What a Kubernetes EndpointSlice becomes (if its Service is forwarded and has no selector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceMapping {
    /// This Seam EndpointSlice (with [`MANAGED_BY_LABEL`]), of the Service `namespace/service`.
    Forward(Box<seam_model::EndpointSlice>),
    /// Not forwarded.
    Skip(SkipReason),
}

/// A v1 Service → [`ServiceMapping`].
pub fn service(obj: &RawObject) -> Result<ServiceMapping> {
    let kind = WatchedKind::Service;
    let typed: core::Service = decode(kind, obj)?;
    let spec = typed.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(ServiceMapping::Skip(SkipReason::ExternalName));
    }
    let families = spec.ip_families.clone().unwrap_or_default();
    if !families.is_empty() && !families.iter().any(|f| f == "IPv4") {
        return Ok(ServiceMapping::Skip(SkipReason::Ipv6Service));
    }
    let mut doc = to_value(kind, obj, &typed)?;
    trim_metadata(&mut doc, &[seam_model::ADDRESS_POOL_ANNOTATION]);
    let mut write_status = spec.type_.as_deref() == Some("LoadBalancer");
    if let Some(Value::Object(spec_doc)) = doc.get_mut("spec") {
        // One IPv4 ClusterIP: the IPv4 half of a dual-stack Service (kube-apiserver lists the
        // primary family first, which may be IPv6).
        let ipv4 = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .find(|ip| ip.parse::<Ipv4Addr>().is_ok() || ip.as_str() == "None")
            .cloned();
        for field in ["clusterIPs", "ipFamilies", "ipFamilyPolicy", "clusterIP"] {
            spec_doc.remove(field);
        }
        if let Some(ip) = ipv4 {
            spec_doc.insert("clusterIP".into(), Value::String(ip));
        }
        // Set by kube-apiserver for LoadBalancer Services with externalTrafficPolicy Local, for
        // cloud load balancers' health checks; Seam's gateways need none (every node serves the
        // address with its own backends).
        spec_doc.remove("healthCheckNodePort");
        // A hint (topology-aware routing) Seam does not follow; ignoring it is what a proxy
        // without the feature does.
        spec_doc.remove("trafficDistribution");
        // kube-apiserver keeps `externalName` only for ExternalName Services, skipped above.
        spec_doc.remove("externalName");
        if let Some(class) = spec_doc.remove("loadBalancerClass") {
            if class.as_str() != Some(LOAD_BALANCER_CLASS) {
                // Another load balancer's: Seam does what kube-proxy does for it.
                write_status = false;
                let node_ports = spec.allocate_load_balancer_node_ports != Some(false);
                spec_doc.insert(
                    "type".into(),
                    Value::String(if node_ports { "NodePort" } else { "ClusterIP" }.into()),
                );
                spec_doc.remove("allocateLoadBalancerNodePorts");
                spec_doc.remove("loadBalancerIP");
                if !node_ports {
                    strip_node_ports(spec_doc);
                }
            }
        }
    }
    let mut service = parse_service(kind, obj, doc)?;
    service
        .labels
        .insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    Ok(ServiceMapping::Forward(Box::new(ForwardedService {
        service,
        write_status,
    })))
}

/// Whether the Kubernetes Service has a selector: its EndpointSlices are then the EndpointSlice
/// controller's picture of pods, which Seam computes itself from its inventory.
pub fn has_selector(service: &seam_model::Service) -> bool {
    service.spec.selector.is_some()
}

/// A discovery.k8s.io/v1 EndpointSlice → [`SliceMapping`].
pub fn endpoint_slice(obj: &RawObject) -> Result<SliceMapping> {
    let kind = WatchedKind::EndpointSlice;
    let typed: discovery::EndpointSlice = decode(kind, obj)?;
    match typed.address_type.as_str() {
        "IPv4" => {}
        "IPv6" => return Ok(SliceMapping::Skip(SkipReason::Ipv6Slice)),
        _ => return Ok(SliceMapping::Skip(SkipReason::FqdnSlice)),
    }
    if service_of_slice(&typed.metadata).is_none() {
        return Ok(SliceMapping::Skip(SkipReason::NoService));
    }
    let mut doc = to_value(kind, obj, &typed)?;
    trim_metadata(&mut doc, &[]);
    if let Some(Value::Array(endpoints)) = doc.get_mut("endpoints") {
        for endpoint in endpoints.iter_mut().filter_map(Value::as_object_mut) {
            // Topology hints and the deprecated topology map: not used by Seam.
            endpoint.remove("hints");
            endpoint.remove("deprecatedTopology");
        }
    }
    let mut slice = parse_slice(kind, obj, doc)?;
    slice
        .labels
        .insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    Ok(SliceMapping::Forward(Box::new(slice)))
}

/// `namespace/service` of an EndpointSlice, from its `kubernetes.io/service-name` label.
pub fn service_key_of_slice(obj: &RawObject) -> Option<String> {
    let namespace = obj.metadata.namespace.as_deref()?;
    let service = obj
        .metadata
        .labels
        .as_ref()?
        .get(seam_model::SERVICE_NAME_LABEL)?;
    Some(format!("{namespace}/{service}"))
}

fn service_of_slice(meta: &kube::core::ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()?
        .get(seam_model::SERVICE_NAME_LABEL)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether an object read back from the controller (its labels) was forwarded by this adapter.
pub fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
}

/// The typed object as JSON, with `apiVersion` and `kind` (list items come without them).
fn to_value<T: serde::Serialize>(kind: WatchedKind, obj: &RawObject, typed: &T) -> Result<Value> {
    let mut doc = serde_json::to_value(typed).map_err(|source| TranslateError::Decode {
        kind,
        key: obj.key(),
        source,
    })?;
    if let Value::Object(map) = &mut doc {
        map.insert("apiVersion".into(), Value::String(kind.api_version()));
        map.insert("kind".into(), Value::String(kind.kind().to_string()));
        map.remove("status");
    }
    Ok(doc)
}

/// Keeps of `metadata` only name, namespace, labels and the `keep` annotations: the rest is the
/// API server's (uid, resourceVersion, managedFields, ownerReferences, finalizers, …) or other
/// tools' (kubectl's last-applied copy), none of which Seam reads.
fn trim_metadata(doc: &mut Value, keep: &[&str]) {
    let Some(Value::Object(meta)) = doc.get_mut("metadata") else {
        return;
    };
    let mut trimmed = Map::new();
    for field in ["name", "namespace", "labels"] {
        if let Some(v) = meta.remove(field) {
            trimmed.insert(field.into(), v);
        }
    }
    if let Some(Value::Object(annotations)) = meta.remove("annotations") {
        let kept: Map<String, Value> = annotations
            .into_iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .collect();
        if !kept.is_empty() {
            trimmed.insert("annotations".into(), Value::Object(kept));
        }
    }
    *meta = trimmed;
}

fn strip_node_ports(spec: &mut Map<String, Value>) {
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            port.remove("nodePort");
        }
    }
}

/// Decodes the trimmed document with Seam's manifest decoder (the one `seam apply` uses).
fn parse(kind: WatchedKind, obj: &RawObject, doc: Value) -> Result<Manifest> {
    parse_value(doc).map_err(|source| TranslateError::Manifest {
        kind,
        key: obj.key(),
        source,
    })
}

fn parse_service(kind: WatchedKind, obj: &RawObject, doc: Value) -> Result<seam_model::Service> {
    match parse(kind, obj, doc)? {
        Manifest::Service(service) => Ok(service),
        other => Err(unexpected(kind, obj, &other)),
    }
}

fn parse_slice(
    kind: WatchedKind,
    obj: &RawObject,
    doc: Value,
) -> Result<seam_model::EndpointSlice> {
    match parse(kind, obj, doc)? {
        Manifest::EndpointSlice(slice) => Ok(slice),
        other => Err(unexpected(kind, obj, &other)),
    }
}

/// Cannot happen (`apiVersion` and `kind` are set from the kind watched), but is not a panic.
fn unexpected(kind: WatchedKind, obj: &RawObject, got: &Manifest) -> TranslateError {
    TranslateError::Decode {
        kind,
        key: obj.key(),
        source: <serde_json::Error as serde::de::Error>::custom(format!(
            "decoded as {}",
            got.describe()
        )),
    }
}

#[cfg(test)]
mod tests;
