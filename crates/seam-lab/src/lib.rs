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

mod cni;
pub mod conformance;
mod error;
pub mod gateway;
mod lab;
pub mod probe;
pub mod traffic;
pub mod vm;

pub use cni::{CniCall, CniOutput};
pub use error::{LabError, Result};
pub use lab::{
    down, up, EtcdMemberInfo, Lab, LabSpec, LabStore, NodeInfo, PodInfo, ReplicaInfo, ETCD_MEMBERS,
};
