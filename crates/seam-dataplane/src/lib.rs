//! A node's dataplane as values: what should exist ([`DesiredNode`]), what does exist
//! ([`Observed`]), and the list of operations between them ([`plan`]).
//!
//! Architecture invariant: [`plan`] is pure. It never reads the kernel; the agent observes once,
//! plans, then executes through [`NodeKernel`], whose only real implementation lives in
//! `seam-linux`. The in-memory [`fake::FakeKernel`] (feature `testing`) lets the agent's tests run
//! without root; `contract` holds it and `seam-linux` to the same behaviour. Start reading at [`plan`].

#![warn(missing_docs)]

#[cfg(any(test, feature = "testing"))]
pub mod contract;
mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod lb;
mod names;
mod plan;
pub mod reply;
pub mod routed;
pub mod services;
pub mod snat;
pub mod transit;
mod types;

pub use error::{Error, Result};
/// The link group that marks retired host ports (`RETIRED_GROUP` = 0x5ea0).
pub const RETIRED_GROUP: u32 = 0x5ea0;

pub use names::{
    bridge_name, host_ifname, is_host_port, is_vm_port, vm_port_name, vni_of_bridge, vni_of_vxlan,
    vxlan_name, HOST_PORT_PREFIX, VM_PORT_PREFIX,
};
pub use plan::plan;
pub use transit::{
    plan_transit, DesiredTransit, Egress, EgressRule, ObservedTransit, ReplyRoute, TransitKernel,
    TransitOp, TransitRoute, TransitStep, TRANSIT_DEVICE, TRANSIT_ROUTE_PROTOCOL,
};

pub use types::*;

use std::future::Future;

use seam_nft::nat::{NatOp, ObservedNat};
use seam_nft::table::TableModel;

/// The kernel as the agent needs it. Each method names the `ip`/`bridge` command it mirrors.
pub trait NodeKernel: Send + Sync {
    /// One snapshot of everything Seam owns on the node (`ip -d link`, `bridge fdb`, `ip neigh`).
    fn observe(&self) -> impl Future<Output = Result<Observed>> + Send;
    /// Executes one planned operation; "already exists" on create and "not found" on delete
    /// count as success.
    fn apply(&self, op: &LinkOp) -> impl Future<Output = Result<()>> + Send;
    /// Creates the sandbox's veth pair, moves one end into `spec.netns` as `spec.ifname` with its
    /// address, MAC, MTU and default route, and plugs the other end into the segment bridge.
    /// On error nothing of the attachment is left behind.
    fn attach(&self, spec: &PodAttach) -> impl Future<Output = Result<AttachedPort>> + Send;
    /// Removes the attachment's host veth (`ip link del`), which removes the sandbox end too.
    /// Absent is success.
    fn detach(&self, host_ifname: &str) -> impl Future<Output = Result<()>> + Send;
    /// Marks a host veth for removal by the next [`NodeKernel::reap`] (`ip link set NAME group
    /// RETIRED`). Cheap: the kernel's per-link deletion cost (an RCU grace period) is paid
    /// once per batch instead. A retired port no longer shows in [`Observed::host_ports`].
    ///
    /// When `sandbox` names the sandbox namespace and interface, that interface is also set
    /// down and renamed out of the way, so a runtime that reuses the namespace can attach again
    /// at once (the old interface's routes go with it).
    fn retire(
        &self,
        host_ifname: &str,
        sandbox: Option<(&str, &str)>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Deletes every retired port in one batch (`ip link del group RETIRED`); returns whether
    /// there were any.
    fn reap(&self) -> impl Future<Output = Result<bool>> + Send;
    /// Verifies that the sandbox interface, its address and default route, and the host port
    /// are all as `spec` says, and returns the host port; the error says what is missing.
    fn check(&self, spec: &PodAttach) -> impl Future<Output = Result<AttachedPort>> + Send;
    /// The interface `ifname` as it is now: its IPv4 addresses, MAC and MTU (the node's
    /// underlay, which the agent follows). An interface that does not exist is an error.
    fn underlay_interface(
        &self,
        ifname: &str,
    ) -> impl Future<Output = Result<UnderlayInterface>> + Send;
}

/// The node's firewall, as the agent needs it: Seam's nftables tables as values. `table inet seam`
/// (with `table bridge seam`) is replaced in one atomic transaction or changed in place by a
/// [`seam_nft::FirewallDelta`]; `table ip seam-nat` is replaced or removed whole.
pub trait Firewall: Send + Sync {
    /// Replaces Seam's tables with `table` in one transaction (`nft -f -` of
    /// [`seam_nft::table::full_text`]): the kernel switches from the old table to the new one
    /// atomically, so no packet sees a half-applied policy.
    fn apply_ruleset(&self, table: &TableModel) -> impl Future<Output = Result<()>> + Send;
    /// Changes the table in place (see [`seam_nft::FirewallDelta`] for the order and why no packet sees a
    /// half-applied change).
    fn apply_delta(
        &self,
        delta: &seam_nft::FirewallDelta,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The table as the kernel holds it (`nft -j list table inet seam`, read by
    /// [`seam_nft::table::from_nft_json`]): `None` when it is absent, or not a table Seam made
    /// (which the caller replaces whole).
    fn list_table(&self) -> impl Future<Output = Result<Option<TableModel>>> + Send;
    /// Replaces or removes `table ip seam-nat` (`nft -f -`); removing an absent table succeeds.
    fn apply_nat(&self, op: &NatOp) -> impl Future<Output = Result<()>> + Send;
    /// The NAT table as the kernel holds it (`nft -j list table ip seam-nat`), `None` when absent.
    fn list_nat(&self) -> impl Future<Output = Result<Option<ObservedNat>>> + Send;
}

/// The kernel's per-rule counters of `table inet seam` (every rule Seam writes there has a
/// counter): what the agent's API serves (`GET /v1/counters`) and its drop metrics read. Apart
/// from [`Firewall`] so that the agent's reconcile loop, which never reads counters, does not
/// need it.
pub trait RuleCounters: Send + Sync {
    /// Packets and bytes of every rule that has a comment, summed by comment (all the kernel
    /// rules of one IR rule share it: [`seam_nft::names::nft_comment`]); empty when the table is
    /// absent.
    fn rule_counters(
        &self,
    ) -> impl Future<
        Output = Result<std::collections::BTreeMap<String, seam_nft::listing::RuleCounter>>,
    > + Send;
}
