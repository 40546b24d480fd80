//! The identity registry: the records of node identities, kept in memory by every replica and
//! following the store, the verdict on a caller's identity, and the guard that ends a revoked
//! node's watch.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use seam_model::{CallerRole, Identity};
use seam_store::{AnyStore, Datastore, Event};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::IdentityError;
use crate::controller::{decode, Controller};
use crate::error::{Error, Result};

/// Prefix of the node identity records (`/seam/security/identities/<node>`).
pub const IDENTITIES_PREFIX: &str = "/seam/security/identities/";

/// How long the registry waits before it lists the store again after its watch broke.
const RESYNC_PAUSE: Duration = Duration::from_secs(1);

/// A node's identity record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IdentityRecord {
    pub(super) epoch: u64,
    pub(super) revoked: bool,
    pub(super) joined_at: String,
}

/// The store key of `node`'s identity record.
pub fn identity_key(node: &str) -> String {
    format!("{IDENTITIES_PREFIX}{node}")
}

/// Whether `identity` passes against the registry's `record` of its node.
pub(super) fn verdict(
    identity: &Identity,
    record: Option<&IdentityRecord>,
) -> Result<(), IdentityError> {
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
    pub(super) async fn refresh_identity(&self, node: &str) -> Result<()> {
        let shared = self.registry().await?;
        let key = identity_key(node);
        // Records are never deleted by the API; a deletion by hand arrives by the watch.
        if let Some(kv) = self.get_kv(&key).await? {
            let record = decode::<IdentityRecord>(&kv.key, &kv.value)?;
            shared.apply(node, Some(record), kv.mod_revision);
        }
        Ok(())
    }
}
