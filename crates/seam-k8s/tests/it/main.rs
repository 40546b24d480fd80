//! The adapter against an in-process stand-in of the Kubernetes API server (list/watch with
//! resourceVersions, bookmarks and 410 Gone) and an in-process controller, both on local sockets
//! (no root, no cluster).

// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apiserver;
mod flow;
mod harness;
mod realization;
mod relist;
mod robustness;
mod services;
