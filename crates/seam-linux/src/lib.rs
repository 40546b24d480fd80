//! Everything Seam does to the Linux kernel: the rtnetlink implementation of
//! [`seam_dataplane::NodeKernel`] and `TransitKernel`, the `Firewall` (the policy table and the
//! NAT table), network namespace helpers, sysctls, and the nftables edge ([`nft`]: apply a
//! rendered transaction, list a table, read rule counters back; [`nfnl`]: send the nf_tables
//! batches `seam_nft` builds), and [`watch`]: an interface's address and link changes.
//!
//! Architecture invariant: this is the only crate that opens netlink sockets or enters network
//! namespaces. Namespace switching happens on a dedicated short-lived thread
//! ([`netns::run_in`]), never on a tokio worker. Start reading at [`LinuxKernel`].

#![warn(missing_docs)]

pub mod conntrack;
mod error;
mod kernel;
pub mod lb;
pub mod netns;
pub mod nflog;
pub mod nfnl;
pub mod nft;
pub mod sysctl;
mod transit;
pub mod watch;

pub use error::{Error, Result};
pub use kernel::LinuxKernel;
pub use nft::{apply_delta, apply_ruleset, delete_table, read_counters, NftError, RuleCounter};
