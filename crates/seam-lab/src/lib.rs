//! The lab: Seam on one machine, built from network namespaces.
//!
//! `up` makes an underlay namespace holding a bridge on 198.18.0.0/15, one namespace per node
//! joined to it by a veth (`eth0`, 198.18.0.11, .12, …), starts `seam-controller` (Unix socket,
//! embedded store) and one `seamd` per node, and writes everything a script needs to
//! `/run/seam-lab/<name>/lab.json`. Pods are namespaces attached by exec'ing the real `seam-cni`
//! binary with CNI env vars and stdin JSON, from inside the node's namespace, as a runtime does.
//!
//! Architecture invariant: nothing here changes the root namespace's links, routes or nftables;
//! every name starts with the lab's prefix, so `down` finds and removes all of it even when the
//! lab's state file is gone (after a crash).
//!
//! The code is split by job: `state` (the [`Lab`] as kept in `lab.json`, which commands and
//! tests read back), `topology` ([`up`], [`down`]: namespaces and wiring), `process` (starting,
//! stopping and restarting the controller, etcd and the agents), `pods` (pods attached through
//! the CNI), [`vm`] and [`gateway`] (VMs, gateways, servers, the "internet"), `controller` (the
//! lab's calls to its controller, through seam-client), [`demo`], and [`LabGuard`], the lab that
//! tests and benchmarks hold and that goes away on drop. Start reading at [`up`].

#![warn(missing_docs)]

mod cni;
pub mod conformance;
mod controller;
pub mod demo;
mod error;
pub mod gateway;
mod guard;
mod pods;
pub mod probe;
mod process;
mod state;
mod topology;
pub mod traffic;
pub mod vm;

pub use cni::{CniCall, CniOutput};
pub use error::{DemoError, LabError, Result};
pub use guard::LabGuard;
pub use state::{EtcdMemberInfo, Lab, LabStore, NodeInfo, PodInfo, ReplicaInfo, STATE_ROOT};
pub use topology::{down, up, LabSpec, ETCD_MEMBERS};
