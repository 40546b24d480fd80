//! The agent's bounded ring of flows: the newest [`RING_CAPACITY`] kept, the oldest dropped.
//!
//! Memory: a [`Flow`] is 192 bytes (`std::mem::size_of` on x86_64; a test holds it under 200)
//! and shares its names (peers', policies', rules') with the view and the rule map, so the full
//! ring holds 12 MiB plus the names of endpoints and rules gone from the view since; the issue's
//! bound is 32 MiB. A `FlowRecord`, which owns its strings, takes about 300 bytes plus 200–300
//! of strings (over 32 MiB for the ring), so records are made only to be sent or served.

use std::collections::VecDeque;

use super::decode::Flow;

/// How many flows the ring keeps.
pub const RING_CAPACITY: usize = 65_536;

/// A bounded ring of flows, oldest first.
#[derive(Debug)]
pub struct FlowRing {
    flows: VecDeque<Flow>,
    capacity: usize,
}

impl Default for FlowRing {
    fn default() -> Self {
        FlowRing::with_capacity(RING_CAPACITY)
    }
}

impl FlowRing {
    /// A ring of at most `capacity` flows (at least one).
    pub fn with_capacity(capacity: usize) -> FlowRing {
        let capacity = capacity.max(1);
        FlowRing {
            flows: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
        }
    }

    /// Adds a flow; the oldest goes when the ring is full.
    pub fn push(&mut self, flow: Flow) {
        if self.flows.len() == self.capacity {
            self.flows.pop_front();
        }
        self.flows.push_back(flow);
    }

    /// How many flows it holds.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The newest `limit` flows at or after `since_ms`, oldest first.
    pub fn recent(&self, since_ms: u64, limit: usize) -> Vec<Flow> {
        let newer = self
            .flows
            .iter()
            .rev()
            .take_while(|f| f.time_ms >= since_ms)
            .take(limit)
            .count();
        self.flows
            .iter()
            .skip(self.flows.len() - newer)
            .cloned()
            .collect()
    }
}
