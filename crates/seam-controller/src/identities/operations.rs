//! The identity operations on [`Controller`]: creating join tokens, joining, renewal and
//! revocation, each one store transaction.

use std::time::{Duration, SystemTime};

use seam_model::{
    CallerRole, CreateJoinToken, FieldError, Identity, JoinRequest, JoinResponse, JoinToken,
    NodeIdentity, RenewRequest, RenewResponse, Revocation, MAX_JOIN_TOKEN_TTL_SECS,
    MAX_JOIN_TOKEN_USES,
};
use seam_store::{Compare, Datastore, Txn};
use serde::Serialize;

use super::registry::{identity_key, IdentityRecord};
use super::tokens::{
    check_token, join_token_key, parse_rfc3339, parse_token, random_word, rfc3339, secret_hash,
    TokenRecord, JOIN_TOKENS_PREFIX, TOKEN_ID_LEN, TOKEN_SECRET_LEN,
};
use super::{IdentityError, TokenProblem};
use crate::caller::Caller;
use crate::controller::{decode, same_as_read, Controller};
use crate::error::{Error, Result};

/// How many times a join is retried when its transaction lost a race.
const ATTEMPTS: u32 = 8;
/// How long the records of expired join tokens are kept (a reuse is answered "already used").
const EXPIRED_TOKENS_KEPT: Duration = Duration::from_secs(3600);
/// At most this many expired token records are deleted per new token (one transaction).
const MAX_FORGOTTEN_PER_WRITE: usize = 64;

impl Controller {
    /// The CA that signs node certificates (`--ca-key`), or 503 `SigningUnavailable`.
    fn signer(&self) -> Result<crate::config::Signing, IdentityError> {
        self.signing()
            .cloned()
            .ok_or(IdentityError::SigningUnavailable)
    }

    /// Creates a join token valid for `ttl`, for `node` only when given. The secret is
    /// answered once and never stored.
    pub async fn create_join_token(&self, request: &CreateJoinToken) -> Result<JoinToken> {
        let mut problems = Vec::new();
        if !(1..=MAX_JOIN_TOKEN_TTL_SECS).contains(&request.ttl_seconds) {
            problems.push(FieldError {
                path: "ttlSeconds".to_string(),
                message: format!(
                    "{} is not between 1 and {MAX_JOIN_TOKEN_TTL_SECS} seconds",
                    request.ttl_seconds
                ),
            });
        }
        if let Some(node) = request.node.as_deref() {
            check_node_name(&mut problems, node);
        }
        let uses = request.uses.unwrap_or(1);
        if !(1..=MAX_JOIN_TOKEN_USES).contains(&uses) {
            problems.push(FieldError {
                path: "uses".to_string(),
                message: format!("{uses} is not between 1 and {MAX_JOIN_TOKEN_USES}"),
            });
        } else if uses > 1 && request.node.is_some() {
            problems.push(FieldError {
                path: "uses".to_string(),
                message: "a token bound to one node is used once: give uses 1 or no node"
                    .to_string(),
            });
        }
        crate::controller::invalid_if_any("CreateJoinToken", "", problems)?;
        let expires = SystemTime::now() + Duration::from_secs(request.ttl_seconds);
        let expires_at = rfc3339(expires)?;
        let rng = ring::rand::SystemRandom::new();
        let _guard = self.write_lock().await?;
        self.forget_expired_tokens().await?;
        for _ in 0..ATTEMPTS {
            let id = random_word(&rng, TOKEN_ID_LEN)?;
            let secret = random_word(&rng, TOKEN_SECRET_LEN)?;
            let record = TokenRecord {
                secret_sha256: secret_hash(&secret),
                expires_at: expires_at.clone(),
                node: request.node.clone(),
                used_by: None,
                uses,
                joined: Vec::new(),
            };
            let key = join_token_key(&id);
            let txn = Txn::new()
                .when(Compare::Absent(key.clone()))
                .put(&key, encode_record(&key, &record)?);
            // A taken id (one in 2 billion) is drawn again.
            if self.commit(txn, &key).await? {
                tracing::info!(token = %id, node = ?request.node, %expires_at, "join token created");
                return Ok(JoinToken {
                    token: format!("{id}.{secret}"),
                    expires_at,
                });
            }
        }
        Err(Error::Contended {
            kind: seam_model::ObjectKind::Node,
            name: "join token".to_string(),
            attempts: ATTEMPTS,
        })
    }

    /// Deletes the records of tokens that expired over an hour ago (used or not), so they do
    /// not pile up; until then a reused token is still answered "already used".
    async fn forget_expired_tokens(&self) -> Result<()> {
        let Some(horizon) = SystemTime::now().checked_sub(EXPIRED_TOKENS_KEPT) else {
            return Ok(());
        };
        let (_, kvs) = self
            .store()
            .list(JOIN_TOKENS_PREFIX)
            .await
            .map_err(|source| Error::Store {
                op: "list",
                key: JOIN_TOKENS_PREFIX.to_string(),
                source,
            })?;
        let stale: Vec<_> = kvs
            .into_iter()
            .filter(|kv| {
                // A record that does not decode is left for a person to look at.
                decode::<TokenRecord>(&kv.key, &kv.value)
                    .is_ok_and(|t| parse_rfc3339(&t.expires_at).is_some_and(|at| at < horizon))
            })
            .take(MAX_FORGOTTEN_PER_WRITE)
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let txn = stale.iter().fold(Txn::new(), |txn, kv| {
            txn.when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                .delete(&kv.key)
        });
        // Losing a race here only delays the clean-up to the next token.
        self.commit(txn, JOIN_TOKENS_PREFIX).await?;
        Ok(())
    }

    /// Joins `request.node`: spends the token and writes the node's identity in one store
    /// transaction, and answers a certificate for the CSR's key in the node's new epoch (1 on
    /// first join, the revocation's epoch after a revocation, else the next one: a node
    /// joining again makes its older certificate useless). Only a token created for the node
    /// may replace an identity that is not revoked (a reinstalled node); any token may join a
    /// new or revoked name.
    pub async fn join(&self, request: &JoinRequest) -> Result<JoinResponse> {
        let mut problems = Vec::new();
        check_node_name(&mut problems, &request.node);
        crate::controller::invalid_if_any("JoinRequest", &request.node, problems)?;
        let (id, secret) = parse_token(&request.token)
            .ok_or(IdentityError::InvalidToken(TokenProblem::Malformed))?;
        let signer = self.signer()?;
        let _guard = self.write_lock().await?;
        let token_key = join_token_key(id);
        let node_key = identity_key(&request.node);
        for _ in 0..ATTEMPTS {
            let now = SystemTime::now();
            let Some(token_kv) = self.get_kv(&token_key).await? else {
                return Err(IdentityError::InvalidToken(TokenProblem::Unknown {
                    id: id.to_string(),
                })
                .into());
            };
            let mut token: TokenRecord = decode(&token_key, &token_kv.value)?;
            check_token(id, secret, &token, &request.node, now)?;
            let current = match self.get_kv(&node_key).await? {
                Some(kv) => Some((
                    decode::<IdentityRecord>(&kv.key, &kv.value)?,
                    kv.mod_revision,
                )),
                None => None,
            };
            if let Some((record, _)) = current.as_ref().filter(|(r, _)| !r.revoked) {
                if token.node.is_none() {
                    return Err(IdentityError::AlreadyJoined {
                        node: request.node.clone(),
                        epoch: record.epoch,
                    }
                    .into());
                }
            }
            let epoch = match &current {
                None => 1,
                // The revocation already moved the epoch past every issued certificate.
                Some((record, _)) if record.revoked => record.epoch,
                Some((record, _)) => record.epoch + 1,
            };
            let identity = Identity::node(request.node.clone(), epoch);
            let certificate = signer
                .ca
                .sign_csr(&request.csr, &identity, signer.node_cert_validity)
                .map_err(|source| IdentityError::Csr {
                    node: request.node.clone(),
                    source,
                })?;
            token.joined.push(request.node.clone());
            if token.joined.len() >= token.uses as usize {
                token.used_by = Some(request.node.clone());
            }
            let record = IdentityRecord {
                epoch,
                revoked: false,
                joined_at: rfc3339(now)?,
            };
            let txn = Txn::new()
                .when(Compare::ModRevision(
                    token_key.clone(),
                    token_kv.mod_revision,
                ))
                .when(same_as_read(
                    &node_key,
                    current.as_ref().map(|(_, rev)| *rev),
                ))
                .put(&token_key, encode_record(&token_key, &token)?)
                .put(&node_key, encode_record(&node_key, &record)?);
            if self.commit(txn, &node_key).await? {
                self.refresh_identity(&request.node).await?;
                tracing::info!(node = %request.node, epoch, token = %id, "node joined");
                return Ok(JoinResponse {
                    certificate,
                    ca: signer.ca.cert_pem().to_string(),
                });
            }
            // Another join (on another replica) changed the token or the node: read again.
        }
        Err(Error::Contended {
            kind: seam_model::ObjectKind::Node,
            name: request.node.clone(),
            attempts: ATTEMPTS,
        })
    }

    /// Signs a new certificate for `caller`'s new key, with the same name and epoch. Nothing
    /// is written: the epoch is what makes certificates valid or not.
    pub async fn renew(&self, caller: &Caller, request: &RenewRequest) -> Result<RenewResponse> {
        let identity = match caller.identity() {
            Some(id) if id.role == CallerRole::Node => id,
            _ => {
                return Err(IdentityError::NotANode {
                    caller: caller.to_string(),
                }
                .into())
            }
        };
        self.check_identity(identity).await?;
        let signer = self.signer()?;
        let certificate = signer
            .ca
            .sign_csr(&request.csr, identity, signer.node_cert_validity)
            .map_err(|source| IdentityError::Csr {
                node: identity.name.clone(),
                source,
            })?;
        tracing::info!(node = %identity.name, epoch = identity.epoch, "node certificate renewed");
        Ok(RenewResponse { certificate })
    }

    /// Revokes `node`: its epoch moves on and it is marked revoked, so every certificate it
    /// holds is refused at once (by every replica) until it joins again.
    pub async fn revoke(&self, request: &Revocation) -> Result<NodeIdentity> {
        let mut problems = Vec::new();
        check_node_name(&mut problems, &request.node);
        crate::controller::invalid_if_any("Revocation", &request.node, problems)?;
        let _guard = self.write_lock().await?;
        let key = identity_key(&request.node);
        let Some(kv) = self.get_kv(&key).await? else {
            return Err(IdentityError::NoSuchIdentity {
                node: request.node.clone(),
            }
            .into());
        };
        let current: IdentityRecord = decode(&key, &kv.value)?;
        let record = IdentityRecord {
            epoch: current.epoch + 1,
            revoked: true,
            joined_at: current.joined_at,
        };
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), kv.mod_revision))
            .put(&key, encode_record(&key, &record)?);
        if !self.commit(txn, &key).await? {
            return Err(Error::Contended {
                kind: seam_model::ObjectKind::Node,
                name: request.node.clone(),
                attempts: 1,
            });
        }
        self.refresh_identity(&request.node).await?;
        tracing::warn!(node = %request.node, epoch = record.epoch, "node revoked");
        Ok(NodeIdentity {
            node: request.node.clone(),
            epoch: record.epoch,
            revoked: record.revoked,
            joined_at: record.joined_at,
        })
    }
}

fn check_node_name(problems: &mut Vec<FieldError>, node: &str) {
    if !seam_model::is_valid_name(node) {
        problems.push(FieldError {
            path: "node".to_string(),
            message: format!(
                "{node:?} is not a valid node name (1-63 of a-z, 0-9, '-', '.', alphanumeric at both ends)"
            ),
        });
    }
}

fn encode_record<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| Error::Encode {
        kind: seam_model::ObjectKind::Node,
        name: key.to_string(),
        source,
    })
}
