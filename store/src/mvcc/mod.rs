//! MVCC: every version of every key, addressed by revision.
//!
//! # Layout
//! - [`revision`]: `Revision { main, sub }` and its byte encodings.
//! - [`key`]: etcd key ranges, and the key encoding of the former `kv` layout.
//! - [`record`]: the stored form of one key version.
//! - [`index`]: every key's versions in key order, in memory (versions are stored by
//!   revision).
//! - [`kvstore`]: reads at a revision, the change log, hashing, compaction.
//! - [`txn`]: applying one modifying request (Put, DeleteRange, Txn, lease revoke).
//! - [`validate`]: request checks done before a request is proposed.

pub(crate) mod index;
pub mod key;
pub mod kvstore;
pub mod record;
pub mod revision;
pub mod txn;
pub mod validate;

pub use kvstore::{Change, KvStore};
pub use revision::Revision;
pub use txn::WriteTxn;
