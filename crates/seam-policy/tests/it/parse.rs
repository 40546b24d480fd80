//! parse tests.
