//! Values the store reads, writes and streams.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::watch::Watch;

/// A key with its value and the revisions that created and last modified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes, opaque to the store.
    pub value: Vec<u8>,
    /// Revision of the txn that created the key (since it was last absent).
    pub create_revision: u64,
    /// Revision of the txn that last wrote the key.
    pub mod_revision: u64,
}

/// A condition a [`Txn`] checks before it applies its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key must not exist.
    Absent(String),
    /// The key's `mod_revision` must equal the given one (0 means the key is absent).
    ModRevision(String, u64),
}

impl Compare {
    /// The key this compare is about.
    pub fn key(&self) -> &str {
        match self {
            Compare::Absent(key) | Compare::ModRevision(key, _) => key,
        }
    }

    /// Whether the compare holds, given the key's current `mod_revision` (`None` = absent).
    pub(crate) fn holds(&self, current: Option<u64>) -> bool {
        match self {
            Compare::Absent(_) => current.is_none(),
            Compare::ModRevision(_, want) => current.unwrap_or(0) == *want,
        }
    }
}

/// One write in a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite a key.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Vec<u8>,
        /// The lease the key is bound to: it is deleted when the lease expires or is revoked.
        /// `None` also unbinds a key from the lease it had.
        lease: Option<LeaseId>,
    },
    /// Delete a key (a no-op when it is absent).
    Delete {
        /// The key.
        key: String,
    },
}

impl Op {
    /// The key this operation writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// An atomic transaction: when every compare holds, apply every operation under one new
/// revision; otherwise change nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions that must all hold.
    pub compares: Vec<Compare>,
    /// Operations applied when they do. Each key may appear at most once.
    pub success: Vec<Op>,
}

impl Txn {
    /// An empty transaction (no compares, no operations).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition.
    #[must_use]
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Adds an operation applied on success.
    #[must_use]
    pub fn then(mut self, op: Op) -> Self {
        self.success.push(op);
        self
    }

    /// Adds a put of `key` on success.
    #[must_use]
    pub fn put(self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.then(Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        })
    }

    /// Adds a put of `key` bound to `lease` on success (the txn fails with
    /// [`Error::LeaseNotFound`] when the lease is gone).
    #[must_use]
    pub fn put_with_lease(
        self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Self {
        self.then(Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        })
    }

    /// Adds a delete of `key` on success.
    #[must_use]
    pub fn delete(self, key: impl Into<String>) -> Self {
        self.then(Op::Delete { key: key.into() })
    }

    /// Rejects a transaction that writes the same key twice (etcd does the same).
    pub(crate) fn check(&self) -> Result<()> {
        let mut seen = BTreeSet::new();
        for op in &self.success {
            if !seen.insert(op.key()) {
                return Err(Error::DuplicateKey {
                    key: op.key().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// A lease granted by [`Datastore::grant_lease`]: keys put with it live as long as it is kept
/// alive (the holder's liveness, e.g. the controller leader's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// What a [`Txn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every compare held and the operations were applied. `revision` is the new store
    /// revision, or the unchanged current one when the operations changed nothing.
    Committed {
        /// Store revision after the txn.
        revision: u64,
    },
    /// A compare did not hold; nothing was changed.
    CompareFailed,
}

/// One change to one key, as streamed by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Revision of the txn that made the change (several events may share it).
    pub revision: u64,
    /// The key that changed.
    pub key: String,
    /// The new value, `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
}

/// A revisioned key-value store with prefix watches, shaped like etcd v3.
///
/// Every committed [`Txn`] that changes something gets one new revision; revisions only grow,
/// also across restarts. Methods return `Send` futures so callers can spawn them.
pub trait Datastore: Send + Sync {
    /// Reads one key.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<KeyValue>>> + Send;

    /// Reads every key that starts with `prefix`, in key order, together with the store
    /// revision the read saw (use it as `from_revision - 1` of a following watch).
    fn list(&self, prefix: &str) -> impl Future<Output = Result<(u64, Vec<KeyValue>)>> + Send;

    /// Applies a transaction atomically.
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnOutcome>> + Send;

    /// Streams every change with revision `>= from_revision` to keys under `prefix`, in
    /// revision order: first the ones already in the change log, then live ones, without gaps or
    /// duplicates. `from_revision == 0` means "only changes after now". Fails with
    /// [`Error::Compacted`] when the log no longer holds `from_revision`.
    fn watch(&self, prefix: &str, from_revision: u64)
        -> impl Future<Output = Result<Watch>> + Send;

    /// The current store revision (0 for a store that was never written).
    fn revision(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Grants a lease that expires `ttl` after its last keep-alive (etcd may round the TTL up to
    /// whole seconds and its minimum).
    fn grant_lease(&self, ttl: Duration) -> impl Future<Output = Result<LeaseId>> + Send;

    /// Renews `lease` for another TTL. Fails with [`Error::LeaseNotFound`] when it expired or
    /// was revoked: its keys are gone by then.
    fn keep_alive(&self, lease: LeaseId) -> impl Future<Output = Result<()>> + Send;

    /// Revokes `lease`, deleting every key bound to it under one revision. Revoking a lease
    /// that is already gone succeeds.
    fn revoke_lease(&self, lease: LeaseId) -> impl Future<Output = Result<()>> + Send;
}

/// Tunables shared by the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// How many change-log events to keep for watches; older revisions are compacted.
    pub history: usize,
    /// Capacity of each watcher's channel; a watcher that falls this far behind is dropped
    /// with [`Error::WatcherLagged`].
    pub watch_buffer: usize,
    /// Upper bound of the embedded store's page cache, in bytes.
    pub cache_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            history: 10_000,
            watch_buffer: 1024,
            cache_bytes: 16 << 20,
        }
    }
}
