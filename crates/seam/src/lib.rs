//! The pure parts of the `seam` command line, kept out of `main.rs` so they can be tested:
//! reading manifests for `seam apply` ([`manifest`]), and building the engine's inputs from a
//! controller snapshot and rendering `seam explain` ([`explain`]). The conformance harness is
//! seam-conformance; the dataplane runner is `seam_lab::conformance`.
//!
//! Architecture invariant: no I/O here (no sockets, files or processes); `main.rs` reads files,
//! talks to the controller and prints (`commands/<verb>.rs`).
//! Start reading at [`manifest::parse_manifests`].

#![warn(missing_docs)]

mod error;
pub mod explain;
pub mod manifest;

pub use error::{ExplainError, ManifestError, ManifestProblem};
