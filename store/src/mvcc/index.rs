//! The in-memory key index: every stored version of every key, in key order.
//!
//! Versions are stored in RocksDB by revision only (the `rev` column family, see
//! `storage::schema`), so that every write appends at the end of the keyspace instead of
//! landing at a random place in it; this index is what finds a key's versions again, as
//! etcd's `treeIndex` does over its bbolt `key` bucket. For each key it holds the
//! revisions of its versions (with a tombstone flag) and the metadata of the newest one,
//! so that a write, or a read at a revision where the newest version is the answer,
//! needs no RocksDB read for anything but a value.
//!
//! # Invariant
//! A key has an entry exactly when it has a version in the `rev` family, and the entry
//! lists exactly those versions. The writer upholds it by updating the index after each
//! write lands in RocksDB and before the revision is published
//! ([`KvStore::write`](super::KvStore::write)), so a reader pinned to a published revision
//! finds every version at or below it; compaction removes a version from the index after
//! deleting it from RocksDB, so a reader may briefly see a version that is no longer
//! stored — only readers pinned below the compacted revision need such a version, and
//! they are answered "compacted" (see `KvStore`).

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;
use skiff_proto::mvccpb::event::EventType;

use crate::mvcc::key::KeyRange;
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

/// One older version of a key: where it is stored and whether it is a delete marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Older {
    pub rev: Revision,
    pub tombstone: bool,
}

/// Every stored version of one key.
#[derive(Debug)]
struct History {
    newest: Newest,
    /// The versions before `newest`, oldest first (no allocation for a key written once).
    older: Vec<Older>,
}

impl History {
    /// The version a read at revision `at` sees, if any version is that old.
    fn at(&self, at: i64) -> Option<Found> {
        if self.newest.rev.main <= at {
            return Some(Found::Newest(self.newest));
        }
        // `older` is sorted by revision: the last one at or below `at`.
        let i = self.older.partition_point(|o| o.rev.main <= at);
        i.checked_sub(1).map(|i| Found::Older(self.older[i]))
    }
}

/// The version of a key a read sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The key's newest version, with its metadata.
    Newest(Newest),
    /// An older version: only where it is stored and whether it is a delete marker.
    Older(Older),
}

impl Found {
    pub fn rev(&self) -> Revision {
        match self {
            Found::Newest(n) => n.rev,
            Found::Older(o) => o.rev,
        }
    }

    pub fn tombstone(&self) -> bool {
        match self {
            Found::Newest(n) => n.tombstone,
            Found::Older(o) => o.tombstone,
        }
    }
}

/// Every key's versions; see the module docs for the invariant.
#[derive(Default)]
pub(crate) struct KeyIndex {
    map: RwLock<BTreeMap<Box<[u8]>, History>>,
}

/// Builds a [`KeyIndex`] from the stored versions, given in revision order.
#[derive(Default)]
pub(crate) struct IndexBuilder {
    map: BTreeMap<Box<[u8]>, History>,
}

impl IndexBuilder {
    /// Adds a version; versions must come in increasing revision order.
    pub fn add(&mut self, key: &[u8], rev: Revision, rec: &KvRecord) {
        push(&mut self.map, key, Newest::of(rev, rec));
    }
}

/// Makes `newest` the newest version of `key`.
fn push(map: &mut BTreeMap<Box<[u8]>, History>, key: &[u8], newest: Newest) {
    match map.get_mut(key) {
        Some(h) => {
            let old = std::mem::replace(&mut h.newest, newest);
            h.older.push(Older {
                rev: old.rev,
                tombstone: old.tombstone,
            });
        }
        None => {
            map.insert(
                key.into(),
                History {
                    newest,
                    older: Vec::new(),
                },
            );
        }
    }
}

impl KeyIndex {
    /// Replaces the contents with what `builder` gathered (at open and after a snapshot
    /// was installed).
    pub fn replace(&self, builder: IndexBuilder) {
        *self.map.write() = builder.map;
    }

    /// The version of `key` a read at revision `at` sees, if the key had one by then.
    pub fn at(&self, key: &[u8], at: i64) -> Option<Found> {
        self.map.read().get(key).and_then(|h| h.at(at))
    }

    /// Up to `max` keys of `range` in key order, after `after` (exclusive) when given,
    /// with the version a read at `at` sees — only keys live at `at` (a version that is
    /// not a delete marker).
    pub fn live_in(
        &self,
        range: &KeyRange,
        at: i64,
        after: Option<&[u8]>,
        max: usize,
    ) -> Vec<(Vec<u8>, Found)> {
        let mut out = Vec::new();
        if range.is_empty() || max == 0 {
            return out;
        }
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Included(range.start.as_slice()),
        };
        let upper = match (&range.end, range.single) {
            (_, true) => Bound::Included(range.start.as_slice()),
            (Some(e), false) => Bound::Excluded(e.as_slice()),
            (None, false) => Bound::Unbounded,
        };
        // `range` panics on a start above the end (possible only with `after`).
        if let (Bound::Excluded(a), Bound::Excluded(e) | Bound::Included(e)) = (lower, upper) {
            if a >= e {
                return out;
            }
        }
        let map = self.map.read();
        for (k, h) in map.range::<[u8], _>((lower, upper)) {
            if let Some(found) = h.at(at) {
                if !found.tombstone() {
                    out.push((k.to_vec(), found));
                    if out.len() == max {
                        break;
                    }
                }
            }
        }
        out
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
            push(&mut map, &kv.key, newest);
        }
    }

    /// Forgets versions compaction deleted from RocksDB, given in revision order. A key
    /// whose newest version goes (a delete marker at or below the compacted revision:
    /// every older version goes with it) leaves the index.
    pub fn forget(&self, removed: &[(Vec<u8>, Revision)]) {
        if removed.is_empty() {
            return;
        }
        // Grouped by key, each group still in revision order: one pass over each key's
        // history however many of its versions go (a hot key loses thousands at once).
        let mut removed: Vec<&(Vec<u8>, Revision)> = removed.iter().collect();
        removed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut map = self.map.write();
        for group in removed.chunk_by(|a, b| a.0 == b.0) {
            let key = group[0].0.as_slice();
            let Some(h) = map.get_mut(key) else { continue };
            let revs: Vec<Revision> = group.iter().map(|(_, r)| *r).collect();
            if revs.contains(&h.newest.rev) {
                debug_assert!(
                    h.older.iter().all(|o| revs.binary_search(&o.rev).is_ok()),
                    "a newest version compacted before an older one"
                );
                map.remove(key);
            } else {
                h.older.retain(|o| revs.binary_search(&o.rev).is_err());
            }
        }
    }

    /// Keys in the index (deleted keys whose tombstone is not compacted yet included).
    pub fn len(&self) -> usize {
        self.map.read().len()
    }
}
