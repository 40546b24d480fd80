//! Services: Seam's L4 load balancer objects, as Kubernetes writes them.
//!
//! - [`Service`] (`v1 Service`): a ClusterIP, NodePort or LoadBalancer Service with a selector
//!   (its backends are the endpoints of its namespace whose labels match, pods, VMs and external
//!   endpoints alike) or without one (its backends are the [`EndpointSlice`]s given for it).
//! - [`EndpointSlice`] (`discovery.k8s.io/v1 EndpointSlice`): backends of a Service without a
//!   selector, with their conditions (ready, serving, terminating).
//! - [`AddressPool`] (`seam.dev/v1alpha1 AddressPool`): the addresses LoadBalancer Services are
//!   given, served by the gateway nodes on the external network.
//!
//! The controller fills in what Kubernetes' API server would (`spec.clusterIP`, `nodePort`s,
//! `status.loadBalancer.ingress`, `status.conditions`) and stores the object as it stands.
//!
//! Each object has a `validate()` (Kubernetes' checks where Seam keeps the field; ranges and
//! collisions are the controller's) and a `to_kubernetes()` (the document `kubectl get -o yaml`
//! would print, which [`crate::manifest`] reads back). [`resolve`] finds a Service's backends
//! and [`usable`] the ones that take new connections, as Kubernetes' EndpointSlice controller
//! and kube-proxy do.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::objects::PortProtocol;

mod kubernetes;
mod resolve;
mod validate;

pub use resolve::{resolve, usable};
pub use validate::{is_dns_label, is_valid_service_name, special_address};

/// The `apiVersion` of a Service.
pub const SERVICE_API_VERSION: &str = "v1";
/// The `apiVersion` of an EndpointSlice.
pub const ENDPOINT_SLICE_API_VERSION: &str = "discovery.k8s.io/v1";
/// The label of an EndpointSlice that names its Service (Kubernetes' own).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The annotation of a LoadBalancer Service that names the [`AddressPool`] its address comes from.
pub const ADDRESS_POOL_ANNOTATION: &str = "seam.dev/address-pool";
/// The default NodePort range, as Kubernetes' (`--service-node-port-range`).
pub const DEFAULT_NODE_PORT_RANGE: (u16, u16) = (30000, 32767);
/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours), as Kubernetes'.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;
/// The longest affinity timeout Kubernetes accepts (one day).
pub const MAX_AFFINITY_TIMEOUT_SECONDS: u32 = 86400;

/// A `v1 Service`: a stable address (and ports) in front of a set of backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Name, unique in its namespace (a DNS label).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations` Seam reads (only [`ADDRESS_POOL_ANNOTATION`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// What the user asked for, completed by the controller (ClusterIP, NodePorts).
    pub spec: ServiceSpec,
    /// What the controller reports (LoadBalancer ingress, conditions).
    #[serde(default, skip_serializing_if = "ServiceStatus::is_empty")]
    pub status: ServiceStatus,
}

impl Service {
    /// `namespace/name`: the store name of a Service.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `spec.type`. `ExternalName` is refused at the door (it is DNS only, nothing to balance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ServiceType {
    /// A virtual address inside the cluster.
    #[default]
    ClusterIP,
    /// ClusterIP, plus a port on every node.
    NodePort,
    /// NodePort, plus an address from an [`AddressPool`] served at the gateways.
    LoadBalancer,
}

/// `spec.clusterIP`: requested or allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterIp {
    /// Not given: the controller allocates one from the service range.
    #[default]
    Auto,
    /// `None`: a headless Service, nothing to translate.
    Headless,
    /// This address (requested, or as allocated).
    Address(Ipv4Addr),
}

/// `spec.sessionAffinity` with `sessionAffinityConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionAffinity {
    /// Each new connection picks a backend.
    #[default]
    None,
    /// Connections of one client address go to the same backend while the client was seen
    /// within the timeout.
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds` (1..=86400, default 10800).
        timeout_seconds: u32,
    },
}

/// `spec.externalTrafficPolicy` and `spec.internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any ready backend in the cluster.
    #[default]
    Cluster,
    /// Only backends on the node the traffic arrives at. With none there, Seam refuses the
    /// connection at once (TCP reset, ICMP unreachable) where Kubernetes drops it.
    Local,
}

/// `spec` of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// `type`.
    #[serde(rename = "type", default)]
    pub service_type: ServiceType,
    /// `selector`: `None` means the backends come from EndpointSlices. An empty map is refused
    /// (Kubernetes treats it as no selector; Seam asks to leave the field out, so a typo cannot
    /// select nothing silently).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// `ports` (at least one unless headless; unique by name and by port/protocol).
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `clusterIP`.
    #[serde(rename = "clusterIP", default)]
    pub cluster_ip: ClusterIp,
    /// `externalIPs`: further addresses every node translates (routed to the nodes by the
    /// network, as in Kubernetes).
    #[serde(rename = "externalIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity`.
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// `externalTrafficPolicy` (NodePort and LoadBalancer only).
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// `internalTrafficPolicy`.
    #[serde(default)]
    pub internal_traffic_policy: TrafficPolicy,
    /// `publishNotReadyAddresses`: not-ready backends are used as ready ones.
    #[serde(default)]
    pub publish_not_ready_addresses: bool,
    /// `loadBalancerIP` (deprecated in Kubernetes, still honoured): the address asked of the pool.
    #[serde(
        rename = "loadBalancerIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<Ipv4Addr>,
    /// `allocateLoadBalancerNodePorts` (LoadBalancer only; default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate_load_balancer_node_ports: Option<bool>,
}

/// `targetPort`: a number, or the name of a container port resolved per backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A named container port (each backend may map it to another number).
    Name(String),
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// `name` (required when there are several ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `protocol` (default TCP).
    #[serde(default = "tcp")]
    pub protocol: PortProtocol,
    /// `port`: the port of the ClusterIP, external IPs and LoadBalancer address.
    pub port: u16,
    /// `targetPort` (default: `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<TargetPort>,
    /// `nodePort` (NodePort and LoadBalancer): requested, or as allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    /// `appProtocol` (kept, not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

fn tcp() -> PortProtocol {
    PortProtocol::Tcp
}

/// `status` of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStatus {
    /// `loadBalancer`.
    #[serde(default, skip_serializing_if = "LoadBalancerStatus::is_empty")]
    pub load_balancer: LoadBalancerStatus,
    /// `conditions` (why an address could not be allocated, for instance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl ServiceStatus {
    /// Nothing to report.
    pub fn is_empty(&self) -> bool {
        self.load_balancer.is_empty() && self.conditions.is_empty()
    }
}

/// `status.loadBalancer`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerStatus {
    /// `ingress`: the addresses the Service is reached at from outside.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<LoadBalancerIngress>,
}

impl LoadBalancerStatus {
    /// No address.
    pub fn is_empty(&self) -> bool {
        self.ingress.is_empty()
    }
}

/// One `status.loadBalancer.ingress` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerIngress {
    /// `ip`.
    pub ip: Ipv4Addr,
    /// `ipMode` (`VIP`: the address is translated where it arrives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_mode: Option<String>,
}

/// A status condition, as Kubernetes writes them (`metav1.Condition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// `type` (`AddressAllocated`, …).
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason (`PoolExhausted`, …).
    pub reason: String,
    /// What happened, for a person.
    pub message: String,
    /// `lastTransitionTime` (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// A `discovery.k8s.io/v1 EndpointSlice`: backends of a Service without a selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSlice {
    /// Name, unique in its namespace.
    pub name: String,
    /// Namespace (the Service's).
    pub namespace: String,
    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    pub service: String,
    /// `metadata.labels` (holds [`SERVICE_NAME_LABEL`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `endpoints`.
    #[serde(default)]
    pub endpoints: Vec<SliceEndpoint>,
    /// `ports`: the target port of each Service port, by name.
    #[serde(default)]
    pub ports: Vec<SlicePort>,
}

impl EndpointSlice {
    /// `namespace/name`: the store name of an EndpointSlice.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One entry of an EndpointSlice's `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SliceEndpoint {
    /// `addresses` (IPv4; Kubernetes allows only one to be used).
    pub addresses: Vec<Ipv4Addr>,
    /// `conditions`.
    #[serde(default)]
    pub conditions: EndpointConditions,
    /// `nodeName`: where the backend runs (for traffic policy `Local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `hostname` (kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `zone` (kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// `targetRef` (kept as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<serde_json::Value>,
}

/// `conditions` of an EndpointSlice endpoint. Absent means as Kubernetes says: `ready` and
/// `serving` unknown count as true, `terminating` unknown as false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointConditions {
    /// `ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// `serving`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    /// `terminating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

/// One entry of an EndpointSlice's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlicePort {
    /// `name`: the Service port it serves (empty or absent for a Service's one unnamed port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `port`.
    pub port: u16,
    /// `protocol` (default TCP).
    #[serde(default = "tcp")]
    pub protocol: PortProtocol,
    /// `appProtocol` (kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// A `seam.dev/v1alpha1 AddressPool`: addresses for LoadBalancer Services, served by the gateway
/// nodes on the external network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressPool {
    /// Name (cluster-scoped).
    pub name: String,
    /// The pool's addresses: prefixes (every address of a /24 is given, network and broadcast
    /// included, as MetalLB does for LoadBalancer pools: no host sits on them).
    pub addresses: Vec<Ipv4Net>,
    /// Whether a Service that names no pool may be given an address of this one.
    #[serde(default = "yes")]
    pub auto_assign: bool,
}

fn yes() -> bool {
    true
}

/// Whether a backend may be used, from its conditions (`EndpointConditions` resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendState {
    /// Ready: receives new connections.
    pub ready: bool,
    /// Serving: could receive them (true while terminating and still serving).
    pub serving: bool,
    /// Terminating: going away; used only when no ready backend is left.
    pub terminating: bool,
}

/// One backend of one Service port: an address, the port on it, where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// The backend's address.
    pub ip: Ipv4Addr,
    /// The port on it (a named `targetPort` resolved for this backend).
    pub port: u16,
    /// The node it runs on, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The Seam endpoint (`namespace/name` reference), when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Its conditions.
    pub state: BackendState,
}

/// One Service port with its backends (every backend, whatever its conditions; which are used is
/// the dataplane's choice, by traffic policy and conditions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedPort {
    /// The Service port.
    pub port: ServicePort,
    /// Its backends, sorted by address and port.
    pub backends: Vec<Backend>,
}

/// A node's liveness record: present while the node renews it (`PUT /v1/nodeleases/{node}`),
/// gone a few seconds after it stops. Gateways hold one: LoadBalancer addresses move to the
/// gateways that do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeLease {
    /// The node.
    pub node: String,
}

/// How long a node lease lives without renewal.
pub const NODE_LEASE_TTL_SECONDS: u64 = 6;
/// How often a gateway renews its lease.
pub const NODE_LEASE_RENEW_SECONDS: u64 = 2;
