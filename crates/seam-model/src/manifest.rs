//! Manifests for `seam apply`: one or more YAML documents (`---`) or JSON (an object, a list,
//! or a Kubernetes `List`), each a policy object seam-policy supports, a `v1 Namespace`, a
//! `seam.dev/v1alpha1 Tenant`, a `v1 Service`, a `discovery.k8s.io/v1 EndpointSlice` or a
//! `seam.dev/v1alpha1 AddressPool`.
//!
//! Every document is decoded and validated before anything is returned, and every problem of
//! every document is reported, so that a manifest is applied whole or not at all.
//!
//! Services and EndpointSlices are read exactly as Kubernetes writes them, server-set metadata
//! and `status` included (accepted and dropped), so that `kubectl get -o yaml` output applies and
//! the Kubernetes adapter forwards the API server's objects through [`parse_value`]; what Seam
//! does not implement is refused with its path (see the `services` submodule).
//!
//! Pure: this reads text; `seam apply` reads the file and sends the objects.

use std::collections::BTreeMap;
use std::fmt;

use seam_policy::{ParseError, PolicyKind, PolicyObject};
use serde::Deserialize;
use serde_json::Value;

use crate::bounds::{encoded_len, MAX_APPLY_OBJECTS, MAX_BODY_BYTES};
use crate::{Apply, ApplyObject};

mod services;

pub use services::DEFAULT_NAMESPACE;

/// The annotation of a `v1 Namespace` that names its Seam tenant.
pub const TENANT_ANNOTATION: &str = "seam.dev/tenant";

/// One object of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// A policy object (NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy,
    /// EndpointGroup, Contract).
    Policy(Box<PolicyObject>),
    /// A namespace (`apiVersion: v1`, `kind: Namespace`).
    Namespace(crate::Namespace),
    /// A tenant (`apiVersion: seam.dev/v1alpha1`, `kind: Tenant`,
    /// `spec: {isolation: flat|multitenant|policy, global: bool}`).
    Tenant(crate::Tenant),
    /// A Service (`apiVersion: v1`, `kind: Service`), as Kubernetes writes it.
    Service(crate::Service),
    /// An EndpointSlice (`apiVersion: discovery.k8s.io/v1`, `kind: EndpointSlice`).
    EndpointSlice(crate::EndpointSlice),
    /// An address pool (`apiVersion: seam.dev/v1alpha1`, `kind: AddressPool`,
    /// `spec: {addresses: [cidr…], autoAssign: bool}`).
    AddressPool(crate::AddressPool),
}

impl Manifest {
    /// The object as `POST /v1/apply` takes it.
    pub fn to_apply(&self) -> ApplyObject {
        match self {
            Manifest::Policy(p) => ApplyObject::Policy(p.to_value()),
            Manifest::Namespace(n) => ApplyObject::Namespace(n.clone()),
            Manifest::Tenant(t) => ApplyObject::Tenant(t.clone()),
            Manifest::Service(s) => ApplyObject::Service(s.clone()),
            Manifest::EndpointSlice(s) => ApplyObject::EndpointSlice(s.clone()),
            Manifest::AddressPool(p) => ApplyObject::AddressPool(p.clone()),
        }
    }

    /// `Kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Manifest::Policy(p) => format!("{} {}", p.kind(), p.metadata().display_name()),
            Manifest::Namespace(n) => format!("Namespace {}", n.name),
            Manifest::Tenant(t) => format!("Tenant {}", t.name),
            Manifest::Service(s) => format!("Service {}/{}", s.namespace, s.name),
            Manifest::EndpointSlice(s) => format!("EndpointSlice {}/{}", s.namespace, s.name),
            Manifest::AddressPool(p) => format!("AddressPool {}", p.name),
        }
    }
}

/// One problem in one document of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    /// 1-based index of the document in the input (YAML `---` documents, JSON list items and
    /// `List` items are counted in order).
    pub document: usize,
    /// The object, when known (`NetworkPolicy x/db`).
    pub object: Option<String>,
    /// Field path of the problem (`spec.ingress[0].ports[1].endPort`), empty for the document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a manifest cannot be applied. Nothing is applied when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The text is not YAML or JSON.
    #[error("not valid {format}: {message}")]
    Syntax {
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The parser's message, with its location.
        message: String,
    },
    /// The manifest holds no object.
    #[error("no object in the input")]
    Empty,
    /// The manifest holds more objects than one apply may write (one store transaction).
    #[error("{count} objects, over the bound of {max} per apply (MAX_APPLY_OBJECTS: one store transaction); split the manifest, nothing applied")]
    TooMany {
        /// How many objects the manifest holds.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// The objects together are larger than the controller reads in one request.
    #[error("the objects encode to {bytes} bytes, over the bound of {max} bytes per request (MAX_BODY_BYTES); split the manifest, nothing applied")]
    TooLarge {
        /// The size of the apply request.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// Documents are invalid; every problem of every document is listed.
    #[error("{} problem(s), nothing applied:\n  {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<ManifestProblem>),
}

/// `metadata` of a `v1 Namespace`: only what Seam keeps; anything else is an error.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NamespaceMeta {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A `v1 Namespace` document (without `apiVersion` and `kind`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceDoc {
    metadata: NamespaceMeta,
}

/// `metadata` of a Tenant: just its name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantMeta {
    name: String,
}

/// `spec` of a Tenant.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantSpec {
    #[serde(default)]
    isolation: crate::IsolationMode,
    #[serde(default)]
    global: bool,
}

/// A `seam.dev/v1alpha1 Tenant` document (without `apiVersion` and `kind`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantDoc {
    metadata: TenantMeta,
    #[serde(default)]
    spec: TenantSpec,
}

/// Parses `text` (JSON when it starts with `{` or `[`, else YAML) into objects, validating each.
/// On any problem, returns every problem of every document and no object.
pub fn parse_manifests(text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let trimmed = text.trim_start();
    let docs: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text).map_err(|e| ManifestError::Syntax {
            format: "JSON",
            message: e.to_string(),
        })?;
        vec![v]
    } else {
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Syntax {
            format: "YAML",
            message: e.to_string(),
        })?
    };
    let docs: Vec<Value> = docs.into_iter().flat_map(seam_policy::split_list).collect();
    if docs.is_empty() {
        return Err(ManifestError::Empty);
    }
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        match decode(i + 1, doc) {
            Ok(o) => objects.push(o),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(ManifestError::Invalid(problems))
    }
}

/// Decodes and validates one object (one document as [`parse_manifests`] decodes each): what
/// the Kubernetes adapter does with the API server's objects. Problems name document 1.
pub fn parse_value(doc: Value) -> Result<Manifest, ManifestError> {
    decode(1, doc).map_err(ManifestError::Invalid)
}

/// The request of `POST /v1/apply` for `objects`, checked against the bounds the controller
/// applies to it (object count, body size) so that an oversized manifest is refused here, with
/// the bound named, before anything is sent.
pub fn apply_request(objects: &[Manifest]) -> Result<Apply, ManifestError> {
    if objects.len() > MAX_APPLY_OBJECTS {
        return Err(ManifestError::TooMany {
            count: objects.len(),
            max: MAX_APPLY_OBJECTS,
        });
    }
    let request = Apply {
        objects: objects.iter().map(Manifest::to_apply).collect(),
    };
    let bytes = encoded_len(&request);
    if bytes > MAX_BODY_BYTES {
        return Err(ManifestError::TooLarge {
            bytes,
            max: MAX_BODY_BYTES,
        });
    }
    Ok(request)
}

fn problem(
    document: usize,
    object: Option<String>,
    path: &str,
    message: String,
) -> ManifestProblem {
    ManifestProblem {
        document,
        object,
        path: path.to_string(),
        message,
    }
}

/// A short name of what a document claims to be, for messages.
fn claimed(doc: &Value) -> Option<String> {
    let kind = doc.get("kind")?.as_str()?;
    let meta = doc.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str)?;
    Some(
        match meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
        {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        },
    )
}

fn decode(document: usize, mut doc: Value) -> Result<Manifest, Vec<ManifestProblem>> {
    let object = claimed(&doc);
    let text = |field: &str| doc.get(field).and_then(Value::as_str).map(str::to_string);
    let seam = Some(crate::API_VERSION);
    match (text("apiVersion").as_deref(), text("kind").as_deref()) {
        (Some("v1"), Some("Namespace")) => return decode_namespace(document, object, doc),
        (v, Some("Tenant")) if v == seam => return decode_tenant(document, object, doc),
        (Some(crate::SERVICE_API_VERSION), Some("Service")) => {
            strip_header(&mut doc);
            return services::decode_service(document, object, doc);
        }
        (Some(crate::ENDPOINT_SLICE_API_VERSION), Some("EndpointSlice")) => {
            strip_header(&mut doc);
            return services::decode_endpoint_slice(document, object, doc);
        }
        (v, Some("AddressPool")) if v == seam => {
            strip_header(&mut doc);
            return services::decode_address_pool(document, object, doc);
        }
        _ => {}
    }
    // The controller's own admission (validation and size bounds), so a refusal is known here.
    seam_policy::admit(doc)
        .map(|p| Manifest::Policy(Box::new(p)))
        .map_err(|e| parse_problems(document, object, e))
}

fn decode_namespace(
    document: usize,
    object: Option<String>,
    mut doc: Value,
) -> Result<Manifest, Vec<ManifestProblem>> {
    if let Value::Object(map) = &mut doc {
        map.remove("apiVersion");
        map.remove("kind");
    }
    let parsed: NamespaceDoc = decode_with_path(doc)
        .map_err(|(path, message)| vec![problem(document, object.clone(), &path, message)])?;
    let meta = parsed.metadata;
    let mut problems = Vec::new();
    let mut tenant = None;
    for (k, v) in meta.annotations {
        if k == TENANT_ANNOTATION {
            tenant = Some(v);
        } else {
            problems.push(problem(
                document,
                object.clone(),
                &format!("metadata.annotations.{k}"),
                format!("unsupported annotation (Seam reads only {TENANT_ANNOTATION})"),
            ));
        }
    }
    let mut ns = crate::Namespace {
        name: meta.name,
        labels: meta.labels,
        tenant,
    };
    ns.set_name_label();
    if let Err(e) = ns.validate() {
        for f in e.errors {
            let path = match f.path.as_str() {
                "name" => "metadata.name".to_string(),
                "tenant" => format!("metadata.annotations.{TENANT_ANNOTATION}"),
                other => format!("metadata.{other}"),
            };
            problems.push(problem(document, object.clone(), &path, f.message));
        }
    }
    if problems.is_empty() {
        Ok(Manifest::Namespace(ns))
    } else {
        Err(problems)
    }
}

fn decode_tenant(
    document: usize,
    object: Option<String>,
    mut doc: Value,
) -> Result<Manifest, Vec<ManifestProblem>> {
    if let Value::Object(map) = &mut doc {
        map.remove("apiVersion");
        map.remove("kind");
    }
    let parsed: TenantDoc = decode_with_path(doc)
        .map_err(|(path, message)| vec![problem(document, object.clone(), &path, message)])?;
    let tenant = crate::Tenant {
        name: parsed.metadata.name,
        isolation: parsed.spec.isolation,
        global: parsed.spec.global,
    };
    tenant.validate().map_err(|e| {
        e.errors
            .into_iter()
            .map(|f| {
                let path = match f.path.as_str() {
                    "name" => "metadata.name".to_string(),
                    other => format!("spec.{other}"),
                };
                problem(document, object.clone(), &path, f.message)
            })
            .collect::<Vec<_>>()
    })?;
    Ok(Manifest::Tenant(tenant))
}

/// Removes `apiVersion` and `kind` (already read) before the body is decoded.
fn strip_header(doc: &mut Value) {
    if let Value::Object(map) = doc {
        map.remove("apiVersion");
        map.remove("kind");
    }
}

/// Decodes `value`, returning the field path where decoding stopped and why.
fn decode_with_path<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

fn parse_problems(document: usize, object: Option<String>, e: ParseError) -> Vec<ManifestProblem> {
    match e {
        ParseError::Header { path, message, .. } => {
            vec![problem(document, object, path, message)]
        }
        ParseError::UnknownKind {
            api_version,
            kind,
            supported,
            ..
        } => vec![problem(
            document,
            object,
            "",
            format!(
                "unsupported object kind {kind:?} in apiVersion {api_version:?} (supported: {supported}, v1 Namespace, seam.dev/v1alpha1 Tenant, v1 Service, discovery.k8s.io/v1 EndpointSlice, seam.dev/v1alpha1 AddressPool)"
            ),
        )],
        ParseError::Decode { path, message, .. } => vec![problem(document, object, &path, message)],
        ParseError::Invalid { source, .. } => source
            .errors
            .into_iter()
            .map(|f| problem(document, object.clone(), &f.path, f.message))
            .collect(),
        other => vec![problem(document, object, "", other.to_string())],
    }
}

/// Every policy kind the API stores.
pub const POLICY_KINDS: [PolicyKind; 6] = PolicyKind::ALL;

/// The lower-case plural of a policy kind (`networkpolicies`), as the controller's paths take.
pub fn policy_plural(kind: PolicyKind) -> &'static str {
    kind.plural()
}

/// A policy kind named on the command line: `NetworkPolicy`, `networkpolicy`,
/// `networkpolicies` (any case), or the short forms `netpol`, `anp`, `banp`, `epg`.
pub fn policy_kind_by_name(s: &str) -> Option<PolicyKind> {
    let lower = s.to_ascii_lowercase();
    let short = match lower.as_str() {
        "netpol" | "netpols" => Some(PolicyKind::NetworkPolicy),
        "anp" | "anps" => Some(PolicyKind::AdminNetworkPolicy),
        "banp" | "banps" => Some(PolicyKind::BaselineAdminNetworkPolicy),
        "epg" | "epgs" => Some(PolicyKind::EndpointGroup),
        _ => None,
    };
    short.or_else(|| {
        POLICY_KINDS
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(&lower) || policy_plural(*k) == lower)
    })
}

/// Whether objects of `kind` live in a namespace (only NetworkPolicy).
pub fn is_namespaced(kind: PolicyKind) -> bool {
    kind == PolicyKind::NetworkPolicy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names() {
        for k in POLICY_KINDS {
            assert_eq!(policy_kind_by_name(k.as_str()), Some(k));
            assert_eq!(policy_kind_by_name(policy_plural(k)), Some(k));
        }
        assert_eq!(policy_kind_by_name("contract"), Some(PolicyKind::Contract));
        assert_eq!(policy_kind_by_name("EPG"), Some(PolicyKind::EndpointGroup));
        assert_eq!(policy_kind_by_name("pods"), None);
    }

    #[test]
    fn yaml_documents_and_namespaces() {
        let text = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: blue
  labels: {team: a}
  annotations: {seam.dev/tenant: t1}
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-client}
spec:
  selectors: [{namespaces: [blue]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: blue}
spec:
  podSelector: {}
"#;
        let objects = parse_manifests(text).unwrap();
        let names: Vec<String> = objects.iter().map(Manifest::describe).collect();
        assert_eq!(
            names,
            [
                "Namespace blue",
                "EndpointGroup epg-client",
                "NetworkPolicy blue/db"
            ]
        );
        let Manifest::Namespace(ns) = &objects[0] else {
            panic!("not a namespace")
        };
        assert_eq!(ns.tenant.as_deref(), Some("t1"));
        assert_eq!(ns.labels["kubernetes.io/metadata.name"], "blue");
    }

    #[test]
    fn tenants() {
        let text = r#"
apiVersion: seam.dev/v1alpha1
kind: Tenant
metadata: {name: t1}
spec: {isolation: multitenant, global: true}
---
apiVersion: seam.dev/v1alpha1
kind: Tenant
metadata: {name: t2}
"#;
        let objects = parse_manifests(text).unwrap();
        assert_eq!(
            objects,
            [
                Manifest::Tenant(crate::Tenant {
                    name: "t1".into(),
                    isolation: crate::IsolationMode::Multitenant,
                    global: true,
                }),
                Manifest::Tenant(crate::Tenant::named("t2")),
            ]
        );
        let bad = r#"
apiVersion: seam.dev/v1alpha1
kind: Tenant
metadata: {name: t1}
spec: {isolation: subnet}
---
apiVersion: seam.dev/v1alpha1
kind: Tenant
metadata: {name: t2}
spec: {mode: flat}
---
apiVersion: seam.dev/v1alpha1
kind: Tenant
metadata: {name: Bad_Name}
"#;
        let Err(ManifestError::Invalid(problems)) = parse_manifests(bad) else {
            panic!("accepted")
        };
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains("spec.isolation"), "{}", lines[0]);
        assert!(lines[1].contains("mode"), "{}", lines[1]);
        assert!(lines[2].contains("metadata.name"), "{}", lines[2]);
    }

    #[test]
    fn every_problem_of_every_document_is_listed() {
        let text = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ok, namespace: x}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http, endPort: 90}, {port: 99, endPort: 10}]
---
apiVersion: v1
kind: Pod
metadata: {name: p}
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: c}
spec: {consumers: [a], providers: [b], subjects: [], action: allow, colour: red}
"#;
        let Err(ManifestError::Invalid(problems)) = parse_manifests(text) else {
            panic!("accepted")
        };
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0]
            .starts_with("document 2 (NetworkPolicy x/bad): spec.ingress[0].ports[0].endPort"));
        assert!(lines[1]
            .starts_with("document 2 (NetworkPolicy x/bad): spec.ingress[0].ports[1].endPort"));
        assert!(
            lines[2].contains("document 3") && lines[2].contains("unsupported object kind \"Pod\"")
        );
        assert!(
            lines[3].contains("document 4") && lines[3].contains("colour"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn apply_requests_are_bounded_before_they_are_sent() {
        let tenant = |i: usize| {
            format!("apiVersion: seam.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: t{i}}}\n")
        };
        let docs = |n: usize| (0..n).map(tenant).collect::<Vec<_>>().join("---\n");
        let objects = parse_manifests(&docs(MAX_APPLY_OBJECTS)).unwrap();
        let request = apply_request(&objects).unwrap();
        assert_eq!(request.objects.len(), MAX_APPLY_OBJECTS);
        assert_eq!(
            request.objects[0],
            ApplyObject::Tenant(crate::Tenant::named("t0"))
        );
        let objects = parse_manifests(&docs(MAX_APPLY_OBJECTS + 1)).unwrap();
        let err = apply_request(&objects).unwrap_err().to_string();
        assert!(err.contains("MAX_APPLY_OBJECTS"), "{err}");

        // Five policies each within their own bound, too large together for one request.
        let blocks: Vec<String> = (0..100)
            .map(|i| {
                format!(
                    "{{ipBlock: {{cidr: 10.{i}.0.0/16, except: [{}]}}}}",
                    (0..100)
                        .map(|j| format!("10.{i}.{j}.0/24"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        let policy = |name: usize| {
            format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{name}, namespace: x}}\nspec: {{podSelector: {{}}, ingress: [{{from: [{}]}}]}}\n", blocks.join(", "))
        };
        let text = (0..8).map(policy).collect::<Vec<_>>().join("---\n");
        let objects = parse_manifests(&text).unwrap();
        let err = apply_request(&objects).unwrap_err().to_string();
        assert!(err.contains("MAX_BODY_BYTES"), "{err}");
    }

    #[test]
    fn json_lists_and_syntax_errors() {
        let text = r#"{"kind": "List", "items": [
            {"apiVersion": "seam.dev/v1alpha1", "kind": "EndpointGroup",
             "metadata": {"name": "g"}, "spec": {"selectors": [{"namespaces": ["x"]}]}}]}"#;
        assert_eq!(parse_manifests(text).unwrap().len(), 1);
        assert!(matches!(
            parse_manifests("{nope"),
            Err(ManifestError::Syntax { format: "JSON", .. })
        ));
        assert!(matches!(
            parse_manifests("---\n"),
            Err(ManifestError::Empty)
        ));
    }
}
