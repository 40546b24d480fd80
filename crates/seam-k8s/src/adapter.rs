//! [`Adapter`]: wires the watch loops to the writer and runs them until shutdown.

use std::future::Future;

use seam_client::ControllerClient;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::metrics::AdapterMetrics;
use crate::resource::WatchedKind;
use crate::sync::Sync;
use crate::view::ViewHandle;
use crate::watch::{watch_controller, watch_kind};

/// The Kubernetes adapter: watches the Kubernetes API through `kube` and keeps the controller in
/// step through `seam-client`.
#[derive(Clone)]
pub struct Adapter {
    kube: kube::Client,
    controller: ControllerClient,
    kinds: Vec<WatchedKind>,
    view: ViewHandle,
    metrics: AdapterMetrics,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // kube::Client has no Debug; the controller endpoint and kinds say which adapter this is.
        f.debug_struct("Adapter")
            .field("controller", &self.controller.endpoint())
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl Adapter {
    /// An adapter watching every [`WatchedKind`].
    pub fn new(kube: kube::Client, controller: ControllerClient) -> Self {
        Adapter {
            kube,
            controller,
            kinds: WatchedKind::ALL.to_vec(),
            view: ViewHandle::default(),
            metrics: AdapterMetrics::default(),
        }
    }

    /// The same adapter watching only `kinds` (e.g. without the policy.networking.k8s.io kinds
    /// on a cluster without those CRDs, whose watchers would otherwise retry a 404 forever).
    pub fn with_kinds(mut self, kinds: impl IntoIterator<Item = WatchedKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// What the adapter counts, and its readiness ([`crate::metrics::router`] serves them).
    pub fn metrics(&self) -> AdapterMetrics {
        self.metrics.clone()
    }

    /// The view of Services, EndpointSlices and Nodes this adapter keeps.
    pub fn view(&self) -> ViewHandle {
        self.view.clone()
    }

    /// Runs until `shutdown` resolves. Never fails: the Kubernetes API and the controller are
    /// retried with backoff, and objects that cannot be mapped are logged and skipped.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        self.metrics.watching(self.kinds.len());
        tasks.spawn(
            Sync::new(self.controller.clone(), self.view.clone())
                .with_kube(self.kube.clone())
                .with_metrics(self.metrics.clone())
                .run(rx),
        );
        tasks.spawn(watch_controller(
            self.controller.clone(),
            tx.clone(),
            self.metrics.clone(),
        ));
        for kind in &self.kinds {
            tracing::info!(%kind, "watching");
            tasks.spawn(watch_kind(
                self.kube.clone(),
                *kind,
                tx.clone(),
                self.metrics.clone(),
            ));
        }
        drop(tx);
        shutdown.await;
        tracing::info!("shutting down");
        tasks.shutdown().await;
    }
}
