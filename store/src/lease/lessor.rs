//! In-memory lease bookkeeping: which leases exist, and (on the leader) when each
//! expires.
//!
//! Leases themselves are replicated state (granted and revoked through the raft log, kept
//! in the `lease` column family). Expiry is not: like etcd, only the leader keeps expiry
//! deadlines, refreshes them on keep-alive without writing to the log, and proposes a
//! revocation when a deadline passes. A new leader restarts every lease's full TTL
//! ("TTLs refreshed on leader change"), so a lease never expires early because of a
//! leader change.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Largest TTL a lease may have (etcd: 9,000,000,000 seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A lease as stored in the `lease` column family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The granted TTL in seconds.
    pub ttl: i64,
}

#[derive(Debug)]
struct LeaseState {
    ttl: i64,
    expiry: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    leases: HashMap<i64, LeaseState>,
    /// Expired leases whose revocation was proposed and has not applied yet.
    revoking: HashSet<i64>,
}

/// The lease table of a member.
#[derive(Debug)]
pub struct Lessor {
    inner: Mutex<Inner>,
    /// Whether this member is the leader (and so keeps deadlines); a watch, so a new
    /// leader's requests can wait for the promotion. Changed only under `inner`'s lock,
    /// together with the deadlines.
    primary: tokio::sync::watch::Sender<bool>,
}

impl Default for Lessor {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            primary: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Lessor {
    /// Replaces the table with `leases` (id, ttl) — at start and after a snapshot install.
    pub fn reset(&self, leases: impl IntoIterator<Item = (i64, i64)>) {
        let now = Instant::now();
        let mut g = self.inner.lock();
        g.leases = leases
            .into_iter()
            .map(|(id, ttl)| {
                (
                    id,
                    LeaseState {
                        ttl,
                        expiry: now + secs(ttl),
                    },
                )
            })
            .collect();
        g.revoking.clear();
    }

    /// Whether the lease exists.
    pub fn exists(&self, id: i64) -> bool {
        self.inner.lock().leases.contains_key(&id)
    }

    /// Records an applied grant.
    pub fn granted(&self, id: i64, ttl: i64) {
        let mut g = self.inner.lock();
        g.leases.insert(
            id,
            LeaseState {
                ttl,
                expiry: Instant::now() + secs(ttl),
            },
        );
    }

    /// Records an applied revocation.
    pub fn revoked(&self, id: i64) {
        let mut g = self.inner.lock();
        g.leases.remove(&id);
        g.revoking.remove(&id);
    }

    /// This member became leader: restart every lease's TTL from now.
    pub fn promote(&self) {
        let now = Instant::now();
        let mut g = self.inner.lock();
        g.revoking.clear();
        for l in g.leases.values_mut() {
            l.expiry = now + secs(l.ttl);
        }
        self.primary.send_replace(true);
    }

    /// This member stopped being leader.
    pub fn demote(&self) {
        let mut g = self.inner.lock();
        g.revoking.clear();
        self.primary.send_replace(false);
    }

    /// Whether this member keeps deadlines (is the leader).
    pub fn is_primary(&self) -> bool {
        *self.primary.borrow()
    }

    /// Changes of [`Lessor::is_primary`], to wait for a promotion without polling.
    pub fn watch_primary(&self) -> tokio::sync::watch::Receiver<bool> {
        self.primary.subscribe()
    }

    /// Refreshes a lease's deadline (leader only). Returns its TTL, or `None` if the
    /// lease does not exist or already expired.
    pub fn keep_alive(&self, id: i64) -> Option<i64> {
        let now = Instant::now();
        let mut g = self.inner.lock();
        if g.revoking.contains(&id) {
            return None;
        }
        let l = g.leases.get_mut(&id)?;
        if l.expiry <= now {
            return None;
        }
        l.expiry = now + secs(l.ttl);
        Some(l.ttl)
    }

    /// (remaining seconds, granted TTL) of a lease, leader's view. Remaining is rounded
    /// down and never negative; `None` if the lease does not exist.
    pub fn time_to_live(&self, id: i64) -> Option<(i64, i64)> {
        let now = Instant::now();
        let g = self.inner.lock();
        let l = g.leases.get(&id)?;
        let remaining = l.expiry.saturating_duration_since(now).as_secs() as i64;
        Some((remaining, l.ttl))
    }

    /// Leases past their deadline that are not yet being revoked; marks them as being
    /// revoked. Empty unless this member is the leader.
    pub fn take_expired(&self) -> Vec<i64> {
        let now = Instant::now();
        let mut g = self.inner.lock();
        if !*self.primary.borrow() {
            return Vec::new();
        }
        let expired: Vec<i64> = g
            .leases
            .iter()
            .filter(|(id, l)| l.expiry <= now && !g.revoking.contains(id))
            .map(|(id, _)| *id)
            .collect();
        g.revoking.extend(expired.iter().copied());
        expired
    }

    /// A revocation that was proposed for expiry failed; let it be retried.
    pub fn retry_expired(&self, id: i64) {
        self.inner.lock().revoking.remove(&id);
    }

    /// Every lease id.
    pub fn ids(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.inner.lock().leases.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.inner.lock().leases.len()
    }

    /// Whether there are no leases.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.clamp(0, MAX_LEASE_TTL) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_leader_expires_and_keepalive_extends() {
        let l = Lessor::default();
        l.granted(1, 0);
        l.granted(2, 100);
        assert!(
            l.take_expired().is_empty(),
            "a follower never expires leases"
        );
        l.promote();
        // ttl 0 lease: deadline is now, so it expires; promote restarted it from now.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(l.take_expired(), vec![1]);
        assert!(
            l.take_expired().is_empty(),
            "an expired lease is handed out once"
        );
        assert_eq!(
            l.keep_alive(1),
            None,
            "an expired lease cannot be kept alive"
        );
        assert_eq!(l.keep_alive(2), Some(100));
        let (remaining, granted) = l.time_to_live(2).unwrap();
        assert!(remaining >= 99 && granted == 100);
        l.revoked(1);
        assert!(!l.exists(1) && l.exists(2));
        assert_eq!(l.ids(), vec![2]);
    }
}
