//! Kubernetes `NetworkPolicy` (networking.k8s.io/v1): the objects and their validation. Matching lives in
//! [`crate::eval`].

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Problems, ValidationError};
use crate::meta::{check_port, is_port_name, ObjectMeta, Protocol};
use crate::selector::LabelSelector;

/// A Kubernetes NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Name and namespace; the policy only selects pods of its namespace.
    pub metadata: ObjectMeta,
    /// What it selects and allows.
    pub spec: NetworkPolicySpec,
}

/// `spec` of a NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Pods of the policy's namespace it applies to; `{}` = all of them.
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// Ingress allow rules (a pod isolated for ingress admits the union of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    /// Egress allow rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<NetworkPolicyEgressRule>,
    /// Directions the policy isolates; see [`NetworkPolicy::isolates`] for the defaulting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
}

/// A direction named in `policyTypes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyType {
    /// Traffic into the selected pods.
    Ingress,
    /// Traffic out of the selected pods.
    Egress,
}

/// One ingress rule: traffic from any of `from` to any of `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyIngressRule {
    /// Sources; empty = every source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
    /// Destination ports; empty = every port and protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// One egress rule: traffic to any of `to` on any of `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyEgressRule {
    /// Destinations; empty = every destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<NetworkPolicyPeer>,
    /// Destination ports; empty = every port and protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// A peer: pods (by pod and/or namespace selector) or an address block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPeer {
    /// Pods by label; alone it means pods of the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces by label; `{}` = all namespaces. With `podSelector` the two are ANDed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// An address block; exclusive with the selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// `ipBlock`: a CIDR minus exceptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    /// The block.
    pub cidr: IpNet,
    /// Sub-blocks taken out of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<IpNet>,
}

/// A port (or range) and protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    /// Protocol; absent = TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Number or container port name; absent = every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    /// Last port of a range starting at the numeric `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

/// A port by number or by container port name (Kubernetes `IntOrString`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// A port number.
    Number(i64),
    /// A named container port, resolved on the destination pod with its protocol.
    Name(String),
}

impl NetworkPolicyPort {
    /// The protocol, with the Kubernetes default (TCP) applied.
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::Tcp)
    }
}

impl NetworkPolicy {
    /// The namespace (empty if missing; validation rejects that).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }

    /// Whether the policy isolates its pods for `direction`, with the API server's defaulting: without
    /// `policyTypes`, a policy always isolates for ingress, and for egress only when it has egress rules.
    pub fn isolates(&self, direction: PolicyType) -> bool {
        match &self.spec.policy_types {
            Some(types) => types.contains(&direction),
            None => match direction {
                PolicyType::Ingress => true,
                PolicyType::Egress => !self.spec.egress.is_empty(),
            },
        }
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        self.metadata.validate(&mut p, true);
        let spec = &self.spec;
        spec.pod_selector.validate(&mut p, "spec.podSelector");
        if let Some(types) = &spec.policy_types {
            for (i, t) in types.iter().enumerate() {
                if types[..i].contains(t) {
                    p.add(format!("spec.policyTypes[{i}]"), format!("duplicate {t:?}"));
                }
            }
            // Rules for a direction the policy does not list are accepted and have no effect, exactly as the
            // API server accepts them: rejecting them would leave a valid Kubernetes policy unenforced.
        }
        for (i, rule) in spec.ingress.iter().enumerate() {
            let path = format!("spec.ingress[{i}]");
            validate_peers(&mut p, &format!("{path}.from"), &rule.from);
            validate_ports(&mut p, &format!("{path}.ports"), &rule.ports);
        }
        for (i, rule) in spec.egress.iter().enumerate() {
            let path = format!("spec.egress[{i}]");
            validate_peers(&mut p, &format!("{path}.to"), &rule.to);
            validate_ports(&mut p, &format!("{path}.ports"), &rule.ports);
        }
        p.finish("NetworkPolicy", self.metadata.display_name())
    }
}

fn validate_peers(p: &mut Problems, path: &str, peers: &[NetworkPolicyPeer]) {
    for (i, peer) in peers.iter().enumerate() {
        let pp = format!("{path}[{i}]");
        if let Some(s) = &peer.pod_selector {
            s.validate(p, &format!("{pp}.podSelector"));
        }
        if let Some(s) = &peer.namespace_selector {
            s.validate(p, &format!("{pp}.namespaceSelector"));
        }
        match &peer.ip_block {
            Some(block) => {
                if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                    p.add(
                        pp.clone(),
                        "ipBlock cannot be combined with podSelector or namespaceSelector",
                    );
                }
                for (j, ex) in block.except.iter().enumerate() {
                    let inside = ex.addr().is_ipv4() == block.cidr.addr().is_ipv4()
                        && block.cidr.trunc().contains(&ex.trunc())
                        && ex.prefix_len() > block.cidr.prefix_len();
                    if !inside {
                        p.add(
                            format!("{pp}.ipBlock.except[{j}]"),
                            format!("{ex} is not strictly inside cidr {}", block.cidr),
                        );
                    }
                }
            }
            None => {
                if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
                    p.add(
                        pp,
                        "must set at least one of podSelector, namespaceSelector or ipBlock",
                    );
                }
            }
        }
    }
}

fn validate_ports(p: &mut Problems, path: &str, ports: &[NetworkPolicyPort]) {
    for (i, port) in ports.iter().enumerate() {
        let pp = format!("{path}[{i}]");
        if port.protocol == Some(Protocol::Icmp) {
            p.add(
                format!("{pp}.protocol"),
                "NetworkPolicy supports TCP, UDP and SCTP only",
            );
        }
        match (&port.port, port.end_port) {
            (Some(PortRef::Number(n)), end) => {
                check_port(p, &format!("{pp}.port"), *n);
                if let Some(end) = end {
                    check_port(p, &format!("{pp}.endPort"), end);
                    if end < *n {
                        p.add(format!("{pp}.endPort"), format!("{end} is below port {n}"));
                    }
                }
            }
            (Some(PortRef::Name(name)), end) => {
                if !is_port_name(name) {
                    p.add(
                        format!("{pp}.port"),
                        format!("{name:?} is not a valid port name (IANA_SVC_NAME)"),
                    );
                }
                if end.is_some() {
                    p.add(
                        format!("{pp}.endPort"),
                        "requires a numeric port, not a named one",
                    );
                }
            }
            (None, Some(_)) => p.add(format!("{pp}.endPort"), "requires a numeric port"),
            (None, None) => {}
        }
    }
}
