//! [`Workloads`]: what runs on the lab's nodes and next to them — pods attached through the CNI
//! (`pods`), VMs on hypervisor hosts ([`crate::vm`]), bare-metal servers and internet hosts on the
//! external network ([`crate::gateway`]).

use crate::state::Lab;

/// The lab's workloads: pods, VMs, servers and internet hosts. Reached through
/// [`Lab::workloads`]; pods are kept in `lab.json`, VMs in `vms.json`, servers and internet hosts
/// in `external.json`.
#[derive(Debug)]
pub struct Workloads<'a> {
    pub(crate) lab: &'a mut Lab,
}

impl Lab {
    /// The lab's workloads: pods, VMs, servers and internet hosts.
    pub fn workloads(&mut self) -> Workloads<'_> {
        Workloads { lab: self }
    }
}
