//! The linearizability checker: Wing & Gong's search with Lowe's memoisation,
//! as refined by Porcupine and Knossos.
//!
//! # Algorithm
//!
//! The operations are first cut into independent partitions by
//! [`Model::partition`] (per key for a register) and each partition is
//! checked on its own (P-compositionality).
//!
//! In a partition every operation contributes a *call* entry at its
//! invocation time and, if it completed, a *return* entry at its completion
//! time; the entries are sorted by time (calls before returns at equal times,
//! so equal timestamps count as concurrent) and threaded into a doubly linked
//! list. The search walks the list from the front:
//!
//! - at a call entry it tries to linearize that operation now: if the model
//!   accepts it and the pair *(set of linearized operations, model state)* has
//!   not been seen before, it pushes the operation on a stack, unlinks its call
//!   and return entries ("lifts" it) and restarts from the front;
//! - at a return entry, the operation completed without having been
//!   linearized: a dead end. It pops the last linearized operation, restores
//!   its entries and state, and continues after its call entry.
//!
//! The set of linearized operations is a bitset with an incrementally
//! maintained Zobrist hash, so memoising a configuration costs one hash
//! lookup (and a bitset copy when new). The list is empty — or holds only
//! calls of operations with unknown outcome — exactly when every completed
//! operation is linearized: the partition is linearizable.
//!
//! # Unknown outcomes and failures
//!
//! Operations with unknown outcome (`info`, or never completed) have no
//! return entry: they may be linearized anywhere after their invocation, and
//! may stay unlinearized to the end, which means they never took effect.
//! `fail` operations certainly did not happen and are dropped before the
//! search. A model may know more ([`Model::unknown_outcomes`]): the register
//! drops unknown-outcome writes nobody observed, and bounds those whose
//! unique value was observed by the earliest observation, which removes most
//! of the blow-up unknown outcomes otherwise cause.
//!
//! # Read-only operations
//!
//! An operation the model declares read-only ([`Model::is_read_only`]) is
//! linearized as soon as it can be and never delayed: when undoing it, the
//! search also undoes the operation before it.
//!
//! # Performance
//!
//! On a generated single-key history of 10 000 operations from 10
//! concurrent clients (3 % unknown outcomes) the check takes about 0.25 s in
//! release builds; 20 clients with 10 % unknown outcomes about 1.2 s. Much
//! higher concurrency on one key (30+ clients) can exhaust the default
//! budget: use more keys (partitions) rather than more clients per key.
//!
//! # Budget and counterexamples
//!
//! The search stops with [`Linearizability::Unknown`] when it exceeds the
//! [`Budget`]'s time, number of memoised configurations or estimated memory.
//! When a partition is not linearizable, the [`Counterexample`] is the deepest
//! dead end met: the longest linearizable prefix found, the model state after
//! it, the operation whose completion could not be reached, and the
//! concurrent operations that were candidates at that point.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::history::{History, HistoryError, Operation, Outcome};
use crate::model::{Model, ModelOp, UnknownOutcome};
use crate::verdict::{Anomaly, CheckResult, Verdict};

/// How many operations of the linearizable prefix a counterexample shows.
pub const PREFIX_TAIL: usize = 16;
/// How many candidate operations a counterexample shows.
pub const MAX_CANDIDATES: usize = 32;

/// Limits of the search.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Wall-clock limit for the whole check (all partitions).
    pub time_limit: Duration,
    /// Most memoised configurations in one partition.
    pub max_states: usize,
    /// Most estimated bytes of memoised configurations in one partition.
    pub max_memory_bytes: usize,
}

impl Default for Budget {
    /// One minute, 20 million configurations, 1 GiB.
    fn default() -> Self {
        Self {
            time_limit: Duration::from_secs(60),
            max_states: 20_000_000,
            max_memory_bytes: 1 << 30,
        }
    }
}

/// One operation in a counterexample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSummary {
    /// The operation's id ([`ModelOp::id`]; for histories the position in
    /// [`History::operations`]).
    pub id: usize,
    /// Its process.
    pub process: u64,
    /// The operation in words.
    pub op: String,
    /// Invocation time (ns).
    pub invoke_time: u64,
    /// Completion time (ns); `None` for an unknown outcome.
    pub complete_time: Option<u64>,
    /// For an unknown outcome known to have taken effect: by when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_effect_by: Option<u64>,
}

/// Why a partition is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counterexample {
    /// The partition (key).
    pub key: String,
    /// Length of the longest linearizable prefix found.
    pub prefix_len: usize,
    /// Its last operations, in linearization order (at most [`PREFIX_TAIL`]).
    pub prefix_tail: Vec<OpSummary>,
    /// The model state after the prefix.
    pub state: String,
    /// The operation that completed before it could be linearized after the
    /// prefix.
    pub stuck: OpSummary,
    /// The operations that were pending at that point (invoked, not yet
    /// linearized); none of them could be linearized next in a way that lets
    /// `stuck` take effect. At most [`MAX_CANDIDATES`].
    pub candidates: Vec<OpSummary>,
    /// The above in one sentence.
    pub explanation: String,
}

/// The result for one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Linearizability {
    /// Linearizable.
    Valid,
    /// Not linearizable.
    Invalid {
        /// Where the search got stuck.
        counterexample: Box<Counterexample>,
    },
    /// The budget ran out first.
    Unknown {
        /// Which limit and how far the search got.
        reason: String,
    },
}

impl Linearizability {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        match self {
            Linearizability::Valid => Verdict::Valid,
            Linearizability::Invalid { .. } => Verdict::Invalid,
            Linearizability::Unknown { .. } => Verdict::Unknown,
        }
    }
}

/// The check of one partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionReport {
    /// The partition (key).
    pub key: String,
    /// Operations checked.
    pub ops: usize,
    /// Of which with unknown outcome.
    pub unknown_outcome_ops: usize,
    /// Operations of unknown outcome left out as irrelevant
    /// ([`Model::unknown_outcomes`]); not counted in `ops`.
    pub dropped_ops: usize,
    /// Operations of unknown outcome known to have taken effect by some
    /// time ([`Model::unknown_outcomes`]).
    pub bounded_ops: usize,
    /// The result.
    pub result: Linearizability,
    /// Memoised configurations.
    pub states: u64,
    /// Search steps.
    pub steps: u64,
    /// Time spent (ms).
    pub elapsed_ms: f64,
}

/// The check of a whole history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearizabilityReport {
    /// The model's name.
    pub model: String,
    /// Invalid if a partition is, else unknown if one is, else valid.
    pub verdict: Verdict,
    /// Operations checked.
    pub ops: usize,
    /// `fail` operations dropped.
    pub failed_ops: usize,
    /// Operations the model skipped.
    pub skipped_ops: usize,
    /// Per partition, in the model's order.
    pub partitions: Vec<PartitionReport>,
    /// Time spent (ms).
    pub elapsed_ms: f64,
}

impl LinearizabilityReport {
    /// The partitions that are not linearizable.
    pub fn counterexamples(&self) -> impl Iterator<Item = &Counterexample> {
        self.partitions.iter().filter_map(|p| match &p.result {
            Linearizability::Invalid { counterexample } => Some(&**counterexample),
            _ => None,
        })
    }

    /// The uniform result (checker `linearizable`).
    pub fn to_check_result(&self) -> CheckResult {
        let mut r = CheckResult::new("linearizable", self.verdict);
        let count = |v: Verdict| {
            self.partitions
                .iter()
                .filter(|p| p.result.verdict() == v)
                .count()
        };
        r.count("ops", self.ops as u64)
            .count("failed-ops-dropped", self.failed_ops as u64)
            .count("partitions", self.partitions.len() as u64)
            .count("invalid-partitions", count(Verdict::Invalid) as u64)
            .count("unknown-partitions", count(Verdict::Unknown) as u64)
            .count("states", self.partitions.iter().map(|p| p.states).sum());
        for c in self.counterexamples() {
            r.anomaly(Anomaly::new(
                "nonlinearizable",
                Some(&c.key),
                c.explanation.clone(),
            ));
        }
        for p in &self.partitions {
            if let Linearizability::Unknown { reason } = &p.result {
                r.note(format!("key {:?}: unknown: {reason}", p.key));
            }
        }
        r.details(self);
        r
    }
}

/// Checks a history against `model`.
///
/// # Errors
/// If the history is malformed (see [`History::operations`]).
pub fn check_history<M: Model>(
    model: &M,
    history: &History,
    budget: &Budget,
) -> Result<LinearizabilityReport, HistoryError> {
    Ok(check_operations(model, &history.operations()?, budget))
}

/// Checks paired operations against `model`: `fail` operations are dropped,
/// the others decoded by [`Model::decode`] (ids are positions in `ops`).
pub fn check_operations<M: Model>(
    model: &M,
    ops: &[Operation],
    budget: &Budget,
) -> LinearizabilityReport {
    let mut failed = 0;
    let mut skipped = 0;
    let mut model_ops = Vec::new();
    for (id, op) in ops.iter().enumerate() {
        if op.outcome == Outcome::Fail {
            failed += 1;
            continue;
        }
        let Some((input, output)) = model.decode(op) else {
            skipped += 1;
            continue;
        };
        let ret = match op.outcome {
            Outcome::Ok => op.complete_time,
            Outcome::Fail | Outcome::Info => None,
        };
        model_ops.push(ModelOp {
            id,
            process: op.process,
            key: op.key.clone(),
            input,
            output: if ret.is_some() { output } else { None },
            call: op.invoke_time,
            ret,
        });
    }
    let mut report = check_model_ops(model, &model_ops, budget);
    report.failed_ops = failed;
    report.skipped_ops = skipped;
    report
}

/// Checks model operations directly. An operation with `ret: None` has an
/// unknown outcome (its `output` is ignored).
pub fn check_model_ops<M: Model>(
    model: &M,
    ops: &[ModelOp<M::Input, M::Output>],
    budget: &Budget,
) -> LinearizabilityReport {
    let start = Instant::now();
    let deadline = start.checked_add(budget.time_limit);
    let mut partitions = Vec::new();
    for (key, members) in model.partition(ops) {
        let part: Vec<&ModelOp<M::Input, M::Output>> =
            members.iter().filter_map(|&i| ops.get(i)).collect();
        partitions.push(check_partition(model, key, &part, deadline, budget));
    }
    let verdict = partitions
        .iter()
        .map(|p| p.result.verdict())
        .fold(Verdict::Valid, Verdict::and);
    LinearizabilityReport {
        model: model.name().to_owned(),
        verdict,
        ops: ops.len(),
        failed_ops: 0,
        skipped_ops: 0,
        partitions,
        elapsed_ms: ms(start.elapsed()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn check_partition<M: Model>(
    model: &M,
    key: String,
    ops: &[&ModelOp<M::Input, M::Output>],
    deadline: Option<Instant>,
    budget: &Budget,
) -> PartitionReport {
    let start = Instant::now();
    let unknown_outcome_ops = ops.iter().filter(|o| o.ret.is_none()).count();
    let knowledge = model.unknown_outcomes(ops);
    let mut kept = Vec::with_capacity(ops.len());
    let mut rets = Vec::with_capacity(ops.len());
    let (mut dropped_ops, mut bounded_ops) = (0, 0);
    for (i, &op) in ops.iter().enumerate() {
        let known = knowledge.get(i).copied().unwrap_or(UnknownOutcome::Open);
        let ret = match (op.ret, known) {
            (Some(ret), _) => Some(ret),
            (None, UnknownOutcome::Open) => None,
            (None, UnknownOutcome::Irrelevant) => {
                dropped_ops += 1;
                continue;
            }
            (None, UnknownOutcome::TookEffectBy(by)) => {
                bounded_ops += 1;
                Some(by)
            }
        };
        kept.push(op);
        rets.push(ret);
    }
    let ops = &kept[..];
    let (end, stats) = search(model, ops, &rets, deadline, budget);
    let result = match end {
        SearchEnd::Valid => Linearizability::Valid,
        SearchEnd::Invalid(dead_end) => Linearizability::Invalid {
            counterexample: Box::new(counterexample(model, &key, ops, &rets, dead_end)),
        },
        SearchEnd::OutOfTime => Linearizability::Unknown {
            reason: format!(
                "time limit of {:?} exhausted after {} configurations and {} steps",
                budget.time_limit, stats.states, stats.steps
            ),
        },
        SearchEnd::OutOfStates => Linearizability::Unknown {
            reason: format!(
                "more than {} configurations to explore (after {} steps)",
                budget.max_states, stats.steps
            ),
        },
        SearchEnd::OutOfMemory => Linearizability::Unknown {
            reason: format!(
                "memoised configurations need more than {} bytes ({} configurations, {} steps)",
                budget.max_memory_bytes, stats.states, stats.steps
            ),
        },
    };
    PartitionReport {
        key,
        ops: ops.len(),
        unknown_outcome_ops,
        dropped_ops,
        bounded_ops,
        result,
        states: stats.states,
        steps: stats.steps,
        elapsed_ms: ms(start.elapsed()),
    }
}

fn counterexample<M: Model>(
    model: &M,
    key: &str,
    ops: &[&ModelOp<M::Input, M::Output>],
    rets: &[Option<u64>],
    dead_end: DeadEnd<M::State>,
) -> Counterexample {
    let summary = |i: u32| {
        let op = ops[i as usize];
        OpSummary {
            id: op.id,
            process: op.process,
            op: model.describe_op(&op.input, op.ret.and(op.output.as_ref())),
            invoke_time: op.call,
            complete_time: op.ret,
            took_effect_by: if op.ret.is_none() {
                rets[i as usize]
            } else {
                None
            },
        }
    };
    let prefix_len = dead_end.prefix.len();
    let prefix_tail: Vec<OpSummary> = dead_end.prefix[prefix_len.saturating_sub(PREFIX_TAIL)..]
        .iter()
        .map(|&i| summary(i))
        .collect();
    let stuck = summary(dead_end.stuck);
    let candidates: Vec<OpSummary> = dead_end
        .candidates
        .iter()
        .take(MAX_CANDIDATES)
        .map(|&i| summary(i))
        .collect();
    let state = model.describe_state(&dead_end.state);
    let explanation = format!(
        "key {key:?}: after a linearizable prefix of {prefix_len} operations{last} the {model} \
         holds {state}; `{op}` by process {process} (invoked at {inv} ns, completed at {ret} ns) \
         cannot take effect before it completed, whichever of the {n} concurrent pending \
         operations go first",
        last = prefix_tail
            .last()
            .map(|o| format!(" (last: `{}` by process {})", o.op, o.process))
            .unwrap_or_default(),
        model = model.name(),
        op = stuck.op,
        process = stuck.process,
        inv = stuck.invoke_time,
        ret = stuck
            .complete_time
            .or(stuck.took_effect_by)
            .map_or_else(|| "?".to_owned(), |t| t.to_string()),
        n = dead_end.candidates.len(),
    );
    Counterexample {
        key: key.to_owned(),
        prefix_len,
        prefix_tail,
        state,
        stuck,
        candidates,
        explanation,
    }
}

// ---------------------------------------------------------------------------
// The search.

const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;

/// The entry list: node 0 is the head sentinel, nodes 1.. the entries in
/// time order.
struct Entries {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Node -> operation (unused for the head).
    op: Vec<u32>,
    /// Node -> whether it is a call entry.
    is_call: Vec<bool>,
    /// Operation -> its return node, or `NIL`.
    ret_node: Vec<u32>,
}

impl Entries {
    /// Entries for `ops`, with their effective return times.
    fn new<I, O>(ops: &[&ModelOp<I, O>], rets: &[Option<u64>]) -> Self {
        // (time, 0 = call / 1 = return, op)
        let mut items: Vec<(u64, u8, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, (op, ret)) in ops.iter().zip(rets).enumerate() {
            items.push((op.call, 0, i as u32));
            if let Some(ret) = *ret {
                items.push((ret.max(op.call), 1, i as u32));
            }
        }
        items.sort_unstable();
        let nodes = items.len() + 1;
        let mut e = Entries {
            next: Vec::with_capacity(nodes),
            prev: Vec::with_capacity(nodes),
            op: Vec::with_capacity(nodes),
            is_call: Vec::with_capacity(nodes),
            ret_node: vec![NIL; ops.len()],
        };
        e.op.push(NIL);
        e.is_call.push(false);
        for (node, &(_, kind, op)) in (1u32..).zip(&items) {
            e.op.push(op);
            e.is_call.push(kind == 0);
            if kind == 1 {
                e.ret_node[op as usize] = node;
            }
        }
        for node in 0..nodes as u32 {
            e.next.push(if (node as usize) + 1 < nodes {
                node + 1
            } else {
                NIL
            });
            e.prev.push(if node == 0 { NIL } else { node - 1 });
        }
        e
    }

    fn unlink(&mut self, x: u32) {
        let (p, n) = (self.prev[x as usize], self.next[x as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, x: u32) {
        let (p, n) = (self.prev[x as usize], self.next[x as usize]);
        self.next[p as usize] = x;
        if n != NIL {
            self.prev[n as usize] = x;
        }
    }

    /// Removes a call entry and its return entry (dancing links: undone in
    /// reverse order by `unlift`).
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        let ret = self.ret_node[self.op[call as usize] as usize];
        if ret != NIL {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: u32) {
        let ret = self.ret_node[self.op[call as usize] as usize];
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// SplitMix64's finaliser: a strong 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small fast hasher for states and for the (already mixed) cache keys.
#[derive(Default)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(buf));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Memoised configurations: hash -> (linearized set, state) pairs.
type Cache<S> = FastMap<u64, Vec<(Box<[u64]>, S)>>;

fn state_hash<S: Hash>(state: &S) -> u64 {
    let mut h = FastHasher::default();
    state.hash(&mut h);
    mix(h.finish())
}

/// The set of linearized operations, with its Zobrist hash.
struct Linearized {
    words: Vec<u64>,
    hash: u64,
}

impl Linearized {
    fn flip(&mut self, op: u32) {
        self.words[(op / 64) as usize] ^= 1 << (op % 64);
        self.hash ^= mix(u64::from(op).wrapping_add(0x9e37_79b9_7f4a_7c15));
    }
}

struct DeadEnd<S> {
    /// Linearized operations, in order.
    prefix: Vec<u32>,
    state: S,
    stuck: u32,
    candidates: Vec<u32>,
}

enum SearchEnd<S> {
    Valid,
    Invalid(DeadEnd<S>),
    OutOfTime,
    OutOfStates,
    OutOfMemory,
}

#[derive(Default)]
struct Stats {
    states: u64,
    steps: u64,
}

fn search<M: Model>(
    model: &M,
    ops: &[&ModelOp<M::Input, M::Output>],
    rets: &[Option<u64>],
    deadline: Option<Instant>,
    budget: &Budget,
) -> (SearchEnd<M::State>, Stats) {
    let mut stats = Stats::default();
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return (SearchEnd::OutOfTime, stats);
    }
    let mut entries = Entries::new(ops, rets);
    let mut linearized = Linearized {
        words: vec![0; ops.len().div_ceil(64)],
        hash: 0,
    };
    let entry_bytes =
        linearized.words.len() * 8 + std::mem::size_of::<(Box<[u64]>, M::State)>() + 16;
    let mut memory = 0usize;
    let mut cache: Cache<M::State> = FastMap::default();
    // (call entry, state before it, whether the operation is read-only)
    let mut stack: Vec<(u32, M::State, bool)> = Vec::new();
    let mut state = model.init();
    let mut deepest: Option<DeadEnd<M::State>> = None;
    let mut node = entries.next[HEAD as usize];
    loop {
        stats.steps += 1;
        if stats.steps % 4096 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            return (SearchEnd::OutOfTime, stats);
        }
        if node == NIL {
            // Only calls of unknown-outcome operations can be left.
            return (SearchEnd::Valid, stats);
        }
        let op = entries.op[node as usize];
        if entries.is_call[node as usize] {
            let m = ops[op as usize];
            let output = m.ret.and(m.output.as_ref());
            let Some(next_state) = model.step(&state, &m.input, output) else {
                node = entries.next[node as usize];
                continue;
            };
            let read_only = model.is_read_only(&m.input, output);
            linearized.flip(op);
            let bucket = cache
                .entry(linearized.hash ^ state_hash(&next_state))
                .or_default();
            let seen = bucket
                .iter()
                .any(|(bits, s)| **bits == *linearized.words && *s == next_state);
            if !seen {
                bucket.push((
                    linearized.words.clone().into_boxed_slice(),
                    next_state.clone(),
                ));
                stats.states += 1;
                memory += entry_bytes;
                if stats.states > budget.max_states as u64 {
                    return (SearchEnd::OutOfStates, stats);
                }
                if memory > budget.max_memory_bytes {
                    return (SearchEnd::OutOfMemory, stats);
                }
                stack.push((node, std::mem::replace(&mut state, next_state), read_only));
                entries.lift(node);
                node = entries.next[HEAD as usize];
                continue;
            }
            linearized.flip(op);
            if !read_only {
                node = entries.next[node as usize];
                continue;
            }
            // A read-only operation that could go now may as well go now;
            // that configuration was explored and failed, so this one fails.
        } else if deepest
            .as_ref()
            .is_none_or(|d| stack.len() > d.prefix.len())
        {
            // `op` completed without having been linearized: a dead end.
            let mut candidates = Vec::new();
            let mut n = entries.next[HEAD as usize];
            while n != node && n != NIL {
                if entries.is_call[n as usize] {
                    candidates.push(entries.op[n as usize]);
                }
                n = entries.next[n as usize];
            }
            deepest = Some(DeadEnd {
                prefix: stack
                    .iter()
                    .map(|&(call, _, _)| entries.op[call as usize])
                    .collect(),
                state: state.clone(),
                stuck: op,
                candidates,
            });
        }
        // Backtrack. Undoing a read-only operation means the configuration
        // before it failed too (it could have gone first in any successful
        // continuation), so undo the operation before it as well.
        loop {
            let Some((call, previous, read_only)) = stack.pop() else {
                let dead_end = deepest.unwrap_or(DeadEnd {
                    prefix: Vec::new(),
                    state,
                    stuck: op,
                    candidates: Vec::new(),
                });
                return (SearchEnd::Invalid(dead_end), stats);
            };
            state = previous;
            linearized.flip(entries.op[call as usize]);
            entries.unlift(call);
            if !read_only {
                node = entries.next[call as usize];
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::history::{Cas, Op};
    use crate::model::{Register, RegisterInput, RegisterOutput};
    use crate::simulation::{build, fail, info, ok, RegisterSim, Spec};

    fn check(specs: &[Spec]) -> LinearizabilityReport {
        check_history(&Register, &build(specs), &Budget::default()).unwrap()
    }

    fn verdict(specs: &[Spec]) -> Verdict {
        check(specs).verdict
    }

    fn w(v: i64) -> Op {
        Op::Write(v)
    }

    fn r(v: Option<i64>) -> Op {
        Op::Read(v)
    }

    fn cas(expected: i64, new: i64) -> Op {
        Op::Cas(Cas {
            expected: Some(expected),
            new,
        })
    }

    #[test]
    fn sequential_histories() {
        assert_eq!(verdict(&[]), Verdict::Valid);
        assert_eq!(
            verdict(&[ok(1, 0, 1, r(None))]),
            Verdict::Valid,
            "missing key reads nil"
        );
        assert_eq!(verdict(&[ok(1, 0, 1, r(Some(0)))]), Verdict::Invalid);
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                ok(1, 20, 30, r(Some(1))),
                ok(1, 40, 50, cas(1, 2)),
                ok(1, 60, 70, r(Some(2)))
            ]),
            Verdict::Valid
        );
    }

    #[test]
    fn stale_read_is_caught_with_a_useful_counterexample() {
        let report = check(&[
            ok(1, 0, 10, w(1)),
            ok(2, 20, 30, w(2)),
            ok(3, 40, 50, r(Some(1))),
        ]);
        assert_eq!(report.verdict, Verdict::Invalid);
        let c = report.counterexamples().next().unwrap();
        assert_eq!(c.key, "x");
        assert_eq!(c.stuck.op, "read -> 1");
        assert_eq!(c.stuck.process, 3);
        assert_eq!((c.stuck.invoke_time, c.stuck.complete_time), (40, Some(50)));
        assert_eq!(c.prefix_len, 2);
        assert_eq!(c.state, "2");
        assert_eq!(c.prefix_tail.last().unwrap().op, "write 2");
        assert!(c.explanation.contains("read -> 1"), "{}", c.explanation);
        let result = report.to_check_result();
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.anomalies.len(), 1);
        assert_eq!(result.counts["invalid-partitions"], 1);
    }

    #[test]
    fn concurrent_operations_can_be_reordered() {
        // The read of nil overlaps the write, so it may go first.
        assert_eq!(
            verdict(&[
                ok(1, 0, 100, w(1)),
                ok(2, 10, 20, r(Some(1))),
                ok(3, 5, 30, r(None))
            ]),
            Verdict::Valid
        );
        // ... but not once a read that finished earlier saw the write.
        assert_eq!(
            verdict(&[
                ok(1, 0, 100, w(1)),
                ok(2, 10, 20, r(Some(1))),
                ok(3, 30, 40, r(None))
            ]),
            Verdict::Invalid
        );
        // Two concurrent writes, reads agree on an order.
        assert_eq!(
            verdict(&[
                ok(1, 0, 50, w(1)),
                ok(2, 0, 50, w(2)),
                ok(3, 60, 70, r(Some(1))),
                ok(3, 80, 90, r(Some(1)))
            ]),
            Verdict::Valid
        );
        // Reads flip-flopping between two finished writes cannot be ordered.
        assert_eq!(
            verdict(&[
                ok(1, 0, 50, w(1)),
                ok(2, 0, 50, w(2)),
                ok(3, 60, 70, r(Some(1))),
                ok(3, 80, 90, r(Some(2))),
            ]),
            Verdict::Invalid
        );
        // Equal timestamps count as concurrent.
        assert_eq!(
            verdict(&[ok(1, 0, 10, w(1)), ok(2, 10, 20, r(None))]),
            Verdict::Valid
        );
    }

    #[test]
    fn lost_write_is_caught() {
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                ok(1, 20, 30, w(2)),
                ok(2, 40, 50, r(Some(1)))
            ]),
            Verdict::Invalid
        );
    }

    #[test]
    fn double_applied_cas_is_caught() {
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                ok(2, 20, 30, cas(1, 2)),
                ok(3, 40, 50, cas(1, 3)),
                ok(1, 60, 70, r(Some(3)))
            ]),
            Verdict::Invalid
        );
        // Concurrent CASes from the same value: only one may succeed.
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                ok(2, 20, 30, cas(1, 2)),
                ok(3, 20, 30, cas(1, 3))
            ]),
            Verdict::Invalid
        );
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                ok(2, 20, 30, cas(1, 2)),
                fail(3, 20, 30, cas(1, 3)),
                ok(1, 40, 50, r(Some(2)))
            ]),
            Verdict::Valid
        );
    }

    #[test]
    fn info_operation_that_must_have_happened() {
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                info(2, 20, 25, w(2)),
                ok(3, 30, 40, r(Some(2)))
            ]),
            Verdict::Valid
        );
        // It may take effect long after the client gave up on it.
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                info(2, 20, 25, w(2)),
                ok(3, 30, 40, r(Some(1))),
                ok(3, 50, 60, r(Some(2))),
            ]),
            Verdict::Valid
        );
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                info(2, 20, 25, cas(1, 5)),
                ok(3, 30, 40, r(Some(5)))
            ]),
            Verdict::Valid
        );
        // Never completed at all: same as info.
        let mut never = info(2, 20, 0, w(2));
        never.kind = crate::history::EventType::Invoke;
        assert_eq!(
            verdict(&[ok(1, 0, 10, w(1)), never, ok(3, 30, 40, r(Some(2)))]),
            Verdict::Valid
        );
    }

    #[test]
    fn info_operation_that_must_not_have_happened() {
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                info(2, 20, 25, w(2)),
                ok(3, 30, 40, r(Some(1))),
                ok(3, 50, 60, r(Some(1)))
            ]),
            Verdict::Valid
        );
        // But it cannot take effect before it was invoked...
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                ok(3, 12, 15, r(Some(2))),
                info(2, 20, 25, w(2))
            ]),
            Verdict::Invalid
        );
        // ... nor be undone after it was seen.
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                info(2, 20, 25, w(2)),
                ok(3, 30, 40, r(Some(2))),
                ok(3, 50, 60, r(Some(1))),
            ]),
            Verdict::Invalid
        );
    }

    #[test]
    fn failed_operations_did_not_happen() {
        assert_eq!(
            verdict(&[
                ok(1, 0, 10, w(1)),
                fail(2, 20, 30, w(2)),
                ok(3, 40, 50, r(Some(2)))
            ]),
            Verdict::Invalid
        );
        let report = check(&[
            ok(1, 0, 10, w(1)),
            fail(2, 20, 30, w(2)),
            ok(3, 40, 50, r(Some(1))),
        ]);
        assert_eq!(report.verdict, Verdict::Valid);
        assert_eq!(report.failed_ops, 1);
    }

    #[test]
    fn keys_are_checked_independently() {
        let report = check(&[
            ok(1, 0, 10, w(1)).on("a"),
            ok(2, 0, 10, w(1)).on("b"),
            ok(1, 20, 30, r(Some(1))).on("a"),
            ok(2, 20, 30, r(None)).on("b"),
        ]);
        assert_eq!(report.verdict, Verdict::Invalid);
        assert_eq!(report.partitions.len(), 2);
        assert_eq!(report.partitions[0].result, Linearizability::Valid);
        let keys: Vec<&str> = report.counterexamples().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["b"]);
    }

    #[test]
    fn budgets_yield_unknown() {
        let mut sim = RegisterSim::new(7, 4, 1);
        sim.run(400);
        let tiny = Budget {
            max_states: 50,
            ..Budget::default()
        };
        let report = check_history(&Register, &sim.history, &tiny).unwrap();
        assert_eq!(report.verdict, Verdict::Unknown);
        let result = report.to_check_result();
        assert_eq!(result.verdict, Verdict::Unknown);
        assert!(
            result.notes[0].contains("configurations"),
            "{:?}",
            result.notes
        );

        let no_time = Budget {
            time_limit: Duration::ZERO,
            ..Budget::default()
        };
        let report = check_history(&Register, &sim.history, &no_time).unwrap();
        assert_eq!(report.verdict, Verdict::Unknown);

        let no_memory = Budget {
            max_memory_bytes: 1000,
            ..Budget::default()
        };
        match &check_history(&Register, &sim.history, &no_memory)
            .unwrap()
            .partitions[0]
            .result
        {
            Linearizability::Unknown { reason } => assert!(reason.contains("bytes")),
            other => panic!("expected unknown, got {other:?}"),
        }
    }

    /// Reference: tries every order allowed by real time.
    fn brute_force(ops: &[ModelOp<RegisterInput, RegisterOutput>]) -> bool {
        fn go(
            ops: &[ModelOp<RegisterInput, RegisterOutput>],
            done: &mut [bool],
            state: Option<i64>,
        ) -> bool {
            if ops
                .iter()
                .zip(done.iter())
                .all(|(o, &d)| d || o.ret.is_none())
            {
                return true;
            }
            for i in 0..ops.len() {
                if done[i] {
                    continue;
                }
                let must_wait = (0..ops.len())
                    .any(|j| j != i && !done[j] && ops[j].ret.is_some_and(|r| r < ops[i].call));
                if must_wait {
                    continue;
                }
                let output = ops[i].ret.and(ops[i].output.as_ref());
                if let Some(next) = Register.step(&state, &ops[i].input, output) {
                    done[i] = true;
                    if go(ops, done, next) {
                        return true;
                    }
                    done[i] = false;
                }
            }
            false
        }
        go(ops, &mut vec![false; ops.len()], None)
    }

    fn random_small_history(
        rng: &mut StdRng,
        domain: i64,
    ) -> Vec<ModelOp<RegisterInput, RegisterOutput>> {
        let mut ops = Vec::new();
        for process in 0..3u64 {
            let mut t = rng.random_range(0..5u64);
            for _ in 0..rng.random_range(1..=3) {
                let call = t;
                let ret = call + rng.random_range(0..8u64);
                t = ret + rng.random_range(0..4u64);
                let value = |rng: &mut StdRng| rng.random_range(0..domain);
                let (input, output) = match rng.random_range(0..3) {
                    0 => {
                        let v = if rng.random_bool(0.2) {
                            None
                        } else {
                            Some(value(rng))
                        };
                        (RegisterInput::Read, RegisterOutput::Value(v))
                    }
                    1 => (RegisterInput::Write(value(rng)), RegisterOutput::Done),
                    _ => (
                        RegisterInput::Cas {
                            expected: if rng.random_bool(0.2) {
                                None
                            } else {
                                Some(value(rng))
                            },
                            new: value(rng),
                        },
                        RegisterOutput::Done,
                    ),
                };
                let unknown = rng.random_bool(0.2) && input != RegisterInput::Read;
                ops.push(ModelOp {
                    id: ops.len(),
                    process,
                    key: None,
                    input,
                    output: Some(output),
                    call,
                    ret: if unknown { None } else { Some(ret) },
                });
                if unknown {
                    break;
                }
            }
        }
        ops
    }

    #[test]
    fn agrees_with_brute_force_on_random_small_histories() {
        let mut rng = StdRng::seed_from_u64(42);
        let (mut valid, mut invalid) = (0, 0);
        for case in 0..6000 {
            // A small domain makes values collide; larger ones leave some
            // unknown-outcome writes unobserved (dropped) or observed with a
            // unique writer (bounded).
            let ops = random_small_history(&mut rng, [3, 6, 12][case % 3]);
            let expected = brute_force(&ops);
            let report = check_model_ops(&Register, &ops, &Budget::default());
            let got = report.verdict;
            assert_eq!(
                got,
                if expected {
                    Verdict::Valid
                } else {
                    Verdict::Invalid
                },
                "case {case}: {ops:#?}"
            );
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        // Both outcomes must be well represented for the test to mean much.
        assert!(
            valid > 300 && invalid > 300,
            "valid {valid}, invalid {invalid}"
        );
    }

    fn generated(seed: u64, ops: usize, clients: usize, keys: usize) -> RegisterSim {
        let mut sim = RegisterSim::new(seed, clients, keys);
        sim.run(ops);
        sim
    }

    #[test]
    fn large_generated_history_is_valid_and_fast() {
        let sim = generated(1, 10_000, 10, 1);
        let ops = sim.history.operations().unwrap();
        assert!(ops.iter().filter(|o| o.outcome == Outcome::Info).count() > 100);
        let start = Instant::now();
        let report = check_operations(&Register, &ops, &Budget::default());
        let elapsed = start.elapsed();
        assert_eq!(
            report.verdict,
            Verdict::Valid,
            "{:#?}",
            report.partitions[0].result
        );
        let p = &report.partitions[0];
        assert_eq!(
            p.ops + p.dropped_ops + report.failed_ops + report.skipped_ops,
            10_000
        );
        if !cfg!(debug_assertions) {
            assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
        }
        // Several keys.
        let sim = generated(2, 10_000, 10, 5);
        let report = check_history(&Register, &sim.history, &Budget::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Valid);
        assert_eq!(report.partitions.len(), 5);
    }

    /// Positions of `ok` operations in `ops` that wrote a value, by value.
    fn writers(ops: &[Operation]) -> HashMap<i64, usize> {
        let mut by_value = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            if op.outcome == Outcome::Ok {
                match op.invoke {
                    Op::Write(v) | Op::Cas(Cas { new: v, .. }) => {
                        by_value.insert(v, i);
                    }
                    _ => {}
                }
            }
        }
        by_value
    }

    fn read_value(op: &Operation) -> Option<Option<i64>> {
        match (&op.invoke, op.ok_result()) {
            (Op::Read(_), Some(Op::Read(v))) => Some(*v),
            _ => None,
        }
    }

    fn done(op: &Operation) -> u64 {
        op.complete_time.unwrap_or(u64::MAX)
    }

    fn set_read(history: &History, op: &Operation, value: Option<i64>) -> History {
        let mut events = history.events().to_vec();
        let at = op.complete_index.unwrap() as usize;
        events[at].op = Op::Read(value);
        History::from_events(events)
    }

    #[test]
    fn generated_stale_read_is_caught() {
        let sim = generated(3, 2000, 5, 1);
        let ops = sim.history.operations().unwrap();
        let by_value = writers(&ops);
        // A read, and a value whose overwrite finished before the read began.
        let (read, stale) = ops
            .iter()
            .filter(|o| read_value(o).is_some())
            .skip(500)
            .find_map(|read| {
                by_value.iter().find_map(|(&v, &wi)| {
                    let overwritten = ops.iter().any(|x| {
                        x.outcome == Outcome::Ok
                            && matches!(x.invoke, Op::Write(_) | Op::Cas(_))
                            && x.invoke_time > done(&ops[wi])
                            && done(x) < read.invoke_time
                    });
                    (overwritten && read_value(read) != Some(Some(v))).then_some((read, v))
                })
            })
            .unwrap();
        let mutated = set_read(&sim.history, read, Some(stale));
        let report = check_history(&Register, &mutated, &Budget::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Invalid, "{:#?}", report.partitions);
        assert_eq!(
            check_history(&Register, &sim.history, &Budget::default())
                .unwrap()
                .verdict,
            Verdict::Valid
        );
    }

    #[test]
    fn generated_swapped_reads_are_caught() {
        let sim = generated(4, 2000, 5, 1);
        let ops = sim.history.operations().unwrap();
        let by_value = writers(&ops);
        let reads: Vec<&Operation> = ops
            .iter()
            .filter(|o| matches!(read_value(o), Some(Some(_))))
            .collect();
        let writer_of = |o: &Operation| {
            read_value(o)
                .flatten()
                .and_then(|v| by_value.get(&v))
                .map(|&i| &ops[i])
        };
        let (r1, r2) = reads
            .iter()
            .enumerate()
            .find_map(|(i, r1)| {
                let w1 = writer_of(r1)?;
                reads[i + 1..].iter().find_map(|r2| {
                    let w2 = writer_of(r2)?;
                    (done(r1) < r2.invoke_time && done(w1) < w2.invoke_time).then_some((*r1, *r2))
                })
            })
            .unwrap();
        let a = read_value(r1).unwrap();
        let b = read_value(r2).unwrap();
        let mutated = set_read(&set_read(&sim.history, r1, b), r2, a);
        let report = check_history(&Register, &mutated, &Budget::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Invalid);
    }

    #[test]
    fn generated_lost_write_is_caught() {
        let mut sim = generated(5, 1000, 5, 2);
        let key = sim.key(1);
        let (u, v) = (sim.fresh(), sim.fresh());
        sim.sequential(0, &key, Op::Write(u), false);
        sim.sequential(0, &key, Op::Write(v), true); // acknowledged, never applied
        sim.sequential(0, &key, Op::Read(None), false);
        sim.run(1000);
        let report = check_history(&Register, &sim.history, &Budget::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Invalid);
        let c = report.counterexamples().next().unwrap();
        assert_eq!(c.key, key);
        assert_eq!(c.stuck.op, format!("read -> {u}"));
    }
}
