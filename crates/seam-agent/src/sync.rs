//! Following the controller: register the node, take a snapshot, then watch; re-list when the
//! watch falls behind a compaction; publish local endpoints with retries.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use seam_dataplane::{Firewall, NodeKernel};
use seam_model::{Endpoint, EndpointKind, Node, ObjectKind};
use tokio::sync::mpsc;

use crate::Agent;

/// A change to this node's endpoints on the controller.
#[derive(Debug, Clone)]
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
        match sync_once(&agent).await {
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
    Node {
        name: agent.config.node.clone(),
        underlay_ip: agent.config.underlay.ip,
        role: agent.config.role,
        transit_encap: agent.config.transit_encap,
        underlay_prefix_len: Some(agent.config.underlay.prefix_len),
    }
}

/// How long after a contradicting watch event the agent re-asserts: events of one burst share
/// one re-assert, and someone who keeps rewriting the records cannot make the agent write in a
/// tight loop.
const REASSERT_DELAY: Duration = Duration::from_millis(200);

async fn sync_once<K: NodeKernel + Firewall + 'static>(
    agent: &Arc<Agent<K>>,
) -> Result<(), seam_client::ClientError> {
    agent.client.put_node(&own_node(agent)).await?;
    let snapshot = agent.client.snapshot().await?;
    let from = snapshot.revision + 1;
    {
        let mut view = agent.view.write().await;
        let namespaces = std::mem::take(&mut view.namespace_segment);
        view.reset(snapshot);
        view.namespace_segment = namespaces;
    }
    resync_endpoints(agent).await;
    agent.synced.store(true, Ordering::Release);
    agent.reconcile_now.notify_one();
    tracing::info!(revision = from - 1, "synced with controller");
    let mut watch = agent.client.watch(from).await?;
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
                (Some(local), Some(remote)) => !same_but_labels(remote, &local),
                (Some(_), None) => true,
                (None, Some(remote)) => owned_by_leases(agent, remote),
                (None, None) => false,
            }
        }
        _ => false,
    }
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
    let remote: Vec<Endpoint> = agent
        .view
        .read()
        .await
        .endpoints
        .values()
        // VM endpoints belong to the controller's VM records, not to this agent's leases.
        // External endpoints name their gateway node but are the controller's, not a lease's.
        .filter(|e| owned_by_leases(agent, e))
        .cloned()
        .collect();
    for ep in &local {
        match remote.iter().find(|r| r.name == ep.name) {
            // Labels set through the API (the Kubernetes adapter, `seam` by hand) are the
            // controller's: republishing the CNI's labels would undo them at every resync.
            Some(r) if same_but_labels(r, ep) => {}
            Some(r) => {
                tracing::warn!(endpoint = %ep.name, "the controller's record of this endpoint differs from its lease; publishing it again");
                let mut ep = ep.clone();
                ep.labels = r.labels.clone();
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

/// Whether two records of one endpoint differ in nothing but their labels.
fn same_but_labels(a: &Endpoint, b: &Endpoint) -> bool {
    let mut b = b.clone();
    b.labels = a.labels.clone();
    *a == b
}

/// Sends endpoint changes to the controller in order, retrying each until it lands.
pub async fn publisher<K: NodeKernel + Firewall + 'static>(
    agent: Arc<Agent<K>>,
    mut rx: mpsc::UnboundedReceiver<Publish>,
) {
    while let Some(change) = rx.recv().await {
        let mut backoff = BACKOFF_MIN;
        loop {
            let result = match &change {
                Publish::Put(ep) => agent.client.put_endpoint(ep).await.map(|_| ()),
                Publish::Delete(name) => agent.client.delete_endpoint(name).await,
            };
            match result {
                Ok(()) => break,
                Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                    tracing::error!(?change, error = %e, "controller refused endpoint change");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publishing endpoint failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
