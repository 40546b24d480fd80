//! A node's dataplane as values: what should exist ([`DesiredNode`]), what does exist
//! ([`Observed`]), and the list of operations between them ([`plan`]).
//!
//! Architecture invariant: [`plan`] is pure. It never reads the kernel; the agent observes once,
//! plans, then executes through [`NodeKernel`], whose only real implementation lives in
//! `seam-linux`. The in-memory [`fake::FakeKernel`] (feature `testing`) lets the agent's tests run
//! without root. Start reading at [`plan`].

mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod names;
mod plan;
mod types;

pub use error::{Error, Result};
pub use names::{bridge_name, host_ifname, is_host_port, vni_of_bridge, vni_of_vxlan, vxlan_name, HOST_PORT_PREFIX};
pub use plan::plan;
pub use types::*;

/// The kernel as the agent needs it. Each method names the `ip`/`bridge` command it mirrors.
#[allow(async_fn_in_trait)]
pub trait NodeKernel: Send + Sync {
    /// One snapshot of everything Seam owns on the node (`ip -d link`, `bridge fdb`, `ip neigh`).
    async fn observe(&self) -> Result<Observed>;
    /// Executes one planned operation; "already exists" on create and "not found" on delete
    /// count as success.
    async fn apply(&self, op: &LinkOp) -> Result<()>;
    /// Creates the sandbox's veth pair, moves one end into `spec.netns` as `spec.ifname` with its
    /// address, MAC, MTU and default route, and plugs the other end into the segment bridge.
    /// On error nothing of the attachment is left behind.
    async fn attach(&self, spec: &PodAttach) -> Result<AttachedPort>;
    /// Removes the attachment's host veth (`ip link del`), which removes the sandbox end too.
    /// Absent is success.
    async fn detach(&self, host_ifname: &str) -> Result<()>;
    /// Verifies that the sandbox interface, its address and default route, and the host port
    /// are all as `spec` says; the error says what is missing.
    async fn check(&self, spec: &PodAttach) -> Result<()>;
}
