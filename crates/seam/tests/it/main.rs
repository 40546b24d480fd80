//! The `seam` binary as a user runs it: conformance over the shared cases, and apply / get /
//! explain / delete / flows against an in-process controller on a temporary Unix socket (no root).

// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod conformance;
mod flows;
mod realization;
