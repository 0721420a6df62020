//! The raft log on RocksDB (`raft_log` and `raft_meta` column families), with group
//! commit.
//!
//! `append` writes the entries without syncing (so they are readable at once) and hands
//! the flush callback to the *flusher* thread, which syncs the WAL once for every callback
//! that queued up meanwhile and only then reports the entries durable. Concurrent client
//! writes that openraft batches into one `append`, and appends that arrive while a sync is
//! in progress, all share one fsync. `save_vote` syncs before it returns: a vote that is
//! not on disk could be cast twice in one term.

// openraft's StorageError is large, and its type is fixed by the RaftLogStorage trait.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::metrics::Metrics;
use crate::raft::types::{decode, encode, Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use crate::storage::schema::{self, raft_meta, CF_RAFT_LOG, CF_RAFT_META};

/// The log store. Cheap to clone: clones share the database and the flusher.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    /// Unsafe test mode: report entries durable without syncing (see `--unsafe-no-fsync`).
    no_fsync: bool,
}

fn io_err(f: fn(AnyError) -> StorageIOError<NodeId>, e: impl std::fmt::Display) -> StorageError {
    f(AnyError::error(e)).into()
}

impl LogStore {
    /// Opens the log store over `db` and starts its flusher thread, which exits when
    /// every clone of the store is dropped.
    pub fn new(db: Arc<DB>, metrics: Arc<Metrics>, no_fsync: bool) -> Self {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let fdb = db.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flusher(fdb, rx, metrics, no_fsync))
            .expect("spawning the log flusher thread");
        Self {
            db,
            flusher: tx,
            no_fsync,
        }
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
        let mut it = self.db.raw_iterator_cf(self.cf_log());
        it.seek_to_last();
        match it.value() {
            Some(v) => {
                let e: Entry = decode(v).map_err(|e| io_err(StorageIOError::read_logs, e))?;
                Ok(Some(e.log_id))
            }
            None => {
                it.status()
                    .map_err(|e| io_err(StorageIOError::read_logs, e))?;
                Ok(None)
            }
        }
    }
}

fn flusher(
    db: Arc<DB>,
    rx: mpsc::Receiver<LogFlushed<TypeConfig>>,
    metrics: Arc<Metrics>,
    no_fsync: bool,
) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let started = Instant::now();
        let res = if no_fsync { Ok(()) } else { db.flush_wal(true) };
        metrics.observe_fsync(started.elapsed(), waiting.len());
        for cb in waiting {
            let r = match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            cb.log_io_completed(r);
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
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf_log());
        it.seek(schema::log_key(start));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let idx = schema::parse_log_key(k);
            if end.is_some_and(|e| idx >= e) {
                break;
            }
            out.push(decode(v).map_err(|e| io_err(StorageIOError::read_logs, e))?);
            it.next();
        }
        it.status()
            .map_err(|e| io_err(StorageIOError::read_logs, e))?;
        Ok(out)
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
        // Not synced: losing it only means re-learning the commit point from the leader.
        self.put_meta(raft_meta::COMMITTED, &committed, false)
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
        let mut batch = WriteBatch::default();
        let cf = self.cf_log();
        for e in entries {
            let b = encode(&e).map_err(|e| io_err(StorageIOError::write_logs, e))?;
            batch.put_cf(cf, schema::log_key(e.log_id.index), b);
        }
        self.db
            .write(batch)
            .map_err(|e| io_err(StorageIOError::write_logs, e))?;
        self.flusher
            .send(callback)
            .map_err(|_| io_err(StorageIOError::write_logs, "log flusher thread is gone"))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf_log(),
            schema::log_key(log_id.index),
            schema::log_key(u64::MAX),
        );
        // The very last index, which the exclusive range end above cannot cover.
        batch.delete_cf(self.cf_log(), schema::log_key(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(!self.no_fsync);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| io_err(StorageIOError::write_logs, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Purging is only safe behind a durable state machine: the state machine writes
        // without fsync, and shares the WAL with the log, so sync the WAL first.
        if !self.no_fsync {
            self.db
                .flush_wal(true)
                .map_err(|e| io_err(StorageIOError::write_logs, e))?;
        }
        self.put_meta(raft_meta::PURGED, &log_id, true)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf_log(),
            schema::log_key(0),
            schema::log_key(log_id.index.saturating_add(1)),
        );
        self.db
            .write(batch)
            .map_err(|e| io_err(StorageIOError::write_logs, e))
    }
}
