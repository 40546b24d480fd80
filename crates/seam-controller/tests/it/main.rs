//! In-process tests of the controller API, driven through `seam-client` over a temporary Unix
//! socket (no root needed).

// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod authz;
mod blocks;
mod bounds;
mod conditional;
mod flows;
mod fuzz;
mod health;
mod identities;
mod ownership;
mod policies;
mod process;
mod realization;
mod replicas;
mod server;
mod services;
mod tenants;
mod tls;
mod tls_cli;
mod ui;
mod vms;
mod watch;
