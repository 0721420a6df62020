//! Skiff's store: an etcd-equivalent — openraft for replication, RocksDB for storage,
//! MVCC revisions, watch, leases, membership and snapshots — serving the etcd v3 gRPC
//! API so that `etcdctl` and etcd client libraries work against it unchanged.
//!
//! # Layout
//! - [`config`]: member configuration with etcd's flag names and defaults.
//! - [`storage`]: opening RocksDB; [`storage::schema`] is the on-disk layout.
//! - [`mvcc`]: revisions, the key-value history, reads and writes, compaction.
//! - [`watch`]: the watch hub.
//! - [`lease`]: the lease table and leader-driven expiry.
//! - [`raft`]: openraft types, log store, state machine, snapshots, peer network.
//! - [`member`]: a running member — proposals, read barriers, forwarding, membership.
//! - [`server`]: the gRPC services (one file each), peer server, HTTP endpoints.
//! - [`restore`]: turning a snapshot file into a new cluster's data dir.
//! - [`metrics`]: Prometheus metrics.
//! - [`error`]: the error type and its gRPC mapping.

pub mod config;
pub mod error;
pub mod lease;
pub mod member;
pub mod metrics;
pub mod mvcc;
pub mod raft;
pub mod restore;
pub mod server;
pub mod storage;
pub mod watch;

pub use config::{ClusterState, StoreConfig};
pub use error::{Result, StoreError};
pub use server::{start, RunningStore};
