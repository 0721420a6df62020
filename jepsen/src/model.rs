//! Models: the sequential specifications the linearizability checker tests
//! histories against, and the register model.
//!
//! A [`Model`] is a deterministic state machine: from a state, an operation's
//! input and (if known) its output, it yields the next state, or nothing if
//! the operation could not have returned that output in that state. It also
//! says how to cut a history into independent sub-histories
//! ([`Model::partition`]): a history is linearizable iff each of them is
//! (P-compositionality; for a key-value store, per key).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;

use crate::history::{Op, Operation, Outcome};

/// One operation as a model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelOp<I, O> {
    /// Caller's identifier, reported back in counterexamples (for histories:
    /// the position in [`crate::history::History::operations`]).
    pub id: usize,
    /// The process that ran it.
    pub process: u64,
    /// The key it was on, for partitioning.
    pub key: Option<String>,
    /// What was asked.
    pub input: I,
    /// What was answered; `None` when the outcome is unknown (`info`).
    pub output: Option<O>,
    /// Invocation time (ns).
    pub call: u64,
    /// Completion time (ns) of an operation known to have completed; `None`
    /// for an unknown outcome, which may take effect at any point after
    /// `call`, or never.
    pub ret: Option<u64>,
}

/// A sequential specification.
pub trait Model {
    /// The state; compared and hashed to memoise the search.
    type State: Clone + Eq + Hash + Debug;
    /// An operation's arguments.
    type Input: Clone + Debug;
    /// An operation's result.
    type Output: Clone + Debug;

    /// A short name for reports.
    fn name(&self) -> &str;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after applying `input` in `state`, if it could have produced
    /// `output` there; `None` if not. `output` is `None` for an operation with
    /// an unknown outcome, which then must be applied as if it took effect
    /// (the checker separately considers that it never did).
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Converts an `ok` or `info` operation of a history into this model's
    /// input and output (`None` output for `info`). Returns `None` for
    /// operations the model does not cover, or that cannot constrain it (so
    /// the checker skips them). `fail` operations are never passed: they
    /// certainly did not happen.
    fn decode(&self, op: &Operation) -> Option<(Self::Input, Option<Self::Output>)>;

    /// Splits operations into independent groups, each a name and indices
    /// into `ops`. The default groups by key (no key: the name is empty).
    fn partition(&self, ops: &[ModelOp<Self::Input, Self::Output>]) -> Vec<(String, Vec<usize>)> {
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            groups
                .entry(op.key.clone().unwrap_or_default())
                .or_default()
                .push(i);
        }
        groups.into_iter().collect()
    }

    /// Whether the operation never changes the state, whatever state it is
    /// applied to (a read). The search then linearizes it as soon as it can
    /// and never tries to delay it: moving a read-only operation earlier,
    /// to a point where it is already allowed, keeps any linearization valid.
    /// The default is `false` (always safe).
    fn is_read_only(&self, input: &Self::Input, output: Option<&Self::Output>) -> bool {
        let _ = (input, output);
        false
    }

    /// What is known about the partition's operations of unknown outcome,
    /// beyond "took effect after its invocation, or never" (one entry per
    /// operation; entries for completed operations are ignored). Must not
    /// change whether the partition is linearizable; narrowing the
    /// possibilities keeps the search from trying these operations at every
    /// position. The default knows nothing more.
    fn unknown_outcomes(&self, ops: &[&ModelOp<Self::Input, Self::Output>]) -> Vec<UnknownOutcome> {
        vec![UnknownOutcome::Open; ops.len()]
    }

    /// An operation in words, e.g. `cas 1 -> 2` or `read -> 5`.
    fn describe_op(&self, input: &Self::Input, output: Option<&Self::Output>) -> String;

    /// A state in words.
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }
}

/// What a model can tell about an operation of unknown outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnknownOutcome {
    /// Nothing more: it took effect after its invocation, or never.
    Open,
    /// Whether and where it took effect cannot matter: leave it out.
    Irrelevant,
    /// It certainly took effect, no later than this time (ns); for example
    /// an operation that completed at that time observed its effect.
    TookEffectBy(u64),
}

/// A register operation's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    /// Read the value.
    Read,
    /// Write a value.
    Write(i64),
    /// Write `new` if the value is `expected` (`None`: the key is missing).
    Cas {
        /// Required current value.
        expected: Option<i64>,
        /// Value written on success.
        new: i64,
    },
}

/// A register operation's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// A read's value (`None`: the key did not exist).
    Value(Option<i64>),
    /// A write or a successful compare-and-set completed.
    Done,
}

/// A single-value register per key, initially missing, with read, write and
/// compare-and-set: the `read`, `write` and `cas` functions of a history.
///
/// Reads of unknown outcome are skipped by [`Model::decode`] (they cannot
/// constrain anything); a compare-and-set's `fail` completion (comparison
/// false) is dropped with the other failed operations.
#[derive(Clone, Copy, Debug, Default)]
pub struct Register;

impl Model for Register {
    type State = Option<i64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn name(&self) -> &str {
        "register"
    }

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(
        &self,
        state: &Option<i64>,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<Option<i64>> {
        match (input, output) {
            (RegisterInput::Read, None) => Some(*state),
            (RegisterInput::Read, Some(RegisterOutput::Value(v))) => (v == state).then_some(*state),
            (RegisterInput::Write(v), None | Some(RegisterOutput::Done)) => Some(Some(*v)),
            (RegisterInput::Cas { expected, new }, Some(RegisterOutput::Done)) => {
                (expected == state).then_some(Some(*new))
            }
            // Unknown outcome: if it took effect here, it swapped iff the
            // comparison held; otherwise it was a no-op.
            (RegisterInput::Cas { expected, new }, None) => Some(if expected == state {
                Some(*new)
            } else {
                *state
            }),
            (RegisterInput::Read, Some(RegisterOutput::Done))
            | (
                RegisterInput::Write(_) | RegisterInput::Cas { .. },
                Some(RegisterOutput::Value(_)),
            ) => None,
        }
    }

    fn decode(&self, op: &Operation) -> Option<(RegisterInput, Option<RegisterOutput>)> {
        let known = op.outcome == Outcome::Ok;
        match (&op.invoke, op.ok_result()) {
            (Op::Read(_), Some(Op::Read(v))) => {
                Some((RegisterInput::Read, Some(RegisterOutput::Value(*v))))
            }
            (Op::Write(v), _) => Some((
                RegisterInput::Write(*v),
                known.then_some(RegisterOutput::Done),
            )),
            (Op::Cas(c), _) => Some((
                RegisterInput::Cas {
                    expected: c.expected,
                    new: c.new,
                },
                known.then_some(RegisterOutput::Done),
            )),
            _ => None,
        }
    }

    fn is_read_only(&self, input: &RegisterInput, _: Option<&RegisterOutput>) -> bool {
        *input == RegisterInput::Read
    }

    /// For a write or compare-and-set of unknown outcome writing `v`:
    ///
    /// - if no read returned `v` and no compare-and-set expected it, it is
    ///   [`UnknownOutcome::Irrelevant`]: once written, `v` can only be
    ///   overwritten unobserved (only other operations of unknown outcome,
    ///   which then were no-ops and may be taken as never having happened,
    ///   can fall between), so a linearization with the operation exists
    ///   iff one without it does;
    /// - if it is the only operation writing `v` and some completed operation
    ///   observed `v` (a read returning it, a successful compare-and-set
    ///   expecting it), it [`UnknownOutcome::TookEffectBy`] the earliest such
    ///   completion.
    ///
    /// Reads of unknown outcome are irrelevant too ([`Model::decode`] already
    /// skips them).
    fn unknown_outcomes(
        &self,
        ops: &[&ModelOp<RegisterInput, RegisterOutput>],
    ) -> Vec<UnknownOutcome> {
        use std::collections::HashMap;
        // value -> earliest completion of a completed operation observing it
        let mut seen_by: HashMap<i64, Option<u64>> = HashMap::new();
        let mut writers: HashMap<i64, usize> = HashMap::new();
        for op in ops {
            let observed = match (&op.input, op.ret.and(op.output.as_ref())) {
                (RegisterInput::Read, Some(RegisterOutput::Value(Some(v)))) => Some(*v),
                (
                    RegisterInput::Cas {
                        expected: Some(v), ..
                    },
                    _,
                ) => Some(*v),
                _ => None,
            };
            if let Some(v) = observed {
                let earliest = seen_by.entry(v).or_insert(None);
                if let Some(ret) = op.ret {
                    *earliest = Some(earliest.map_or(ret, |e| e.min(ret)));
                }
            }
            if let RegisterInput::Write(v) | RegisterInput::Cas { new: v, .. } = op.input {
                *writers.entry(v).or_default() += 1;
            }
        }
        ops.iter()
            .map(|op| {
                let v = match op.input {
                    RegisterInput::Read => return UnknownOutcome::Irrelevant,
                    RegisterInput::Write(v) | RegisterInput::Cas { new: v, .. } => v,
                };
                match seen_by.get(&v) {
                    None => UnknownOutcome::Irrelevant,
                    Some(Some(by)) if writers.get(&v) == Some(&1) => {
                        UnknownOutcome::TookEffectBy(*by)
                    }
                    Some(_) => UnknownOutcome::Open,
                }
            })
            .collect()
    }

    fn describe_op(&self, input: &RegisterInput, output: Option<&RegisterOutput>) -> String {
        let show = |v: &Option<i64>| v.map_or_else(|| "nil".to_owned(), |v| v.to_string());
        let unknown = if output.is_none() {
            " (unknown outcome)"
        } else {
            ""
        };
        match (input, output) {
            (RegisterInput::Read, Some(RegisterOutput::Value(v))) => format!("read -> {}", show(v)),
            (RegisterInput::Read, _) => format!("read{unknown}"),
            (RegisterInput::Write(v), _) => format!("write {v}{unknown}"),
            (RegisterInput::Cas { expected, new }, _) => {
                format!("cas {} -> {new}{unknown}", show(expected))
            }
        }
    }

    fn describe_state(&self, state: &Option<i64>) -> String {
        state.map_or_else(|| "nil".to_owned(), |v| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Cas, EventType, History};

    #[test]
    fn register_steps() {
        let m = Register;
        let done = Some(&RegisterOutput::Done);
        assert_eq!(
            m.step(
                &None,
                &RegisterInput::Read,
                Some(&RegisterOutput::Value(None))
            ),
            Some(None)
        );
        assert_eq!(
            m.step(
                &Some(1),
                &RegisterInput::Read,
                Some(&RegisterOutput::Value(None))
            ),
            None
        );
        assert_eq!(m.step(&None, &RegisterInput::Write(3), done), Some(Some(3)));
        let cas = RegisterInput::Cas {
            expected: Some(3),
            new: 4,
        };
        assert_eq!(m.step(&Some(3), &cas, done), Some(Some(4)));
        assert_eq!(m.step(&Some(2), &cas, done), None);
        assert_eq!(m.step(&Some(2), &cas, None), Some(Some(2)));
        assert_eq!(m.step(&Some(3), &cas, None), Some(Some(4)));
        let create = RegisterInput::Cas {
            expected: None,
            new: 1,
        };
        assert_eq!(m.step(&None, &create, done), Some(Some(1)));
        assert_eq!(
            m.describe_op(&create, None),
            "cas nil -> 1 (unknown outcome)"
        );
    }

    #[test]
    fn register_decodes_history_operations() {
        let mut h = History::new();
        h.push(0, 1, EventType::Invoke, Some("k"), Op::Read(None));
        h.push(1, 1, EventType::Ok, Some("k"), Op::Read(Some(2)));
        h.push(2, 1, EventType::Invoke, Some("k"), Op::Read(None));
        h.push(3, 1, EventType::Info, Some("k"), Op::Read(None));
        h.push(
            4,
            2,
            EventType::Invoke,
            Some("k"),
            Op::Cas(Cas {
                expected: Some(2),
                new: 3,
            }),
        );
        h.push(
            5,
            2,
            EventType::Info,
            Some("k"),
            Op::Cas(Cas {
                expected: Some(2),
                new: 3,
            }),
        );
        h.push(6, 3, EventType::Invoke, Some("s"), Op::Add(1));
        let ops = h.operations().unwrap();
        let m = Register;
        assert_eq!(
            m.decode(&ops[0]),
            Some((RegisterInput::Read, Some(RegisterOutput::Value(Some(2)))))
        );
        assert_eq!(m.decode(&ops[1]), None, "an info read constrains nothing");
        assert_eq!(
            m.decode(&ops[2]),
            Some((
                RegisterInput::Cas {
                    expected: Some(2),
                    new: 3
                },
                None
            ))
        );
        assert_eq!(m.decode(&ops[3]), None, "not a register operation");
    }
}
