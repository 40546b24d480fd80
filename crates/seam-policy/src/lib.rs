//! Seam's policy engine: the policy objects, the inventory they are evaluated against, and the reference
//! evaluator behind `seam explain` and the conformance runner.
//!
//! - Objects ([`PolicyObject`]): Kubernetes [`NetworkPolicy`] (networking.k8s.io/v1), [`AdminNetworkPolicy`] and
//!   [`BaselineAdminNetworkPolicy`] (policy.networking.k8s.io/v1alpha1), their successor [`ClusterNetworkPolicy`]
//!   (policy.networking.k8s.io/v1alpha2, Admin and Baseline tiers), Seam's [`EndpointGroup`] and
//!   [`Contract`] (seam.dev/v1alpha1). [`parse_json`] and [`parse_yaml`] decode and validate them; unknown fields
//!   and unsupported features are errors with the field path, never silently dropped. A [`PolicyObject`] is also
//!   the versioned wire type the controller ships to agents: its serde form is the stored form (`apiVersion`,
//!   `kind`, `metadata`, `spec`), and `apiVersion` + `kind` choose the variant when it is read back.
//! - Facts ([`Inventory`]): tenants and their [`IsolationMode`], namespaces, endpoints of every kind; the
//!   OpenShift-style tenant operations [`Inventory::join`], [`Inventory::isolate`] and [`Inventory::make_global`].
//! - Semantics ([`evaluate`]): one flow in, a [`Verdict`] per direction out, with the tier and the [`RuleRef`]
//!   that decided. `SEMANTICS.md` next to this crate's `Cargo.toml` is the specification.
//!
//! Architecture invariant: this crate is pure. It opens no file or socket, starts no process, and depends on no
//! runtime (tokio), kernel (nix, netlink) or other Seam crate.
//!
//! Start reading at [`evaluate`] in `eval.rs`.

#![warn(missing_docs)]

mod anp;
mod bounds;
mod cnp;
mod contract;
mod error;
mod eval;
mod group;
mod inventory;
mod meta;
mod netpol;
mod object;
mod selector;

pub use anp::*;
pub use bounds::{
    admit, MAX_ANNOTATIONS_BYTES, MAX_LIST_ITEMS, MAX_POLICY_BYTES, MAX_SELECTOR_TERMS,
};
pub use cnp::*;
pub use contract::*;
pub use error::{EvalError, FieldError, ParseError, TenantError, ValidationError};
pub use eval::{
    evaluate, reason_text, Decision, Direction, DirectionVerdict, Flow, FlowEnd, Reason, RuleRef,
    Tier, Verdict,
};
pub use group::*;
pub use inventory::*;
pub use meta::{ObjectMeta, Protocol};
pub use netpol::*;
pub use object::{
    parse_json, parse_yaml, split_list, ObjectKey, PolicyKind, PolicyObject, PolicySet,
};
pub use selector::{LabelSelector, LabelSelectorRequirement, Labels, SelectorOperator};

#[cfg(test)]
mod tests;
