//! The Kubernetes resources the adapter watches, and [`RawObject`], the tolerant object type it
//! watches them as.

use std::borrow::Cow;
use std::fmt;

use kube::api::ApiResource;
use kube::core::{DynamicResourceScope, ObjectMeta};
use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};
use serde_json::Value;

/// Every kind of Kubernetes object the adapter watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum WatchedKind {
    /// v1 Namespace → Seam namespace.
    Namespace,
    /// v1 Pod → the labels of the pod's endpoint.
    Pod,
    /// networking.k8s.io/v1 NetworkPolicy → policy object.
    NetworkPolicy,
    /// policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy → policy object.
    AdminNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha1 BaselineAdminNetworkPolicy → policy object.
    BaselineAdminNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy → policy object.
    ClusterNetworkPolicy,
    /// seam.dev/v1alpha1 EndpointGroup (CRD) → policy object.
    EndpointGroup,
    /// seam.dev/v1alpha1 Contract (CRD) → policy object.
    Contract,
    /// seam.dev/v1alpha1 Tenant (CRD) → Seam tenant.
    Tenant,
    /// v1 Service → in-memory view only.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice → in-memory view only.
    EndpointSlice,
    /// v1 Node → in-memory view only.
    Node,
}

impl WatchedKind {
    /// Every kind, in the order their watchers are started.
    pub const ALL: [WatchedKind; 12] = [
        WatchedKind::Tenant,
        WatchedKind::Namespace,
        WatchedKind::Pod,
        WatchedKind::NetworkPolicy,
        WatchedKind::AdminNetworkPolicy,
        WatchedKind::BaselineAdminNetworkPolicy,
        WatchedKind::ClusterNetworkPolicy,
        WatchedKind::EndpointGroup,
        WatchedKind::Contract,
        WatchedKind::Service,
        WatchedKind::EndpointSlice,
        WatchedKind::Node,
    ];

    /// `(group, version, kind, plural)`.
    fn gvkp(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            WatchedKind::Namespace => ("", "v1", "Namespace", "namespaces"),
            WatchedKind::Pod => ("", "v1", "Pod", "pods"),
            WatchedKind::NetworkPolicy => (
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
            ),
            WatchedKind::AdminNetworkPolicy => (
                "policy.networking.k8s.io",
                "v1alpha1",
                "AdminNetworkPolicy",
                "adminnetworkpolicies",
            ),
            WatchedKind::BaselineAdminNetworkPolicy => (
                "policy.networking.k8s.io",
                "v1alpha1",
                "BaselineAdminNetworkPolicy",
                "baselineadminnetworkpolicies",
            ),
            WatchedKind::ClusterNetworkPolicy => (
                "policy.networking.k8s.io",
                "v1alpha2",
                "ClusterNetworkPolicy",
                "clusternetworkpolicies",
            ),
            WatchedKind::EndpointGroup => {
                (SEAM_GROUP, "v1alpha1", "EndpointGroup", "endpointgroups")
            }
            WatchedKind::Contract => (SEAM_GROUP, "v1alpha1", "Contract", "contracts"),
            WatchedKind::Tenant => (SEAM_GROUP, "v1alpha1", "Tenant", "tenants"),
            WatchedKind::Service => ("", "v1", "Service", "services"),
            WatchedKind::EndpointSlice => {
                ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices")
            }
            WatchedKind::Node => ("", "v1", "Node", "nodes"),
        }
    }

    /// The `kind` string.
    pub fn kind(self) -> &'static str {
        self.gvkp().2
    }

    /// The `apiVersion` string (`v1`, `networking.k8s.io/v1`, …).
    pub fn api_version(self) -> String {
        let (group, version, _, _) = self.gvkp();
        if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        }
    }

    /// The resource's description for kube's dynamic API.
    pub fn api_resource(self) -> ApiResource {
        let (group, version, kind, plural) = self.gvkp();
        ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: self.api_version(),
            kind: kind.to_string(),
            plural: plural.to_string(),
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            WatchedKind::Pod
                | WatchedKind::NetworkPolicy
                | WatchedKind::Service
                | WatchedKind::EndpointSlice
        )
    }
}

impl fmt::Display for WatchedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// The API group of Seam's own CRDs: the group of the `apiVersion` seam-policy parses for
/// EndpointGroup and Contract, and the CLI for Tenant (`seam.dev/v1alpha1`).
pub const SEAM_GROUP: &str = "seam.dev";

/// An object as the API server sent it, plus whatever of its metadata could be read.
///
/// The adapter watches every kind as `RawObject` rather than as a typed struct, because with a
/// typed struct one malformed object fails the decoding of a whole list, so the watcher would
/// re-list forever and nothing else of that kind would flow. Decoding into Seam's types happens
/// later, one object at a time, where a bad object can be logged by its key and skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct RawObject {
    /// Metadata, read leniently: at least name, namespace and resourceVersion when they are
    /// strings, even when the rest of `metadata` is malformed.
    pub metadata: ObjectMeta,
    /// The whole object as received.
    pub value: Value,
}

impl RawObject {
    /// Reads `value` leniently (never fails).
    pub fn from_value(value: Value) -> Self {
        let metadata = lenient_meta(value.get("metadata"));
        RawObject { metadata, value }
    }

    /// `namespace/name` or `name`: the key the object is logged and indexed by.
    pub fn key(&self) -> String {
        let name = self.metadata.name.as_deref().unwrap_or("<unnamed>");
        match &self.metadata.namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        }
    }
}

fn lenient_meta(meta: Option<&Value>) -> ObjectMeta {
    let Some(meta) = meta else {
        return ObjectMeta::default();
    };
    if let Ok(parsed) = serde_json::from_value::<ObjectMeta>(meta.clone()) {
        return parsed;
    }
    let text = |field: &str| meta.get(field).and_then(Value::as_str).map(str::to_string);
    ObjectMeta {
        name: text("name"),
        namespace: text("namespace"),
        resource_version: text("resourceVersion"),
        uid: text("uid"),
        ..ObjectMeta::default()
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(RawObject::from_value)
    }
}

impl Serialize for RawObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl kube::Resource for RawObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
