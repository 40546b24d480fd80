//! Seam's nftables, as values. Everything Seam writes to the kernel's nf_tables lives here, so a
//! change to a table, chain, set or rule is made in one place.
//!
//! - [`rule`]: a policy rule ([`NftRule`]) with its text form, and the in-place changes of a table
//!   ([`TableOp`], [`FirewallDelta`]).
//! - [`msg`]: the nf_tables netlink batch ([`Batch`]) of a list of [`TableOp`]s.
//!
//! Architecture invariant: pure. No socket, file or process: `seam-linux` opens the netlink socket
//! and sends what this crate builds.

pub mod msg;
pub mod rule;

pub use msg::Batch;
pub use rule::{AddrField, FirewallDelta, NftMatch, NftRule, NftVerdict, TableOp};
