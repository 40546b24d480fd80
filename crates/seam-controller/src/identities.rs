//! Node identities: join tokens, joining, renewal, revocation and the identity registry.
//!
//! A node proves who it is with a client certificate whose CN is its name and whose OU carries
//! its identity epoch (`epoch:N`, see [`seam_model::identity`]). The controller keeps one record
//! per node under `/seam/security/identities/<node>` (`{"epoch", "revoked", "joinedAt"}`) and
//! accepts a node's certificate only while that record exists, is not revoked and carries the
//! certificate's epoch ([`Controller::check_identity`]). Revoking bumps the epoch, so every
//! certificate issued before is refused at once, without a list of serial numbers; joining
//! again issues a certificate in the new epoch.
//!
//! A node gets its first certificate by joining with a one-time, expiring bootstrap token
//! (kubeadm's shape: `<6 id>.<16 secret>`, lowercase letters and digits). Tokens are kept
//! under `/seam/security/join-tokens/<id>` with only the SHA-256 of their secret; a join
//! spends its token in the same store transaction that writes the node's identity, so a token
//! joins at most one node even with concurrent joins on several replicas.
//!
//! Every replica keeps the registry in memory and follows the store (a watch on the identity
//! prefix), so a revocation written by one replica is refused by all of them at once, and
//! open watch streams of a revoked node end ([`IdentityGuard`]). Other roles (adapter, admin,
//! reader) always pass: their certificates are issued offline by whoever holds the CA key.
//!
//! Architecture invariant: these keys live outside `/seam/v1/`, so they are never in a
//! snapshot or an agent's watch.

mod operations;
mod registry;
mod routes;
mod tokens;

pub use registry::{identity_key, IDENTITIES_PREFIX};
pub(crate) use registry::{Identities, IdentityGuard};
pub(crate) use routes::routes;
pub use tokens::{join_token_key, JOIN_TOKENS_PREFIX};

use std::fmt;

#[cfg(doc)]
use crate::controller::Controller;

/// Why a node identity operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The join token is malformed, unknown, expired or already used.
    #[error("join token refused: {0}")]
    InvalidToken(TokenProblem),
    /// The join token is bound to another node.
    #[error("join token {id:?} is for node {bound:?}, not for node {node:?}")]
    TokenForOtherNode {
        /// The token's id.
        id: String,
        /// The node it was created for.
        bound: String,
        /// The node that tried to join with it.
        node: String,
    },
    /// This controller has no CA key, so it cannot sign node certificates.
    #[error("this controller cannot sign node certificates: it was started without --ca-key")]
    SigningUnavailable,
    /// The certificate signing request could not be signed (garbled, or its signature does
    /// not verify).
    #[error("cannot sign the certificate request of node {node:?}")]
    Csr {
        /// The node.
        node: String,
        /// What seam-pki reported.
        #[source]
        source: seam_pki::PkiError,
    },
    /// A node certificate whose node has no identity in the registry (it never joined, or its
    /// record was removed).
    #[error("node {node:?} has no identity (it has not joined); join it with a token")]
    UnknownNode {
        /// The node.
        node: String,
    },
    /// The node is revoked.
    #[error(
        "node {node:?} is revoked (identity epoch {epoch}); it must join again with a new token"
    )]
    Revoked {
        /// The node.
        node: String,
        /// Its current epoch.
        epoch: u64,
    },
    /// The certificate is from another epoch than the node's current one (it was revoked, or
    /// the node joined again with a new key).
    #[error("the certificate of node {node:?} is from identity epoch {presented}, the node is at epoch {current} (revoked or joined again since); use the node's current certificate or join again")]
    StaleEpoch {
        /// The node.
        node: String,
        /// The epoch the certificate carries.
        presented: u64,
        /// The node's current epoch.
        current: u64,
    },
    /// A caller that is not a node asked for a node's renewal.
    #[error("{caller} is not a node: only a node renews its certificate")]
    NotANode {
        /// The caller.
        caller: String,
    },
    /// A revocation named a node with no identity.
    #[error("node {node:?} has no identity to revoke")]
    NoSuchIdentity {
        /// The node.
        node: String,
    },
    /// A token bound to no node tried to take the name of a node that has a valid identity:
    /// that would lock the node out. Revoke it first, or use a token created for that node.
    #[error("node {node:?} has already joined (identity epoch {epoch}); revoke it first (`seam node revoke {node}`) or use a token created for it (`seam node token create --node {node}`)")]
    AlreadyJoined {
        /// The node.
        node: String,
        /// Its current epoch.
        epoch: u64,
    },
    /// The system's random source failed.
    #[error("cannot draw a random join token")]
    Random,
    /// A time could not be represented (a clock before 1970 or a TTL past year 9999).
    #[error("cannot represent the time {what}")]
    Time {
        /// Which time.
        what: String,
    },
}

/// Why a join token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenProblem {
    /// Not `<6 id>.<16 secret>` of lowercase letters and digits.
    Malformed,
    /// No token with this id exists, or its secret does not match.
    Unknown {
        /// The token's id.
        id: String,
    },
    /// The token expired.
    Expired {
        /// The token's id.
        id: String,
        /// When it expired (RFC 3339).
        at: String,
    },
    /// The token was spent by an earlier join.
    Used {
        /// The token's id.
        id: String,
        /// The node that joined with it.
        by: String,
    },
}

impl fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenProblem::Malformed => f.write_str(
                "it is malformed (expected <6 letters or digits>.<16 letters or digits>)",
            ),
            TokenProblem::Unknown { id } => {
                write!(f, "no join token {id:?} with this secret exists")
            }
            TokenProblem::Expired { id, at } => write!(f, "join token {id:?} expired at {at}"),
            TokenProblem::Used { id, by } => {
                write!(
                    f,
                    "join token {id:?} was already used by node {by:?} (tokens are one-time)"
                )
            }
        }
    }
}

impl IdentityError {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            IdentityError::InvalidToken(_)
            | IdentityError::UnknownNode { .. }
            | IdentityError::Revoked { .. }
            | IdentityError::StaleEpoch { .. } => 401,
            IdentityError::TokenForOtherNode { .. } | IdentityError::NotANode { .. } => 403,
            IdentityError::Csr { .. } => 400,
            IdentityError::NoSuchIdentity { .. } => 404,
            IdentityError::AlreadyJoined { .. } => 409,
            IdentityError::SigningUnavailable => 503,
            IdentityError::Random | IdentityError::Time { .. } => 500,
        }
    }

    /// The machine-readable reason of the API error body.
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::InvalidToken(_) => reason::INVALID_TOKEN,
            IdentityError::UnknownNode { .. } => reason::UNAUTHENTICATED,
            IdentityError::Revoked { .. } | IdentityError::StaleEpoch { .. } => reason::REVOKED,
            IdentityError::TokenForOtherNode { .. } | IdentityError::NotANode { .. } => {
                reason::FORBIDDEN
            }
            IdentityError::Csr { .. } => crate::error::reason::INVALID,
            IdentityError::NoSuchIdentity { .. } => crate::error::reason::NOT_FOUND,
            IdentityError::AlreadyJoined { .. } => crate::error::reason::CONFLICT,
            IdentityError::SigningUnavailable => reason::SIGNING_UNAVAILABLE,
            IdentityError::Random | IdentityError::Time { .. } => crate::error::reason::INTERNAL,
        }
    }
}

/// The reasons of the API error bodies identity operations answer with.
pub mod reason {
    /// 401: the join token is malformed, unknown, expired or already used.
    pub const INVALID_TOKEN: &str = "InvalidToken";
    /// 401: the node's identity was revoked, or the certificate is from an older epoch.
    pub const REVOKED: &str = "Revoked";
    /// 401: the caller's certificate names no known identity.
    pub const UNAUTHENTICATED: &str = "Unauthenticated";
    /// 403: the caller may not do this.
    pub const FORBIDDEN: &str = "Forbidden";
    /// 503: this controller has no CA key to sign node certificates.
    pub const SIGNING_UNAVAILABLE: &str = "SigningUnavailable";
}

#[cfg(test)]
mod tests;
