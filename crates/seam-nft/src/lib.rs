//! Seam's nftables, as values. Everything Seam writes to the kernel's nf_tables lives here, so a
//! change to a table, chain, set or rule is made in one place.
//!
//! - [`listing`]: `nft -j` listings parsed, rule counters and canonical listings read from them.
//! - [`names`]: every table, chain and set name Seam uses, and how rule ids and IR set names
//!   become rule comments and set names.
//! - [`rule`]: a policy rule ([`NftRule`]) with its text form, and the in-place changes of a table
//!   ([`TableOp`], [`FirewallDelta`]).
//! - [`table`]: `table inet seam` as a value ([`table::TableModel`]): the text of a whole-table
//!   write, the in-place change between two models, and a kernel listing read back.
//! - [`services`]: the Services part of `table inet seam` (Seam's L4 load balancer): what a node
//!   translates ([`services::DesiredServices`]), its maps, sets and chains
//!   ([`services::ServiceModel`]), their text, their in-place changes and their read-back.
//! - [`nat`]: `table ip seam-nat` as values: desired and observed, its text, the change between.
//! - [`reply`]: the reply chains of that table, which send a LoadBalancer connection's replies back
//!   through the gateway that translated it.
//! - [`msg`]: the nf_tables netlink batch ([`Batch`]) of a list of [`TableOp`]s.
//!
//! Architecture invariant: pure. No socket, file or process: `seam-linux` opens the netlink socket
//! and sends what this crate builds.

#![warn(missing_docs)]

pub mod conntrack;
pub mod listing;
pub mod msg;
pub mod names;
pub mod nat;
pub mod nflog;
pub mod reply;
pub mod rule;
pub mod services;
pub mod table;

pub use msg::Batch;
pub use rule::{
    AddrField, FirewallDelta, FlowSampling, NftMatch, NftRule, NftSample, NftVerdict, TableOp,
};
