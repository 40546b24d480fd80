//! The agent socket protocol between `seam-cni` and `seamd`.
//!
//! API boundary: one JSON [`AgentRequest`] line from the plug-in, one JSON [`AgentReply`] line
//! back, over the agent's Unix socket (mode 0600). The plug-in has already parsed and validated
//! the CNI config and environment; the agent owns addresses and the dataplane. CNI result
//! formatting per `cniVersion` happens in the plug-in.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;
use crate::objects::ContainerPort;

/// Version of this protocol; the agent refuses requests of another version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line the agent reads (a CNI config with a prevResult is a few KiB). The
/// plug-in refuses a larger config or request itself: the agent would stop reading half-way
/// and the plug-in would see a broken connection, which looks transient and is not.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// One call from the plug-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentRequest {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// What to do.
    pub op: AgentOp,
}

/// The operations of the agent socket, one per CNI verb that needs the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "command", deny_unknown_fields)]
pub enum AgentOp {
    /// CNI ADD: lease an address and attach the sandbox.
    Add(Attachment),
    /// CNI DEL: detach and release; succeeds when there is nothing to do.
    Del(AttachmentId),
    /// CNI CHECK: verify what ADD recorded is still in place.
    Check(Attachment),
    /// CNI GC: release every attachment of `network` not in `valid`.
    Gc {
        /// Network name from the config.
        network: String,
        /// The attachments the runtime still uses.
        valid: Vec<AttachmentKey>,
    },
    /// CNI STATUS: can the agent serve ADD now?
    Status {
        /// Network name from the config.
        network: String,
    },
}

/// What identifies one attachment: the CNI spec's (container id, interface) pair, scoped by network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachmentKey {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// An attachment to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachmentId {
    /// Network name from the config.
    pub network: String,
    /// Container id and interface.
    pub key: AttachmentKey,
    /// `CNI_NETNS`; may be empty on DEL (the runtime may have removed the namespace already).
    #[serde(default)]
    pub netns: String,
}

/// An attachment to create or check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attachment {
    /// Network name from the config.
    pub network: String,
    /// Container id and interface.
    pub key: AttachmentKey,
    /// `CNI_NETNS`: path of the sandbox's network namespace.
    pub netns: String,
    /// Kubernetes-style namespace of the pod (`K8S_POD_NAMESPACE`, else the config's default).
    pub namespace: String,
    /// Pod name (`K8S_POD_NAME`), when the runtime gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Segment pinned by the config; otherwise the controller maps the namespace to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Labels to publish with the endpoint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Named container ports to publish with the endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

/// The outcome of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum AgentReply {
    /// ADD (and CHECK) succeeded with this attachment.
    Attached(AttachResult),
    /// DEL, GC or STATUS succeeded.
    Done,
    /// The call failed; `code` is a CNI error code.
    Error(AgentError),
}

/// A CNI error as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentError {
    /// CNI error code (e.g. 11 try again later, 50 not available, 999 internal).
    pub code: u32,
    /// What went wrong, for a person.
    pub msg: String,
    /// More detail: the cause chain.
    #[serde(default)]
    pub details: String,
}

/// What ADD built, enough for the plug-in to write any CNI result version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachResult {
    /// Host-side veth name (in the node's namespace).
    pub host_ifname: String,
    /// Host-side veth MAC.
    pub host_mac: MacAddr,
    /// Interface name inside the sandbox.
    pub container_ifname: String,
    /// Sandbox interface MAC.
    pub container_mac: MacAddr,
    /// The sandbox path as given.
    pub sandbox: String,
    /// Address with the segment's prefix length.
    pub address: Ipv4Net,
    /// The segment's anycast gateway.
    pub gateway: Ipv4Addr,
    /// Interface MTU.
    pub mtu: u32,
    /// Segment the sandbox is attached to.
    pub segment: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_reject_unknown_fields() {
        let req = AgentRequest {
            protocol: PROTOCOL_VERSION,
            op: AgentOp::Del(AttachmentId {
                network: "seam".into(),
                key: AttachmentKey {
                    container_id: "c1".into(),
                    ifname: "eth0".into(),
                },
                netns: String::new(),
            }),
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<AgentRequest>(&text).unwrap(), req);
        let bad = text.replace("\"netns\"", "\"netnz\"");
        assert!(serde_json::from_str::<AgentRequest>(&bad).is_err());
    }
}
