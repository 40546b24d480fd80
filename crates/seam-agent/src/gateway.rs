//! LoadBalancer addresses at the gateways, and stale conntrack entries of Services.
//!
//! - [`renew_lease`]: a gateway agent renews its node lease (`PUT /v1/nodeleases/<node>`) every
//!   [`NODE_LEASE_RENEW_SECONDS`] while it runs; the controller drops the lease
//!   [`seam_model::NODE_LEASE_TTL_SECONDS`] after the last renewal, and every agent sees it go.
//! - [`served_lb_addresses`]: the LoadBalancer addresses this node serves now
//!   (`seam_dataplane::lb::served_addresses` over the view: Services' ingress addresses, gateway
//!   nodes, their leases). The Service reconcile takes it as the `lb_addresses` input of
//!   `desired_services`; [`run`] puts the same set on the external interface.
//! - [`run`]: on a gateway, keeps the external interface's LoadBalancer /32s equal to that set
//!   (observe, plan with `seam_dataplane::lb::plan_lb`, apply; announced with gratuitous ARP);
//!   on every node, deletes the conntrack entries of the (frontend, backend) pairs of UDP and
//!   SCTP frontends that the Services applied last no longer have, and the untranslated entries
//!   of those that got their first backends (`seam_nft::conntrack::stale_flows`), after the
//!   table that changed them is in the kernel:
//!   the Service reconcile publishes what it applied on [`crate::Agent::applied_services`].
//!
//! The reply path of a LoadBalancer connection (the backend's reply must reach the gateway that
//! translated it, whose conntrack entry un-translates it) is described in `docs/design.md`,
//! "LoadBalancer addresses at the gateways".

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use seam_dataplane::lb::{plan_lb, served_addresses, ConntrackKernel, LbKernel};
use seam_dataplane::{Firewall, NodeKernel};
use seam_model::{NodeRole, NODE_LEASE_RENEW_SECONDS, NODE_LEASE_TTL_SECONDS};
use seam_nft::conntrack::stale_flows;
use seam_nft::services::DesiredServices;

use crate::{Agent, ClusterView};

/// How often [`run`] looks for a new view revision.
pub const POLL: Duration = Duration::from_millis(100);
/// How often it converges the addresses even without changes: as often as the lease is renewed,
/// so each address's lifetime follows the lease's (and drift made by hand is undone).
pub const RESYNC: Duration = Duration::from_secs(NODE_LEASE_RENEW_SECONDS);

/// What is left of a lease renewed at `renewed` (`None`: never), in whole seconds, as an
/// address lifetime: `None` when nothing is left (the gateway then serves nothing).
pub fn lease_left(renewed: Option<Instant>, now: Instant) -> Option<u32> {
    let ttl = Duration::from_secs(NODE_LEASE_TTL_SECONDS);
    let left = ttl.checked_sub(now.checked_duration_since(renewed?)?)?;
    u32::try_from(left.as_secs()).ok().filter(|s| *s > 0)
}

/// The LoadBalancer addresses node `node` (of role `role`) serves now, from the view: none
/// unless it is a gateway that holds a lease and [`seam_dataplane::lb::owner`] names it.
pub fn served_lb_addresses(view: &ClusterView, node: &str, role: NodeRole) -> BTreeSet<Ipv4Addr> {
    if role != NodeRole::Gateway {
        return BTreeSet::new();
    }
    served_addresses(node, view.services.values(), &view.nodes, &view.node_leases)
}

/// Renews this gateway's node lease every [`NODE_LEASE_RENEW_SECONDS`], forever (spawned by
/// [`Agent::start`] on gateways). A failed renewal is logged and tried again at the next tick:
/// the lease outlives two missed renewals.
pub async fn renew_lease<K>(agent: Arc<Agent<K>>) {
    let every = Duration::from_secs(NODE_LEASE_RENEW_SECONDS);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A renewal that hangs must not hold up the next one past the lease's life.
    let client = agent.client.clone().with_timeout(every);
    let mut failing = false;
    loop {
        tick.tick().await;
        // The controller takes a lease only for a node it knows: wait for the sync's first
        // registration and view.
        if !agent.synced.load(std::sync::atomic::Ordering::Acquire) {
            continue;
        }
        // Taken before the request: the controller's TTL starts no earlier than this.
        let asked = Instant::now();
        match client.renew_node_lease(&agent.config.node).await {
            Ok(()) => {
                *agent
                    .lease_renewed_at
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(asked);
                if failing {
                    failing = false;
                    tracing::info!("node lease renewed again");
                }
            }
            Err(e) => {
                // Said once per outage at warn level: the renewals go on every tick.
                if !failing {
                    tracing::warn!(error = %e, "renewing the node lease failed; LoadBalancer addresses move to other gateways if it expires; retrying");
                }
                failing = true;
                tracing::debug!(error = %e, "node lease renewal failed");
            }
        }
    }
}

/// Observes the external interface, plans and applies once (every address given
/// `lifetime_secs`); returns the number of changes. `first` also announces the addresses
/// already held (a restarted agent adopts them).
pub async fn reconcile_lb<L: LbKernel>(
    kernel: &L,
    ifname: &str,
    want: &BTreeSet<Ipv4Addr>,
    lifetime_secs: u32,
    first: bool,
) -> seam_dataplane::Result<usize> {
    let observed = kernel.observe_lb(ifname).await?;
    let ops = plan_lb(want, &observed, lifetime_secs, first);
    let mut first_error = None;
    for op in &ops {
        if let Err(e) = kernel.apply_lb(ifname, op).await {
            tracing::warn!(?op, interface = %ifname, error = %e, "LoadBalancer address change failed");
            first_error.get_or_insert(e);
        }
    }
    let changes: Vec<&seam_dataplane::lb::LbOp> = ops
        .iter()
        .filter(|op| {
            !matches!(
                op,
                seam_dataplane::lb::LbOp::Refresh {
                    announce: false,
                    ..
                }
            )
        })
        .collect();
    if !changes.is_empty() {
        tracing::info!(interface = %ifname, ?changes, serving = want.len(), "LoadBalancer addresses reconciled");
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ops.len()),
    }
}

/// Deletes the conntrack entries of what `old` translated and `new` no longer does (UDP and
/// SCTP frontends' removed backends), and the untranslated ones of the UDP and SCTP frontends
/// `new` gives their first backends; returns how many entries went.
pub async fn forget_stale_flows<C: ConntrackKernel>(
    kernel: &C,
    old: &DesiredServices,
    new: &DesiredServices,
) -> seam_dataplane::Result<usize> {
    let stale = stale_flows(old, new);
    if stale.is_empty() {
        return Ok(0);
    }
    let deleted = kernel.delete_conntrack(&stale).await?;
    tracing::info!(
        flows = stale.len(),
        entries = deleted,
        "deleted the stale conntrack entries of Services (removed backends, frontends given their first)"
    );
    Ok(deleted)
}

/// Runs forever (spawned by `seamd`) on `kernel`, a connection of its own. On a gateway with
/// `external_interface`, converges the LoadBalancer addresses on it; on every node, deletes the
/// stale conntrack entries of UDP/SCTP frontends after each applied Service change. Nothing
/// happens before the first full controller view.
pub async fn run<K, L>(agent: Arc<Agent<K>>, kernel: L, external_interface: Option<String>)
where
    K: NodeKernel + Firewall + 'static,
    L: LbKernel + ConntrackKernel,
{
    let gateway = agent.config.role == NodeRole::Gateway;
    let interface = external_interface.filter(|_| gateway);
    if gateway && interface.is_none() {
        tracing::warn!("this gateway has no --external-interface: it serves no LoadBalancer address (the other gateways do)");
    }
    let mut applied = agent.applied_services.subscribe();
    let mut last_applied: Arc<DesiredServices> = applied.borrow_and_update().clone();
    let mut seen: Option<(u64, BTreeSet<Ipv4Addr>)> = None;
    let mut last_pass = Instant::now();
    let mut first = true;
    // The sender lives in the agent; should it ever be gone, stop waiting on it.
    let mut applied_open = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            changed = applied.changed(), if applied_open => {
                applied_open = changed.is_ok();
                if applied_open {
                    let now = applied.borrow_and_update().clone();
                    if let Err(e) = forget_stale_flows(&kernel, &last_applied, &now).await {
                        // The entries expire by themselves (UDP: 30 s idle, 120 s once
                        // answered); a client of a removed backend waits that long.
                        tracing::warn!(error = %e, "deleting stale conntrack entries failed");
                    }
                    last_applied = now;
                }
            }
        }
        let Some(ifname) = interface.as_deref() else {
            continue;
        };
        if !agent.is_ready() {
            continue;
        }
        let renewed = *agent
            .lease_renewed_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Without a live lease of its own the gateway serves nothing: the others have taken its
        // addresses over, or will as soon as they see the lease gone.
        let lifetime = lease_left(renewed, Instant::now());
        let (revision, want) = {
            let view = agent.view.read().await;
            let want = match lifetime {
                Some(_) => served_lb_addresses(&view, &agent.config.node, agent.config.role),
                None => BTreeSet::new(),
            };
            (view.revision, want)
        };
        let key = (revision, want);
        if seen.as_ref() == Some(&key) && last_pass.elapsed() < RESYNC {
            continue;
        }
        last_pass = Instant::now();
        match reconcile_lb(&kernel, ifname, &key.1, lifetime.unwrap_or(1), first).await {
            Ok(_) => {
                first = false;
                seen = Some(key);
            }
            Err(e) => {
                tracing::warn!(error = %e, "LoadBalancer address reconcile failed; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests;
