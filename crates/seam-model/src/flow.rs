//! Flow records: what a node's dataplane decided about one connection (or one dropped packet),
//! with the rule that decided it and both ends resolved to what they are.
//!
//! An agent reads the samples its `inet seam` table sends to its NFLOG group, turns each into a
//! [`FlowRecord`] (resolving addresses against its inventory), keeps them in a bounded ring and
//! pushes them to the controller in batches ([`FlowBatch`], `POST /v1/flows`); the controller
//! keeps a bounded ring per node and serves them (`GET /v1/flows`, NDJSON, `follow`), filtered
//! by a [`FlowFilter`] (parsed here, so the CLI and the controller read it alike).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

mod filter;
mod stream;

pub use filter::{
    parse_duration_ms, verdict_name, FlowFilter, PeerFilter, PolicyFilter, DEFAULT_FLOW_LIMIT,
    FLOW_QUERY, MAX_FLOW_LIMIT, MAX_FLOW_SINCE_MS,
};
pub use stream::{FlowsLagged, FLOWS_DROPPED_HEADER};

/// One flow record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowRecord {
    /// When the sample was read, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The node whose table decided.
    pub node: String,
    /// Which end's enforcement point decided: the source's egress or the destination's ingress.
    pub direction: FlowDirection,
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, or the IP protocol number as text.
    pub protocol: String,
    /// The sender (after Service translation of the destination: the client as it is).
    pub src: FlowPeer,
    /// The receiver (after Service translation: the chosen backend).
    pub dst: FlowPeer,
    /// What was decided.
    pub verdict: FlowVerdict,
    /// Why, as the table says it: the rule that matched, or the default that applied.
    pub reason: FlowReason,
    /// The tier that decided: `admin`, `namespace`, `baseline` (absent for a Service refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The policy or contract that decided, as `seam explain` names it (e.g.
    /// `NetworkPolicy prod/allow-web`, `Contract web`); absent for defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The id of the rule that decided (the rule comment in the table), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// When the destination was a Service address: the Service and the address the client used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<FlowService>,
    /// Samples of this rule the rate limit suppressed since the previous record of this rule on
    /// this node (0 when none was).
    #[serde(default)]
    pub suppressed: u64,
}

/// One end of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowPeer {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its port (TCP, UDP, SCTP); absent for other protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// What it is.
    pub kind: PeerKind,
    /// Its namespace (pods, VMs, externals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name (pods, VMs, externals: the endpoint's name; nodes: the node's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What an address is to Seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// A pod.
    Pod,
    /// A virtual machine.
    Vm,
    /// An external endpoint (a bare-metal server or an existing service behind a gateway).
    External,
    /// A node's own address.
    Node,
    /// Anything Seam does not know.
    World,
}

/// Which enforcement point decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowDirection {
    /// The source's egress.
    Egress,
    /// The destination's ingress.
    Ingress,
}

/// The verdict of a flow record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowVerdict {
    /// Let through (recorded once per new connection).
    Allowed,
    /// Dropped or refused (recorded per packet, rate limited).
    Denied,
}

/// Why the verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowReason {
    /// A rule of a policy or contract matched (`policy` and `rule` name it).
    Rule,
    /// The endpoint is isolated by a policy that selects it and no rule allowed the flow.
    Isolation,
    /// The isolation mode's default (tenant isolation or default-deny) applied.
    DefaultDeny,
    /// Passed by the admin tier, decided by the baseline's default.
    Pass,
    /// Nothing selected either end: allowed by default.
    DefaultAllow,
    /// A Service frontend with no usable backend refused it.
    NoEndpoints,
}

/// The Service a flow was addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowService {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The address the client used (ClusterIP, external or LoadBalancer address, node address).
    pub ip: Ipv4Addr,
    /// The port the client used.
    pub port: u16,
}

/// `POST /v1/flows`: a batch of one node's records (a node may post only its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowBatch {
    /// The records, oldest first.
    pub records: Vec<FlowRecord>,
    /// Records the agent dropped since its previous batch because the controller was slow or
    /// unreachable (its queue is bounded).
    #[serde(default)]
    pub dropped: u64,
}
