//! A work queue of keys, as client-go's rate-limited delaying work queue: a key waits at
//! most once however often it is added, one worker at a time holds it, and a key added
//! while a worker holds it is handed out again when that worker is done.
//!
//! ```text
//!  add / add_after ──► waiting (deadline) ──due──► ready ──next()──► processing
//!                                                    ▲                   │ done()
//!                                                    └──── dirty ◄───────┘ (added meanwhile)
//! ```
//!
//! Delays serve two purposes: batching (a burst of pod events for one Service within the
//! batch period becomes one sync) and retry backoff per key (`retry` doubles the delay,
//! `forget` resets it after a success).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// First retry delay; doubled for every further failure of the same key.
const RETRY_BASE: Duration = Duration::from_millis(50);
/// Retries never wait longer than this, and never stop: a controller keeps trying.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A deduplicating, delaying work queue of keys; share it behind an `Arc`.
pub struct WorkQueue<K> {
    /// One lock for all the queue's state; held only for bookkeeping, never across await.
    inner: Mutex<Inner<K>>,
    /// Wakes workers waiting in `next` when a key becomes ready or a deadline moves up.
    notify: Notify,
}

struct Inner<K> {
    ready: VecDeque<K>,
    /// Keys in `ready` (so adding a ready key again is a no-op).
    in_ready: HashSet<K>,
    /// Keys waiting for a deadline; each key at most once, at its earliest deadline.
    deadlines: HashMap<K, Instant>,
    /// The same entries ordered by deadline (the sequence number keeps keys distinct).
    by_deadline: BTreeSet<(Instant, u64)>,
    seq_key: HashMap<u64, K>,
    next_seq: u64,
    key_seq: HashMap<K, u64>,
    /// Keys a worker holds.
    processing: HashSet<K>,
    /// Keys added while held: queued again by `done`.
    dirty: HashSet<K>,
    failures: HashMap<K, u32>,
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            inner: Mutex::new(Inner {
                ready: VecDeque::new(),
                in_ready: HashSet::new(),
                deadlines: HashMap::new(),
                by_deadline: BTreeSet::new(),
                seq_key: HashMap::new(),
                next_seq: 0,
                key_seq: HashMap::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                failures: HashMap::new(),
            }),
            notify: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `key` now (a pending delayed add of it is brought forward).
    pub fn add(&self, key: K) {
        self.inner.lock().make_ready(key);
        self.notify.notify_waiters();
    }

    /// Queues `key` after `delay`, unless it is already queued sooner: adding a key again
    /// within its delay does not postpone it, so a burst is handled once, `delay` after
    /// its first event.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut g = self.inner.lock();
        if g.in_ready.contains(&key) {
            return;
        }
        if g.deadlines.get(&key).is_some_and(|d| *d <= at) {
            return;
        }
        g.remove_waiting(&key);
        g.insert_waiting(key, at);
        drop(g);
        self.notify.notify_waiters();
    }

    /// Queues `key` again after a failure, with exponential backoff per key.
    pub fn retry(&self, key: K) {
        let n = {
            let mut g = self.inner.lock();
            let n = g.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        self.add_after(key, backoff(n));
    }

    /// Forgets the failures of `key` (after a success).
    pub fn forget(&self, key: &K) {
        self.inner.lock().failures.remove(key);
    }

    /// Waits for a ready key and hands it to the caller, who must call `done` with it.
    /// A key is never handed to two callers at once.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registers interest before looking, so an add between the look and the
            // wait is not missed.
            notified.as_mut().enable();
            let wake_at = {
                let mut g = self.inner.lock();
                g.promote(Instant::now());
                if let Some(k) = g.pop_ready() {
                    return k;
                }
                g.by_deadline.first().map(|(at, _)| *at)
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Releases `key` after processing; if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &K) {
        let mut g = self.inner.lock();
        g.processing.remove(key);
        if g.dirty.remove(key) {
            g.make_ready(key.clone());
            drop(g);
            self.notify.notify_waiters();
        }
    }

    /// Keys queued or waiting (not those being processed).
    pub fn len(&self) -> usize {
        let g = self.inner.lock();
        g.ready.len() + g.deadlines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Clone + Eq + Hash> Inner<K> {
    fn make_ready(&mut self, key: K) {
        self.remove_waiting(&key);
        if self.processing.contains(&key) {
            self.dirty.insert(key);
            return;
        }
        if self.in_ready.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    fn insert_waiting(&mut self, key: K, at: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.deadlines.insert(key.clone(), at);
        self.by_deadline.insert((at, seq));
        self.seq_key.insert(seq, key.clone());
        self.key_seq.insert(key, seq);
    }

    fn remove_waiting(&mut self, key: &K) {
        if let Some(at) = self.deadlines.remove(key) {
            if let Some(seq) = self.key_seq.remove(key) {
                self.by_deadline.remove(&(at, seq));
                self.seq_key.remove(&seq);
            }
        }
    }

    /// Moves keys whose deadline has passed to `ready`.
    fn promote(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.by_deadline.first() {
            if at > now {
                break;
            }
            self.by_deadline.pop_first();
            if let Some(key) = self.seq_key.remove(&seq) {
                self.key_seq.remove(&key);
                self.deadlines.remove(&key);
                self.make_ready(key);
            }
        }
    }

    fn pop_ready(&mut self) -> Option<K> {
        let key = self.ready.pop_front()?;
        self.in_ready.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }
}

/// The delay before retry number `n` (1-based): 50 ms, 100 ms, 200 ms, … up to 30 s.
fn backoff(n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(20);
    RETRY_BASE.saturating_mul(1 << shift).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn burst_within_batch_period_is_one_item() {
        let q = WorkQueue::new();
        q.add_after("svc", Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(60)).await;
        // Adding again within the period does not postpone the first deadline.
        q.add_after("svc", Duration::from_millis(100));
        assert_eq!(q.len(), 1);
        let start = Instant::now();
        let k = q.next().await;
        assert_eq!(k, "svc");
        assert_eq!(Instant::now() - start, Duration::from_millis(40));
        q.done(&k);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn add_brings_a_delayed_key_forward() {
        let q = WorkQueue::new();
        q.add_after("a", Duration::from_secs(10));
        q.add("a");
        let start = Instant::now();
        assert_eq!(q.next().await, "a");
        assert_eq!(Instant::now(), start);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn key_added_while_processing_comes_back_after_done() {
        let q = Arc::new(WorkQueue::new());
        q.add(1);
        let k = q.next().await;
        q.add(1);
        // Held by a worker: not handed out again yet.
        let q2 = q.clone();
        let second = tokio::spawn(async move { q2.next().await });
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(!second.is_finished());
        q.done(&k);
        assert_eq!(second.await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_and_forget_resets() {
        let q = WorkQueue::new();
        let mut waits = Vec::new();
        for _ in 0..3 {
            q.retry("k");
            let start = Instant::now();
            let k = q.next().await;
            waits.push(Instant::now() - start);
            q.done(&k);
        }
        assert_eq!(
            waits,
            vec![
                Duration::from_millis(50),
                Duration::from_millis(100),
                Duration::from_millis(200)
            ]
        );
        q.forget(&"k");
        q.retry("k");
        let start = Instant::now();
        q.next().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(50));
        assert_eq!(backoff(100), RETRY_MAX);
    }
}
