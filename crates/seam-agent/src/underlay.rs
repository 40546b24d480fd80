//! Following the node's own underlay address: where the node is on the underlay (its address,
//! the prefix length, its MAC) is read from the underlay interface at start and again whenever
//! the interface changes ([`Agent::underlay_now`], woken by `seamd`'s netlink watch) and at
//! least every [`RESYNC`]. When it moved, everything derived from it follows without a restart:
//! the controller session starts again from the new address and republishes the `Node` first
//! ([`crate::sync`]), the segment reconciler rebinds the VXLAN devices
//! (`ObservedSegment::vxlan_local`), and the transit and the routed-segment decisions
//! (`seam_dataplane::routed`) use the new subnet at their next pass.
//!
//! While the interface has no IPv4 address (or cannot be read), the node keeps the address it
//! has and says so once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use seam_dataplane::{Firewall, NodeKernel, Underlay};
use seam_model::MacAddr;

use crate::Agent;

/// Where this node is on the underlay: what its `Node` publishes and its devices are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUnderlay {
    /// The interface, its address and prefix length.
    pub underlay: Underlay,
    /// The interface's MAC (the routed transit's source address).
    pub mac: Option<MacAddr>,
}

/// How often the interface is read even without a change notice (a lost notice, or no watch).
pub const RESYNC: Duration = Duration::from_secs(30);

/// How long after a notice the interface is read: a replaced address is two changes (an add
/// and a delete, in either order), read once both are done.
const SETTLE: Duration = Duration::from_millis(200);

/// Why the last read did not move the node (each said once, until it is over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stuck {
    /// The interface has no IPv4 address.
    NoAddress,
    /// The interface could not be read.
    Unreadable(String),
}

/// Runs forever: reads the interface when woken and every [`RESYNC`].
pub async fn run<K: NodeKernel + Firewall + 'static>(agent: Arc<Agent<K>>) {
    let mut stuck = None;
    loop {
        if tokio::time::timeout(RESYNC, agent.underlay_now.notified())
            .await
            .is_ok()
        {
            tokio::time::sleep(SETTLE).await;
        }
        follow_once(&agent, &mut stuck).await;
    }
}

/// Reads the underlay interface once and moves the node to what it holds; returns whether it
/// moved. `stuck` remembers what was last said about a read that could not move it.
pub async fn follow_once<K: NodeKernel + Firewall + 'static>(
    agent: &Agent<K>,
    stuck: &mut Option<Stuck>,
) -> bool {
    let current = agent.underlay();
    let ifname = &current.underlay.ifname;
    let (now, problem) = match agent.kernel.underlay_interface(ifname).await {
        Ok(found) => match current.underlay.follow(&found.addresses) {
            Some(underlay) => (
                Some(NodeUnderlay {
                    underlay,
                    mac: found.mac,
                }),
                None,
            ),
            None => (None, Some(Stuck::NoAddress)),
        },
        Err(e) => (None, Some(Stuck::Unreadable(e.to_string()))),
    };
    if problem != *stuck {
        match &problem {
            Some(Stuck::NoAddress) => tracing::warn!(
                interface = %ifname,
                keeping = %current.underlay.ip,
                "the underlay interface has no IPv4 address; keeping the last one until it has"
            ),
            Some(Stuck::Unreadable(error)) => tracing::warn!(
                interface = %ifname,
                keeping = %current.underlay.ip,
                %error,
                "reading the underlay interface failed; keeping the last address"
            ),
            None => {
                tracing::info!(interface = %ifname, "the underlay interface can be followed again")
            }
        }
        *stuck = problem;
    }
    let Some(now) = now else {
        return false;
    };
    if now == current {
        return false;
    }
    tracing::info!(
        interface = %ifname,
        from = %format_args!("{}/{}", current.underlay.ip, current.underlay.prefix_len),
        to = %format_args!("{}/{}", now.underlay.ip, now.underlay.prefix_len),
        mac = ?now.mac,
        "the node's underlay address changed; publishing it and rebinding its devices"
    );
    agent.underlay.send_replace(now);
    agent.reconcile_now.notify_one();
    agent.transit_now.store(true, Ordering::Release);
    true
}
