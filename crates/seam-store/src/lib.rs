//! Seam's revisioned key-value store with watch.
//!
//! Holds the [`Datastore`] trait (etcd v3 semantics: one store revision per committed txn,
//! compare-and-swap on `mod_revision`, prefix watches that replay history and then stream live
//! changes, leases) and its backends: [`EmbeddedStore`] (one crash-safe redb file),
//! [`EtcdStore`] (an etcd v3 cluster shared by controller replicas) and [`MemoryStore`] (for
//! tests), dispatched through [`AnyStore`].
//!
//! Architecture invariants: this crate depends on no other Seam crate (its tests use seam-pki
//! for certificates), knows nothing about what the keys and values mean, and is the only crate
//! that links redb and etcd-client. It must never block a tokio worker: redb work runs in `spawn_blocking`, and writers never wait on a slow
//! watcher (it is dropped with [`Error::WatcherLagged`] instead).
//!
//! Start reading at [`Datastore`].

#![warn(missing_docs)]

mod any;
mod embedded;
mod error;
mod etcd;
mod lease;
mod memory;
mod types;
mod watch;

pub use any::AnyStore;
pub use embedded::EmbeddedStore;
pub use error::{Error, Result};
pub use etcd::{EtcdClientCert, EtcdConfig, EtcdStore, EtcdTls};
pub use memory::MemoryStore;
pub use types::{Compare, Datastore, Event, KeyValue, LeaseId, Op, StoreConfig, Txn, TxnOutcome};
pub use watch::Watch;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
