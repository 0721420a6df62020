//! The replicated state machine: applies committed log entries to the MVCC store, the
//! lease table and the cluster metadata, then hands the changes to watchers.
//!
//! Each entry is applied in one RocksDB `WriteBatch` that also records its log id as
//! applied, so after a crash the state machine is exactly at some entry boundary and
//! openraft re-applies from there. The batch is not fsynced: the raft log is (same WAL),
//! and the log is only purged behind a synced WAL (see `log_store`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use parking_lot::{Mutex, RwLock};
use rocksdb::{WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::lease::{LeaseRecord, Lessor};
use crate::metrics::Metrics;
use crate::mvcc::txn::Overlay;
use crate::mvcc::{Change, KvStore, Revision, WriteTxn};
use crate::raft::durability::LogDurability;
use crate::raft::proposals::Proposals;
use crate::raft::snapshot::{self, SnapshotHeader};
use crate::raft::types::{
    decode, encode, ApplyResult, Entry, LogId, NodeId, Pb, Request, Response, Snapshot,
    SnapshotFile, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::storage::schema::{self, sm_meta, CF_LEASE, CF_LEASE_KEY, CF_SM_META};
use crate::watch::WatchHub;

/// What the state machine records about a member beyond raft's membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttrs {
    /// The member's `--name` (empty until it has started and published it).
    pub name: String,
    /// Its advertised client URLs.
    pub client_urls: Vec<String>,
    /// Added as a voter (etcd MemberAdd without isLearner): raft runs it as a learner
    /// until it has caught up, then the leader promotes it.
    pub promote_pending: bool,
}

/// Replicated metadata besides the key space.
#[derive(Clone, Debug, Default)]
pub struct ClusterMeta {
    /// Last applied log id.
    pub applied: Option<LogId>,
    /// Last applied membership.
    pub membership: StoredMembership,
    /// Active alarms: (member id, AlarmType).
    pub alarms: BTreeSet<(u64, i32)>,
    /// Member attributes by id.
    pub members: BTreeMap<NodeId, MemberAttrs>,
}

/// Shared state of the state machine. The apply path is the only writer.
pub struct SmShared {
    /// The database (shared with the log store).
    pub db: Arc<DB>,
    /// The MVCC key space.
    pub kv: Arc<KvStore>,
    /// Lease table.
    pub lessor: Arc<Lessor>,
    /// Watchers.
    pub hub: Arc<WatchHub>,
    /// Replicated metadata, readable by servers.
    pub meta: RwLock<ClusterMeta>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// This process's proposals waiting for their results.
    pub proposals: Proposals,
    snapshot_dir: PathBuf,
    current_snapshot: Mutex<Option<(SnapshotMeta, PathBuf)>>,
    compactor: std::sync::mpsc::Sender<i64>,
    /// How far the log's early-reported appends are synced: nothing is applied beyond.
    log_durability: Arc<LogDurability>,
}

/// The openraft state machine handle (cheap clone).
#[derive(Clone)]
pub struct StateMachine {
    /// The shared state.
    pub shared: Arc<SmShared>,
}

fn sto(f: fn(AnyError) -> StorageIOError<NodeId>, e: impl std::fmt::Display) -> StorageError {
    f(AnyError::error(e)).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error(e)).into()
}

fn get_meta<T: serde::de::DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>> {
    let cf = db
        .cf_handle(CF_SM_META)
        .ok_or_else(|| StoreError::Corruption("no sm_meta".into()))?;
    db.get_cf(cf, key)?.map(|b| decode(&b)).transpose()
}

fn load_meta(db: &DB) -> Result<ClusterMeta> {
    Ok(ClusterMeta {
        applied: get_meta::<Option<LogId>>(db, sm_meta::APPLIED)?.flatten(),
        membership: get_meta(db, sm_meta::MEMBERSHIP)?.unwrap_or_default(),
        alarms: get_meta(db, sm_meta::ALARMS)?.unwrap_or_default(),
        members: get_meta(db, sm_meta::MEMBERS)?.unwrap_or_default(),
    })
}

fn load_leases(db: &DB) -> Result<Vec<(i64, i64)>> {
    let cf = db
        .cf_handle(CF_LEASE)
        .ok_or_else(|| StoreError::Corruption("no lease cf".into()))?;
    let mut out = Vec::new();
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        let id = i64::from_be_bytes(
            k.as_ref()
                .try_into()
                .map_err(|_| StoreError::Corruption("lease key".into()))?,
        );
        let rec: LeaseRecord = decode(&v)?;
        out.push((id, rec.ttl));
    }
    Ok(out)
}

/// Keys attached to a lease.
///
/// # Errors
/// Storage errors.
pub fn lease_keys(db: &DB, id: i64) -> Result<Vec<Vec<u8>>> {
    let cf = db
        .cf_handle(CF_LEASE_KEY)
        .ok_or_else(|| StoreError::Corruption("no lease_key cf".into()))?;
    let prefix = id.to_be_bytes();
    let mut it = db.raw_iterator_cf(cf);
    it.seek(prefix);
    let mut out = Vec::new();
    while let Some(k) = it.key() {
        if !k.starts_with(&prefix) {
            break;
        }
        out.push(k[8..].to_vec());
        it.next();
    }
    it.status()?;
    Ok(out)
}

enum Effect {
    None,
    LeaseGranted(i64, i64),
    LeaseRevoked(i64),
    Compacted(i64),
    Alarms(BTreeSet<(u64, i32)>),
    Members(BTreeMap<NodeId, MemberAttrs>),
}

impl StateMachine {
    /// Opens the state machine over `db`; snapshots live in `snapshot_dir`. An entry is
    /// applied only once `log_durability` says this member's copy is synced (pass the
    /// log store's, [`LogStore::durability`](crate::raft::log_store::LogStore::durability)).
    ///
    /// # Errors
    /// Storage errors or corrupt metadata.
    pub fn open(
        db: Arc<DB>,
        snapshot_dir: &Path,
        metrics: Arc<Metrics>,
        log_durability: Arc<LogDurability>,
    ) -> Result<Self> {
        std::fs::create_dir_all(snapshot_dir)
            .map_err(|e| StoreError::Storage(format!("{snapshot_dir:?}: {e}")))?;
        let kv = Arc::new(KvStore::open(db.clone())?);
        let lessor = Arc::new(Lessor::default());
        lessor.reset(load_leases(&db)?);
        let hub = WatchHub::new(kv.clone());
        let meta = load_meta(&db)?;
        let current_snapshot = latest_snapshot(snapshot_dir);
        let (ctx, crx) = std::sync::mpsc::channel();
        let shared = Arc::new(SmShared {
            db,
            kv: kv.clone(),
            lessor,
            hub,
            meta: RwLock::new(meta),
            metrics,
            proposals: Proposals::default(),
            snapshot_dir: snapshot_dir.to_path_buf(),
            current_snapshot: Mutex::new(current_snapshot),
            compactor: ctx,
            log_durability,
        });
        let compact_kv = kv.clone();
        std::thread::Builder::new()
            .name("mvcc-compactor".into())
            .spawn(move || compactor(compact_kv, crx))
            .map_err(|e| StoreError::Internal(format!("spawn compactor: {e}")))?;
        // Finish a compaction a crash interrupted (compaction is idempotent).
        if kv.compact_revision() > 0 {
            let _ = shared.compactor.send(kv.compact_revision());
        }
        Ok(Self { shared })
    }

    fn apply_one(&self, entry: Entry) -> Result<ApplyResult> {
        let log_id = entry.log_id;
        match entry.payload {
            EntryPayload::Normal(Request::Tagged { id, request }) => {
                let result = match *request {
                    Request::Batch(reqs) => self.apply_batch(log_id, reqs)?,
                    req => self.apply_unit(log_id, EntryPayload::Normal(req), None)?,
                };
                let revision = result.revision;
                // openraft's copy of the result goes unread when the proposal got it here.
                Ok(self
                    .shared
                    .proposals
                    .deliver(id, result)
                    .unwrap_or(ApplyResult {
                        revision,
                        result: Ok(Response::Done),
                    }))
            }
            EntryPayload::Normal(Request::Batch(reqs)) => self.apply_batch(log_id, reqs),
            payload => self.apply_unit(log_id, payload, None),
        }
    }

    /// Applies the requests of one batched entry in order. A run of puts and deletes
    /// shares one write (a *write group*: later requests read earlier ones' writes through
    /// an overlay); any other request gets a write of its own. Each write but the last
    /// records how far into the entry it got (`APPLIED_SUB`); the last one records the
    /// entry as applied. After a crash in the middle, re-applying the entry skips the
    /// requests already applied, so none is applied twice.
    fn apply_batch(&self, log_id: LogId, reqs: Vec<Request>) -> Result<ApplyResult> {
        let s = &self.shared;
        let done: Option<(LogId, u64)> = get_meta(&s.db, sm_meta::APPLIED_SUB)?;
        let skip = match done {
            Some((l, k)) if l == log_id => k as usize + 1,
            _ => 0,
        };
        let n = reqs.len();
        // What the write ending at request `i` records: `Some(i)`, or `None` (the whole
        // entry) for the last request.
        let sub_of = |i: usize| (i + 1 < n).then_some(i as u64);
        let mut results = Vec::with_capacity(n);
        let mut reqs = reqs.into_iter().enumerate().peekable();
        while let Some((i, req)) = reqs.next() {
            if i < skip {
                results.push(ApplyResult {
                    revision: s.kv.current_revision(),
                    result: Err(StoreError::Internal("applied before a restart".into())),
                });
                continue;
            }
            if groupable(&req) && reqs.peek().is_some_and(|(_, r)| groupable(r)) {
                let mut group = vec![req];
                let mut last = i;
                while let Some((j, r)) = reqs.next_if(|(_, r)| groupable(r)) {
                    group.push(r);
                    last = j;
                }
                results.extend(self.apply_group(log_id, &group, sub_of(last))?);
                continue;
            }
            results.push(self.apply_unit(log_id, EntryPayload::Normal(req), sub_of(i))?);
        }
        if n == 0 || skip >= n {
            // Nothing (left) to apply: still record the entry as applied.
            self.apply_unit(log_id, EntryPayload::Blank, None)?;
        }
        Ok(ApplyResult {
            revision: s.kv.current_revision(),
            result: Ok(Response::Batch(results)),
        })
    }

    /// Applies one payload in one atomic write. `sub = Some(i)` marks request `i` of a
    /// batched entry that is not its last; `None` completes the entry.
    fn apply_unit(
        &self,
        log_id: LogId,
        payload: EntryPayload<TypeConfig>,
        sub: Option<u64>,
    ) -> Result<ApplyResult> {
        let s = &self.shared;
        let meta_cf = s.kv.cf(CF_SM_META)?;
        let mut changes: Vec<Change> = Vec::new();
        let mut effect = Effect::None;
        let mut membership = None;
        let (batch, result) = match payload {
            EntryPayload::Blank => (
                WriteBatch::default(),
                ApplyResult {
                    revision: s.kv.current_revision(),
                    result: Ok(Response::Done),
                },
            ),
            EntryPayload::Membership(m) => {
                let sm = StoredMembership::new(Some(log_id), m);
                let mut b = WriteBatch::default();
                b.put_cf(meta_cf, sm_meta::MEMBERSHIP, encode(&sm)?);
                membership = Some(sm);
                (
                    b,
                    ApplyResult {
                        revision: s.kv.current_revision(),
                        result: Ok(Response::Done),
                    },
                )
            }
            EntryPayload::Normal(req) => {
                let mut b = WriteBatch::default();
                match self.apply_request(&req, &mut b, &mut changes, &mut effect) {
                    Ok((rev, resp)) => (
                        b,
                        ApplyResult {
                            revision: rev,
                            result: Ok(resp),
                        },
                    ),
                    Err(e) => {
                        changes.clear();
                        effect = Effect::None;
                        s.metrics.proposals_failed.inc();
                        (
                            WriteBatch::default(),
                            ApplyResult {
                                revision: s.kv.current_revision(),
                                result: Err(e),
                            },
                        )
                    }
                }
            }
        };
        let mut batch = batch;
        mark_applied(&mut batch, meta_cf, log_id, sub)?;
        s.kv.write(batch, &changes)?;

        // Make the effects visible, in this order: revision, watchers, side tables.
        if !changes.is_empty() {
            s.kv.publish_revision(result.revision);
            s.hub.publish(result.revision, &changes);
        }
        let mut meta = s.meta.write();
        if sub.is_none() {
            meta.applied = Some(log_id);
        }
        if let Some(m) = membership {
            meta.membership = m;
        }
        match effect {
            Effect::None => {}
            Effect::LeaseGranted(id, ttl) => s.lessor.granted(id, ttl),
            Effect::LeaseRevoked(id) => s.lessor.revoked(id),
            Effect::Compacted(rev) => {
                s.kv.set_compacted(rev);
                let _ = s.compactor.send(rev);
            }
            Effect::Alarms(a) => meta.alarms = a,
            Effect::Members(m) => meta.members = m,
        }
        Ok(result)
    }

    /// Applies a run of puts and deletes of one entry in one RocksDB write: each request
    /// gets its own revision and result, and its changes are published in order after
    /// the write. `sub` as for [`StateMachine::apply_unit`], for the group's last request.
    ///
    /// A failed put or delete wrote nothing (both check everything before their first
    /// write; only a storage error can interrupt them, and that fails the whole apply).
    fn apply_group(
        &self,
        log_id: LogId,
        reqs: &[Request],
        sub: Option<u64>,
    ) -> Result<Vec<ApplyResult>> {
        let s = &self.shared;
        let meta_cf = s.kv.cf(CF_SM_META)?;
        let lessor = s.lessor.clone();
        let lease_exists = move |id: i64| lessor.exists(id);
        let prev_values = s.hub.wants_prev_values();
        let mut batch = WriteBatch::default();
        let mut earlier = Overlay::new();
        let mut base = s.kv.current_revision();
        let mut results = Vec::with_capacity(reqs.len());
        // Per revision that changed something: its changes.
        let mut published: Vec<(i64, Vec<Change>)> = Vec::new();
        for req in reqs {
            let ops_before = batch.len();
            let mut tx = WriteTxn::new(&s.kv, &mut batch, &lease_exists)
                .load_prev_values(prev_values)
                .after(base, &earlier);
            let resp = match req {
                Request::Put(Pb(r)) => tx.put(r).map(|r| Response::Put(Pb(r))),
                Request::DeleteRange(Pb(r)) => {
                    tx.delete_range(r).map(|r| Response::DeleteRange(Pb(r)))
                }
                other => Err(StoreError::Internal(format!(
                    "request {other:?} in a write group"
                ))),
            };
            match resp {
                Ok(resp) => {
                    let (rev, changes, wrote) = tx.finish_in_group();
                    earlier.extend(wrote);
                    if !changes.is_empty() {
                        base = rev;
                        published.push((rev, changes));
                    }
                    results.push(ApplyResult {
                        revision: rev,
                        result: Ok(resp),
                    });
                }
                Err(e) => {
                    drop(tx);
                    if batch.len() != ops_before {
                        return Err(StoreError::Internal(format!(
                            "a failed request in a write group left writes behind: {e}"
                        )));
                    }
                    s.metrics.proposals_failed.inc();
                    results.push(ApplyResult {
                        revision: base,
                        result: Err(e),
                    });
                }
            }
        }
        if !published.is_empty() {
            batch.put_cf(meta_cf, sm_meta::REVISION, base.to_be_bytes());
        }
        mark_applied(&mut batch, meta_cf, log_id, sub)?;
        s.kv.write(batch, published.iter().flat_map(|(_, c)| c))?;
        for (rev, changes) in &published {
            s.kv.publish_revision(*rev);
            s.hub.publish(*rev, changes);
        }
        if sub.is_none() {
            s.meta.write().applied = Some(log_id);
        }
        Ok(results)
    }

    fn apply_request(
        &self,
        req: &Request,
        batch: &mut WriteBatch,
        changes: &mut Vec<Change>,
        effect: &mut Effect,
    ) -> Result<(i64, Response)> {
        let s = &self.shared;
        let meta_cf = s.kv.cf(CF_SM_META)?;
        let lessor = s.lessor.clone();
        let lease_exists = move |id: i64| lessor.exists(id);
        match req {
            Request::Batch(_) | Request::Tagged { .. } => Err(StoreError::InvalidArgument(
                "a batch or tagged request inside a batch".into(),
            )),
            Request::Put(Pb(r)) => {
                let mut tx = WriteTxn::new(&s.kv, batch, &lease_exists)
                    .load_prev_values(s.hub.wants_prev_values());
                let resp = tx.put(r)?;
                let (rev, ch) = tx.finish()?;
                *changes = ch;
                Ok((rev, Response::Put(Pb(resp))))
            }
            Request::DeleteRange(Pb(r)) => {
                let mut tx = WriteTxn::new(&s.kv, batch, &lease_exists);
                let resp = tx.delete_range(r)?;
                let (rev, ch) = tx.finish()?;
                *changes = ch;
                Ok((rev, Response::DeleteRange(Pb(resp))))
            }
            Request::Txn(Pb(r)) => {
                let mut tx = WriteTxn::new(&s.kv, batch, &lease_exists)
                    .load_prev_values(s.hub.wants_prev_values());
                let resp = tx.txn(r)?;
                let (rev, ch) = tx.finish()?;
                *changes = ch;
                Ok((rev, Response::Txn(Pb(resp))))
            }
            Request::Compact { revision } => {
                let current = s.kv.current_revision();
                let compacted = s.kv.compact_revision();
                if *revision <= compacted {
                    return Err(StoreError::Compacted {
                        compact_revision: compacted,
                    });
                }
                if *revision > current {
                    return Err(StoreError::FutureRevision);
                }
                batch.put_cf(meta_cf, sm_meta::COMPACT, revision.to_be_bytes());
                *effect = Effect::Compacted(*revision);
                Ok((current, Response::Done))
            }
            Request::LeaseGrant { id, ttl } => {
                if s.lessor.exists(*id) {
                    return Err(StoreError::LeaseExists);
                }
                batch.put_cf(
                    s.kv.cf(CF_LEASE)?,
                    schema::lease_key(*id),
                    encode(&LeaseRecord { ttl: *ttl })?,
                );
                *effect = Effect::LeaseGranted(*id, *ttl);
                Ok((
                    s.kv.current_revision(),
                    Response::LeaseGranted { id: *id, ttl: *ttl },
                ))
            }
            Request::LeaseRevoke { id } => {
                if !s.lessor.exists(*id) {
                    return Err(StoreError::LeaseNotFound);
                }
                let keys = lease_keys(&s.db, *id)?;
                let mut tx = WriteTxn::new(&s.kv, batch, &lease_exists);
                for k in keys {
                    tx.delete_key(&k)?;
                }
                let (rev, ch) = tx.finish()?;
                *changes = ch;
                batch.delete_cf(s.kv.cf(CF_LEASE)?, schema::lease_key(*id));
                *effect = Effect::LeaseRevoked(*id);
                Ok((rev, Response::Done))
            }
            Request::Alarm {
                activate,
                member_id,
                alarm,
            } => {
                let mut alarms = s.meta.read().alarms.clone();
                if *activate {
                    alarms.insert((*member_id, *alarm));
                } else {
                    alarms.retain(|(m, a)| !(a == alarm && (*member_id == 0 || m == member_id)));
                }
                batch.put_cf(meta_cf, sm_meta::ALARMS, encode(&alarms)?);
                let list = alarms.iter().copied().collect();
                *effect = Effect::Alarms(alarms);
                Ok((s.kv.current_revision(), Response::Alarms(list)))
            }
            Request::MemberAttrs {
                id,
                name,
                client_urls,
            } => {
                let mut members = s.meta.read().members.clone();
                let m = members.entry(*id).or_default();
                m.name = name.clone();
                m.client_urls = client_urls.clone();
                batch.put_cf(meta_cf, sm_meta::MEMBERS, encode(&members)?);
                *effect = Effect::Members(members);
                Ok((s.kv.current_revision(), Response::Done))
            }
            Request::PromoteWhenReady { id, pending } => {
                let mut members = s.meta.read().members.clone();
                if *pending {
                    members.entry(*id).or_default().promote_pending = true;
                } else if let Some(m) = members.get_mut(id) {
                    m.promote_pending = false;
                }
                batch.put_cf(meta_cf, sm_meta::MEMBERS, encode(&members)?);
                *effect = Effect::Members(members);
                Ok((s.kv.current_revision(), Response::Done))
            }
        }
    }

    /// Builds a snapshot file of the current state in `dir` (for Maintenance.Snapshot).
    ///
    /// # Errors
    /// Storage errors.
    pub fn snapshot_to(&self, path: &Path) -> Result<SnapshotHeader> {
        snapshot::write_snapshot(&self.shared.db, path)
    }

    fn reload_after_install(&self) -> Result<()> {
        let s = &self.shared;
        s.kv.reload()?;
        s.lessor.reset(load_leases(&s.db)?);
        *s.meta.write() = load_meta(&s.db)?;
        s.hub.reset();
        if s.kv.compact_revision() > 0 {
            let _ = s.compactor.send(s.kv.compact_revision());
        }
        Ok(())
    }
}

/// Finds the newest snapshot file in `dir` and reads its metadata.
fn latest_snapshot(dir: &Path) -> Option<(SnapshotMeta, PathBuf)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    files.sort();
    let path = files.pop()?;
    let header = snapshot::verify(&path).ok()?;
    let id = path.file_stem()?.to_string_lossy().to_string();
    Some((
        SnapshotMeta {
            last_log_id: header.last_log_id,
            last_membership: header.membership,
            snapshot_id: id,
        },
        path,
    ))
}

fn compactor(kv: Arc<KvStore>, rx: std::sync::mpsc::Receiver<i64>) {
    while let Ok(mut target) = rx.recv() {
        while let Ok(t) = rx.try_recv() {
            target = target.max(t);
        }
        let started = Instant::now();
        let mut cursor = Some(Revision::new(0, 0));
        while let Some(c) = cursor {
            match kv.compact_step(target, c, 1000) {
                Ok(next) => cursor = next,
                Err(e) => {
                    tracing::error!(error = %e, "mvcc compaction failed; will retry on the next compaction");
                    break;
                }
            }
            // Leave room for foreground writes between batches.
            std::thread::sleep(Duration::from_millis(1));
        }
        tracing::info!(revision = target, took = ?started.elapsed(), "finished mvcc compaction");
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let m = self.shared.meta.read();
        Ok((m.applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            // The leader reports its own appends before their sync
            // (`docs/store-leader-early-append.md`): what an entry does is only let out
            // once this member's copy is on disk.
            self.shared.log_durability.wait(last.log_id.index).await;
        }
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let started = Instant::now();
            let r = self
                .apply_one(e)
                .map_err(|e| sto(StorageIOError::write_state_machine, e))?;
            self.shared
                .metrics
                .apply
                .observe(started.elapsed().as_secs_f64());
            self.shared.metrics.proposals_applied.inc();
            out.push(r);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let path = self
            .shared
            .snapshot_dir
            .join(format!("incoming-{}.part", rand::random::<u64>()));
        Ok(Box::new(SnapshotFile { path }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let s = &this.shared;
            let dest = s.snapshot_dir.join(format!("{}.snap", meta.snapshot_id));
            if snapshot.path != dest {
                std::fs::copy(&snapshot.path, &dest)
                    .map_err(|e| StoreError::Storage(format!("copy snapshot: {e}")))?;
            }
            snapshot::load_snapshot(&s.db, &dest)?;
            // openraft's view of the snapshot is authoritative for the applied point.
            let cf = s.kv.cf(CF_SM_META)?;
            let mut b = WriteBatch::default();
            b.put_cf(cf, sm_meta::APPLIED, encode(&meta.last_log_id)?);
            b.put_cf(cf, sm_meta::MEMBERSHIP, encode(&meta.last_membership)?);
            s.db.write(b)?;
            s.db.flush_wal(true)?;
            this.reload_after_install()?;
            let old = s.current_snapshot.lock().replace((meta, dest.clone()));
            if let Some((_, p)) = old {
                if p != dest {
                    let _ = std::fs::remove_file(p);
                }
            }
            Ok(())
        })
        .await
        .map_err(snap_err)?
        .map_err(snap_err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self
            .shared
            .current_snapshot
            .lock()
            .as_ref()
            .map(|(meta, path)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(SnapshotFile { path: path.clone() }),
            }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || -> Result<Snapshot> {
            let s = &this.shared;
            let tmp = s
                .snapshot_dir
                .join(format!("building-{}.part", rand::random::<u64>()));
            let header = snapshot::write_snapshot(&s.db, &tmp)?;
            let id = match &header.last_log_id {
                Some(l) => format!(
                    "{:020}-{:020}-{}",
                    l.index,
                    l.leader_id.term,
                    rand::random::<u32>()
                ),
                None => format!("{:020}-0-{}", 0, rand::random::<u32>()),
            };
            let dest = s.snapshot_dir.join(format!("{id}.snap"));
            std::fs::rename(&tmp, &dest)
                .map_err(|e| StoreError::Storage(format!("rename snapshot: {e}")))?;
            let meta = SnapshotMeta {
                last_log_id: header.last_log_id,
                last_membership: header.membership,
                snapshot_id: id,
            };
            let old = s
                .current_snapshot
                .lock()
                .replace((meta.clone(), dest.clone()));
            if let Some((_, p)) = old {
                let _ = std::fs::remove_file(p);
            }
            Ok(Snapshot {
                meta,
                snapshot: Box::new(SnapshotFile { path: dest }),
            })
        })
        .await
        .map_err(snap_err)?
        .map_err(snap_err)
    }
}

/// Requests that may share a write with their neighbours in a batched entry (see
/// [`StateMachine::apply_group`]): they touch only the key space and never fail after
/// their first write.
fn groupable(req: &Request) -> bool {
    matches!(req, Request::Put(_) | Request::DeleteRange(_))
}

/// Records in `batch` how far the apply got: request `i` of entry `log_id` (`sub =
/// Some(i)`, not its last) or the whole entry (`None`).
fn mark_applied(
    batch: &mut WriteBatch,
    meta_cf: &rocksdb::ColumnFamily,
    log_id: LogId,
    sub: Option<u64>,
) -> Result<()> {
    match sub {
        Some(i) => batch.put_cf(meta_cf, sm_meta::APPLIED_SUB, encode(&(log_id, i))?),
        None => batch.put_cf(meta_cf, sm_meta::APPLIED, encode(&Some(log_id))?),
    }
    Ok(())
}
