//! The closed set of backends, chosen at run time.

use std::path::Path;
use std::time::Duration;

use crate::embedded::EmbeddedStore;
use crate::error::Result;
use crate::etcd::{EtcdConfig, EtcdStore};
use crate::memory::MemoryStore;
use crate::types::{Datastore, KeyValue, LeaseId, Txn, TxnOutcome};
use crate::watch::Watch;

/// One of the store backends; implements [`Datastore`] by dispatch.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// In memory, for tests.
    Memory(MemoryStore),
    /// One redb file.
    Embedded(EmbeddedStore),
    /// An etcd v3 cluster.
    Etcd(EtcdStore),
}

impl AnyStore {
    /// A fresh in-memory store.
    pub fn memory() -> Self {
        AnyStore::Memory(MemoryStore::new())
    }

    /// Opens (or creates) the embedded store file at `path`.
    pub fn open_embedded(path: impl AsRef<Path>) -> Result<Self> {
        Ok(AnyStore::Embedded(EmbeddedStore::open(path)?))
    }

    /// Opens (or creates) the embedded store file at `path` with the given tunables.
    pub fn open_embedded_with(path: impl AsRef<Path>, config: crate::StoreConfig) -> Result<Self> {
        Ok(AnyStore::Embedded(EmbeddedStore::open_with(path, config)?))
    }
}

impl AnyStore {
    /// Connects to etcd (lazily: see [`EtcdStore::connect`]).
    pub async fn connect_etcd(config: EtcdConfig) -> Result<Self> {
        Ok(AnyStore::Etcd(EtcdStore::connect(config).await?))
    }
}

impl From<EtcdStore> for AnyStore {
    fn from(store: EtcdStore) -> Self {
        AnyStore::Etcd(store)
    }
}

impl From<MemoryStore> for AnyStore {
    fn from(store: MemoryStore) -> Self {
        AnyStore::Memory(store)
    }
}

impl From<EmbeddedStore> for AnyStore {
    fn from(store: EmbeddedStore) -> Self {
        AnyStore::Embedded(store)
    }
}

impl Datastore for AnyStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        match self {
            AnyStore::Memory(s) => s.get(key).await,
            AnyStore::Embedded(s) => s.get(key).await,
            AnyStore::Etcd(s) => s.get(key).await,
        }
    }

    async fn list(&self, prefix: &str) -> Result<(u64, Vec<KeyValue>)> {
        match self {
            AnyStore::Memory(s) => s.list(prefix).await,
            AnyStore::Embedded(s) => s.list(prefix).await,
            AnyStore::Etcd(s) => s.list(prefix).await,
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        match self {
            AnyStore::Memory(s) => s.txn(txn).await,
            AnyStore::Embedded(s) => s.txn(txn).await,
            AnyStore::Etcd(s) => s.txn(txn).await,
        }
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch> {
        match self {
            AnyStore::Memory(s) => s.watch(prefix, from_revision).await,
            AnyStore::Embedded(s) => s.watch(prefix, from_revision).await,
            AnyStore::Etcd(s) => s.watch(prefix, from_revision).await,
        }
    }

    async fn revision(&self) -> Result<u64> {
        match self {
            AnyStore::Memory(s) => s.revision().await,
            AnyStore::Embedded(s) => s.revision().await,
            AnyStore::Etcd(s) => s.revision().await,
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        match self {
            AnyStore::Memory(s) => s.grant_lease(ttl).await,
            AnyStore::Embedded(s) => s.grant_lease(ttl).await,
            AnyStore::Etcd(s) => s.grant_lease(ttl).await,
        }
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        match self {
            AnyStore::Memory(s) => s.keep_alive(lease).await,
            AnyStore::Embedded(s) => s.keep_alive(lease).await,
            AnyStore::Etcd(s) => s.keep_alive(lease).await,
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match self {
            AnyStore::Memory(s) => s.revoke_lease(lease).await,
            AnyStore::Embedded(s) => s.revoke_lease(lease).await,
            AnyStore::Etcd(s) => s.revoke_lease(lease).await,
        }
    }
}
