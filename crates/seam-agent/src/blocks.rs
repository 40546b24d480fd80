//! Giving address blocks back: a block nothing has used for a while goes back to its segment,
//! so churn never drains a segment (a node claims blocks when its own are full, see
//! `attach`, and holds only what its live pods need once things calm down).
//!
//! Two steps, in this order, so that a crash between them loses nothing and hands out nothing
//! twice: the block leaves the local book first, durably (no lease can land in it from then
//! on), and only then is it released at the controller. The second step is level-triggered:
//! every pass releases each block the controller says this node holds but the book does not —
//! a block retired just now, one retired before a crash or while the release was refused, and
//! one the controller granted to a claim whose answer the agent never recorded.
//!
//! No warm spare: an empty block stays for the whole release delay after its last use, which
//! is what a node whose pods come and go needs, and a spare kept for ever by every node that
//! once ran a pod of a namespace is what drains a per-namespace segment (64 /26 blocks in a
//! /20). The first ADD after a long quiet spell pays one claim round trip.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use seam_dataplane::{Firewall, NodeKernel};
use seam_model::Block;

use crate::Agent;

/// The longest pause between two passes.
const MAX_PERIOD: Duration = Duration::from_secs(30);

/// How often to look: a few times per release delay, so a block goes back at most about a
/// quarter of the delay late.
pub fn period(release_after_ms: u64) -> Duration {
    Duration::from_millis((release_after_ms / 4).max(10)).min(MAX_PERIOD)
}

/// Longest wait for the controller to release one block. The pass holds the lease lock, which
/// every ADD, DEL and CHECK takes: a hung controller must not stall them for the client's whole
/// timeout. A release not answered in time is asked again by a later pass (the controller still
/// lists the block for this node, the book no longer holds it).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often to check whether the controller is back.
const CONNECT_POLL: Duration = Duration::from_millis(50);

/// Runs forever: one [`pass`] as soon as the agent follows the controller (at start and after
/// each reconnect: what a crash or an outage left to give back goes first), then one per
/// [`period`].
pub async fn run<K: NodeKernel + Firewall + 'static>(agent: Arc<Agent<K>>) {
    let every = period(agent.config.block_release_after_ms);
    loop {
        while !connected(&agent) {
            tokio::time::sleep(CONNECT_POLL).await;
        }
        pass(&agent).await;
        let deadline = tokio::time::Instant::now() + every;
        while connected(&agent) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(CONNECT_POLL.min(every)).await;
        }
    }
}

fn connected<K>(agent: &Agent<K>) -> bool {
    agent.synced.load(Ordering::Acquire) && agent.controller_connected.load(Ordering::Acquire)
}

/// Retires the idle blocks and releases at the controller every block of this node the book
/// does not hold. Returns how many blocks the controller released.
pub async fn pass<K: NodeKernel + Firewall + 'static>(agent: &Agent<K>) -> usize {
    // Before the first full view the agent does not know which blocks the controller gives it;
    // while the controller is away a retired block could not be given back, and the node
    // would have lost it for nothing (ADD serves from held blocks during an outage).
    if !connected(agent) {
        return 0;
    }
    let node = agent.config.node.as_str();
    // Read before taking the lease lock: the reconcile loop takes the two in the other order.
    let (mut candidates, in_use) = {
        let view = agent.view.read().await;
        let candidates: BTreeMap<String, Block> = view
            .blocks
            .values()
            .filter(|b| b.node == node)
            .map(|b| (b.key(), b.clone()))
            .collect();
        // Blocks the controller still has an endpoint in (a delete not published yet): the
        // controller would refuse them, and a block retired here but kept there is of use to
        // nobody until it is released.
        let in_use: BTreeSet<String> = candidates
            .values()
            .filter(|b| {
                view.endpoints
                    .values()
                    .any(|e| e.segment == b.segment && b.cidr.contains(&e.ip))
            })
            .map(Block::key)
            .collect();
        (candidates, in_use)
    };
    // The lock is held until the releases are done: a claim (under the same lock) can then
    // not add to the book a block the view lists from before it was last released, which
    // this pass would release again from under its new leases.
    let mut book = agent.leases.lock().await;
    match book
        .retire_idle_blocks(node, agent.config.block_release_after_ms, |b| {
            !in_use.contains(&b.key())
        })
        .await
    {
        Ok(retired) => {
            for block in retired {
                tracing::info!(segment = %block.segment, cidr = %block.cidr, "retired idle address block");
                candidates.insert(block.key(), block);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not retire idle address blocks"),
    }
    let mut released = 0;
    for (key, block) in candidates {
        if book.holds_block(&block) {
            continue;
        }
        let release = agent.client.release_block_held_by(&key, node);
        let Ok(answer) = tokio::time::timeout(RELEASE_TIMEOUT, release).await else {
            tracing::warn!(block = %key, timeout_ms = RELEASE_TIMEOUT.as_millis() as u64, "controller did not answer an address block release in time; will retry");
            break;
        };
        match answer {
            Ok(()) => {
                released += 1;
                tracing::info!(segment = %block.segment, cidr = %block.cidr, "gave address block back");
            }
            // Already gone: an earlier pass or an administrator released it.
            Err(e) if e.is_not_found() => {}
            // Still used by an endpoint the controller knows (a delete not published yet), or
            // no longer this node's (the view was old): look again next pass.
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                tracing::warn!(block = %key, error = %e, "controller kept an address block this node no longer uses; will ask again");
            }
            Err(e) => {
                tracing::warn!(block = %key, error = %e, "could not give address block back; will retry");
                break;
            }
        }
    }
    released
}
