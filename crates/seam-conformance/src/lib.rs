//! The Kubernetes NetworkPolicy and AdminNetworkPolicy conformance harness, one for every layer
//! that decides a packet's fate: the policy engine (seam-policy's tests, `seam conformance
//! netpol`), the compiled IR (seam-firewall's tests), a kernel with the rules loaded (seam-linux's
//! privileged tests) and a whole lab (`seam conformance netpol --dataplane`, in seam-lab).
//!
//! - The format ([`Suite`]): the case files of `crates/seam-policy/test_data/netpol/` (see its
//!   README) and `model.json`, read into [`Case`]s with their [`Probe`]s and the [`Model`]'s
//!   clusters. Symbolic addresses (`{{ip:x/b}}`, `{{net:x/a/4}}`) are replaced with the addresses
//!   of whatever runs the case ([`substitute`]).
//! - The check ([`check`]): a [`Decider`] observes every probe of a case, [`judge`] compares each
//!   observation with the expectation, and the [`Report`] holds one line per failing case.
//!
//! Architecture invariant: pure. No file, socket or process; callers read the files and hand
//! over their texts ([`Suite::from_texts`]) or JSON. A malformed file is a
//! [`ConformanceError`], a failing case a line of the report; nothing panics.
//!
//! Start reading at [`check`].
#![warn(missing_docs)]

mod case;
mod check;
mod cnp;
mod error;
mod json;
mod model;
mod report;
mod symbols;

pub use case::{is_anp_case, Case, Probe, Suite};
pub use check::{check, check_case, flow, judge, CaseInput, Decider, Engine, Judging, Observed};
pub use cnp::anp_as_cnp;
pub use error::ConformanceError;
pub use model::{Cluster, Model, ModelPod};
pub use report::{CaseOutcome, Report};
pub use symbols::{policy_documents, policy_set, substitute};

/// Where the case data lives in the source tree (`crates/seam-policy/test_data/netpol`: `cases.json`,
/// `anp_cases.json`, `model.json`), for the test suites that read it with [`Suite::from_texts`].
pub const TEST_DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../seam-policy/test_data/netpol"
);

#[cfg(test)]
mod tests;
