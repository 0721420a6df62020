//! The lock checker: a lock built on a lease and revision fencing.
//!
//! Clients `acquire` a lock (the key is the lock's name; the `ok` completion
//! carries the fence, e.g. the revision at which the lock key was created),
//! `act` on the protected resource under their fence (`ok`: the resource
//! accepted the action), and `release` it. An observer may record `expire`
//! operations when it sees a holder's lease expire (the lock key vanish).
//!
//! A lease-based lock cannot stop a paused holder from acting after its
//! lease expired; the fence is what keeps the resource safe. So the checker
//! flags, per lock:
//!
//! - **duplicate-fence**: two acquisitions granted the same fence (the lock
//!   service gave two holders the same identity); whether their holding
//!   windows overlapped is reported;
//! - **non-monotonic-fence**: an acquisition that began after another was
//!   granted received a lower fence;
//! - **stale-fence**: the resource accepted an action under a fence lower
//!   than one it had already accepted (an action under the higher fence
//!   completed before this one began);
//! - **unheld-fence**: an accepted action under a fence the acting process
//!   was never granted.
//!
//! A holding window lasts from the acquisition's completion to the earliest
//! of its release's invocation and the observed expiry of its fence (or the
//! end of the history). Actions of unknown outcome are not counted as
//! accepted.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::history::{History, HistoryError, Op, Operation, Outcome};
use crate::verdict::{Anomaly, CheckResult, Verdict};

/// One granted acquisition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The process holding the lock.
    pub process: u64,
    /// Its fence.
    pub fence: i64,
    /// Invocation index of the acquire.
    pub acquire_index: u64,
    /// When the acquire was invoked (ns).
    pub requested_at: u64,
    /// When it was granted (ns).
    pub granted_at: u64,
    /// When the holding window ended (ns): release invoked or expiry seen;
    /// `None` if neither happened.
    pub ended_at: Option<u64>,
    /// Whether any action under this hold was accepted.
    pub acted: bool,
}

impl Hold {
    fn overlaps(&self, other: &Hold) -> bool {
        let end = |h: &Hold| h.ended_at.unwrap_or(u64::MAX);
        self.granted_at < end(other) && other.granted_at < end(self)
    }
}

/// Something wrong with a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LockAnomaly {
    /// Several acquisitions got the same fence.
    DuplicateFence {
        /// The lock.
        lock: String,
        /// The fence.
        fence: i64,
        /// The holds.
        holds: Vec<Hold>,
        /// Whether two of their windows overlapped.
        overlapping: bool,
    },
    /// A later acquisition got a lower fence.
    NonMonotonicFence {
        /// The lock.
        lock: String,
        /// The earlier acquisition's fence.
        earlier: i64,
        /// Its acquire's invocation index.
        earlier_index: u64,
        /// The later acquisition's (lower) fence.
        later: i64,
        /// Its acquire's invocation index.
        later_index: u64,
    },
    /// An action under an older fence was accepted after a newer one.
    StaleFence {
        /// The lock.
        lock: String,
        /// The stale fence accepted.
        fence: i64,
        /// Invocation index of that action.
        act_index: u64,
        /// Its process.
        process: u64,
        /// The newer fence already accepted.
        newer_fence: i64,
        /// Invocation index of the newer action.
        newer_act_index: u64,
    },
    /// An accepted action under a fence its process never got.
    UnheldFence {
        /// The lock.
        lock: String,
        /// The fence.
        fence: i64,
        /// Invocation index of the action.
        act_index: u64,
        /// Its process.
        process: u64,
    },
}

impl LockAnomaly {
    /// A short kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            LockAnomaly::DuplicateFence { .. } => "duplicate-fence",
            LockAnomaly::NonMonotonicFence { .. } => "non-monotonic-fence",
            LockAnomaly::StaleFence { .. } => "stale-fence",
            LockAnomaly::UnheldFence { .. } => "unheld-fence",
        }
    }

    fn lock(&self) -> &str {
        match self {
            LockAnomaly::DuplicateFence { lock, .. }
            | LockAnomaly::NonMonotonicFence { lock, .. }
            | LockAnomaly::StaleFence { lock, .. }
            | LockAnomaly::UnheldFence { lock, .. } => lock,
        }
    }

    /// The anomaly in words.
    pub fn describe(&self) -> String {
        match self {
            LockAnomaly::DuplicateFence { fence, holds, overlapping, .. } => format!(
                "fence {fence} granted {} times (processes {:?}){}",
                holds.len(),
                holds.iter().map(|h| h.process).collect::<Vec<_>>(),
                if *overlapping { ", with overlapping holding windows" } else { "" }
            ),
            LockAnomaly::NonMonotonicFence { earlier, earlier_index, later, later_index, .. } => format!(
                "acquire at event {later_index} got fence {later}, lower than fence {earlier} granted \
                 (event {earlier_index}) before it began"
            ),
            LockAnomaly::StaleFence { fence, act_index, process, newer_fence, newer_act_index, .. } => format!(
                "action at event {act_index} by process {process} accepted under fence {fence} after an \
                 action under fence {newer_fence} (event {newer_act_index}) was accepted"
            ),
            LockAnomaly::UnheldFence { fence, act_index, process, .. } => format!(
                "action at event {act_index} by process {process} accepted under fence {fence}, which \
                 it never acquired"
            ),
        }
    }
}

/// The result of the lock checker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockReport {
    /// Invalid if there is any anomaly; unknown if no lock was ever granted.
    pub verdict: Verdict,
    /// Locks checked.
    pub locks: usize,
    /// Acquisitions granted.
    pub holds: usize,
    /// Actions accepted.
    pub accepted_acts: usize,
    /// Actions rejected.
    pub rejected_acts: usize,
    /// Everything wrong.
    pub anomalies: Vec<LockAnomaly>,
}

impl LockReport {
    /// The uniform result (checker `lock`).
    pub fn to_check_result(&self) -> CheckResult {
        let mut r = CheckResult::new("lock", self.verdict);
        r.count("locks", self.locks as u64)
            .count("holds", self.holds as u64)
            .count("accepted-acts", self.accepted_acts as u64)
            .count("rejected-acts", self.rejected_acts as u64);
        let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
        for a in &self.anomalies {
            *by_kind.entry(a.kind()).or_default() += 1;
            r.anomaly(Anomaly::new(a.kind(), Some(a.lock()), a.describe()));
        }
        for (kind, n) in by_kind {
            r.count(kind, n);
        }
        if self.holds == 0 {
            r.note("no lock was ever granted: unknown");
        }
        r.details(self);
        r
    }
}

/// Checks the locks of a history.
///
/// # Errors
/// If the history is malformed (see [`History::operations`]).
pub fn check_history(history: &History) -> Result<LockReport, HistoryError> {
    Ok(check_operations(&history.operations()?))
}

/// Checks the locks of paired operations (`acquire`, `act`, `release`,
/// `expire`; other functions are ignored).
pub fn check_operations(ops: &[Operation]) -> LockReport {
    let mut by_lock: BTreeMap<String, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        if matches!(
            op.invoke,
            Op::Acquire(_) | Op::Act(_) | Op::Release(_) | Op::Expire(_)
        ) {
            by_lock
                .entry(op.key.clone().unwrap_or_default())
                .or_default()
                .push(op);
        }
    }
    let mut report = LockReport {
        verdict: Verdict::Valid,
        locks: by_lock.len(),
        holds: 0,
        accepted_acts: 0,
        rejected_acts: 0,
        anomalies: Vec::new(),
    };
    for (lock, ops) in by_lock {
        check_lock(&lock, &ops, &mut report);
    }
    report.verdict = if !report.anomalies.is_empty() {
        Verdict::Invalid
    } else if report.holds == 0 {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    report
}

fn check_lock(lock: &str, ops: &[&Operation], report: &mut LockReport) {
    // Holds, and when they ended.
    let mut holds: Vec<Hold> = Vec::new();
    let mut expired: HashMap<i64, u64> = HashMap::new();
    for op in ops {
        match (&op.invoke, op.ok_result()) {
            (Op::Acquire(_), Some(Op::Acquire(Some(fence)))) => holds.push(Hold {
                process: op.process,
                fence: *fence,
                acquire_index: op.invoke_index,
                requested_at: op.invoke_time,
                granted_at: op.complete_time.unwrap_or(op.invoke_time),
                ended_at: None,
                acted: false,
            }),
            (Op::Expire(fence), Some(_)) => {
                let at = op.complete_time.unwrap_or(op.invoke_time);
                let e = expired.entry(*fence).or_insert(at);
                *e = (*e).min(at);
            }
            _ => {}
        }
    }
    for op in ops {
        if let Op::Release(fence) = op.invoke {
            for h in holds
                .iter_mut()
                .filter(|h| h.process == op.process && h.fence == fence)
            {
                if op.invoke_time >= h.granted_at {
                    h.ended_at = Some(h.ended_at.map_or(op.invoke_time, |e| e.min(op.invoke_time)));
                }
            }
        }
    }
    for h in &mut holds {
        if let Some(&at) = expired.get(&h.fence) {
            h.ended_at = Some(h.ended_at.map_or(at, |e| e.min(at)));
        }
    }

    // Accepted actions.
    let mut accepted: Vec<&Operation> = Vec::new();
    for op in ops {
        if let Op::Act(fence) = op.invoke {
            match op.outcome {
                Outcome::Ok => {
                    accepted.push(op);
                    let mut held = false;
                    for h in holds
                        .iter_mut()
                        .filter(|h| h.process == op.process && h.fence == fence)
                    {
                        h.acted = true;
                        held = true;
                    }
                    if !held {
                        report.anomalies.push(LockAnomaly::UnheldFence {
                            lock: lock.to_owned(),
                            fence,
                            act_index: op.invoke_index,
                            process: op.process,
                        });
                    }
                }
                Outcome::Fail => report.rejected_acts += 1,
                Outcome::Info => {}
            }
        }
    }
    report.holds += holds.len();
    report.accepted_acts += accepted.len();

    // Duplicate fences.
    let mut by_fence: BTreeMap<i64, Vec<&Hold>> = BTreeMap::new();
    for h in &holds {
        by_fence.entry(h.fence).or_default().push(h);
    }
    for (fence, same) in by_fence.into_iter().filter(|(_, h)| h.len() > 1) {
        let overlapping = same
            .iter()
            .enumerate()
            .any(|(i, a)| same[i + 1..].iter().any(|b| a.overlaps(b)));
        report.anomalies.push(LockAnomaly::DuplicateFence {
            lock: lock.to_owned(),
            fence,
            holds: same.into_iter().cloned().collect(),
            overlapping,
        });
    }

    // Fences must grow with real-time order of acquisitions.
    let mut granted: Vec<&Hold> = holds.iter().collect();
    granted.sort_by_key(|h| h.granted_at);
    let mut by_request: Vec<&Hold> = holds.iter().collect();
    by_request.sort_by_key(|h| h.requested_at);
    let mut best: Option<&Hold> = None;
    let mut next = 0;
    for later in by_request {
        while next < granted.len() && granted[next].granted_at < later.requested_at {
            if best.is_none_or(|b| granted[next].fence > b.fence) {
                best = Some(granted[next]);
            }
            next += 1;
        }
        if let Some(earlier) = best.filter(|b| later.fence < b.fence) {
            report.anomalies.push(LockAnomaly::NonMonotonicFence {
                lock: lock.to_owned(),
                earlier: earlier.fence,
                earlier_index: earlier.acquire_index,
                later: later.fence,
                later_index: later.acquire_index,
            });
        }
    }

    // No stale fence accepted after a newer one.
    let fence_of = |op: &Operation| match op.invoke {
        Op::Act(f) => f,
        _ => i64::MIN,
    };
    let mut completed = accepted.clone();
    completed.sort_by_key(|op| op.complete_time);
    let mut by_start = accepted;
    by_start.sort_by_key(|op| op.invoke_time);
    let mut newest: Option<&Operation> = None;
    let mut next = 0;
    for op in by_start {
        while next < completed.len()
            && completed[next]
                .complete_time
                .is_some_and(|t| t < op.invoke_time)
        {
            if newest.is_none_or(|n| fence_of(completed[next]) > fence_of(n)) {
                newest = Some(completed[next]);
            }
            next += 1;
        }
        if let Some(n) = newest.filter(|n| fence_of(op) < fence_of(n)) {
            report.anomalies.push(LockAnomaly::StaleFence {
                lock: lock.to_owned(),
                fence: fence_of(op),
                act_index: op.invoke_index,
                process: op.process,
                newer_fence: fence_of(n),
                newer_act_index: n.invoke_index,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::history::EventType;
    use crate::simulation::{build, fail, ok, Spec};

    fn acq(f: i64) -> Op {
        Op::Acquire(Some(f))
    }

    fn check(specs: &[Spec]) -> LockReport {
        check_history(&build(specs)).unwrap()
    }

    fn kinds(r: &LockReport) -> Vec<&'static str> {
        r.anomalies.iter().map(LockAnomaly::kind).collect()
    }

    #[test]
    fn fenced_lock_with_a_paused_holder_is_valid() {
        // Process 1's lease expires while it is paused; process 2 takes the
        // lock; 1's late action under the old fence is rejected.
        let r = check(&[
            ok(1, 0, 10, acq(5)),
            ok(1, 20, 30, Op::Act(5)),
            ok(9, 40, 41, Op::Expire(5)),
            ok(2, 35, 50, acq(8)),
            ok(2, 60, 70, Op::Act(8)),
            fail(1, 80, 90, Op::Act(5)),
            ok(2, 100, 110, Op::Release(8)),
        ]);
        assert_eq!(r.verdict, Verdict::Valid, "{:#?}", r.anomalies);
        assert_eq!((r.holds, r.accepted_acts, r.rejected_acts), (2, 2, 1));
        // An old holder acting before the new one did is fine too.
        let r = check(&[
            ok(1, 0, 10, acq(5)),
            ok(2, 35, 50, acq(8)),
            ok(1, 60, 70, Op::Act(5)),
            ok(2, 80, 90, Op::Act(8)),
        ]);
        assert_eq!(r.verdict, Verdict::Valid);
        assert_eq!(
            check_history(&History::new()).unwrap().verdict,
            Verdict::Unknown
        );
    }

    #[test]
    fn stale_fence_accepted_is_invalid() {
        let r = check(&[
            ok(1, 0, 10, acq(5)),
            ok(2, 35, 50, acq(8)),
            ok(2, 60, 70, Op::Act(8)),
            ok(1, 80, 90, Op::Act(5)),
        ]);
        assert_eq!(kinds(&r), ["stale-fence"]);
        assert!(r.anomalies[0].describe().contains("fence 5"));
        // Concurrent actions may be accepted in either order.
        let r = check(&[
            ok(1, 0, 10, acq(5)),
            ok(2, 35, 50, acq(8)),
            ok(2, 60, 90, Op::Act(8)),
            ok(1, 70, 95, Op::Act(5)),
        ]);
        assert_eq!(r.verdict, Verdict::Valid);
    }

    #[test]
    fn duplicate_and_non_monotonic_fences_are_invalid() {
        let r = check(&[
            ok(1, 0, 10, acq(5)),
            ok(2, 20, 30, acq(5)),
            ok(1, 40, 50, Op::Act(5)),
        ]);
        assert_eq!(kinds(&r), ["duplicate-fence"]);
        assert!(matches!(
            r.anomalies[0],
            LockAnomaly::DuplicateFence {
                overlapping: true,
                ..
            }
        ));
        let r = check(&[
            ok(1, 0, 10, acq(5)),
            ok(1, 15, 16, Op::Release(5)),
            ok(2, 20, 30, acq(5)),
        ]);
        assert!(matches!(
            r.anomalies[0],
            LockAnomaly::DuplicateFence {
                overlapping: false,
                ..
            }
        ));

        let r = check(&[
            ok(1, 0, 10, acq(5)),
            ok(1, 12, 13, Op::Release(5)),
            ok(2, 20, 30, acq(4)),
        ]);
        assert_eq!(kinds(&r), ["non-monotonic-fence"]);

        let r = check(&[ok(1, 0, 10, acq(5)), ok(2, 20, 30, Op::Act(5))]);
        assert_eq!(kinds(&r), ["unheld-fence"]);
        let result = r.to_check_result();
        assert_eq!(result.counts["unheld-fence"], 1);
    }

    /// Clients take a lease-based lock, act under its fence a few times and
    /// release it; leases sometimes expire under a (paused) holder.
    /// `broken_resource` accepts any fence; `broken_fences` hands out the
    /// same fence twice now and then.
    fn simulate(seed: u64, steps: usize, broken_resource: bool, broken_fences: bool) -> History {
        #[derive(Clone, Copy, PartialEq)]
        enum St {
            Idle,
            Acquiring,
            Holding(i64, u32),
            Acting(i64, u32),
            Releasing(i64),
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut h = History::new();
        let clients = 4;
        let mut st = vec![St::Idle; clients];
        let mut holder: Option<(usize, i64)> = None;
        let (mut revision, mut max_accepted) = (0i64, i64::MIN);
        let mut t = 0;
        for _ in 0..steps {
            t += rng.random_range(1..10);
            if let Some((_, fence)) = holder.filter(|_| rng.random_bool(0.03)) {
                holder = None;
                h.push(t, 100, EventType::Invoke, Some("l"), Op::Expire(fence));
                h.push(t, 100, EventType::Ok, Some("l"), Op::Expire(fence));
                continue;
            }
            let c = rng.random_range(0..clients);
            let p = c as u64;
            st[c] = match st[c] {
                St::Idle => {
                    h.push(t, p, EventType::Invoke, Some("l"), Op::Acquire(None));
                    St::Acquiring
                }
                St::Acquiring if holder.is_none() => {
                    if !(broken_fences && rng.random_bool(0.2)) {
                        revision += 1;
                    }
                    holder = Some((c, revision));
                    h.push(t, p, EventType::Ok, Some("l"), Op::Acquire(Some(revision)));
                    St::Holding(revision, rng.random_range(1..4))
                }
                St::Acquiring => St::Acquiring,
                St::Holding(f, 0) => {
                    h.push(t, p, EventType::Invoke, Some("l"), Op::Release(f));
                    St::Releasing(f)
                }
                St::Holding(f, n) => {
                    h.push(t, p, EventType::Invoke, Some("l"), Op::Act(f));
                    St::Acting(f, n)
                }
                St::Acting(f, n) => {
                    if f >= max_accepted || broken_resource {
                        max_accepted = max_accepted.max(f);
                        h.push(t, p, EventType::Ok, Some("l"), Op::Act(f));
                    } else {
                        h.push(t, p, EventType::Fail, Some("l"), Op::Act(f));
                    }
                    St::Holding(f, n - 1)
                }
                St::Releasing(f) => {
                    let kind = if holder == Some((c, f)) {
                        holder = None;
                        EventType::Ok
                    } else {
                        EventType::Fail
                    };
                    h.push(t, p, kind, Some("l"), Op::Release(f));
                    St::Idle
                }
            };
        }
        h
    }

    #[test]
    fn generated_histories_and_mutations() {
        let good = simulate(1, 5000, false, false);
        let report = check_history(&good).unwrap();
        assert_eq!(report.verdict, Verdict::Valid, "{:#?}", report.anomalies);
        assert!(
            report.rejected_acts > 0,
            "stale holders must have been fenced off"
        );

        let report = check_history(&simulate(1, 5000, true, false)).unwrap();
        assert_eq!(report.verdict, Verdict::Invalid);
        assert!(kinds(&report).contains(&"stale-fence"));

        let report = check_history(&simulate(1, 5000, false, true)).unwrap();
        assert!(kinds(&report).contains(&"duplicate-fence"));

        // Flip to accepted one rejected action that began after an action
        // under a newer fence was accepted.
        let ops = good.operations().unwrap();
        let fence = |o: &Operation| {
            if let Op::Act(f) = o.invoke {
                f
            } else {
                i64::MIN
            }
        };
        let rejected = ops
            .iter()
            .find(|o| {
                matches!(o.invoke, Op::Act(_))
                    && o.outcome == Outcome::Fail
                    && ops.iter().any(|n| {
                        n.outcome == Outcome::Ok
                            && fence(n) > fence(o)
                            && n.complete_time.is_some_and(|t| t < o.invoke_time)
                    })
            })
            .and_then(|o| o.complete_index)
            .unwrap();
        let mut events = good.events().to_vec();
        events[rejected as usize].kind = EventType::Ok;
        let report = check_history(&History::from_events(events)).unwrap();
        assert_eq!(kinds(&report), ["stale-fence"]);
    }
}
