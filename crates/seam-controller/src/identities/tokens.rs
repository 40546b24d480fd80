//! Join tokens: their shape, how they are drawn, stored (only the secret's SHA-256) and checked,
//! and the RFC 3339 times their records carry.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{IdentityError, TokenProblem};

/// Prefix of the join token records (`/seam/security/join-tokens/<id>`).
pub const JOIN_TOKENS_PREFIX: &str = "/seam/security/join-tokens/";

/// Length of a join token's id.
pub(super) const TOKEN_ID_LEN: usize = 6;
/// Length of a join token's secret.
pub(super) const TOKEN_SECRET_LEN: usize = 16;
/// What token ids and secrets are made of.
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A join token as stored: never its secret, only the secret's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenRecord {
    pub(super) secret_sha256: String,
    pub(super) expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) node: Option<String>,
    /// Set when the token is spent: the node that took its last use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) used_by: Option<String>,
    /// How many nodes may join with it (1: a one-time token).
    #[serde(default = "one_use")]
    pub(super) uses: u32,
    /// The nodes that joined with it so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) joined: Vec<String>,
}

fn one_use() -> u32 {
    1
}

/// The store key of the join token `id`.
pub fn join_token_key(id: &str) -> String {
    format!("{JOIN_TOKENS_PREFIX}{id}")
}

/// Splits `<id>.<secret>`; `None` unless both parts have the token's shape.
pub(super) fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let shaped = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
    };
    (shaped(id, TOKEN_ID_LEN) && shaped(secret, TOKEN_SECRET_LEN)).then_some((id, secret))
}

/// Lowercase hex SHA-256 of a token secret.
pub(super) fn secret_hash(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` characters of [`TOKEN_ALPHABET`], uniformly drawn from the system's random source.
pub(super) fn random_word(
    rng: &ring::rand::SystemRandom,
    len: usize,
) -> Result<String, IdentityError> {
    use ring::rand::SecureRandom;
    // Rejection sampling: 252 is the largest multiple of 36 below 256, so every kept byte maps
    // to each character with the same probability.
    let limit = (256 / TOKEN_ALPHABET.len() * TOKEN_ALPHABET.len()) as u8;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 32];
    while out.len() < len {
        rng.fill(&mut buf).map_err(|_| IdentityError::Random)?;
        for b in buf.iter().copied().filter(|b| *b < limit) {
            if out.len() == len {
                break;
            }
            out.push(char::from(
                TOKEN_ALPHABET[usize::from(b) % TOKEN_ALPHABET.len()],
            ));
        }
    }
    Ok(out)
}

/// Compares two hashes without stopping at the first difference.
fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// RFC 3339 (UTC, whole seconds) of `time`.
pub(super) fn rfc3339(time: SystemTime) -> Result<String, IdentityError> {
    let secs = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok(),
        Err(_) => None,
    };
    secs.and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
        .ok_or_else(|| IdentityError::Time {
            what: format!("{time:?}"),
        })
}

/// Parses an RFC 3339 time written by [`rfc3339`].
pub(super) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    text.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// Whether `token` (already known to be `id`.`secret`) may join `node` at `now`.
pub(super) fn check_token(
    id: &str,
    secret: &str,
    record: &TokenRecord,
    node: &str,
    now: SystemTime,
) -> Result<(), IdentityError> {
    // The secret first: whoever does not know it learns nothing else about the token.
    if !same_hash(&secret_hash(secret), &record.secret_sha256) {
        return Err(IdentityError::InvalidToken(TokenProblem::Unknown {
            id: id.to_string(),
        }));
    }
    if let Some(by) = &record.used_by {
        return Err(IdentityError::InvalidToken(TokenProblem::Used {
            id: id.to_string(),
            by: by.clone(),
        }));
    }
    // An expiry that does not parse (hand-edited store) counts as expired: fail closed.
    if parse_rfc3339(&record.expires_at).is_none_or(|at| at <= now) {
        return Err(IdentityError::InvalidToken(TokenProblem::Expired {
            id: id.to_string(),
            at: record.expires_at.clone(),
        }));
    }
    if let Some(bound) = record.node.as_deref().filter(|bound| *bound != node) {
        return Err(IdentityError::TokenForOtherNode {
            id: id.to_string(),
            bound: bound.to_string(),
            node: node.to_string(),
        });
    }
    Ok(())
}
