//! Following the controller: register the node, take a snapshot, then watch; re-list when the
//! watch falls behind a compaction; publish local endpoints with retries.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use seam_dataplane::{Firewall, NodeKernel};
use seam_model::{Endpoint, EndpointKind, Node};
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
