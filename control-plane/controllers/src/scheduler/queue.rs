//! The scheduling queue, after kube-scheduler's `PriorityQueue`: three places a waiting
//! pod can be, plus "in flight" while a decision or binding is under way.
//!
//! ```text
//!            add ─────────────► active ◄──────── backoff expired (flush)
//!                    (priority, then FIFO)  ▲                 ▲
//!                                 pop │     │ move (node / pod │
//!                                     ▼     │  event), or 60 s │
//!                                in flight ─┼─► unschedulable ─┘ (to backoff first
//!                                     │  no fit                    if still backing off)
//!                       bind error    └────────────────────────► backoff (1 s × 2^n, ≤ 10 s)
//! ```
//!
//! A pod that fit nowhere waits in `unschedulable` until something that could help
//! happens (a node added or changed, a pod deleted or finished) or until it has waited
//! [`QueueConfig::unschedulable_timeout`]. If such an event happened while the pod was in
//! flight, it goes to backoff instead: the decision may have missed the change.
//!
//! Pure: time is passed in. Heap entries are invalidated lazily by a generation number.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::pod::{PodInfo, ScheduledCondition};

/// Backoff and flush timings.
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    /// Backoff after the first failed attempt; doubles with each further one.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A pod waits at most this long in `unschedulable` without an event.
    pub unschedulable_timeout: Duration,
    /// How often `unschedulable` is scanned for pods past the timeout.
    pub unschedulable_scan: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            unschedulable_timeout: Duration::from_secs(60),
            unschedulable_scan: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

struct Entry {
    pod: Arc<PodInfo>,
    condition: Option<ScheduledCondition>,
    /// Decisions made for the pod so far.
    attempts: u32,
    place: Place,
    /// Matches the heap item that currently represents the entry.
    generation: u64,
    backoff_until: Instant,
    unschedulable_since: Instant,
    /// `move_cycle` when the pod was popped.
    popped_cycle: u64,
}

#[derive(PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    seq: u64,
    generation: u64,
    uid: Arc<str>,
}

impl Ord for ActiveItem {
    /// Higher priority first, then earlier arrival.
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// A pod handed out for a decision.
#[derive(Debug, Clone)]
pub struct Popped {
    pub pod: Arc<PodInfo>,
    pub condition: Option<ScheduledCondition>,
    pub attempts: u32,
}

/// Pods waiting to be scheduled, keyed by UID.
pub struct SchedulingQueue {
    config: QueueConfig,
    entries: HashMap<Arc<str>, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    unschedulable: HashSet<Arc<str>>,
    next_generation: u64,
    next_seq: u64,
    /// Bumped by every move event.
    move_cycle: u64,
    next_scan: Option<Instant>,
}

impl SchedulingQueue {
    pub fn new(config: QueueConfig) -> SchedulingQueue {
        SchedulingQueue {
            config,
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: HashSet::new(),
            next_generation: 0,
            next_seq: 0,
            move_cycle: 0,
            next_scan: None,
        }
    }

    /// Pods known to the queue, in flight included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    /// UIDs of all pods known to the queue (for reconciling after a relist).
    pub fn uids(&self) -> Vec<Arc<str>> {
        self.entries.keys().cloned().collect()
    }

    /// Adds a pending pod or updates one already known. An update that changes what the
    /// scheduler decides on moves an unschedulable pod back (it may fit now). Returns
    /// whether a pod became active.
    pub fn add(
        &mut self,
        pod: Arc<PodInfo>,
        condition: Option<ScheduledCondition>,
        now: Instant,
    ) -> bool {
        if let Some(e) = self.entries.get_mut(&pod.uid) {
            let changed = *e.pod != *pod;
            let reprioritised = e.pod.priority != pod.priority;
            e.pod = pod.clone();
            e.condition = condition;
            return match e.place {
                Place::Unschedulable if changed => {
                    self.unschedulable.remove(&pod.uid);
                    self.requeue(&pod.uid, now)
                }
                Place::Active if reprioritised => {
                    self.push_active(&pod.uid);
                    true
                }
                _ => false,
            };
        }
        let uid = pod.uid.clone();
        self.entries.insert(
            uid.clone(),
            Entry {
                pod,
                condition,
                attempts: 0,
                place: Place::Active,
                generation: 0,
                backoff_until: now,
                unschedulable_since: now,
                popped_cycle: 0,
            },
        );
        self.push_active(&uid);
        true
    }

    /// Forgets a pod (deleted, bound, or no longer ours).
    pub fn remove(&mut self, uid: &str) {
        if self.entries.remove(uid).is_some() {
            self.unschedulable.remove(uid);
        }
    }

    /// Takes the next pod to decide on, after moving expired backoffs to active. The pod
    /// stays known (in flight) until [`Self::done`], [`Self::unschedulable`] or
    /// [`Self::error`].
    pub fn pop(&mut self, now: Instant) -> Option<Popped> {
        self.flush(now);
        while let Some(item) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&item.uid) else {
                continue;
            };
            if e.place != Place::Active || e.generation != item.generation {
                continue;
            }
            e.place = Place::InFlight;
            e.attempts += 1;
            e.popped_cycle = self.move_cycle;
            return Some(Popped {
                pod: e.pod.clone(),
                condition: e.condition.clone(),
                attempts: e.attempts,
            });
        }
        None
    }

    /// The pod was bound: the queue is done with it.
    pub fn done(&mut self, uid: &str) {
        self.remove(uid);
    }

    /// The pod fit nowhere. Ignored unless the pod is in flight (it may have been deleted
    /// meanwhile).
    pub fn unschedulable(&mut self, uid: &str, now: Instant) {
        let cycle = self.move_cycle;
        let backoff = self.backoff_for_attempts_of(uid);
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        if e.place != Place::InFlight {
            return;
        }
        e.backoff_until = now + backoff;
        if cycle > e.popped_cycle {
            self.push_backoff(uid);
        } else {
            e.place = Place::Unschedulable;
            e.unschedulable_since = now;
            self.unschedulable.insert(e.pod.uid.clone());
            if self.next_scan.is_none() {
                self.next_scan = Some(now + self.config.unschedulable_scan);
            }
        }
    }

    /// The decision could not be carried out (binding failed): retry after backoff.
    pub fn error(&mut self, uid: &str, now: Instant) {
        let backoff = self.backoff_for_attempts_of(uid);
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        if e.place != Place::InFlight {
            return;
        }
        e.backoff_until = now + backoff;
        self.push_backoff(uid);
    }

    /// Something changed that may let unschedulable pods fit: moves those for which
    /// `relevant` holds to backoff (if still backing off) or active. Returns whether a
    /// pod became active.
    pub fn move_unschedulable(
        &mut self,
        now: Instant,
        relevant: impl Fn(&PodInfo) -> bool,
    ) -> bool {
        self.move_cycle += 1;
        let uids: Vec<Arc<str>> = self
            .unschedulable
            .iter()
            .filter(|u| self.entries.get(*u).is_some_and(|e| relevant(&e.pod)))
            .cloned()
            .collect();
        let mut activated = false;
        for uid in uids {
            self.unschedulable.remove(&uid);
            activated |= self.requeue(&uid, now);
        }
        activated
    }

    /// Moves expired backoffs to active, and (every scan interval) pods that have waited
    /// in unschedulable past the timeout. Returns whether a pod became active.
    pub fn flush(&mut self, now: Instant) -> bool {
        let mut activated = false;
        while let Some(Reverse((at, generation, _))) = self.backoff.peek() {
            if *at > now {
                break;
            }
            let generation = *generation;
            let Some(Reverse((_, _, uid))) = self.backoff.pop() else {
                break;
            };
            if self
                .entries
                .get(&uid)
                .is_some_and(|e| e.place == Place::Backoff && e.generation == generation)
            {
                self.push_active(&uid);
                activated = true;
            }
        }
        if self.next_scan.is_some_and(|t| t <= now) {
            let timeout = self.config.unschedulable_timeout;
            let stale: Vec<Arc<str>> = self
                .unschedulable
                .iter()
                .filter(|u| {
                    self.entries
                        .get(*u)
                        .is_some_and(|e| now.duration_since(e.unschedulable_since) >= timeout)
                })
                .cloned()
                .collect();
            for uid in stale {
                self.unschedulable.remove(&uid);
                activated |= self.requeue(&uid, now);
            }
            self.next_scan =
                (!self.unschedulable.is_empty()).then(|| now + self.config.unschedulable_scan);
        }
        activated
    }

    /// When [`Self::flush`] next has work: the earliest backoff expiry or unschedulable
    /// scan.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let backoff = self.backoff.peek().map(|Reverse((at, _, _))| *at);
        match (backoff, self.next_scan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn backoff_for_attempts_of(&self, uid: &str) -> Duration {
        let attempts = self.entries.get(uid).map_or(1, |e| e.attempts.max(1));
        backoff_duration(&self.config, attempts)
    }

    /// To backoff if the pod's backoff has not expired, else to active.
    fn requeue(&mut self, uid: &str, now: Instant) -> bool {
        let Some(e) = self.entries.get(uid) else {
            return false;
        };
        if e.backoff_until > now {
            self.push_backoff(uid);
            false
        } else {
            self.push_active(uid);
            true
        }
    }

    fn push_backoff(&mut self, uid: &str) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        e.place = Place::Backoff;
        e.generation = generation;
        self.backoff
            .push(Reverse((e.backoff_until, generation, e.pod.uid.clone())));
    }

    fn push_active(&mut self, uid: &str) {
        self.next_generation += 1;
        self.next_seq += 1;
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        e.place = Place::Active;
        e.generation = self.next_generation;
        self.active.push(ActiveItem {
            priority: e.pod.priority,
            seq: self.next_seq,
            generation: self.next_generation,
            uid: e.pod.uid.clone(),
        });
    }
}

/// `initial × 2^(attempts-1)`, at most `max`.
pub fn backoff_duration(config: &QueueConfig, attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(20);
    config
        .initial_backoff
        .saturating_mul(1u32 << shift)
        .min(config.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::tests::pod;

    fn with_priority(uid: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            priority,
            ..(*pod(uid, 1, 1, None)).clone()
        })
    }

    fn q() -> SchedulingQueue {
        SchedulingQueue::new(QueueConfig::default())
    }

    fn uid(p: Option<Popped>) -> Option<String> {
        p.map(|p| p.pod.uid.to_string())
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pops_by_priority_then_arrival() {
        let now = Instant::now();
        let mut q = q();
        q.add(with_priority("a", 0), None, now);
        q.add(with_priority("b", 10), None, now);
        q.add(with_priority("c", 0), None, now);
        q.add(with_priority("d", 10), None, now);
        let order: Vec<_> = (0..4).filter_map(|_| uid(q.pop(now))).collect();
        assert_eq!(order, ["b", "d", "a", "c"]);
        assert_eq!(uid(q.pop(now)), None);
        assert_eq!(q.len(), 4, "in flight pods stay known");
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let c = QueueConfig::default();
        let d: Vec<u64> = (1..=6).map(|a| backoff_duration(&c, a).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff_duration(&c, u32::MAX), 10 * S);
    }

    #[test]
    fn errors_retry_after_backoff() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a", 1, 1, None), None, t0);
        assert_eq!(uid(q.pop(t0)), Some("a".into()));
        q.error("a", t0);
        assert_eq!(uid(q.pop(t0 + S / 2)), None, "still backing off");
        assert_eq!(q.next_wakeup(), Some(t0 + S));
        let p = q.pop(t0 + S).unwrap();
        assert_eq!(p.attempts, 2);
        q.error("a", t0 + S);
        assert_eq!(uid(q.pop(t0 + 2 * S)), None, "second backoff is 2 s");
        assert_eq!(uid(q.pop(t0 + 3 * S)), Some("a".into()));
    }

    #[test]
    fn unschedulable_waits_for_an_event() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a", 1, 1, None), None, t0);
        q.pop(t0).unwrap();
        q.unschedulable("a", t0);
        assert_eq!(
            uid(q.pop(t0 + 5 * S)),
            None,
            "no event, no retry before the timeout"
        );
        assert!(q.move_unschedulable(t0 + 5 * S, |_| true));
        assert_eq!(uid(q.pop(t0 + 5 * S)), Some("a".into()));
    }

    #[test]
    fn an_event_during_backoff_waits_out_the_backoff() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a", 1, 1, None), None, t0);
        q.pop(t0).unwrap();
        q.unschedulable("a", t0);
        assert!(
            !q.move_unschedulable(t0 + S / 10, |_| true),
            "to backoff, not active"
        );
        assert_eq!(uid(q.pop(t0 + S / 2)), None);
        assert_eq!(uid(q.pop(t0 + S)), Some("a".into()));
    }

    #[test]
    fn move_predicate_selects_pods() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(with_priority("a", 1), None, t0);
        q.add(with_priority("b", 0), None, t0);
        q.pop(t0).unwrap();
        q.pop(t0).unwrap();
        q.unschedulable("a", t0);
        q.unschedulable("b", t0);
        q.move_unschedulable(t0 + 2 * S, |p| p.priority == 0);
        assert_eq!(uid(q.pop(t0 + 2 * S)), Some("b".into()));
        assert_eq!(uid(q.pop(t0 + 2 * S)), None);
    }

    #[test]
    fn an_event_while_in_flight_sends_the_pod_push_backoff() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a", 1, 1, None), None, t0);
        q.pop(t0).unwrap();
        q.move_unschedulable(t0, |_| true); // e.g. a node was added mid-decision
        q.unschedulable("a", t0);
        assert_eq!(
            uid(q.pop(t0 + S)),
            Some("a".into()),
            "retried after backoff, not parked"
        );
    }

    #[test]
    fn periodic_flush_retries_after_the_timeout() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a", 1, 1, None), None, t0);
        q.pop(t0).unwrap();
        q.unschedulable("a", t0);
        assert_eq!(q.next_wakeup(), Some(t0 + 5 * S));
        let mut t = t0;
        let mut popped_at = None;
        while t < t0 + 120 * S {
            t += S;
            if q.pop(t).is_some() {
                popped_at = Some(t.duration_since(t0));
                break;
            }
        }
        assert_eq!(popped_at, Some(60 * S));
    }

    #[test]
    fn updates_move_unschedulable_pods_only_when_something_changed() {
        let t0 = Instant::now();
        let mut q = q();
        let p = pod("a", 1, 1, None);
        q.add(p.clone(), None, t0);
        q.pop(t0).unwrap();
        q.unschedulable("a", t0);
        let cond = ScheduledCondition {
            status: "False".into(),
            reason: "Unschedulable".into(),
            message: "m".into(),
        };
        assert!(
            !q.add(p.clone(), Some(cond.clone()), t0 + 2 * S),
            "a status-only update"
        );
        assert_eq!(uid(q.pop(t0 + 2 * S)), None);
        let mut relabelled = (*p).clone();
        relabelled.labels.insert("x".into(), "y".into());
        assert!(q.add(Arc::new(relabelled), None, t0 + 2 * S));
        let popped = q.pop(t0 + 2 * S).unwrap();
        assert_eq!(popped.pod.labels.get("x").map(|s| s.as_str()), Some("y"));
    }

    #[test]
    fn removed_pods_are_never_popped_or_requeued() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a", 1, 1, None), None, t0);
        q.add(pod("b", 1, 1, None), None, t0);
        q.remove("a");
        assert_eq!(uid(q.pop(t0)), Some("b".into()));
        q.remove("b"); // deleted while in flight
        q.error("b", t0);
        q.unschedulable("b", t0);
        assert!(q.is_empty());
        assert_eq!(uid(q.pop(t0 + 100 * S)), None);
        // Done after a successful bind.
        q.add(pod("c", 1, 1, None), None, t0);
        q.pop(t0).unwrap();
        q.done("c");
        assert!(!q.contains("c"));
    }

    #[test]
    fn in_flight_updates_are_kept_for_the_retry() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a", 1, 1, None), None, t0);
        q.pop(t0).unwrap();
        assert!(
            !q.add(pod("a", 2, 2, None), None, t0),
            "in flight: not re-added"
        );
        assert_eq!(uid(q.pop(t0)), None);
        q.error("a", t0);
        assert_eq!(q.pop(t0 + S).unwrap().pod.request.cpu, 2);
    }
}
