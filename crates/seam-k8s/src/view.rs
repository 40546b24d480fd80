//! The in-memory view of Services, EndpointSlices and Nodes as Kubernetes has them, and of what
//! was not forwarded to Seam (with the reason).
//!
//! Seam nodes are registered by their agents (which know the underlay address and role), so
//! Nodes are only kept here. Services and EndpointSlices are forwarded too (`sync.rs`); the view
//! keeps Kubernetes' own form, whose status the adapter compares with Seam's.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::services::SkipReason;

/// The label of an EndpointSlice naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Services, EndpointSlices and Nodes as last seen, keyed by `namespace/name` (`name` for Nodes).
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Services by `namespace/name`.
    pub services: BTreeMap<String, Service>,
    /// EndpointSlices by `namespace/name`.
    pub endpoint_slices: BTreeMap<String, EndpointSlice>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Services and EndpointSlices not forwarded to Seam, by `Service namespace/name` or
    /// `EndpointSlice namespace/name`, with the reason (also logged when first seen).
    pub skipped: BTreeMap<String, SkipReason>,
}

impl ClusterView {
    /// The EndpointSlices of the Service `namespace/name` (by their
    /// `kubernetes.io/service-name` label).
    pub fn slices_of(&self, service: &str) -> Vec<&EndpointSlice> {
        let Some((namespace, name)) = service.split_once('/') else {
            return Vec::new();
        };
        self.endpoint_slices
            .values()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(namespace)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        .map(String::as_str)
                        == Some(name)
            })
            .collect()
    }
}

/// A shared, cheap-to-clone handle on the adapter's [`ClusterView`].
#[derive(Debug, Clone, Default)]
pub struct ViewHandle(Arc<RwLock<ClusterView>>);

impl ViewHandle {
    /// A copy of the view as it is now.
    pub fn snapshot(&self) -> ClusterView {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the view under the lock (never held across an await).
    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut ClusterView) -> R) -> R {
        let mut view = self.0.write().unwrap_or_else(PoisonError::into_inner);
        change(&mut view)
    }
}
