//! The raft log: entries in the log's own segment files (`raft::wal`), the vote, the
//! purge point and the commit point in RocksDB's `raft_meta` column family.
//!
//! `append` writes the entries, readable at once, then:
//! - The leader's own entries are reported done right away and synced by the *flusher*
//!   thread, once for every append that queued up meanwhile, so openraft sends them to
//!   the followers while they are being synced. The member's [`LogDurability`] holds back
//!   everything that follows from their commit until the sync is done
//!   (`docs/store-leader-early-append.md`).
//! - A follower's appends are synced inline and reported after the sync
//!   (`docs/store-follower-inline-sync.md`): a follower has one append in flight per
//!   leader, so a thread would never merge two and only add hand-offs to the write's
//!   path.
//!
//! `save_vote` syncs before it returns: a vote that is not on disk could be cast twice in
//! one term. `truncate` is durable when it returns. `purge` first makes the state machine
//! durable (its RocksDB writes are never synced on their own), so entries are only
//! dropped behind it. The state machine never runs ahead of the durable log: it applies an
//! entry only after this member's copy is synced (openraft 0.9 waits for the report, and
//! the state machine for [`LogDurability`]).
//!
//! A data dir written before the log had its own files keeps its entries in RocksDB's
//! `raft_log` column family; `LogStore::new` moves them over once.

// openraft's StorageError is large, and its type is fixed by the RaftLogStorage trait.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::fs::File;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::raft::durability::LogDurability;
use crate::raft::recent::Recent;
use crate::raft::types::{decode, encode, Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use crate::raft::wal::Wal;
use crate::storage::schema::{self, raft_meta, CF_RAFT_LOG, CF_RAFT_META};

/// A sync the flusher owes: the segment files the leader's append wrote to, and the
/// index of its last entry (durable once they are synced).
struct Flush {
    files: Vec<Arc<File>>,
    last: u64,
}

/// The log store. Cheap to clone: clones share the database, the log and the flusher.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    wal: Arc<Mutex<Wal>>,
    /// The newest entries, decoded (`raft::recent`). Locked after `wal` when both are.
    recent: Arc<Mutex<Recent>>,
    flusher: mpsc::Sender<Flush>,
    /// The commit point last written to `raft_meta`, and one not written yet.
    committed_saved: Arc<Mutex<CommitPoint>>,
    /// Unsafe test mode: report entries durable without syncing (see `--unsafe-no-fsync`).
    no_fsync: bool,
    /// This member's id: entries whose log id names another leader are a follower's.
    own_id: NodeId,
    /// How far the appends reported before their sync are durable.
    durability: Arc<LogDurability>,
    metrics: Arc<Metrics>,
}

/// What `save_committed` keeps between calls.
#[derive(Default)]
struct CommitPoint {
    /// Index of the commit point last written to `raft_meta`, if any yet.
    index: Option<u64>,
    /// The newest commit point seen while not durable yet (written once it is).
    pending: Option<LogId>,
}

/// The commit point is written when it has moved this many entries since it was last
/// written (see `save_committed`).
const COMMITTED_EVERY: u64 = 64;

fn io_err(f: fn(AnyError) -> StorageIOError<NodeId>, e: impl std::fmt::Display) -> StorageError {
    f(AnyError::error(e)).into()
}

impl LogStore {
    /// Opens the log store of member `own_id`: its segments in `dir`, its metadata in
    /// `db`; starts the flusher thread, which exits when every clone of the store is
    /// dropped.
    ///
    /// # Errors
    /// Storage errors reading the log or moving an old data dir's entries over.
    pub fn new(
        db: Arc<DB>,
        dir: &Path,
        metrics: Arc<Metrics>,
        no_fsync: bool,
        own_id: NodeId,
    ) -> Result<Self, StoreError> {
        let purged: Option<LogId> = match db.get_cf(
            db.cf_handle(CF_RAFT_META)
                .ok_or_else(|| StoreError::Corruption("raft_meta".into()))?,
            raft_meta::PURGED,
        )? {
            Some(b) => Some(decode(&b)?),
            None => None,
        };
        let wal = Wal::open(dir, purged.map(|p| p.index))
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        let (tx, rx) = mpsc::channel::<Flush>();
        let durability = Arc::new(LogDurability::default());
        let (thread_metrics, thread_durability) = (metrics.clone(), durability.clone());
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flusher(rx, thread_metrics, no_fsync, thread_durability))
            .map_err(|e| StoreError::Internal(format!("spawning the log flusher: {e}")))?;
        let store = Self {
            db,
            wal: Arc::new(Mutex::new(wal)),
            recent: Arc::new(Mutex::new(Recent::default())),
            flusher: tx,
            committed_saved: Arc::new(Mutex::new(CommitPoint::default())),
            no_fsync,
            own_id,
            durability,
            metrics,
        };
        store.move_rocksdb_entries()?;
        Ok(store)
    }

    /// Moves entries an older data dir kept in the `raft_log` column family into the
    /// segments (durably), then deletes them there.
    fn move_rocksdb_entries(&self) -> Result<(), StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf_log());
        it.seek_to_first();
        if it.key().is_none() {
            return Ok(it.status()?);
        }
        let mut wal = self.wal.lock();
        if wal.last_index().is_some() {
            return Err(StoreError::Corruption(
                "raft log entries both in RocksDB and in the log's segment files".into(),
            ));
        }
        let mut moved = 0u64;
        let mut files: Vec<Arc<File>> = Vec::new();
        let mut chunk: Vec<(u64, Vec<u8>)> = Vec::new();
        loop {
            let more = match (it.key(), it.value()) {
                (Some(k), Some(v)) => {
                    chunk.push((schema::parse_log_key(k), v.to_vec()));
                    it.next();
                    true
                }
                _ => false,
            };
            if chunk.len() >= 1024 || !more {
                files.extend(
                    wal.append(&chunk)
                        .map_err(|e| StoreError::Storage(e.to_string()))?,
                );
                moved += chunk.len() as u64;
                chunk.clear();
            }
            if !more {
                break;
            }
        }
        it.status()?;
        sync_files(&files).map_err(|e| StoreError::Storage(format!("raft log sync: {e}")))?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf_log(), schema::log_key(0), schema::log_key(u64::MAX));
        batch.delete_cf(self.cf_log(), schema::log_key(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        tracing::info!(
            entries = moved,
            "moved the raft log out of RocksDB into its own files"
        );
        Ok(())
    }

    /// How far the appends this store reported before syncing them are durable: what
    /// the state machine and the network wait for (`docs/store-leader-early-append.md`).
    pub fn durability(&self) -> Arc<LogDurability> {
        self.durability.clone()
    }

    fn cf_log(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(CF_RAFT_LOG)
            .expect("raft_log column family exists: created at open")
    }

    fn cf_meta(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(CF_RAFT_META)
            .expect("raft_meta column family exists: created at open")
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let v = self
            .db
            .get_cf(self.cf_meta(), key)
            .map_err(|e| io_err(StorageIOError::read, e))?;
        v.map(|b| decode(&b))
            .transpose()
            .map_err(|e| io_err(StorageIOError::read, e))
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        v: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let b = encode(v).map_err(|e| io_err(StorageIOError::write, e))?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync && !self.no_fsync);
        self.db
            .put_cf_opt(self.cf_meta(), key, b, &opts)
            .map_err(|e| io_err(StorageIOError::write, e))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let wal = self.wal.lock();
        let Some(last) = wal.last_index() else {
            return Ok(None);
        };
        let payload = wal
            .read(last, last + 1)
            .map_err(|e| io_err(StorageIOError::read_logs, e))?;
        let Some(b) = payload.first() else {
            return Ok(None);
        };
        let e: Entry = decode(b).map_err(|e| io_err(StorageIOError::read_logs, e))?;
        Ok(Some(e.log_id))
    }
}

/// Syncs each distinct file once.
fn sync_files(files: &[Arc<File>]) -> std::io::Result<()> {
    for (i, f) in files.iter().enumerate() {
        if files[..i].iter().any(|g| Arc::ptr_eq(f, g)) {
            continue;
        }
        f.sync_data()?;
    }
    Ok(())
}

/// Syncs `files` (unless the unsafe no-fsync mode is on) and records the sync.
fn sync(
    files: &[Arc<File>],
    jobs: usize,
    metrics: &Metrics,
    no_fsync: bool,
) -> std::io::Result<()> {
    let started = Instant::now();
    let res = if no_fsync { Ok(()) } else { sync_files(files) };
    metrics.observe_fsync(started.elapsed(), jobs);
    res
}

fn flusher(
    rx: mpsc::Receiver<Flush>,
    metrics: Arc<Metrics>,
    no_fsync: bool,
    durability: Arc<LogDurability>,
) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let files: Vec<Arc<File>> = waiting
            .iter()
            .flat_map(|f| f.files.iter().cloned())
            .collect();
        let last = waiting.iter().map(|f| f.last).max().unwrap_or(0);
        match sync(&files, waiting.len(), &metrics, no_fsync) {
            Ok(()) => durability.synced(last),
            Err(e) => {
                // Openraft counts these entries as on this member's disk already: the
                // followers' copies alone may have committed them, and that cannot be
                // taken back. A log that cannot be synced cannot go on (etcd exits on a
                // failed WAL sync too).
                tracing::error!(error = %e, last, "raft log sync failed; exiting");
                std::process::abort();
            }
        }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e.saturating_add(1)),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        if let Some(entries) = self.recent.lock().get(start, end.unwrap_or(u64::MAX)) {
            return Ok(entries);
        }
        let payloads = self
            .wal
            .lock()
            .read(start, end.unwrap_or(u64::MAX))
            .map_err(|e| io_err(StorageIOError::read_logs, e))?;
        payloads
            .iter()
            .map(|b| decode(b).map_err(|e| io_err(StorageIOError::read_logs, e)))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(raft_meta::PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(raft_meta::VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(raft_meta::VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced, and written only every COMMITTED_EVERY entries (openraft calls this
        // for every entry it commits, a RocksDB write each): an older commit point only
        // means that a restarted member applies fewer entries before it hears the current
        // one from the leader (or, alone, commits its own first entry).
        //
        // Never ahead of the durable log: the leader commits its own entries before they
        // are synced (`docs/store-leader-early-append.md`), and a commit point beyond the
        // log on disk would send a restart looking for entries it lost. Such a commit
        // point waits as `pending` and is written by a later call once durable.
        let mut saved = self.committed_saved.lock();
        let candidate = match committed {
            Some(c) if !self.durability.is_durable(c.index) => match saved.pending.replace(c) {
                Some(p) if self.durability.is_durable(p.index) => Some(p),
                _ => return Ok(()),
            },
            _ => {
                saved.pending = None;
                committed
            }
        };
        let index = candidate.map_or(0, |c| c.index);
        if saved
            .index
            .is_some_and(|s| (s..s.saturating_add(COMMITTED_EVERY)).contains(&index))
        {
            return Ok(());
        }
        self.put_meta(raft_meta::COMMITTED, &candidate, false)?;
        saved.index = Some(index);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .get_meta::<Option<LogId>>(raft_meta::COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut records = Vec::new();
        let mut decoded = Vec::new();
        for e in entries {
            let b = encode(&e).map_err(|e| io_err(StorageIOError::write_logs, e))?;
            records.push((e.log_id.index, b));
            decoded.push(e);
        }
        let leader = decoded.last().map(|e: &Entry| e.log_id.leader_id.node_id);
        let files = {
            let mut wal = self.wal.lock();
            let files = wal.append(&records);
            let mut recent = self.recent.lock();
            match &files {
                Ok(_) => {
                    for (e, (_, b)) in decoded.into_iter().zip(&records) {
                        recent.push(e, b.len());
                    }
                }
                // What the segments hold now is unclear: read them again.
                Err(_) => recent.clear(),
            }
            files.map_err(|e| io_err(StorageIOError::write_logs, e))?
        };
        let Some(leader) = leader else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        if leader == self.own_id {
            // The leader's own entries: reported now and synced by the flusher while
            // openraft replicates them; `LogDurability` holds back their effects.
            let last = records.last().map_or(0, |(i, _)| *i);
            self.durability.reported_early(last);
            self.flusher
                .send(Flush { files, last })
                .map_err(|_| io_err(StorageIOError::write_logs, "log flusher thread is gone"))?;
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // A follower's append: openraft keeps one AppendEntries in flight per follower,
        // and the leader sends the next only after this member answered, so no other
        // append could share the sync. Syncing here spares the write two thread
        // hand-offs (to the flusher and back, each a wake-up of an idle thread).
        let res = sync(&files, 1, &self.metrics, self.no_fsync);
        callback.log_io_completed(res);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut wal = self.wal.lock();
        self.recent.lock().truncate(log_id.index);
        wal.truncate(log_id.index)
            .map_err(|e| io_err(StorageIOError::write_logs, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Purging is only safe behind a durable state machine: its writes are not synced
        // on their own.
        if !self.no_fsync {
            self.db
                .flush_wal(true)
                .map_err(|e| io_err(StorageIOError::write_logs, e))?;
        }
        self.put_meta(raft_meta::PURGED, &log_id, true)?;
        let mut wal = self.wal.lock();
        self.recent.lock().purge(log_id.index);
        wal.purge(log_id.index)
            .map_err(|e| io_err(StorageIOError::write_logs, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    /// The log store of `db`, its segments in `dir/wal`.
    fn open_log(db: &Arc<DB>, dir: &Path) -> LogStore {
        LogStore::new(
            db.clone(),
            &dir.join("wal"),
            Arc::new(Metrics::new()),
            false,
            1,
        )
        .unwrap()
    }

    /// An old data dir's entries in RocksDB move to the segments (in chunks, the last
    /// one short) and are gone from RocksDB afterwards.
    #[tokio::test]
    async fn entries_kept_in_rocksdb_by_an_older_build_move_to_the_segments() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open_db(&dir.path().join("db")).unwrap();
        let cf = db.cf_handle(CF_RAFT_LOG).unwrap();
        for i in 1..=2500u64 {
            let e = Entry {
                log_id: openraft::LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Blank,
            };
            db.put_cf(cf, schema::log_key(i), encode(&e).unwrap())
                .unwrap();
        }
        let mut store = open_log(&db, dir.path());
        let got: Vec<u64> = store
            .try_get_log_entries(1..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, (1..=2500).collect::<Vec<_>>());
        let mut it = db.raw_iterator_cf(cf);
        it.seek_to_first();
        assert!(it.key().is_none(), "RocksDB still holds log entries");
    }

    #[tokio::test]
    async fn the_commit_point_is_written_at_first_and_then_every_64_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open_db(&dir.path().join("db")).unwrap();
        let mut store = open_log(&db, dir.path());
        let id = |i: u64| Some(openraft::LogId::new(CommittedLeaderId::new(1, 1), i));
        assert_eq!(store.read_committed().await.unwrap(), None);
        store.save_committed(id(3)).await.unwrap();
        assert_eq!(
            store.read_committed().await.unwrap(),
            id(3),
            "the first is written"
        );
        for i in 4..=66 {
            store.save_committed(id(i)).await.unwrap();
        }
        assert_eq!(
            store.read_committed().await.unwrap(),
            id(3),
            "63 later ones are not"
        );
        store.save_committed(id(67)).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), id(67));
        // Never more than COMMITTED_EVERY behind what was last saved.
        for i in 68..=300 {
            store.save_committed(id(i)).await.unwrap();
            let kept = store.read_committed().await.unwrap().unwrap().index;
            assert!(kept <= i && i - kept < COMMITTED_EVERY, "{kept} for {i}");
        }
    }

    /// The leader commits its own entries before they are synced; the commit point on
    /// disk waits for the sync, then catches up on a later call.
    #[tokio::test]
    async fn the_commit_point_is_not_written_ahead_of_the_synced_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open_db(&dir.path().join("db")).unwrap();
        let mut store = open_log(&db, dir.path());
        let durability = store.durability();
        let id = |i: u64| Some(openraft::LogId::new(CommittedLeaderId::new(1, 1), i));
        durability.reported_early(10);
        store.save_committed(id(5)).await.unwrap();
        assert_eq!(
            store.read_committed().await.unwrap(),
            None,
            "5 is not synced"
        );
        durability.synced(5);
        store.save_committed(id(6)).await.unwrap();
        assert_eq!(
            store.read_committed().await.unwrap(),
            id(5),
            "the earlier one, synced since, is written; 6 is not synced"
        );
        durability.synced(10);
        store.save_committed(id(80)).await.unwrap();
        assert_eq!(
            store.read_committed().await.unwrap(),
            id(80),
            "beyond the early reports nothing waits"
        );
    }
}
