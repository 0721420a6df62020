//! When the sync loop syncs: bursts of changes coalesced, a periodic full resync, and
//! backoff after failures. Pure time arithmetic on instants the caller passes in, so it
//! is tested without sleeping.
//!
//! ```text
//! change  change change                       (full_due)
//!   │       │    │                                │
//!   ├─ debounce ─┤► incremental sync              ► full sync, next full_due = now + resync
//! ```
//! A failed sync schedules a full one after a backoff (1 s doubling to 30 s) and nothing
//! earlier; changes meanwhile are covered by that retry.

use std::time::Duration;

use tokio::time::Instant;

use super::sync::SyncMode;

/// How long after the first of a burst of changes the sync runs.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The sync loop's timetable.
#[derive(Debug)]
pub(crate) struct Schedule {
    debounce: Duration,
    resync: Duration,
    /// When the first change not yet synced arrived.
    dirty_since: Option<Instant>,
    /// When the next full resync is due.
    full_due: Instant,
    /// After a failure: when to retry (with a full sync), and how many failed in a row.
    retry_at: Option<Instant>,
    failures: u32,
}

impl Schedule {
    /// A schedule whose first sync, due at once, is full.
    pub(crate) fn new(now: Instant, debounce: Duration, resync: Duration) -> Schedule {
        Schedule {
            debounce,
            resync,
            dirty_since: None,
            full_due: now,
            retry_at: None,
            failures: 0,
        }
    }

    /// Something changed at `now`.
    pub(crate) fn changed(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
    }

    /// When the next sync is due.
    pub(crate) fn deadline(&self) -> Instant {
        if let Some(retry) = self.retry_at {
            return retry;
        }
        match self.dirty_since {
            Some(since) => self.full_due.min(since + self.debounce),
            None => self.full_due,
        }
    }

    /// The sync to run at `now`, if one is due.
    pub(crate) fn due(&self, now: Instant) -> Option<SyncMode> {
        if now < self.deadline() {
            return None;
        }
        if self.retry_at.is_some() || now >= self.full_due {
            Some(SyncMode::Full)
        } else {
            Some(SyncMode::Incremental)
        }
    }

    /// A sync of `mode` finished at `now`. It covered every change seen so far: the caches
    /// it read are only updated by the loop that also reports changes here.
    pub(crate) fn finished(&mut self, now: Instant, mode: SyncMode, ok: bool) {
        self.dirty_since = None;
        if ok {
            self.failures = 0;
            self.retry_at = None;
            if mode == SyncMode::Full {
                self.full_due = now + self.resync;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            let backoff = MIN_BACKOFF
                .saturating_mul(1 << self.failures.min(6).saturating_sub(1))
                .min(MAX_BACKOFF);
            self.retry_at = Some(now + backoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_coalesce_and_full_resyncs_recur() {
        let resync = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, DEBOUNCE, resync);
        assert_eq!(s.due(t0), Some(SyncMode::Full));
        s.finished(t0, SyncMode::Full, true);
        assert_eq!(s.deadline(), t0 + resync);

        let t1 = t0 + Duration::from_secs(1);
        for i in 0..10 {
            s.changed(t1 + Duration::from_millis(i * 3));
        }
        assert_eq!(s.deadline(), t1 + DEBOUNCE);
        assert_eq!(s.due(t1 + Duration::from_millis(10)), None);
        let t2 = t1 + DEBOUNCE;
        assert_eq!(s.due(t2), Some(SyncMode::Incremental));
        s.finished(t2, SyncMode::Incremental, true);
        assert_eq!(s.deadline(), t0 + resync);
        assert_eq!(s.due(t0 + resync), Some(SyncMode::Full));
    }

    #[test]
    fn failures_back_off_and_retry_full() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, DEBOUNCE, Duration::from_secs(30));
        s.finished(t0, SyncMode::Full, false);
        assert_eq!(s.deadline(), t0 + Duration::from_secs(1));
        s.changed(t0);
        assert_eq!(
            s.due(t0 + DEBOUNCE),
            None,
            "a change does not cut the backoff short"
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.due(t1), Some(SyncMode::Full));
        s.finished(t1, SyncMode::Full, false);
        assert_eq!(s.deadline(), t1 + Duration::from_secs(2));
        for _ in 0..10 {
            s.finished(t1, SyncMode::Full, false);
        }
        assert_eq!(s.deadline(), t1 + MAX_BACKOFF);
        s.finished(t1, SyncMode::Full, true);
        assert_eq!(s.deadline(), t1 + Duration::from_secs(30));
    }
}
