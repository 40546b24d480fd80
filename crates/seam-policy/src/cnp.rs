//! `ClusterNetworkPolicy` (policy.networking.k8s.io/v1alpha2), the upstream successor of AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy: one kind, two tiers (`Admin`, `Baseline`), actions `Accept` / `Deny` / `Pass`, and
//! protocol matches in the v1alpha2 `protocols` shape. Fields this engine does not support (`nodes` and
//! `domainNames` peers) are decoded only to be rejected with a clear message.
//!
//! For evaluation and compilation a CNP is lowered to the rule shape AdminNetworkPolicies use
//! ([`ClusterNetworkPolicy::ingress_rules`], [`ClusterNetworkPolicy::egress_rules`]): `Accept` becomes
//! [`AnpAction::Allow`], and each `protocols` entry the equivalent [`AdminPort`]. The peers and subject are the
//! v1alpha1 shapes unchanged.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::anp::{
    validate_subject, AdminEgressPeer, AdminEgressRule, AdminIngressPeer, AdminIngressRule,
    AdminPort, AdminPortNumber, AdminPortRange, AdminSubject, AnpAction, NamespacedPods,
};
use crate::error::{Problems, ValidationError};
use crate::meta::{check_port, is_port_name, ObjectMeta, Protocol};
use crate::selector::LabelSelector;

/// Highest `spec.priority` a ClusterNetworkPolicy may have (v1alpha2).
pub const MAX_CNP_PRIORITY: i64 = 1000;

/// Most rules per direction, peers per rule and protocol entries per rule (v1alpha2).
pub const MAX_CNP_ITEMS: usize = 25;

/// A ClusterNetworkPolicy: cluster-scoped, in the Admin tier (before NetworkPolicy) or the Baseline tier (after
/// it), ordered by priority within its tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNetworkPolicy {
    /// Name (cluster-scoped).
    pub metadata: ObjectMeta,
    /// Tier, priority, subject and rules.
    pub spec: ClusterNetworkPolicySpec,
}

/// `spec` of a ClusterNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNetworkPolicySpec {
    /// `Admin` or `Baseline`.
    pub tier: CnpTier,
    /// 0..=1000; lower is evaluated first within the tier.
    pub priority: i64,
    /// The pods the policy applies to: exactly one of `namespaces` or `pods`.
    pub subject: AdminSubject,
    /// Ingress rules (at most 25), in order; the first match decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<CnpIngressRule>,
    /// Egress rules (at most 25), in order; the first match decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<CnpEgressRule>,
}

/// The tier of a ClusterNetworkPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CnpTier {
    /// Evaluated with the AdminNetworkPolicies, before NetworkPolicy.
    Admin,
    /// Evaluated with the BaselineAdminNetworkPolicy, after NetworkPolicy.
    Baseline,
}

/// What a ClusterNetworkPolicy rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CnpAction {
    /// Allow; final.
    Accept,
    /// Drop; final.
    Deny,
    /// Skip the rest of the admin tier; NetworkPolicy (then the baseline) decides. Admin tier only.
    Pass,
}

/// An ingress rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpIngressRule {
    /// Optional rule name (at most 100 characters), shown by `seam explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What a match does.
    pub action: CnpAction,
    /// Sources (1..=25).
    pub from: Vec<CnpIngressPeer>,
    /// Protocol and destination port matches (1..=25 when given); absent = every protocol and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<CnpProtocol>>,
}

/// An egress rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpEgressRule {
    /// Optional rule name (at most 100 characters), shown by `seam explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What a match does.
    pub action: CnpAction,
    /// Destinations (1..=25).
    pub to: Vec<CnpEgressPeer>,
    /// Protocol and destination port matches (1..=25 when given); absent = every protocol and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<CnpProtocol>>,
}

/// An ingress peer: exactly one of `namespaces` or `pods`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpIngressPeer {
    /// Every pod in the namespaces these labels select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPods>,
}

/// An egress peer: exactly one of `namespaces`, `pods` or `networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpEgressPeer {
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
    /// Decoded only to be rejected: `domainNames` peers are not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<serde_json::Value>,
}

/// One `protocols` entry: exactly one of `tcp`, `udp`, `sctp` or `destinationNamedPort`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpProtocol {
    /// TCP to a destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<CnpProtocolMatch>,
    /// UDP to a destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<CnpProtocolMatch>,
    /// SCTP to a destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<CnpProtocolMatch>,
    /// A named container port of the destination pod (its protocol comes with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

/// `tcp` / `udp` / `sctp`: the destination port (required: upstream sets MinProperties=1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpProtocolMatch {
    /// The destination port or range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<CnpPort>,
}

/// `destinationPort`: exactly one of `number` or `range`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpPort {
    /// One port (1..=65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    /// An inclusive range, `start` < `end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<CnpPortRange>,
}

/// `range`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpPortRange {
    /// First port.
    pub start: i64,
    /// Last port (inclusive, above `start`).
    pub end: i64,
}

impl CnpAction {
    /// The v1alpha1 action with the same effect (`Accept` = `Allow`).
    pub fn as_anp_action(self) -> AnpAction {
        match self {
            CnpAction::Accept => AnpAction::Allow,
            CnpAction::Deny => AnpAction::Deny,
            CnpAction::Pass => AnpAction::Pass,
        }
    }
}

impl CnpProtocol {
    /// The equivalent v1alpha1 port entry; `None` when the entry sets nothing (validation rejects that).
    pub fn as_admin_port(&self) -> Option<AdminPort> {
        if let Some(name) = &self.destination_named_port {
            return Some(AdminPort {
                named_port: Some(name.clone()),
                ..AdminPort::default()
            });
        }
        let (protocol, m) = [
            (Protocol::Tcp, &self.tcp),
            (Protocol::Udp, &self.udp),
            (Protocol::Sctp, &self.sctp),
        ]
        .into_iter()
        .find_map(|(p, m)| m.as_ref().map(|m| (p, m)))?;
        let port = m.destination_port.as_ref()?;
        if let Some(n) = port.number {
            return Some(AdminPort {
                port_number: Some(AdminPortNumber {
                    protocol: Some(protocol),
                    port: n,
                }),
                ..AdminPort::default()
            });
        }
        let r = port.range.as_ref()?;
        Some(AdminPort {
            port_range: Some(AdminPortRange {
                protocol: Some(protocol),
                start: r.start,
                end: r.end,
            }),
            ..AdminPort::default()
        })
    }
}

fn admin_ports(protocols: Option<&[CnpProtocol]>) -> Option<Vec<AdminPort>> {
    protocols.map(|ps| ps.iter().filter_map(CnpProtocol::as_admin_port).collect())
}

impl ClusterNetworkPolicy {
    /// Whether it sits in the admin tier.
    pub fn is_admin(&self) -> bool {
        self.spec.tier == CnpTier::Admin
    }

    /// The ingress rules in the shape AdminNetworkPolicies use (what the evaluator and the compiler run).
    pub fn ingress_rules(&self) -> Vec<AdminIngressRule<AnpAction>> {
        self.spec
            .ingress
            .iter()
            .map(|r| AdminIngressRule {
                name: r.name.clone(),
                action: r.action.as_anp_action(),
                from: r
                    .from
                    .iter()
                    .map(|p| AdminIngressPeer {
                        namespaces: p.namespaces.clone(),
                        pods: p.pods.clone(),
                        nodes: None,
                    })
                    .collect(),
                ports: admin_ports(r.protocols.as_deref()),
            })
            .collect()
    }

    /// The egress rules in the shape AdminNetworkPolicies use (what the evaluator and the compiler run).
    pub fn egress_rules(&self) -> Vec<AdminEgressRule<AnpAction>> {
        self.spec
            .egress
            .iter()
            .map(|r| AdminEgressRule {
                name: r.name.clone(),
                action: r.action.as_anp_action(),
                to: r
                    .to
                    .iter()
                    .map(|p| AdminEgressPeer {
                        namespaces: p.namespaces.clone(),
                        pods: p.pods.clone(),
                        networks: p.networks.clone(),
                        nodes: None,
                    })
                    .collect(),
                ports: admin_ports(r.protocols.as_deref()),
            })
            .collect()
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        self.metadata.validate(&mut p, false);
        if !(0..=MAX_CNP_PRIORITY).contains(&self.spec.priority) {
            p.add(
                "spec.priority",
                format!("{} is outside 0..={MAX_CNP_PRIORITY}", self.spec.priority),
            );
        }
        validate_subject(&mut p, &self.spec.subject);
        let tier = self.spec.tier;
        if self.spec.ingress.len() > MAX_CNP_ITEMS {
            p.add("spec.ingress", format!("at most {MAX_CNP_ITEMS} rules"));
        }
        if self.spec.egress.len() > MAX_CNP_ITEMS {
            p.add("spec.egress", format!("at most {MAX_CNP_ITEMS} rules"));
        }
        for (i, rule) in self.spec.ingress.iter().enumerate() {
            let path = format!("spec.ingress[{i}]");
            validate_rule_common(
                &mut p,
                &path,
                tier,
                rule.action,
                rule.name.as_deref(),
                rule.protocols.as_deref(),
            );
            check_count(&mut p, &format!("{path}.from"), rule.from.len(), "peers");
            for (j, peer) in rule.from.iter().enumerate() {
                let pp = format!("{path}.from[{j}]");
                match (&peer.namespaces, &peer.pods) {
                    (Some(ns), None) => ns.validate(&mut p, &format!("{pp}.namespaces")),
                    (None, Some(pods)) => pods.validate(&mut p, &format!("{pp}.pods")),
                    _ => p.add(pp, "must set exactly one of namespaces or pods"),
                }
            }
        }
        for (i, rule) in self.spec.egress.iter().enumerate() {
            let path = format!("spec.egress[{i}]");
            validate_rule_common(
                &mut p,
                &path,
                tier,
                rule.action,
                rule.name.as_deref(),
                rule.protocols.as_deref(),
            );
            check_count(&mut p, &format!("{path}.to"), rule.to.len(), "peers");
            for (j, peer) in rule.to.iter().enumerate() {
                validate_egress_peer(&mut p, &format!("{path}.to[{j}]"), peer);
            }
            let named = rule
                .protocols
                .iter()
                .flatten()
                .position(|x| x.destination_named_port.is_some());
            let addressed = rule
                .to
                .iter()
                .any(|x| x.networks.is_some() || x.nodes.is_some() || x.domain_names.is_some());
            if let (Some(k), true) = (named, addressed) {
                p.add(
                    format!("{path}.protocols[{k}].destinationNamedPort"),
                    "cannot be combined with networks peers: addresses have no named ports",
                );
            }
        }
        p.finish("ClusterNetworkPolicy", self.metadata.display_name())
    }
}

fn check_count(p: &mut Problems, path: &str, n: usize, what: &str) {
    if n == 0 || n > MAX_CNP_ITEMS {
        p.add(path, format!("must hold 1 to {MAX_CNP_ITEMS} {what}"));
    }
}

fn validate_egress_peer(p: &mut Problems, pp: &str, peer: &CnpEgressPeer) {
    if peer.nodes.is_some() {
        p.add(
            format!("{pp}.nodes"),
            "nodes peers are not supported by seam; use networks with the node addresses",
        );
    }
    if peer.domain_names.is_some() {
        p.add(
            format!("{pp}.domainNames"),
            "domainNames peers are not supported by seam (no DNS-aware dataplane); use networks",
        );
    }
    let set = usize::from(peer.namespaces.is_some())
        + usize::from(peer.pods.is_some())
        + usize::from(peer.networks.is_some())
        + usize::from(peer.nodes.is_some())
        + usize::from(peer.domain_names.is_some());
    if set != 1 {
        p.add(pp, "must set exactly one of namespaces, pods or networks");
    }
    if let Some(ns) = &peer.namespaces {
        ns.validate(p, &format!("{pp}.namespaces"));
    }
    if let Some(pods) = &peer.pods {
        pods.validate(p, &format!("{pp}.pods"));
    }
    if let Some(nets) = &peer.networks {
        if nets.is_empty() || nets.len() > MAX_CNP_ITEMS {
            p.add(
                format!("{pp}.networks"),
                format!("must hold 1 to {MAX_CNP_ITEMS} CIDRs"),
            );
        }
    }
}

fn validate_rule_common(
    p: &mut Problems,
    path: &str,
    tier: CnpTier,
    action: CnpAction,
    name: Option<&str>,
    protocols: Option<&[CnpProtocol]>,
) {
    if tier == CnpTier::Baseline && action == CnpAction::Pass {
        p.add(
            format!("{path}.action"),
            "Pass is only valid in the Admin tier (the baseline tier has no next tier to pass to)",
        );
    }
    if let Some(name) = name {
        if name.len() > 100 {
            p.add(format!("{path}.name"), "at most 100 characters");
        }
    }
    let Some(protocols) = protocols else { return };
    if protocols.is_empty() || protocols.len() > MAX_CNP_ITEMS {
        p.add(
            format!("{path}.protocols"),
            format!(
                "must hold 1 to {MAX_CNP_ITEMS} entries when given (omit it to match every protocol and port)"
            ),
        );
    }
    for (i, proto) in protocols.iter().enumerate() {
        let pp = format!("{path}.protocols[{i}]");
        let set = usize::from(proto.tcp.is_some())
            + usize::from(proto.udp.is_some())
            + usize::from(proto.sctp.is_some())
            + usize::from(proto.destination_named_port.is_some());
        if set != 1 {
            p.add(
                pp.clone(),
                "must set exactly one of tcp, udp, sctp or destinationNamedPort",
            );
        }
        if let Some(name) = &proto.destination_named_port {
            if !is_port_name(name) {
                p.add(
                    format!("{pp}.destinationNamedPort"),
                    format!("{name:?} is not a valid port name (IANA_SVC_NAME)"),
                );
            }
        }
        for (key, m) in [
            ("tcp", &proto.tcp),
            ("udp", &proto.udp),
            ("sctp", &proto.sctp),
        ] {
            let Some(m) = m else { continue };
            let mp = format!("{pp}.{key}");
            let Some(port) = &m.destination_port else {
                p.add(
                    format!("{mp}.destinationPort"),
                    "is required (omit protocols to match every port)",
                );
                continue;
            };
            let dp = format!("{mp}.destinationPort");
            match (port.number, &port.range) {
                (Some(n), None) => check_port(p, &format!("{dp}.number"), n),
                (None, Some(r)) => {
                    check_port(p, &format!("{dp}.range.start"), r.start);
                    check_port(p, &format!("{dp}.range.end"), r.end);
                    if r.end <= r.start {
                        p.add(
                            format!("{dp}.range.end"),
                            format!("{} must be above start {}", r.end, r.start),
                        );
                    }
                }
                _ => p.add(dp, "must set exactly one of number or range"),
            }
        }
    }
}
