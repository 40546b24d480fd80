//! The client's error type: what failed, against which endpoint, for which request.

use std::time::Duration;

/// A boxed transport-level cause (I/O, HTTP protocol).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a request to the controller failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint string is neither `unix:/path`, `http://host:port` nor `https://host:port`.
    #[error(
        "invalid controller endpoint {endpoint:?}: expected unix:/path, http://host:port or https://host:port"
    )]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
    },
    /// An `https://` endpoint, but the client was given no TLS settings
    /// ([`crate::ControllerClient::with_tls`]).
    #[error("controller endpoint {endpoint:?} is https:// but no TLS settings were given (the CA, and a client certificate and key)")]
    NoTls {
        /// The endpoint as given.
        endpoint: String,
    },
    /// The TLS settings could not be loaded (CA, certificate or key file).
    #[error("TLS settings: {source}")]
    TlsSettings {
        /// What failed.
        #[source]
        source: seam_pki::PkiError,
    },
    /// The controller answered with an error status and a structured body.
    #[error("{request} on {endpoint}: {status} {reason}: {message}")]
    Api {
        /// The endpoint that answered.
        endpoint: String,
        /// Method and path, e.g. `PUT /v1/nodes/n1`.
        request: String,
        /// HTTP status code.
        status: u16,
        /// Machine-readable reason (`Invalid`, `NotFound`, `Conflict`, `Exhausted`, `Internal`).
        reason: String,
        /// The controller's message.
        message: String,
    },
    /// The watch revision was compacted away: re-list with a snapshot and watch from its
    /// revision + 1.
    #[error("{request} on {endpoint}: revision compacted: {message}")]
    Gone {
        /// The endpoint that answered.
        endpoint: String,
        /// Method and path.
        request: String,
        /// The controller's message.
        message: String,
    },
    /// Connecting, sending or receiving failed.
    #[error("{request} on {endpoint}: transport failed")]
    Transport {
        /// The endpoint that was tried.
        endpoint: String,
        /// Method and path.
        request: String,
        /// The I/O or HTTP cause.
        #[source]
        source: BoxError,
    },
    /// The request took longer than the client's timeout (or a watch saw no byte, not even a
    /// heartbeat, for that long).
    #[error("{request} on {endpoint}: no answer within {after:?}")]
    Timeout {
        /// The endpoint that was tried.
        endpoint: String,
        /// Method and path.
        request: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// A body could not be encoded or decoded as the expected JSON.
    #[error("{request} on {endpoint}: cannot decode {what}")]
    Decode {
        /// The endpoint that answered.
        endpoint: String,
        /// Method and path.
        request: String,
        /// What was being decoded, e.g. `Snapshot` or `error body (status 502)`.
        what: String,
        /// The JSON cause.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The HTTP status for [`ClientError::Api`] (and 410 for [`ClientError::Gone`]).
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Gone { .. } => Some(410),
            _ => None,
        }
    }

    /// The controller's reason for [`ClientError::Api`] (`"Gone"` for [`ClientError::Gone`]).
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Api { reason, .. } => Some(reason),
            ClientError::Gone { .. } => Some("Gone"),
            _ => None,
        }
    }

    /// True when the controller said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.reason() == Some("NotFound")
    }

    /// True when the controller refused because of existing state (409 `Conflict`, or
    /// `RevisionConflict` for a conditional write).
    pub fn is_conflict(&self) -> bool {
        matches!(self.reason(), Some("Conflict" | "RevisionConflict"))
    }

    /// True when a conditional write ([`crate::ControllerClient::put_if`]) found the object
    /// changed since it was read: read it again and retry.
    pub fn is_revision_conflict(&self) -> bool {
        self.reason() == Some("RevisionConflict")
    }

    /// True when the controller has no free address block, subnet or VNI left.
    pub fn is_exhausted(&self) -> bool {
        self.reason() == Some("Exhausted")
    }

    /// True when every replica tried was a standby (a leader is being elected): retry later.
    pub fn is_not_leader(&self) -> bool {
        self.reason() == Some("NotLeader")
    }

    /// True when the controller refused a join token (malformed, unknown, expired or used).
    pub fn is_invalid_token(&self) -> bool {
        self.reason() == Some("InvalidToken")
    }

    /// True when the controller refused the client's node certificate because the node was
    /// revoked (or joined again with another key): it must join again with a new token.
    pub fn is_revoked(&self) -> bool {
        self.reason() == Some("Revoked")
    }

    /// True when the controller rejected the request body or path as invalid.
    pub fn is_invalid(&self) -> bool {
        self.reason() == Some("Invalid")
    }
}

/// Result alias of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
