//! `POST /v1/apply`: several objects written in one store transaction, all or none (what
//! `seam apply -f` sends).

use serde::{Deserialize, Serialize};

use crate::objects::{Namespace, Tenant};

/// The request of `POST /v1/apply`: the objects in the order of the manifest's documents. The
/// controller checks each as its single `PUT` does, reports every problem with the object's
/// 1-based document number, and writes all of them in one transaction or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Apply {
    /// The objects, at most [`crate::bounds::MAX_APPLY_OBJECTS`].
    pub objects: Vec<ApplyObject>,
}

/// One object of an apply, tagged with its kind (`{"namespace": {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ApplyObject {
    /// A namespace, as `PUT /v1/namespaces/{name}` takes it.
    Namespace(Namespace),
    /// A tenant, as `PUT /v1/tenants/{name}` takes it.
    Tenant(Tenant),
    /// A policy object in its wire form (`apiVersion`, `kind`, `metadata`, `spec`), as
    /// `PUT /v1/policies/{kind}/{name}` takes it; the controller types it with seam-policy.
    Policy(serde_json::Value),
    /// A Service, as `PUT /v1/services/{namespace}/{name}` takes it.
    Service(crate::Service),
    /// An EndpointSlice, as `PUT /v1/endpointslices/{namespace}/{name}` takes it.
    EndpointSlice(crate::EndpointSlice),
    /// An address pool, as `PUT /v1/addresspools/{name}` takes it.
    AddressPool(crate::AddressPool),
}

impl ApplyObject {
    /// `Kind namespace/name`, for messages (`Namespace blue`, `NetworkPolicy x/db`).
    pub fn describe(&self) -> String {
        match self {
            ApplyObject::Namespace(n) => format!("Namespace {}", n.name),
            ApplyObject::Tenant(t) => format!("Tenant {}", t.name),
            ApplyObject::Service(s) => format!("Service {}/{}", s.namespace, s.name),
            ApplyObject::EndpointSlice(s) => format!("EndpointSlice {}/{}", s.namespace, s.name),
            ApplyObject::AddressPool(p) => format!("AddressPool {}", p.name),
            ApplyObject::Policy(v) => {
                let text = |p: &str| v.pointer(p).and_then(serde_json::Value::as_str);
                let kind = text("/kind").unwrap_or("policy");
                let name = text("/metadata/name").unwrap_or("");
                match text("/metadata/namespace") {
                    Some(ns) => format!("{kind} {ns}/{name}"),
                    None => format!("{kind} {name}"),
                }
            }
        }
    }
}

/// The answer of `POST /v1/apply`: every object as stored, in the request's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// The stored objects.
    pub objects: Vec<ApplyObject>,
    /// The store revision of the apply's transaction: the new generation of every object it
    /// wrote (see [`crate::realization`]; `seam apply --wait` waits for it). Absent from an
    /// older controller's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_tagged_with_their_kind_and_unknown_fields_refused() {
        let text = r#"{"objects":[{"namespace":{"name":"blue"}},{"tenant":{"name":"t1"}},
            {"policy":{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
             "metadata":{"name":"db","namespace":"blue"},"spec":{}}}]}"#;
        let apply: Apply = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = apply.objects.iter().map(ApplyObject::describe).collect();
        assert_eq!(
            names,
            ["Namespace blue", "Tenant t1", "NetworkPolicy blue/db"]
        );
        assert!(serde_json::from_str::<Apply>(r#"{"objects":[],"dryRun":true}"#).is_err());
        assert!(serde_json::from_str::<Apply>(r#"{"objects":[{"pod":{}}]}"#).is_err());
    }
}
