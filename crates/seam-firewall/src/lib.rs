//! Seam's compiled firewall: from the policy engine's objects to what one node's kernel enforces.
//!
//! - [`ir`]: the per-node IR — [`NodeRuleset`] with named address sets ([`AddrSet`]), and per direction three
//!   ordered tier chains (admin, namespace, baseline) of [`Rule`]s, each carrying a stable [`RuleId`]; plus
//!   [`evaluate_packet`], a small interpreter of it.
//! - [`compile()`]: `seam_policy::PolicySet` + `Inventory` + the node's endpoints → [`NodeRuleset`], with the
//!   semantics of `seam_policy::evaluate` (proved against it on every conformance case, see `tests/it`).
//! - [`render()`]: [`NodeRuleset`] → one nftables transaction (`table inet seam`) that replaces the table
//!   atomically; [`render::nft_comment`] maps rule ids to the rule comments the kernel reports counters under.
//! - [`flows`]: what each flow sample prefix of a sampled table (the renderer's
//!   [`render::table::Renderer::with_sampling`]) stands for: rule, direction, tier, policy, reason.
//! - [`explain`]: `seam explain` — one flow evaluated against a controller snapshot, checked against the
//!   enforcing nodes' rule counters (given by the caller), and rendered; to a Service address, per
//!   candidate backend.
//!
//! Architecture invariant: pure. No file, socket or process; the kernel edge is `seam_linux::nft`.
//! Start reading at [`compile()`].

#![warn(missing_docs)]

pub mod addr;
pub mod cluster;
pub mod compile;
mod deps;
mod error;
pub mod explain;
pub mod flows;
mod incremental;
pub mod ir;
pub mod render;

pub use addr::AddrSet;
pub use compile::{compile, policy_rule_prefix, rule_id, verdict_rule_id};
pub use error::{CompileError, ExplainError, Result};
pub use incremental::{IncrementalCompiler, KeyedView, ViewChanges};
pub use ir::{
    evaluate_packet, Action, AddrMatch, L4Match, LocalEndpoint, NodeRuleset, PacketVerdict,
    PortRange, Rule, RuleId, RuleVerdict, SetName, Tier, TierChain, LOCAL_SET,
};
pub use render::{nft_comment, render};
