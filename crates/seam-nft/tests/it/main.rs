//! Tests of seam-nft's public interface (tier 1: no root, no kernel).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cases;
mod golden;
