//! Errors of the CLI library: manifests, explain.

use std::fmt;

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

/// Why a flow could not be explained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    /// `PORT/PROTO` is malformed.
    #[error("invalid port/protocol {0:?}: expected PORT/PROTO (80/tcp, 53/udp, 8/icmp), PORT (TCP) or icmp")]
    PortProtocol(String),
    /// A flow end is neither `namespace/name` nor an IPv4 address.
    #[error("invalid flow end {0:?}: expected namespace/name of an endpoint or an IPv4 address")]
    End(String),
    /// The engine could not evaluate the flow.
    #[error("cannot evaluate the flow")]
    Eval(#[source] seam_policy::EvalError),
}
