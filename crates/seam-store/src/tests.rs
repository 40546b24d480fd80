//! The store contract suite, run against every backend (etcd: a real etcd per test), plus
//! backend-specific tests (embedded: reopen, crash safety; etcd: namespaces, a killed member,
//! an outage).

use std::sync::Arc;
use std::time::Duration;

use crate::testing::EtcdCluster;
use crate::{
    AnyStore, Compare, Datastore, EmbeddedStore, Error, EtcdStore, Event, MemoryStore, Op,
    StoreConfig, Txn, TxnOutcome, Watch,
};

/// The generic contract every [`Datastore`] must meet.
mod contract {
    use super::*;

    pub(super) async fn put(store: &impl Datastore, key: &str, value: &str) -> u64 {
        match store.txn(Txn::new().put(key, value)).await.unwrap() {
            TxnOutcome::Committed { revision } => revision,
            TxnOutcome::CompareFailed => panic!("unconditional put failed"),
        }
    }

    async fn next_event(watch: &mut Watch) -> Event {
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("watch event within 5s")
            .expect("watch still open")
            .expect("watch event, not error")
    }

    pub(super) async fn put_get_list(store: impl Datastore) {
        assert_eq!(store.revision().await.unwrap(), 0);
        assert_eq!(store.get("a/1").await.unwrap(), None);
        assert_eq!(put(&store, "a/1", "one").await, 1);
        assert_eq!(put(&store, "a/2", "two").await, 2);
        assert_eq!(put(&store, "b/1", "bee").await, 3);
        assert_eq!(put(&store, "a", "bare").await, 4);

        let kv = store.get("a/1").await.unwrap().unwrap();
        assert_eq!((kv.key.as_str(), kv.value.as_slice()), ("a/1", &b"one"[..]));
        assert_eq!((kv.create_revision, kv.mod_revision), (1, 1));

        let (rev, kvs) = store.list("a/").await.unwrap();
        assert_eq!(rev, 4);
        let keys: Vec<_> = kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["a/1", "a/2"]);
        let (_, all) = store.list("").await.unwrap();
        assert_eq!(all.len(), 4);
        assert!(store.list("zzz").await.unwrap().1.is_empty());

        // Overwrite keeps create_revision and bumps mod_revision.
        assert_eq!(put(&store, "a/1", "uno").await, 5);
        let kv = store.get("a/1").await.unwrap().unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
            (&b"uno"[..], 1, 5)
        );

        // Delete, then delete again: the second changes nothing and gets no revision.
        let out = store.txn(Txn::new().delete("a/1")).await.unwrap();
        assert_eq!(out, TxnOutcome::Committed { revision: 6 });
        assert_eq!(store.get("a/1").await.unwrap(), None);
        let out = store.txn(Txn::new().delete("a/1")).await.unwrap();
        assert_eq!(out, TxnOutcome::Committed { revision: 6 });
        assert_eq!(store.revision().await.unwrap(), 6);

        // Re-created key gets a fresh create_revision.
        assert_eq!(put(&store, "a/1", "again").await, 7);
        let kv = store.get("a/1").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (7, 7));
    }

    pub(super) async fn txn_compares(store: impl Datastore) {
        let create = || Txn::new().when(Compare::Absent("k".into())).put("k", "v1");
        assert_eq!(
            store.txn(create()).await.unwrap(),
            TxnOutcome::Committed { revision: 1 }
        );
        assert_eq!(
            store.txn(create()).await.unwrap(),
            TxnOutcome::CompareFailed
        );

        // A failed compare changes nothing: no value, no revision, no event.
        let mut watch = store.watch("", 0).await.unwrap();
        let stale = Txn::new()
            .when(Compare::ModRevision("k".into(), 7))
            .put("k", "lost")
            .put("other", "lost");
        assert_eq!(store.txn(stale).await.unwrap(), TxnOutcome::CompareFailed);
        assert_eq!(store.revision().await.unwrap(), 1);
        assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v1");
        assert_eq!(store.get("other").await.unwrap(), None);

        // All compares must hold; ModRevision 0 means absent.
        let both = Txn::new()
            .when(Compare::ModRevision("k".into(), 1))
            .when(Compare::ModRevision("absent".into(), 0))
            .put("k", "v2")
            .put("other", "o")
            .delete("nothing-here");
        assert_eq!(
            store.txn(both).await.unwrap(),
            TxnOutcome::Committed { revision: 2 }
        );
        let half = Txn::new()
            .when(Compare::ModRevision("k".into(), 2))
            .when(Compare::Absent("other".into()))
            .put("k", "v3");
        assert_eq!(store.txn(half).await.unwrap(), TxnOutcome::CompareFailed);

        // One txn, one revision, one event per changed key.
        let a = next_event(&mut watch).await;
        let b = next_event(&mut watch).await;
        assert_eq!((a.revision, a.key.as_str()), (2, "k"));
        assert_eq!((b.revision, b.key.as_str()), (2, "other"));
        let kv = store.get("other").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (2, 2));

        // A key may appear once per txn.
        let dup = Txn::new()
            .put("x", "1")
            .then(Op::Delete { key: "x".into() });
        assert!(matches!(store.txn(dup).await, Err(Error::DuplicateKey { key }) if key == "x"));
        assert_eq!(store.revision().await.unwrap(), 2);
    }

    pub(super) async fn revisions_monotonic(store: impl Datastore) {
        let mut last = store.revision().await.unwrap();
        for i in 0..20 {
            let rev = put(&store, &format!("m/{}", i % 3), "x").await;
            assert_eq!(rev, last + 1);
            last = rev;
        }
        assert_eq!(store.revision().await.unwrap(), last);
    }

    pub(super) async fn watch_replay_then_live(store: impl Datastore) {
        put(&store, "w/a", "1").await; // 1
        put(&store, "x/a", "1").await; // 2
        put(&store, "w/b", "2").await; // 3
        store.txn(Txn::new().delete("w/a")).await.unwrap(); // 4

        let mut watch = store.watch("w/", 2).await.unwrap();
        let mut live_only = store.watch("w/", 0).await.unwrap();
        let e = next_event(&mut watch).await;
        assert_eq!(
            e,
            Event {
                revision: 3,
                key: "w/b".into(),
                value: Some(b"2".to_vec())
            }
        );
        let e = next_event(&mut watch).await;
        assert_eq!(
            e,
            Event {
                revision: 4,
                key: "w/a".into(),
                value: None
            }
        );

        put(&store, "x/b", "skip").await; // 5
        put(&store, "w/c", "3").await; // 6
        for w in [&mut watch, &mut live_only] {
            let e = next_event(w).await;
            assert_eq!((e.revision, e.key.as_str()), (6, "w/c"));
        }

        // A watch from a future revision skips what comes before it.
        let mut future = store.watch("w/", 8).await.unwrap();
        put(&store, "w/d", "4").await; // 7
        put(&store, "w/e", "5").await; // 8
        assert_eq!(next_event(&mut future).await.revision, 8);
        assert_eq!(next_event(&mut watch).await.revision, 7);
        assert_eq!(next_event(&mut watch).await.revision, 8);
    }

    /// Watches created while a writer runs see every revision exactly once, in order.
    pub(super) async fn watch_no_gap_under_writes(store: impl Datastore + 'static) {
        let store = Arc::new(store);
        let writer = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..100 {
                    put(&*store, &format!("g/{i}"), "x").await;
                }
            })
        };
        let mut watches = Vec::new();
        for _ in 0..5 {
            watches.push(store.watch("g/", 1).await.unwrap());
            tokio::task::yield_now().await;
        }
        writer.await.unwrap();
        for mut watch in watches {
            for rev in 1..=100 {
                assert_eq!(next_event(&mut watch).await.revision, rev);
            }
        }
    }

    pub(super) async fn watch_compacted(store: impl Datastore) {
        // The store keeps 5 events (etcd: 5 revisions; here one event each).
        for i in 0..20 {
            put(&store, &format!("c/{i}"), "x").await;
        }
        match store.watch("c/", 1).await {
            Err(Error::Compacted { requested, oldest }) => assert_eq!((requested, oldest), (1, 16)),
            other => panic!("expected Compacted, got {other:?}"),
        }
        assert!(matches!(
            store.watch("", 15).await,
            Err(Error::Compacted { .. })
        ));
        let mut watch = store.watch("c/", 16).await.unwrap();
        for rev in 16..=20 {
            assert_eq!(next_event(&mut watch).await.revision, rev);
        }
    }

    /// The local stores count history in events and drop whole revisions (etcd counts
    /// revisions, so this part of compaction is theirs alone).
    pub(super) async fn history_counts_events(store: impl Datastore) {
        // The store keeps 5 events.
        for i in 0..20 {
            put(&store, &format!("c/{i}"), "x").await;
        }
        // A multi-event txn is compacted as a whole.
        let big = (0..7).fold(Txn::new(), |t, i| t.put(format!("big/{i}"), "x"));
        assert_eq!(
            store.txn(big).await.unwrap(),
            TxnOutcome::Committed { revision: 21 }
        );
        assert!(matches!(
            store.watch("", 20).await,
            Err(Error::Compacted { oldest: 21, .. })
        ));
        let mut watch = store.watch("big/", 21).await.unwrap();
        for _ in 0..7 {
            assert_eq!(next_event(&mut watch).await.revision, 21);
        }
    }

    /// Keys bound to a lease live while it is kept alive and go when it expires or is revoked,
    /// with a delete event; keys without the lease stay.
    pub(super) async fn leases(store: impl Datastore) {
        let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
        let mut watch = store.watch("l/", 0).await.unwrap();
        let held = Txn::new()
            .put_with_lease("l/held", "x", lease)
            .put("l/plain", "y");
        let TxnOutcome::Committed { revision: put_rev } = store.txn(held).await.unwrap() else {
            panic!("unconditional put failed");
        };
        assert_eq!(next_event(&mut watch).await.key, "l/held");
        assert_eq!(next_event(&mut watch).await.key, "l/plain");

        // Kept alive past its TTL: still there.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            store.keep_alive(lease).await.unwrap();
        }
        assert!(store.get("l/held").await.unwrap().is_some());

        // Left alone: deleted (etcd checks expiry with some delay), with an event.
        let gone = next_event(&mut watch).await;
        assert_eq!((gone.key.as_str(), gone.value), ("l/held", None));
        assert!(gone.revision > put_rev);
        assert_eq!(store.get("l/held").await.unwrap(), None);
        assert!(store.get("l/plain").await.unwrap().is_some());
        assert!(matches!(
            store.keep_alive(lease).await,
            Err(Error::LeaseNotFound { lease: l }) if l == lease
        ));
        let late = Txn::new().put_with_lease("l/late", "x", lease);
        assert!(matches!(
            store.txn(late).await,
            Err(Error::LeaseNotFound { .. })
        ));
        assert_eq!(store.get("l/late").await.unwrap(), None);

        // Revoke deletes every key of the lease under one revision; a key re-put without the
        // lease is no longer bound to it.
        let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
        let txn = Txn::new()
            .put_with_lease("l/a", "1", lease)
            .put_with_lease("l/b", "2", lease)
            .put_with_lease("l/c", "3", lease);
        store.txn(txn).await.unwrap();
        put(&store, "l/c", "unbound").await;
        let mut watch = store.watch("l/", 0).await.unwrap();
        store.revoke_lease(lease).await.unwrap();
        let a = next_event(&mut watch).await;
        let b = next_event(&mut watch).await;
        assert_eq!((a.key.as_str(), b.key.as_str()), ("l/a", "l/b"));
        assert_eq!((a.value, b.value), (None, None));
        assert_eq!(a.revision, b.revision);
        assert_eq!(store.get("l/c").await.unwrap().unwrap().value, b"unbound");
        store.revoke_lease(lease).await.unwrap();
    }

    pub(super) async fn watch_lagging_is_dropped(store: impl Datastore) {
        // The store's watch buffer is 4.
        let mut slow = store.watch("", 0).await.unwrap();
        for i in 0..10 {
            put(&store, &format!("l/{i}"), "x").await;
        }
        let mut got = Vec::new();
        let end = loop {
            match slow.next().await {
                Some(Ok(e)) => got.push(e.revision),
                Some(Err(e)) => break e,
                None => panic!("stream ended without a lag error"),
            }
        };
        assert_eq!(got, [1, 2, 3]);
        assert!(
            matches!(end, Error::WatcherLagged { revision: 4, .. }),
            "{end:?}"
        );
        assert!(slow.next().await.is_none());
        // Re-watching from the reported revision resumes without loss.
        let mut again = store.watch("", 4).await.unwrap();
        for rev in 4..=10 {
            assert_eq!(next_event(&mut again).await.revision, rev);
        }
    }

    pub(super) async fn concurrent_cas(store: impl Datastore + 'static) {
        let store = Arc::new(store);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    loop {
                        let (count, rev) = match store.get("counter").await.unwrap() {
                            Some(kv) => (
                                String::from_utf8(kv.value).unwrap().parse::<u64>().unwrap(),
                                kv.mod_revision,
                            ),
                            None => (0, 0),
                        };
                        let txn = Txn::new()
                            .when(Compare::ModRevision("counter".into(), rev))
                            .put("counter", (count + 1).to_string());
                        if let TxnOutcome::Committed { .. } = store.txn(txn).await.unwrap() {
                            break;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let kv = store.get("counter").await.unwrap().unwrap();
        assert_eq!(kv.value, b"50");
        assert_eq!(kv.mod_revision, 50);
        assert_eq!(store.revision().await.unwrap(), 50);
    }
}

/// Runs the contract suite against one backend; `$make` builds an [`AnyStore`] from a
/// [`StoreConfig`] and returns it with a guard that must outlive it.
macro_rules! contract_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            async fn make(config: StoreConfig) -> (AnyStore, Box<dyn std::any::Any>) {
                ($make)(config).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn put_get_list() {
                let (store, _guard) = make(StoreConfig::default()).await;
                contract::put_get_list(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn txn_compares() {
                let (store, _guard) = make(StoreConfig::default()).await;
                contract::txn_compares(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn revisions_monotonic() {
                let (store, _guard) = make(StoreConfig::default()).await;
                contract::revisions_monotonic(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_replay_then_live() {
                let (store, _guard) = make(StoreConfig::default()).await;
                contract::watch_replay_then_live(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_no_gap_under_writes() {
                let (store, _guard) = make(StoreConfig::default()).await;
                contract::watch_no_gap_under_writes(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_compacted() {
                let (store, _guard) = make(StoreConfig {
                    history: 5,
                    ..StoreConfig::default()
                })
                .await;
                contract::watch_compacted(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_lagging_is_dropped() {
                let (store, _guard) = make(StoreConfig {
                    watch_buffer: 4,
                    ..StoreConfig::default()
                })
                .await;
                contract::watch_lagging_is_dropped(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_cas() {
                let (store, _guard) = make(StoreConfig::default()).await;
                contract::concurrent_cas(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn leases() {
                let (store, _guard) = make(StoreConfig::default()).await;
                contract::leases(store).await;
            }
        }
    };
}

async fn memory_store(config: StoreConfig) -> (AnyStore, Box<dyn std::any::Any>) {
    let guard: Box<dyn std::any::Any> = Box::new(());
    (AnyStore::from(MemoryStore::with_config(config)), guard)
}

async fn embedded_store(config: StoreConfig) -> (AnyStore, Box<dyn std::any::Any>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path().join("seam.redb"), config).unwrap();
    let guard: Box<dyn std::any::Any> = Box::new(dir);
    (AnyStore::from(store), guard)
}

/// A fresh etcd per test (the contract checks exact revisions), under a namespace so the
/// prefix mapping is exercised too. Fails, never skips, when etcd is not installed.
async fn etcd_store(config: StoreConfig) -> (AnyStore, Box<dyn std::any::Any>) {
    let cluster = EtcdCluster::start()
        .await
        .unwrap_or_else(|e| panic!("the etcd contract tests need a real etcd: {e}"));
    let store = EtcdStore::connect_with(cluster.config("/test-ns"), config)
        .await
        .unwrap();
    let guard: Box<dyn std::any::Any> = Box::new(cluster);
    (AnyStore::from(store), guard)
}

/// A fresh TLS-only etcd (clients and peers, `--client-cert-auth`) per test.
async fn etcd_tls_store(config: StoreConfig) -> (AnyStore, Box<dyn std::any::Any>) {
    let cluster = etcd_tls::cluster(1).await;
    let store = EtcdStore::connect_with(cluster.config("/tls-ns"), config)
        .await
        .unwrap();
    assert!(cluster
        .endpoints()
        .iter()
        .all(|e| e.starts_with("https://")));
    let guard: Box<dyn std::any::Any> = Box::new(cluster);
    (AnyStore::from(store), guard)
}

contract_suite!(memory, memory_store);
contract_suite!(embedded, embedded_store);
contract_suite!(etcd, etcd_store);
contract_suite!(etcd_over_tls, etcd_tls_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_history_counts_events() {
    let (store, _guard) = memory_store(StoreConfig {
        history: 5,
        ..StoreConfig::default()
    })
    .await;
    contract::history_counts_events(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_history_counts_events() {
    let (store, _guard) = embedded_store(StoreConfig {
        history: 5,
        ..StoreConfig::default()
    })
    .await;
    contract::history_counts_events(store).await;
}

/// Tests only the embedded backend can pass: durability across reopen and crashes.
mod embedded_only {
    use super::*;

    const CRASH_ENV: &str = "SEAM_STORE_CRASH_CHILD";
    const CRASH_WRITES: u64 = 20;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revisions_and_log_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seam.redb");
        {
            let store = AnyStore::open_embedded(&path).unwrap();
            contract::put(&store, "r/a", "1").await;
            contract::put(&store, "r/b", "2").await;
            store.txn(Txn::new().delete("r/a")).await.unwrap();
            assert_eq!(store.revision().await.unwrap(), 3);
        }
        let store = AnyStore::open_embedded(&path).unwrap();
        assert_eq!(store.revision().await.unwrap(), 3);
        assert_eq!(store.get("r/a").await.unwrap(), None);
        let kv = store.get("r/b").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (2, 2));
        assert_eq!(contract::put(&store, "r/c", "3").await, 4);
        let mut watch = store.watch("r/", 1).await.unwrap();
        let mut revs = Vec::new();
        for _ in 0..4 {
            revs.push(watch.next().await.unwrap().unwrap().revision);
        }
        assert_eq!(revs, [1, 2, 3, 4]);
    }

    #[test]
    fn second_open_of_same_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seam.redb");
        let _first = EmbeddedStore::open(&path).unwrap();
        match EmbeddedStore::open(&path) {
            Err(Error::Open { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected Open error, got {other:?}"),
        }
    }

    /// Helper run as a child process by `committed_txns_survive_a_crash`: writes, then aborts
    /// without any clean shutdown. Does nothing when run normally.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_child() {
        let Ok(path) = std::env::var(CRASH_ENV) else {
            return;
        };
        let store = EmbeddedStore::open(path).unwrap();
        for i in 0..CRASH_WRITES {
            contract::put(&store, &format!("crash/{i}"), &i.to_string()).await;
        }
        std::process::abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_txns_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seam.redb");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "tests::embedded_only::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_ENV, &path)
            .status()
            .unwrap();
        assert!(!status.success(), "child should have aborted");
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.revision().await.unwrap(), CRASH_WRITES);
        let (_, kvs) = store.list("crash/").await.unwrap();
        assert_eq!(kvs.len(), usize::try_from(CRASH_WRITES).unwrap());
        assert_eq!(contract::put(&store, "after", "x").await, CRASH_WRITES + 1);
    }
}

/// Tests only etcd can pass: shared clusters, a killed member, an outage.
mod etcd_only {
    use super::*;

    async fn cluster(members: usize) -> EtcdCluster {
        EtcdCluster::start_members(members)
            .await
            .unwrap_or_else(|e| panic!("the etcd tests need a real etcd: {e}"))
    }

    /// Retries `op` until it succeeds or `within` passes; returns the result and how many
    /// attempts failed.
    async fn retry<T, F, Fut>(within: Duration, mut op: F) -> (T, u32)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::Result<T>>,
    {
        let start = std::time::Instant::now();
        let mut failures = 0;
        loop {
            match op().await {
                Ok(v) => return (v, failures),
                Err(e) if start.elapsed() < within => {
                    failures += 1;
                    eprintln!("attempt failed: {e:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("still failing after {within:?}: {e}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn namespaces_share_one_etcd_without_seeing_each_other() {
        let etcd = cluster(1).await;
        let a = EtcdStore::connect(etcd.config("/cluster-a")).await.unwrap();
        let b = EtcdStore::connect(etcd.config("/cluster-b")).await.unwrap();
        let mut watch_b = b.watch("", 0).await.unwrap();
        contract::put(&a, "/seam/v1/nodes/n1", "a").await;
        contract::put(&b, "/seam/v1/nodes/n1", "b").await;
        assert_eq!(
            a.get("/seam/v1/nodes/n1").await.unwrap().unwrap().value,
            b"a"
        );
        let (_, listed) = b.list("").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "/seam/v1/nodes/n1");
        assert_eq!(listed[0].value, b"b");
        // b's watch sees only b's write, with b's key.
        let e = tokio::time::timeout(Duration::from_secs(5), watch_b.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.key.as_str(), e.value),
            ("/seam/v1/nodes/n1", Some(b"b".to_vec()))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_larger_than_a_page_are_one_snapshot() {
        let etcd = cluster(1).await;
        let store = EtcdStore::connect(etcd.config("/p")).await.unwrap();
        for chunk in 0..25 {
            let txn = (0..100).fold(Txn::new(), |t, i| {
                t.put(format!("k/{chunk:02}-{i:03}"), "x")
            });
            store.txn(txn).await.unwrap();
        }
        let (rev, kvs) = store.list("k/").await.unwrap();
        assert_eq!(rev, 25);
        assert_eq!(kvs.len(), 2500);
        assert!(kvs.windows(2).all(|w| w[0].key < w[1].key));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_members_keep_serving_with_one_killed() {
        let mut etcd = cluster(3).await;
        let store = EtcdStore::connect(etcd.config("/ha")).await.unwrap();
        for i in 0..10 {
            contract::put(&store, &format!("k/{i}"), "before").await;
        }
        let mut watch = store.watch("k/", 1).await.unwrap();
        etcd.kill(0);
        // The store sends requests refused by the dead member to the others. A write in flight
        // while the killed member was the raft leader can still time out (its outcome unknown),
        // so writes are retried as the controller's callers do: the Absent compare makes a
        // retry of an applied write harmless.
        let started = std::time::Instant::now();
        let mut failed = 0;
        for i in 10..30 {
            let key = format!("k/{i}");
            let (_, f) = retry(Duration::from_secs(10), || {
                store.txn(
                    Txn::new()
                        .when(Compare::Absent(key.clone()))
                        .put(&key, "after"),
                )
            })
            .await;
            failed += f;
        }
        let (_, kvs) = store.list("k/").await.unwrap();
        assert_eq!(kvs.len(), 30);
        eprintln!(
            "20 writes after the kill: {failed} failed attempts, {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(15));
        // A watch opened before the kill either streams on without a gap or ends with an error
        // (it was on the killed member); a new watch from where it stopped sees the rest.
        let mut next = 1;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
                Ok(Some(Ok(e))) => {
                    assert_eq!(e.revision, next);
                    next += 1;
                    if next > 30 {
                        break;
                    }
                }
                Ok(Some(Err(e))) => {
                    eprintln!("watch ended at revision {next}: {e}");
                    break;
                }
                other => panic!("watch neither streamed nor failed: {other:?}"),
            }
        }
        let mut rewatch = retry(Duration::from_secs(10), || store.watch("k/", next))
            .await
            .0;
        for rev in next..=30 {
            let e = tokio::time::timeout(Duration::from_secs(5), rewatch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(e.revision, rev);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_fails_requests_then_the_same_client_recovers() {
        let mut etcd = cluster(1).await;
        let store = EtcdStore::connect(etcd.config("/outage")).await.unwrap();
        contract::put(&store, "k/1", "x").await;
        etcd.kill(0);
        let started = std::time::Instant::now();
        let err = store.get("k/1").await.unwrap_err();
        assert!(matches!(err, Error::Etcd { op: "get", .. }), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        let err = store.txn(Txn::new().put("k/2", "x")).await.unwrap_err();
        assert!(matches!(err, Error::Etcd { op: "txn", .. }), "{err:?}");

        etcd.restart(0).await.unwrap();
        let (kv, _) = retry(Duration::from_secs(15), || store.get("k/1")).await;
        assert_eq!(kv.unwrap().value, b"x");
        assert_eq!(contract::put(&store, "k/2", "y").await, 2);
    }
}

/// etcd over TLS, for clients and peers, with `--client-cert-auth`: the whole contract suite
/// through TLS (above), and the refusals a misconfigured client must get.
mod etcd_tls {
    use super::*;
    use crate::testing::TestTls;
    use crate::{EtcdClientCert, EtcdConfig, EtcdTls};
    use seam_model::identity::{Identity, Role};

    const DAY: Duration = Duration::from_secs(86_400);

    fn client_cert(ca: &seam_pki::Ca, name: &str) -> EtcdClientCert {
        let issued = ca
            .issue_client(&Identity::of(Role::Admin, name), DAY)
            .unwrap();
        EtcdClientCert {
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }
    }

    /// A fresh CA (seam-pki), a member certificate for 127.0.0.1 (serving and peer) and a
    /// client certificate.
    pub(super) fn material() -> TestTls {
        let ca = seam_pki::Ca::generate("seam-store test CA", DAY).unwrap();
        let member = ca
            .issue_server("etcd", &[], &["127.0.0.1".parse().unwrap()], DAY)
            .unwrap();
        TestTls {
            ca_pem: ca.cert_pem().to_string(),
            member_cert_pem: member.cert_pem,
            member_key_pem: member.key_pem,
            client: client_cert(&ca, "controller"),
        }
    }

    pub(super) async fn cluster(members: usize) -> EtcdCluster {
        EtcdCluster::start_tls(members, material())
            .await
            .unwrap_or_else(|e| panic!("the etcd TLS tests need a real etcd: {e}"))
    }

    /// The error and every source below it, as one line (what `{:#}` in the binaries shows).
    fn chain(e: &Error) -> String {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    fn with_tls(config: EtcdConfig, change: impl FnOnce(&mut EtcdTls)) -> EtcdConfig {
        let mut config = config;
        if let Some(tls) = config.tls.as_mut() {
            change(tls);
        }
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_client_certificate_etcd_refuses_every_request() {
        let etcd = cluster(1).await;
        // The right client can write; the same request without a certificate is refused.
        let good = EtcdStore::connect(etcd.config("/tls")).await.unwrap();
        contract::put(&good, "/seam/v1/nodes/n1", "v").await;
        let config = with_tls(etcd.config("/tls"), |tls| tls.client = None);
        let store = EtcdStore::connect(config).await.unwrap();
        let err = store.get("/seam/v1/nodes/n1").await.unwrap_err();
        assert!(matches!(err, Error::Etcd { op: "get", .. }), "{err:?}");
        let text = chain(&err);
        assert!(
            text.contains("refusing this client for having no certificate")
                && text.contains("--client-cert-auth"),
            "{text}"
        );
        let err = store
            .txn(Txn::new().put("/seam/v1/nodes/n2", b"x".to_vec()))
            .await
            .unwrap_err();
        assert!(chain(&err).contains("having no certificate"), "{err}");
        assert!(store.watch("/seam", 0).await.is_err());
        // Nothing was written by the refused client.
        let (_, listed) = good.list("/seam/v1/nodes/").await.unwrap();
        assert_eq!(listed.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_certificate_from_another_ca_is_refused() {
        let etcd = cluster(1).await;
        let other = seam_pki::Ca::generate("another CA", DAY).unwrap();
        let config = with_tls(etcd.config("/tls"), |tls| {
            tls.client = Some(client_cert(&other, "intruder"));
        });
        let store = EtcdStore::connect(config).await.unwrap();
        let err = store.get("/seam/v1/nodes/n1").await.unwrap_err();
        let text = chain(&err);
        assert!(
            text.contains("does not accept the client certificate")
                && text.contains("--trusted-ca-file"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_etcd_whose_certificate_the_client_does_not_trust_is_refused() {
        let etcd = cluster(1).await;
        let other = seam_pki::Ca::generate("another CA", DAY).unwrap();
        let config = with_tls(etcd.config("/tls"), |tls| {
            tls.ca_pem = other.cert_pem().to_string();
        });
        let store = EtcdStore::connect(config).await.unwrap();
        let err = store.get("/seam/v1/nodes/n1").await.unwrap_err();
        let text = chain(&err);
        assert!(
            text.contains("invalid peer certificate: UnknownIssuer"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn settings_that_cannot_work_are_refused_at_connect() {
        let https = vec!["https://127.0.0.1:1".to_string()];
        let http = vec!["http://127.0.0.1:1".to_string()];
        let tls = EtcdTls {
            ca_pem: material().ca_pem,
            client: None,
        };
        let refused = |config: EtcdConfig| async move {
            match EtcdStore::connect(config).await {
                Err(Error::EtcdSettings { reason }) => reason,
                other => panic!("expected EtcdSettings, got {other:?}"),
            }
        };
        let reason = refused(EtcdConfig::new(https.clone(), "")).await;
        assert!(
            reason.contains("https:// but no TLS settings") && reason.contains("--etcd-ca"),
            "{reason}"
        );
        let reason = refused(EtcdConfig::new(http.clone(), "").with_tls(tls.clone())).await;
        assert!(reason.contains("plain http://"), "{reason}");
        let mixed = vec![https[0].clone(), http[0].clone()];
        let reason = refused(EtcdConfig::new(mixed, "").with_tls(tls.clone())).await;
        assert!(reason.contains("mix http:// and https://"), "{reason}");
        let garbled = EtcdTls {
            ca_pem: "not a certificate".to_string(),
            client: None,
        };
        let reason = refused(EtcdConfig::new(https.clone(), "").with_tls(garbled)).await;
        assert!(reason.contains("TLS CA is not PEM"), "{reason}");
        let swapped = EtcdTls {
            client: Some(EtcdClientCert {
                cert_pem: tls.ca_pem.clone(),
                key_pem: tls.ca_pem.clone(),
            }),
            ..tls.clone()
        };
        let reason = refused(EtcdConfig::new(https.clone(), "").with_tls(swapped)).await;
        assert!(reason.contains("client key is not PEM"), "{reason}");
        // Plain HTTP without TLS and HTTPS with it connect (lazily).
        EtcdStore::connect(EtcdConfig::new(http, "")).await.unwrap();
        EtcdStore::connect(EtcdConfig::new(https, "").with_tls(tls))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_members_talk_tls_to_each_other_and_keep_serving_with_one_killed() {
        let mut etcd = cluster(3).await;
        let store = EtcdStore::connect(etcd.config("/ha")).await.unwrap();
        contract::put(&store, "/seam/v1/nodes/n1", "a").await;
        // Written through any member, read through each one: the peers replicate over TLS.
        for endpoint in etcd.endpoints() {
            let mut config = etcd.config("/ha");
            config.endpoints = vec![endpoint.clone()];
            let one = EtcdStore::connect(config).await.unwrap();
            let kv = one.get("/seam/v1/nodes/n1").await.unwrap();
            assert_eq!(kv.map(|kv| kv.value), Some(b"a".to_vec()), "{endpoint}");
        }
        etcd.kill(0);
        let mut last = None;
        for _ in 0..50 {
            match store
                .txn(Txn::new().put("/seam/v1/nodes/n2", b"b".to_vec()))
                .await
            {
                Ok(outcome) => {
                    last = Some(outcome);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        assert!(
            last.is_some(),
            "no write succeeded with one of three members killed"
        );
    }
}
