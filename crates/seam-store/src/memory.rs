//! The in-memory backend, for tests and single-process tools. Same semantics as the embedded
//! one, nothing survives the process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use crate::error::Result;
use crate::lease::{spawn_expiry, LeaseTable};
use crate::types::{Datastore, Event, KeyValue, LeaseId, Op, StoreConfig, Txn, TxnOutcome};
use crate::watch::{start_revision, Hub, Watch};

#[derive(Default)]
struct State {
    data: BTreeMap<String, KeyValue>,
    log: VecDeque<Event>,
    revision: u64,
    /// Every revision `<= compacted` is gone from `log`.
    compacted: u64,
    hub: Hub,
    leases: LeaseTable,
}

/// An in-memory [`Datastore`]. Cheap to clone; clones share the data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    config: StoreConfig,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store with the default [`StoreConfig`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with the given tunables.
    pub fn with_config(config: StoreConfig) -> Self {
        Self {
            state: Arc::default(),
            config,
        }
    }

    /// The lock is never held across an await; a poisoned lock still holds consistent data
    /// because every mutation below completes before anything can panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of live watchers.
    pub fn watcher_count(&self) -> usize {
        self.lock().hub.len()
    }

    fn txn_sync(&self, txn: Txn) -> Result<TxnOutcome> {
        txn.check()?;
        let mut guard = self.lock();
        apply(&mut guard, self.config.history, txn)
    }
}

/// Applies `txn` to the locked state: compares, writes, lease bindings, log and fan-out.
fn apply(state: &mut State, history: usize, txn: Txn) -> Result<TxnOutcome> {
    let holds = txn
        .compares
        .iter()
        .all(|c| c.holds(state.data.get(c.key()).map(|kv| kv.mod_revision)));
    if !holds {
        return Ok(TxnOutcome::CompareFailed);
    }
    state.leases.check(&txn)?;
    let revision = state.revision + 1;
    let mut events = Vec::new();
    for op in txn.success {
        state.leases.apply(&op);
        match op {
            Op::Put { key, value, .. } => {
                let create_revision = state
                    .data
                    .get(&key)
                    .map_or(revision, |kv| kv.create_revision);
                state.data.insert(
                    key.clone(),
                    KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                    },
                );
                events.push(Event {
                    revision,
                    key,
                    value: Some(value),
                });
            }
            Op::Delete { key } => {
                if state.data.remove(&key).is_some() {
                    events.push(Event {
                        revision,
                        key,
                        value: None,
                    });
                }
            }
        }
    }
    if events.is_empty() {
        return Ok(TxnOutcome::Committed {
            revision: state.revision,
        });
    }
    state.revision = revision;
    state.log.extend(events.iter().cloned());
    compact(&mut state.log, &mut state.compacted, history);
    state.hub.publish(&events);
    Ok(TxnOutcome::Committed { revision })
}

/// Deletes the keys of `lease` if it has expired; the next deadline otherwise.
fn expire(
    state: &Weak<Mutex<State>>,
    history: usize,
    lease: LeaseId,
) -> Option<tokio::time::Instant> {
    let state = state.upgrade()?;
    let mut guard = state.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(txn) = guard.leases.remove_if_expired(lease) else {
        return guard.leases.deadline(lease);
    };
    tracing::debug!(%lease, "lease expired");
    if let Err(e) = apply(&mut guard, history, txn) {
        tracing::warn!(%lease, error = %e, "cannot delete the keys of an expired lease");
    }
    None
}

/// Drops whole revisions from the front of the log until it holds at most `history` events
/// (or only the newest revision).
fn compact(log: &mut VecDeque<Event>, compacted: &mut u64, history: usize) {
    while log.len() > history {
        // The newest revision stays whole, even when it alone exceeds `history`.
        let Some(oldest) = log.front().map(|e| e.revision) else {
            break;
        };
        if log.back().is_some_and(|e| e.revision == oldest) {
            break;
        }
        while log.front().is_some_and(|e| e.revision == oldest) {
            log.pop_front();
        }
        *compacted = oldest;
    }
}

impl Datastore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().data.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<(u64, Vec<KeyValue>)> {
        let state = self.lock();
        let kvs = state
            .data
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok((state.revision, kvs))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.txn_sync(txn)
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let from = start_revision(from_revision, state.revision, state.compacted)?;
        let replay = state
            .log
            .iter()
            .filter(|e| e.revision >= from && e.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok(state.hub.register(
            prefix,
            from.max(state.revision + 1),
            replay,
            self.config.watch_buffer,
        ))
    }

    async fn revision(&self) -> Result<u64> {
        Ok(self.lock().revision)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let (lease, deadline) = self.lock().leases.grant(ttl);
        let state = Arc::downgrade(&self.state);
        let history = self.config.history;
        spawn_expiry(deadline, move || {
            let next = expire(&state, history, lease);
            async move { next }
        });
        Ok(lease)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.lock().leases.keep_alive(lease)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut guard = self.lock();
        if let Some(txn) = guard.leases.remove(lease) {
            apply(&mut guard, self.config.history, txn)?;
        }
        Ok(())
    }
}
