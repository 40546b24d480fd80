//! Errors of the policy engine: parsing, validation (every problem with its field path) and evaluation.

use std::fmt;

/// One problem found in an object, with the path of the field that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path in the object's wire form, e.g. `spec.ingress[0].ports[1].endPort`.
    pub path: String,
    /// What is wrong, lower-case, no final period.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one object, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name:?}: {}", join(.errors))]
pub struct ValidationError {
    /// Object kind, e.g. `NetworkPolicy`.
    pub kind: &'static str,
    /// Object name as given (`namespace/name` for namespaced objects; may be empty when the name is the problem).
    pub name: String,
    /// The problems, in field order.
    pub errors: Vec<FieldError>,
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a policy document could not be turned into a [`crate::PolicyObject`].
///
/// `document` is the 0-based index of the document in a multi-document input (YAML `---` or a JSON list).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The text is not JSON.
    #[error("not valid JSON: {source}")]
    Json {
        /// The JSON parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The text is not YAML.
    #[error("not valid YAML: {message}")]
    Yaml {
        /// The YAML parser's message, with its location.
        message: String,
    },
    /// A document is not a mapping with string `apiVersion` and `kind`.
    #[error("document {document}: {path}: {message}")]
    Header {
        /// Index of the document.
        document: usize,
        /// `apiVersion`, `kind` or `` (the document itself).
        path: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `apiVersion` + `kind` name no object this engine supports.
    #[error("document {document}: unsupported object kind {kind:?} in apiVersion {api_version:?} (supported: {supported})")]
    UnknownKind {
        /// Index of the document.
        document: usize,
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
        /// The supported `apiVersion kind` pairs, for the message.
        supported: &'static str,
    },
    /// A field has the wrong type, an unknown name or a bad value for its type.
    #[error("document {document}: {kind}: {path}: {message}")]
    Decode {
        /// Index of the document.
        document: usize,
        /// The object kind being decoded.
        kind: &'static str,
        /// Field path, e.g. `spec.ingress[0].ports[1].endPort`.
        path: String,
        /// The decoder's message.
        message: String,
    },
    /// The object decoded but breaks a rule of its API.
    #[error("document {document}: {source}")]
    Invalid {
        /// Index of the document.
        document: usize,
        /// Every problem in the object.
        #[source]
        source: ValidationError,
    },
}

/// Why a flow could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A flow end names an endpoint (`namespace/name`) the inventory does not hold.
    #[error("unknown endpoint {0:?} (expected namespace/name of an inventory endpoint or an IPv4 address)")]
    UnknownEndpoint(String),
}

/// Why a tenant operation on an [`crate::Inventory`] (join, isolate, make-global) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// The namespace is not in the inventory's `namespaces`.
    #[error("unknown namespace {0:?} (tenant operations apply to namespaces the inventory lists)")]
    UnknownNamespace(String),
}

/// Collects field errors for one object.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<FieldError>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn finish(self, kind: &'static str, name: String) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                kind,
                name,
                errors: self.0,
            })
        }
    }
}
