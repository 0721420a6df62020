//! Taint-based eviction: which pods a node's NoExecute taints evict, and when.
//!
//! A pod on a node with NoExecute taints is deleted
//! - at once if some NoExecute taint is tolerated by none of its tolerations;
//! - else at the earliest of, for each taint, `since + tolerationSeconds` (the smallest
//!   finite `tolerationSeconds` among the tolerations matching that taint; ≤ 0 counts as
//!   0), where `since` is the taint's `timeAdded` (or, without one, when this controller
//!   first saw the taint);
//! - never if every taint is tolerated without `tolerationSeconds`.
//!
//! Kube's taint manager starts the toleration clock when *it* sees the taint; counting
//! from `timeAdded` instead means a newly elected controller resumes the countdown where
//! the previous one was, rather than granting every pod another full toleration.
//!
//! Deadlines wait in [`Timers`], which the controller sleeps on until the earliest one;
//! nothing polls pods.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Taint, Toleration};
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::taints::NO_EXECUTE;

/// Whether `tol` tolerates `taint` (kube's `Toleration.ToleratesTaint`): the effect is
/// empty or equal; an empty key with `Exists` matches every key, otherwise keys are equal;
/// `Exists` matches any value, `Equal` (the default) the same value.
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = tol.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let operator = tol.operator.as_deref().unwrap_or("Equal");
    let key = tol.key.as_deref().unwrap_or("");
    if key.is_empty() {
        // An empty key is only valid with Exists, and then matches every taint.
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// What to do with a pod given its node's NoExecute taints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No NoExecute taint, or all tolerated forever.
    Keep,
    EvictNow,
    /// Evict at this wall-clock time.
    EvictAt(Timestamp),
}

/// The verdict for a pod with `tolerations` on a node with `taints` (only the NoExecute
/// ones are considered). `observed` stands in for a missing `timeAdded`.
pub fn verdict(
    taints: &[Taint],
    tolerations: &[Toleration],
    observed: Timestamp,
    now: Timestamp,
) -> Verdict {
    let mut deadline: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == NO_EXECUTE) {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Verdict::EvictNow;
        }
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue; // tolerated forever
        };
        let since = taint.time_added.as_ref().map_or(observed, |t| t.0);
        let at = since
            .checked_add(Duration::from_secs(seconds.max(0) as u64))
            .unwrap_or(Timestamp::MAX);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    match deadline {
        None => Verdict::Keep,
        Some(d) if d <= now => Verdict::EvictNow,
        Some(d) => Verdict::EvictAt(d),
    }
}

/// The instant on our monotonic clock that corresponds to wall time `at`.
pub fn instant_of(at: Timestamp, now: Timestamp, now_instant: Instant) -> Instant {
    let ahead = at.duration_since(now);
    let ahead = Duration::try_from(ahead).unwrap_or(Duration::ZERO);
    now_instant + ahead
}

/// Keys with deadlines, earliest first; one deadline per key.
///
/// ```text
///   by_key: {a → t3, b → t1}     order: {(t1, b), (t3, a)}
/// ```
pub struct Timers<K> {
    by_key: HashMap<K, Instant>,
    order: BTreeSet<(Instant, K)>,
}

impl<K: Clone + Eq + Hash + Ord> Default for Timers<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Ord> Timers<K> {
    pub fn new() -> Self {
        Timers {
            by_key: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// Sets `key`'s deadline, replacing any earlier one.
    pub fn schedule(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.order.remove(&(old, key.clone()));
        }
        self.order.insert((at, key));
    }

    /// Removes `key`'s deadline; returns whether it had one.
    pub fn cancel(&mut self, key: &K) -> bool {
        match self.by_key.remove(key) {
            Some(at) => {
                self.order.remove(&(at, key.clone()));
                true
            }
            None => false,
        }
    }

    pub fn get(&self, key: &K) -> Option<Instant> {
        self.by_key.get(key).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.order.first().map(|(at, _)| *at)
    }

    /// Removes and returns the keys whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.order.first() {
            if *at > now {
                break;
            }
            let (_, key) = self.order.pop_first().expect("checked non-empty");
            self.by_key.remove(&key);
            due.push(key);
        }
        due
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn taint(key: &str, value: Option<&str>, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.to_string(),
            value: value.map(str::to_string),
            effect: effect.to_string(),
            time_added: added.map(|s| Time(ts(s))),
        }
    }

    fn tol(
        key: Option<&str>,
        op: Option<&str>,
        value: Option<&str>,
        effect: Option<&str>,
        seconds: Option<i64>,
    ) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: op.map(str::to_string),
            value: value.map(str::to_string),
            effect: effect.map(str::to_string),
            toleration_seconds: seconds,
        }
    }

    const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
    const NOT_READY: &str = "node.kubernetes.io/not-ready";

    /// The tolerations the API server adds to every pod.
    fn defaults() -> Vec<Toleration> {
        vec![
            tol(
                Some(NOT_READY),
                Some("Exists"),
                None,
                Some("NoExecute"),
                Some(300),
            ),
            tol(
                Some(UNREACHABLE),
                Some("Exists"),
                None,
                Some("NoExecute"),
                Some(300),
            ),
        ]
    }

    #[test]
    fn toleration_matching_follows_kube() {
        let t = taint("k", Some("v"), "NoExecute", None);
        assert!(tolerates(&tol(Some("k"), None, Some("v"), None, None), &t));
        assert!(tolerates(
            &tol(Some("k"), Some("Equal"), Some("v"), Some("NoExecute"), None),
            &t
        ));
        assert!(!tolerates(
            &tol(Some("k"), Some("Equal"), Some("w"), None, None),
            &t
        ));
        assert!(!tolerates(
            &tol(Some("k"), Some("Equal"), None, None, None),
            &t
        ));
        assert!(tolerates(
            &tol(Some("k"), Some("Exists"), None, None, None),
            &t
        ));
        assert!(!tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoSchedule"), None),
            &t
        ));
        assert!(!tolerates(
            &tol(Some("j"), Some("Exists"), None, None, None),
            &t
        ));
        // Empty key + Exists tolerates everything; empty key + Equal nothing.
        assert!(tolerates(&tol(None, Some("Exists"), None, None, None), &t));
        assert!(!tolerates(&tol(None, None, None, None, None), &t));
        // A valueless taint and an Equal toleration without value match.
        let bare = taint("k", None, "NoExecute", None);
        assert!(tolerates(&tol(Some("k"), None, None, None, None), &bare));
        assert!(tolerates(
            &tol(Some("k"), None, Some(""), None, None),
            &bare
        ));
    }

    #[test]
    fn default_tolerations_evict_300s_after_time_added() {
        let taints = [taint(UNREACHABLE, None, "NoExecute", Some(1000))];
        assert_eq!(
            verdict(&taints, &defaults(), ts(5000), ts(1010)),
            Verdict::EvictAt(ts(1300))
        );
        assert_eq!(
            verdict(&taints, &defaults(), ts(5000), ts(1300)),
            Verdict::EvictNow
        );
        // Without timeAdded the observation time counts.
        let bare = [taint(UNREACHABLE, None, "NoExecute", None)];
        assert_eq!(
            verdict(&bare, &defaults(), ts(2000), ts(2001)),
            Verdict::EvictAt(ts(2300))
        );
    }

    #[test]
    fn an_untolerated_taint_evicts_at_once() {
        let taints = [
            taint(UNREACHABLE, None, "NoExecute", Some(1000)),
            taint("dedicated", Some("db"), "NoExecute", Some(1000)),
        ];
        assert_eq!(
            verdict(&taints, &defaults(), ts(0), ts(1001)),
            Verdict::EvictNow
        );
        assert_eq!(verdict(&taints, &[], ts(0), ts(1001)), Verdict::EvictNow);
    }

    #[test]
    fn no_execute_only_and_forever_tolerations_keep() {
        let no_schedule = [taint("dedicated", None, "NoSchedule", Some(1))];
        assert_eq!(verdict(&no_schedule, &[], ts(0), ts(10)), Verdict::Keep);
        let taints = [taint(UNREACHABLE, None, "NoExecute", Some(1000))];
        let forever = [tol(Some(UNREACHABLE), Some("Exists"), None, None, None)];
        assert_eq!(verdict(&taints, &forever, ts(0), ts(99_999)), Verdict::Keep);
        assert_eq!(verdict(&[], &[], ts(0), ts(10)), Verdict::Keep);
    }

    #[test]
    fn smallest_finite_toleration_and_earliest_taint_win() {
        let taints = [
            taint(UNREACHABLE, None, "NoExecute", Some(1000)),
            taint(NOT_READY, None, "NoExecute", Some(1100)),
        ];
        let mut tols = defaults();
        // A forever toleration does not cancel a finite one for the same taint.
        tols.push(tol(Some(UNREACHABLE), Some("Exists"), None, None, None));
        tols.push(tol(Some(NOT_READY), Some("Exists"), None, None, Some(60)));
        // unreachable: 1000+300; not-ready: 1100+60 → 1160.
        assert_eq!(
            verdict(&taints, &tols, ts(0), ts(1001)),
            Verdict::EvictAt(ts(1160))
        );
        // Negative seconds count as zero.
        let neg = [tol(None, Some("Exists"), None, None, Some(-5))];
        assert_eq!(
            verdict(&taints[..1], &neg, ts(0), ts(999)),
            Verdict::EvictAt(ts(1000))
        );
    }

    #[test]
    fn instants_follow_wall_clock_offsets() {
        let i0 = Instant::now();
        assert_eq!(
            instant_of(ts(130), ts(100), i0),
            i0 + Duration::from_secs(30)
        );
        assert_eq!(instant_of(ts(90), ts(100), i0), i0);
    }

    #[test]
    fn timers_pop_in_deadline_order_and_reschedule_replaces() {
        let i0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = Timers::new();
        t.schedule("a", i0 + s(30));
        t.schedule("b", i0 + s(10));
        t.schedule("c", i0 + s(20));
        t.schedule("a", i0 + s(5));
        assert_eq!(t.len(), 3);
        assert_eq!(t.next(), Some(i0 + s(5)));
        assert!(t.cancel(&"c"));
        assert!(!t.cancel(&"c"));
        assert_eq!(t.pop_due(i0 + s(10)), vec!["a", "b"]);
        assert_eq!(t.pop_due(i0 + s(100)), Vec::<&str>::new());
        assert_eq!(t.next(), None);
        assert_eq!(t.get(&"a"), None);
    }
}
