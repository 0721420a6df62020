//! Our own writes that the informer caches have not shown yet.
//!
//! A sync decides from the caches. Right after it created a slice, the slice cache may not
//! hold it yet; a second sync in that window would create the same endpoints again. So
//! every write is recorded here with the resourceVersion the API server returned, and a
//! sync of a Service whose cached objects are older than what we wrote waits (retries
//! shortly) instead of acting on the stale view, as Kubernetes's EndpointSlice tracker
//! does. Watch events retire the records; they also tell our own echoes (which need no
//! sync) from other writers' changes (which do).
//!
//! resourceVersions are compared as numbers: Skiff's are store revisions. A version that is
//! not a number counts as 0 (never newer than what we wrote).

use std::collections::HashMap;

/// What we expect the cache to show for one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The object at this resourceVersion or newer.
    AtLeast(u64),
    /// No object; the delete happened at this resourceVersion (0 when unknown).
    Gone(u64),
}

/// Parses a resourceVersion (0 when absent or not a number).
pub fn rv(v: Option<&str>) -> u64 {
    v.and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Expectations per object, keyed by whatever identifies one (namespace, name).
#[derive(Debug)]
pub struct Written<K> {
    expect: HashMap<K, Expect>,
}

impl<K> Default for Written<K> {
    fn default() -> Self {
        Written {
            expect: HashMap::new(),
        }
    }
}

impl<K: Eq + std::hash::Hash + Clone> Written<K> {
    /// Records a write of ours.
    pub fn wrote(&mut self, key: K, e: Expect) {
        self.expect.insert(key, e);
    }

    /// Whether the cached state of `key` (`Some(rv)` present, `None` absent) reflects
    /// our last write to it (true when we have none pending).
    pub fn fresh(&self, key: &K, cached: Option<u64>) -> bool {
        match (self.expect.get(key), cached) {
            (None, _) => true,
            (Some(Expect::AtLeast(want)), Some(have)) => have >= *want,
            (Some(Expect::AtLeast(_)), None) => false,
            (Some(Expect::Gone(_)), None) => true,
            (Some(Expect::Gone(at)), Some(have)) => have > *at && *at > 0,
        }
    }

    /// A watch event for `key` (`Some(rv)` applied, `None` deleted): retires the record
    /// the event satisfies or supersedes. Returns whether the event is our own write
    /// coming back (so no sync is needed for it).
    pub fn observed(&mut self, key: &K, event: Option<u64>) -> bool {
        let Some(e) = self.expect.get(key).copied() else {
            return false;
        };
        let (retire, own) = match (e, event) {
            (Expect::AtLeast(want), Some(have)) => (have >= want, have == want),
            // Deleted by someone else after our write: nothing more to wait for.
            (Expect::AtLeast(_), None) => (true, false),
            (Expect::Gone(_), None) => (true, true),
            // An older event still in flight before our delete: keep waiting.
            (Expect::Gone(at), Some(have)) => (have > at, false),
        };
        if retire {
            self.expect.remove(key);
        }
        own
    }

    /// Whether every record whose key matches `mine` is [`Self::fresh`] given `cached`
    /// (the cached resourceVersion of a key, `None` if absent).
    pub fn all_fresh(&self, mine: impl Fn(&K) -> bool, cached: impl Fn(&K) -> Option<u64>) -> bool {
        self.expect
            .keys()
            .filter(|k| mine(k))
            .all(|k| self.fresh(k, cached(k)))
    }

    pub fn len(&self) -> usize {
        self.expect.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expect.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_not_yet_cached_is_stale_until_observed() {
        let mut w = Written::default();
        assert!(w.fresh(&"s1", None));
        w.wrote("s1", Expect::AtLeast(10));
        assert!(!w.fresh(&"s1", None));
        assert!(!w.fresh(&"s1", Some(9)));
        assert!(w.fresh(&"s1", Some(10)));
        assert!(!w.observed(&"s1", Some(9)), "an older event is not ours");
        assert!(w.observed(&"s1", Some(10)), "our echo");
        assert!(w.is_empty());
    }

    #[test]
    fn newer_foreign_write_retires_and_is_not_own() {
        let mut w = Written::default();
        w.wrote("e", Expect::AtLeast(10));
        assert!(!w.observed(&"e", Some(12)));
        assert!(w.is_empty());
        w.wrote("e", Expect::AtLeast(20));
        // Deleted by another client: we stop waiting for 20.
        assert!(!w.observed(&"e", None));
        assert!(w.fresh(&"e", None));
    }

    #[test]
    fn deletes() {
        let mut w = Written::default();
        w.wrote("s", Expect::Gone(30));
        assert!(
            !w.fresh(&"s", Some(25)),
            "cache still shows the deleted slice"
        );
        assert!(w.fresh(&"s", None));
        assert!(!w.observed(&"s", Some(25)));
        assert_eq!(w.len(), 1);
        assert!(w.observed(&"s", None));
        assert!(w.is_empty());
        // Recreated after our delete by someone else: newer than the delete.
        w.wrote("s", Expect::Gone(30));
        assert!(w.fresh(&"s", Some(31)));
        assert!(!w.observed(&"s", Some(31)));
        assert!(w.is_empty());
        w.wrote("s", Expect::Gone(0));
        w.wrote("t", Expect::AtLeast(5));
        assert!(w.all_fresh(|k| *k == "s", |_| None));
        assert!(!w.all_fresh(|_| true, |_| None));
        assert!(w.all_fresh(|_| true, |k| (*k == "t").then_some(5)));
        assert_eq!(rv(Some("17")), 17);
        assert_eq!(rv(Some("x")), 0);
    }
}
