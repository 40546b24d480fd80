//! The records on their way to the controller: a bounded queue the decoder fills and the pusher
//! empties every [`PUSH_INTERVAL`] into one `POST /v1/flows`. Nothing waits on the controller:
//! a record that finds the queue full, and a batch the controller did not take (slow, down,
//! refusing), are dropped and counted, and the count goes with the next batch
//! (`FlowBatch::dropped`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use seam_model::flow::FlowBatch;

use super::decode::Flow;

/// How often the pusher sends what is queued.
pub const PUSH_INTERVAL: Duration = Duration::from_millis(200);
/// The most records queued for the controller.
pub const OUTBOX_CAPACITY: usize = 8_192;
/// The most records in one batch.
pub const MAX_BATCH: usize = 2_048;
/// How long the pusher waits for the controller's answer.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Queue {
    flows: VecDeque<Flow>,
    dropped: u64,
}

/// The bounded queue of records for the controller.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    capacity: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::with_capacity(OUTBOX_CAPACITY)
    }
}

impl Outbox {
    /// A queue of at most `capacity` records.
    pub fn with_capacity(capacity: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue::default()),
            capacity,
        }
    }

    /// Queues a flow; false when the queue was full (the flow is dropped and counted).
    pub fn push(&self, flow: Flow) -> bool {
        let Ok(mut q) = self.queue.lock() else {
            return false;
        };
        if q.flows.len() >= self.capacity {
            q.dropped += 1;
            return false;
        }
        q.flows.push_back(flow);
        true
    }

    /// The next batch (oldest first, at most [`MAX_BATCH`] records) with the count of what was
    /// dropped since the last batch; `None` when there is nothing to say.
    pub fn take_batch(&self, node: &str) -> Option<FlowBatch> {
        let mut q = self.queue.lock().ok()?;
        if q.flows.is_empty() && q.dropped == 0 {
            return None;
        }
        let n = q.flows.len().min(MAX_BATCH);
        let records = q.flows.drain(..n).map(|f| f.record(node)).collect();
        let dropped = std::mem::take(&mut q.dropped);
        Some(FlowBatch { records, dropped })
    }

    /// A batch the controller did not take: its records and its count are dropped, and counted
    /// again for the next batch.
    pub fn failed(&self, batch: &FlowBatch) {
        if let Ok(mut q) = self.queue.lock() {
            q.dropped += batch.dropped + batch.records.len() as u64;
        }
    }

    /// How many records are queued.
    pub fn len(&self) -> usize {
        self.queue.lock().map(|q| q.flows.len()).unwrap_or(0)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
