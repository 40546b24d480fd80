//! Integration tests of seam-policy: the conformance cases under `test_data/netpol/`, parsing, evaluation and
//! property tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cnp;
mod conformance;
mod eval;
mod parse;
mod props;
mod tenants;
