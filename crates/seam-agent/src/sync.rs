//! Following the controller: register the node, take a snapshot, then watch; re-list when the
//! watch falls behind a compaction; publish local endpoints with retries.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use seam_dataplane::{Firewall, NodeKernel};
use seam_model::{Endpoint, EndpointKind, Node, ObjectKind};
use tokio::sync::mpsc;

use crate::Agent;

/// A change to this node's endpoints on the controller.
#[derive(Debug, Clone, PartialEq)]
pub enum Publish {
    /// Create or update.
    Put(Endpoint),
    /// Remove by name.
    Delete(String),
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs forever: (re)connects with backoff, never touching the dataplane while away.
pub async fn run<K: NodeKernel + Firewall + 'static>(agent: Arc<Agent<K>>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let result = sync_once(&agent).await;
        let was_watching = agent.controller_connected.swap(false, Ordering::AcqRel);
        // A session that reached its watch was healthy: the outage that ended it starts the
        // backoff afresh, so an agent that lived through many controller restarts still comes
        // back within the first retry.
        if was_watching {
            backoff = BACKOFF_MIN;
        }
        match result {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "controller sync interrupted");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// The Node this agent publishes.
fn own_node<K>(agent: &Agent<K>) -> Node {
    let underlay = agent.underlay();
    Node {
        name: agent.config.node.clone(),
        underlay_ip: underlay.underlay.ip,
        role: agent.config.role,
        transit_encap: agent.config.transit_encap,
        underlay_prefix_len: Some(underlay.underlay.prefix_len),
        underlay_mac: underlay.mac,
        segment_encap: agent.config.segment_encap,
    }
}

/// How long after a contradicting watch event the agent re-asserts: events of one burst share
/// one re-assert, and someone who keeps rewriting the records cannot make the agent write in a
/// tight loop.
const REASSERT_DELAY: Duration = Duration::from_millis(200);

async fn sync_once<K: NodeKernel + Firewall + 'static>(
    agent: &Arc<Agent<K>>,
) -> Result<(), seam_client::ClientError> {
    // Before the Node is read to be published: a move after this starts a new session.
    let mut underlay = agent.underlay.subscribe();
    agent.client.put_node(&own_node(agent)).await?;
    let snapshot = agent.client.snapshot().await?;
    let from = snapshot.revision + 1;
    {
        let mut view = agent.view.write().await;
        let namespaces = std::mem::take(&mut view.namespace_segment);
        view.reset(snapshot);
        view.namespace_segment = namespaces;
    }
    // A new session: the controller may have lost this node's report (or the node record it
    // belongs to); the next pass sends it whether it changed or not.
    agent.realization().resend();
    agent.realization_changed.notify_one();
    resync_endpoints(agent).await;
    agent.synced.store(true, Ordering::Release);
    agent.reconcile_now.notify_one();
    tracing::info!(revision = from - 1, "synced with controller");
    let mut watch = agent.client.watch(from).await?;
    agent.controller_connected.store(true, Ordering::Release);
    let interval = agent.config.reassert_interval;
    let mut periodic = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reassert_at: Option<tokio::time::Instant> = None;
    loop {
        let contradicted = async {
            match reassert_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // `WatchStream::next` and the timers are cancel-safe: losing a race loses no event.
        tokio::select! {
            event = watch.next() => {
                let Some(event) = event else { break };
                let event = event?;
                let (kind, name) = (event.kind, event.name.clone());
                agent.view.write().await.apply(event);
                agent.reconcile_now.notify_one();
                if reassert_at.is_none() && contradicts(agent, kind, &name).await {
                    reassert_at = Some(tokio::time::Instant::now() + REASSERT_DELAY);
                }
            }
            _ = periodic.tick() => reassert(agent).await,
            // The node moved on the underlay (`crate::underlay`): this session's connections
            // come from an address the node no longer has, and the watch would only fail at
            // its idle timeout. A new session publishes the Node first, from the new address.
            Ok(()) = underlay.changed() => {
                agent.client.forget_idle_connections();
                tracing::info!("the node's underlay address changed; following the controller from the new one");
                break;
            }
            _ = contradicted => {
                reassert_at = None;
                reassert(agent).await;
            }
        }
    }
    Ok(())
}

/// Whether the view, after an event about `kind`/`name`, holds a record of this node or of one
/// of its pods' endpoints that differs from what the agent would publish. A re-assert's own
/// event matches what the agent publishes, so it never triggers another.
async fn contradicts<K: NodeKernel + Firewall + 'static>(
    agent: &Arc<Agent<K>>,
    kind: ObjectKind,
    name: &str,
) -> bool {
    match kind {
        ObjectKind::Node if name == agent.config.node => {
            agent.view.read().await.nodes.get(name) != Some(&own_node(agent))
        }
        ObjectKind::Endpoint => {
            let local = agent
                .leases
                .lock()
                .await
                .endpoints()
                .find(|e| e.name == name)
                .cloned();
            let view = agent.view.read().await;
            match (local, view.endpoints.get(name)) {
                (Some(local), Some(remote)) if taken_over(agent, remote, &local) => false,
                (Some(local), Some(remote)) => !same_but_api_fields(remote, &local),
                (Some(_), None) => true,
                (None, Some(remote)) => owned_by_leases(agent, remote),
                (None, None) => false,
            }
        }
        _ => false,
    }
}

/// Whether the controller's record of a name this node holds a lease for is another node's pod
/// now: a pod force-deleted here and created again elsewhere (a StatefulSet's `web-0`) while this
/// node's lease waits for its DEL. The newer pod's record wins; writing this node's back would
/// make the two nodes overwrite each other until the DEL comes.
fn taken_over<K>(agent: &Agent<K>, remote: &Endpoint, local: &Endpoint) -> bool {
    remote.node != agent.config.node && remote.container_id != local.container_id
}

/// Whether `ep` is the kind of endpoint this agent's leases own (pods on this node; VMs and
/// external endpoints are the controller's).
fn owned_by_leases<K>(agent: &Agent<K>, ep: &Endpoint) -> bool {
    ep.node == agent.config.node && ep.kind != EndpointKind::Vm && ep.kind != EndpointKind::External
}

/// Publishes again this node's record and its pods' endpoints where the controller's differ
/// from what the agent would publish (someone edited or deleted them, or a publish was lost).
async fn reassert<K: NodeKernel + Firewall + 'static>(agent: &Arc<Agent<K>>) {
    let node = own_node(agent);
    let known = agent.view.read().await.nodes.get(&node.name).cloned();
    if known.as_ref() != Some(&node) {
        tracing::warn!(controller_has = ?known, publishing = ?node, "the controller's record of this node differs from the node; publishing it again");
        if let Err(e) = agent.client.put_node(&node).await {
            tracing::error!(error = %e, "publishing this node's record again failed; will retry");
        }
    }
    resync_endpoints(agent).await;
}

/// Makes the controller's list of this node's endpoints match the bound leases: republishes
/// what it lacks (e.g. after it lost them, or ADDs done while it was away) and removes what no
/// lease backs (e.g. DELs done while it was away).
async fn resync_endpoints<K: NodeKernel + Firewall + 'static>(agent: &Arc<Agent<K>>) {
    let local: Vec<Endpoint> = agent.leases.lock().await.endpoints().cloned().collect();
    let (remote, elsewhere): (Vec<Endpoint>, Vec<Endpoint>) = agent
        .view
        .read()
        .await
        .endpoints
        .values()
        .cloned()
        // VM endpoints belong to the controller's VM records, not to this agent's leases.
        // External endpoints name their gateway node but are the controller's, not a lease's.
        .partition(|e| owned_by_leases(agent, e));
    for ep in &local {
        if let Some(newer) = elsewhere
            .iter()
            .find(|r| r.name == ep.name && taken_over(agent, r, ep))
        {
            tracing::warn!(endpoint = %ep.name, node = %newer.node, "this pod name now belongs to a pod on another node; leaving its record alone until this node's DEL");
            continue;
        }
        match remote.iter().find(|r| r.name == ep.name) {
            // Labels and conditions set through the API (the Kubernetes adapter, `seam` by hand)
            // are the controller's: republishing the CNI's labels would undo them at every
            // resync, and a pod failing its readiness probe would take Service traffic again.
            Some(r) if same_but_api_fields(r, ep) => {}
            Some(r) => {
                tracing::warn!(endpoint = %ep.name, "the controller's record of this endpoint differs from its lease; publishing it again");
                let mut ep = ep.clone();
                ep.labels = r.labels.clone();
                ep.conditions = r.conditions;
                let _ = agent.publish_tx.send(Publish::Put(ep));
            }
            None => {
                tracing::info!(endpoint = %ep.name, "the controller lacks this endpoint; publishing it");
                let _ = agent.publish_tx.send(Publish::Put(ep.clone()));
            }
        }
    }
    // An ADD in flight holds a lease that is not bound yet and may already have published its
    // endpoint: that record is not stale.
    let in_flight: Vec<(String, String)> = agent
        .leases
        .lock()
        .await
        .leases()
        .filter(|l| l.state != seam_ipam::LeaseState::Bound)
        .map(|l| (l.key.container_id.clone(), l.key.ifname.clone()))
        .collect();
    for ep in remote {
        let adding = in_flight.iter().any(|(container_id, ifname)| {
            ep.container_id.as_deref() == Some(container_id.as_str())
                && ep.ifname.as_deref() == Some(ifname.as_str())
        });
        if !adding && !local.iter().any(|l| l.name == ep.name) {
            tracing::info!(endpoint = %ep.name, "no lease backs this endpoint of the node; removing it");
            let _ = agent.publish_tx.send(Publish::Delete(ep.name));
        }
    }
}

/// Whether two records of one endpoint differ in nothing but what the API sets on an
/// endpoint an agent published: its labels and its conditions.
fn same_but_api_fields(a: &Endpoint, b: &Endpoint) -> bool {
    let mut b = b.clone();
    b.labels = a.labels.clone();
    b.conditions = a.conditions;
    *a == b
}

/// How soon a refused endpoint change is tried again, doubling up to [`REFUSED_BACKOFF_MAX`]: a
/// refusal can be a race (a 409 for an address a deleted pod's stale record still holds) or a
/// rule the controller enforces until an operator fixes something.
const REFUSED_BACKOFF_MIN: Duration = Duration::from_millis(500);
const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A refused change waiting for its next attempt.
struct Refused {
    change: Publish,
    attempts: u32,
    at: tokio::time::Instant,
}

/// Sends endpoint changes to the controller in order, each until it lands.
///
/// A change is not sent as queued but as the lease book decides when its turn comes: a queued
/// change can be stale by then (a DEL and a new ADD of the same pod name since, or the ADD
/// itself published it), and sending it as queued would delete or overwrite the newer record.
/// After a change lands, the book is asked again, so an ADD or DEL of the same name that ran
/// while it was in flight is never undone.
///
/// While the controller is unreachable or unavailable, the change is retried in place with
/// backoff (everything waits for it, as every change would fail alike). A refusal (a 4xx) is
/// set aside and retried with its own capped backoff while later changes go on; it is logged
/// at error level at every attempt and listed in [`Agent::refused_endpoints`] until it lands.
pub async fn publisher<K: NodeKernel + Firewall + 'static>(
    agent: Arc<Agent<K>>,
    mut rx: mpsc::UnboundedReceiver<Publish>,
) {
    let mut refused: BTreeMap<String, Refused> = BTreeMap::new();
    loop {
        let due = refused
            .iter()
            .min_by_key(|(_, r)| r.at)
            .map(|(name, r)| (name.clone(), r.at));
        let (change, attempts) = tokio::select! {
            change = rx.recv() => match change {
                Some(change) => {
                    // The new change supersedes a refused one of the same name.
                    let attempts = refused.remove(change.name()).map_or(0, |r| r.attempts);
                    (change, attempts)
                }
                None => return,
            },
            () = sleep_until(due.as_ref().map(|(_, at)| *at)), if due.is_some() => {
                let Some(r) = due.and_then(|(name, _)| refused.remove(&name)) else {
                    continue;
                };
                (r.change, r.attempts)
            }
        };
        let name = change.name().to_string();
        match publish(&agent, change).await {
            Ok(()) => {
                if agent.refused.lock().await.remove(&name).is_some() {
                    tracing::info!(endpoint = %name, "controller accepted an endpoint change it had refused");
                }
            }
            Err((change, error)) => {
                let attempts = attempts.saturating_add(1);
                let wait = REFUSED_BACKOFF_MIN
                    .saturating_mul(1 << attempts.saturating_sub(1).min(16))
                    .min(REFUSED_BACKOFF_MAX);
                tracing::error!(
                    endpoint = %name,
                    attempts,
                    retry_in_ms = wait.as_millis() as u64,
                    %error,
                    "controller refused endpoint change; the endpoint is unreachable until it is accepted"
                );
                agent
                    .refused
                    .lock()
                    .await
                    .insert(name.clone(), error.to_string());
                refused.insert(
                    name,
                    Refused {
                        change,
                        attempts,
                        at: tokio::time::Instant::now() + wait,
                    },
                );
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Publish {
    /// The endpoint it is about.
    pub fn name(&self) -> &str {
        match self {
            Publish::Put(ep) => &ep.name,
            Publish::Delete(name) => name,
        }
    }
}

/// What the controller should be sent for `change` now: the change itself while the lease book
/// agrees with it, the book's record of the name when a newer attachment holds it, nothing for
/// a record whose attachment is gone (its delete is queued behind it).
async fn decide<K: NodeKernel + Firewall + 'static>(
    agent: &Agent<K>,
    change: &Publish,
) -> Option<Publish> {
    // The name may belong to a pod on another node by now (created there again before this
    // node's DEL): that record is not this node's to delete. Read before the lease lock: the
    // reconcile loop takes the view and then the lease book, never the other way round.
    let held_elsewhere = match change {
        Publish::Delete(name) => agent
            .view
            .read()
            .await
            .endpoints
            .get(name)
            .is_some_and(|record| record.node != agent.config.node),
        Publish::Put(_) => false,
    };
    let book = agent.leases.lock().await;
    let current = book.endpoints().find(|e| e.name == change.name());
    match (change, current) {
        // The queued record may carry the controller's labels and conditions (a resync keeps
        // them).
        (Publish::Put(ep), Some(cur)) if same_attachment(ep, cur) => Some(change.clone()),
        (_, Some(cur)) => Some(Publish::Put(cur.clone())),
        (Publish::Put(_), None) => None,
        (Publish::Delete(_), None) if held_elsewhere => None,
        (Publish::Delete(_), None) => Some(change.clone()),
    }
}

/// Whether two records of one name come from the same attachment with the same address.
fn same_attachment(a: &Endpoint, b: &Endpoint) -> bool {
    a.container_id == b.container_id
        && a.ifname == b.ifname
        && a.ip == b.ip
        && a.segment == b.segment
        && a.node == b.node
}

/// Brings the controller's record of `change`'s name to what the lease book says, retrying
/// while the controller is unavailable. A refusal returns what was refused and why.
async fn publish<K: NodeKernel + Firewall + 'static>(
    agent: &Agent<K>,
    change: Publish,
) -> Result<(), (Publish, seam_client::ClientError)> {
    let mut sent: Option<Publish> = None;
    loop {
        let Some(next) = decide(agent, &change).await else {
            return Ok(());
        };
        if sent.as_ref() == Some(&next) {
            return Ok(());
        }
        send(agent, &next).await.map_err(|e| (next.clone(), e))?;
        sent = Some(next);
    }
}

/// Sends one change until the controller answers it; `Err` is a refusal (a 4xx).
async fn send<K: NodeKernel + Firewall + 'static>(
    agent: &Agent<K>,
    change: &Publish,
) -> Result<(), seam_client::ClientError> {
    let mut backoff = BACKOFF_MIN;
    loop {
        let result = match change {
            Publish::Put(ep) => agent.client.put_endpoint(ep).await.map(|_| ()),
            Publish::Delete(name) => agent.client.delete_endpoint(name).await,
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if is_refusal(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(endpoint = %change.name(), error = %e, "publishing endpoint failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// True when the controller answered and said no (a 4xx); unreachable, timed out, 5xx and
/// 503 (no leader reachable) are outages.
pub(crate) fn is_refusal(e: &seam_client::ClientError) -> bool {
    e.status().is_some_and(|s| (400..500).contains(&s))
}
