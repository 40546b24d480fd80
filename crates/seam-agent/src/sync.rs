//! Following the controller: register the node, take a snapshot, then watch; re-list when the
//! watch falls behind a compaction; publish local endpoints with retries.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use seam_dataplane::{Firewall, NodeKernel};
use seam_model::{Endpoint, EndpointKind, Node};
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
        agent.controller_connected.store(false, Ordering::Release);
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

async fn sync_once<K: NodeKernel + Firewall + 'static>(
    agent: &Arc<Agent<K>>,
) -> Result<(), seam_client::ClientError> {
    let node = Node {
        name: agent.config.node.clone(),
        underlay_ip: agent.config.underlay.ip,
        role: agent.config.role,
        transit_encap: agent.config.transit_encap,
        underlay_prefix_len: Some(agent.config.underlay.prefix_len),
    };
    agent.client.put_node(&node).await?;
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
    agent.controller_connected.store(true, Ordering::Release);
    while let Some(event) = watch.next().await {
        let event = event?;
        agent.view.write().await.apply(event);
        agent.reconcile_now.notify_one();
    }
    Ok(())
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
        .filter(|e| {
            e.node == agent.config.node
                && e.kind != EndpointKind::Vm
                && e.kind != EndpointKind::External
        })
        .cloned()
        .collect();
    for ep in &local {
        match remote.iter().find(|r| r.name == ep.name) {
            // Labels set through the API (the Kubernetes adapter, `seam` by hand) are the
            // controller's: republishing the CNI's labels would undo them at every resync.
            Some(r) if same_but_labels(r, ep) => {}
            Some(r) => {
                let mut ep = ep.clone();
                ep.labels = r.labels.clone();
                let _ = agent.publish_tx.send(Publish::Put(ep));
            }
            None => {
                let _ = agent.publish_tx.send(Publish::Put(ep.clone()));
            }
        }
    }
    for ep in remote {
        if !local.iter().any(|l| l.name == ep.name) {
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
    let book = agent.leases.lock().await;
    let current = book.endpoints().find(|e| e.name == change.name());
    match (change, current) {
        // The queued record may carry the controller's labels (a resync keeps them).
        (Publish::Put(ep), Some(cur)) if same_attachment(ep, cur) => Some(change.clone()),
        (_, Some(cur)) => Some(Publish::Put(cur.clone())),
        (Publish::Put(_), None) => None,
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
