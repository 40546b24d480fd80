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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use seam_model::{
    CallerRole, CreateJoinToken, FieldError, Identity, JoinRequest, JoinResponse, JoinToken,
    NodeIdentity, RenewRequest, RenewResponse, Revocation, MAX_JOIN_TOKEN_TTL_SECS,
};
use seam_store::{AnyStore, Compare, Datastore, Event, Txn};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::caller::Caller;
use crate::controller::{decode, same_as_read, Controller};
use crate::error::{Error, Result};
use crate::http::decode_body;

/// Prefix of the node identity records (`/seam/security/identities/<node>`).
pub const IDENTITIES_PREFIX: &str = "/seam/security/identities/";
/// Prefix of the join token records (`/seam/security/join-tokens/<id>`).
pub const JOIN_TOKENS_PREFIX: &str = "/seam/security/join-tokens/";

/// Length of a join token's id.
const TOKEN_ID_LEN: usize = 6;
/// Length of a join token's secret.
const TOKEN_SECRET_LEN: usize = 16;
/// What token ids and secrets are made of.
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// How many times a join is retried when its transaction lost a race.
const ATTEMPTS: u32 = 8;
/// How long the records of expired join tokens are kept (a reuse is answered "already used").
const EXPIRED_TOKENS_KEPT: Duration = Duration::from_secs(3600);
/// At most this many expired token records are deleted per new token (one transaction).
const MAX_FORGOTTEN_PER_WRITE: usize = 64;
/// How long the registry waits before it lists the store again after its watch broke.
const RESYNC_PAUSE: Duration = Duration::from_secs(1);

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

/// A node's identity record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityRecord {
    epoch: u64,
    revoked: bool,
    joined_at: String,
}

/// A join token as stored: never its secret, only the secret's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRecord {
    secret_sha256: String,
    expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_by: Option<String>,
}

/// The store key of `node`'s identity record.
pub fn identity_key(node: &str) -> String {
    format!("{IDENTITIES_PREFIX}{node}")
}

/// The store key of the join token `id`.
pub fn join_token_key(id: &str) -> String {
    format!("{JOIN_TOKENS_PREFIX}{id}")
}

/// Splits `<id>.<secret>`; `None` unless both parts have the token's shape.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let shaped = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
    };
    (shaped(id, TOKEN_ID_LEN) && shaped(secret, TOKEN_SECRET_LEN)).then_some((id, secret))
}

/// Lowercase hex SHA-256 of a token secret.
fn secret_hash(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` characters of [`TOKEN_ALPHABET`], uniformly drawn from the system's random source.
fn random_word(rng: &ring::rand::SystemRandom, len: usize) -> Result<String, IdentityError> {
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
fn rfc3339(time: SystemTime) -> Result<String, IdentityError> {
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
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    text.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// Whether `token` (already known to be `id`.`secret`) may join `node` at `now`.
fn check_token(
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

/// Whether `identity` passes against the registry's `record` of its node.
fn verdict(identity: &Identity, record: Option<&IdentityRecord>) -> Result<(), IdentityError> {
    if identity.role != CallerRole::Node {
        return Ok(());
    }
    let node = identity.name.clone();
    match record {
        None => Err(IdentityError::UnknownNode { node }),
        Some(r) if r.revoked => Err(IdentityError::Revoked {
            node,
            epoch: r.epoch,
        }),
        Some(r) if r.epoch != identity.epoch => Err(IdentityError::StaleEpoch {
            node,
            presented: identity.epoch,
            current: r.epoch,
        }),
        Some(_) => Ok(()),
    }
}

/// The in-memory identity registry of one controller.
pub(crate) struct Identities {
    shared: Arc<Shared>,
    /// Set once the registry was listed from the store and its follower task started.
    started: tokio::sync::OnceCell<()>,
}

/// What the follower task shares with request handlers.
struct Shared {
    state: RwLock<Registry>,
    /// Bumped on every change of the registry, so open watches re-check their caller.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Registry {
    /// Node name → its record and the record's `mod_revision`.
    records: BTreeMap<String, (IdentityRecord, u64)>,
    /// False while the follower lost its store watch: answers come from the store then.
    synced: bool,
}

impl Default for Identities {
    fn default() -> Self {
        Identities {
            shared: Arc::new(Shared {
                state: RwLock::new(Registry::default()),
                changed: watch::Sender::new(0),
            }),
            started: tokio::sync::OnceCell::new(),
        }
    }
}

impl Shared {
    /// Applies one stored record (or its deletion) unless the registry already holds a newer
    /// one; says whether anything changed.
    fn apply(&self, node: &str, record: Option<IdentityRecord>, revision: u64) {
        let changed = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let current = state.records.get(node).map(|(_, r)| *r);
            if current.is_some_and(|r| r >= revision) {
                false
            } else {
                match record {
                    Some(record) => state.records.insert(node.to_string(), (record, revision)),
                    None => state.records.remove(node),
                };
                true
            }
        };
        if changed {
            self.changed.send_modify(|generation| *generation += 1);
        }
    }

    /// Replaces the whole registry with a fresh listing.
    fn replace(&self, records: BTreeMap<String, (IdentityRecord, u64)>) {
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            state.records = records;
            state.synced = true;
        }
        self.changed.send_modify(|generation| *generation += 1);
    }

    fn set_synced(&self, synced: bool) {
        self.state.write().unwrap_or_else(|e| e.into_inner()).synced = synced;
    }

    /// The verdict from memory; `None` while the registry does not follow the store.
    fn verdict_now(&self, identity: &Identity) -> Option<Result<(), IdentityError>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        if identity.role != CallerRole::Node {
            return Some(Ok(()));
        }
        state
            .synced
            .then(|| verdict(identity, state.records.get(&identity.name).map(|(r, _)| r)))
    }

    fn apply_event(&self, event: &Event) {
        let Some(node) = event.key.strip_prefix(IDENTITIES_PREFIX) else {
            return;
        };
        let record = match event.value.as_deref().map(|v| decode(&event.key, v)) {
            None => None,
            Some(Ok(record)) => Some(record),
            Some(Err(e)) => {
                // A record nobody can read grants nothing: the node is treated as unknown.
                tracing::error!(key = %event.key, error = %e, "corrupt identity record; the node's certificates are refused");
                None
            }
        };
        self.apply(node, record, event.revision);
    }
}

/// Every identity record under the prefix, with the listing's revision.
async fn list_records(store: &AnyStore) -> Result<(u64, BTreeMap<String, (IdentityRecord, u64)>)> {
    let (revision, kvs) = store
        .list(IDENTITIES_PREFIX)
        .await
        .map_err(|source| Error::Store {
            op: "list",
            key: IDENTITIES_PREFIX.to_string(),
            source,
        })?;
    let mut records = BTreeMap::new();
    for kv in kvs {
        let Some(node) = kv.key.strip_prefix(IDENTITIES_PREFIX) else {
            continue;
        };
        match decode::<IdentityRecord>(&kv.key, &kv.value) {
            Ok(record) => {
                records.insert(node.to_string(), (record, kv.mod_revision));
            }
            Err(e) => {
                tracing::error!(key = %kv.key, error = %e, "corrupt identity record; the node's certificates are refused")
            }
        }
    }
    Ok((revision, records))
}

/// Follows the identity records in the store until the controller stops (or is dropped); after
/// a broken watch it lists again.
async fn follow(
    store: AnyStore,
    shared: Weak<Shared>,
    mut revision: u64,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match store.watch(IDENTITIES_PREFIX, revision + 1).await {
            Ok(mut w) => loop {
                let event = tokio::select! {
                    event = w.next() => event,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match event {
                    Some(Ok(event)) => {
                        let Some(shared) = shared.upgrade() else {
                            return;
                        };
                        shared.apply_event(&event);
                        revision = revision.max(event.revision);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "identity watch ended; listing identities again");
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot watch identities; retrying"),
        }
        match shared.upgrade() {
            Some(shared) => shared.set_synced(false),
            None => return,
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RESYNC_PAUSE) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match list_records(&store).await {
                Ok((listed, records)) => {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    shared.replace(records);
                    revision = listed;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "cannot list identities; retrying"),
            }
        }
    }
}

/// Ends a node's watch stream once its identity stops passing [`Controller::check_identity`].
pub(crate) struct IdentityGuard {
    shared: Arc<Shared>,
    identity: Identity,
    changes: watch::Receiver<u64>,
}

impl IdentityGuard {
    /// Resolves when the identity stopped passing (revoked, joined again elsewhere, removed).
    /// Cancel-safe: the check after a change runs without awaiting.
    pub(crate) async fn refused(&mut self) -> IdentityError {
        loop {
            if self.changes.changed().await.is_err() {
                // The registry is gone with its controller; shutdown ends the stream.
                std::future::pending::<()>().await;
            }
            // While the registry resyncs nothing is known; the resync bumps it again.
            if let Some(Err(e)) = self.shared.verdict_now(&self.identity) {
                return e;
            }
        }
    }
}

impl Controller {
    /// The CA that signs node certificates (`--ca-key`), or 503 `SigningUnavailable`.
    fn signer(&self) -> Result<crate::config::Signing, IdentityError> {
        self.signing()
            .cloned()
            .ok_or(IdentityError::SigningUnavailable)
    }

    /// Whether `identity` may act now: a node must have joined, not be revoked and present a
    /// certificate of its current epoch; other roles always pass (their certificates are
    /// issued offline). Answered from memory, which follows the store.
    pub async fn check_identity(&self, identity: &Identity) -> Result<()> {
        if identity.role != CallerRole::Node {
            return Ok(());
        }
        let shared = self.registry().await?;
        if let Some(answer) = shared.verdict_now(identity) {
            return answer.map_err(Error::from);
        }
        // The registry lost its watch and is catching up: ask the store itself.
        let key = identity_key(&identity.name);
        let record = match self.get_kv(&key).await? {
            Some(kv) => Some(decode::<IdentityRecord>(&kv.key, &kv.value)?),
            None => None,
        };
        verdict(identity, record.as_ref()).map_err(Error::from)
    }

    /// A guard that resolves once `identity` stops passing, for a stream it serves.
    pub(crate) async fn identity_guard(&self, identity: Identity) -> Result<IdentityGuard> {
        let shared = self.registry().await?;
        let changes = shared.changed.subscribe();
        Ok(IdentityGuard {
            shared,
            identity,
            changes,
        })
    }

    /// The registry, listed from the store and followed from the first call on.
    async fn registry(&self) -> Result<Arc<Shared>> {
        let identities = &self.inner.identities;
        identities
            .started
            .get_or_try_init(|| async {
                let (revision, records) = list_records(self.store()).await?;
                identities.shared.replace(records);
                tokio::spawn(follow(
                    self.store().clone(),
                    Arc::downgrade(&identities.shared),
                    revision,
                    self.stopped(),
                ));
                Ok::<_, Error>(())
            })
            .await?;
        Ok(identities.shared.clone())
    }

    /// Reads `node`'s record back after this replica wrote it, so its own next request sees
    /// the change without waiting for the watch.
    async fn refresh_identity(&self, node: &str) -> Result<()> {
        let shared = self.registry().await?;
        let key = identity_key(node);
        // Records are never deleted by the API; a deletion by hand arrives by the watch.
        if let Some(kv) = self.get_kv(&key).await? {
            let record = decode::<IdentityRecord>(&kv.key, &kv.value)?;
            shared.apply(node, Some(record), kv.mod_revision);
        }
        Ok(())
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
            token.used_by = Some(request.node.clone());
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

/// The routes of node identities.
pub(crate) fn routes() -> Router<Controller> {
    Router::new()
        .route("/v1/join-tokens", post(create_join_token))
        .route("/v1/join", post(join))
        .route("/v1/renew", post(renew))
        .route("/v1/revocations", post(revoke))
}

async fn create_join_token(State(c): State<Controller>, body: Bytes) -> Result<Response> {
    let request: CreateJoinToken = decode_body("CreateJoinToken", &body)?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(c.create_join_token(&request).await?),
    )
        .into_response())
}

async fn join(State(c): State<Controller>, body: Bytes) -> Result<Response> {
    let request: JoinRequest = decode_body("JoinRequest", &body)?;
    match c.join(&request).await {
        Ok(answer) => Ok(Json(answer).into_response()),
        Err(e) => {
            // A refused join is worth a line: someone holds a bad token or tries names.
            if e.status() < 500 {
                tracing::warn!(node = %request.node, error = %e.message(), "join refused");
            }
            Err(e)
        }
    }
}

async fn renew(
    State(c): State<Controller>,
    caller: Option<Extension<Caller>>,
    body: Bytes,
) -> Result<Response> {
    let caller = caller.map_or(Caller::Anonymous, |Extension(c)| c);
    let request: RenewRequest = decode_body("RenewRequest", &body)?;
    Ok(Json(c.renew(&caller, &request).await?).into_response())
}

async fn revoke(State(c): State<Controller>, body: Bytes) -> Result<Response> {
    let request: Revocation = decode_body("Revocation", &body)?;
    Ok(Json(c.revoke(&request).await?).into_response())
}

#[cfg(test)]
mod tests;
