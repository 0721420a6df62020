//! The on-disk schema: every column family and key encoding of a store member's
//! RocksDB, in one place.
//!
//! One RocksDB instance per member holds the state machine and the raft metadata. Log
//! entries live in the log's own segment files under `member/wal/` (`raft::wal`,
//! `docs/store-raft-log-segments.md`); `raft_log` only holds the entries of a data dir
//! written before that, until the first start moves them.
//!
//! ```text
//! column family   key                                    value
//! ─────────────   ─────────────────────────────────────  ─────────────────────────────────
//! raft_log        index: u64 BE                          bincode(openraft Entry)
//! raft_meta       "vote" | "purged" | "committed" |      bincode(Vote | LogId | LogId |
//!                 "member_id"                            (member id, cluster id))
//! kv              (empty; see below)
//! rev             main: u64 BE ‖ sub: u64 BE              key length ‖ key ‖ KvRecord
//!                                                        (see mvcc::record)
//! lease           lease id: i64 BE                       LeaseRecord (bincode)
//! lease_key       lease id: i64 BE ‖ user key (raw)      empty
//! sm_meta         "applied" | "applied_sub" |             bincode(...)
//!                 "membership" | "rev" |
//!                 "compact" | "alarms" | "members"
//! ```
//!
//! Every version of every key lives in `rev` under its revision, so writes append at
//! the end of the family and watch catch-up and compaction read it in order; the
//! in-memory key index (`mvcc::index`) finds a key's versions
//! (`docs/store-mvcc-by-revision.md`). `kv` is where Skiff kept versions before, keyed by
//! `memkey(user key) ‖ !main ‖ !sub` (`mvcc::key`): opening a data dir, or installing a
//! snapshot, that still has entries there moves them into `rev`. It stays in the list of
//! families (and of what a snapshot carries) so that such snapshots still load.

/// Raft log entries of older data dirs (moved into `member/wal/` at start).
pub const CF_RAFT_LOG: &str = "raft_log";
/// Raft vote, last purged log id, committed log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// Where older Skiff versions kept MVCC versions (key, then descending revision); empty
/// once a data dir was opened by this one.
pub const CF_KV: &str = "kv";
/// MVCC versions by revision: revision → key and record.
pub const CF_REV: &str = "rev";
/// Leases granted and not revoked.
pub const CF_LEASE: &str = "lease";
/// Keys attached to each lease.
pub const CF_LEASE_KEY: &str = "lease_key";
/// State-machine metadata (applied log id, membership, revisions, alarms, members).
pub const CF_SM_META: &str = "sm_meta";

/// Every column family, in creation order.
pub const ALL_CFS: &[&str] = &[
    CF_RAFT_LOG,
    CF_RAFT_META,
    CF_KV,
    CF_REV,
    CF_LEASE,
    CF_LEASE_KEY,
    CF_SM_META,
];

/// The column families that make up the state machine (what a snapshot carries).
pub const SM_CFS: &[&str] = &[CF_KV, CF_REV, CF_LEASE, CF_LEASE_KEY, CF_SM_META];

/// `raft_meta` keys.
pub mod raft_meta {
    /// The persisted vote.
    pub const VOTE: &[u8] = b"vote";
    /// The last purged log id.
    pub const PURGED: &[u8] = b"purged";
    /// The last known committed log id.
    pub const COMMITTED: &[u8] = b"committed";
    /// `(member id, cluster id)`, written once when the data dir is created; its presence
    /// means "restart", never "bootstrap again".
    pub const MEMBER_ID: &[u8] = b"member_id";
}

/// `sm_meta` keys.
pub mod sm_meta {
    /// Log id of the last applied entry; written in the same batch as its effects.
    pub const APPLIED: &[u8] = b"applied";
    /// `(log id, i)`: requests `0..=i` of the batched entry `log id` are applied (the
    /// entry itself is not complete until `APPLIED` names it).
    pub const APPLIED_SUB: &[u8] = b"applied_sub";
    /// The last applied membership (openraft `StoredMembership`).
    pub const MEMBERSHIP: &[u8] = b"membership";
    /// The current MVCC revision (main), an i64.
    pub const REVISION: &[u8] = b"rev";
    /// The compacted revision, an i64 (0 = never compacted).
    pub const COMPACT: &[u8] = b"compact";
    /// Active alarms.
    pub const ALARMS: &[u8] = b"alarms";
    /// Member attributes (names, client URLs, promotion intents).
    pub const MEMBERS: &[u8] = b"members";
}

/// Encodes a raft log index as a `raft_log` key.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Decodes a `raft_log` key.
///
/// # Panics
/// On a key that is not 8 bytes: only keys written by [`log_key`] exist in that family,
/// so anything else is corruption.
pub fn parse_log_key(key: &[u8]) -> u64 {
    u64::from_be_bytes(
        key.try_into()
            .unwrap_or_else(|_| panic!("corrupt raft_log key {key:?}")),
    )
}

/// Encodes a lease id as a `lease` key.
pub fn lease_key(id: i64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Encodes a `lease_key` key: the lease id then the raw user key.
pub fn lease_key_entry(id: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(key);
    k
}
