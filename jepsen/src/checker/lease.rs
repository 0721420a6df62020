//! The lease checker: keys attached to a lease vanish only after the lease
//! ended (expired or was revoked), and they do vanish once it has.
//!
//! The history has, per lease, a `lease-grant` (the `ok` completion carries
//! the lease id and the granted TTL), `lease-put`s of unique keys attached
//! to it, `lease-keep-alive`s (the `ok` completion carries the TTL the
//! server returned; `0` or less means "lease not found"), at most a few
//! `lease-revoke`s, sometimes a client `delete` of one of its keys, and
//! `read`s of single keys (`ok` with `null`: absent; with a value: present).
//!
//! # Time
//!
//! All times are the harness's monotonic clock. The server's TTL clock runs
//! on the same machine (same rate); what is unknown is *when* within a
//! request's invoke..completion window the server acted. So:
//!
//! - **Earliest legal end.** A grant or keep-alive acknowledged with TTL
//!   `t` was applied by the server at some instant `s` no earlier than the
//!   client's invocation `i` (the server cannot act on a request before it
//!   is sent), and the lease was alive at `s` (renewing an ended lease
//!   answers "not found"); from `s` the lease lives at least `t` more. So
//!   the lease cannot end before `max(i + t)` over its acknowledged
//!   renewals — with no margin: using the invocation (not the completion)
//!   time already gives the server every benefit of the doubt. It can end
//!   earlier only through a revoke, at the earliest when the first revoke
//!   that may have happened (`ok` or `info`) was invoked. A renewal that
//!   completed after the read still counts: it proves the lease was alive
//!   until `s`.
//! - **Premature absence.** A read whose invocation came after its key's
//!   put was acknowledged, that observes the key absent and *completed*
//!   before the earliest legal end (the read takes effect at or before its
//!   completion), is an anomaly — unless the client itself may have deleted
//!   the key by then (a `delete` that did not fail, invoked before the read
//!   completed). A keep-alive answered "not found" before the earliest legal
//!   end is a premature expiry.
//! - **Latest legal end.** After a revoke was acknowledged, or a keep-alive
//!   answered "not found" (etcd answers it only once the expired lease's
//!   revocation is done), linearizable reads must see the keys gone. Without
//!   those, a lease that is no longer renewed ends at most `t` after its
//!   last renewal was applied — at the latest its completion (an
//!   unacknowledged renewal counts as applied at its completion, when the
//!   client closed its stream) — plus the time the leader takes to notice
//!   and revoke it through the log. A leader change re-arms every lease's
//!   full TTL (etcd's `Promote`, plus an election timeout), and leader
//!   changes happen during faults. So the checker allows
//!   `last renewal completion + t + grace` (grace: `grace_ttls × t +
//!   grace_fixed`, by default `2 × t + 1 s` — the election timeout), and
//!   when a fault window starts before that deadline, the deadline moves to
//!   the window's end `+ t + grace`. A read *invoked* after the latest legal
//!   end that observes the key present is an anomaly.
//!
//! Reads of keys whose put or lease grant is not acknowledged are not
//! judged for absence; presence is judged for every key a put that did not
//! fail attached to a known lease.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::history::{History, HistoryError, Op, Operation, Outcome};
use crate::verdict::{Anomaly, CheckResult, Verdict};

const NS_PER_S: u64 = 1_000_000_000;

/// How much time the checker allows a lease to end in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseOptions {
    /// Grace after the latest possible end of the TTL, in multiples of the
    /// lease's TTL.
    pub grace_ttls: u64,
    /// Grace added to that, in ns (the election timeout by default).
    pub grace_fixed_ns: u64,
    /// Fault windows `(start, end)` in ns: a leader may change in them, and
    /// a new leader re-arms every lease.
    pub fault_windows: Vec<(u64, u64)>,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            grace_ttls: 2,
            grace_fixed_ns: NS_PER_S,
            fault_windows: Vec::new(),
        }
    }
}

/// What the history says about one lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTimes {
    /// The lease id.
    pub lease: i64,
    /// The grant's key (the lease's label).
    pub label: String,
    /// The TTL in ns (the largest the server granted or returned).
    pub ttl_ns: u64,
    /// When the grant was invoked.
    pub granted_invoke: u64,
    /// Acknowledged keep-alives (with a positive TTL).
    pub keep_alives: usize,
    /// The earliest instant the lease may have ended (ns), revokes aside.
    pub earliest_expiry: u64,
    /// The first invocation of a revoke that may have happened.
    pub revoke_invoked: Option<u64>,
    /// The first acknowledgement of a revoke.
    pub revoke_acked: Option<u64>,
    /// The first completion of a keep-alive that found the lease gone.
    pub not_found_at: Option<u64>,
    /// The completion of the last renewal that may have been applied;
    /// `None` if one never completed (no latest end then).
    pub last_renewal_end: Option<u64>,
    /// After this instant the keys must be gone (`None`: unbounded).
    pub must_be_gone_after: Option<u64>,
}

impl LeaseTimes {
    /// The earliest legal end: expiry or the first revoke invocation.
    pub fn earliest_end(&self) -> u64 {
        self.revoke_invoked
            .map_or(self.earliest_expiry, |r| r.min(self.earliest_expiry))
    }
}

/// Something wrong with a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LeaseAnomaly {
    /// A key was observed absent before its lease could have ended.
    PrematureAbsence {
        /// The key.
        key: String,
        /// Its lease.
        lease: i64,
        /// When its put was acknowledged.
        put_acked: u64,
        /// The read's invocation index.
        read_index: u64,
        /// The read's invocation and completion times.
        read_invoked: u64,
        /// When the read completed.
        read_completed: u64,
        /// The earliest legal end of the lease.
        earliest_end: u64,
    },
    /// A keep-alive found the lease gone before it could have ended.
    PrematureExpiry {
        /// The lease.
        lease: i64,
        /// The keep-alive's invocation index.
        keep_alive_index: u64,
        /// When it completed.
        completed: u64,
        /// The earliest legal end of the lease.
        earliest_end: u64,
    },
    /// A key was observed present after its lease must have ended.
    PresentAfterEnd {
        /// The key.
        key: String,
        /// Its lease.
        lease: i64,
        /// What ended it: `revoke acknowledged`, `keep-alive not found` or
        /// `ttl + grace elapsed`.
        cause: String,
        /// The read's invocation index.
        read_index: u64,
        /// When the read was invoked.
        read_invoked: u64,
        /// When the keys had to be gone.
        gone_after: u64,
    },
}

impl LeaseAnomaly {
    /// A short kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            LeaseAnomaly::PrematureAbsence { .. } => "premature-absence",
            LeaseAnomaly::PrematureExpiry { .. } => "premature-expiry",
            LeaseAnomaly::PresentAfterEnd { .. } => "present-after-end",
        }
    }

    fn key(&self) -> String {
        match self {
            LeaseAnomaly::PrematureAbsence { key, .. }
            | LeaseAnomaly::PresentAfterEnd { key, .. } => key.clone(),
            LeaseAnomaly::PrematureExpiry { lease, .. } => format!("lease {lease}"),
        }
    }

    /// The anomaly in words (times in ms since the start).
    pub fn describe(&self) -> String {
        let ms = |ns: &u64| format!("{:.3} ms", *ns as f64 / 1e6);
        match self {
            LeaseAnomaly::PrematureAbsence {
                key,
                lease,
                put_acked,
                read_index,
                read_invoked,
                read_completed,
                earliest_end,
            } => format!(
                "key {key:?} of lease {lease} (put acknowledged at {}) read absent by event \
                 {read_index} (invoked {}, completed {}) before the lease could end at {}",
                ms(put_acked),
                ms(read_invoked),
                ms(read_completed),
                ms(earliest_end)
            ),
            LeaseAnomaly::PrematureExpiry {
                lease,
                keep_alive_index,
                completed,
                earliest_end,
            } => format!(
                "keep-alive of lease {lease} (event {keep_alive_index}) answered not found at {}, \
                 before the lease could end at {}",
                ms(completed),
                ms(earliest_end)
            ),
            LeaseAnomaly::PresentAfterEnd {
                key,
                lease,
                cause,
                read_index,
                read_invoked,
                gone_after,
            } => format!(
                "key {key:?} of lease {lease} read present by event {read_index} invoked at {}, \
                 after the keys had to be gone at {} ({cause})",
                ms(read_invoked),
                ms(gone_after)
            ),
        }
    }
}

/// The result of the lease checker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseReport {
    /// Invalid if there is any anomaly; unknown if no read was judged.
    pub verdict: Verdict,
    /// Leases granted.
    pub leases: usize,
    /// Keys attached by acknowledged puts.
    pub keys: usize,
    /// Acknowledged keep-alives with a positive TTL.
    pub keep_alives: usize,
    /// Acknowledged revokes.
    pub revokes: usize,
    /// Reads that saw a key present / absent.
    pub reads_present: usize,
    /// Reads that saw a key absent.
    pub reads_absent: usize,
    /// Reads judged (the key's lease known).
    pub reads_judged: usize,
    /// Every lease's times.
    pub times: Vec<LeaseTimes>,
    /// Everything wrong.
    pub anomalies: Vec<LeaseAnomaly>,
}

impl LeaseReport {
    /// The uniform result (checker `lease`).
    pub fn to_check_result(&self) -> CheckResult {
        let mut r = CheckResult::new("lease", self.verdict);
        r.count("leases", self.leases as u64)
            .count("keys", self.keys as u64)
            .count("keep-alives", self.keep_alives as u64)
            .count("revokes", self.revokes as u64)
            .count("reads-present", self.reads_present as u64)
            .count("reads-absent", self.reads_absent as u64)
            .count("reads-judged", self.reads_judged as u64);
        let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
        for a in &self.anomalies {
            *by_kind.entry(a.kind()).or_default() += 1;
            r.anomaly(Anomaly::new(a.kind(), Some(&a.key()), a.describe()));
        }
        for (kind, n) in by_kind {
            r.count(kind, n);
        }
        if self.reads_judged == 0 {
            r.note("no read of a key of a known lease: unknown");
        }
        r.details(self);
        r
    }
}

/// Checks a history.
///
/// # Errors
/// If the history is malformed.
pub fn check_history(history: &History, opts: &LeaseOptions) -> Result<LeaseReport, HistoryError> {
    Ok(check_operations(&history.operations()?, opts))
}

fn secs_to_ns(s: i64) -> u64 {
    u64::try_from(s).unwrap_or(0).saturating_mul(NS_PER_S)
}

/// A key attached to a lease.
struct Attached {
    lease: i64,
    /// When its put was acknowledged (`None`: outcome unknown).
    acked: Option<u64>,
}

/// Checks paired operations.
pub fn check_operations(ops: &[Operation], opts: &LeaseOptions) -> LeaseReport {
    // Leases from acknowledged grants.
    let mut leases: HashMap<i64, LeaseTimes> = HashMap::new();
    for op in ops {
        if let Some(Op::LeaseGrant(g)) = op.ok_result() {
            let (Some(id), Some(ttl)) = (g.lease, g.granted_ttl) else {
                continue;
            };
            let ttl_ns = secs_to_ns(ttl);
            leases.insert(
                id,
                LeaseTimes {
                    lease: id,
                    label: op.key.clone().unwrap_or_default(),
                    ttl_ns,
                    granted_invoke: op.invoke_time,
                    earliest_expiry: op.invoke_time.saturating_add(ttl_ns),
                    last_renewal_end: op.complete_time,
                    ..LeaseTimes::default()
                },
            );
        }
    }
    let mut anomalies = Vec::new();
    let mut revokes = 0;
    // Renewals, revokes, not-found answers.
    let mut not_found: Vec<(i64, u64, u64)> = Vec::new();
    for op in ops {
        match (&op.invoke, op.outcome) {
            (Op::LeaseKeepAlive(ka), outcome) if outcome != Outcome::Fail => {
                let Some(l) = leases.get_mut(&ka.lease) else {
                    continue;
                };
                let returned = match op.ok_result() {
                    Some(Op::LeaseKeepAlive(done)) => done.ttl,
                    _ => None,
                };
                match (outcome, returned) {
                    (Outcome::Ok, Some(ttl)) if ttl <= 0 => {
                        let at = op.complete_time.unwrap_or(op.invoke_time);
                        l.not_found_at = Some(l.not_found_at.map_or(at, |t| t.min(at)));
                        not_found.push((ka.lease, op.invoke_index, at));
                    }
                    (Outcome::Ok, Some(ttl)) => {
                        let ttl_ns = secs_to_ns(ttl);
                        l.ttl_ns = l.ttl_ns.max(ttl_ns);
                        l.keep_alives += 1;
                        l.earliest_expiry =
                            l.earliest_expiry.max(op.invoke_time.saturating_add(ttl_ns));
                        l.last_renewal_end = l
                            .last_renewal_end
                            .zip(op.complete_time)
                            .map(|(a, b)| a.max(b));
                    }
                    _ => {
                        // Unknown outcome: may have renewed up to its
                        // completion; never completed: unbounded.
                        l.last_renewal_end = l
                            .last_renewal_end
                            .zip(op.complete_time)
                            .map(|(a, b)| a.max(b));
                    }
                }
            }
            (Op::LeaseRevoke(id), outcome) if outcome != Outcome::Fail => {
                let Some(l) = leases.get_mut(id) else {
                    continue;
                };
                let t = op.invoke_time;
                l.revoke_invoked = Some(l.revoke_invoked.map_or(t, |r| r.min(t)));
                if outcome == Outcome::Ok {
                    revokes += 1;
                    if let Some(c) = op.complete_time {
                        l.revoke_acked = Some(l.revoke_acked.map_or(c, |r| r.min(c)));
                    }
                }
            }
            _ => {}
        }
    }
    // The latest legal end.
    let mut windows = opts.fault_windows.clone();
    windows.sort_unstable();
    for l in leases.values_mut() {
        let grace = opts
            .grace_ttls
            .saturating_mul(l.ttl_ns)
            .saturating_add(opts.grace_fixed_ns);
        let expiry = l.last_renewal_end.map(|end| {
            let mut deadline = end.saturating_add(l.ttl_ns).saturating_add(grace);
            for &(start, stop) in &windows {
                if start > deadline {
                    break;
                }
                deadline = deadline.max(stop.saturating_add(l.ttl_ns).saturating_add(grace));
            }
            deadline
        });
        l.must_be_gone_after = [expiry, l.revoke_acked, l.not_found_at]
            .into_iter()
            .flatten()
            .min();
    }
    for (lease, index, at) in not_found {
        if let Some(l) = leases.get(&lease) {
            if at < l.earliest_end() {
                anomalies.push(LeaseAnomaly::PrematureExpiry {
                    lease,
                    keep_alive_index: index,
                    completed: at,
                    earliest_end: l.earliest_end(),
                });
            }
        }
    }
    // Keys and client deletes.
    let mut keys: HashMap<&str, Attached> = HashMap::new();
    let mut deleted: HashMap<&str, u64> = HashMap::new();
    for op in ops {
        let Some(key) = op.key.as_deref() else {
            continue;
        };
        match (&op.invoke, op.outcome) {
            (Op::LeasePut(lease), outcome) if outcome != Outcome::Fail => {
                let acked = (outcome == Outcome::Ok)
                    .then_some(op.complete_time)
                    .flatten();
                keys.insert(
                    key,
                    Attached {
                        lease: *lease,
                        acked,
                    },
                );
            }
            (Op::Delete(_), outcome) if outcome != Outcome::Fail => {
                let t = op.invoke_time;
                deleted
                    .entry(key)
                    .and_modify(|d| *d = (*d).min(t))
                    .or_insert(t);
            }
            _ => {}
        }
    }
    let (mut reads_present, mut reads_absent, mut reads_judged) = (0, 0, 0);
    for op in ops {
        let (Some(key), Some(Op::Read(value)), Some(done)) =
            (op.key.as_deref(), op.ok_result(), op.complete_time)
        else {
            continue;
        };
        match value {
            Some(_) => reads_present += 1,
            None => reads_absent += 1,
        }
        let Some(attached) = keys.get(key) else {
            continue;
        };
        let Some(l) = leases.get(&attached.lease) else {
            continue;
        };
        reads_judged += 1;
        match value {
            None => {
                let Some(acked) = attached.acked else {
                    continue;
                };
                let deleted_by_client = deleted.get(key).is_some_and(|&d| d <= done);
                if op.invoke_time > acked && done < l.earliest_end() && !deleted_by_client {
                    anomalies.push(LeaseAnomaly::PrematureAbsence {
                        key: key.to_owned(),
                        lease: l.lease,
                        put_acked: acked,
                        read_index: op.invoke_index,
                        read_invoked: op.invoke_time,
                        read_completed: done,
                        earliest_end: l.earliest_end(),
                    });
                }
            }
            Some(_) => {
                let Some(gone) = l.must_be_gone_after else {
                    continue;
                };
                if op.invoke_time > gone {
                    let cause = if Some(gone) == l.revoke_acked {
                        "revoke acknowledged"
                    } else if Some(gone) == l.not_found_at {
                        "keep-alive not found"
                    } else {
                        "ttl + grace elapsed"
                    };
                    anomalies.push(LeaseAnomaly::PresentAfterEnd {
                        key: key.to_owned(),
                        lease: l.lease,
                        cause: cause.to_owned(),
                        read_index: op.invoke_index,
                        read_invoked: op.invoke_time,
                        gone_after: gone,
                    });
                }
            }
        }
    }
    let verdict = if !anomalies.is_empty() {
        Verdict::Invalid
    } else if reads_judged == 0 {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    let mut times: Vec<LeaseTimes> = leases.into_values().collect();
    times.sort_by_key(|l| (l.granted_invoke, l.lease));
    LeaseReport {
        verdict,
        leases: times.len(),
        keys: keys.values().filter(|a| a.acked.is_some()).count(),
        keep_alives: times.iter().map(|l| l.keep_alives).sum(),
        revokes,
        reads_present,
        reads_absent,
        reads_judged,
        times,
        anomalies,
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::history::{EventType, Grant, KeepAlive};

    const S: u64 = NS_PER_S;
    const MS: u64 = 1_000_000;

    /// Builds histories with explicit times; every operation gets its own
    /// process so operations may overlap freely.
    #[derive(Default)]
    struct B {
        events: Vec<(u64, u64, EventType, String, Op)>,
        next: u64,
    }

    impl B {
        fn op(&mut self, key: &str, inv: Op, at: u64, kind: EventType, done: Op, end: u64) {
            let p = self.next;
            self.next += 1;
            self.events
                .push((at, p, EventType::Invoke, key.to_owned(), inv));
            self.events.push((end, p, kind, key.to_owned(), done));
        }
        fn grant(&mut self, label: &str, lease: i64, ttl: i64, at: u64, end: u64) {
            let g = Grant {
                ttl,
                lease: None,
                granted_ttl: None,
            };
            let done = Grant {
                lease: Some(lease),
                granted_ttl: Some(ttl),
                ..g
            };
            self.op(
                label,
                Op::LeaseGrant(g),
                at,
                EventType::Ok,
                Op::LeaseGrant(done),
                end,
            );
        }
        fn put(&mut self, key: &str, lease: i64, at: u64, end: u64) {
            self.op(
                key,
                Op::LeasePut(lease),
                at,
                EventType::Ok,
                Op::LeasePut(lease),
                end,
            );
        }
        fn keep_alive(&mut self, lease: i64, ttl: i64, at: u64, end: u64) {
            let ka = KeepAlive { lease, ttl: None };
            let done = KeepAlive {
                lease,
                ttl: Some(ttl),
            };
            self.op(
                "ka",
                Op::LeaseKeepAlive(ka),
                at,
                EventType::Ok,
                Op::LeaseKeepAlive(done),
                end,
            );
        }
        fn revoke(&mut self, lease: i64, kind: EventType, at: u64, end: u64) {
            self.op(
                "rv",
                Op::LeaseRevoke(lease),
                at,
                kind,
                Op::LeaseRevoke(lease),
                end,
            );
        }
        fn delete(&mut self, key: &str, lease: i64, at: u64, end: u64) {
            self.op(
                key,
                Op::Delete(lease),
                at,
                EventType::Ok,
                Op::Delete(lease),
                end,
            );
        }
        fn read(&mut self, key: &str, present: bool, at: u64, end: u64) {
            self.op(
                key,
                Op::Read(None),
                at,
                EventType::Ok,
                Op::Read(present.then_some(1)),
                end,
            );
        }
        fn history(&self) -> History {
            let mut events = self.events.clone();
            events.sort_by_key(|e| e.0);
            let mut h = History::new();
            for (t, p, kind, key, op) in events {
                h.push(t, p, kind, Some(&key), op);
            }
            h
        }
        fn check(&self, opts: &LeaseOptions) -> LeaseReport {
            check_history(&self.history(), opts).unwrap()
        }
    }

    fn kinds(r: &LeaseReport) -> Vec<&'static str> {
        r.anomalies.iter().map(LeaseAnomaly::kind).collect()
    }

    /// Lease 7, TTL 2 s, granted at 0, key `a` put at 0.1 s, kept alive
    /// once at 1.5 s: the earliest end is 3.5 s; the latest (grace 2 × 2 s
    /// + 1 s after the keep-alive's completion at 1.6 s + 2 s) is 8.6 s.
    fn base() -> B {
        let mut b = B::default();
        b.grant("w0-0", 7, 2, 0, 50 * MS);
        b.put("w0-0/a", 7, 100 * MS, 150 * MS);
        b.keep_alive(7, 2, 1500 * MS, 1600 * MS);
        b.read("w0-0/a", true, S, S + 10 * MS);
        b
    }

    #[test]
    fn a_lease_that_lives_its_ttl_and_then_vanishes_is_valid() {
        let mut b = base();
        b.read("w0-0/a", true, 3 * S, 3 * S + 10 * MS);
        b.read("w0-0/a", false, 3600 * MS, 3700 * MS);
        b.read("w0-0/a", false, 9 * S, 9 * S + MS);
        let r = b.check(&LeaseOptions::default());
        assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.anomalies);
        assert_eq!((r.leases, r.keys, r.keep_alives), (1, 1, 1));
        assert_eq!(r.times[0].earliest_end(), 3500 * MS);
        assert_eq!(r.times[0].must_be_gone_after, Some(8600 * MS));
        let c = r.to_check_result();
        assert_eq!(c.counts["reads-judged"], 4);
        assert_eq!(c.counts["reads-present"], 2);
    }

    #[test]
    fn absence_before_the_ttl_ran_out_is_premature() {
        let mut b = base();
        // Completed at 3.4 s < 3.5 s: invoke + TTL of the keep-alive.
        b.read("w0-0/a", false, 3300 * MS, 3400 * MS);
        let r = b.check(&LeaseOptions::default());
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(kinds(&r), ["premature-absence"]);
        let c = r.to_check_result();
        assert!(c.anomalies[0].message.contains("w0-0/a"), "{c:?}");
        assert!(c.anomalies[0].message.contains("lease 7"));
        // A read completing just at the earliest end may linearize there.
        let mut b = base();
        b.read("w0-0/a", false, 3300 * MS, 3500 * MS);
        assert_eq!(b.check(&LeaseOptions::default()).verdict, Verdict::Valid);
    }

    #[test]
    fn a_read_begun_before_the_put_was_acknowledged_proves_nothing() {
        let mut b = base();
        b.read("w0-0/a", false, 90 * MS, 200 * MS);
        assert_eq!(b.check(&LeaseOptions::default()).verdict, Verdict::Valid);
    }

    #[test]
    fn revokes_and_client_deletes_end_keys_early() {
        let mut b = base();
        b.revoke(7, EventType::Info, 2 * S, 4 * S);
        b.read("w0-0/a", false, 2 * S, 2100 * MS);
        let r = b.check(&LeaseOptions::default());
        assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.anomalies);

        // A failed revoke did nothing.
        let mut b = base();
        b.revoke(7, EventType::Fail, 2 * S, 2010 * MS);
        b.read("w0-0/a", false, 2 * S, 2100 * MS);
        assert_eq!(
            kinds(&b.check(&LeaseOptions::default())),
            ["premature-absence"]
        );

        let mut b = base();
        b.delete("w0-0/a", 7, 2 * S, 2050 * MS);
        b.read("w0-0/a", false, 2 * S, 2100 * MS);
        assert_eq!(b.check(&LeaseOptions::default()).verdict, Verdict::Valid);
        // Another key's delete does not excuse it.
        let mut b = base();
        b.put("w0-0/b", 7, 100 * MS, 150 * MS);
        b.delete("w0-0/b", 7, 2 * S, 2050 * MS);
        b.read("w0-0/a", false, 2 * S, 2100 * MS);
        assert_eq!(
            kinds(&b.check(&LeaseOptions::default())),
            ["premature-absence"]
        );
    }

    #[test]
    fn presence_after_an_acknowledged_revoke_is_invalid() {
        let mut b = base();
        b.revoke(7, EventType::Ok, 2 * S, 2100 * MS);
        // Concurrent with the revoke: either order is fine.
        b.read("w0-0/a", true, 2050 * MS, 2200 * MS);
        assert_eq!(b.check(&LeaseOptions::default()).verdict, Verdict::Valid);
        b.read("w0-0/a", true, 2200 * MS, 2300 * MS);
        let r = b.check(&LeaseOptions::default());
        assert_eq!(kinds(&r), ["present-after-end"]);
        assert!(r.to_check_result().anomalies[0]
            .message
            .contains("revoke acknowledged"));
    }

    #[test]
    fn presence_long_after_the_last_renewal_is_invalid_unless_a_fault_intervened() {
        let mut b = base();
        b.read("w0-0/a", true, 8 * S, 8 * S + MS);
        assert_eq!(b.check(&LeaseOptions::default()).verdict, Verdict::Valid);
        b.read("w0-0/a", true, 8700 * MS, 8800 * MS);
        let r = b.check(&LeaseOptions::default());
        assert_eq!(kinds(&r), ["present-after-end"]);
        // A fault from 5 s to 7 s: a new leader may re-arm the lease, so
        // the deadline moves to 7 s + 2 s + 5 s.
        let faulty = LeaseOptions {
            fault_windows: vec![(5 * S, 7 * S)],
            ..LeaseOptions::default()
        };
        let r = b.check(&faulty);
        assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.anomalies);
        assert_eq!(r.times[0].must_be_gone_after, Some(14 * S));
        // A fault that began after the deadline does not.
        let late = LeaseOptions {
            fault_windows: vec![(8650 * MS, 9 * S)],
            ..LeaseOptions::default()
        };
        assert_eq!(b.check(&late).verdict, Verdict::Invalid);
        // A larger grace does.
        let generous = LeaseOptions {
            grace_ttls: 3,
            ..LeaseOptions::default()
        };
        assert_eq!(b.check(&generous).verdict, Verdict::Valid);
    }

    #[test]
    fn an_unfinished_keep_alive_leaves_the_lease_unbounded() {
        let mut b = base();
        let p = 1000;
        b.events.push((
            2 * S,
            p,
            EventType::Invoke,
            "ka".into(),
            Op::LeaseKeepAlive(KeepAlive {
                lease: 7,
                ttl: None,
            }),
        ));
        b.read("w0-0/a", true, 60 * S, 60 * S + MS);
        let r = b.check(&LeaseOptions::default());
        assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.anomalies);
        assert_eq!(r.times[0].must_be_gone_after, None);
    }

    #[test]
    fn not_found_too_early_is_premature_and_ends_the_lease() {
        let mut b = base();
        b.keep_alive(7, 0, 2 * S, 2100 * MS);
        let r = b.check(&LeaseOptions::default());
        assert_eq!(kinds(&r), ["premature-expiry"]);

        let mut b = base();
        b.keep_alive(7, 0, 4 * S, 4100 * MS);
        b.read("w0-0/a", false, 4200 * MS, 4300 * MS);
        assert_eq!(b.check(&LeaseOptions::default()).verdict, Verdict::Valid);
        b.read("w0-0/a", true, 4200 * MS, 4300 * MS);
        let r = b.check(&LeaseOptions::default());
        assert_eq!(kinds(&r), ["present-after-end"]);
        assert!(r.to_check_result().anomalies[0]
            .message
            .contains("keep-alive not found"));
    }

    #[test]
    fn nothing_judged_is_unknown() {
        let mut b = B::default();
        b.grant("w0-0", 7, 2, 0, 50 * MS);
        b.read("other", false, S, 2 * S);
        assert_eq!(b.check(&LeaseOptions::default()).verdict, Verdict::Unknown);
    }

    /// A simulated correct lease service: each lease really ends at an
    /// instant between its earliest and latest legal end, and every read
    /// answers by that instant at a random point of its window. Such
    /// histories must be valid (also after a JSON-lines round trip); a
    /// single mutated read must make them invalid.
    fn simulated(seed: u64) -> (B, Vec<(usize, u64, u64, u64)>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut b = B::default();
        // (read event position in b.events, lease earliest end, latest end, actual end)
        let mut reads = Vec::new();
        for lease in 0..6i64 {
            let t0 = rng.random_range(0..5 * S);
            let ttl = rng.random_range(2..=4i64);
            let ttl_ns = ttl as u64 * S;
            let label = format!("w0-{lease}");
            let key = format!("{label}/k");
            b.grant(&label, lease, ttl, t0, t0 + 20 * MS);
            b.put(&key, lease, t0 + 30 * MS, t0 + 60 * MS);
            let mut earliest = t0 + ttl_ns;
            let mut last_end = t0 + 20 * MS;
            let mut t = t0 + 100 * MS;
            for _ in 0..rng.random_range(0..4) {
                t += rng.random_range(ttl_ns / 4..ttl_ns / 2);
                b.keep_alive(lease, ttl, t, t + 10 * MS);
                earliest = t + ttl_ns;
                last_end = t + 10 * MS;
            }
            let latest = last_end + 3 * ttl_ns + S;
            // (actual end, earliest legal end, when the keys must be gone)
            let (end, earliest_end, gone) = if rng.random_bool(0.3) {
                let at = last_end + rng.random_range(0..ttl_ns);
                b.revoke(lease, EventType::Ok, at, at + 20 * MS);
                (at + rng.random_range(0..20 * MS), at, at + 20 * MS)
            } else {
                (rng.random_range(earliest..latest), earliest, latest)
            };
            for _ in 0..30 {
                let at = rng.random_range(t0 + 70 * MS..gone + 2 * S);
                let done = at + rng.random_range(MS..200 * MS);
                let point = rng.random_range(at..=done);
                reads.push((b.events.len() + 1, earliest_end, gone, at));
                b.read(&key, point < end, at, done);
            }
        }
        (b, reads)
    }

    #[test]
    fn simulated_correct_histories_are_valid_and_mutations_are_caught() {
        let (mut caught_absent, mut caught_present) = (0, 0);
        for seed in 0..40 {
            let (b, reads) = simulated(seed);
            let h = b.history();
            let mut buf = Vec::new();
            h.write_jsonl(&mut buf).unwrap();
            let back = History::read_jsonl(&buf[..]).unwrap();
            let r = check_history(&back, &LeaseOptions::default()).unwrap();
            assert_eq!(r.verdict, Verdict::Valid, "seed {seed}: {:?}", r.anomalies);
            for &(pos, earliest, latest, at) in &reads {
                let (_, _, _, _, Op::Read(value)) = &b.events[pos] else {
                    unreachable!("reads are where they were pushed");
                };
                let done = b.events[pos].0;
                let mut m = B {
                    events: b.events.clone(),
                    next: b.next,
                };
                if value.is_some() && done < earliest {
                    m.events[pos].4 = Op::Read(None);
                    let r = m.check(&LeaseOptions::default());
                    assert!(
                        kinds(&r).contains(&"premature-absence"),
                        "seed {seed}: read at {at}..{done}, earliest {earliest}: {:?}",
                        r.times
                    );
                    caught_absent += 1;
                } else if value.is_none() && at > latest {
                    m.events[pos].4 = Op::Read(Some(1));
                    let r = m.check(&LeaseOptions::default());
                    assert!(kinds(&r).contains(&"present-after-end"), "seed {seed}");
                    caught_present += 1;
                }
            }
        }
        assert!(
            caught_absent > 100 && caught_present > 100,
            "{caught_absent} {caught_present}"
        );
    }
}
