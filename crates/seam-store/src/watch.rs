//! Watch streams and the fan-out of committed events to them.
//!
//! A new watch gets the events already in the change log as an in-memory replay queue, and is
//! registered for live events in the same critical section that reads the log (the one writers
//! commit under), so replay and live events meet without gap or duplicate. Writers never block
//! on a watcher: they `try_send`, and a watcher whose channel is full is dropped with
//! [`Error::WatcherLagged`] (one slot is kept free for that error).

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::types::Event;

/// A stream of [`Event`]s for one key prefix, created by [`crate::Datastore::watch`].
#[derive(Debug)]
pub struct Watch {
    replay: VecDeque<Event>,
    /// History the etcd backend is still fetching: unbounded like `replay`, drained first;
    /// closed once the pump reaches live events.
    replay_rx: Option<mpsc::UnboundedReceiver<Event>>,
    rx: mpsc::Receiver<Result<Event>>,
}

impl Watch {
    /// A watch fed only by a channel (the etcd backend's pump task).
    pub(crate) fn from_channels(
        replay_rx: mpsc::UnboundedReceiver<Event>,
        rx: mpsc::Receiver<Result<Event>>,
    ) -> Self {
        Watch {
            replay: VecDeque::new(),
            replay_rx: Some(replay_rx),
            rx,
        }
    }

    /// The next event, or an error after which the stream ends. `None` when the store is gone
    /// or the stream ended after an error.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        if let Some(event) = self.replay.pop_front() {
            return Some(Ok(event));
        }
        if let Some(replay_rx) = &mut self.replay_rx {
            match replay_rx.recv().await {
                Some(event) => return Some(Ok(event)),
                None => self.replay_rx = None,
            }
        }
        self.rx.recv().await
    }
}

struct Watcher {
    prefix: String,
    /// Events below this revision were delivered by replay (or not asked for).
    from_revision: u64,
    tx: mpsc::Sender<Result<Event>>,
}

/// The live watchers of one store. Always used under the store's commit lock.
#[derive(Default)]
pub(crate) struct Hub {
    watchers: Vec<Watcher>,
}

impl Hub {
    /// Registers a watcher that gets `replay` first and then live events with revision
    /// `>= from_revision`.
    pub(crate) fn register(
        &mut self,
        prefix: &str,
        from_revision: u64,
        replay: VecDeque<Event>,
        buffer: usize,
    ) -> Watch {
        // One slot is reserved for the lag error.
        let (tx, rx) = mpsc::channel(buffer.max(2));
        self.watchers.push(Watcher {
            prefix: prefix.to_string(),
            from_revision,
            tx,
        });
        Watch {
            replay,
            replay_rx: None,
            rx,
        }
    }

    /// Sends the events of one committed txn to every watcher they concern.
    pub(crate) fn publish(&mut self, events: &[Event]) {
        self.watchers.retain(|w| {
            for event in events {
                if event.revision < w.from_revision || !event.key.starts_with(&w.prefix) {
                    continue;
                }
                if w.tx.is_closed() {
                    return false;
                }
                if w.tx.capacity() <= 1 {
                    tracing::warn!(prefix = %w.prefix, revision = event.revision, "dropping lagging watcher");
                    // Cannot fail for lack of room: the last slot is only ever used here.
                    let _ = w.tx.try_send(Err(Error::WatcherLagged {
                        prefix: w.prefix.clone(),
                        revision: event.revision,
                    }));
                    return false;
                }
                if w.tx.try_send(Ok(event.clone())).is_err() {
                    return false;
                }
            }
            true
        });
    }

    /// Number of live watchers (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.watchers.len()
    }
}

/// Checks `from_revision` against the compacted history and returns the revision a watch
/// really starts at (`from_revision == 0` means after `current`).
pub(crate) fn start_revision(from_revision: u64, current: u64, compacted: u64) -> Result<u64> {
    if from_revision == 0 {
        return Ok(current + 1);
    }
    if from_revision <= compacted {
        return Err(Error::Compacted {
            requested: from_revision,
            oldest: compacted + 1,
        });
    }
    Ok(from_revision)
}
