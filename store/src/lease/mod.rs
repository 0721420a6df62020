//! Leases: the replicated lease table's in-memory side and leader-driven expiry.
//!
//! # Layout
//! - [`lessor`]: which leases exist and, on the leader, their deadlines.

pub mod lessor;

pub use lessor::{LeaseRecord, Lessor, MAX_LEASE_TTL};
