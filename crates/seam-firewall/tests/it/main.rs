//! Integration tests of seam-firewall: the compiled IR against the reference engine, and the renderer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cases;
mod cnp;
mod conformance;
mod contracts;
mod incremental;
mod oracle;
mod render;
mod tenants;
