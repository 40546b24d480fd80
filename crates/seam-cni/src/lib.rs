//! Seam's CNI plug-in (spec 1.1.0, also answering 0.3.0 to 1.0.0): validation of the `CNI_*`
//! environment and the network config, CNI result formatting, and the client of the agent
//! socket. The `seam-cni` binary is a thin wrapper over [`run_process`].
//!
//! What it must never do: touch the kernel, pick addresses, or keep state. `seamd` owns all
//! of that; the plug-in validates, asks the agent one question over its Unix socket
//! ([`seam_model::agent_rpc`]), and prints the answer. It is synchronous on purpose (no tokio):
//! it runs once per call and exits. It must never panic on any input: every failure becomes a
//! CNI error object on stdout with a code from [`error::code`].
//!
//! Start reading at [`dispatch`]: [`run_with`] is one invocation from environment and stdin
//! to stdout and exit status. Then [`netconf`] for the accepted config fields, [`env`](mod@env) and
//! [`args`] for the environment, and [`result`] for the result shapes per `cniVersion`.

#![warn(missing_docs)]

pub mod agent_client;
pub mod args;
pub mod dispatch;
pub mod env;
pub mod error;
pub mod netconf;
pub mod result;
pub mod version;

pub use dispatch::{run, run_process, run_with, Outcome};
pub use error::{Error, Result};
pub use version::CniVersion;
