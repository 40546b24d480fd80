//! What every policy object shares: its metadata, the protocols it can name, and name checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::selector::{check_label_key, check_label_value, is_dns_subdomain, Labels};

/// The subset of Kubernetes `ObjectMeta` the engine accepts. Other metadata fields are rejected rather than kept,
/// so an object read back is the object that is enforced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Object name (an RFC 1123 subdomain).
    pub name: String,
    /// Namespace, for namespaced kinds (NetworkPolicy); absent for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels of the object itself (not read by the engine).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Annotations (not read by the engine).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// Metadata with just a name (cluster-scoped object).
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Metadata with a namespace and a name.
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Self::default()
        }
    }

    /// `namespace/name` or `name`, for messages.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    pub(crate) fn validate(&self, p: &mut Problems, namespaced: bool) {
        if !is_dns_subdomain(&self.name) {
            p.add(
                "metadata.name",
                format!("{:?} is not a valid object name", self.name),
            );
        }
        match (&self.namespace, namespaced) {
            (Some(ns), true) => {
                if !is_dns_label(ns) {
                    p.add(
                        "metadata.namespace",
                        format!("{ns:?} is not a valid namespace name"),
                    );
                }
            }
            (None, true) => p.add("metadata.namespace", "is required for this kind"),
            (Some(_), false) => p.add(
                "metadata.namespace",
                "must be absent: this kind is cluster-scoped",
            ),
            (None, false) => {}
        }
        for (k, v) in &self.labels {
            check_label_key(p, "metadata.labels", k);
            check_label_value(p, &format!("metadata.labels.{k}"), v);
        }
    }
}

/// RFC 1123 label: at most 63 lower-case alphanumerics or `-`, starting and ending with an alphanumeric.
pub(crate) fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// An IP protocol a policy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP (the Kubernetes default).
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
    /// ICMP (Seam Contracts only; Kubernetes policies cannot name it).
    #[serde(rename = "ICMP")]
    Icmp,
}

impl Protocol {
    /// The wire name (`TCP`, `UDP`, `SCTP`, `ICMP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
        }
    }

    /// Whether the protocol has ports (everything but ICMP).
    pub fn has_ports(self) -> bool {
        !matches!(self, Protocol::Icmp)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            "ICMP" => Ok(Protocol::Icmp),
            _ => Err(format!(
                "unknown protocol {s:?} (expected TCP, UDP, SCTP or ICMP)"
            )),
        }
    }
}

/// Checks a port number given as a signed integer (so that out-of-range values get a validation message with the
/// field path instead of a decode error).
pub(crate) fn check_port(p: &mut Problems, path: &str, port: i64) {
    if !(1..=65535).contains(&port) {
        p.add(path, format!("{port} is not a port number (1-65535)"));
    }
}

/// The port as `u16` when valid (validation has reported it otherwise).
pub(crate) fn port_u16(port: i64) -> Option<u16> {
    u16::try_from(port).ok()
}

/// Kubernetes `IANA_SVC_NAME`: 1-15 lower-case alphanumerics or `-`, at least one letter, no leading, trailing or
/// double `-`.
pub(crate) fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}
