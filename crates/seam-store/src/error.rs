//! The one error type of the store.

use std::path::PathBuf;

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The embedded store file could not be opened or created.
    #[error("cannot open store file {path}")]
    Open {
        /// The file that was being opened.
        path: PathBuf,
        /// What redb reported (boxed: redb's error is large).
        #[source]
        source: Box<redb::Error>,
    },
    /// The embedded backend failed while running an operation.
    #[error("store {op} failed on {key:?}")]
    Backend {
        /// The operation: `get`, `list`, `txn`, `watch`, `revision` or `open`.
        op: &'static str,
        /// The key or prefix the operation was about (empty when none).
        key: String,
        /// What redb reported (boxed: redb's error is large).
        #[source]
        source: Box<redb::Error>,
    },
    /// A blocking store task did not finish (it panicked or the runtime shut down).
    #[error("store task for {op} did not finish")]
    Task {
        /// The operation the task was running.
        op: &'static str,
        /// Why the task did not finish.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A watch asked for history that has been compacted away.
    #[error("watch from revision {requested} is compacted, oldest kept revision is {oldest}")]
    Compacted {
        /// The revision the watch asked to start from.
        requested: u64,
        /// The oldest revision still held in the change log.
        oldest: u64,
    },
    /// A watcher did not keep up and was dropped; re-watch from `revision` to resume.
    #[error("watcher on prefix {prefix:?} fell behind at revision {revision} and was dropped")]
    WatcherLagged {
        /// The prefix the watcher was on.
        prefix: String,
        /// The first revision the watcher did not receive.
        revision: u64,
    },
    /// A transaction names the same key in more than one operation.
    #[error("key {key:?} appears in more than one operation of a txn")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// The lease does not exist (it expired, was revoked or was never granted).
    #[error("lease {lease} not found (expired or revoked)")]
    LeaseNotFound {
        /// The lease.
        lease: crate::LeaseId,
    },
    /// The etcd backend failed (etcd unreachable, no quorum, request refused). Callers retry;
    /// nothing is known about whether a txn that failed this way was applied.
    #[error("etcd {op} failed on {key:?}{hint}")]
    Etcd {
        /// The operation: `connect`, `get`, `list`, `txn`, `watch`, `revision`, `compact` or a lease
        /// operation.
        op: &'static str,
        /// The key or prefix (without the namespace), empty when none.
        key: String,
        /// The likely cause when the client's error hides it (e.g. a refused TLS client
        /// certificate), starting with a space; empty when none.
        hint: &'static str,
        /// What the etcd client reported.
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// The etcd connection settings do not fit together (e.g. `https://` endpoints without
    /// TLS settings); found at connect, before any request.
    #[error("invalid etcd connection settings: {reason}")]
    EtcdSettings {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// etcd answered with something the store cannot use.
    #[error("etcd {op} returned an unexpected response: {reason}")]
    EtcdResponse {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A stored record could not be decoded.
    #[error("stored record for {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The key (or log position) of the record.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
