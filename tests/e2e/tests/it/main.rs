//! End-to-end tests on the lab. Each needs root and makes its own uniquely named lab, removed
//! on drop; `scripts/test.sh` runs them with `-- --ignored`.

mod chain;
mod cni;
mod crash;
mod overlay;
