//! openraft behind one adapter: types, the RocksDB log store and state machine, snapshot
//! files, and the peer network.
//!
//! # Layout
//! - [`types`]: the openraft type configuration; log entry payloads (`Request`) and
//!   apply results.
//! - [`log_store`]: the raft log with group-committed fsync.
//! - [`durability`]: how far the leader's early-reported appends are synced.
//! - [`state_machine`]: applying entries to MVCC, leases and cluster metadata.
//! - [`snapshot`]: the snapshot file format.
//! - [`network`]: the peer client (openraft `RaftNetwork`).
//! - [`wire`]: the framing of AppendEntries and Vote on a plain TCP connection.

pub mod durability;
pub mod log_store;
pub mod network;
pub mod proposals;
pub mod recent;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod wal;
pub mod wire;

pub use log_store::LogStore;
pub use state_machine::StateMachine;
pub use types::{ApplyResult, MemberNode, NodeId, Raft, Request, Response, TypeConfig};
