//! The objects the controller stores and serves. JSON field names are camelCase; unknown fields
//! are rejected so that a typo is an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::bounds::{
    check_record_size, shown, MAX_ENDPOINT_PORTS, MAX_LABEL_NAME_LEN, MAX_LABEL_PREFIX_LEN,
};
use crate::error::{Problems, ValidationError};
use crate::mac::MacAddr;

/// The API group and version of every object in this module.
pub const API_VERSION: &str = "seam.dev/v1alpha1";

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// True when `name` is 1..=63 characters of `a-z 0-9 - .`, starting and ending alphanumeric
/// (Kubernetes' DNS-1123 rules, shortened to one label's length).
pub fn is_valid_name(name: &str) -> bool {
    crate::names::is_dns_name(name, 63)
}

pub(crate) fn check_name(problems: &mut Problems, path: &str, name: &str) {
    if !is_valid_name(name) {
        problems.add(path, format!("{name:?} is not a valid name (1-63 of a-z, 0-9, '-', '.', alphanumeric at both ends)"));
    }
}

/// Segment names may be longer than other names: `ns-<namespace>` must fit any namespace.
pub(crate) fn check_segment_name(problems: &mut Problems, path: &str, name: &str) {
    if !crate::names::is_valid_segment_name(name) {
        problems.add(path, format!("{name:?} is not a valid segment name (1-{} of a-z, 0-9, '-', '.', alphanumeric at both ends)", crate::names::MAX_SEGMENT_NAME));
    }
}

/// A logical switch: one subnet, one VNI, one anycast gateway that is the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Segment {
    /// Unique name.
    pub name: String,
    /// Isolation domain the segment belongs to.
    pub tenant: String,
    /// The segment's subnet; endpoint addresses come from per-node blocks carved from it.
    pub subnet: Ipv4Net,
    /// The distributed gateway address, inside `subnet`, present on every node's bridge.
    pub gateway: Ipv4Addr,
    /// VXLAN network identifier (1..=16777215), unique across segments.
    pub vni: u32,
    /// Prefix length of the per-node address blocks carved from `subnet`.
    pub block_prefix: u8,
    /// The Kubernetes-style namespace this segment serves (`None` for the flat cluster segment
    /// or for explicit segments, e.g. for VMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Masquerade the segment's egress: traffic from its endpoints to destinations Seam does not
    /// know (no segment's subnet, no node, no external endpoint) leaves through a gateway node with
    /// the address of the gateway's outgoing interface. Off (the default), endpoints keep their own
    /// addresses everywhere and reach only what the network routes back to them.
    #[serde(default)]
    pub snat: bool,
    /// How the segment's traffic crosses between nodes: `routed` (the default) lets two nodes
    /// that allow it (`Node.segmentEncap`) route it without encapsulation; `overlay` keeps the
    /// VXLAN between every pair of nodes, for what needs a real L2 (non-IP protocols,
    /// broadcast and multicast between guests).
    #[serde(default, skip_serializing_if = "SegmentForwarding::is_routed")]
    pub forwarding: SegmentForwarding,
}

/// How a segment's traffic crosses between nodes ([`Segment::forwarding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum SegmentForwarding {
    /// Routed without encapsulation between nodes of one underlay subnet that both publish
    /// `segmentEncap: crossSubnet`, through VXLAN otherwise. IP (unicast) only: a remote
    /// endpoint's ARP answer is the segment's gateway MAC.
    #[default]
    Routed,
    /// Always through VXLAN, with the endpoints' own MACs (what a real L2 gives: non-IP
    /// protocols, broadcast and multicast between guests).
    Overlay,
}

impl SegmentForwarding {
    /// The default, left out of the wire form.
    pub fn is_routed(&self) -> bool {
        *self == SegmentForwarding::Routed
    }
}

impl Segment {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        check_segment_name(&mut p, "name", &self.name);
        check_name(&mut p, "tenant", &self.tenant);
        if self.subnet != self.subnet.trunc() {
            p.add(
                "subnet",
                format!(
                    "{} has host bits set (did you mean {}?)",
                    self.subnet,
                    self.subnet.trunc()
                ),
            );
        }
        if self.subnet.prefix_len() > 30 {
            p.add(
                "subnet",
                format!(
                    "{} is too small: a segment needs at least a /30",
                    self.subnet
                ),
            );
        }
        if !self.subnet.contains(&self.gateway)
            || self.gateway == self.subnet.network()
            || self.gateway == self.subnet.broadcast()
        {
            p.add(
                "gateway",
                format!("{} is not a host address of {}", self.gateway, self.subnet),
            );
        }
        if self.vni == 0 || self.vni > MAX_VNI {
            p.add("vni", format!("{} is outside 1..={MAX_VNI}", self.vni));
        }
        if self.block_prefix < self.subnet.prefix_len() || self.block_prefix > 30 {
            p.add(
                "blockPrefix",
                format!(
                    "/{} must lie between the subnet's /{} and /30",
                    self.block_prefix,
                    self.subnet.prefix_len()
                ),
            );
        }
        if let Some(ns) = &self.namespace {
            check_name(&mut p, "namespace", ns);
        }
        p.finish("Segment", &self.name)
    }
}

/// What a node does besides running pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Runs pods.
    #[default]
    Worker,
    /// Runs VMs (and may run pods).
    Hypervisor,
    /// Joins the overlay to an external network.
    Gateway,
}

/// A machine that runs `seamd`, known by its underlay address (the VXLAN tunnel endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// The address VXLAN packets to this node's endpoints are sent to.
    pub underlay_ip: Ipv4Addr,
    /// The node's role.
    #[serde(default)]
    pub role: NodeRole,
    /// How other nodes send this gateway the traffic for its external endpoints. Absent means
    /// `always` (what a gateway without the setting, which keeps strict reverse-path filtering
    /// on its underlay interface, can receive).
    #[serde(default, skip_serializing_if = "TransitEncap::is_always")]
    pub transit_encap: TransitEncap,
    /// The prefix length of `underlayIp` on its interface: with it, two nodes can both tell
    /// whether they share an underlay subnet (the routed transit needs both to agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_prefix_len: Option<u8>,
    /// The MAC address of the interface holding `underlayIp`: what the routed transit's packets
    /// from this node carry as their source, so a node can tell which gateway a connection came
    /// through (and route its replies back through it, `seam_dataplane::reply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_mac: Option<MacAddr>,
    /// How other nodes send this node's endpoints the traffic of `routed` segments
    /// (`seamd --segment-encap`): `crossSubnet` routes it without encapsulation between two
    /// nodes that both publish it and share an underlay subnet. Absent means `always` (an agent
    /// that does not know routed segments keeps VXLAN with everyone).
    #[serde(default, skip_serializing_if = "TransitEncap::is_always")]
    pub segment_encap: TransitEncap,
}

/// How nodes reach a gateway node (`seamd --transit-encap`), after Calico's `vxlanMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum TransitEncap {
    /// Always through the transit VXLAN device.
    #[default]
    Always,
    /// Routed without encapsulation from a node whose underlay subnet holds the gateway's
    /// underlay address (one L2 segment, no router between them to drop pod source
    /// addresses); encapsulated from any other node.
    CrossSubnet,
}

impl TransitEncap {
    /// The default, left out of the wire form.
    pub fn is_always(&self) -> bool {
        *self == TransitEncap::Always
    }
}

impl Node {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        check_name(&mut p, "name", &self.name);
        let ip = self.underlay_ip;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
            p.add("underlayIp", format!("{ip} cannot be a tunnel endpoint"));
        }
        if let Some(len) = self.underlay_prefix_len.filter(|l| *l > 32) {
            p.add("underlayPrefixLen", format!("/{len} is longer than /32"));
        }
        if let Some(mac) = self
            .underlay_mac
            .filter(|m| !m.is_unicast() || m.0 == [0; 6])
        {
            p.add("underlayMac", format!("{mac} is not a unicast address"));
        }
        p.finish("Node", &self.name)
    }
}

/// A range of a segment's addresses that one node hands out on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Block {
    /// The segment the block belongs to.
    pub segment: String,
    /// The node that owns the block.
    pub node: String,
    /// The block's addresses.
    pub cidr: Ipv4Net,
}

impl Block {
    /// The store name of a block: unique because blocks of a segment never overlap.
    pub fn key(&self) -> String {
        block_key(&self.segment, self.cidr)
    }
}

/// The store name of the block `cidr` of `segment`.
pub fn block_key(segment: &str, cidr: Ipv4Net) -> String {
    format!("{segment}/{}-{}", cidr.network(), cidr.prefix_len())
}

/// What an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// A container sandbox attached by the CNI plug-in.
    #[default]
    Pod,
    /// A virtual machine attached on a hypervisor host.
    Vm,
    /// A node itself.
    Host,
    /// A server outside the overlay, reached through a gateway.
    External,
}

/// Anything with an address on a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Unique name: for pods `<namespace>/<pod>` when known, else the container id and interface.
    pub name: String,
    /// What it is.
    pub kind: EndpointKind,
    /// Kubernetes-style namespace.
    pub namespace: String,
    /// Segment it is attached to.
    pub segment: String,
    /// Node it is attached on.
    pub node: String,
    /// Its address on the segment.
    pub ip: Ipv4Addr,
    /// Its interface MAC.
    pub mac: MacAddr,
    /// Labels for group selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The runtime's container id, for pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The interface name inside the sandbox, for pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Named container ports, for policies that name a port (`port: serve-80-tcp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Whether it takes Service traffic, as an EndpointSlice endpoint's `conditions` say: the
    /// Kubernetes adapter sets them from the pod's `Ready` condition and its deletion (a pod
    /// failing its readiness probe, or in its grace period). Absent: ready, serving and not
    /// terminating, as for every VM, external server and pod nobody reports on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<crate::service::EndpointConditions>,
}

/// The transport protocols a container port can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PortProtocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl PortProtocol {
    /// `TCP`, `UDP` or `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "TCP",
            PortProtocol::Udp => "UDP",
            PortProtocol::Sctp => "SCTP",
        }
    }

    /// Parses `TCP`, `UDP` or `SCTP` (upper case, as Kubernetes writes them).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "TCP" => Some(PortProtocol::Tcp),
            "UDP" => Some(PortProtocol::Udp),
            "SCTP" => Some(PortProtocol::Sctp),
            _ => None,
        }
    }
}

/// A named port of an endpoint (Kubernetes' `containerPort` with a `name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    /// The name policies use: an IANA service name ([`is_valid_port_name`]).
    pub name: String,
    /// The port number, 1..=65535.
    pub port: u16,
    /// The protocol.
    pub protocol: PortProtocol,
}

/// True when `name` is an IANA service name as Kubernetes checks port names
/// (`IsValidPortName`): 1..=15 characters of `a-z 0-9 -`, at least one letter, no `-` at
/// either end and no `--`.
pub fn is_valid_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Checks a list of named ports: valid names, ports 1..=65535, no name twice.
pub(crate) fn check_ports(problems: &mut Problems, path: &str, ports: &[ContainerPort]) {
    if ports.len() > MAX_ENDPOINT_PORTS {
        problems.add(
            path,
            format!(
                "{} named ports, over the bound of {MAX_ENDPOINT_PORTS} (MAX_ENDPOINT_PORTS)",
                ports.len()
            ),
        );
        // Every entry would be reported below as well; one message says enough.
        return;
    }
    for (i, p) in ports.iter().enumerate() {
        if !is_valid_port_name(&p.name) {
            problems.add(
                &format!("{path}[{i}].name"),
                format!("{:?} is not a valid port name (1-15 of a-z, 0-9, '-', at least one letter, no '-' at the ends, no '--')", p.name),
            );
        }
        if p.port == 0 {
            problems.add(&format!("{path}[{i}].port"), "must be 1..=65535");
        }
        if ports[..i].iter().any(|q| q.name == p.name) {
            problems.add(
                &format!("{path}[{i}].name"),
                format!("{:?} is named twice", p.name),
            );
        }
    }
}

impl Endpoint {
    /// Its conditions resolved as Kubernetes resolves an EndpointSlice endpoint's (absent or
    /// unknown: ready, serving, not terminating).
    pub fn state(&self) -> crate::service::BackendState {
        self.conditions.unwrap_or_default().resolved()
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        if !crate::names::is_valid_endpoint_name(&self.name) {
            p.add(
                "name",
                format!(
                    "{:?} is not a valid endpoint name (1-{} bytes, no space or control character)",
                    self.name,
                    crate::names::MAX_ENDPOINT_NAME
                ),
            );
        }
        check_name(&mut p, "namespace", &self.namespace);
        check_segment_name(&mut p, "segment", &self.segment);
        check_name(&mut p, "node", &self.node);
        if !self.mac.is_unicast() {
            p.add("mac", format!("{} is not a unicast MAC", self.mac));
        }
        check_labels(&mut p, "labels", &self.labels);
        check_ports(&mut p, "ports", &self.ports);
        check_record_size(&mut p, "endpoint", self);
        p.finish("Endpoint", &self.name)
    }
}

/// The kinds of object the controller stores; also the path segment of their API resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// [`Node`]
    Node,
    /// [`Segment`]
    Segment,
    /// [`Block`]
    Block,
    /// [`Endpoint`]
    Endpoint,
    /// [`Namespace`]
    Namespace,
    /// [`Tenant`]
    Tenant,
    /// A policy object (NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy,
    /// EndpointGroup, Contract) as JSON; its name is `<Kind>/<namespace or _>/<name>`
    /// ([`policy_name`]). seam-model does not know the policy types: the controller validates them
    /// with seam-policy.
    Policy,
    /// [`crate::AddressPool`]
    AddressPool,
    /// [`crate::Service`]; its name is `<namespace>/<name>`.
    Service,
    /// [`crate::EndpointSlice`]; its name is `<namespace>/<name>`.
    EndpointSlice,
    /// [`crate::NodeLease`]: a node (a gateway) that renews it is alive; its name is the node's.
    NodeLease,
}

impl ObjectKind {
    /// Every kind, in the order a consumer should apply them (segments before endpoints).
    pub const ALL: [ObjectKind; 11] = [
        ObjectKind::Node,
        ObjectKind::Segment,
        ObjectKind::Block,
        ObjectKind::Tenant,
        ObjectKind::Namespace,
        ObjectKind::Endpoint,
        ObjectKind::Policy,
        ObjectKind::AddressPool,
        ObjectKind::Service,
        ObjectKind::EndpointSlice,
        ObjectKind::NodeLease,
    ];

    /// The plural resource name used in URLs and store keys.
    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::Node => "nodes",
            ObjectKind::Segment => "segments",
            ObjectKind::Block => "blocks",
            ObjectKind::Endpoint => "endpoints",
            ObjectKind::Namespace => "namespaces",
            ObjectKind::Tenant => "tenants",
            ObjectKind::Policy => "policies",
            ObjectKind::AddressPool => "addresspools",
            ObjectKind::Service => "services",
            ObjectKind::EndpointSlice => "endpointslices",
            ObjectKind::NodeLease => "nodeleases",
        }
    }

    /// Parses a plural resource name.
    pub fn from_plural(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.plural() == s)
    }
}

/// The store name of a policy object: `<Kind>/<namespace>/<name>`, with `_` for the namespace of
/// cluster-scoped kinds (namespace names are DNS labels, so `_` never collides).
pub fn policy_name(kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{kind}/{}/{name}", namespace.unwrap_or(CLUSTER_SCOPE))
}

/// The store name ([`policy_name`]) of a policy object: the name its watch events carry.
pub fn policy_object_name(object: &seam_policy::PolicyObject) -> String {
    let meta = object.metadata();
    policy_name(
        object.kind().as_str(),
        meta.namespace.as_deref(),
        &meta.name,
    )
}

/// A stored policy object this version cannot read (a kind or version a newer Seam added, an
/// unknown field inside `spec`, or not a policy object at all): never in force, but kept by its
/// reader with what is known of it, so that it is still counted, named (seam-k8s finds its managed
/// objects by name) and reported ("stored policy object ignored: …", as seam-firewall says).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnreadablePolicy {
    /// Its store name ([`policy_name`]), when the object says its kind and name.
    pub name: Option<String>,
    /// Its `kind`, when the object says it.
    pub kind: Option<String>,
    /// Why it cannot be read: the decode error's text.
    pub error: String,
}

impl UnreadablePolicy {
    /// What can be told of the object `raw` that failed to decode with `error`, read leniently
    /// (`kind`, `metadata.namespace`, `metadata.name`, each only when it is a string).
    pub fn new(raw: &serde_json::Value, error: impl std::fmt::Display) -> Self {
        let kind = raw.get("kind").and_then(serde_json::Value::as_str);
        let meta = raw.get("metadata");
        let field = |f: &str| {
            meta.and_then(|m| m.get(f))
                .and_then(serde_json::Value::as_str)
        };
        UnreadablePolicy {
            name: kind
                .zip(field("name"))
                .map(|(kind, name)| policy_name(kind, field("namespace"), name)),
            kind: kind.map(str::to_string),
            error: error.to_string(),
        }
    }
}

/// A stored policy object as a reader of this version holds it: typed, or kept as one it cannot
/// read.
#[derive(Debug, Clone, PartialEq)]
// Nearly every entry is readable: boxing the object would cost an allocation each to save space
// in the rare unreadable one.
#[allow(clippy::large_enum_variant)]
pub enum StoredPolicy {
    /// Decoded into its wire type.
    Readable(seam_policy::PolicyObject),
    /// One this version cannot read.
    Unreadable(UnreadablePolicy),
}

/// What the firewall compiler and the views take as a policy object: a typed object, or one this
/// version could not read (reported, never in force).
pub trait AsStoredPolicy {
    /// The typed object, or what is known of one that could not be read.
    fn as_stored(&self) -> Result<&seam_policy::PolicyObject, &UnreadablePolicy>;
}

impl AsStoredPolicy for seam_policy::PolicyObject {
    fn as_stored(&self) -> Result<&seam_policy::PolicyObject, &UnreadablePolicy> {
        Ok(self)
    }
}

impl AsStoredPolicy for StoredPolicy {
    fn as_stored(&self) -> Result<&seam_policy::PolicyObject, &UnreadablePolicy> {
        match self {
            StoredPolicy::Readable(object) => Ok(object),
            StoredPolicy::Unreadable(unreadable) => Err(unreadable),
        }
    }
}

impl AsStoredPolicy for Result<&seam_policy::PolicyObject, &UnreadablePolicy> {
    fn as_stored(&self) -> Result<&seam_policy::PolicyObject, &UnreadablePolicy> {
        *self
    }
}

/// The annotation of a policy object that names the program that manages it (seam-k8s sets
/// `seam-k8s`). The controller refuses to replace such an object with one that does not carry the
/// same mark, so a manual change is not silently undone by the manager, nor the manager's copy
/// silently replaced.
pub const MANAGED_BY_ANNOTATION: &str = "seam.dev/managed-by";

/// The namespace part of [`policy_name`] for cluster-scoped policy objects.
pub const CLUSTER_SCOPE: &str = "_";

/// The label every namespace carries with its own name (set by the controller, as the
/// Kubernetes API server does), so that namespace selectors can pick a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A Kubernetes-style namespace: what namespace selectors of policies read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    /// Unique name.
    pub name: String,
    /// Labels (the controller always sets [`NAMESPACE_NAME_LABEL`] to the name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The tenant (isolation domain); absent = the default tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Namespace {
    /// A namespace with just its name label, in the default tenant.
    pub fn named(name: &str) -> Self {
        let mut ns = Namespace {
            name: name.to_string(),
            labels: BTreeMap::new(),
            tenant: None,
        };
        ns.set_name_label();
        ns
    }

    /// Sets [`NAMESPACE_NAME_LABEL`] to the name.
    pub fn set_name_label(&mut self) {
        self.labels
            .insert(NAMESPACE_NAME_LABEL.to_string(), self.name.clone());
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        check_name(&mut p, "name", &self.name);
        check_labels(&mut p, "labels", &self.labels);
        if let Some(t) = &self.tenant {
            check_name(&mut p, "tenant", t);
        }
        check_record_size(&mut p, "namespace", self);
        p.finish("Namespace", &self.name)
    }
}

/// What the baseline tier does at a tenant's endpoints when no policy decided (seam-policy
/// SEMANTICS §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// Allow: one flat network (OpenShift "subnet"); policies still apply.
    Flat,
    /// Allow within the tenant and to/from global tenants, deny across tenants.
    Multitenant,
    /// Allow; isolation comes from policies only (Kubernetes' default).
    #[default]
    Policy,
}

impl IsolationMode {
    /// `flat`, `multitenant` or `policy`.
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::Flat => "flat",
            IsolationMode::Multitenant => "multitenant",
            IsolationMode::Policy => "policy",
        }
    }
}

/// The tenant namespaces without one belong to.
pub const DEFAULT_TENANT: &str = "default";

/// A tenant: an isolation domain namespaces belong to (by [`Namespace::tenant`]). A tenant a
/// namespace names without a `Tenant` object has the default mode (`policy`) and is not global.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    /// Unique name.
    pub name: String,
    /// The isolation mode of its endpoints.
    #[serde(default)]
    pub isolation: IsolationMode,
    /// A global tenant reaches and is reached by every tenant (OpenShift's make-global).
    #[serde(default)]
    pub global: bool,
}

impl Tenant {
    /// A tenant with the default mode (`policy`), not global.
    pub fn named(name: &str) -> Self {
        Tenant {
            name: name.to_string(),
            isolation: IsolationMode::default(),
            global: false,
        }
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        check_name(&mut p, "name", &self.name);
        p.finish("Tenant", &self.name)
    }
}

/// `POST /v1/tenants/join`: `namespace` moves into the tenant of `into` (OpenShift
/// `join-projects --to=into namespace`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinTenant {
    /// The namespace that moves.
    pub namespace: String,
    /// The namespace whose tenant it joins.
    pub into: String,
}

/// `POST /v1/tenants/isolate` and `POST /v1/tenants/make-global`: the namespace they act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantOperation {
    /// The namespace.
    pub namespace: String,
}

/// The answer of a tenant operation: the namespace as stored now, and the tenant it is in (as a
/// `Tenant` object says, or the default mode when there is none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantChange {
    /// The namespace.
    pub namespace: Namespace,
    /// Its tenant.
    pub tenant: Tenant,
}

/// Kubernetes label value syntax (`IsValidLabelValue`): empty, or 1-63 of `A-Z a-z 0-9 - _ .`
/// with alphanumeric ends.
pub fn is_valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= MAX_LABEL_NAME_LEN
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// Kubernetes label key syntax (`IsQualifiedName`): an optional DNS-subdomain prefix of at most
/// 253 characters and `/`, then a name of 1-63 characters with the value syntax.
pub fn is_valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, k),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_valid_label_value(name)
}

/// DNS-1123 subdomain as Kubernetes checks it (`IsDNS1123Subdomain`): at most 253 characters of
/// non-empty dot-separated parts of `a-z 0-9 -` with alphanumeric ends. Unlike a DNS name, a part
/// is not bounded to 63. seam-policy carries the same rule (`selector::is_dns_subdomain`).
fn is_dns_subdomain(s: &str) -> bool {
    let part_ok = |l: &str| {
        l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    !s.is_empty() && s.len() <= MAX_LABEL_PREFIX_LEN && s.split('.').all(part_ok)
}

/// Checks every key and value of a label map, each problem at `<path>.<key>`.
pub(crate) fn check_labels(p: &mut Problems, path: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        let at = format!("{path}.{k}");
        if !is_valid_label_key(k) {
            p.add(
                &at,
                format!("{} is not a valid label key ([prefix/]name: prefix a DNS subdomain of at most {MAX_LABEL_PREFIX_LEN}, name 1-{MAX_LABEL_NAME_LEN} of a-z A-Z 0-9 - _ ., alphanumeric at both ends)", shown(k)),
            );
        }
        if !is_valid_label_value(v) {
            p.add(
                &at,
                format!("{} is not a valid label value (0-{MAX_LABEL_NAME_LEN} of a-z A-Z 0-9 - _ ., alphanumeric at both ends)", shown(v)),
            );
        }
    }
}

/// Everything the controller holds, as of one store revision. Agents start from this and then
/// follow [`WatchEvent`]s from `revision + 1`.
///
/// Unknown fields are tolerated (this is the controller's answer, not user input), so a client
/// built before a field was added still reads newer snapshots; fields added later carry
/// `#[serde(default)]` so newer clients read older snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The store revision the snapshot was read at.
    pub revision: u64,
    /// All nodes.
    pub nodes: Vec<Node>,
    /// All segments.
    pub segments: Vec<Segment>,
    /// All blocks.
    pub blocks: Vec<Block>,
    /// All endpoints.
    pub endpoints: Vec<Endpoint>,
    /// All namespaces.
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    /// All tenants.
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    /// All policy objects, in store-name order: typed, decoded once where they arrive (the
    /// controller's door for user input, the snapshot's reader for agents); on the wire each is
    /// its stored form (`apiVersion`, `kind`, `metadata`, `spec`), versioned by `apiVersion` and
    /// `kind`. The controller serves them as stored; their reader decodes them one by one with
    /// [`crate::tolerant::policy`] (seam-client does) and keeps one it cannot read in
    /// [`Snapshot::unreadable_policies`].
    #[serde(default)]
    pub policies: Vec<seam_policy::PolicyObject>,
    /// The stored policy objects the snapshot's reader could not read (see [`UnreadablePolicy`]).
    /// Not a wire field: on the wire they are among `policies`, as stored.
    #[serde(skip)]
    pub unreadable_policies: Vec<UnreadablePolicy>,
    /// All address pools (LoadBalancer addresses).
    #[serde(default)]
    pub address_pools: Vec<crate::AddressPool>,
    /// All Services, as stored (allocations filled in).
    #[serde(default)]
    pub services: Vec<crate::Service>,
    /// All EndpointSlices (backends of Services without a selector).
    #[serde(default)]
    pub endpoint_slices: Vec<crate::EndpointSlice>,
    /// The node leases held now (gateways that are alive).
    #[serde(default)]
    pub node_leases: Vec<crate::NodeLease>,
    /// The generation (store revision of the last write) of every policy object, by store name,
    /// and of every tenant, by [`crate::tenant_realization_name`]: what an agent reports it
    /// enforces ([`crate::realization`]). Absent from an older controller's snapshot: a reader
    /// then takes the snapshot's `revision`, which no object's generation exceeds.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub generations: std::collections::BTreeMap<String, u64>,
}

impl Snapshot {
    /// Every policy object, readable or not, in store-name order (the order the controller lists
    /// them in; one without a name last), as a reader that reports what it left out wants them.
    pub fn stored_policies(&self) -> Vec<Result<&seam_policy::PolicyObject, &UnreadablePolicy>> {
        let mut all: Vec<(Option<String>, Result<_, _>)> = self
            .policies
            .iter()
            .map(|p| (Some(policy_object_name(p)), Ok(p)))
            .chain(
                self.unreadable_policies
                    .iter()
                    .map(|u| (u.name.clone(), Err(u))),
            )
            .collect();
        // Stable: objects of one name keep their order (of two with one key, the later is in force).
        all.sort_by(|a, b| (a.0.is_none(), &a.0).cmp(&(b.0.is_none(), &b.0)));
        all.into_iter().map(|(_, p)| p).collect()
    }
}

/// One change in the controller's store, as streamed by `GET /v1/watch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatchEvent {
    /// Store revision of the change.
    pub revision: u64,
    /// Object kind.
    pub kind: ObjectKind,
    /// Object name (for blocks, [`Block::key`]).
    pub name: String,
    /// The new object; `None` when it was deleted.
    #[serde(default)]
    pub object: Option<serde_json::Value>,
}

/// Asks the controller for the segment that serves a namespace (created on first use in
/// per-namespace mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnsureSegment {
    /// Namespace of the endpoint being attached.
    pub namespace: String,
}

/// Asks the controller for a new address block of a segment for a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimBlock {
    /// The segment.
    pub segment: String,
    /// The node that will own the block.
    pub node: String,
}

/// A structured API error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiError {
    /// Machine-readable reason, e.g. `Invalid`, `NotFound`, `Conflict`, `Exhausted`, `Gone`.
    pub reason: String,
    /// What went wrong, for a person.
    pub message: String,
}

#[cfg(test)]
mod tests;
