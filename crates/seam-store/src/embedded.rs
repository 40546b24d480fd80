//! The embedded backend: one redb file, crash-safe.
//!
//! Tables:
//! - `kv`: key -> (create_revision, mod_revision, value);
//! - `log`: (revision, index in txn) -> (key, value or `None` for a delete), trimmed to the
//!   last [`StoreConfig::history`] events, whole revisions at a time;
//! - `meta`: `revision` (current store revision) and `compacted` (every revision up to it is
//!   gone from `log`);
//! - `lease_keys`: key -> lease of every key bound to a lease. Leases live in memory
//!   ([`crate::lease`]); on open, the keys bound to the previous run's leases are deleted, as
//!   their holder is gone.
//!
//! Every commit uses `Durability::Immediate`, so a txn that returned `Committed` survives a
//! crash. redb calls block (a commit fsyncs), so every operation runs in
//! `tokio::task::spawn_blocking`. Writes and watch registration also take a `std::sync::Mutex`
//! (never held across an await) so events are fanned out in revision order and a new watch
//! sees every revision exactly once. Reads use redb's MVCC snapshots and take no lock.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::error::{Error, Result};
use crate::lease::{spawn_expiry, LeaseTable};
use crate::types::{Datastore, Event, KeyValue, LeaseId, Op, StoreConfig, Txn, TxnOutcome};
use crate::watch::{start_revision, Hub, Watch};

const KV: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("kv");
/// A change-log record: the key and its new value (`None` for a delete).
type LogRecord<'a> = (&'a str, Option<&'a [u8]>);
const LOG: TableDefinition<(u64, u32), LogRecord> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const LEASE_KEYS: TableDefinition<&str, i64> = TableDefinition::new("lease_keys");

struct Inner {
    db: Database,
    path: PathBuf,
    config: StoreConfig,
    /// Held while committing and while registering a watch.
    hub: Mutex<Shared>,
}

/// What writers and watch registration share under one lock.
#[derive(Default)]
struct Shared {
    hub: Hub,
    leases: LeaseTable,
}

/// A [`Datastore`] in one redb file. Cheap to clone; clones share the open database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn backend<'a>(op: &'static str, key: &'a str) -> impl FnOnce(redb::Error) -> Error + 'a {
    move |source| Error::Backend {
        op,
        key: key.to_string(),
        source: Box::new(source),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path` with the default [`StoreConfig`].
    /// Blocks while redb opens (and, after a crash, repairs) the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, StoreConfig::default())
    }

    /// Opens (or creates) the store file at `path` with the given tunables.
    pub fn open_with(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source: redb::Error| Error::Open {
            path: path.clone(),
            source: Box::new(source),
        };
        // The file holds addresses, labels and node identities: only its owner (root) reads it.
        // Created 0600 before redb writes a byte (redb initializes an empty file); an existing
        // file from an older version is narrowed too.
        owner_only(&path).map_err(|e| open_err(redb::StorageError::Io(e).into()))?;
        // redb's page cache grows to its limit (1 GiB by default) as pages are touched; a node agent
        // must stay small, so the limit is the caller's choice.
        let db = redb::Builder::new()
            .set_cache_size(config.cache_bytes)
            .create(&path)
            .map_err(|e| open_err(e.into()))?;
        // Create the tables so that readers never see them missing.
        let mut wtx = db.begin_write().map_err(|e| open_err(e.into()))?;
        wtx.set_durability(Durability::Immediate)
            .map_err(|e| open_err(e.into()))?;
        {
            wtx.open_table(KV).map_err(|e| open_err(e.into()))?;
            wtx.open_table(LOG).map_err(|e| open_err(e.into()))?;
            wtx.open_table(META).map_err(|e| open_err(e.into()))?;
        }
        let orphans = {
            let table = wtx.open_table(LEASE_KEYS).map_err(|e| open_err(e.into()))?;
            let mut keys = Vec::new();
            for entry in table.iter().map_err(|e| open_err(e.into()))? {
                let (k, _) = entry.map_err(|e| open_err(e.into()))?;
                keys.push(k.value().to_string());
            }
            keys
        };
        wtx.commit().map_err(|e| open_err(e.into()))?;
        let inner = Inner {
            db,
            path,
            config,
            hub: Mutex::default(),
        };
        if !orphans.is_empty() {
            tracing::info!(
                keys = orphans.len(),
                "deleting keys bound to the previous run's leases"
            );
            txn_sync(&inner, orphans.into_iter().fold(Txn::new(), Txn::delete))?;
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Number of live watchers.
    pub fn watcher_count(&self) -> usize {
        lock(&self.inner.hub).hub.len()
    }

    async fn blocking<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|source| Error::Task { op, source })?
    }
}

/// A poisoned lock still guards a consistent hub: `publish` finishes before anything can panic.
fn lock(hub: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    hub.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_meta(
    table: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> redb::Result<u64, redb::Error> {
    Ok(table.get(name)?.map_or(0, |v| v.value()))
}

fn get_sync(inner: &Inner, key: &str) -> Result<Option<KeyValue>> {
    let run = || -> Result<Option<KeyValue>, redb::Error> {
        let rtx = inner.db.begin_read()?;
        let table = rtx.open_table(KV)?;
        Ok(table.get(key)?.map(|g| {
            let (create_revision, mod_revision, value) = g.value();
            KeyValue {
                key: key.to_string(),
                value: value.to_vec(),
                create_revision,
                mod_revision,
            }
        }))
    };
    run().map_err(backend("get", key))
}

fn list_sync(inner: &Inner, prefix: &str) -> Result<(u64, Vec<KeyValue>)> {
    let run = || -> Result<(u64, Vec<KeyValue>), redb::Error> {
        let rtx = inner.db.begin_read()?;
        let revision = read_meta(&rtx.open_table(META)?, META_REVISION)?;
        let table = rtx.open_table(KV)?;
        let mut out = Vec::new();
        for entry in table.range::<&str>(prefix..)? {
            let (k, v) = entry?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let (create_revision, mod_revision, value) = v.value();
            out.push(KeyValue {
                key: key.to_string(),
                value: value.to_vec(),
                create_revision,
                mod_revision,
            });
        }
        Ok((revision, out))
    };
    run().map_err(backend("list", prefix))
}

fn txn_sync(inner: &Inner, txn: Txn) -> Result<TxnOutcome> {
    txn.check()?;
    let mut shared = lock(&inner.hub);
    txn_locked(inner, &mut shared, txn)
}

/// Commits `txn` with the shared state locked.
fn txn_locked(inner: &Inner, shared: &mut Shared, txn: Txn) -> Result<TxnOutcome> {
    let first_key = txn
        .success
        .first()
        .map(|op| op.key().to_string())
        .unwrap_or_default();
    let run = || -> Result<(Result<TxnOutcome>, Vec<Event>), redb::Error> {
        let mut wtx = inner.db.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        let mut events = Vec::new();
        let revision;
        {
            let mut kv = wtx.open_table(KV)?;
            for compare in &txn.compares {
                let current = kv.get(compare.key())?.map(|g| g.value().1);
                if !compare.holds(current) {
                    drop(kv);
                    wtx.abort()?;
                    return Ok((Ok(TxnOutcome::CompareFailed), events));
                }
            }
            if let Err(e) = shared.leases.check(&txn) {
                drop(kv);
                wtx.abort()?;
                return Ok((Err(e), events));
            }
            let mut meta = wtx.open_table(META)?;
            let mut lease_keys = wtx.open_table(LEASE_KEYS)?;
            let current = read_meta(&meta, META_REVISION)?;
            revision = current + 1;
            for op in &txn.success {
                match op {
                    Op::Put {
                        lease: Some(lease),
                        key,
                        ..
                    } => {
                        lease_keys.insert(key.as_str(), lease.0)?;
                    }
                    Op::Put {
                        key, lease: None, ..
                    }
                    | Op::Delete { key } => {
                        lease_keys.remove(key.as_str())?;
                    }
                }
                match op {
                    Op::Put { key, value, .. } => {
                        let create = kv.get(key.as_str())?.map_or(revision, |g| g.value().0);
                        kv.insert(key.as_str(), (create, revision, value.as_slice()))?;
                        events.push(Event {
                            revision,
                            key: key.clone(),
                            value: Some(value.clone()),
                        });
                    }
                    Op::Delete { key } => {
                        if kv.remove(key.as_str())?.is_some() {
                            events.push(Event {
                                revision,
                                key: key.clone(),
                                value: None,
                            });
                        }
                    }
                }
            }
            if events.is_empty() {
                drop((kv, meta, lease_keys));
                wtx.abort()?;
                return Ok((Ok(TxnOutcome::Committed { revision: current }), events));
            }
            meta.insert(META_REVISION, revision)?;
            let mut log = wtx.open_table(LOG)?;
            for (index, event) in (0u32..).zip(&events) {
                log.insert(
                    (revision, index),
                    (event.key.as_str(), event.value.as_deref()),
                )?;
            }
            let mut compacted = read_meta(&meta, META_COMPACTED)?;
            let history = u64::try_from(inner.config.history).unwrap_or(u64::MAX);
            let mut len = log.len()?;
            while len > history {
                // The newest revision stays whole, even when it alone exceeds `history`.
                let Some(oldest) = log.first()?.map(|(k, _)| k.value().0) else {
                    break;
                };
                if oldest == revision {
                    break;
                }
                let removed = log
                    .extract_from_if((oldest, 0)..=(oldest, u32::MAX), |_, _| true)?
                    .count();
                len = len.saturating_sub(u64::try_from(removed).unwrap_or(u64::MAX));
                compacted = oldest;
            }
            meta.insert(META_COMPACTED, compacted)?;
        }
        wtx.commit()?;
        Ok((Ok(TxnOutcome::Committed { revision }), events))
    };
    let (outcome, events) = run().map_err(backend("txn", &first_key))?;
    let outcome = outcome?;
    if let TxnOutcome::Committed { .. } = outcome {
        for op in &txn.success {
            shared.leases.apply(op);
        }
    }
    if !events.is_empty() {
        shared.hub.publish(&events);
    }
    Ok(outcome)
}

/// Deletes the keys of `lease` if it has expired; the next deadline otherwise.
fn expire_sync(inner: &Inner, lease: LeaseId) -> Option<tokio::time::Instant> {
    let mut shared = lock(&inner.hub);
    let Some(txn) = shared.leases.remove_if_expired(lease) else {
        return shared.leases.deadline(lease);
    };
    tracing::debug!(%lease, "lease expired");
    if let Err(e) = txn_locked(inner, &mut shared, txn) {
        tracing::warn!(%lease, error = %e, "cannot delete the keys of an expired lease");
    }
    None
}

fn watch_sync(inner: &Inner, prefix: &str, from_revision: u64) -> Result<Watch> {
    let mut hub = lock(&inner.hub);
    let run = || -> Result<Result<(u64, VecDeque<Event>)>, redb::Error> {
        let rtx = inner.db.begin_read()?;
        let meta = rtx.open_table(META)?;
        let current = read_meta(&meta, META_REVISION)?;
        let compacted = read_meta(&meta, META_COMPACTED)?;
        let from = match start_revision(from_revision, current, compacted) {
            Ok(from) => from,
            Err(e) => return Ok(Err(e)),
        };
        let log = rtx.open_table(LOG)?;
        let mut replay = VecDeque::new();
        for entry in log.range((from, 0)..)? {
            let (k, v) = entry?;
            let (key, value) = v.value();
            if key.starts_with(prefix) {
                replay.push_back(Event {
                    revision: k.value().0,
                    key: key.to_string(),
                    value: value.map(<[u8]>::to_vec),
                });
            }
        }
        Ok(Ok((from.max(current + 1), replay)))
    };
    let (live_from, replay) = run().map_err(backend("watch", prefix))??;
    Ok(hub
        .hub
        .register(prefix, live_from, replay, inner.config.watch_buffer))
}

fn revision_sync(inner: &Inner) -> Result<u64> {
    let run = || -> Result<u64, redb::Error> {
        let rtx = inner.db.begin_read()?;
        read_meta(&rtx.open_table(META)?, META_REVISION)
    };
    run().map_err(backend("revision", ""))
}

impl Datastore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.blocking("get", move |inner| get_sync(inner, &key))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<(u64, Vec<KeyValue>)> {
        let prefix = prefix.to_string();
        self.blocking("list", move |inner| list_sync(inner, &prefix))
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.blocking("txn", move |inner| txn_sync(inner, txn))
            .await
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch> {
        let prefix = prefix.to_string();
        self.blocking("watch", move |inner| {
            watch_sync(inner, &prefix, from_revision)
        })
        .await
    }

    async fn revision(&self) -> Result<u64> {
        self.blocking("revision", revision_sync).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let (lease, deadline) = lock(&self.inner.hub).leases.grant(ttl);
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        spawn_expiry(deadline, move || {
            let inner = inner.clone();
            async move {
                let inner = inner.upgrade()?;
                tokio::task::spawn_blocking(move || expire_sync(&inner, lease))
                    .await
                    .ok()
                    .flatten()
            }
        });
        Ok(lease)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        lock(&self.inner.hub).leases.keep_alive(lease)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.blocking("revoke_lease", move |inner| {
            let mut shared = lock(&inner.hub);
            if let Some(txn) = shared.leases.remove(lease) {
                txn_locked(inner, &mut shared, txn)?;
            }
            Ok(())
        })
        .await
    }
}

/// Creates `path` with mode 0600 if it is missing, else sets its mode to 0600.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
