//! The watch hub: routes every applied change to the watchers whose range it falls in.
//!
//! ```text
//!   apply ──publish(rev, changes)──▶ hub ──try_send──▶ synced watcher's stream channel
//!                                     │
//!                        channel full │ (or watcher created at an old revision)
//!                                     ▼
//!                               unsynced watcher ◀── catch-up thread reads the `rev`
//!                                                     change log from next_rev on,
//!                                                     then re-syncs under the hub lock
//! ```
//!
//! A watcher is either *synced* (it has every event up to the hub's published revision,
//! and apply hands it new ones directly) or *unsynced* (it has everything before
//! `next_rev`; the catch-up thread feeds it from RocksDB). Apply never blocks on a
//! watcher: a full channel only demotes that watcher to unsynced. The switch back to
//! synced happens under the hub lock when `next_rev > published`, so no revision is
//! delivered twice or skipped, and a revision's events always travel in one response.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use skiff_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use skiff_proto::mvccpb::{event::EventType, Event};
use tokio::sync::mpsc;

use crate::mvcc::key::KeyRange;
use crate::mvcc::{Change, KvStore};

/// Identifies a watcher inside the hub (unique per member).
pub type WatcherKey = u64;

/// What a watcher wants.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    /// Keys watched.
    pub range: KeyRange,
    /// Drop PUT events.
    pub no_put: bool,
    /// Drop DELETE events.
    pub no_delete: bool,
    /// Include the previous key-value in events.
    pub prev_kv: bool,
    /// The client-visible watch id (unique per stream).
    pub watch_id: i64,
    /// First revision to deliver (0 = from the next revision).
    pub start_revision: i64,
}

struct Watcher {
    spec: WatchSpec,
    /// The stream this watcher's responses go to (shared by the stream's watchers).
    tx: mpsc::Sender<WatchResponse>,
    /// Events below this revision were delivered (or are not wanted).
    next_rev: i64,
    synced: bool,
    /// Fills in response headers.
    header: HeaderFn,
}

/// Builds a response header for a revision (cluster id, member id, term are the server's).
pub type HeaderFn = Arc<dyn Fn(i64) -> ResponseHeader + Send + Sync>;

struct Inner {
    published: i64,
    watchers: HashMap<WatcherKey, Watcher>,
    next_key: WatcherKey,
    shutdown: bool,
}

/// The member's watch hub. See the module documentation.
pub struct WatchHub {
    inner: Mutex<Inner>,
    wake: Condvar,
    kv: Arc<KvStore>,
    /// Watchers that want previous values (`prev_kv`); kept under `inner`'s lock, read
    /// without it by [`WatchHub::wants_prev_values`].
    prev_kv_watchers: AtomicUsize,
    /// The catch-up thread, joined by [`WatchHub::shutdown`].
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Events of a change list that a watcher wants, grouped by revision in order.
fn select(spec: &WatchSpec, changes: &[Change], from: i64) -> Vec<(i64, Vec<Event>)> {
    let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
    for c in changes {
        if c.rev.main < from {
            continue;
        }
        let Some(kv) = &c.event.kv else { continue };
        if !spec.range.contains(&kv.key) {
            continue;
        }
        let is_put = c.event.r#type == EventType::Put as i32;
        if (is_put && spec.no_put) || (!is_put && spec.no_delete) {
            continue;
        }
        let mut ev = c.event.clone();
        if !spec.prev_kv {
            ev.prev_kv = None;
        }
        match out.last_mut() {
            Some((rev, evs)) if *rev == c.rev.main => evs.push(ev),
            _ => out.push((c.rev.main, vec![ev])),
        }
    }
    out
}

impl WatchHub {
    /// A hub over `kv`, with its catch-up thread.
    pub fn new(kv: Arc<KvStore>) -> Arc<Self> {
        let hub = Arc::new(Self {
            inner: Mutex::new(Inner {
                published: kv.current_revision(),
                watchers: HashMap::new(),
                next_key: 1,
                shutdown: false,
            }),
            wake: Condvar::new(),
            kv,
            prev_kv_watchers: AtomicUsize::new(0),
            thread: Mutex::new(None),
        });
        let h = hub.clone();
        let handle = std::thread::Builder::new()
            .name("watch-catchup".into())
            .spawn(move || h.catch_up_loop())
            .expect("spawning the watch catch-up thread");
        *hub.thread.lock() = Some(handle);
        hub
    }

    /// Stops the catch-up thread and waits for it, so that it no longer touches the
    /// database (RocksDB aborts the process if a thread is inside it at exit).
    pub fn shutdown(&self) {
        self.inner.lock().shutdown = true;
        self.wake.notify_all();
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// The newest revision handed to watchers.
    pub fn published(&self) -> i64 {
        self.inner.lock().published
    }

    /// Number of watchers.
    pub fn len(&self) -> usize {
        self.inner.lock().watchers.len()
    }

    /// Whether there are no watchers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of watchers that are catching up.
    pub fn unsynced(&self) -> usize {
        self.inner
            .lock()
            .watchers
            .values()
            .filter(|w| !w.synced)
            .count()
    }

    /// Re-reads the published revision after a snapshot install; every watcher must
    /// catch up again from where it was (or be cancelled if that was compacted).
    pub fn reset(&self) {
        let mut g = self.inner.lock();
        g.published = self.kv.current_revision();
        for w in g.watchers.values_mut() {
            w.synced = false;
        }
        self.wake.notify_all();
    }

    /// Registers a watcher. Its responses go to `tx`. Returns its key.
    pub fn add(
        &self,
        spec: WatchSpec,
        tx: mpsc::Sender<WatchResponse>,
        header: HeaderFn,
    ) -> WatcherKey {
        let mut g = self.inner.lock();
        let key = g.next_key;
        g.next_key += 1;
        let published = g.published;
        if spec.prev_kv {
            self.prev_kv_watchers.fetch_add(1, Ordering::SeqCst);
        }
        let (next_rev, synced) = if spec.start_revision <= 0 {
            (published + 1, true)
        } else if spec.start_revision > published {
            (spec.start_revision, true)
        } else {
            (spec.start_revision, false)
        };
        g.watchers.insert(
            key,
            Watcher {
                spec,
                tx,
                next_rev,
                synced,
                header,
            },
        );
        if !synced {
            self.wake.notify_all();
        }
        key
    }

    /// Removes a watcher; true if it existed.
    pub fn remove(&self, key: WatcherKey) -> bool {
        let mut g = self.inner.lock();
        self.forget(&mut g, key)
    }

    fn forget(&self, g: &mut Inner, key: WatcherKey) -> bool {
        match g.watchers.remove(&key) {
            Some(w) => {
                if w.spec.prev_kv {
                    self.prev_kv_watchers.fetch_sub(1, Ordering::SeqCst);
                }
                true
            }
            None => false,
        }
    }

    /// Whether the writer should load the previous value of each key it changes, for
    /// events' `prev_kv`: true while any watcher asks for previous values. Only a hint —
    /// a watcher added after the writer asked and before the changes are published gets
    /// them through catch-up instead (see [`Change::prev_pending`]).
    pub fn wants_prev_values(&self) -> bool {
        self.prev_kv_watchers.load(Ordering::SeqCst) > 0
    }

    /// Hands the changes of one applied revision to synced watchers. Never blocks.
    pub fn publish(&self, rev: i64, changes: &[Change]) {
        let mut g = self.inner.lock();
        g.published = g.published.max(rev);
        if changes.is_empty() {
            return;
        }
        let mut demoted = false;
        let mut closed = Vec::new();
        // Previous values the writer did not load (no watcher wanted them when it
        // asked): a watcher that wants them reads these revisions from history instead.
        let prev_missing = changes.iter().any(|c| c.prev_pending);
        for (key, w) in g.watchers.iter_mut() {
            if !w.synced {
                continue;
            }
            if prev_missing && w.spec.prev_kv {
                w.synced = false;
                demoted = true;
                continue;
            }
            for (r, events) in select(&w.spec, changes, w.next_rev) {
                let resp = WatchResponse {
                    header: Some((w.header)(r)),
                    watch_id: w.spec.watch_id,
                    events,
                    ..Default::default()
                };
                match w.tx.try_send(resp) {
                    Ok(()) => w.next_rev = r + 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        w.synced = false;
                        demoted = true;
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        closed.push(*key);
                        break;
                    }
                }
            }
            if w.synced {
                w.next_rev = w.next_rev.max(rev + 1);
            }
        }
        for k in closed {
            self.forget(&mut g, k);
        }
        if demoted {
            self.wake.notify_all();
        }
    }

    /// Answers a progress request for the watchers in `keys` (one stream's): if every one
    /// of them is synced, queues a response with watch_id -1 and the published revision
    /// on `tx` (behind every event already queued) and returns true.
    pub fn progress(
        &self,
        keys: &[WatcherKey],
        tx: &mpsc::Sender<WatchResponse>,
        header: &HeaderFn,
    ) -> bool {
        let g = self.inner.lock();
        if keys
            .iter()
            .any(|k| g.watchers.get(k).is_some_and(|w| !w.synced))
        {
            return false;
        }
        let resp = WatchResponse {
            header: Some(header(g.published)),
            watch_id: -1,
            ..Default::default()
        };
        tx.try_send(resp).is_ok()
    }

    /// Sends a progress notification to one synced watcher (`progress_notify`).
    pub fn notify_progress(&self, key: WatcherKey) -> bool {
        let g = self.inner.lock();
        let Some(w) = g.watchers.get(&key) else {
            return false;
        };
        if !w.synced {
            return false;
        }
        let resp = WatchResponse {
            header: Some((w.header)(g.published)),
            watch_id: w.spec.watch_id,
            ..Default::default()
        };
        w.tx.try_send(resp).is_ok()
    }

    fn catch_up_loop(self: Arc<Self>) {
        loop {
            let pending: Vec<WatcherKey> = {
                let mut g = self.inner.lock();
                loop {
                    if g.shutdown {
                        return;
                    }
                    let p: Vec<WatcherKey> = g
                        .watchers
                        .iter()
                        .filter(|(_, w)| !w.synced)
                        .map(|(k, _)| *k)
                        .collect();
                    if !p.is_empty() {
                        break p;
                    }
                    self.wake.wait(&mut g);
                }
            };
            let mut progressed = false;
            for key in pending {
                progressed |= self.catch_up(key);
            }
            if !progressed {
                // Every lagging watcher's channel is full: give the streams time to drain.
                let mut g = self.inner.lock();
                if g.shutdown {
                    return;
                }
                self.wake.wait_for(&mut g, Duration::from_millis(10));
            }
        }
    }

    /// Feeds one unsynced watcher a bounded chunk; returns whether it made progress.
    fn catch_up(&self, key: WatcherKey) -> bool {
        const CHUNK: usize = 1000;
        let (spec, tx, header, next_rev, target) = {
            let mut g = self.inner.lock();
            let published = g.published;
            let Some(w) = g.watchers.get_mut(&key) else {
                return false;
            };
            if w.synced {
                return false;
            }
            if w.next_rev > published {
                w.synced = true;
                return true;
            }
            (
                w.spec.clone(),
                w.tx.clone(),
                w.header.clone(),
                w.next_rev,
                published,
            )
        };
        let changes = match self.kv.changes(next_rev, target, CHUNK, spec.prev_kv) {
            Ok(c) => c,
            Err(crate::error::StoreError::Compacted { compact_revision }) => {
                // The history this watcher still needs is gone: cancel it, as etcd does.
                let resp = WatchResponse {
                    header: Some(header(target)),
                    watch_id: spec.watch_id,
                    canceled: true,
                    compact_revision,
                    cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
                    ..Default::default()
                };
                if tx.try_send(resp).is_ok() {
                    self.remove(key);
                    return true;
                }
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "watch catch-up read failed");
                return false;
            }
        };
        // The last revision this chunk covers completely.
        let covered = match changes.last() {
            Some(c) if changes.len() >= CHUNK => c.rev.main,
            _ => target,
        };
        let mut delivered_to = next_rev - 1;
        let mut progressed = false;
        for (rev, events) in select(&spec, &changes, next_rev) {
            let resp = WatchResponse {
                header: Some(header(rev)),
                watch_id: spec.watch_id,
                events,
                ..Default::default()
            };
            match tx.try_send(resp) {
                Ok(()) => {
                    delivered_to = rev;
                    progressed = true;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.set_next(key, delivered_to + 1);
                    return progressed;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.remove(key);
                    return true;
                }
            }
        }
        let mut g = self.inner.lock();
        let published = g.published;
        if let Some(w) = g.watchers.get_mut(&key) {
            w.next_rev = covered + 1;
            if w.next_rev > published {
                w.synced = true;
            }
        }
        true
    }

    fn set_next(&self, key: WatcherKey, next: i64) {
        if let Some(w) = self.inner.lock().watchers.get_mut(&key) {
            w.next_rev = w.next_rev.max(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::WriteTxn;
    use rocksdb::WriteBatch;
    use skiff_proto::etcdserverpb::PutRequest;

    fn put(kv: &KvStore, hub: &WatchHub, key: &str) -> i64 {
        put_with(kv, hub, key, "v", true).0
    }

    /// A put applied as the state machine applies it; `load_prev` as
    /// [`WriteTxn::load_prev_values`].
    fn put_with(
        kv: &KvStore,
        hub: &WatchHub,
        key: &str,
        value: &str,
        load_prev: bool,
    ) -> (i64, Vec<Change>) {
        let mut batch = WriteBatch::default();
        let none = |_: i64| false;
        let mut tx = WriteTxn::new(kv, &mut batch, &none).load_prev_values(load_prev);
        tx.put(&PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .unwrap();
        let (rev, changes) = tx.finish().unwrap();
        kv.write(batch, &changes).unwrap();
        kv.publish_revision(rev);
        hub.publish(rev, &changes);
        (rev, changes)
    }

    #[tokio::test]
    async fn previous_values_are_loaded_only_for_watchers_that_want_them_and_never_missing() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(KvStore::open(crate::storage::open_db(dir.path()).unwrap()).unwrap());
        let hub = WatchHub::new(kv.clone());
        put_with(&kv, &hub, "k1", "a", hub.wants_prev_values());
        // No watcher wants previous values: the put does not read the old one.
        let (_, ch) = put_with(&kv, &hub, "k1", "b", hub.wants_prev_values());
        assert!(ch[0].prev_pending && ch[0].event.prev_kv.is_none());
        // A prev_kv watcher registered after the writer asked (the race): it still gets
        // the previous value, read from history.
        let (tx, mut rx) = mpsc::channel(64);
        hub.add(
            WatchSpec {
                prev_kv: true,
                ..spec(0)
            },
            tx,
            header(),
        );
        let (_, changes) = put_with(&kv, &hub, "k1", "c", false);
        assert!(changes[0].prev_pending);
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.events[0].prev_kv.as_ref().unwrap().value, b"b");
        // With such a watcher registered, the writer loads previous values itself.
        assert!(hub.wants_prev_values());
        let (rev, ch) = put_with(&kv, &hub, "k1", "d", hub.wants_prev_values());
        assert!(!ch[0].prev_pending);
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.events[0].kv.as_ref().unwrap().mod_revision, rev);
        assert_eq!(r.events[0].prev_kv.as_ref().unwrap().value, b"c");
        hub.shutdown();
    }

    fn header() -> HeaderFn {
        Arc::new(|rev| ResponseHeader {
            revision: rev,
            ..Default::default()
        })
    }

    fn spec(start: i64) -> WatchSpec {
        WatchSpec {
            range: KeyRange::from_request(b"k", b"l"),
            no_put: false,
            no_delete: false,
            prev_kv: false,
            watch_id: 7,
            start_revision: start,
        }
    }

    /// Receives responses until `last` has been seen, returning event revisions in order.
    async fn collect(rx: &mut mpsc::Receiver<WatchResponse>, last: i64) -> Vec<i64> {
        let mut revs = Vec::new();
        while revs.last() != Some(&last) {
            let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("events")
                .expect("open");
            revs.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
        }
        revs
    }

    #[tokio::test]
    async fn a_slow_watcher_catches_up_without_gaps_or_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(KvStore::open(crate::storage::open_db(dir.path()).unwrap()).unwrap());
        let hub = WatchHub::new(kv.clone());
        // A channel of 2 cannot hold 50 revisions: the watcher is demoted and caught up.
        let (tx, mut rx) = mpsc::channel(2);
        hub.add(spec(0), tx, header());
        for i in 0..50 {
            put(&kv, &hub, &format!("k{i}"));
        }
        put(&kv, &hub, "zz-not-watched");
        let last = put(&kv, &hub, "k-last");
        assert_eq!(
            collect(&mut rx, last).await,
            (2..=51).chain([last]).collect::<Vec<_>>()
        );
        hub.shutdown();
    }

    #[tokio::test]
    async fn a_watch_from_an_old_revision_replays_history_then_follows() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(KvStore::open(crate::storage::open_db(dir.path()).unwrap()).unwrap());
        let hub = WatchHub::new(kv.clone());
        for i in 0..5 {
            put(&kv, &hub, &format!("k{i}"));
        }
        let (tx, mut rx) = mpsc::channel(64);
        hub.add(spec(4), tx, header());
        let last = put(&kv, &hub, "k9");
        assert_eq!(collect(&mut rx, last).await, vec![4, 5, 6, 7]);
        // Compacted history cancels a watcher that still needs it.
        kv.set_compacted(7);
        let (tx, mut rx) = mpsc::channel(64);
        hub.add(spec(2), tx, header());
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(r.canceled && r.compact_revision == 7);
        hub.shutdown();
    }
}
