//! The store contract suite, run against every backend, plus embedded-only tests
//! (reopen, crash safety).

use std::sync::Arc;
use std::time::Duration;

use crate::{
    AnyStore, Compare, Datastore, EmbeddedStore, Error, Event, MemoryStore, Op, StoreConfig, Txn,
    TxnOutcome, Watch,
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
        // The store keeps 5 events.
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

            fn make(config: StoreConfig) -> (AnyStore, Box<dyn std::any::Any>) {
                ($make)(config)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn put_get_list() {
                let (store, _guard) = make(StoreConfig::default());
                contract::put_get_list(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn txn_compares() {
                let (store, _guard) = make(StoreConfig::default());
                contract::txn_compares(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn revisions_monotonic() {
                let (store, _guard) = make(StoreConfig::default());
                contract::revisions_monotonic(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_replay_then_live() {
                let (store, _guard) = make(StoreConfig::default());
                contract::watch_replay_then_live(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_no_gap_under_writes() {
                let (store, _guard) = make(StoreConfig::default());
                contract::watch_no_gap_under_writes(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_compacted() {
                let (store, _guard) = make(StoreConfig {
                    history: 5,
                    ..StoreConfig::default()
                });
                contract::watch_compacted(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_lagging_is_dropped() {
                let (store, _guard) = make(StoreConfig {
                    watch_buffer: 4,
                    ..StoreConfig::default()
                });
                contract::watch_lagging_is_dropped(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_cas() {
                let (store, _guard) = make(StoreConfig::default());
                contract::concurrent_cas(store).await;
            }
        }
    };
}

contract_suite!(memory, |config| {
    let guard: Box<dyn std::any::Any> = Box::new(());
    (AnyStore::from(MemoryStore::with_config(config)), guard)
});

contract_suite!(embedded, |config| {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path().join("seam.redb"), config).unwrap();
    let guard: Box<dyn std::any::Any> = Box::new(dir);
    (AnyStore::from(store), guard)
});

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
