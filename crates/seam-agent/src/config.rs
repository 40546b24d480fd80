use std::path::PathBuf;
use std::time::Duration;

use seam_dataplane::Underlay;
use seam_model::{MacAddr, NodeRole, TransitEncap};

/// What the agent needs to know about its node.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name, as registered with the controller.
    pub node: String,
    /// Node role.
    pub role: NodeRole,
    /// Underlay interface and tunnel address, as read at start: the agent follows the
    /// interface from there (`Agent::underlay`).
    pub underlay: Underlay,
    /// How other nodes reach this node when it is a gateway (published with its `Node`).
    pub transit_encap: TransitEncap,
    /// The underlay interface's MAC address as read at start (published with its `Node`: the
    /// routed transit's source address, by which the other nodes tell this gateway's traffic).
    pub underlay_mac: Option<MacAddr>,
    /// How other nodes send this node's endpoints the traffic of routed segments (published
    /// with its `Node`; `seamd --segment-encap`).
    pub segment_encap: TransitEncap,
    /// MTU of every segment device and endpoint interface (underlay MTU − 50 for VXLAN).
    pub mtu: u32,
    /// The CNI socket (created with mode 0600).
    pub socket: PathBuf,
    /// Controller endpoint: `unix:/path` or `http://host:port`.
    pub controller: String,
    /// How long a released address stays out of use.
    pub quarantine_ms: u64,
    /// How long an address block stays with the node after its last lease ended (and its
    /// quarantine) before it goes back to the segment.
    pub block_release_after_ms: u64,
    /// How often the agent compares the controller's record of its Node and endpoints with
    /// what it would publish, and publishes again what differs (it also does at once on a watch
    /// event that contradicts them).
    pub reassert_interval: Duration,
    /// Whether this gateway serves LoadBalancer addresses (`seamd --external-interface` given):
    /// only then does it renew its node lease, since the lease is what makes the other agents
    /// give it addresses.
    pub serves_lb_addresses: bool,
    /// The gateway's external interface (`seamd --external-interface`): connections arriving
    /// there have their replies leave by the operator's routes (`seam_dataplane::reply`).
    pub external_interface: Option<String>,
}

/// The default of [`AgentConfig::reassert_interval`] (`seamd --reassert-ms`).
pub const DEFAULT_REASSERT_INTERVAL: Duration = Duration::from_secs(30);
