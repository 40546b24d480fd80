//! Seam's `Contract` (seam.dev/v1alpha1): what consumer groups may (or may not) open towards provider groups.

use serde::{Deserialize, Serialize};

use crate::error::{Problems, ValidationError};
use crate::group::{CLUSTER_GROUP, NAMESPACE_GROUP_PREFIX};
use crate::meta::{check_port, is_dns_label, port_u16, ObjectMeta, Protocol};
use crate::selector::is_dns_subdomain;

/// Priority of a namespace-tier contract that gives none (the lowest).
pub const DEFAULT_CONTRACT_PRIORITY: i64 = 1000;

/// A Contract (cluster-scoped). Stateful: replies of an allowed connection are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Contract {
    /// Name.
    pub metadata: ObjectMeta,
    /// Groups, subjects and action.
    pub spec: ContractSpec,
}

/// `spec` of a Contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContractSpec {
    /// Groups that open connections (EndpointGroup names, `cluster` or `namespace/<ns>`).
    pub consumers: Vec<String>,
    /// Groups that accept them.
    pub providers: Vec<String>,
    /// What traffic the contract is about; a flow matches when any filter of any subject matches.
    pub subjects: Vec<ContractSubject>,
    /// Allow or deny.
    pub action: ContractAction,
    /// Log flows this contract decides.
    #[serde(default)]
    pub log: bool,
    /// 0..=1000, lower first. Required in the admin tier, where it is ordered together with AdminNetworkPolicies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Admin or namespace tier (default).
    #[serde(default)]
    pub tier: ContractTier,
    /// Global (default) or tenant: a tenant-scoped contract only matches when both ends are in one tenant.
    #[serde(default)]
    pub scope: ContractScope,
}

/// A named set of filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContractSubject {
    /// Optional name, shown by `seam explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Filters (ORed); at least one.
    pub filters: Vec<Filter>,
}

/// A protocol with ports, port ranges or an ICMP type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// The protocol.
    pub protocol: Protocol,
    /// Destination ports; with `portRanges` empty too = every port of the protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<i64>,
    /// Inclusive destination port ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_ranges: Vec<PortRange>,
    /// ICMP type (ICMP only); absent = every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<i64>,
}

/// An inclusive port range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRange {
    /// First port.
    pub from: i64,
    /// Last port.
    pub to: i64,
}

/// What a matching contract does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractAction {
    /// Allow.
    Allow,
    /// Drop.
    Deny,
}

/// Where a contract is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractTier {
    /// With AdminNetworkPolicies, by priority, first match decides.
    Admin,
    /// With NetworkPolicies: providers become isolated for ingress.
    #[default]
    Namespace,
}

/// Which pairs a contract can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractScope {
    /// Any consumer with any provider.
    #[default]
    Global,
    /// Only a consumer and a provider in the same tenant.
    Tenant,
}

impl Contract {
    /// The priority, with the namespace-tier default.
    pub fn priority(&self) -> i64 {
        self.spec.priority.unwrap_or(DEFAULT_CONTRACT_PRIORITY)
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        self.metadata.validate(&mut p, false);
        let spec = &self.spec;
        for (field, groups) in [
            ("consumers", &spec.consumers),
            ("providers", &spec.providers),
        ] {
            if groups.is_empty() {
                p.add(format!("spec.{field}"), "must name at least one group");
            }
            for (i, g) in groups.iter().enumerate() {
                if !is_group_reference(g) {
                    p.add(
                        format!("spec.{field}[{i}]"),
                        format!("{g:?} is not a group name, {CLUSTER_GROUP:?}, \"{NAMESPACE_GROUP_PREFIX}<namespace>\" or \"deployment/<namespace>/<name>\""),
                    );
                }
            }
        }
        if spec.subjects.is_empty() {
            p.add("spec.subjects", "must hold at least one subject");
        }
        for (i, s) in spec.subjects.iter().enumerate() {
            let path = format!("spec.subjects[{i}]");
            if s.filters.is_empty() {
                p.add(format!("{path}.filters"), "must hold at least one filter");
            }
            for (j, f) in s.filters.iter().enumerate() {
                f.validate(&mut p, &format!("{path}.filters[{j}]"));
            }
        }
        match spec.priority {
            Some(pr) if !(0..=1000).contains(&pr) => {
                p.add("spec.priority", format!("{pr} is outside 0..=1000"))
            }
            None if spec.tier == ContractTier::Admin => p.add(
                "spec.priority",
                "is required for admin-tier contracts (they are ordered with AdminNetworkPolicies)",
            ),
            _ => {}
        }
        p.finish("Contract", self.metadata.display_name())
    }
}

impl Filter {
    fn validate(&self, p: &mut Problems, path: &str) {
        if self.protocol.has_ports() {
            if self.icmp_type.is_some() {
                p.add(format!("{path}.icmpType"), "only valid with protocol ICMP");
            }
        } else if !self.ports.is_empty() || !self.port_ranges.is_empty() {
            p.add(path, "ICMP has no ports; use icmpType");
        }
        for (i, port) in self.ports.iter().enumerate() {
            check_port(p, &format!("{path}.ports[{i}]"), *port);
        }
        for (i, r) in self.port_ranges.iter().enumerate() {
            check_port(p, &format!("{path}.portRanges[{i}].from"), r.from);
            check_port(p, &format!("{path}.portRanges[{i}].to"), r.to);
            if r.to < r.from {
                p.add(
                    format!("{path}.portRanges[{i}].to"),
                    format!("{} is below from {}", r.to, r.from),
                );
            }
        }
        if let Some(t) = self.icmp_type {
            if !(0..=255).contains(&t) {
                p.add(
                    format!("{path}.icmpType"),
                    format!("{t} is outside 0..=255"),
                );
            }
        }
    }

    /// Whether the filter matches `protocol` and `port` (the ICMP type for ICMP).
    pub fn matches(&self, protocol: Protocol, port: u16) -> bool {
        if self.protocol != protocol {
            return false;
        }
        if !protocol.has_ports() {
            return self.icmp_type.is_none_or(|t| i64::from(port) == t);
        }
        if self.ports.is_empty() && self.port_ranges.is_empty() {
            return true;
        }
        self.ports.iter().any(|p| port_u16(*p) == Some(port))
            || self
                .port_ranges
                .iter()
                .any(|r| (r.from..=r.to).contains(&i64::from(port)))
    }
}

fn is_group_reference(g: &str) -> bool {
    crate::group::deployment_group(g).is_some()
        || g == CLUSTER_GROUP
        || g.strip_prefix(NAMESPACE_GROUP_PREFIX)
            .is_some_and(is_dns_label)
        || is_dns_subdomain(g)
}
