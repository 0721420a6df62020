//! A simulated key-value register service for the checkers' self-tests
//! (compiled for tests only).
//!
//! Concurrent simulated clients invoke reads, writes and compare-and-sets on
//! a few keys; each operation takes effect atomically at one instant between
//! its invocation and its completion, so the generated history is
//! linearizable by construction. Some operations fail (not applied) or end
//! with an unknown outcome (applied or not, the client then gets a fresh
//! process id). Faults can be injected on purpose, such as acknowledging a
//! write without applying it.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{Cas, EventType, History, Op};

struct Pending {
    key: String,
    op: Op,
    /// Completion type and op, once applied (or decided not to apply).
    completion: Option<(EventType, Op)>,
}

struct Client {
    process: u64,
    pending: Option<Pending>,
}

/// The simulated service and its recorded history.
pub(crate) struct RegisterSim {
    pub rng: StdRng,
    pub history: History,
    /// Probability that an operation fails without taking effect.
    pub fail_rate: f64,
    /// Probability that an operation's outcome is unknown.
    pub info_rate: f64,
    time: u64,
    keys: Vec<String>,
    values: HashMap<String, Option<i64>>,
    next_value: i64,
    next_process: u64,
    clients: Vec<Client>,
    invoked: usize,
}

impl RegisterSim {
    pub fn new(seed: u64, clients: usize, keys: usize) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            history: History::new(),
            fail_rate: 0.05,
            info_rate: 0.03,
            time: 0,
            keys: (0..keys).map(|k| format!("r{k}")).collect(),
            values: HashMap::new(),
            next_value: 1,
            next_process: clients as u64,
            clients: (0..clients)
                .map(|c| Client {
                    process: c as u64,
                    pending: None,
                })
                .collect(),
            invoked: 0,
        }
    }

    fn tick(&mut self) {
        self.time += self.rng.random_range(1..=50);
    }

    fn fresh_value(&mut self) -> i64 {
        self.next_value += 1;
        self.next_value
    }

    fn random_op(&mut self, key: &str) -> Op {
        let roll: f64 = self.rng.random();
        if roll < 0.4 {
            Op::Read(None)
        } else if roll < 0.75 {
            let v = self.fresh_value();
            Op::Write(v)
        } else {
            let current = self.values.get(key).copied().flatten();
            let expected = if self.rng.random_bool(0.7) {
                current
            } else {
                Some(self.rng.random_range(0..self.next_value))
            };
            let new = self.fresh_value();
            Op::Cas(Cas { expected, new })
        }
    }

    pub fn invoke(&mut self, client: usize, key: &str, op: Op) {
        self.tick();
        let c = &mut self.clients[client];
        self.history.push(
            self.time,
            c.process,
            EventType::Invoke,
            Some(key),
            op.clone(),
        );
        c.pending = Some(Pending {
            key: key.to_owned(),
            op,
            completion: None,
        });
        self.invoked += 1;
    }

    /// Lets the client's pending operation take effect (or not): with
    /// `forced_ok` it succeeds; with `lose` a write is acknowledged but not
    /// applied.
    pub fn apply(&mut self, client: usize, forced_ok: bool, lose: bool) {
        self.tick();
        let roll: f64 = self.rng.random();
        let fate = if forced_ok || roll >= self.fail_rate + self.info_rate {
            EventType::Ok
        } else if roll < self.fail_rate {
            EventType::Fail
        } else {
            EventType::Info
        };
        let applied = match fate {
            EventType::Ok => !lose,
            EventType::Info => self.rng.random_bool(0.5),
            _ => false,
        };
        let Some(p) = self.clients[client].pending.as_mut() else {
            return;
        };
        let slot = self.values.entry(p.key.clone()).or_insert(None);
        let mut kind = fate;
        let op = match &p.op {
            Op::Read(_) => Op::Read(*slot),
            Op::Write(v) => {
                if applied {
                    *slot = Some(*v);
                }
                Op::Write(*v)
            }
            Op::Cas(c) => {
                if *slot == c.expected {
                    if applied {
                        *slot = Some(c.new);
                    }
                } else if kind == EventType::Ok && !lose {
                    kind = EventType::Fail;
                }
                Op::Cas(*c)
            }
            other => other.clone(),
        };
        let op = if kind == EventType::Ok {
            op
        } else {
            p.op.clone()
        };
        p.completion = Some((kind, op));
    }

    pub fn complete(&mut self, client: usize) {
        self.tick();
        let c = &mut self.clients[client];
        let Some(p) = c.pending.take() else { return };
        let Some((kind, op)) = p.completion else {
            c.pending = Some(p);
            return;
        };
        self.history
            .push(self.time, c.process, kind, Some(&p.key), op);
        if kind == EventType::Info {
            c.process = self.next_process;
            self.next_process += 1;
        }
    }

    /// Runs `ops` more random operations with all clients concurrently, and
    /// lets them all complete.
    pub fn run(&mut self, ops: usize) {
        let target = self.invoked + ops;
        loop {
            let client = self.rng.random_range(0..self.clients.len());
            match &self.clients[client].pending {
                None if self.invoked < target => {
                    let key = self.keys[self.rng.random_range(0..self.keys.len())].clone();
                    let op = self.random_op(&key);
                    self.invoke(client, &key, op);
                }
                None => {
                    if self.clients.iter().all(|c| c.pending.is_none()) {
                        return;
                    }
                }
                Some(p) if p.completion.is_none() => self.apply(client, false, false),
                Some(_) => self.complete(client),
            }
        }
    }

    /// Runs one operation alone on a client, forced to succeed (`lose`: a
    /// write is acknowledged without being applied).
    pub fn sequential(&mut self, client: usize, key: &str, op: Op, lose: bool) {
        self.invoke(client, key, op);
        self.apply(client, true, lose);
        self.complete(client);
    }

    pub fn key(&self, k: usize) -> String {
        self.keys[k].clone()
    }

    pub fn fresh(&mut self) -> i64 {
        self.fresh_value()
    }
}

/// One operation of a hand-written history: process, key, invocation time,
/// completion time and type (`EventType::Invoke`: never completes), the
/// invoked op and the completion's op.
pub(crate) struct Spec {
    pub process: u64,
    pub key: &'static str,
    pub start: u64,
    pub end: u64,
    pub kind: EventType,
    pub invoke: Op,
    pub completion: Op,
}

fn spec(process: u64, start: u64, end: u64, kind: EventType, op: Op) -> Spec {
    let invoke = match op {
        Op::Read(_) => Op::Read(None),
        Op::ReadSet(_) => Op::ReadSet(None),
        Op::Increment(_) => Op::Increment(None),
        Op::Acquire(_) => Op::Acquire(None),
        ref other => other.clone(),
    };
    Spec {
        process,
        key: "x",
        start,
        end,
        kind,
        invoke,
        completion: op,
    }
}

/// An operation that completed `ok` with `op` (its invocation is `op` with
/// any result stripped).
pub(crate) fn ok(process: u64, start: u64, end: u64, op: Op) -> Spec {
    spec(process, start, end, EventType::Ok, op)
}

/// An operation that failed.
pub(crate) fn fail(process: u64, start: u64, end: u64, op: Op) -> Spec {
    spec(process, start, end, EventType::Fail, op)
}

/// An operation with unknown outcome, reported at `end`.
pub(crate) fn info(process: u64, start: u64, end: u64, op: Op) -> Spec {
    let mut s = spec(process, start, end, EventType::Info, op);
    s.completion = s.invoke.clone();
    s
}

impl Spec {
    pub fn on(mut self, key: &'static str) -> Self {
        self.key = key;
        self
    }
}

/// The history of hand-written operations, events in time order
/// (completions before invocations at equal times).
pub(crate) fn build(specs: &[Spec]) -> History {
    let mut events: Vec<(u64, u8, usize)> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        events.push((s.start, 1, i));
        if s.kind != EventType::Invoke {
            events.push((s.end, 0, i));
        }
    }
    events.sort();
    let mut h = History::new();
    for (time, kind, i) in events {
        let s = &specs[i];
        if kind == 1 {
            h.push(
                time,
                s.process,
                EventType::Invoke,
                Some(s.key),
                s.invoke.clone(),
            );
        } else {
            h.push(time, s.process, s.kind, Some(s.key), s.completion.clone());
        }
    }
    h
}
