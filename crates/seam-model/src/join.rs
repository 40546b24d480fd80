//! The wire bodies of node identities: join tokens, joining, renewal and revocation.
//!
//! A node gets its client certificate by joining with a one-time, expiring bootstrap token (as
//! kubeadm's join does): an administrator creates the token (`POST /v1/join-tokens`), the node
//! sends it with a certificate signing request (`POST /v1/join`), and renews its certificate
//! with its current one before it expires (`POST /v1/renew`). A revocation
//! (`POST /v1/revocations`) bumps the node's identity epoch, so every certificate issued before
//! it is refused.
//!
//! API boundary: these bodies are part of the controller's `/v1` API. Bodies holding a token
//! never print its secret (`Debug` redacts it).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The most a join token may live: a bootstrap token is for a join about to happen.
pub const MAX_JOIN_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// `POST /v1/join-tokens`: asks for a new join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJoinToken {
    /// How long the token may be used, in seconds (1 to [`MAX_JOIN_TOKEN_TTL_SECS`]).
    pub ttl_seconds: u64,
    /// When set, only this node may join with the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The answer to [`CreateJoinToken`]: the token, shown once (the controller keeps only a hash
/// of its secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinToken {
    /// `<id>.<secret>`: 6 and 16 lowercase letters or digits.
    pub token: String,
    /// When the token stops being accepted (RFC 3339, UTC).
    pub expires_at: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("token", &redacted(&self.token))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// `POST /v1/join`: a node asks for its certificate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    /// The join token, `<id>.<secret>`.
    pub token: String,
    /// The node's name (the certificate's CN and DNS SAN).
    pub node: String,
    /// A PEM certificate signing request; only its public key is used.
    pub csr: String,
}

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinRequest")
            .field("token", &redacted(&self.token))
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The answer to [`JoinRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinResponse {
    /// The node's certificate (PEM).
    pub certificate: String,
    /// The CA certificate (PEM) that verifies the controller and signed the node's certificate.
    pub ca: String,
}

/// `POST /v1/renew`: a node asks for a new certificate for a new key, with its current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewRequest {
    /// A PEM certificate signing request for the new key.
    pub csr: String,
}

/// The answer to [`RenewRequest`]: a certificate of the same name and epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewResponse {
    /// The new certificate (PEM).
    pub certificate: String,
}

/// `POST /v1/revocations`: makes every certificate of a node useless until it joins again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revocation {
    /// The node to revoke.
    pub node: String,
}

/// A node's identity as the controller keeps it (the answer to [`Revocation`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeIdentity {
    /// The node.
    pub node: String,
    /// Its identity epoch: only certificates carrying this epoch are accepted.
    pub epoch: u64,
    /// Whether it is revoked (then no certificate is accepted until it joins again).
    pub revoked: bool,
    /// When it last joined (RFC 3339, UTC).
    pub joined_at: String,
}

/// The token's id, never its secret.
fn redacted(token: &str) -> String {
    match token.split_once('.') {
        Some((id, _)) => format!("{id}.<redacted>"),
        None => "<redacted>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_token_secret() {
        let request = JoinRequest {
            token: "abcdef.0123456789abcdef".to_string(),
            node: "n1".to_string(),
            csr: "-----BEGIN CERTIFICATE REQUEST-----".to_string(),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("abcdef.<redacted>"), "{shown}");
        let token = JoinToken {
            token: "abcdef.0123456789abcdef".to_string(),
            expires_at: "2026-12-07T12:00:00Z".to_string(),
        };
        assert!(!format!("{token:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn bodies_use_the_api_field_names() {
        let body: CreateJoinToken = serde_json::from_str(r#"{"ttlSeconds": 60}"#).unwrap();
        assert_eq!(body.node, None);
        assert!(serde_json::from_str::<CreateJoinToken>(r#"{"ttl": 60}"#).is_err());
        let id = NodeIdentity {
            node: "n1".to_string(),
            epoch: 2,
            revoked: true,
            joined_at: "2026-12-07T12:00:00Z".to_string(),
        };
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json["joinedAt"], "2026-12-07T12:00:00Z");
    }
}
