//! Seam's `EndpointGroup` (seam.dev/v1alpha1): a set of endpoints of any kind chosen by selectors, plus the
//! implicit groups every cluster has.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Problems, ValidationError};
use crate::inventory::EndpointKind;
use crate::meta::{is_dns_label, ObjectMeta};
use crate::selector::LabelSelector;

/// Implicit group: every endpoint in the inventory that is not `external`.
pub const CLUSTER_GROUP: &str = "cluster";

/// Prefix of the implicit per-namespace groups: `namespace/<name>` holds every endpoint of that namespace.
pub const NAMESPACE_GROUP_PREFIX: &str = "namespace/";

/// Prefix of the implicit per-Deployment groups (ACI's mapping of a Deployment to an EPG):
/// `deployment/<namespace>/<name>` holds the endpoints of that namespace labelled
/// [`DEPLOYMENT_LABEL`]` = <name>`.
pub const DEPLOYMENT_GROUP_PREFIX: &str = "deployment/";

/// The label that names an endpoint's Deployment. The Kubernetes adapter (seam-k8s) sets it from the
/// Pod's owner (its ReplicaSet's name without the pod-template hash); a CNI config's `labels` or the API
/// can set it for anything else.
pub const DEPLOYMENT_LABEL: &str = "seam.dev/deployment";

/// The namespace and Deployment an implicit `deployment/<namespace>/<name>` group reference names.
pub fn deployment_group(reference: &str) -> Option<(&str, &str)> {
    let (ns, name) = reference
        .strip_prefix(DEPLOYMENT_GROUP_PREFIX)?
        .split_once('/')?;
    (is_dns_label(ns) && crate::selector::is_dns_subdomain(name)).then_some((ns, name))
}

/// Whether an endpoint of `namespace` with `labels` is a member of the Deployment group `(ns, name)`.
pub fn in_deployment(
    group: (&str, &str),
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    namespace == group.0 && labels.get(DEPLOYMENT_LABEL).map(String::as_str) == Some(group.1)
}

/// An EndpointGroup (cluster-scoped). Its members are the endpoints matched by any of its selectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointGroup {
    /// Name, referenced by Contracts.
    pub metadata: ObjectMeta,
    /// Selectors.
    pub spec: EndpointGroupSpec,
}

/// `spec` of an EndpointGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointGroupSpec {
    /// Alternatives (ORed); at least one.
    pub selectors: Vec<EndpointSelector>,
}

/// One selector: every criterion it sets must hold (ANDed); it must set at least one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSelector {
    /// Endpoint kinds; empty = any kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<EndpointKind>,
    /// Namespace names; empty = any namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Endpoints by label (a Deployment is a label selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelSelector>,
    /// Addresses: an endpoint matches when one of its addresses is inside; a selector with only `cidrs` also
    /// matches addresses that belong to no endpoint (servers outside the inventory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<IpNet>,
}

impl EndpointSelector {
    /// Whether the selector sets only `cidrs`.
    pub fn is_cidr_only(&self) -> bool {
        !self.cidrs.is_empty()
            && self.kinds.is_empty()
            && self.namespaces.is_empty()
            && self.namespace_selector.is_none()
            && self.labels.is_none()
    }
}

impl EndpointGroup {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        self.metadata.validate(&mut p, false);
        if self.metadata.name == CLUSTER_GROUP {
            p.add(
                "metadata.name",
                format!("{CLUSTER_GROUP:?} is the implicit group of the whole cluster"),
            );
        }
        if self.spec.selectors.is_empty() {
            p.add(
                "spec.selectors",
                "must hold at least one selector (a group with none would match nothing)",
            );
        }
        for (i, s) in self.spec.selectors.iter().enumerate() {
            let path = format!("spec.selectors[{i}]");
            let any = !s.kinds.is_empty()
                || !s.namespaces.is_empty()
                || s.namespace_selector.is_some()
                || s.labels.is_some()
                || !s.cidrs.is_empty();
            if !any {
                p.add(
                    path.clone(),
                    "must set at least one of kinds, namespaces, namespaceSelector, labels or cidrs (use the implicit group \"cluster\" for everything)",
                );
            }
            for (j, ns) in s.namespaces.iter().enumerate() {
                if !is_dns_label(ns) {
                    p.add(
                        format!("{path}.namespaces[{j}]"),
                        format!("{ns:?} is not a valid namespace name"),
                    );
                }
            }
            if let Some(sel) = &s.namespace_selector {
                sel.validate(&mut p, &format!("{path}.namespaceSelector"));
            }
            if let Some(sel) = &s.labels {
                sel.validate(&mut p, &format!("{path}.labels"));
            }
            for (j, c) in s.cidrs.iter().enumerate() {
                if !c.addr().is_ipv4() {
                    p.add(
                        format!("{path}.cidrs[{j}]"),
                        format!("{c}: only IPv4 is supported"),
                    );
                }
            }
        }
        p.finish("EndpointGroup", self.metadata.display_name())
    }
}
