//! Privileged tests of seam-linux (tier 2): run as root with `cargo test -p seam-linux -- --ignored`.
//! Each test builds its own uniquely named namespaces and removes them on drop, even after a panic;
//! nothing touches the root namespace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conntrack;
mod contract;
mod delta;
mod firewall;
mod hairpin;
mod lb;
mod netns;
mod nflog;
mod random;
mod services;
