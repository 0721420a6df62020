//! The set checker: unique elements are added to sets, then read back.
//!
//! The history holds `add` operations (each element added by at most one
//! operation per set) and `read-set` operations; the set is the operation's
//! key. The last `ok` read of each set (by completion) is its *final read*;
//! earlier reads are checked too.
//!
//! Per set it reports:
//!
//! - **lost**: acknowledged (`ok`) adds missing from the final read;
//! - **unexpected**: elements read that no operation tried to add;
//! - **failed-present**: elements read whose add *failed* (so it must not
//!   have happened);
//! - **premature**: elements read by a read that completed before their add
//!   was invoked;
//! - **duplicated**: elements appearing twice in one read;
//! - **stale**: acknowledged adds absent from a read that began after the
//!   add completed, yet present in the final read (a stale read);
//! - **recovered**: adds of unknown outcome present in the final read (they
//!   happened; informational).
//!
//! The set is valid iff nothing is lost, unexpected, failed-present,
//! premature or duplicated; stale reads make it invalid only with
//! [`SetOptions::stale_is_invalid`] (set it when reads are meant to be
//! linearizable). A set without a final read is unknown.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::{History, HistoryError, Op, Operation, Outcome};
use crate::verdict::{Anomaly, CheckResult, Verdict};

/// How strict the checker is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetOptions {
    /// Whether stale reads make the set invalid.
    pub stale_is_invalid: bool,
}

/// Why a history cannot be checked as a set workload.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// The history is malformed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// An element was added twice: the checker needs unique adds.
    #[error("set {key:?}: element {element} is added by both event {first} and event {second}; adds must be unique")]
    DuplicateAdd {
        /// The set.
        key: String,
        /// The element.
        element: i64,
        /// Invocation index of the first add.
        first: u64,
        /// Invocation index of the second add.
        second: u64,
    },
}

/// A read that missed an acknowledged element.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleRead {
    /// The element.
    pub element: i64,
    /// When its add completed (ns).
    pub added_at: u64,
    /// Invocation index of the read that missed it.
    pub read_index: u64,
    /// When that read began (ns).
    pub read_at: u64,
}

/// A read that saw an element before it was added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrematureRead {
    /// The element.
    pub element: i64,
    /// When its add was invoked (ns).
    pub add_invoked_at: u64,
    /// Invocation index of the read.
    pub read_index: u64,
    /// When that read completed (ns).
    pub read_completed_at: u64,
}

/// The check of one set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetKeyReport {
    /// The set (key; empty if none).
    pub key: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Adds invoked.
    pub attempted: usize,
    /// Adds acknowledged.
    pub acknowledged: usize,
    /// Adds failed.
    pub failed: usize,
    /// Adds of unknown outcome.
    pub unknown: usize,
    /// Reads completed `ok`.
    pub reads: usize,
    /// Invocation index of the final read.
    pub final_read_index: Option<u64>,
    /// Size of the final read.
    pub final_size: usize,
    /// Acknowledged adds missing from the final read.
    pub lost: Vec<i64>,
    /// Elements read that were never added.
    pub unexpected: Vec<i64>,
    /// Elements read whose add failed.
    pub failed_present: Vec<i64>,
    /// Elements read before their add began.
    pub premature: Vec<PrematureRead>,
    /// Elements read twice by one read.
    pub duplicated: Vec<i64>,
    /// Stale reads of elements that eventually appeared.
    pub stale: Vec<StaleRead>,
    /// Adds of unknown outcome in the final read.
    pub recovered: Vec<i64>,
}

/// The check of every set in a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetReport {
    /// Invalid if a set is, else unknown if one is (or there is no set),
    /// else valid.
    pub verdict: Verdict,
    /// The options used.
    pub options: SetOptions,
    /// Per set, by key.
    pub sets: Vec<SetKeyReport>,
}

impl SetReport {
    /// The uniform result (checker `set`).
    pub fn to_check_result(&self) -> CheckResult {
        let mut r = CheckResult::new("set", self.verdict);
        let sum = |f: fn(&SetKeyReport) -> usize| self.sets.iter().map(f).sum::<usize>() as u64;
        r.count("sets", self.sets.len() as u64)
            .count("attempted", sum(|s| s.attempted))
            .count("acknowledged", sum(|s| s.acknowledged))
            .count("unknown", sum(|s| s.unknown))
            .count("lost", sum(|s| s.lost.len()))
            .count("unexpected", sum(|s| s.unexpected.len()))
            .count("failed-present", sum(|s| s.failed_present.len()))
            .count("premature", sum(|s| s.premature.len()))
            .count("duplicated", sum(|s| s.duplicated.len()))
            .count("stale", sum(|s| s.stale.len()))
            .count("recovered", sum(|s| s.recovered.len()));
        for s in &self.sets {
            let key = Some(s.key.as_str());
            let list = |v: &[i64]| {
                let shown: Vec<String> = v.iter().take(20).map(i64::to_string).collect();
                let more = v.len().saturating_sub(20);
                format!(
                    "{}{}",
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            };
            if !s.lost.is_empty() {
                r.anomaly(Anomaly::new(
                    "lost",
                    key,
                    format!(
                        "{} acknowledged adds missing from the final read: {}",
                        s.lost.len(),
                        list(&s.lost)
                    ),
                ));
            }
            if !s.unexpected.is_empty() {
                r.anomaly(Anomaly::new(
                    "unexpected",
                    key,
                    format!(
                        "{} elements read that were never added: {}",
                        s.unexpected.len(),
                        list(&s.unexpected)
                    ),
                ));
            }
            if !s.failed_present.is_empty() {
                r.anomaly(Anomaly::new(
                    "failed-present",
                    key,
                    format!(
                        "{} elements read whose add failed: {}",
                        s.failed_present.len(),
                        list(&s.failed_present)
                    ),
                ));
            }
            if !s.duplicated.is_empty() {
                r.anomaly(Anomaly::new(
                    "duplicated",
                    key,
                    format!("elements read twice in one read: {}", list(&s.duplicated)),
                ));
            }
            for p in s.premature.iter().take(10) {
                r.anomaly(Anomaly::new(
                    "premature",
                    key,
                    format!(
                        "element {} read by the read at event {} (completed {} ns) before its add was invoked ({} ns)",
                        p.element, p.read_index, p.read_completed_at, p.add_invoked_at
                    ),
                ));
            }
            if self.options.stale_is_invalid {
                for st in s.stale.iter().take(10) {
                    r.anomaly(Anomaly::new(
                        "stale",
                        key,
                        format!(
                            "element {} (added by {} ns) missing from the read at event {} begun at {} ns",
                            st.element, st.added_at, st.read_index, st.read_at
                        ),
                    ));
                }
            }
            if s.final_read_index.is_none() {
                r.note(format!("set {:?} has no successful read: unknown", s.key));
            }
        }
        r.details(self);
        r
    }
}

/// Checks the sets of a history.
///
/// # Errors
/// [`SetError::History`] for a malformed history, [`SetError::DuplicateAdd`]
/// if an element is added twice to a set.
pub fn check_history(history: &History, options: SetOptions) -> Result<SetReport, SetError> {
    check_operations(&history.operations()?, options)
}

/// Checks the sets of paired operations (other functions are ignored).
///
/// # Errors
/// [`SetError::DuplicateAdd`] if an element is added twice to a set.
pub fn check_operations(ops: &[Operation], options: SetOptions) -> Result<SetReport, SetError> {
    let mut by_key: BTreeMap<String, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        if matches!(op.invoke, Op::Add(_) | Op::ReadSet(_)) {
            by_key
                .entry(op.key.clone().unwrap_or_default())
                .or_default()
                .push(op);
        }
    }
    let mut sets = Vec::new();
    for (key, ops) in by_key {
        sets.push(check_set(key, &ops, options)?);
    }
    let verdict = sets
        .iter()
        .map(|s| s.verdict)
        .reduce(Verdict::and)
        .unwrap_or(Verdict::Unknown);
    Ok(SetReport {
        verdict,
        options,
        sets,
    })
}

fn check_set(
    key: String,
    ops: &[&Operation],
    options: SetOptions,
) -> Result<SetKeyReport, SetError> {
    let mut adds: HashMap<i64, &Operation> = HashMap::new();
    let mut reads: Vec<(&Operation, &Vec<i64>)> = Vec::new();
    for op in ops {
        match (&op.invoke, op.ok_result()) {
            (Op::Add(e), _) => {
                if let Some(first) = adds.insert(*e, op) {
                    return Err(SetError::DuplicateAdd {
                        key,
                        element: *e,
                        first: first.invoke_index,
                        second: op.invoke_index,
                    });
                }
            }
            (Op::ReadSet(_), Some(Op::ReadSet(Some(elements)))) => reads.push((op, elements)),
            _ => {}
        }
    }
    let count = |o: Outcome| adds.values().filter(|a| a.outcome == o).count();
    let mut report = SetKeyReport {
        key,
        verdict: Verdict::Unknown,
        attempted: adds.len(),
        acknowledged: count(Outcome::Ok),
        failed: count(Outcome::Fail),
        unknown: count(Outcome::Info),
        reads: reads.len(),
        final_read_index: None,
        final_size: 0,
        lost: Vec::new(),
        unexpected: Vec::new(),
        failed_present: Vec::new(),
        premature: Vec::new(),
        duplicated: Vec::new(),
        stale: Vec::new(),
        recovered: Vec::new(),
    };
    let mut unexpected = HashSet::new();
    let mut failed_present = HashSet::new();
    let mut duplicated = HashSet::new();
    for (read, elements) in &reads {
        let mut seen = HashSet::with_capacity(elements.len());
        let done = read.complete_time.unwrap_or(u64::MAX);
        for e in elements.iter() {
            if !seen.insert(*e) {
                duplicated.insert(*e);
            }
            match adds.get(e) {
                None => {
                    unexpected.insert(*e);
                }
                Some(add) => {
                    if add.outcome == Outcome::Fail {
                        failed_present.insert(*e);
                    }
                    if done < add.invoke_time {
                        report.premature.push(PrematureRead {
                            element: *e,
                            add_invoked_at: add.invoke_time,
                            read_index: read.invoke_index,
                            read_completed_at: done,
                        });
                    }
                }
            }
        }
    }
    let sorted = |set: HashSet<i64>| {
        let mut v: Vec<i64> = set.into_iter().collect();
        v.sort_unstable();
        v
    };
    report.unexpected = sorted(unexpected);
    report.failed_present = sorted(failed_present);
    report.duplicated = sorted(duplicated);

    let Some(&(final_read, final_elements)) = reads.iter().max_by_key(|(r, _)| r.complete_index)
    else {
        return Ok(report);
    };
    let final_set: HashSet<i64> = final_elements.iter().copied().collect();
    let sorted_reads: Vec<(&Operation, Vec<i64>)> = reads
        .iter()
        .map(|(r, elements)| {
            let mut v = (*elements).clone();
            v.sort_unstable();
            (*r, v)
        })
        .collect();
    report.final_read_index = Some(final_read.invoke_index);
    report.final_size = final_set.len();
    let mut acked: Vec<(&i64, &&Operation)> = adds
        .iter()
        .filter(|(_, a)| a.outcome == Outcome::Ok)
        .collect();
    acked.sort_by_key(|(e, _)| **e);
    for (e, add) in &acked {
        if !final_set.contains(e) {
            report.lost.push(**e);
            continue;
        }
        let added_at = add.complete_time.unwrap_or(u64::MAX);
        for (read, elements) in &sorted_reads {
            if read.invoke_time > added_at && elements.binary_search(e).is_err() {
                report.stale.push(StaleRead {
                    element: **e,
                    added_at,
                    read_index: read.invoke_index,
                    read_at: read.invoke_time,
                });
            }
        }
    }
    report.recovered = adds
        .iter()
        .filter(|(e, a)| a.outcome == Outcome::Info && final_set.contains(e))
        .map(|(e, _)| *e)
        .collect();
    report.recovered.sort_unstable();
    let invalid = !report.lost.is_empty()
        || !report.unexpected.is_empty()
        || !report.failed_present.is_empty()
        || !report.premature.is_empty()
        || !report.duplicated.is_empty()
        || (options.stale_is_invalid && !report.stale.is_empty());
    report.verdict = if invalid {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::history::EventType;
    use crate::simulation::{build, fail, info, ok};

    fn read(v: &[i64]) -> Op {
        Op::ReadSet(Some(v.to_vec()))
    }

    fn check(specs: &[crate::simulation::Spec]) -> SetKeyReport {
        let report = check_history(&build(specs), SetOptions::default()).unwrap();
        assert_eq!(report.sets.len(), 1);
        report.sets.into_iter().next().unwrap()
    }

    #[test]
    fn valid_set_with_recovered_and_unknown_adds() {
        let s = check(&[
            ok(1, 0, 10, Op::Add(1)),
            info(2, 0, 10, Op::Add(2)),
            info(3, 0, 10, Op::Add(3)),
            fail(4, 0, 10, Op::Add(4)),
            ok(1, 20, 30, read(&[1, 2])),
        ]);
        assert_eq!(s.verdict, Verdict::Valid);
        assert_eq!(
            (s.attempted, s.acknowledged, s.unknown, s.failed),
            (4, 1, 2, 1)
        );
        assert_eq!(s.recovered, [2]);
        assert_eq!(s.final_size, 2);
    }

    #[test]
    fn lost_unexpected_and_failed_adds_are_invalid() {
        let s = check(&[
            ok(1, 0, 10, Op::Add(1)),
            ok(1, 10, 20, Op::Add(2)),
            ok(2, 30, 40, read(&[2])),
        ]);
        assert_eq!(s.verdict, Verdict::Invalid);
        assert_eq!(s.lost, [1]);

        let s = check(&[ok(1, 0, 10, Op::Add(1)), ok(2, 30, 40, read(&[1, 9]))]);
        assert_eq!(s.verdict, Verdict::Invalid);
        assert_eq!(s.unexpected, [9]);

        let s = check(&[fail(1, 0, 10, Op::Add(1)), ok(2, 30, 40, read(&[1]))]);
        assert_eq!(s.verdict, Verdict::Invalid);
        assert_eq!(s.failed_present, [1]);

        let s = check(&[ok(1, 0, 10, Op::Add(1)), ok(2, 30, 40, read(&[1, 1]))]);
        assert_eq!(s.verdict, Verdict::Invalid);
        assert_eq!(s.duplicated, [1]);

        let s = check(&[
            ok(2, 0, 5, read(&[1])),
            ok(1, 10, 20, Op::Add(1)),
            ok(2, 30, 40, read(&[1])),
        ]);
        assert_eq!(s.verdict, Verdict::Invalid);
        assert_eq!(s.premature.len(), 1);
    }

    #[test]
    fn stale_reads_are_counted_and_optionally_invalid() {
        let specs = [
            ok(1, 0, 10, Op::Add(1)),
            ok(2, 20, 30, read(&[])),
            ok(2, 40, 50, read(&[1])),
        ];
        let s = check(&specs);
        assert_eq!(s.verdict, Verdict::Valid);
        assert_eq!(s.stale.len(), 1);
        assert_eq!(s.stale[0].element, 1);
        let strict = check_history(
            &build(&specs),
            SetOptions {
                stale_is_invalid: true,
            },
        )
        .unwrap();
        assert_eq!(strict.verdict, Verdict::Invalid);
        assert_eq!(strict.to_check_result().anomalies[0].kind, "stale");
    }

    #[test]
    fn no_read_is_unknown_and_duplicate_adds_are_errors() {
        let s = check(&[ok(1, 0, 10, Op::Add(1))]);
        assert_eq!(s.verdict, Verdict::Unknown);
        let err = check_history(
            &build(&[ok(1, 0, 10, Op::Add(1)), ok(2, 0, 10, Op::Add(1))]),
            SetOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, SetError::DuplicateAdd { element: 1, .. }),
            "{err}"
        );
        assert_eq!(
            check_history(&History::new(), SetOptions::default())
                .unwrap()
                .verdict,
            Verdict::Unknown
        );
    }

    /// A correct set service with concurrent clients; `lose` drops the
    /// effect of that many acknowledged adds.
    fn simulate(seed: u64, adds: i64, lose: usize) -> History {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut h = History::new();
        let mut set: Vec<i64> = Vec::new();
        let mut t = 0;
        let mut lost = 0;
        let mut process = 10u64;
        for e in 0..adds {
            t += rng.random_range(1..10);
            let p = process;
            h.push(t, p, EventType::Invoke, Some("s"), Op::Add(e));
            let roll: f64 = rng.random();
            t += rng.random_range(1..10);
            if roll < 0.05 {
                h.push(t, p, EventType::Fail, Some("s"), Op::Add(e));
            } else if roll < 0.1 {
                if rng.random_bool(0.5) {
                    set.push(e);
                }
                h.push(t, p, EventType::Info, Some("s"), Op::Add(e));
                process += 1;
            } else {
                if lost < lose && e > adds / 2 {
                    lost += 1;
                } else {
                    set.push(e);
                }
                h.push(t, p, EventType::Ok, Some("s"), Op::Add(e));
            }
            if e % 100 == 0 {
                t += 1;
                h.push(t, 1, EventType::Invoke, Some("s"), Op::ReadSet(None));
                t += 1;
                h.push(
                    t,
                    1,
                    EventType::Ok,
                    Some("s"),
                    Op::ReadSet(Some(set.clone())),
                );
            }
        }
        t += 1;
        h.push(t, 1, EventType::Invoke, Some("s"), Op::ReadSet(None));
        h.push(t + 1, 1, EventType::Ok, Some("s"), Op::ReadSet(Some(set)));
        h
    }

    #[test]
    fn generated_histories_and_mutations() {
        let good = simulate(1, 2000, 0);
        let report = check_history(
            &good,
            SetOptions {
                stale_is_invalid: true,
            },
        )
        .unwrap();
        assert_eq!(report.verdict, Verdict::Valid);
        assert!(!report.sets[0].recovered.is_empty());

        let lossy = simulate(1, 2000, 3);
        let report = check_history(&lossy, SetOptions::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Invalid);
        assert_eq!(report.sets[0].lost.len(), 3);
        let result = report.to_check_result();
        assert_eq!(result.counts["lost"], 3);
        assert_eq!(result.anomalies[0].kind, "lost");

        // An element nobody added, slipped into the final read.
        let mut events = good.events().to_vec();
        if let Some(Op::ReadSet(Some(v))) = events.last_mut().map(|e| &mut e.op) {
            v.push(1_000_000);
        }
        let report = check_history(&History::from_events(events), SetOptions::default()).unwrap();
        assert_eq!(report.sets[0].unexpected, [1_000_000]);
    }
}
