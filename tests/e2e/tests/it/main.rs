//! End-to-end tests on the lab. Each needs root and makes its own uniquely named lab, removed
//! on drop; `scripts/test.sh` runs them with `-- --ignored`.

// A test binary: unwrap and panic are how its helpers fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod chain;
mod cni;
mod conformance;
mod crash;
mod etcd_tls;
mod gateway;
mod identity;
mod names;
mod netns;
mod overlay;
mod policy;
mod qemu;
mod realization;
mod replicas;
mod routed;
mod services;
mod snat;
mod tenants;
mod ui;
mod visibility;
mod vm;
