//! The read side of the MVCC store: ranges at a revision, single-key history, the
//! change log that watchers catch up from, hashing, and background compaction.
//!
//! Readers never block the writer: every read is pinned to a revision `R ≤ current`, and
//! versions newer than `R` are skipped; a batch that is being written is invisible until
//! [`KvStore::publish_revision`] moves `current` past it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rocksdb::{ReadOptions, WriteBatch, DB};
use skiff_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use skiff_proto::etcdserverpb::{RangeRequest, RangeResponse};
use skiff_proto::mvccpb::{event::EventType, Event, KeyValue};

use crate::error::{Result, StoreError};
use crate::mvcc::index::{KeyIndex, Newest};
use crate::mvcc::key::{self, KeyRange};
use crate::mvcc::record::KvRecord;
use crate::mvcc::Revision;
use crate::storage::schema::{self, CF_KV, CF_REV, CF_SM_META};

/// A change as recorded at one revision, with the version it replaced.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Where in the history the change sits.
    pub rev: Revision,
    /// PUT or DELETE with the key's new state (for DELETE: key and mod_revision only).
    pub event: Event,
    /// The key had a live previous version, but its value was not loaded (no watcher
    /// wanted previous values when the change was made), so `event.prev_kv` is `None`.
    /// Watchers that want it read the change from history (`changes` with `with_prev`).
    pub prev_pending: bool,
}

/// MVCC key-value store over the `kv` and `rev` column families.
///
/// Cheap to share (`Arc`); one writer (the state machine) and many readers.
pub struct KvStore {
    db: Arc<DB>,
    /// Highest revision whose changes are fully written and visible to readers.
    current: AtomicI64,
    /// Revisions at or below this are compacted (0 = none).
    compacted: AtomicI64,
    /// Each key's newest version (see [`KeyIndex`] for why and its invariant).
    index: KeyIndex,
}

impl KvStore {
    /// Opens the store over `db`, reading the current and compacted revisions.
    ///
    /// # Errors
    /// Storage errors, or corrupt metadata.
    pub fn open(db: Arc<DB>) -> Result<Self> {
        let s = Self {
            db,
            current: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            index: KeyIndex::default(),
        };
        s.reload()?;
        Ok(s)
    }

    /// Re-reads the revisions from disk and rebuilds the key index (at open and after a
    /// snapshot was installed).
    ///
    /// # Errors
    /// Storage errors or corrupt metadata.
    pub fn reload(&self) -> Result<()> {
        let cf = self.cf(CF_SM_META)?;
        let read = |k: &[u8]| -> Result<i64> {
            match self.db.get_cf(cf, k)? {
                None => Ok(0),
                Some(v) => {
                    Ok(i64::from_be_bytes(v.as_slice().try_into().map_err(
                        |_| StoreError::Corruption("revision meta".into()),
                    )?))
                }
            }
        };
        // etcd's revision starts at 1 in an empty store, so the first write gets 2 and
        // no response carries revision 0 (which clients read as "unset").
        self.current
            .store(read(schema::sm_meta::REVISION)?.max(1), Ordering::SeqCst);
        self.compacted
            .store(read(schema::sm_meta::COMPACT)?, Ordering::SeqCst);
        self.index.rebuild(&self.db, self.cf(CF_KV)?)
    }

    /// Writes a request's batch (built by a [`WriteTxn`](super::WriteTxn), plus whatever
    /// else the caller adds) and records its `changes` in the key index. Every write to
    /// the `kv` family goes through here; the caller publishes the revision after it.
    ///
    /// # Errors
    /// Storage errors (then nothing was written and the index is unchanged).
    pub fn write<'c>(
        &self,
        batch: WriteBatch,
        changes: impl IntoIterator<Item = &'c Change>,
    ) -> Result<()> {
        self.db.write(batch)?;
        self.index.apply(changes);
        Ok(())
    }

    /// Keys the index holds: live keys plus deleted ones not yet compacted away.
    pub fn indexed_keys(&self) -> usize {
        self.index.len()
    }

    /// The underlying database.
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corruption(format!("missing column family {name}")))
    }

    /// The newest visible revision.
    pub fn current_revision(&self) -> i64 {
        self.current.load(Ordering::SeqCst)
    }

    /// The compacted revision (reads below it fail with [`StoreError::Compacted`]).
    pub fn compact_revision(&self) -> i64 {
        self.compacted.load(Ordering::SeqCst)
    }

    /// Makes `rev` visible to readers. Called by the writer after the batch holding
    /// `rev` is in the database.
    pub fn publish_revision(&self, rev: i64) {
        self.current.fetch_max(rev, Ordering::SeqCst);
    }

    pub(crate) fn set_compacted(&self, rev: i64) {
        self.compacted.fetch_max(rev, Ordering::SeqCst);
    }

    /// Resolves the revision a read is pinned to: `<= 0` means current.
    ///
    /// # Errors
    /// [`StoreError::FutureRevision`] above current, [`StoreError::Compacted`] below the
    /// compacted revision.
    pub fn read_revision(&self, requested: i64) -> Result<i64> {
        let current = self.current_revision();
        if requested <= 0 {
            return Ok(current);
        }
        if requested > current {
            return Err(StoreError::FutureRevision);
        }
        let compacted = self.compact_revision();
        if requested < compacted {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            });
        }
        Ok(requested)
    }

    /// The newest version of `key` at or below revision `at`, if any (tombstones included).
    ///
    /// # Errors
    /// Storage errors or corrupt records.
    pub fn get_version(&self, key: &[u8], at: i64) -> Result<Option<(Revision, KvRecord)>> {
        match self.get_version_meta(key, at)? {
            None => Ok(None),
            Some((rev, rec, true)) => Ok(Some((rev, rec))),
            Some((rev, _, false)) => match self.get_exact(key, rev)? {
                Some(found) => Ok(Some(found)),
                // Compacted away under a reader pinned below the compaction: search for
                // what is left, as a read without the index would.
                None => self.search_version(key, at),
            },
        }
    }

    /// [`KvStore::get_version`] without reading the value when the key index can answer:
    /// the record comes back with an empty value and `false` ("value not loaded") then.
    /// Tombstones and versions found by searching come back whole, with `true`.
    ///
    /// # Errors
    /// Storage errors or corrupt records.
    pub fn get_version_meta(
        &self,
        key: &[u8],
        at: i64,
    ) -> Result<Option<(Revision, KvRecord, bool)>> {
        match self.index.get(key) {
            // No stored version at all.
            None => Ok(None),
            Some(n) if n.rev.main <= at => {
                if n.tombstone {
                    Ok(Some((n.rev, Newest::tombstone_record(), true)))
                } else {
                    Ok(Some((n.rev, n.record_without_value(), false)))
                }
            }
            Some(_) => Ok(self.search_version(key, at)?.map(|(r, rec)| (r, rec, true))),
        }
    }

    /// [`KvStore::get_version`] by searching the key's history in RocksDB.
    pub(crate) fn search_version(
        &self,
        key: &[u8],
        at: i64,
    ) -> Result<Option<(Revision, KvRecord)>> {
        let cf = self.cf(CF_KV)?;
        let prefix = key::encode(key);
        let mut seek = prefix.clone();
        seek.extend_from_slice(&Revision::new(at, i64::MAX).to_desc_bytes());
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(&seek);
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.len() == prefix.len() + 16 && k.starts_with(&prefix) {
                let rev = Revision::from_desc_bytes(&k[prefix.len()..])
                    .ok_or_else(|| StoreError::Corruption("kv key suffix".into()))?;
                let rec = KvRecord::decode(v)
                    .ok_or_else(|| StoreError::Corruption("kv record".into()))?;
                return Ok(Some((rev, rec)));
            }
        }
        it.status()?;
        Ok(None)
    }

    /// The live value of `key` at revision `at` as a `KeyValue` (None if absent/deleted).
    ///
    /// # Errors
    /// Storage errors or corrupt records.
    pub fn get(&self, key: &[u8], at: i64) -> Result<Option<KeyValue>> {
        Ok(self
            .get_version(key, at)?
            .filter(|(_, r)| !r.tombstone)
            .map(|(rev, r)| r.to_kv(key.to_vec(), rev)))
    }

    /// Visits every live key in `range` as of revision `at`, in key order, until `f`
    /// returns false. `f` gets the key, its revision and record.
    ///
    /// # Errors
    /// Storage errors or corrupt records.
    pub fn scan(
        &self,
        range: &KeyRange,
        at: i64,
        mut f: impl FnMut(Vec<u8>, Revision, KvRecord) -> bool,
    ) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        if range.single {
            if let Some((rev, rec)) = self.get_version(&range.start, at)? {
                if !rec.tombstone {
                    f(range.start.clone(), rev, rec);
                }
            }
            return Ok(());
        }
        let cf = self.cf(CF_KV)?;
        let mut opts = ReadOptions::default();
        if let Some(end) = &range.end {
            opts.set_iterate_upper_bound(key::encode(end));
        }
        let mut it = self.db.raw_iterator_cf_opt(cf, opts);
        it.seek(key::encode(&range.start));
        // The user key whose versions we are skipping once its answer is known.
        let mut done_with: Option<Vec<u8>> = None;
        while let Some(k) = it.key() {
            let (user_key, suffix) =
                key::decode(k).ok_or_else(|| StoreError::Corruption("kv key".into()))?;
            if done_with.as_deref() == Some(user_key.as_slice()) {
                it.next();
                continue;
            }
            let rev = Revision::from_desc_bytes(suffix)
                .ok_or_else(|| StoreError::Corruption("kv key".into()))?;
            if rev.main > at {
                // Newer than the read revision: jump to this key's newest version <= at.
                // The target sorts strictly after the current entry (!at > !rev.main), so
                // this always moves forward.
                let mut seek = key::encode(&user_key);
                seek.extend_from_slice(&Revision::new(at, i64::MAX).to_desc_bytes());
                it.seek(&seek);
                continue;
            }
            let rec = KvRecord::decode(it.value().unwrap_or_default())
                .ok_or_else(|| StoreError::Corruption("kv record".into()))?;
            if !rec.tombstone && !f(user_key.clone(), rev, rec) {
                return Ok(());
            }
            done_with = Some(user_key);
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// Serves a Range request (header left empty for the caller to fill).
    ///
    /// # Errors
    /// [`StoreError::Compacted`] / [`StoreError::FutureRevision`] for an unreadable
    /// revision; storage errors.
    pub fn range(&self, req: &RangeRequest) -> Result<(RangeResponse, i64)> {
        let at = self.read_revision(req.revision)?;
        let range = KeyRange::from_request(&req.key, &req.range_end);
        let mut kvs = Vec::new();
        let mut count = 0i64;
        let fetch_all = needs_full_fetch(req);
        let limit = if req.limit > 0 {
            req.limit as usize
        } else {
            usize::MAX
        };
        self.scan(&range, at, |k, rev, rec| {
            count += 1;
            if !req.count_only && (fetch_all || kvs.len() < limit) {
                let mut kv = rec.to_kv(k, rev);
                if req.keys_only {
                    kv.value.clear();
                }
                kvs.push(kv);
            }
            true
        })?;
        Ok((finish_range(req, kvs, count), at))
    }

    /// Changes with revisions in `[from, to]` in revision order, at most `limit` of
    /// them, always ending at a revision boundary (a revision is never split). Each
    /// change carries the key's previous version when `with_prev`.
    ///
    /// # Errors
    /// [`StoreError::Compacted`] when `from` is compacted; storage errors.
    pub fn changes(
        &self,
        from: i64,
        to: i64,
        limit: usize,
        with_prev: bool,
    ) -> Result<Vec<Change>> {
        let compacted = self.compact_revision();
        if from < compacted {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            });
        }
        let cf = self.cf(CF_REV)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(Revision::new(to.saturating_add(1), 0).to_bytes().to_vec());
        let mut it = self.db.raw_iterator_cf_opt(cf, opts);
        it.seek(Revision::new(from, 0).to_bytes());
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let rev =
                Revision::from_bytes(k).ok_or_else(|| StoreError::Corruption("rev key".into()))?;
            if out.len() >= limit && out.last().is_some_and(|c: &Change| c.rev.main != rev.main) {
                break;
            }
            let user_key = v.to_vec();
            let (_, rec) = self
                .get_exact(&user_key, rev)?
                .ok_or_else(|| StoreError::Corruption(format!("rev {rev} without kv entry")))?;
            let prev = if with_prev {
                self.get(&user_key, rev.main - 1)?
            } else {
                None
            };
            out.push(Change {
                rev,
                event: make_event(user_key, rev, &rec, prev),
                prev_pending: false,
            });
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    fn get_exact(&self, key: &[u8], rev: Revision) -> Result<Option<(Revision, KvRecord)>> {
        let cf = self.cf(CF_KV)?;
        let mut k = key::encode(key);
        k.extend_from_slice(&rev.to_desc_bytes());
        match self.db.get_pinned_cf(cf, &k)? {
            None => Ok(None),
            Some(v) => Ok(Some((
                rev,
                KvRecord::decode(&v).ok_or_else(|| StoreError::Corruption("kv record".into()))?,
            ))),
        }
    }

    /// A hash of the logical key-value state at revision `at` (every live key with its
    /// create/mod revision, version, lease and value), independent of how far each member
    /// has physically compacted — so equal on every member that applied the same log.
    ///
    /// # Errors
    /// As [`KvStore::read_revision`]; storage errors.
    pub fn hash_kv(&self, at: i64) -> Result<(u32, i64)> {
        let at = self.read_revision(at)?;
        let mut h = crc32fast::Hasher::new();
        self.scan(&KeyRange::from_request(b"", b"\0"), at, |k, rev, rec| {
            h.update(&(k.len() as u64).to_be_bytes());
            h.update(&k);
            h.update(&rev.main.to_be_bytes());
            h.update(&rec.create_revision.to_be_bytes());
            h.update(&rec.version.to_be_bytes());
            h.update(&rec.lease.to_be_bytes());
            h.update(&(rec.value.len() as u64).to_be_bytes());
            h.update(&rec.value);
            true
        })?;
        Ok((h.finalize(), at))
    }

    /// Physically removes versions superseded at `compact_rev`, walking at most
    /// `batch` entries of the change log from `cursor`. Returns the revision to continue
    /// from, or `None` when done. Never touches versions a read at `>= compact_rev` needs.
    ///
    /// # Errors
    /// Storage errors.
    pub fn compact_step(
        &self,
        compact_rev: i64,
        cursor: Revision,
        batch: usize,
    ) -> Result<Option<Revision>> {
        let rev_cf = self.cf(CF_REV)?;
        let kv_cf = self.cf(CF_KV)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(
            Revision::new(compact_rev.saturating_add(1), 0)
                .to_bytes()
                .to_vec(),
        );
        let mut it = self.db.raw_iterator_cf_opt(rev_cf, opts);
        it.seek(cursor.to_bytes());
        let mut wb = WriteBatch::default();
        let mut n = 0;
        let mut next = None;
        // Keys whose last version (a tombstone) this step deletes.
        let mut gone: Vec<(Vec<u8>, Revision)> = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let rev =
                Revision::from_bytes(k).ok_or_else(|| StoreError::Corruption("rev key".into()))?;
            if n >= batch {
                next = Some(rev);
                break;
            }
            n += 1;
            // Changes at exactly the compact revision stay: a read or a watch at
            // `compact_rev` is still allowed (etcd refuses only revisions below it).
            if rev.main == compact_rev {
                it.next();
                continue;
            }
            let user_key = v.to_vec();
            // Keep the newest version at or below compact_rev unless it is a delete. A
            // kept version keeps its change-log entry too, so that a later compaction,
            // after the key was overwritten or deleted, finds it and removes it.
            let (keep, last) = match self.get_version_meta(&user_key, compact_rev)? {
                Some((newest, rec, _)) => (newest == rev && !rec.tombstone, newest == rev),
                None => (false, false),
            };
            if !keep {
                wb.delete_cf(rev_cf, k);
                let mut kk = key::encode(&user_key);
                kk.extend_from_slice(&rev.to_desc_bytes());
                wb.delete_cf(kv_cf, kk);
                if last {
                    // The newest version at compact_rev is this tombstone: every older
                    // version goes too, so the key is gone unless written since.
                    gone.push((user_key, rev));
                }
            }
            it.next();
        }
        it.status()?;
        self.db.write(wb)?;
        for (k, rev) in gone {
            self.index.forget(&k, rev);
        }
        Ok(next)
    }

    /// The full history of the store as a flat iterator over the kv family, for tests.
    #[cfg(test)]
    pub(crate) fn dump(&self) -> Vec<(Vec<u8>, Revision, KvRecord)> {
        let cf = self.cf(CF_KV).unwrap();
        self.db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|r| {
                let (k, v) = r.unwrap();
                let (uk, s) = key::decode(&k).unwrap();
                (
                    uk,
                    Revision::from_desc_bytes(s).unwrap(),
                    KvRecord::decode(&v).unwrap(),
                )
            })
            .collect()
    }
}

/// Whether a range must collect every match before limiting (sorting or filtering).
pub(crate) fn needs_full_fetch(req: &RangeRequest) -> bool {
    let order = effective_sort_order(req);
    let sorted = !(order == SortOrder::None
        || (order == SortOrder::Ascend && req.sort_target == SortTarget::Key as i32));
    sorted
        || req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

fn effective_sort_order(req: &RangeRequest) -> SortOrder {
    let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    // etcd: a sort target other than KEY without an order means ascending.
    if order == SortOrder::None && req.sort_target != SortTarget::Key as i32 {
        SortOrder::Ascend
    } else {
        order
    }
}

/// Applies etcd's post-processing to the matches of a range: revision filters, sort,
/// limit, `more` and `count`.
pub(crate) fn finish_range(
    req: &RangeRequest,
    mut kvs: Vec<KeyValue>,
    count: i64,
) -> RangeResponse {
    kvs.retain(|kv| {
        (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
    });
    let order = effective_sort_order(req);
    if order != SortOrder::None {
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        kvs.sort_by(|a, b| {
            let o = match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            // Stable on key order for equal targets.
            o.then_with(|| a.key.cmp(&b.key))
        });
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.limit > 0 && count > req.limit {
        more = true;
    }
    if req.count_only {
        kvs.clear();
    }
    RangeResponse {
        header: None,
        kvs,
        more,
        count,
    }
}

/// Builds the watch event for a change.
pub(crate) fn make_event(
    key: Vec<u8>,
    rev: Revision,
    rec: &KvRecord,
    prev: Option<KeyValue>,
) -> Event {
    if rec.tombstone {
        Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key,
                mod_revision: rev.main,
                ..Default::default()
            }),
            prev_kv: prev,
        }
    } else {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(rec.to_kv(key, rev)),
            prev_kv: prev,
        }
    }
}
