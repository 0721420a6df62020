//! The in-memory key index: each key's newest version, so that a write or a read at the
//! current revision finds a key's state without searching its history in RocksDB.
//!
//! etcd keeps a `treeIndex` of every key's revisions for the same reason. Ours keeps only
//! the newest version's metadata (not the value, not the history): that is all a write
//! needs (create revision, version, lease of the key it replaces) and all a read at a
//! recent revision needs to go straight to the one RocksDB entry that holds the value
//! (a point lookup that bloom filters serve, instead of a seek across every level).
//! Reads older than a key's newest version fall back to the seek.
//!
//! # Invariant
//! Every key with a version in the `kv` column family has an entry, holding its newest
//! version. The writer upholds it by updating the index after each write lands in RocksDB
//! and before the revision is published ([`KvStore::write`](super::KvStore::write)), so a
//! reader pinned to a published revision either sees the entry of that write or an older
//! one whose version is still stored; compaction removes an entry only when it deletes the
//! key's last version, a tombstone, and only if no newer write replaced it meanwhile.

use std::collections::HashMap;

use parking_lot::RwLock;
use rocksdb::DB;
use skiff_proto::mvccpb::event::EventType;

use crate::error::{Result, StoreError};
use crate::mvcc::key;
use crate::mvcc::kvstore::Change;
use crate::mvcc::record::KvRecord;
use crate::mvcc::Revision;

/// The metadata of a key's newest version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Newest {
    /// Where the version is stored.
    pub rev: Revision,
    /// A delete marker (the key is absent from `rev` on).
    pub tombstone: bool,
    /// Revision of the put that created this generation (0 for a tombstone).
    pub create_revision: i64,
    /// Puts in this generation (0 for a tombstone).
    pub version: i64,
    /// Attached lease (0 = none).
    pub lease: i64,
}

impl Newest {
    pub fn of(rev: Revision, rec: &KvRecord) -> Self {
        Self {
            rev,
            tombstone: rec.tombstone,
            create_revision: rec.create_revision,
            version: rec.version,
            lease: rec.lease,
        }
    }

    /// The record of this version with an empty value (the value stays in RocksDB).
    pub fn record_without_value(&self) -> KvRecord {
        KvRecord {
            tombstone: self.tombstone,
            create_revision: self.create_revision,
            version: self.version,
            lease: self.lease,
            value: Vec::new(),
        }
    }

    /// The stored record of a tombstone, which has no value to read.
    pub fn tombstone_record() -> KvRecord {
        KvRecord {
            tombstone: true,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Vec::new(),
        }
    }
}

/// Each key's newest version; see the module docs for the invariant.
#[derive(Default)]
pub(crate) struct KeyIndex {
    map: RwLock<HashMap<Box<[u8]>, Newest>>,
}

impl KeyIndex {
    /// Replaces the contents with a scan of the `kv` column family (one pass over every
    /// stored version): at open and after a snapshot was installed.
    ///
    /// # Errors
    /// Storage errors or corrupt entries.
    pub fn rebuild(&self, db: &DB, cf: &rocksdb::ColumnFamily) -> Result<()> {
        let fresh = scan(db, cf)?;
        *self.map.write() = fresh;
        Ok(())
    }

    /// The newest version of `key`, if the key has any stored version.
    pub fn get(&self, key: &[u8]) -> Option<Newest> {
        self.map.read().get(key).copied()
    }

    /// Records the changes of one request, already written to RocksDB.
    pub fn apply<'c>(&self, changes: impl IntoIterator<Item = &'c Change>) {
        let mut changes = changes.into_iter().peekable();
        if changes.peek().is_none() {
            return;
        }
        let mut map = self.map.write();
        for c in changes {
            let Some(kv) = &c.event.kv else { continue };
            let newest = if c.event.r#type == EventType::Delete as i32 {
                Newest {
                    rev: c.rev,
                    tombstone: true,
                    create_revision: 0,
                    version: 0,
                    lease: 0,
                }
            } else {
                Newest {
                    rev: c.rev,
                    tombstone: false,
                    create_revision: kv.create_revision,
                    version: kv.version,
                    lease: kv.lease,
                }
            };
            match map.get_mut(kv.key.as_slice()) {
                Some(e) => *e = newest,
                None => {
                    map.insert(kv.key.clone().into_boxed_slice(), newest);
                }
            }
        }
    }

    /// Forgets `key` after compaction deleted its last version, the tombstone at `rev`;
    /// a key written again since keeps its (newer) entry.
    pub fn forget(&self, key: &[u8], rev: Revision) {
        let mut map = self.map.write();
        if map.get(key).is_some_and(|n| n.rev == rev && n.tombstone) {
            map.remove(key);
        }
    }

    /// Keys in the index (deleted keys whose tombstone is not compacted yet included).
    pub fn len(&self) -> usize {
        self.map.read().len()
    }
}

/// Every key's newest version: the first entry of each key in the `kv` family, whose
/// revision suffix sorts newest first.
fn scan(db: &DB, cf: &rocksdb::ColumnFamily) -> Result<HashMap<Box<[u8]>, Newest>> {
    let mut map = HashMap::new();
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_first();
    // The encoded key (without revision) of the key whose newest version is recorded.
    let mut current: Vec<u8> = Vec::new();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if k.len() < 18 {
            return Err(StoreError::Corruption("kv key".into()));
        }
        let body = &k[..k.len() - 16];
        if body != current.as_slice() {
            let (user_key, suffix) =
                key::decode(k).ok_or_else(|| StoreError::Corruption("kv key".into()))?;
            let rev = Revision::from_desc_bytes(suffix)
                .ok_or_else(|| StoreError::Corruption("kv key suffix".into()))?;
            let rec =
                KvRecord::decode(v).ok_or_else(|| StoreError::Corruption("kv record".into()))?;
            map.insert(user_key.into_boxed_slice(), Newest::of(rev, &rec));
            current.clear();
            current.extend_from_slice(body);
        }
        it.next();
    }
    it.status()?;
    Ok(map)
}
