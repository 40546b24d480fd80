//! eval tests.
