//! The watch loops: one per Kubernetes kind (kube-runtime's watcher over [`RawObject`]) and one
//! on the controller's endpoints. Each turns what it sees into [`Input`]s for the writer and
//! never gives up: every failure is logged and retried with backoff.

use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::Api;
use seam_client::{ClientError, ControllerClient};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::{AdapterMetrics, WatchSource};
use crate::resource::{RawObject, WatchedKind};
use crate::sync::{error_chain, Input, BACKOFF_MAX, BACKOFF_MIN};

/// HTTP 410 Gone: the resourceVersion asked for is older than the API server keeps.
const GONE: u16 = 410;

/// Watches `kind` until the writer goes away. A full list (at start and after every 410) is sent
/// as one [`Input::Relisted`], so the writer can tell what disappeared while nobody watched.
pub(crate) async fn watch_kind(
    client: kube::Client,
    kind: WatchedKind,
    tx: UnboundedSender<Input>,
    metrics: AdapterMetrics,
) {
    let api: Api<RawObject> = Api::all_with(client, &kind.api_resource());
    let mut backoff = BACKOFF_MIN;
    loop {
        let stream = watcher::watcher(api.clone(), watcher::Config::default());
        let mut stream = std::pin::pin!(stream);
        let mut listing: Vec<RawObject> = Vec::new();
        while let Some(item) = stream.next().await {
            let input = match item {
                Ok(Event::Init) => {
                    listing.clear();
                    None
                }
                Ok(Event::InitApply(obj)) => {
                    listing.push(obj);
                    None
                }
                Ok(Event::InitDone) => {
                    backoff = BACKOFF_MIN;
                    Some(Input::Relisted(kind, std::mem::take(&mut listing)))
                }
                Ok(Event::Apply(obj)) => {
                    backoff = BACKOFF_MIN;
                    Some(Input::Applied(kind, obj))
                }
                Ok(Event::Delete(obj)) => {
                    backoff = BACKOFF_MIN;
                    Some(Input::Deleted(kind, obj))
                }
                Err(watcher::Error::WatchError(status)) if status.code == GONE => {
                    // The watcher itself starts over with a list after an ERROR event 410.
                    tracing::info!(%kind, status = %status.message, "resourceVersion too old; re-listing");
                    None
                }
                Err(watcher::Error::WatchStartFailed(kube::Error::Api(status)))
                    if status.code == GONE =>
                {
                    // Answered with HTTP 410 instead of an ERROR event, the watcher would retry
                    // the same resourceVersion forever; a new watcher starts with a list.
                    tracing::info!(%kind, status = %status.message, "resourceVersion too old (HTTP 410); re-listing");
                    break;
                }
                Err(e) => {
                    tracing::warn!(%kind, error = %error_chain(&e), retry_in = ?backoff, "watch failed");
                    metrics.watch_failed(WatchSource::kubernetes);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    None
                }
            };
            if let Some(input) = input {
                if tx.send(input).is_err() {
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// Follows the controller (snapshot, then watch; again from a snapshot after any failure), so
/// pods are relabelled as soon as their agent publishes them (and again whenever an agent
/// republishes them without the labels), and objects the controller lost are applied again.
pub(crate) async fn watch_controller(
    client: ControllerClient,
    tx: UnboundedSender<Input>,
    metrics: AdapterMetrics,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match follow_controller(&client, &tx, &mut backoff).await {
            Ok(()) => return,
            Err(e @ ClientError::Gone { .. }) => {
                tracing::info!(error = %error_chain(&e), "controller watch compacted; re-reading");
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), retry_in = ?backoff, "controller watch failed");
                metrics.watch_failed(WatchSource::controller);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// One snapshot + watch; `Ok` only when the writer is gone.
async fn follow_controller(
    client: &ControllerClient,
    tx: &UnboundedSender<Input>,
    backoff: &mut Duration,
) -> Result<(), ClientError> {
    let snapshot = client.snapshot().await?;
    let from = snapshot.revision + 1;
    if tx
        .send(Input::ControllerSnapshot(Box::new(snapshot)))
        .is_err()
    {
        return Ok(());
    }
    let mut watch = client.watch(from).await?;
    *backoff = BACKOFF_MIN;
    while let Some(event) = watch.next().await {
        if tx.send(Input::ControllerEvent(event?)).is_err() {
            return Ok(());
        }
    }
    // The controller ended the stream (e.g. it is shutting down): start over.
    Err(ClientError::Transport {
        endpoint: client.endpoint().to_string(),
        request: "GET /v1/watch".to_string(),
        source: "watch stream ended".into(),
    })
}
