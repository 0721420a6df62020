//! The counter checker: counters incremented by optimistic read-modify-write
//! (read the value and its `mod_revision`, write value + 1 in a Txn guarded
//! by that revision, retry on conflict), as an API server updates objects.
//!
//! The history holds `increment` operations (each adds one; an `ok`
//! completion may carry the value it wrote) and `read` operations of the
//! counters (key = counter; a missing key reads as 0). Per counter:
//!
//! - the **final value** (the last `ok` read) must lie between the number of
//!   acknowledged increments and that plus the increments of unknown outcome;
//!   below is **lost**, above is **doubled** (applied more often than
//!   invoked);
//! - every read must lie between the increments acknowledged before it began
//!   and those invoked before it ended;
//! - two acknowledged increments must not report writing the same value (a
//!   lost update: both read the same revision and both succeeded).
//!
//! `fail` increments (conflicts after the last retry) count for nothing. A
//! counter without any read is unknown.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::history::{History, HistoryError, Op, Operation, Outcome};
use crate::verdict::{Anomaly, CheckResult, Verdict};

/// A read outside the bounds the increments around it allow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRead {
    /// Invocation index of the read.
    pub read_index: u64,
    /// The value read.
    pub value: i64,
    /// Increments acknowledged before the read began.
    pub lower: u64,
    /// Increments invoked before the read ended.
    pub upper: u64,
}

/// Two or more acknowledged increments that wrote the same value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateWrite {
    /// The value.
    pub value: i64,
    /// Invocation indices of the increments.
    pub increments: Vec<u64>,
}

/// The check of one counter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterKeyReport {
    /// The counter (key; empty if none).
    pub key: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Increments acknowledged.
    pub acknowledged: u64,
    /// Increments of unknown outcome.
    pub unknown: u64,
    /// Increments failed.
    pub failed: u64,
    /// The last read, if any.
    pub final_value: Option<i64>,
    /// How many acknowledged increments the final value lacks.
    pub lost: u64,
    /// By how much the final value exceeds every increment invoked.
    pub doubled: u64,
    /// Reads out of bounds.
    pub bad_reads: Vec<BadRead>,
    /// Values written by more than one acknowledged increment.
    pub duplicate_writes: Vec<DuplicateWrite>,
}

/// The check of every counter in a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterReport {
    /// Invalid if a counter is, else unknown if one is (or there is none),
    /// else valid.
    pub verdict: Verdict,
    /// Per counter, by key.
    pub counters: Vec<CounterKeyReport>,
}

impl CounterReport {
    /// The uniform result (checker `counter`).
    pub fn to_check_result(&self) -> CheckResult {
        let mut r = CheckResult::new("counter", self.verdict);
        let sum = |f: fn(&CounterKeyReport) -> u64| self.counters.iter().map(f).sum::<u64>();
        r.count("counters", self.counters.len() as u64)
            .count("acknowledged", sum(|c| c.acknowledged))
            .count("unknown", sum(|c| c.unknown))
            .count("failed", sum(|c| c.failed))
            .count("lost", sum(|c| c.lost))
            .count("doubled", sum(|c| c.doubled))
            .count("bad-reads", sum(|c| c.bad_reads.len() as u64))
            .count("duplicate-writes", sum(|c| c.duplicate_writes.len() as u64));
        for c in &self.counters {
            let key = Some(c.key.as_str());
            let range = format!(
                "final value {} but {} increments acknowledged and {} of unknown outcome",
                c.final_value
                    .map_or_else(|| "?".to_owned(), |v| v.to_string()),
                c.acknowledged,
                c.unknown
            );
            if c.lost > 0 {
                r.anomaly(Anomaly::new(
                    "lost",
                    key,
                    format!("{} increments lost: {range}", c.lost),
                ));
            }
            if c.doubled > 0 {
                r.anomaly(Anomaly::new(
                    "doubled",
                    key,
                    format!("{} increments too many: {range}", c.doubled),
                ));
            }
            for b in c.bad_reads.iter().take(10) {
                r.anomaly(Anomaly::new(
                    "bad-read",
                    key,
                    format!(
                        "read at event {} returned {}, outside [{}, {}]",
                        b.read_index, b.value, b.lower, b.upper
                    ),
                ));
            }
            for d in c.duplicate_writes.iter().take(10) {
                r.anomaly(Anomaly::new(
                    "duplicate-write",
                    key,
                    format!(
                        "increments at events {:?} all wrote {}",
                        d.increments, d.value
                    ),
                ));
            }
            if c.final_value.is_none() {
                r.note(format!("counter {:?} was never read: unknown", c.key));
            }
        }
        r.details(self);
        r
    }
}

/// Checks the counters of a history.
///
/// # Errors
/// If the history is malformed (see [`History::operations`]).
pub fn check_history(history: &History) -> Result<CounterReport, HistoryError> {
    Ok(check_operations(&history.operations()?))
}

/// Checks the counters of paired operations (`increment` and `read`; other
/// functions are ignored).
pub fn check_operations(ops: &[Operation]) -> CounterReport {
    let mut by_key: BTreeMap<String, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        if matches!(op.invoke, Op::Increment(_) | Op::Read(_)) {
            by_key
                .entry(op.key.clone().unwrap_or_default())
                .or_default()
                .push(op);
        }
    }
    let counters: Vec<CounterKeyReport> = by_key
        .into_iter()
        .map(|(key, ops)| check_counter(key, &ops))
        .collect();
    let verdict = counters
        .iter()
        .map(|c| c.verdict)
        .reduce(Verdict::and)
        .unwrap_or(Verdict::Unknown);
    CounterReport { verdict, counters }
}

fn check_counter(key: String, ops: &[&Operation]) -> CounterKeyReport {
    let increments: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|o| matches!(o.invoke, Op::Increment(_)) && o.outcome != Outcome::Fail)
        .collect();
    let count = |o: Outcome| {
        ops.iter()
            .filter(|op| matches!(op.invoke, Op::Increment(_)) && op.outcome == o)
            .count() as u64
    };
    let (acknowledged, unknown, failed) = (
        count(Outcome::Ok),
        count(Outcome::Info),
        count(Outcome::Fail),
    );

    // Sorted completion times of acknowledged increments, and sorted
    // invocation times of possibly-applied ones, for the read bounds.
    let mut acked_at: Vec<u64> = increments
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter_map(|o| o.complete_time)
        .collect();
    acked_at.sort_unstable();
    let mut invoked_at: Vec<u64> = increments.iter().map(|o| o.invoke_time).collect();
    invoked_at.sort_unstable();

    let mut bad_reads = Vec::new();
    let mut last_read: Option<(&Operation, i64)> = None;
    for op in ops {
        let Some(Op::Read(value)) = (matches!(op.invoke, Op::Read(_)))
            .then(|| op.ok_result())
            .flatten()
        else {
            continue;
        };
        let value = value.unwrap_or(0);
        let begun = op.invoke_time;
        let ended = op.complete_time.unwrap_or(u64::MAX);
        let lower = acked_at.partition_point(|&t| t < begun) as u64;
        let upper = invoked_at.partition_point(|&t| t <= ended) as u64;
        if value < 0 || (value as u64) < lower || (value as u64) > upper {
            bad_reads.push(BadRead {
                read_index: op.invoke_index,
                value,
                lower,
                upper,
            });
        }
        if last_read.is_none_or(|(r, _)| r.complete_index < op.complete_index) {
            last_read = Some((op, value));
        }
    }

    let mut writes: HashMap<i64, Vec<u64>> = HashMap::new();
    for op in &increments {
        if let Some(Op::Increment(Some(v))) = op.ok_result() {
            writes.entry(*v).or_default().push(op.invoke_index);
        }
    }
    let mut duplicate_writes: Vec<DuplicateWrite> = writes
        .into_iter()
        .filter(|(_, ops)| ops.len() > 1)
        .map(|(value, increments)| DuplicateWrite { value, increments })
        .collect();
    duplicate_writes.sort_by_key(|d| d.value);

    let final_value = last_read.map(|(_, v)| v);
    let (lost, doubled) = match final_value {
        Some(v) => {
            let v = v.max(0) as u64;
            (
                acknowledged.saturating_sub(v),
                v.saturating_sub(acknowledged + unknown),
            )
        }
        None => (0, 0),
    };
    let invalid = lost > 0 || doubled > 0 || !bad_reads.is_empty() || !duplicate_writes.is_empty();
    let verdict = if invalid {
        Verdict::Invalid
    } else if final_value.is_none() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    CounterKeyReport {
        key,
        verdict,
        acknowledged,
        unknown,
        failed,
        final_value,
        lost,
        doubled,
        bad_reads,
        duplicate_writes,
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::history::EventType;
    use crate::simulation::{build, fail, info, ok, Spec};

    fn inc(v: i64) -> Op {
        Op::Increment(Some(v))
    }

    fn read(v: i64) -> Op {
        Op::Read(Some(v))
    }

    fn check(specs: &[Spec]) -> CounterKeyReport {
        let report = check_history(&build(specs)).unwrap();
        report.counters.into_iter().next().unwrap()
    }

    #[test]
    fn final_value_within_bounds_is_valid() {
        let c = check(&[
            ok(1, 0, 10, inc(1)),
            info(2, 20, 30, Op::Increment(None)),
            fail(3, 20, 30, Op::Increment(None)),
            ok(1, 40, 50, inc(2)),
            ok(4, 60, 70, read(2)),
        ]);
        assert_eq!(c.verdict, Verdict::Valid);
        assert_eq!((c.acknowledged, c.unknown, c.failed), (2, 1, 1));
        let c = check(&[
            ok(1, 0, 10, inc(1)),
            info(2, 20, 30, Op::Increment(None)),
            ok(4, 60, 70, read(2)),
        ]);
        assert_eq!(c.verdict, Verdict::Valid, "the unknown increment happened");
        assert_eq!(
            check(&[ok(4, 0, 1, Op::Read(None))]).verdict,
            Verdict::Valid,
            "missing key is 0"
        );
    }

    #[test]
    fn lost_and_doubled_increments_are_invalid() {
        let c = check(&[
            ok(1, 0, 10, inc(1)),
            ok(2, 0, 10, inc(1)),
            ok(3, 20, 30, read(1)),
        ]);
        assert_eq!(c.verdict, Verdict::Invalid);
        assert_eq!(c.lost, 1);
        assert_eq!(c.duplicate_writes.len(), 1);
        let c = check(&[
            ok(1, 0, 10, inc(1)),
            fail(2, 0, 10, Op::Increment(None)),
            ok(3, 20, 30, read(2)),
        ]);
        assert_eq!(c.verdict, Verdict::Invalid);
        assert_eq!(c.doubled, 1);
        let result = check_history(&build(&[ok(1, 0, 10, inc(1)), ok(3, 20, 30, read(3))]))
            .unwrap()
            .to_check_result();
        assert_eq!(result.counts["doubled"], 2);
        assert_eq!(result.anomalies[0].kind, "doubled");
    }

    #[test]
    fn intermediate_reads_are_bounded() {
        // A read that misses an increment acknowledged before it began.
        let c = check(&[
            ok(1, 0, 10, inc(1)),
            ok(2, 20, 30, read(0)),
            ok(2, 40, 50, read(1)),
        ]);
        assert_eq!(c.verdict, Verdict::Invalid);
        assert_eq!(c.bad_reads.len(), 1);
        assert_eq!((c.bad_reads[0].lower, c.bad_reads[0].upper), (1, 1));
        // A concurrent one may or may not see it.
        let c = check(&[
            ok(1, 0, 30, inc(1)),
            ok(2, 10, 20, read(0)),
            ok(2, 40, 50, read(1)),
        ]);
        assert_eq!(c.verdict, Verdict::Valid);
    }

    #[test]
    fn unread_counter_is_unknown() {
        assert_eq!(check(&[ok(1, 0, 10, inc(1))]).verdict, Verdict::Unknown);
        assert_eq!(
            check_history(&History::new()).unwrap().verdict,
            Verdict::Unknown
        );
    }

    /// A counter service with optimistic concurrency: each client reads the
    /// value and revision, then its compare-and-swap succeeds iff nobody
    /// wrote in between. `broken` ignores the revision check.
    fn simulate(seed: u64, clients: usize, attempts: usize, broken: bool) -> History {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut h = History::new();
        let (mut value, mut revision) = (0i64, 0u64);
        // per client: process, (read value, read revision)
        let mut state: Vec<(u64, Option<(i64, u64)>)> =
            (0..clients as u64).map(|p| (p, None)).collect();
        let mut next_process = clients as u64;
        let mut t = 0;
        let mut started = 0;
        while started < attempts || state.iter().any(|s| s.1.is_some()) {
            t += rng.random_range(1..5);
            let c = rng.random_range(0..clients);
            let (p, seen) = state[c];
            match seen {
                None if started < attempts => {
                    started += 1;
                    h.push(t, p, EventType::Invoke, Some("c"), Op::Increment(None));
                    state[c].1 = Some((value, revision));
                }
                None => {}
                Some((v, rev)) => {
                    let roll: f64 = rng.random();
                    if rev == revision || broken {
                        if roll < 0.05 {
                            // The write went through but the answer was lost.
                            value = v + 1;
                            revision += 1;
                            h.push(t, p, EventType::Info, Some("c"), Op::Increment(None));
                            state[c].0 = next_process;
                            next_process += 1;
                        } else {
                            value = v + 1;
                            revision += 1;
                            h.push(t, p, EventType::Ok, Some("c"), Op::Increment(Some(v + 1)));
                        }
                    } else {
                        h.push(t, p, EventType::Fail, Some("c"), Op::Increment(None));
                    }
                    state[c].1 = None;
                }
            }
        }
        t += 1;
        h.push(t, 999, EventType::Invoke, Some("c"), Op::Read(None));
        h.push(t + 1, 999, EventType::Ok, Some("c"), Op::Read(Some(value)));
        h
    }

    #[test]
    fn generated_histories_and_mutations() {
        let good = simulate(1, 8, 3000, false);
        let report = check_history(&good).unwrap();
        assert_eq!(report.verdict, Verdict::Valid, "{report:#?}");
        assert!(report.counters[0].failed > 100, "conflicts must happen");

        let broken = simulate(1, 8, 3000, true);
        let report = check_history(&broken).unwrap();
        assert_eq!(report.verdict, Verdict::Invalid);
        assert!(report.counters[0].lost > 0);
        assert!(!report.counters[0].duplicate_writes.is_empty());

        // Drop one acknowledged increment's effect from the final read (the
        // unknown ones may not have happened either), or apply one twice.
        let unknown = report_unknown(&good);
        for delta in [-(1 + unknown), 1] {
            let mut events = good.events().to_vec();
            if let Some(Op::Read(Some(v))) = events.last_mut().map(|e| &mut e.op) {
                *v += delta;
            }
            let report = check_history(&History::from_events(events)).unwrap();
            assert_eq!(report.verdict, Verdict::Invalid, "delta {delta}");
        }
    }

    fn report_unknown(h: &History) -> i64 {
        check_history(h).unwrap().counters[0].unknown as i64
    }
}
