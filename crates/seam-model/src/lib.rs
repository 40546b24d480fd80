//! Seam's vocabulary and its versioned wire objects.
//!
//! Holds the objects the controller stores and serves ([`Segment`], [`Node`], [`Block`],
//! [`Endpoint`], [`Namespace`], [`Tenant`], the Service load balancer's [`Service`],
//! [`EndpointSlice`] and [`AddressPool`] with their pure resolution [`resolve`] and [`usable`];
//! policy objects are seam-policy's `PolicyObject`, the versioned wire type a [`Snapshot`]
//! carries to agents),
//! the watch events it streams, and the request/reply of the agent socket that
//! `seam-cni` talks to ([`agent_rpc`]). Every object rejects unknown fields on entry and has a
//! `validate()` that reports every problem with its field path. [`manifest`] reads the YAML/JSON
//! documents of `seam apply` (and the Kubernetes adapter's objects) into these objects and
//! seam-policy's.
//!
//! Architecture invariant: this crate does no I/O and depends on no other Seam crate but
//! seam-policy (pure, for the policy objects).
//! Start reading at [`Segment`].

#![warn(missing_docs)]

pub mod agent_rpc;
mod apply;
mod audit;
pub mod bounds;
pub mod counters;
mod error;
mod external;
pub mod flow;
pub mod fnv;
pub mod identity;
pub mod join;
mod labels;
mod links;
mod mac;
pub mod manifest;
mod names;
mod objects;
mod prefix;
pub mod realization;
pub mod service;
pub mod tolerant;
mod vm;

pub use apply::{Applied, Apply, ApplyObject};
pub use audit::AuditRecord;
pub use error::{FieldError, ValidationError};
pub use external::*;
pub use identity::{Identity, Role as CallerRole};
pub use join::*;
pub use labels::{parse_labels, LabelSpaces, LabelSyntaxError};
pub use links::*;
pub use mac::{endpoint_mac, gateway_mac, MacAddr};
pub use names::*;
pub use objects::*;
pub use prefix::overlaps;
pub use realization::{
    realization_status, tenant_realization_name, Laggard, NodeRealization, ObjectRealization,
    ObjectStatus, RealizationStatus,
};
pub use service::*;
pub use vm::*;
