//! The write side of the MVCC store: one [`WriteTxn`] per modifying request.
//!
//! A request (Put, DeleteRange, Txn, lease revocation) gets revision `main = current + 1`;
//! each change inside it takes the next `sub`. All its changes go into one RocksDB
//! `WriteBatch`, which the state machine writes together with the applied log id, so a
//! request is applied entirely or not at all. Reads inside a Txn see the Txn's own
//! earlier writes through an overlay of the keys written so far.
//!
//! A request that changes nothing (a Txn of reads, a delete that matched no key) does
//! not consume a revision, as in etcd.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;
use skiff_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use skiff_proto::etcdserverpb::request_op::Request as OpRequest;
use skiff_proto::etcdserverpb::response_op::Response as OpResponse;
use skiff_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseOp, TxnRequest, TxnResponse,
};
use skiff_proto::mvccpb::KeyValue;

use crate::error::{Result, StoreError};
use crate::mvcc::key::KeyRange;
use crate::mvcc::kvstore::{finish_range, make_event, needs_full_fetch, Change, KvStore};
use crate::mvcc::record::{self, KvRecord};
use crate::mvcc::Revision;
use crate::storage::schema::{self, CF_LEASE_KEY, CF_REV};

/// The newest state of each key written by earlier requests of the same write group
/// (tombstones included), not yet in the store.
pub type Overlay = BTreeMap<Vec<u8>, (Revision, KvRecord)>;

/// One modifying request being applied.
pub struct WriteTxn<'a> {
    kv: &'a KvStore,
    batch: &'a mut WriteBatch,
    /// The revision before this request.
    base: i64,
    /// The store's published revision: reads outside the overlays are pinned to it.
    read_at: i64,
    /// Writes of earlier requests of the same group (see [`WriteTxn::after`]).
    earlier: Option<&'a Overlay>,
    sub: i64,
    /// Latest state of each key written by this request (tombstones included).
    overlay: Overlay,
    /// Changes made, in order.
    changes: Vec<Change>,
    lease_exists: &'a dyn Fn(i64) -> bool,
    /// Load the value a put replaces even when the request does not need it, for the
    /// event's `prev_kv` (see [`WriteTxn::load_prev_values`]).
    prev_values: bool,
}

impl<'a> WriteTxn<'a> {
    /// Starts a request on top of the store's current revision; `lease_exists` tells
    /// whether a lease id is granted.
    pub fn new(
        kv: &'a KvStore,
        batch: &'a mut WriteBatch,
        lease_exists: &'a dyn Fn(i64) -> bool,
    ) -> Self {
        let base = kv.current_revision();
        Self {
            kv,
            batch,
            base,
            read_at: base,
            earlier: None,
            sub: 0,
            overlay: Overlay::new(),
            changes: Vec::new(),
            lease_exists,
            prev_values: true,
        }
    }

    /// Whether a put loads the value it replaces when the request itself does not need
    /// it (no `prev_kv`, no `ignore_value`); it is needed only for watchers that want
    /// previous values. Without it the change is marked [`Change::prev_pending`] and the
    /// put costs no read of the old value. Default: load.
    pub fn load_prev_values(mut self, load: bool) -> Self {
        self.prev_values = load;
        self
    }

    /// Places this request after earlier requests of a write group whose changes share
    /// one RocksDB write and are not in the store yet: `base` is the revision after them
    /// and `earlier` holds what they wrote. Reads see the store at its published
    /// revision overlaid with `earlier`, then with this request's own writes.
    pub fn after(mut self, base: i64, earlier: &'a Overlay) -> Self {
        self.base = base;
        self.earlier = Some(earlier);
        self
    }

    /// The revision this request's changes get.
    pub fn main(&self) -> i64 {
        self.base + 1
    }

    /// The revision a client sees after this request: `main` if anything changed,
    /// otherwise the unchanged current revision.
    pub fn result_revision(&self) -> i64 {
        if self.changes.is_empty() {
            self.base
        } else {
            self.base + 1
        }
    }

    /// Ends the request: records the new revision in the batch (if anything changed)
    /// and returns the changes for watchers.
    ///
    /// # Errors
    /// Storage errors.
    pub fn finish(self) -> Result<(i64, Vec<Change>)> {
        let rev = self.result_revision();
        if !self.changes.is_empty() {
            let cf = self.kv.cf(schema::CF_SM_META)?;
            self.batch
                .put_cf(cf, schema::sm_meta::REVISION, rev.to_be_bytes());
        }
        Ok((rev, self.changes))
    }

    /// Ends a request of a write group: like [`WriteTxn::finish`] but leaves recording
    /// the revision to the group, and also returns what the request wrote, for the
    /// requests after it.
    pub fn finish_in_group(self) -> (i64, Vec<Change>, Overlay) {
        (self.result_revision(), self.changes, self.overlay)
    }

    /// A key's newest state in this request's or an earlier request's writes, if any.
    fn overlaid(&self, key: &[u8]) -> Option<&(Revision, KvRecord)> {
        self.overlay
            .get(key)
            .or_else(|| self.earlier.and_then(|e| e.get(key)))
    }

    fn latest(&self, key: &[u8]) -> Result<Option<(Revision, KvRecord)>> {
        match self.overlaid(key) {
            Some(v) => Ok(Some(v.clone())),
            None => self.kv.get_version(key, self.read_at),
        }
    }

    /// The live version of `key` as a `KeyValue` whose value is left empty when the key
    /// index could answer without reading it; the flag says whether the value is there.
    fn live_meta(&self, key: &[u8]) -> Result<(Option<KeyValue>, bool)> {
        if self.overlaid(key).is_some() {
            return Ok((self.live(key)?, true));
        }
        Ok(match self.kv.get_version_meta(key, self.read_at)? {
            Some((rev, rec, loaded)) if !rec.tombstone => {
                (Some(rec.to_kv(key.to_vec(), rev)), loaded)
            }
            _ => (None, true),
        })
    }

    fn live(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        Ok(self
            .latest(key)?
            .filter(|(_, r)| !r.tombstone)
            .map(|(rev, r)| r.to_kv(key.to_vec(), rev)))
    }

    /// Live keys in `range` as of now (store at base, overlaid by this request's writes).
    fn live_in(&self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        let mut found: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
        self.kv.scan(range, self.read_at, true, |k, rev, rec| {
            found.insert(k.clone(), rec.to_kv(k, rev));
            true
        })?;
        // Earlier requests' writes first, then this request's own (newer) ones.
        for overlay in self.earlier.into_iter().chain([&self.overlay]) {
            for (k, (rev, rec)) in overlay {
                if range.contains(k) {
                    if rec.tombstone {
                        found.remove(k);
                    } else {
                        found.insert(k.clone(), rec.to_kv(k.clone(), *rev));
                    }
                }
            }
        }
        Ok(found.into_values().collect())
    }

    /// Records a new version of `key`; `prev` is the live version it replaces, whose
    /// value is present only if `prev_loaded`.
    fn write(
        &mut self,
        key: &[u8],
        rec: KvRecord,
        prev: Option<KeyValue>,
        prev_loaded: bool,
    ) -> Result<()> {
        let rev = Revision::new(self.main(), self.sub);
        self.sub += 1;
        let rev_cf = self.kv.cf(CF_REV)?;
        let lk_cf = self.kv.cf(CF_LEASE_KEY)?;
        self.batch
            .put_cf(rev_cf, rev.to_bytes(), record::encode_version(key, &rec));
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        if old_lease != 0 && old_lease != rec.lease {
            self.batch
                .delete_cf(lk_cf, schema::lease_key_entry(old_lease, key));
        }
        if rec.lease != 0 && !rec.tombstone {
            self.batch
                .put_cf(lk_cf, schema::lease_key_entry(rec.lease, key), []);
        }
        let prev_pending = prev.is_some() && !prev_loaded;
        let prev = if prev_loaded { prev } else { None };
        self.changes.push(Change {
            rev,
            event: make_event(key.to_vec(), rev, &rec, prev),
            prev_pending,
        });
        self.overlay.insert(key.to_vec(), (rev, rec));
        Ok(())
    }

    /// Applies a Put.
    ///
    /// # Errors
    /// [`StoreError::KeyNotFound`] for `ignore_value`/`ignore_lease` on a missing key,
    /// [`StoreError::LeaseNotFound`] for an unknown lease.
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        let (prev, prev_loaded) = if self.prev_values || req.prev_kv || req.ignore_value {
            (self.live(&req.key)?, true)
        } else {
            self.live_meta(&req.key)?
        };
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(StoreError::KeyNotFound);
        }
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        if lease != 0 && !(self.lease_exists)(lease) {
            return Err(StoreError::LeaseNotFound);
        }
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (self.main(), 1),
        };
        let rec = KvRecord {
            tombstone: false,
            create_revision,
            version,
            lease,
            value,
        };
        self.write(&req.key, rec, prev.clone(), prev_loaded)?;
        Ok(PutResponse {
            header: None,
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    /// Deletes one key if it is live; returns its previous value.
    ///
    /// # Errors
    /// Storage errors.
    pub fn delete_key(&mut self, key: &[u8]) -> Result<Option<KeyValue>> {
        let Some(prev) = self.live(key)? else {
            return Ok(None);
        };
        let rec = KvRecord {
            tombstone: true,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Vec::new(),
        };
        self.write(key, rec, Some(prev.clone()), true)?;
        Ok(Some(prev))
    }

    /// Applies a DeleteRange.
    ///
    /// # Errors
    /// Storage errors.
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let range = KeyRange::from_request(&req.key, &req.range_end);
        let victims = self.live_in(&range)?;
        let mut prev_kvs = Vec::new();
        for kv in &victims {
            if let Some(p) = self.delete_key(&kv.key)? {
                if req.prev_kv {
                    prev_kvs.push(p);
                }
            }
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: victims.len() as i64,
            prev_kvs,
        })
    }

    /// Serves a Range inside the request, seeing its earlier writes.
    ///
    /// # Errors
    /// As [`KvStore::range`].
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        if req.revision > 0
            || (self.overlay.is_empty() && self.earlier.is_none_or(|e| e.is_empty()))
        {
            return Ok(self.kv.range(req)?.0);
        }
        let range = KeyRange::from_request(&req.key, &req.range_end);
        let mut kvs = self.live_in(&range)?;
        let count = kvs.len() as i64;
        if !needs_full_fetch(req) && req.limit > 0 {
            kvs.truncate(req.limit as usize);
        }
        Ok(finish_range(req, kvs, count))
    }

    /// Applies a Txn: evaluates the comparisons against the current state, then runs the
    /// chosen branch's operations in order.
    ///
    /// # Errors
    /// The first failing operation's error; the caller discards the whole request.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        let mut succeeded = true;
        for c in &req.compare {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let resp = match &op.request {
                Some(OpRequest::RequestRange(r)) => OpResponse::ResponseRange(self.range(r)?),
                Some(OpRequest::RequestPut(r)) => OpResponse::ResponsePut(self.put(r)?),
                Some(OpRequest::RequestDeleteRange(r)) => {
                    OpResponse::ResponseDeleteRange(self.delete_range(r)?)
                }
                Some(OpRequest::RequestTxn(r)) => OpResponse::ResponseTxn(self.txn(r)?),
                None => {
                    return Err(StoreError::InvalidArgument(
                        "etcdserver: empty request op in txn".into(),
                    ))
                }
            };
            responses.push(ResponseOp {
                response: Some(resp),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    fn compare(&self, c: &Compare) -> Result<bool> {
        let range = KeyRange::from_request(&c.key, &c.range_end);
        let kvs = if range.single {
            self.live(&c.key)?.into_iter().collect()
        } else {
            self.live_in(&range)?
        };
        let target = CompareTarget::try_from(c.target).map_err(|_| {
            StoreError::InvalidArgument(format!("etcdserver: unknown compare target {}", c.target))
        })?;
        if kvs.is_empty() {
            // etcd: a value comparison on a missing key always fails; other targets compare
            // against zero values.
            if target == CompareTarget::Value {
                return Ok(false);
            }
            return compare_kv(c, target, &KeyValue::default());
        }
        for kv in &kvs {
            if !compare_kv(c, target, kv)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> Result<bool> {
    use std::cmp::Ordering;
    let ord = match (target, &c.target_union) {
        (CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => kv.create_revision.cmp(v),
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => {
            kv.value.as_slice().cmp(v.as_slice())
        }
        (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
        // A missing target_union compares against the zero value, as proto3 decoding does.
        (CompareTarget::Version, None) => kv.version.cmp(&0),
        (CompareTarget::Create, None) => kv.create_revision.cmp(&0),
        (CompareTarget::Mod, None) => kv.mod_revision.cmp(&0),
        (CompareTarget::Value, None) => kv.value.as_slice().cmp(&[][..]),
        (CompareTarget::Lease, None) => kv.lease.cmp(&0),
        _ => {
            return Err(StoreError::InvalidArgument(
                "etcdserver: compare target and value do not match".into(),
            ))
        }
    };
    let result = CompareResult::try_from(c.result).map_err(|_| {
        StoreError::InvalidArgument(format!("etcdserver: unknown compare result {}", c.result))
    })?;
    Ok(match result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::index::Newest;
    use crate::storage::open_db;
    use skiff_proto::etcdserverpb::{compare, RequestOp};

    struct Fixture {
        _dir: tempfile::TempDir,
        kv: KvStore,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        Fixture {
            kv: KvStore::open(db).unwrap(),
            _dir: dir,
        }
    }

    /// Applies one request the way the state machine does, returning its revision.
    fn apply<T>(
        kv: &KvStore,
        f: impl FnOnce(&mut WriteTxn) -> Result<T>,
    ) -> Result<(i64, T, Vec<Change>)> {
        let mut batch = WriteBatch::default();
        let no_leases = |_: i64| false;
        let mut tx = WriteTxn::new(kv, &mut batch, &no_leases);
        let out = f(&mut tx)?;
        let (rev, changes) = tx.finish()?;
        kv.write(batch, &changes)?;
        kv.publish_revision(rev);
        Ok((rev, out, changes))
    }

    fn put(kv: &KvStore, k: &str, v: &str) -> i64 {
        apply(kv, |t| {
            t.put(&PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })
        })
        .unwrap()
        .0
    }

    /// (key, value, create revision, mod revision, version)
    type Row = (String, String, i64, i64, i64);

    fn get(kv: &KvStore, k: &str, rev: i64) -> Result<Vec<Row>> {
        let (r, _) = kv.range(&RangeRequest {
            key: k.into(),
            revision: rev,
            ..Default::default()
        })?;
        Ok(r.kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key).unwrap(),
                    String::from_utf8(kv.value).unwrap(),
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                )
            })
            .collect())
    }

    #[test]
    fn versions_revisions_and_generations_follow_etcd() {
        let f = fixture();
        // An empty store is at revision 1, as in etcd: the first write gets 2.
        assert_eq!(f.kv.current_revision(), 1);
        assert_eq!(put(&f.kv, "a", "1"), 2);
        assert_eq!(put(&f.kv, "a", "2"), 3);
        assert_eq!(
            get(&f.kv, "a", 0).unwrap(),
            vec![("a".into(), "2".into(), 2, 3, 2)]
        );
        assert_eq!(
            get(&f.kv, "a", 2).unwrap(),
            vec![("a".into(), "1".into(), 2, 2, 1)]
        );
        let (rev, resp, changes) = apply(&f.kv, |t| {
            t.delete_range(&DeleteRangeRequest {
                key: b"a".to_vec(),
                prev_kv: true,
                ..Default::default()
            })
        })
        .unwrap();
        assert_eq!(
            (rev, resp.deleted, resp.prev_kvs.len(), changes.len()),
            (4, 1, 1, 1)
        );
        assert!(get(&f.kv, "a", 0).unwrap().is_empty());
        // A new generation starts at version 1 with a new create revision.
        assert_eq!(put(&f.kv, "a", "3"), 5);
        assert_eq!(
            get(&f.kv, "a", 0).unwrap(),
            vec![("a".into(), "3".into(), 5, 5, 1)]
        );
        // Deleting nothing does not consume a revision.
        let (rev, resp, _) = apply(&f.kv, |t| {
            t.delete_range(&DeleteRangeRequest {
                key: b"zz".to_vec(),
                ..Default::default()
            })
        })
        .unwrap();
        assert_eq!((rev, resp.deleted), (5, 0));
        assert_eq!(f.kv.read_revision(6), Err(StoreError::FutureRevision));
    }

    #[test]
    fn ranges_prefixes_limits_and_sorting() {
        let f = fixture();
        for (k, v) in [
            ("k1", "c"),
            ("k2", "a"),
            ("k3", "b"),
            ("l", "x"),
            ("k\0", "z"),
        ] {
            put(&f.kv, k, v);
        }
        let (r, _) =
            f.kv.range(&RangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                ..Default::default()
            })
            .unwrap();
        let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                b"k\0".to_vec(),
                b"k1".to_vec(),
                b"k2".to_vec(),
                b"k3".to_vec()
            ]
        );
        assert_eq!(r.count, 4);
        let (r, _) =
            f.kv.range(&RangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((r.kvs.len(), r.more, r.count), (2, true, 4));
        let (r, _) =
            f.kv.range(&RangeRequest {
                key: b"k1".to_vec(),
                range_end: b"k4".to_vec(),
                sort_order: 2,
                sort_target: 4,
                ..Default::default()
            })
            .unwrap();
        let vals: Vec<_> = r.kvs.iter().map(|kv| kv.value.clone()).collect();
        assert_eq!(vals, vec![b"c".to_vec(), b"b".to_vec(), b"a".to_vec()]);
        let (r, _) =
            f.kv.range(&RangeRequest {
                key: b"\0".to_vec(),
                range_end: b"\0".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((r.count, r.kvs.len()), (5, 0));
        let (r, _) =
            f.kv.range(&RangeRequest {
                key: b"k1".to_vec(),
                keys_only: true,
                ..Default::default()
            })
            .unwrap();
        assert!(r.kvs[0].value.is_empty());
    }

    /// Ranges over more keys than the index hands out at a time, at the current and at an
    /// older revision, with limits, counts, keys_only and sorting by the values it omits.
    #[test]
    fn ranges_across_index_chunks_and_revisions() {
        let f = fixture();
        let key = |i: usize| format!("k{i:03}");
        for i in 0..600 {
            put(&f.kv, &key(i), &format!("a{i}"));
        }
        let before = f.kv.current_revision();
        for i in 0..300 {
            put(&f.kv, &key(i), &format!("b{i}"));
        }
        for i in 500..550 {
            apply(&f.kv, |t| t.delete_key(key(i).as_bytes())).unwrap();
        }
        let range = |revision, limit, keys_only, count_only, sort: Option<(i32, i32)>| {
            let (order, target) = sort.unwrap_or((0, 0));
            f.kv.range(&RangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                revision,
                limit,
                keys_only,
                count_only,
                sort_order: order,
                sort_target: target,
                ..Default::default()
            })
            .unwrap()
            .0
        };
        // At the older revision: the first versions, 300 of 600 returned.
        let r = range(before, 300, false, false, None);
        assert_eq!((r.kvs.len(), r.count, r.more), (300, 600, true));
        for (i, kv) in r.kvs.iter().enumerate() {
            assert_eq!(
                (
                    kv.key.clone(),
                    kv.value.clone(),
                    kv.mod_revision,
                    kv.version
                ),
                (
                    key(i).into_bytes(),
                    format!("a{i}").into_bytes(),
                    i as i64 + 2,
                    1
                )
            );
        }
        // keys_only at the older revision: metadata of the older versions, no values.
        let r = range(before, 0, true, false, None);
        assert_eq!((r.kvs.len(), r.count), (600, 600));
        assert!(r
            .kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.version == 1));
        assert_eq!(r.kvs[299].mod_revision, 301);
        // Now: 550 live keys, the first 300 in their second version.
        let r = range(0, 0, false, false, None);
        assert_eq!((r.kvs.len(), r.count, r.more), (550, 550, false));
        assert_eq!(
            (
                r.kvs[0].value.clone(),
                r.kvs[0].version,
                r.kvs[0].create_revision
            ),
            (b"b0".to_vec(), 2, 2)
        );
        assert_eq!(r.kvs[500].key, key(550).into_bytes());
        assert_eq!(range(0, 0, false, true, None).count, 550);
        assert_eq!(range(before, 0, false, true, None).count, 600);
        // Sorted by value (descending) with keys_only: sorted by the values, then without.
        let r = range(0, 3, true, false, Some((2, 4)));
        let keys: Vec<Vec<u8>> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                key(99).into_bytes(),
                key(98).into_bytes(),
                key(97).into_bytes()
            ]
        );
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    }

    #[test]
    fn txn_compares_and_sees_its_own_writes() {
        let f = fixture();
        put(&f.kv, "a", "1");
        let cmp = Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            key: b"a".to_vec(),
            target_union: Some(TargetUnion::Value(b"1".to_vec())),
            range_end: vec![],
        };
        let op_put = RequestOp {
            request: Some(OpRequest::RequestPut(PutRequest {
                key: b"b".to_vec(),
                value: b"2".to_vec(),
                ..Default::default()
            })),
        };
        let op_get = RequestOp {
            request: Some(OpRequest::RequestRange(RangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            })),
        };
        let req = TxnRequest {
            compare: vec![cmp.clone()],
            success: vec![op_put.clone(), op_get.clone()],
            failure: vec![],
        };
        let (rev, resp, changes) = apply(&f.kv, |t| t.txn(&req)).unwrap();
        assert!(resp.succeeded);
        assert_eq!((rev, changes.len()), (3, 1));
        match &resp.responses[1].response {
            Some(OpResponse::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b"2"),
            other => panic!("unexpected {other:?}"),
        }
        // A value comparison on a missing key fails; other targets compare to zero.
        let missing = Compare {
            key: b"nope".to_vec(),
            ..cmp.clone()
        };
        let (rev, resp, _) = apply(&f.kv, |t| {
            t.txn(&TxnRequest {
                compare: vec![missing],
                ..Default::default()
            })
        })
        .unwrap();
        assert!(!resp.succeeded);
        assert_eq!(rev, 3, "a txn that writes nothing keeps the revision");
        let created_zero = Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: b"nope".to_vec(),
            target_union: Some(TargetUnion::CreateRevision(0)),
            range_end: vec![],
        };
        let (_, resp, _) = apply(&f.kv, |t| {
            t.txn(&TxnRequest {
                compare: vec![created_zero],
                ..Default::default()
            })
        })
        .unwrap();
        assert!(resp.succeeded);
    }

    #[test]
    fn compaction_keeps_what_reads_after_it_need() {
        let f = fixture();
        put(&f.kv, "a", "1"); // 2
        put(&f.kv, "a", "2"); // 3
        put(&f.kv, "b", "1"); // 4
        apply(&f.kv, |t| t.delete_key(b"b")).unwrap(); // 5
        put(&f.kv, "c", "1"); // 6
        apply(&f.kv, |t| t.delete_key(b"c")).unwrap(); // 7
        put(&f.kv, "a", "3"); // 8
        f.kv.set_compacted(6);
        let mut cursor = Some(Revision::new(0, 0));
        while let Some(c) = cursor {
            cursor = f.kv.compact_step(6, c, 2).unwrap();
        }
        let row = |v: &str, c, m, ver| vec![("a".to_string(), v.to_string(), c, m, ver)];
        assert_eq!(get(&f.kv, "a", 6).unwrap(), row("2", 2, 3, 2));
        assert_eq!(get(&f.kv, "a", 8).unwrap(), row("3", 2, 8, 3));
        assert!(get(&f.kv, "b", 6).unwrap().is_empty());
        assert_eq!(get(&f.kv, "c", 6).unwrap().len(), 1);
        assert_eq!(
            get(&f.kv, "a", 5),
            Err(StoreError::Compacted {
                compact_revision: 6
            })
        );
        // A read pinned below the compaction before it ran is told so, never answered
        // from what is left.
        assert!(matches!(
            f.kv.scan(&KeyRange::from_request(b"a", b"z"), 5, true, |_, _, _| true),
            Err(StoreError::Compacted { .. })
        ));
        assert!(matches!(
            f.kv.get_version(b"b", 4),
            Err(StoreError::Compacted { .. })
        ));
        // Physically: a@3 (newest at 6), the change at exactly 6 (c@6), and everything
        // after 6 remain; a@2, b@4 and b's tombstone at 5 are gone.
        let left: Vec<(Vec<u8>, i64)> =
            f.kv.dump()
                .into_iter()
                .map(|(k, r, _)| (k, r.main))
                .collect();
        let expected: Vec<(Vec<u8>, i64)> = vec![
            (b"a".to_vec(), 8),
            (b"a".to_vec(), 3),
            (b"c".to_vec(), 7),
            (b"c".to_vec(), 6),
        ];
        assert_eq!(left, expected);
        assert!(matches!(
            f.kv.changes(5, 8, 100, false),
            Err(StoreError::Compacted { .. })
        ));
        // A watch may still start at exactly the compact revision.
        assert_eq!(f.kv.changes(6, 8, 100, false).unwrap().len(), 3);
        // With previous values: the one before a change at 6 is compacted, so left out
        // (as etcd does); a@8's previous version (a@3) is still there.
        let ch = f.kv.changes(6, 8, 100, true).unwrap();
        assert_eq!(ch.len(), 3);
        assert!(ch[0].event.prev_kv.is_none());
        assert_eq!(ch[2].event.prev_kv.as_ref().unwrap().value, b"2");
    }

    /// The key index must answer exactly as a search of the stored history does, through
    /// puts, deletes, multi-key txns, compaction (which forgets deleted keys) and reopening.
    #[test]
    fn key_index_agrees_with_the_stored_history() {
        let f = fixture();
        let keys: Vec<Vec<u8>> = (0..6).map(|i| format!("k{i}").into_bytes()).collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n) as usize
        };
        let check = |kv: &KvStore| {
            let (lo, hi) = (kv.compact_revision().max(1), kv.current_revision());
            for k in &keys {
                for at in lo..=hi {
                    assert_eq!(
                        kv.get_version(k, at).unwrap(),
                        kv.search_version(k, at).unwrap(),
                        "key {} at {at}",
                        String::from_utf8_lossy(k)
                    );
                }
            }
            // A range sees the same live keys as single-key reads.
            for at in lo..=hi {
                let scanned: Vec<Vec<u8>> = kv
                    .range(&RangeRequest {
                        key: b"k".to_vec(),
                        range_end: b"l".to_vec(),
                        revision: at,
                        ..Default::default()
                    })
                    .unwrap()
                    .0
                    .kvs
                    .into_iter()
                    .map(|kv| kv.key)
                    .collect();
                let indexed: Vec<Vec<u8>> = keys
                    .iter()
                    .filter(|k| kv.get(k, at).unwrap().is_some())
                    .cloned()
                    .collect();
                assert_eq!(scanned, indexed, "live keys at {at}");
            }
        };
        for step in 0..300 {
            let k = keys[next(keys.len() as u64)].clone();
            match next(4) {
                0 | 1 => {
                    put(&f.kv, std::str::from_utf8(&k).unwrap(), &format!("v{step}"));
                }
                2 => {
                    let _ = apply(&f.kv, |t| t.delete_key(&k));
                }
                _ => {
                    let other = keys[next(keys.len() as u64)].clone();
                    let req = TxnRequest {
                        success: vec![
                            RequestOp {
                                request: Some(OpRequest::RequestDeleteRange(DeleteRangeRequest {
                                    key: k.clone(),
                                    ..Default::default()
                                })),
                            },
                            RequestOp {
                                request: Some(OpRequest::RequestPut(PutRequest {
                                    key: other,
                                    value: b"t".to_vec(),
                                    ..Default::default()
                                })),
                            },
                        ],
                        ..Default::default()
                    };
                    apply(&f.kv, |t| t.txn(&req)).unwrap();
                }
            }
            if step % 50 == 49 {
                let to = f.kv.current_revision() - 5;
                f.kv.set_compacted(to);
                let mut cursor = Some(Revision::new(0, 0));
                while let Some(c) = cursor {
                    cursor = f.kv.compact_step(to, c, 3).unwrap();
                }
            }
            if step % 10 == 0 {
                check(&f.kv);
            }
        }
        check(&f.kv);
        // A key deleted before the compaction point is forgotten; one written after its
        // tombstone was compacted is remembered again.
        apply(&f.kv, |t| t.delete_key(b"k0")).unwrap();
        put(&f.kv, "pad", "x");
        let to = f.kv.current_revision();
        f.kv.set_compacted(to);
        let mut cursor = Some(Revision::new(0, 0));
        while let Some(c) = cursor {
            cursor = f.kv.compact_step(to, c, 1000).unwrap();
        }
        assert!(f.kv.get_version(b"k0", to).unwrap().is_none());
        let live = f.kv.range(&RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            ..Default::default()
        });
        let live = live.unwrap().0.count as usize;
        assert_eq!(f.kv.indexed_keys(), live, "only live keys stay indexed");
        put(&f.kv, "k0", "again");
        assert_eq!(f.kv.indexed_keys(), live + 1);
        check(&f.kv);
        // Reopening rebuilds the same index.
        let reopened = KvStore::open(f.kv.db().clone()).unwrap();
        assert_eq!(reopened.indexed_keys(), f.kv.indexed_keys());
        check(&reopened);
    }

    /// A data dir written when versions lived in the `kv` family (keyed by key, the `rev`
    /// family naming only each revision's key) reads the same after opening: its versions
    /// move into `rev`, also after an interrupted move.
    #[test]
    fn versions_in_the_former_kv_layout_are_moved_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let (kv_cf, rev_cf, meta_cf) = (
            db.cf_handle(schema::CF_KV).unwrap(),
            db.cf_handle(CF_REV).unwrap(),
            db.cf_handle(schema::CF_SM_META).unwrap(),
        );
        let rec = |v: &str, create, version| KvRecord {
            tombstone: false,
            create_revision: create,
            version,
            lease: 0,
            value: v.as_bytes().to_vec(),
        };
        // a@2 "1", a@3 "2", b\0@4 "x", then b\0 deleted at 5.
        let versions = [
            ("a", Revision::new(2, 0), rec("1", 2, 1)),
            ("a", Revision::new(3, 0), rec("2", 2, 2)),
            ("b\0", Revision::new(4, 0), rec("x", 4, 1)),
            ("b\0", Revision::new(5, 0), Newest::tombstone_record()),
        ];
        let mut wb = WriteBatch::default();
        for (k, rev, r) in &versions {
            let mut kk = crate::mvcc::key::encode(k.as_bytes());
            kk.extend_from_slice(&rev.to_desc_bytes());
            wb.put_cf(kv_cf, kk, r.encode());
            wb.put_cf(rev_cf, rev.to_bytes(), k.as_bytes());
        }
        // An interrupted move: b's delete at 5 already moved.
        let mut kk = crate::mvcc::key::encode(b"b\0");
        kk.extend_from_slice(&Revision::new(5, 0).to_desc_bytes());
        wb.delete_cf(kv_cf, kk);
        wb.put_cf(
            rev_cf,
            Revision::new(5, 0).to_bytes(),
            record::encode_version(b"b\0", &Newest::tombstone_record()),
        );
        wb.put_cf(meta_cf, schema::sm_meta::REVISION, 5i64.to_be_bytes());
        db.write(wb).unwrap();

        let kv = KvStore::open(db.clone()).unwrap();
        assert_eq!(kv.current_revision(), 5);
        assert_eq!(
            get(&kv, "a", 0).unwrap(),
            vec![("a".into(), "2".into(), 2, 3, 2)]
        );
        assert_eq!(
            get(&kv, "a", 2).unwrap(),
            vec![("a".into(), "1".into(), 2, 2, 1)]
        );
        assert_eq!(
            get(&kv, "b\0", 4).unwrap(),
            vec![("b\0".into(), "x".into(), 4, 4, 1)]
        );
        assert!(get(&kv, "b\0", 5).unwrap().is_empty());
        assert_eq!(kv.changes(2, 5, 100, false).unwrap().len(), 4);
        let stored: Vec<(Vec<u8>, Revision, KvRecord)> = versions
            .iter()
            .rev()
            .map(|(k, rev, r)| (k.as_bytes().to_vec(), *rev, r.clone()))
            .collect();
        let mut expected = stored;
        expected.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        assert_eq!(kv.dump(), expected);
        assert!(db
            .iterator_cf(kv_cf, rocksdb::IteratorMode::Start)
            .next()
            .is_none());
        // Writing on top continues the history.
        assert_eq!(put(&kv, "a", "3"), 6);
        assert_eq!(
            get(&kv, "a", 0).unwrap(),
            vec![("a".into(), "3".into(), 2, 6, 3)]
        );
    }

    #[test]
    fn change_log_orders_events_and_carries_prev_values() {
        let f = fixture();
        put(&f.kv, "a", "1");
        let req = TxnRequest {
            success: vec![
                RequestOp {
                    request: Some(OpRequest::RequestPut(PutRequest {
                        key: b"a".to_vec(),
                        value: b"2".to_vec(),
                        ..Default::default()
                    })),
                },
                RequestOp {
                    request: Some(OpRequest::RequestPut(PutRequest {
                        key: b"c".to_vec(),
                        value: b"x".to_vec(),
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        apply(&f.kv, |t| t.txn(&req)).unwrap();
        let ch = f.kv.changes(1, 3, 100, true).unwrap();
        assert_eq!(ch.len(), 3);
        assert_eq!(
            (ch[1].rev, ch[2].rev),
            (Revision::new(3, 0), Revision::new(3, 1))
        );
        assert_eq!(ch[1].event.prev_kv.as_ref().unwrap().value, b"1");
        // A limit never splits a revision.
        assert_eq!(f.kv.changes(1, 3, 2, false).unwrap().len(), 3);
        let (h1, r1) = f.kv.hash_kv(0).unwrap();
        let (h2, _) = f.kv.hash_kv(2).unwrap();
        assert_eq!(r1, 3);
        assert_ne!(h1, h2);
    }
}
