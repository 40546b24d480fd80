//! Pure translation of Kubernetes objects into what the controller API takes. No I/O: every
//! function maps one [`RawObject`] and reports why it cannot, so the caller can log the object's
//! key and skip it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1 as core;
use kube::core::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Result, TranslateError};
use crate::resource::{RawObject, WatchedKind};

/// The annotation of a Namespace that names its Seam tenant (the same one `seam apply` reads).
pub const TENANT_ANNOTATION: &str = "seam.dev/tenant";

/// The endpoint label that records a pod's Deployment. `seam_model::Endpoint` has no owner
/// field, so the owner travels as a label, where EndpointGroup and NetworkPolicy selectors can
/// use it too.
pub const DEPLOYMENT_LABEL: &str = "seam.dev/deployment";

/// The annotation the adapter puts on every policy object it forwards, so that after a restart
/// it can tell its own objects (and delete those whose Kubernetes object went away meanwhile)
/// from objects applied with `seam apply`.
pub const MANAGED_BY_ANNOTATION: &str = seam_model::MANAGED_BY_ANNOTATION;

/// The value of [`MANAGED_BY_ANNOTATION`].
pub const MANAGED_BY: &str = "seam-k8s";

/// Annotations not forwarded: kubectl's copy of the whole object would double its size in the
/// controller's store for nothing (the engine does not read annotations).
const DROPPED_ANNOTATIONS: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// Label Kubernetes puts on pods of a ReplicaSet made by a Deployment: the suffix of the
/// ReplicaSet's name.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// What a Kubernetes Namespace becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSpec {
    /// The Seam namespace: name, labels (with `kubernetes.io/metadata.name`) and the tenant from
    /// [`TENANT_ANNOTATION`].
    pub namespace: seam_model::Namespace,
    /// Whether [`TENANT_ANNOTATION`] was there. Without it the adapter keeps the tenant the
    /// controller already has, so `seam tenant join|isolate|make-global` on a namespace without
    /// the annotation is not undone by the next label change.
    pub tenant_from_annotation: bool,
}

/// A v1 Namespace → [`NamespaceSpec`].
pub fn namespace(obj: &RawObject) -> Result<NamespaceSpec> {
    let kind = WatchedKind::Namespace;
    let ns: core::Namespace = decode(kind, obj)?;
    let name = required_name(kind, obj, ns.metadata.name.as_deref())?;
    let tenant = ns
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TENANT_ANNOTATION))
        .cloned();
    let mut namespace = seam_model::Namespace {
        name: name.to_string(),
        labels: ns.metadata.labels.unwrap_or_default(),
        tenant: tenant.clone(),
    };
    namespace.set_name_label();
    namespace
        .validate()
        .map_err(|source| TranslateError::Invalid {
            kind,
            key: obj.key(),
            source,
        })?;
    Ok(NamespaceSpec {
        namespace,
        tenant_from_annotation: tenant.is_some(),
    })
}

/// What a Pod means for its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodMapping {
    /// The pod's endpoint should carry these labels and conditions.
    Labels(PodLabels),
    /// The pod has no endpoint of Seam's, or should no longer be touched (the reason says
    /// which): host network, finished.
    Untouched(&'static str),
}

/// The labels and conditions a pod's endpoint should carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLabels {
    /// The endpoint's name as the agent publishes it: `<namespace>/<pod>` (from the CNI args
    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME`). Secondary interfaces are `<namespace>/<pod>/<ifname>`.
    pub endpoint: String,
    /// The pod's labels plus [`DEPLOYMENT_LABEL`] when a Deployment owns the pod.
    pub labels: BTreeMap<String, String>,
    /// The pod's IPv4 address when the kubelet reported it: an endpoint with another address is
    /// a previous pod of the same name and is left alone.
    pub pod_ip: Option<Ipv4Addr>,
    /// The pod's named container ports (of its containers and sidecars), sorted: a Service's
    /// named `targetPort` and a NetworkPolicy's named port are resolved against them. Empty: the
    /// endpoint's ports are left as they are (a pod's ports never change, and a CNI config may
    /// give some).
    pub ports: Vec<seam_model::ContainerPort>,
    /// Whether the pod takes Service traffic ([`pod_conditions`]); `None` when it is ready,
    /// serving and not terminating, which is what an endpoint without conditions means.
    pub conditions: Option<seam_model::EndpointConditions>,
}

impl PodLabels {
    /// Whether `endpoint` lacks these labels, these conditions or (when the pod names any)
    /// these ports.
    pub fn differs(&self, endpoint: &seam_model::Endpoint) -> bool {
        endpoint.labels != self.labels
            || endpoint.conditions != self.conditions
            || (!self.ports.is_empty() && endpoint.ports != self.ports)
    }
}

/// A v1 Pod → [`PodMapping`].
pub fn pod(obj: &RawObject) -> Result<PodMapping> {
    let kind = WatchedKind::Pod;
    let pod: core::Pod = decode(kind, obj)?;
    let name = required_name(kind, obj, pod.metadata.name.as_deref())?;
    let namespace =
        pod.metadata
            .namespace
            .as_deref()
            .ok_or_else(|| TranslateError::MissingMeta {
                kind,
                key: obj.key(),
                field: "namespace",
            })?;
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Ok(PodMapping::Untouched("host network"));
    }
    // A terminating pod is still mapped: it runs through its grace period and its endpoint must
    // say so (terminating, serving while still Ready). The write is a conditional
    // read-modify-write of an endpoint the controller still has, so an endpoint the agent has
    // deleted meanwhile is not re-created.
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Ok(PodMapping::Untouched("finished"));
    }
    let mut labels = pod.metadata.labels.clone().unwrap_or_default();
    if let Some(deployment) = deployment_of(&pod) {
        labels.insert(DEPLOYMENT_LABEL.to_string(), deployment);
    }
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let ports = named_ports(&pod);
    Ok(PodMapping::Labels(PodLabels {
        endpoint: format!("{namespace}/{name}"),
        labels,
        pod_ip,
        ports,
        conditions: pod_conditions(&pod),
    }))
}

/// A pod's endpoint conditions as Kubernetes' EndpointSlice controller sets them: `serving` is
/// the pod's `Ready` condition (true only when its status is `"True"`: a pod without one, not
/// yet started, is not ready), `terminating` is its `deletionTimestamp` being set (still running
/// through its grace period), and `ready` is serving and not terminating. `publishNotReadyAddresses`
/// is the Service's, applied where backends are chosen ([`seam_model::usable`]). `None` for the
/// common case, ready and serving and not terminating: what an endpoint without conditions
/// already means, so ready pods' endpoints are never rewritten for it.
pub fn pod_conditions(pod: &core::Pod) -> Option<seam_model::EndpointConditions> {
    let serving = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = serving && !terminating;
    (!ready).then_some(seam_model::EndpointConditions {
        ready: Some(ready),
        serving: Some(serving),
        terminating: Some(terminating),
    })
}

/// The named ports of a pod's containers and sidecars (init containers with `restartPolicy:
/// Always`), as Kubernetes resolves a Service's named `targetPort`. A port Seam cannot hold (a
/// name that is no IANA service name, a number out of range, an unknown protocol) is left out:
/// the API server validates them, so it would be a newer Kubernetes' feature.
fn named_ports(pod: &core::Pod) -> Vec<seam_model::ContainerPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let mut ports: Vec<seam_model::ContainerPort> = spec
        .containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p
                .name
                .as_deref()
                .filter(|n| seam_model::is_valid_port_name(n))?;
            let port = u16::try_from(p.container_port).ok().filter(|p| *p > 0)?;
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => seam_model::PortProtocol::Tcp,
                "UDP" => seam_model::PortProtocol::Udp,
                "SCTP" => seam_model::PortProtocol::Sctp,
                _ => return None,
            };
            Some(seam_model::ContainerPort {
                name: name.to_string(),
                port,
                protocol,
            })
        })
        .collect();
    ports.sort_by(|a, b| (&a.name, a.protocol, a.port).cmp(&(&b.name, b.protocol, b.port)));
    ports.dedup();
    ports
}

/// The Deployment that owns `pod`: its controlling owner is a ReplicaSet whose name is
/// `<deployment>-<pod-template-hash>`. A ReplicaSet made by hand has no such label and owns no
/// Deployment.
fn deployment_of(pod: &core::Pod) -> Option<String> {
    let hash = pod.metadata.labels.as_ref()?.get(POD_TEMPLATE_HASH)?;
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "ReplicaSet")?;
    let deployment = owner.name.strip_suffix(&format!("-{hash}"))?;
    (!deployment.is_empty()).then(|| deployment.to_string())
}

/// A policy object ready for `PUT /v1/policies/{kind}/{namespace}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// The object's kind (`NetworkPolicy`, `AdminNetworkPolicy`, …).
    pub kind: &'static str,
    /// Its namespace, for NetworkPolicy only.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The object as forwarded.
    pub object: Value,
}

/// A NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy,
/// EndpointGroup or Contract → the object seam-policy parses. seam-policy reads the same shapes,
/// so the object is forwarded nearly as-is: `apiVersion` and `kind` are set from the resource
/// watched (list items of built-in kinds arrive without them), `metadata` keeps only name,
/// namespace (namespaced kinds only), labels and annotations (the engine accepts no other
/// metadata field), and `status` is dropped. Everything else goes through unchanged, so the
/// controller's validation names any field it does not accept.
pub fn policy(kind: WatchedKind, obj: &RawObject) -> Result<PolicySpec> {
    let Value::Object(fields) = &obj.value else {
        return Err(decode_error(kind, obj, "expected an object"));
    };
    let metadata = strict_meta(kind, obj)?;
    let name = required_name(kind, obj, metadata.name.as_deref())?.to_string();
    let namespace = if kind.is_namespaced() {
        Some(
            metadata
                .namespace
                .clone()
                .ok_or_else(|| TranslateError::MissingMeta {
                    kind,
                    key: obj.key(),
                    field: "namespace",
                })?,
        )
    } else {
        None
    };
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(name.clone()));
    if let Some(ns) = &namespace {
        meta.insert("namespace".into(), Value::String(ns.clone()));
    }
    if let Some(labels) = metadata.labels.as_ref().filter(|l| !l.is_empty()) {
        meta.insert("labels".into(), string_map(labels));
    }
    let mut annotations: BTreeMap<String, String> = metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !DROPPED_ANNOTATIONS.contains(&k.as_str()))
        .collect();
    annotations.insert(MANAGED_BY_ANNOTATION.to_string(), MANAGED_BY.to_string());
    meta.insert("annotations".into(), string_map(&annotations));

    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(kind.api_version()));
    object.insert("kind".into(), Value::String(kind.kind().to_string()));
    object.insert("metadata".into(), Value::Object(meta));
    for (field, value) in fields {
        if !matches!(
            field.as_str(),
            "apiVersion" | "kind" | "metadata" | "status"
        ) {
            object.insert(field.clone(), value.clone());
        }
    }
    Ok(PolicySpec {
        kind: kind.kind(),
        namespace,
        name,
        object: Value::Object(object),
    })
}

/// Whether a policy object read back from the controller was forwarded by this adapter.
pub fn is_managed(object: &Value) -> bool {
    object
        .pointer(&format!(
            "/metadata/annotations/{}",
            MANAGED_BY_ANNOTATION.replace('~', "~0").replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some(MANAGED_BY)
}

/// `spec` of the seam.dev/v1alpha1 Tenant CRD (the shape `seam apply` reads).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantSpec {
    #[serde(default)]
    isolation: seam_model::IsolationMode,
    #[serde(default)]
    global: bool,
}

/// A seam.dev/v1alpha1 Tenant (`spec: {isolation: flat|multitenant|policy, global: bool}`) →
/// Seam tenant.
pub fn tenant(obj: &RawObject) -> Result<seam_model::Tenant> {
    let kind = WatchedKind::Tenant;
    let metadata = strict_meta(kind, obj)?;
    let name = required_name(kind, obj, metadata.name.as_deref())?;
    let spec: TenantSpec = match obj.value.get("spec") {
        None | Some(Value::Null) => TenantSpec::default(),
        Some(spec) => {
            serde_json::from_value(spec.clone()).map_err(|source| TranslateError::Decode {
                kind,
                key: obj.key(),
                source,
            })?
        }
    };
    let tenant = seam_model::Tenant {
        name: name.to_string(),
        isolation: spec.isolation,
        global: spec.global,
    };
    tenant
        .validate()
        .map_err(|source| TranslateError::Invalid {
            kind,
            key: obj.key(),
            source,
        })?;
    Ok(tenant)
}

/// Decodes `obj` as the typed Kubernetes object of `kind` (Services, EndpointSlices and Nodes
/// for the view, Namespaces and Pods for their mapping).
pub fn decode<T: DeserializeOwned>(kind: WatchedKind, obj: &RawObject) -> Result<T> {
    serde_json::from_value(obj.value.clone()).map_err(|source| TranslateError::Decode {
        kind,
        key: obj.key(),
        source,
    })
}

/// `metadata` decoded strictly: a malformed one makes the object malformed, rather than losing
/// its labels or annotations without a word.
fn strict_meta(kind: WatchedKind, obj: &RawObject) -> Result<ObjectMeta> {
    let Some(meta) = obj.value.get("metadata") else {
        return Ok(ObjectMeta::default());
    };
    serde_json::from_value(meta.clone()).map_err(|source| TranslateError::Decode {
        kind,
        key: obj.key(),
        source,
    })
}

fn required_name<'a>(kind: WatchedKind, obj: &RawObject, name: Option<&'a str>) -> Result<&'a str> {
    name.filter(|n| !n.is_empty())
        .ok_or_else(|| TranslateError::MissingMeta {
            kind,
            key: obj.key(),
            field: "name",
        })
}

fn decode_error(kind: WatchedKind, obj: &RawObject, message: &str) -> TranslateError {
    TranslateError::Decode {
        kind,
        key: obj.key(),
        source: <serde_json::Error as serde::de::Error>::custom(message),
    }
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
