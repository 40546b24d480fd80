//! `AdminNetworkPolicy` and `BaselineAdminNetworkPolicy` (policy.networking.k8s.io/v1alpha1): the objects and their
//! validation. Fields of v1alpha1 this engine does not support (`nodes` peers) are decoded only to be rejected with
//! a clear message.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Problems, ValidationError};
use crate::meta::{check_port, is_port_name, ObjectMeta, Protocol};
use crate::selector::LabelSelector;

/// Highest `spec.priority` an AdminNetworkPolicy may have (v1alpha1).
pub const MAX_ANP_PRIORITY: i64 = 1000;

/// The only name a BaselineAdminNetworkPolicy may have: it is a singleton.
pub const BANP_NAME: &str = "default";

/// An AdminNetworkPolicy: cluster-scoped, ordered by priority, evaluated before NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminNetworkPolicy {
    /// Name (cluster-scoped).
    pub metadata: ObjectMeta,
    /// Subject, priority and rules.
    pub spec: AdminNetworkPolicySpec,
}

/// `spec` of an AdminNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminNetworkPolicySpec {
    /// 0..=1000; lower is evaluated first.
    pub priority: i64,
    /// The pods the policy applies to.
    pub subject: AdminSubject,
    /// Ingress rules, in order; the first match decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<AdminIngressRule<AnpAction>>,
    /// Egress rules, in order; the first match decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<AdminEgressRule<AnpAction>>,
}

/// The BaselineAdminNetworkPolicy (singleton `default`): evaluated after NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaselineAdminNetworkPolicy {
    /// Name, always `default`.
    pub metadata: ObjectMeta,
    /// Subject and rules.
    pub spec: BaselineAdminNetworkPolicySpec,
}

/// `spec` of the BaselineAdminNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaselineAdminNetworkPolicySpec {
    /// The pods the policy applies to.
    pub subject: AdminSubject,
    /// Ingress rules, in order; the first match decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<AdminIngressRule<BanpAction>>,
    /// Egress rules, in order; the first match decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<AdminEgressRule<BanpAction>>,
}

/// What an AdminNetworkPolicy rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnpAction {
    /// Allow; final.
    Allow,
    /// Drop; final.
    Deny,
    /// Skip the rest of the admin tier; NetworkPolicy (then the baseline) decides.
    Pass,
}

/// What a BaselineAdminNetworkPolicy rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BanpAction {
    /// Allow.
    Allow,
    /// Drop.
    Deny,
}

/// The subject: exactly one of `namespaces` or `pods`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminSubject {
    /// Every pod in the namespaces these labels select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods selected by namespace and pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPods>,
}

/// Pods chosen by a namespace selector AND a pod selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedPods {
    /// Namespaces by label (`{}` = all).
    pub namespace_selector: LabelSelector,
    /// Pods by label (`{}` = all).
    pub pod_selector: LabelSelector,
}

/// An ingress rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminIngressRule<A> {
    /// Optional rule name (at most 100 characters), shown by `seam explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What a match does.
    pub action: A,
    /// Sources (1..=100).
    pub from: Vec<AdminIngressPeer>,
    /// Destination ports; absent = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminPort>>,
}

/// An egress rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminEgressRule<A> {
    /// Optional rule name (at most 100 characters), shown by `seam explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What a match does.
    pub action: A,
    /// Destinations (1..=100).
    pub to: Vec<AdminEgressPeer>,
    /// Destination ports; absent = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminPort>>,
}

/// An ingress peer: exactly one of `namespaces` or `pods`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminIngressPeer {
    /// Every pod in the namespaces these labels select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPods>,
    /// Decoded only to be rejected: `nodes` peers are not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<serde_json::Value>,
}

/// An egress peer: exactly one of `namespaces`, `pods` or `networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminEgressPeer {
    /// Every pod in the namespaces these labels select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPods>,
    /// Destination CIDRs (1..=25), matched against the destination address whatever it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<IpNet>>,
    /// Decoded only to be rejected: `nodes` peers are not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<serde_json::Value>,
}

/// A port entry: exactly one of `portNumber`, `portRange` or `namedPort`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPort {
    /// One port of one protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<AdminPortNumber>,
    /// A named container port of the destination pod (its protocol comes with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_port: Option<String>,
    /// An inclusive range of one protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<AdminPortRange>,
}

/// `portNumber`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPortNumber {
    /// Protocol; absent = TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The port.
    pub port: i64,
}

/// `portRange`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPortRange {
    /// Protocol; absent = TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// First port.
    pub start: i64,
    /// Last port (inclusive).
    pub end: i64,
}

impl AdminNetworkPolicy {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        self.metadata.validate(&mut p, false);
        if !(0..=MAX_ANP_PRIORITY).contains(&self.spec.priority) {
            p.add(
                "spec.priority",
                format!("{} is outside 0..={MAX_ANP_PRIORITY}", self.spec.priority),
            );
        }
        validate_subject(&mut p, &self.spec.subject);
        validate_rules(&mut p, &self.spec.ingress, &self.spec.egress);
        p.finish("AdminNetworkPolicy", self.metadata.display_name())
    }
}

impl BaselineAdminNetworkPolicy {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        self.metadata.validate(&mut p, false);
        if self.metadata.name != BANP_NAME {
            p.add(
                "metadata.name",
                format!("must be {BANP_NAME:?}: the BaselineAdminNetworkPolicy is a singleton"),
            );
        }
        validate_subject(&mut p, &self.spec.subject);
        validate_rules(&mut p, &self.spec.ingress, &self.spec.egress);
        p.finish("BaselineAdminNetworkPolicy", self.metadata.display_name())
    }
}

pub(crate) fn validate_subject(p: &mut Problems, s: &AdminSubject) {
    match (&s.namespaces, &s.pods) {
        (Some(ns), None) => ns.validate(p, "spec.subject.namespaces"),
        (None, Some(pods)) => pods.validate(p, "spec.subject.pods"),
        _ => p.add("spec.subject", "must set exactly one of namespaces or pods"),
    }
}

impl NamespacedPods {
    pub(crate) fn validate(&self, p: &mut Problems, path: &str) {
        self.namespace_selector
            .validate(p, &format!("{path}.namespaceSelector"));
        self.pod_selector
            .validate(p, &format!("{path}.podSelector"));
    }
}

fn validate_rules<A>(
    p: &mut Problems,
    ingress: &[AdminIngressRule<A>],
    egress: &[AdminEgressRule<A>],
) {
    if ingress.len() > 100 {
        p.add("spec.ingress", "at most 100 rules");
    }
    if egress.len() > 100 {
        p.add("spec.egress", "at most 100 rules");
    }
    for (i, rule) in ingress.iter().enumerate() {
        let path = format!("spec.ingress[{i}]");
        validate_rule_common(p, &path, rule.name.as_deref(), rule.ports.as_deref());
        if rule.from.is_empty() || rule.from.len() > 100 {
            p.add(format!("{path}.from"), "must hold 1 to 100 peers");
        }
        for (j, peer) in rule.from.iter().enumerate() {
            let pp = format!("{path}.from[{j}]");
            if peer.nodes.is_some() {
                p.add(
                    format!("{pp}.nodes"),
                    "nodes peers are not supported by seam (and are not valid in ingress rules)",
                );
            }
            let set = usize::from(peer.namespaces.is_some()) + usize::from(peer.pods.is_some());
            if set + usize::from(peer.nodes.is_some()) != 1 {
                p.add(pp.clone(), "must set exactly one of namespaces or pods");
            }
            if let Some(ns) = &peer.namespaces {
                ns.validate(p, &format!("{pp}.namespaces"));
            }
            if let Some(pods) = &peer.pods {
                pods.validate(p, &format!("{pp}.pods"));
            }
        }
    }
    for (i, rule) in egress.iter().enumerate() {
        let path = format!("spec.egress[{i}]");
        validate_rule_common(p, &path, rule.name.as_deref(), rule.ports.as_deref());
        if rule.to.is_empty() || rule.to.len() > 100 {
            p.add(format!("{path}.to"), "must hold 1 to 100 peers");
        }
        for (j, peer) in rule.to.iter().enumerate() {
            let pp = format!("{path}.to[{j}]");
            if peer.nodes.is_some() {
                p.add(
                    format!("{pp}.nodes"),
                    "nodes peers are not supported by seam; use networks with the node addresses",
                );
            }
            let set = usize::from(peer.namespaces.is_some())
                + usize::from(peer.pods.is_some())
                + usize::from(peer.networks.is_some())
                + usize::from(peer.nodes.is_some());
            if set != 1 {
                p.add(
                    pp.clone(),
                    "must set exactly one of namespaces, pods or networks",
                );
            }
            if let Some(ns) = &peer.namespaces {
                ns.validate(p, &format!("{pp}.namespaces"));
            }
            if let Some(pods) = &peer.pods {
                pods.validate(p, &format!("{pp}.pods"));
            }
            if let Some(nets) = &peer.networks {
                if nets.is_empty() || nets.len() > 25 {
                    p.add(format!("{pp}.networks"), "must hold 1 to 25 CIDRs");
                }
            }
        }
    }
}

fn validate_rule_common(
    p: &mut Problems,
    path: &str,
    name: Option<&str>,
    ports: Option<&[AdminPort]>,
) {
    if let Some(name) = name {
        if name.len() > 100 {
            p.add(format!("{path}.name"), "at most 100 characters");
        }
    }
    let Some(ports) = ports else { return };
    if ports.is_empty() || ports.len() > 100 {
        p.add(
            format!("{path}.ports"),
            "must hold 1 to 100 entries when given (omit it to match every port)",
        );
    }
    for (i, port) in ports.iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        let set = usize::from(port.port_number.is_some())
            + usize::from(port.named_port.is_some())
            + usize::from(port.port_range.is_some());
        if set != 1 {
            p.add(
                pp.clone(),
                "must set exactly one of portNumber, namedPort or portRange",
            );
        }
        if let Some(n) = &port.port_number {
            check_protocol(p, &format!("{pp}.portNumber.protocol"), n.protocol);
            check_port(p, &format!("{pp}.portNumber.port"), n.port);
        }
        if let Some(name) = &port.named_port {
            if !is_port_name(name) {
                p.add(
                    format!("{pp}.namedPort"),
                    format!("{name:?} is not a valid port name (IANA_SVC_NAME)"),
                );
            }
        }
        if let Some(r) = &port.port_range {
            check_protocol(p, &format!("{pp}.portRange.protocol"), r.protocol);
            check_port(p, &format!("{pp}.portRange.start"), r.start);
            check_port(p, &format!("{pp}.portRange.end"), r.end);
            if r.end < r.start {
                p.add(
                    format!("{pp}.portRange.end"),
                    format!("{} is below start {}", r.end, r.start),
                );
            }
        }
    }
}

fn check_protocol(p: &mut Problems, path: &str, protocol: Option<Protocol>) {
    if protocol == Some(Protocol::Icmp) {
        p.add(
            path,
            "admin network policies support TCP, UDP and SCTP only",
        );
    }
}
