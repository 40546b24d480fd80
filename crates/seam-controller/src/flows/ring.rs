//! The records the controller holds: a bounded ring per node and a bound on all of them, in
//! memory only (flow records are a live view, not state: nothing goes to the store).
//!
//! A full ring drops its oldest record. When the rings together hold the most allowed, the
//! record that goes is the oldest of the node that holds the most (the posting node's own
//! oldest while it holds at least its fair share), so one noisy node cannot push a quiet node's
//! records out. Every record gets a sequence number as it arrives, which orders records of one
//! node and lets a follower start exactly after the records it was sent from the rings.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};

use seam_model::flow::{FlowFilter, FlowRecord};

/// How many records the controller keeps ([`crate::Controller::with_flow_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Records kept per node (the agent's own ring holds as many).
    pub per_node: usize,
    /// Records kept over all nodes.
    pub total: usize,
    /// Records a follower may fall behind before it skips to the newest and is told how many it
    /// missed.
    pub follow_buffer: usize,
}

/// Records per node by default (what an agent's ring holds).
pub const DEFAULT_FLOWS_PER_NODE: usize = 65_536;
/// Records over all nodes by default: at roughly 500 bytes a record in memory, about 128 MiB.
pub const DEFAULT_FLOWS_TOTAL: usize = 262_144;
/// Records a follower may fall behind by default.
pub const DEFAULT_FOLLOW_BUFFER: usize = 8_192;

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            per_node: DEFAULT_FLOWS_PER_NODE,
            total: DEFAULT_FLOWS_TOTAL,
            follow_buffer: DEFAULT_FOLLOW_BUFFER,
        }
    }
}

/// A record as held: its arrival order, the record, and its NDJSON line once a reader asked
/// for it (encoded once however many read it).
#[derive(Debug)]
pub(crate) struct Held {
    /// Arrival order over all nodes, from 1.
    pub(crate) seq: u64,
    /// The record.
    pub(crate) record: FlowRecord,
    line: OnceLock<Vec<u8>>,
}

impl Held {
    /// The record as one NDJSON line (empty, and logged, if it cannot be encoded, which a
    /// record of strings, numbers and addresses never is).
    pub(crate) fn line(&self) -> &[u8] {
        self.line.get_or_init(|| match serde_json::to_vec(&self.record) {
            Ok(mut line) => {
                line.push(b'\n');
                line
            }
            Err(e) => {
                tracing::error!(node = %self.record.node, error = %e, "cannot encode a flow record");
                Vec::new()
            }
        })
    }
}

/// What one [`Rings::push`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Records taken in.
    pub(crate) received: u64,
    /// Held records dropped to make room.
    pub(crate) evicted: u64,
}

/// Every node's ring.
#[derive(Debug)]
pub(crate) struct Rings {
    limits: FlowLimits,
    rings: BTreeMap<String, VecDeque<Arc<Held>>>,
    held: usize,
    next_seq: u64,
    /// Per node: records its agent said it dropped on the way (sum of `FlowBatch::dropped`).
    agent_dropped: BTreeMap<String, u64>,
}

impl Rings {
    pub(crate) fn new(limits: FlowLimits) -> Rings {
        Rings {
            limits: FlowLimits {
                per_node: limits.per_node.max(1),
                total: limits.total.max(1),
                follow_buffer: limits.follow_buffer.max(1),
            },
            rings: BTreeMap::new(),
            held: 0,
            next_seq: 1,
            agent_dropped: BTreeMap::new(),
        }
    }

    pub(crate) fn limits(&self) -> FlowLimits {
        self.limits
    }

    /// Records held now.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The sum of what agents said they dropped.
    pub(crate) fn agent_dropped(&self) -> u64 {
        self.agent_dropped.values().sum()
    }

    /// Counts what `node`'s agent said it dropped.
    pub(crate) fn note_dropped(&mut self, node: &str, dropped: u64) {
        if dropped > 0 {
            let n = self.agent_dropped.entry(node.to_string()).or_insert(0);
            *n = n.saturating_add(dropped);
        }
    }

    /// Takes `records` in (each into its node's ring), making room as the module says; returns
    /// the records as held, in order, and what was done.
    pub(crate) fn push(&mut self, records: Vec<FlowRecord>) -> (Vec<Arc<Held>>, Pushed) {
        let mut pushed = Pushed::default();
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let held = Arc::new(Held {
                seq: self.next_seq,
                record,
                line: OnceLock::new(),
            });
            self.next_seq += 1;
            pushed.received += 1;
            let node = held.record.node.clone();
            if self.held >= self.limits.total {
                pushed.evicted += u64::from(self.evict_for(&node));
            }
            let ring = self.rings.entry(node).or_default();
            if ring.len() >= self.limits.per_node {
                ring.pop_front();
                self.held -= 1;
                pushed.evicted += 1;
            }
            ring.push_back(held.clone());
            self.held += 1;
            out.push(held);
        }
        (out, pushed)
    }

    /// Drops one record to make room for one of `node`: its own oldest while it holds its fair
    /// share or more, else the oldest of the node holding the most. False when nothing is held.
    fn evict_for(&mut self, node: &str) -> bool {
        let fair = self.limits.total / (self.rings.len().max(1));
        let own = self.rings.get(node).map_or(0, VecDeque::len);
        let victim = if own > 0 && own >= fair {
            Some(node.to_string())
        } else {
            self.rings
                .iter()
                .max_by_key(|(_, ring)| ring.len())
                .map(|(n, _)| n.clone())
        };
        let Some(victim) = victim else {
            return false;
        };
        let Some(ring) = self.rings.get_mut(&victim) else {
            return false;
        };
        if ring.pop_front().is_none() {
            return false;
        }
        self.held -= 1;
        if ring.is_empty() {
            self.rings.remove(&victim);
        }
        true
    }

    /// The newest `limit` records that pass `filter` at `now_ms`, oldest first (by the time the
    /// node read them, then by arrival).
    pub(crate) fn select(&self, filter: &FlowFilter, now_ms: u64, limit: usize) -> Vec<Arc<Held>> {
        let mut out: Vec<Arc<Held>> = self
            .rings
            .values()
            .flatten()
            .filter(|h| filter.matches(&h.record, now_ms))
            .cloned()
            .collect();
        out.sort_by_key(|h| (h.record.time_ms, h.seq));
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        out
    }
}

#[cfg(test)]
mod tests;
