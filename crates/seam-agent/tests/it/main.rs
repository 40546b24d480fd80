//! Tier-1 tests of the node agent: a real controller in-process on a Unix socket, agents on the
//! in-memory fake kernel, and every CNI verb sent through the agent's socket with the real
//! protocol. No root needed.

// Test helpers outside `#[test]` functions: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod blocks;
mod cni;
mod crash;
mod flows;
mod gateway;
mod harness;
mod identity;
mod names;
mod realization;
mod reassert;
mod reconcile;
mod routed;
mod services;
mod socket;
mod underlay;
