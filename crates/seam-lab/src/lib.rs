//! The lab: Seam on one machine, built from network namespaces.
//!
//! `up` makes an underlay namespace holding a bridge on 198.18.0.0/15, one namespace per node
//! joined to it by a veth (`eth0`, 198.18.0.11, .12, …), creates the lab's CA and certificates
//! (`<lab dir>/pki/`, `pki`), starts `seam-controller` (embedded store) and one `seamd` per node,
//! and writes everything a script needs to `/run/seam-lab/<name>/lab.json`. As on a real
//! cluster, the agents reach the controller over TLS on the underlay (198.18.0.1:7440) with
//! certificates of their own, which they got by joining with a one-time token the lab made for
//! each; the controller's Unix socket is the local admin's (the lab itself, the tests:
//! [`Lab::client`]), and the CLI uses the lab's admin certificate ([`Lab::admin_client`]). In
//! one-process mode the embedded controller serves its Unix socket only, and every agent uses it. Pods are namespaces attached by exec'ing the real `seam-cni`
//! binary with CNI env vars and stdin JSON, from inside the node's namespace, as a runtime does.
//!
//! Architecture invariant: nothing here changes the root namespace's links, routes or nftables;
//! every name starts with the lab's prefix, so `down` finds and removes all of it even when the
//! lab's state file is gone (after a crash).
//!
//! The code is split by job. [`Lab`] is the lab's state as kept in `lab.json` (`state`), which
//! commands and tests read back, with the one controller client of a lab ([`Lab::client`], and
//! which replica leads) and the CNI call a runtime on a node makes ([`Lab::cni_call`]). Each job
//! is a type reached from it: [`up`] and [`down`] build and remove the namespaces and wiring,
//! [`Lab::topology`] ([`Topology`]: gateways, hypervisor hosts, the external network),
//! [`Lab::processes`] ([`Processes`]: starting, stopping and restarting the controller, etcd and
//! the agents), [`Lab::workloads`] ([`Workloads`]: pods through the CNI, [`vm`]s, servers and
//! internet hosts of [`gateway`]); [`pki`] is the lab's CA and its certificates. Then [`demo`], [`conformance`], and [`LabGuard`], the lab that
//! tests and benchmarks hold and that goes away on drop. Start reading at [`up`].

#![warn(missing_docs)]

pub mod balance;
mod cni;
pub mod conformance;
mod controller;
pub mod demo;
mod error;
pub mod gateway;
mod guard;
pub mod pki;
mod pods;
pub mod probe;
mod process;
mod state;
mod topology;
pub mod traffic;
pub mod vm;
mod workloads;

pub use cni::{CniCall, CniOutput};
pub use error::{DemoError, LabError, Result};
pub use guard::{register_teardown, teardown_on_signal, unregister_teardown, LabGuard};
pub use pki::{LabUser, PkiPaths, API_PORT};
pub use pods::parse_container_port;
pub use process::{node_cert_dir, Processes};
pub use state::{EtcdMemberInfo, Lab, LabStore, NodeInfo, PodInfo, ReplicaInfo, STATE_ROOT};
pub use topology::{down, up, LabSpec, Topology, ETCD_MEMBERS, UNDERLAY_BRIDGE};
pub use workloads::Workloads;
