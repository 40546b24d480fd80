//! The closed set of policy objects, their parsing from JSON or YAML, and the [`PolicySet`] in force.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::anp::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};
use crate::cnp::ClusterNetworkPolicy;
use crate::contract::Contract;
use crate::error::{ParseError, ValidationError};
use crate::group::EndpointGroup;
use crate::meta::ObjectMeta;
use crate::netpol::NetworkPolicy;

const NETWORKING_V1: &str = "networking.k8s.io/v1";
const POLICY_V1ALPHA1: &str = "policy.networking.k8s.io/v1alpha1";
const POLICY_V1ALPHA2: &str = "policy.networking.k8s.io/v1alpha2";
const SEAM_V1ALPHA1: &str = "seam.dev/v1alpha1";
const SUPPORTED: &str = "networking.k8s.io/v1 NetworkPolicy, policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy and BaselineAdminNetworkPolicy, policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy, seam.dev/v1alpha1 EndpointGroup and Contract";

/// The kinds of policy object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy.
    AdminNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha1 BaselineAdminNetworkPolicy.
    BaselineAdminNetworkPolicy,
    /// seam.dev/v1alpha1 EndpointGroup.
    EndpointGroup,
    /// seam.dev/v1alpha1 Contract.
    Contract,
    /// policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy.
    ClusterNetworkPolicy,
}

impl PolicyKind {
    /// The `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::AdminNetworkPolicy => "AdminNetworkPolicy",
            PolicyKind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
            PolicyKind::EndpointGroup => "EndpointGroup",
            PolicyKind::Contract => "Contract",
            PolicyKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
        }
    }

    /// The `apiVersion` string.
    pub fn api_version(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => NETWORKING_V1,
            PolicyKind::AdminNetworkPolicy | PolicyKind::BaselineAdminNetworkPolicy => {
                POLICY_V1ALPHA1
            }
            PolicyKind::ClusterNetworkPolicy => POLICY_V1ALPHA2,
            PolicyKind::EndpointGroup | PolicyKind::Contract => SEAM_V1ALPHA1,
        }
    }

    /// Every kind, in declaration order.
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::NetworkPolicy,
        PolicyKind::AdminNetworkPolicy,
        PolicyKind::BaselineAdminNetworkPolicy,
        PolicyKind::EndpointGroup,
        PolicyKind::Contract,
        PolicyKind::ClusterNetworkPolicy,
    ];

    /// The lower-case plural resource name (`networkpolicies`, `clusternetworkpolicies`, …).
    pub fn plural(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => "networkpolicies",
            PolicyKind::AdminNetworkPolicy => "adminnetworkpolicies",
            PolicyKind::BaselineAdminNetworkPolicy => "baselineadminnetworkpolicies",
            PolicyKind::EndpointGroup => "endpointgroups",
            PolicyKind::Contract => "contracts",
            PolicyKind::ClusterNetworkPolicy => "clusternetworkpolicies",
        }
    }

    /// Whether objects of this kind live in a namespace (only NetworkPolicy).
    pub fn is_namespaced(self) -> bool {
        self == PolicyKind::NetworkPolicy
    }

    fn from_type(api_version: &str, kind: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.as_str() == kind)
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One policy object of any supported kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyObject {
    /// A Kubernetes NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
    /// An AdminNetworkPolicy.
    AdminNetworkPolicy(AdminNetworkPolicy),
    /// The BaselineAdminNetworkPolicy.
    BaselineAdminNetworkPolicy(BaselineAdminNetworkPolicy),
    /// A Seam EndpointGroup.
    EndpointGroup(EndpointGroup),
    /// A Seam Contract.
    Contract(Contract),
    /// A ClusterNetworkPolicy (Admin or Baseline tier).
    ClusterNetworkPolicy(ClusterNetworkPolicy),
}

impl PolicyObject {
    /// Decodes and validates one object from its JSON value, dispatching on `apiVersion` + `kind`.
    pub fn from_value(value: Value) -> Result<Self, ParseError> {
        decode_document(0, value)
    }

    /// Its kind.
    pub fn kind(&self) -> PolicyKind {
        match self {
            PolicyObject::NetworkPolicy(_) => PolicyKind::NetworkPolicy,
            PolicyObject::AdminNetworkPolicy(_) => PolicyKind::AdminNetworkPolicy,
            PolicyObject::BaselineAdminNetworkPolicy(_) => PolicyKind::BaselineAdminNetworkPolicy,
            PolicyObject::EndpointGroup(_) => PolicyKind::EndpointGroup,
            PolicyObject::Contract(_) => PolicyKind::Contract,
            PolicyObject::ClusterNetworkPolicy(_) => PolicyKind::ClusterNetworkPolicy,
        }
    }

    /// Its metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            PolicyObject::NetworkPolicy(o) => &o.metadata,
            PolicyObject::AdminNetworkPolicy(o) => &o.metadata,
            PolicyObject::BaselineAdminNetworkPolicy(o) => &o.metadata,
            PolicyObject::EndpointGroup(o) => &o.metadata,
            PolicyObject::Contract(o) => &o.metadata,
            PolicyObject::ClusterNetworkPolicy(o) => &o.metadata,
        }
    }

    /// The key it is stored under in a [`PolicySet`].
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: self.kind(),
            namespace: self.metadata().namespace.clone(),
            name: self.metadata().name.clone(),
        }
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            PolicyObject::NetworkPolicy(o) => o.validate(),
            PolicyObject::AdminNetworkPolicy(o) => o.validate(),
            PolicyObject::BaselineAdminNetworkPolicy(o) => o.validate(),
            PolicyObject::EndpointGroup(o) => o.validate(),
            PolicyObject::Contract(o) => o.validate(),
            PolicyObject::ClusterNetworkPolicy(o) => o.validate(),
        }
    }

    /// The wire form, with `apiVersion` and `kind`.
    pub fn to_value(&self) -> Value {
        let body = match self {
            PolicyObject::NetworkPolicy(o) => serde_json::to_value(o),
            PolicyObject::AdminNetworkPolicy(o) => serde_json::to_value(o),
            PolicyObject::BaselineAdminNetworkPolicy(o) => serde_json::to_value(o),
            PolicyObject::EndpointGroup(o) => serde_json::to_value(o),
            PolicyObject::Contract(o) => serde_json::to_value(o),
            PolicyObject::ClusterNetworkPolicy(o) => serde_json::to_value(o),
        };
        // Serializing plain structs with string keys cannot fail; an empty object is a safe fallback.
        let mut map = match body {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let mut out = serde_json::Map::new();
        out.insert("apiVersion".into(), self.kind().api_version().into());
        out.insert("kind".into(), self.kind().as_str().into());
        out.append(&mut map);
        Value::Object(out)
    }
}

/// The wire form is the one [`PolicyObject::to_value`] gives (`apiVersion`, `kind`, `metadata`, `spec`, keys in
/// the order `serde_json` maps keep): what the controller stores, serves and ships to agents, byte for byte.
impl Serialize for PolicyObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

/// The wire form is versioned by `apiVersion` + `kind`: they choose the variant, and a pair this version does not
/// support is an error ([`ParseError::UnknownKind`]), as is an unknown field or an invalid value. This is the strict
/// decode of user input ([`PolicyObject::from_value`]); readers of stored or streamed objects that must tolerate a
/// newer version's fields use `seam_model::tolerant::policy`.
impl<'de> Deserialize<'de> for PolicyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        PolicyObject::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// Parses JSON holding one object, an array of objects, or a Kubernetes `List` (`{"kind": "List", "items": [...]}`).
pub fn parse_json(text: &str) -> Result<Vec<PolicyObject>, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|source| ParseError::Json { source })?;
    decode_documents(split_list(value))
}

/// Parses YAML holding one or more documents (`---`); each may also be a Kubernetes `List`. Empty documents are
/// skipped.
pub fn parse_yaml(text: &str) -> Result<Vec<PolicyObject>, ParseError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ParseError::Yaml {
        message: e.to_string(),
    })?;
    decode_documents(docs.into_iter().flat_map(split_list).collect())
}

/// One parsed document as the objects it holds: a JSON array's items, a Kubernetes `List`'s
/// `items`, nothing for an empty document, else the document itself.
pub fn split_list(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        Value::Object(mut map)
            if map.get("kind").and_then(Value::as_str) == Some("List")
                && map.contains_key("items") =>
        {
            match map.remove("items") {
                Some(Value::Array(items)) => items,
                Some(other) => vec![other],
                None => Vec::new(),
            }
        }
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn decode_documents(docs: Vec<Value>) -> Result<Vec<PolicyObject>, ParseError> {
    docs.into_iter()
        .enumerate()
        .map(|(i, v)| decode_document(i, v))
        .collect()
}

fn decode_document(document: usize, value: Value) -> Result<PolicyObject, ParseError> {
    let Value::Object(mut map) = value else {
        return Err(ParseError::Header {
            document,
            path: "",
            message: "expected a mapping (an object with apiVersion and kind)".into(),
        });
    };
    let mut header = |field: &'static str| match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ParseError::Header {
            document,
            path: field,
            message: "must be a string".into(),
        }),
        None => Err(ParseError::Header {
            document,
            path: field,
            message: "is missing".into(),
        }),
    };
    let api_version = header("apiVersion")?;
    let kind_name = header("kind")?;
    let Some(kind) = PolicyKind::from_type(&api_version, &kind_name) else {
        return Err(ParseError::UnknownKind {
            document,
            api_version,
            kind: kind_name,
            supported: SUPPORTED,
        });
    };
    let body = Value::Object(map);
    let object = match kind {
        PolicyKind::NetworkPolicy => PolicyObject::NetworkPolicy(decode(document, kind, body)?),
        PolicyKind::AdminNetworkPolicy => {
            PolicyObject::AdminNetworkPolicy(decode(document, kind, body)?)
        }
        PolicyKind::BaselineAdminNetworkPolicy => {
            PolicyObject::BaselineAdminNetworkPolicy(decode(document, kind, body)?)
        }
        PolicyKind::EndpointGroup => PolicyObject::EndpointGroup(decode(document, kind, body)?),
        PolicyKind::Contract => PolicyObject::Contract(decode(document, kind, body)?),
        PolicyKind::ClusterNetworkPolicy => {
            PolicyObject::ClusterNetworkPolicy(decode(document, kind, body)?)
        }
    };
    object
        .validate()
        .map_err(|source| ParseError::Invalid { document, source })?;
    Ok(object)
}

fn decode<T: DeserializeOwned>(
    document: usize,
    kind: PolicyKind,
    body: Value,
) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        ParseError::Decode {
            document,
            kind: kind.as_str(),
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// How objects are told apart in a [`PolicySet`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Kind.
    pub kind: PolicyKind,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// The policy objects in force, keyed by kind, namespace and name (iteration is in key order, which makes every
/// tie-break below deterministic).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    objects: BTreeMap<ObjectKey, PolicyObject>,
}

impl PolicySet {
    /// An empty set: with it every flow is decided by the isolation mode.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding `objects`, each validated; a later object replaces an earlier one with the same key.
    pub fn from_objects(
        objects: impl IntoIterator<Item = PolicyObject>,
    ) -> Result<Self, ValidationError> {
        let mut set = Self::new();
        for o in objects {
            set.insert(o)?;
        }
        Ok(set)
    }

    /// Validates `object` and stores it, replacing (and returning) the object with the same key.
    pub fn insert(
        &mut self,
        object: PolicyObject,
    ) -> Result<Option<PolicyObject>, ValidationError> {
        object.validate()?;
        Ok(self.objects.insert(object.key(), object))
    }

    /// Removes the object with this key.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<PolicyObject> {
        self.objects.remove(key)
    }

    /// Every object, in key order.
    pub fn objects(&self) -> impl Iterator<Item = &PolicyObject> {
        self.objects.values()
    }

    /// NetworkPolicies, by namespace then name.
    pub fn network_policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.objects.values().filter_map(|o| match o {
            PolicyObject::NetworkPolicy(p) => Some(p),
            _ => None,
        })
    }

    /// AdminNetworkPolicies, by name.
    pub fn admin_network_policies(&self) -> impl Iterator<Item = &AdminNetworkPolicy> {
        self.objects.values().filter_map(|o| match o {
            PolicyObject::AdminNetworkPolicy(p) => Some(p),
            _ => None,
        })
    }

    /// The BaselineAdminNetworkPolicy, if any (its name is always `default`).
    pub fn baseline(&self) -> Option<&BaselineAdminNetworkPolicy> {
        self.objects.values().find_map(|o| match o {
            PolicyObject::BaselineAdminNetworkPolicy(p) => Some(p),
            _ => None,
        })
    }

    /// ClusterNetworkPolicies of both tiers, by name.
    pub fn cluster_network_policies(&self) -> impl Iterator<Item = &ClusterNetworkPolicy> {
        self.objects.values().filter_map(|o| match o {
            PolicyObject::ClusterNetworkPolicy(p) => Some(p),
            _ => None,
        })
    }

    /// The EndpointGroup called `name`.
    pub fn endpoint_group(&self, name: &str) -> Option<&EndpointGroup> {
        let key = ObjectKey {
            kind: PolicyKind::EndpointGroup,
            namespace: None,
            name: name.to_string(),
        };
        match self.objects.get(&key) {
            Some(PolicyObject::EndpointGroup(g)) => Some(g),
            _ => None,
        }
    }

    /// Contracts, by name.
    pub fn contracts(&self) -> impl Iterator<Item = &Contract> {
        self.objects.values().filter_map(|o| match o {
            PolicyObject::Contract(c) => Some(c),
            _ => None,
        })
    }

    /// Group names that contracts reference but no EndpointGroup (or implicit group) defines, as
    /// `(contract, group)`. Such a group has no members; the controller reports these as warnings.
    pub fn dangling_group_references(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for c in self.contracts() {
            for g in c.spec.consumers.iter().chain(&c.spec.providers) {
                let implicit = g == crate::group::CLUSTER_GROUP
                    || g.starts_with(crate::group::NAMESPACE_GROUP_PREFIX)
                    || crate::group::deployment_group(g).is_some();
                if !implicit && self.endpoint_group(g).is_none() {
                    out.push((c.metadata.name.clone(), g.clone()));
                }
            }
        }
        out
    }
}
