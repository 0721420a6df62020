//! Results handed from the state machine straight to the request that proposed them.
//!
//! openraft 0.9 returns a write's result through its core task, and that task waits
//! inline for each log flush it starts (`append_to_log`). So under load the result of
//! entry N, applied right after N's flush, sat in the core until the flush of entry N+1
//! had finished too: one more fsync and two more task hops on every write's latency.
//!
//! Instead the leader tags each entry it proposes with an id ([`Request::Tagged`]) and
//! registers a waiter under it; the state machine, on applying a tagged entry, gives the
//! result to the waiter if this process has one and gives openraft only a placeholder.
//! Other members (and this one after a restart) find no waiter and keep the result as
//! usual. Ids are random per process and then sequential, so an entry proposed by an
//! earlier incarnation or another member never meets a waiter of ours.
//!
//! [`Request::Tagged`]: crate::raft::types::Request::Tagged

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::raft::types::ApplyResult;

/// Proposals of this process waiting for their entries to be applied.
pub struct Proposals {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>,
}

impl Default for Proposals {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(rand::random()),
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

/// A registered proposal: its id and where its result arrives. Dropping it withdraws
/// the registration (the state machine then keeps the result for openraft).
pub struct Waiter<'a> {
    proposals: &'a Proposals,
    /// The id to tag the entry with.
    pub id: u64,
    /// Receives the result once the tagged entry is applied.
    pub rx: oneshot::Receiver<ApplyResult>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.proposals.waiting.lock().remove(&self.id);
    }
}

impl Proposals {
    /// Registers a proposal about to be made.
    pub fn register(&self) -> Waiter<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(id, tx);
        Waiter {
            proposals: self,
            id,
            rx,
        }
    }

    /// Hands the result of the entry tagged `id` to its waiter. Returns the result back
    /// when no waiter of this process wants it.
    pub fn deliver(&self, id: u64, result: ApplyResult) -> Option<ApplyResult> {
        let tx = self.waiting.lock().remove(&id);
        match tx {
            Some(tx) => tx.send(result).err(),
            None => Some(result),
        }
    }

    /// Proposals waiting (for tests and metrics).
    pub fn len(&self) -> usize {
        self.waiting.lock().len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_reaches_its_waiter_once_and_a_withdrawn_one_comes_back() {
        let p = Proposals::default();
        let mut w = p.register();
        let r = ApplyResult {
            revision: 7,
            ..Default::default()
        };
        assert_eq!(p.deliver(w.id, r.clone()), None);
        assert_eq!(w.rx.try_recv().unwrap(), r);
        // Delivered once: a replay of the same entry finds no waiter.
        assert_eq!(p.deliver(w.id, r.clone()), Some(r.clone()));
        let id = {
            let w2 = p.register();
            assert_ne!(w2.id, w.id);
            w2.id
        };
        assert!(p.is_empty(), "dropping a waiter withdraws it");
        assert_eq!(p.deliver(id, r.clone()), Some(r));
    }
}
