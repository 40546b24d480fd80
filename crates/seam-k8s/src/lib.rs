//! Seam's Kubernetes adapter.
//!
//! Watches the Kubernetes API (list + watch with bookmarks, re-list after 410 Gone, through
//! kube-runtime's watcher) and keeps the controller in step through `seam-client`:
//!
//! - Namespace → Seam namespace: labels, tenant from the `seam.dev/tenant` annotation.
//! - Pod → the labels of the endpoint the agent published for it (`<namespace>/<pod>`), plus
//!   `seam.dev/deployment` when a Deployment owns the pod, its named container ports, and its
//!   conditions as the EndpointSlice controller sets them ([`translate::pod_conditions`]:
//!   serving = the pod's `Ready` condition, terminating = `deletionTimestamp` set, ready =
//!   serving and not terminating), so a Service with a selector leaves a pod that is not ready,
//!   or is in its grace period, out of its backends.
//! - NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy and the
//!   seam.dev/v1alpha1 EndpointGroup and Contract CRDs → policy objects, forwarded nearly as-is.
//! - seam.dev/v1alpha1 Tenant CRD → Seam tenant.
//! - Service → Seam Service (not ExternalName ones); the `status.loadBalancer.ingress` Seam
//!   allocates is written back to the Kubernetes Service's status. EndpointSlice → Seam
//!   EndpointSlice, for Services without a selector only (Seam computes the backends of the
//!   others from its inventory): the `default/kubernetes` Service and its slice reach Seam so.
//!   Both are also kept, with Nodes, in an in-memory [`ClusterView`].
//!
//! Deletions propagate, also those that happened while a watch was away (seen at the re-list).
//!
//! Architecture invariants: the only crate that links `kube`; it writes to the controller only
//! through its public API (it has no store access), and it never creates or deletes endpoints
//! (the agent owns them) — it only replaces their labels, named ports and conditions. Translation ([`translate`]) is pure.
//! A malformed Kubernetes object is logged with its key and skipped, never retried in a loop;
//! the controller refusing an object is logged and the adapter carries on; a controller outage
//! is retried with backoff.
//!
//! Start reading at [`Adapter`], then `sync.rs`.

#![warn(missing_docs)]

mod adapter;
mod error;
pub mod metrics;
pub mod realization;
mod resource;
pub mod services;
mod sync;
pub mod translate;
mod view;
mod watch;

pub use adapter::Adapter;
pub use error::{Result, TranslateError};
pub use resource::{RawObject, WatchedKind, SEAM_GROUP};
pub use view::{ClusterView, ViewHandle};
