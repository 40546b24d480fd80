//! The pure parts of the `seam` command line, kept out of `main.rs` so they can be tested:
//! reading manifests for `seam apply` ([`manifest`]), building the engine's inputs from a
//! controller snapshot and rendering `seam explain` ([`explain`]), and the engine-level
//! NetworkPolicy / AdminNetworkPolicy conformance runner ([`conformance`]).
//!
//! Architecture invariant: no I/O here (no sockets, files or processes); `main.rs` reads files,
//! talks to the controller and prints (`commands/<verb>.rs`).
//! Start reading at [`manifest::parse_manifests`].

pub mod conformance;
mod error;
pub mod explain;
pub mod manifest;

pub use error::{ConformanceError, ExplainError, ManifestError, ManifestProblem};
