//! How far the leader's own log appends are durable, for the appends it reported to
//! openraft before syncing them (`docs/store-leader-early-append.md`).
//!
//! The leader's log store reports an append of its own entries done as soon as they are
//! written, so openraft's core goes on to send them to the followers while the flusher
//! thread syncs them — the leader's sync and the replication round overlap, as in etcd.
//! Openraft then counts the leader in the quorum before its copy is on disk, so nothing
//! that follows from a commit may leave the member until the leader's copy is durable:
//! - the state machine applies an entry only once it is durable here (every client
//!   answer, watch event and read comes from applied state), and
//! - an AppendEntries never tells a follower a commit index beyond it (a follower
//!   applies what it hears committed).
//!
//! With both, whatever a client or a follower learned of an entry was on the leader's disk
//! and on a follower's disk: a majority of three, as openraft's own rule gives (a
//! five-member cluster gets the same from any two followers plus the durable leader).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// The durable point of early-reported appends. One per member, shared by the log store
/// (which advances it), the state machine and the network (which wait on it).
#[derive(Debug)]
pub struct LogDurability {
    /// Highest index whose append was reported done before it was synced (0 = none).
    early: AtomicU64,
    /// Highest such index that is synced since.
    synced: watch::Sender<u64>,
}

impl Default for LogDurability {
    fn default() -> Self {
        Self {
            early: AtomicU64::new(0),
            synced: watch::channel(0).0,
        }
    }
}

impl LogDurability {
    /// Records that the entries up to `index` are reported done before their sync. Called
    /// before the report, so a waiter for any of them sees it.
    pub fn reported_early(&self, index: u64) {
        self.early.fetch_max(index, Ordering::AcqRel);
    }

    /// Records that the early-reported entries up to `index` are synced.
    pub fn synced(&self, index: u64) {
        self.synced.send_if_modified(|s| {
            let moved = index > *s;
            *s = (*s).max(index);
            moved
        });
    }

    /// Whether every early-reported entry at or below `index` is synced (entries that
    /// were synced before they were reported always are).
    pub fn is_durable(&self, index: u64) -> bool {
        *self.synced.borrow() >= self.target(index)
    }

    /// Waits until [`LogDurability::is_durable`] holds for `index`.
    pub async fn wait(&self, index: u64) {
        let target = self.target(index);
        if *self.synced.borrow() >= target {
            return;
        }
        let mut rx = self.synced.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we borrow it.
        let _ = rx.wait_for(|s| *s >= target).await;
    }

    fn target(&self, index: u64) -> u64 {
        index.min(self.early.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn entries_never_reported_early_are_durable_at_once() {
        let d = LogDurability::default();
        assert!(d.is_durable(100));
        d.wait(100).await;
        d.reported_early(10);
        d.synced(10);
        assert!(d.is_durable(100), "beyond the early reports nothing waits");
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_its_entry_is_synced_not_before() {
        let d = Arc::new(LogDurability::default());
        d.reported_early(7);
        assert!(d.is_durable(0));
        assert!(!d.is_durable(5));
        let w = tokio::spawn({
            let d = d.clone();
            async move { d.wait(5).await }
        });
        d.synced(4);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!w.is_finished(), "synced up to 4 only");
        d.synced(6);
        tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("woken")
            .unwrap();
        assert!(!d.is_durable(7));
        d.synced(3);
        assert!(d.is_durable(6), "the synced point never moves back");
    }
}
