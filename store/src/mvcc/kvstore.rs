//! The read side of the MVCC store: ranges at a revision, single-key history, the
//! change log that watchers catch up from, hashing, and background compaction.
//!
//! Every version is stored once, in the `rev` column family under its revision, and
//! found through the in-memory [`KeyIndex`] (`docs/store-mvcc-by-revision.md`).
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
use crate::mvcc::index::{Found, IndexBuilder, KeyIndex, Newest};
use crate::mvcc::key::{self, KeyRange};
use crate::mvcc::record::{self, KvRecord};
use crate::mvcc::Revision;
use crate::storage::schema::{self, CF_KV, CF_REV, CF_SM_META};

/// Keys a range takes from the index at a time: the index's lock is held only while
/// they are picked, never across RocksDB reads.
const SCAN_CHUNK: usize = 256;

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

/// MVCC key-value store over the `rev` column family and the key index.
///
/// Cheap to share (`Arc`); one writer (the state machine) and many readers.
pub struct KvStore {
    db: Arc<DB>,
    /// Highest revision whose changes are fully written and visible to readers.
    current: AtomicI64,
    /// Revisions at or below this are compacted (0 = none).
    compacted: AtomicI64,
    /// Every key's versions (see [`KeyIndex`] for why and its invariant).
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
    /// snapshot was installed), first moving versions a data dir or snapshot of an older
    /// Skiff keeps in the `kv` family into `rev`.
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
        self.migrate_key_ordered_versions()?;
        let mut builder = IndexBuilder::default();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_REV)?);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let rev =
                Revision::from_bytes(k).ok_or_else(|| StoreError::Corruption("rev key".into()))?;
            let (key, rec) = record::split_version(v)
                .and_then(|(key, rec)| Some((key, KvRecord::decode_without_value(rec)?)))
                .ok_or_else(|| StoreError::Corruption(format!("version {rev}")))?;
            builder.add(key, rev, &rec);
            it.next();
        }
        it.status()?;
        self.index.replace(builder);
        Ok(())
    }

    /// Moves versions stored the way Skiff did before `rev` held them — in the `kv` family
    /// keyed by key and revision, with `rev` holding only each revision's key — into
    /// `rev`. In batches, each of which rewrites its versions' `rev` entries and deletes
    /// their `kv` entries at once, so an interrupted migration resumes where it stopped:
    /// a `rev` entry is in the old form exactly while its `kv` entry exists.
    fn migrate_key_ordered_versions(&self) -> Result<()> {
        let kv_cf = self.cf(CF_KV)?;
        let rev_cf = self.cf(CF_REV)?;
        let mut moved = 0u64;
        // One iterator over the family as it was (an iterator reads a consistent view),
        // while the batches delete from it.
        let mut it = self.db.raw_iterator_cf(kv_cf);
        it.seek_to_first();
        let mut wb = WriteBatch::default();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (key, suffix) =
                key::decode(k).ok_or_else(|| StoreError::Corruption("kv key".into()))?;
            let rev = Revision::from_desc_bytes(suffix)
                .ok_or_else(|| StoreError::Corruption("kv key suffix".into()))?;
            let rec =
                KvRecord::decode(v).ok_or_else(|| StoreError::Corruption("kv record".into()))?;
            wb.put_cf(rev_cf, rev.to_bytes(), record::encode_version(&key, &rec));
            wb.delete_cf(kv_cf, k);
            moved += 1;
            if wb.len() >= 20_000 {
                self.db.write(std::mem::take(&mut wb))?;
            }
            it.next();
        }
        it.status()?;
        drop(it);
        if !wb.is_empty() {
            self.db.write(wb)?;
        }
        if moved > 0 {
            self.db
                .compact_range_cf(kv_cf, None::<&[u8]>, None::<&[u8]>);
            tracing::info!(
                versions = moved,
                "moved stored versions from the kv family into rev"
            );
        }
        Ok(())
    }

    /// Writes a request's batch (built by a [`WriteTxn`](super::WriteTxn), plus whatever
    /// else the caller adds) and records its `changes` in the key index. Every write to
    /// the `rev` family goes through here; the caller publishes the revision after it.
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
        self.still_readable(requested)?;
        Ok(requested)
    }

    /// Fails a read pinned to `at` once a compaction passed it. Checked again after a
    /// read: compaction deletes versions such a read may have needed while it ran
    /// (whatever a read at or above the compacted revision needs stays), and the
    /// compacted revision is raised before anything is deleted.
    fn still_readable(&self, at: i64) -> Result<()> {
        let compacted = self.compact_revision();
        if at < compacted {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            });
        }
        Ok(())
    }

    /// The newest version of `key` at or below revision `at`, if any (tombstones included).
    ///
    /// # Errors
    /// [`StoreError::Compacted`] when a compaction passed `at` during the read; storage
    /// errors or corrupt records.
    pub fn get_version(&self, key: &[u8], at: i64) -> Result<Option<(Revision, KvRecord)>> {
        let found = match self.index.at(key, at) {
            Some(f) if f.tombstone() => Some((f.rev(), Newest::tombstone_record())),
            Some(f) => Some((f.rev(), self.load(f.rev(), at)?)),
            None => None,
        };
        self.still_readable(at)?;
        Ok(found)
    }

    /// [`KvStore::get_version`] without reading the value when the key index can answer:
    /// the record comes back with an empty value and `false` ("value not loaded") then.
    /// Tombstones and older versions come back whole, with `true`.
    ///
    /// # Errors
    /// As [`KvStore::get_version`].
    pub fn get_version_meta(
        &self,
        key: &[u8],
        at: i64,
    ) -> Result<Option<(Revision, KvRecord, bool)>> {
        let found = match self.index.at(key, at) {
            None => None,
            Some(f) if f.tombstone() => Some((f.rev(), Newest::tombstone_record(), true)),
            Some(Found::Newest(n)) => Some((n.rev, n.record_without_value(), false)),
            Some(Found::Older(o)) => Some((o.rev, self.load(o.rev, at)?, true)),
        };
        self.still_readable(at)?;
        Ok(found)
    }

    /// Reads the version stored at `rev`, which the index listed for a read at `at`.
    fn load(&self, rev: Revision, at: i64) -> Result<KvRecord> {
        match self.db.get_pinned_cf(self.cf(CF_REV)?, rev.to_bytes())? {
            Some(v) => decode_record(rev, &v),
            None => Err(self.missing(rev, at)),
        }
    }

    /// The error for a version the index listed but RocksDB no longer has: compacted
    /// under a read pinned below the compaction, or else corruption.
    fn missing(&self, rev: Revision, at: i64) -> StoreError {
        match self.still_readable(at) {
            Err(e) => e,
            Ok(()) => StoreError::Corruption(format!("indexed version {rev} is not stored")),
        }
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
    /// returns false. `f` gets the key, its revision and record; with `values` false the
    /// record's value may be left empty (read only where the index cannot give the rest).
    ///
    /// # Errors
    /// [`StoreError::Compacted`] when a compaction passed `at` during the read; storage
    /// errors or corrupt records.
    pub fn scan(
        &self,
        range: &KeyRange,
        at: i64,
        values: bool,
        mut f: impl FnMut(Vec<u8>, Revision, KvRecord) -> bool,
    ) -> Result<()> {
        self.scan_first(range, at, values, usize::MAX, |k, rev, rec| match rec {
            Some(rec) => f(k, rev, rec),
            // Not reached: every key gets its record.
            None => true,
        })
    }

    /// [`KvStore::scan`] that reads records for the first `records` keys only: past them
    /// `f` gets `None` and nothing is read for the key (a count, or the keys after a
    /// limit).
    fn scan_first(
        &self,
        range: &KeyRange,
        at: i64,
        values: bool,
        records: usize,
        mut f: impl FnMut(Vec<u8>, Revision, Option<KvRecord>) -> bool,
    ) -> Result<()> {
        let cf = self.cf(CF_REV)?;
        let mut after: Option<Vec<u8>> = None;
        let mut seen = 0usize;
        loop {
            let chunk = self.index.live_in(range, at, after.as_deref(), SCAN_CHUNK);
            let full = chunk.len() == SCAN_CHUNK;
            let with_record = records.saturating_sub(seen).min(chunk.len());
            // The versions to read, in the chunk's order; the rest come from the index.
            let wanted: Vec<[u8; 16]> = chunk[..with_record]
                .iter()
                .filter(|(_, found)| values || matches!(found, Found::Older(_)))
                .map(|(_, found)| found.rev().to_bytes())
                .collect();
            let mut loaded = self.db.batched_multi_get_cf(cf, &wanted, false).into_iter();
            for (i, (key, found)) in chunk.into_iter().enumerate() {
                let rec = match found {
                    _ if i >= with_record => None,
                    Found::Newest(n) if !values => Some(n.record_without_value()),
                    _ => match loaded.next() {
                        Some(Ok(Some(v))) => Some(decode_record(found.rev(), &v)?),
                        Some(Ok(None)) | None => return Err(self.missing(found.rev(), at)),
                        Some(Err(e)) => return Err(e.into()),
                    },
                };
                let rev = found.rev();
                after = Some(key.clone());
                seen += 1;
                if !f(key, rev, rec) {
                    return self.still_readable(at);
                }
            }
            if !full {
                return self.still_readable(at);
            }
        }
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
        // Values only where the answer carries them or is sorted by them.
        let values =
            !req.count_only && (!req.keys_only || req.sort_target == SortTarget::Value as i32);
        // Records for what the answer carries: none for a count, else every match when
        // they are sorted or filtered before the limit, else the first `limit`.
        let records = match (req.count_only, fetch_all) {
            (true, _) => 0,
            (false, true) => usize::MAX,
            (false, false) => limit,
        };
        self.scan_first(&range, at, values, records, |k, rev, rec| {
            count += 1;
            if let Some(rec) = rec {
                kvs.push(rec.to_kv(k, rev));
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
        self.still_readable(from)?;
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
            let (user_key, rec) = record::decode_version(v)
                .ok_or_else(|| StoreError::Corruption(format!("version {rev}")))?;
            let user_key = user_key.to_vec();
            let prev = if with_prev {
                match self.get(&user_key, rev.main - 1) {
                    Ok(prev) => prev,
                    // The version before a change at the compacted revision is gone; etcd
                    // leaves such an event's prev_kv out too.
                    Err(StoreError::Compacted { .. }) => None,
                    Err(e) => return Err(e),
                }
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
        // A compaction that passed `from` meanwhile may have removed changes in between.
        self.still_readable(from)?;
        Ok(out)
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
        self.scan(
            &KeyRange::from_request(b"", b"\0"),
            at,
            true,
            |k, rev, rec| {
                h.update(&(k.len() as u64).to_be_bytes());
                h.update(&k);
                h.update(&rev.main.to_be_bytes());
                h.update(&rec.create_revision.to_be_bytes());
                h.update(&rec.version.to_be_bytes());
                h.update(&rec.lease.to_be_bytes());
                h.update(&(rec.value.len() as u64).to_be_bytes());
                h.update(&rec.value);
                true
            },
        )?;
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
        // The versions this step deletes, in revision order, for the index.
        let mut removed: Vec<(Vec<u8>, Revision)> = Vec::new();
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
            let (user_key, _) = record::split_version(v)
                .ok_or_else(|| StoreError::Corruption(format!("version {rev}")))?;
            // Keep the newest version at or below compact_rev unless it is a delete.
            let keep = self
                .index
                .at(user_key, compact_rev)
                .is_some_and(|f| f.rev() == rev && !f.tombstone());
            if !keep {
                wb.delete_cf(rev_cf, k);
                removed.push((user_key.to_vec(), rev));
            }
            it.next();
        }
        it.status()?;
        self.db.write(wb)?;
        self.index.forget(&removed);
        Ok(next)
    }

    /// Every stored version, ordered by key then newest first, for tests.
    #[cfg(test)]
    pub(crate) fn dump(&self) -> Vec<(Vec<u8>, Revision, KvRecord)> {
        let cf = self.cf(CF_REV).unwrap();
        let mut all: Vec<(Vec<u8>, Revision, KvRecord)> = self
            .db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|r| {
                let (k, v) = r.unwrap();
                let (key, rec) = record::decode_version(&v).unwrap();
                (key.to_vec(), Revision::from_bytes(&k).unwrap(), rec)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        all
    }

    /// [`KvStore::get_version`] by searching every stored version, without the index,
    /// for tests.
    #[cfg(test)]
    pub(crate) fn search_version(
        &self,
        key: &[u8],
        at: i64,
    ) -> Result<Option<(Revision, KvRecord)>> {
        Ok(self
            .dump()
            .into_iter()
            .find(|(k, rev, _)| k == key && rev.main <= at)
            .map(|(_, rev, rec)| {
                if rec.tombstone {
                    (rev, Newest::tombstone_record())
                } else {
                    (rev, rec)
                }
            }))
    }
}

/// Parses the version stored at `rev` and returns its record.
fn decode_record(rev: Revision, v: &[u8]) -> Result<KvRecord> {
    record::decode_version(v)
        .map(|(_, rec)| rec)
        .ok_or_else(|| StoreError::Corruption(format!("version {rev}")))
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
/// limit, `more`, `count` and `keys_only`.
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
    // After sorting: etcd sorts by value even when it leaves values out.
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
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
