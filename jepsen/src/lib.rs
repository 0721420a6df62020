//! Skiff's Jepsen-style harness.
pub mod history;
