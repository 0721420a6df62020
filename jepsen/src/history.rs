//! Histories: the events a test recorded, their JSON-lines form, and their
//! pairing into operations.
//!
//! A history is a sequence of [`Event`]s. Every client is a *process*: a
//! sequential actor that invokes one operation at a time and then observes
//! exactly one completion for it:
//!
//! - `ok`: the operation happened, and the completion carries its result;
//! - `fail`: the operation certainly did not happen (for example the request
//!   was refused before it was sent, or a compare-and-set's comparison
//!   failed and nothing was written);
//! - `info`: the outcome is unknown (a timeout, a broken connection); the
//!   operation may have taken effect at any point after its invocation, or
//!   never.
//!
//! After an `info` completion the process may still be executing the request
//! somewhere in the system, so it is never reused: **the harness must give
//! the client a fresh process id** for its next operation.
//! [`History::operations`] rejects a history that reuses it. An invocation
//! without any completion at the end of the history is treated like `info`.
//!
//! On disk a history is JSON lines, one event per line, for example:
//!
//! ```text
//! {"index":0,"time":1200,"process":3,"type":"invoke","key":"r1","f":"cas","value":{"expected":1,"new":4}}
//! {"index":1,"time":9800,"process":3,"type":"ok","key":"r1","f":"cas","value":{"expected":1,"new":4}}
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What an event says about its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The process started the operation.
    Invoke,
    /// The operation completed and took effect.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// The outcome of the operation is unknown.
    Info,
}

/// The arguments of a compare-and-set on a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cas {
    /// The value the register must hold for the swap to happen; `None`
    /// means "the key must not exist".
    pub expected: Option<i64>,
    /// The value written if the comparison holds.
    pub new: i64,
}

/// A lease grant: the requested TTL, and on an `ok` completion the lease
/// the server granted and the TTL it granted (which may be longer than
/// requested: servers enforce a minimum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// Requested TTL in seconds.
    pub ttl: i64,
    /// The lease id (completion only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    /// The TTL the server granted, in seconds (completion only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_ttl: Option<i64>,
}

/// One keep-alive of a lease: on an `ok` completion, the TTL the server
/// returned (`0` or less: the lease was not found, i.e. it had ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeepAlive {
    /// The lease.
    pub lease: i64,
    /// The TTL returned, in seconds (completion only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

/// The function of an operation and its value, typed.
///
/// Serialised as two fields of the event, `f` (the kebab-case name) and
/// `value`. An invocation carries the arguments; an `ok` completion carries
/// the result (for reads) or repeats the arguments (for writes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", content = "value", rename_all = "kebab-case")]
pub enum Op {
    /// Register (or counter) read. Invocation: `null`; completion: the value
    /// read, `null` when the key does not exist.
    Read(Option<i64>),
    /// Register write of a value.
    Write(i64),
    /// Register compare-and-set. An `ok` completion means the swap happened;
    /// a failed comparison is a `fail` completion.
    Cas(Cas),
    /// Adds a unique element to a set.
    Add(i64),
    /// Reads a whole set. Invocation: `null`; completion: the elements.
    ReadSet(Option<Vec<i64>>),
    /// Increments a counter by one (read-modify-write). Invocation: `null`;
    /// completion: the value written, when known.
    Increment(Option<i64>),
    /// Acquires a lock. Invocation: `null`; completion: the fence (for
    /// example the revision of the lock key).
    Acquire(Option<i64>),
    /// Acts on the protected resource under a fence. `ok` means the resource
    /// accepted the action.
    Act(i64),
    /// Releases the lock held under a fence.
    Release(i64),
    /// An observation that the lease behind a fence expired (its lock key
    /// vanished); the completion time is when it was observed.
    Expire(i64),
    /// Grants a lease (the event's key names the lease for people, e.g.
    /// `w1-7`; the lease's identity is the id in the completion).
    LeaseGrant(Grant),
    /// Puts the event's key attached to a lease (the value is the lease id).
    LeasePut(i64),
    /// Renews a lease once (one request on a keep-alive stream).
    LeaseKeepAlive(KeepAlive),
    /// Revokes a lease (the value is the lease id).
    LeaseRevoke(i64),
    /// Deletes the event's key (the value is the lease it was attached to).
    Delete(i64),
}

impl Op {
    /// The function's name, as in the `f` field.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Read(_) => "read",
            Op::Write(_) => "write",
            Op::Cas(_) => "cas",
            Op::Add(_) => "add",
            Op::ReadSet(_) => "read-set",
            Op::Increment(_) => "increment",
            Op::Acquire(_) => "acquire",
            Op::Act(_) => "act",
            Op::Release(_) => "release",
            Op::Expire(_) => "expire",
            Op::LeaseGrant(_) => "lease-grant",
            Op::LeasePut(_) => "lease-put",
            Op::LeaseKeepAlive(_) => "lease-keep-alive",
            Op::LeaseRevoke(_) => "lease-revoke",
            Op::Delete(_) => "delete",
        }
    }

    /// Why `completion` cannot complete an invocation of `self`, if it cannot:
    /// a different function, or different arguments for functions whose
    /// completion repeats them.
    fn completion_mismatch(&self, completion: &Op) -> Option<String> {
        let same = match (self, completion) {
            (Op::Read(_), Op::Read(_))
            | (Op::ReadSet(_), Op::ReadSet(_))
            | (Op::Increment(_), Op::Increment(_))
            | (Op::Acquire(_), Op::Acquire(_)) => true,
            (Op::Write(a), Op::Write(b))
            | (Op::Add(a), Op::Add(b))
            | (Op::Act(a), Op::Act(b))
            | (Op::Release(a), Op::Release(b))
            | (Op::Expire(a), Op::Expire(b))
            | (Op::LeasePut(a), Op::LeasePut(b))
            | (Op::LeaseRevoke(a), Op::LeaseRevoke(b))
            | (Op::Delete(a), Op::Delete(b)) => a == b,
            (Op::Cas(a), Op::Cas(b)) => a == b,
            (Op::LeaseGrant(a), Op::LeaseGrant(b)) => a.ttl == b.ttl,
            (Op::LeaseKeepAlive(a), Op::LeaseKeepAlive(b)) => a.lease == b.lease,
            _ => false,
        };
        (!same).then(|| {
            format!(
                "invoked {} but completed with {}",
                serde_json::to_string(self).unwrap_or_else(|_| self.name().to_owned()),
                serde_json::to_string(completion).unwrap_or_else(|_| completion.name().to_owned())
            )
        })
    }
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history; strictly increasing.
    pub index: u64,
    /// Nanoseconds since the start of the test, from one monotonic clock;
    /// non-decreasing along the history.
    pub time: u64,
    /// The sequential process (client) the event belongs to.
    pub process: u64,
    /// Invocation or one of the three completions.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The key (register, set, counter or lock name) the operation is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Function and value.
    #[serde(flatten)]
    pub op: Op,
    /// Error text of a `fail` or `info` completion, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It happened; the result is known.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// It may or may not have happened (including "never completed").
    Info,
}

/// An invocation paired with its completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The process that ran it.
    pub process: u64,
    /// The key it was on.
    pub key: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// The invocation's function and arguments.
    pub invoke: Op,
    /// The completion's function and value; `None` if the history ended
    /// before the operation completed.
    pub completion: Option<Op>,
    /// When it was invoked (ns).
    pub invoke_time: u64,
    /// When it completed (ns); `None` if it never did.
    pub complete_time: Option<u64>,
    /// Index of the invocation event.
    pub invoke_index: u64,
    /// Index of the completion event, if any.
    pub complete_index: Option<u64>,
    /// Error text of the completion, if any.
    pub error: Option<String>,
}

impl Operation {
    /// The function's name.
    pub fn f(&self) -> &'static str {
        self.invoke.name()
    }

    /// The result of an `ok` operation (the completion's op); `None` for
    /// `fail` and `info` operations.
    pub fn ok_result(&self) -> Option<&Op> {
        match self.outcome {
            Outcome::Ok => self.completion.as_ref(),
            Outcome::Fail | Outcome::Info => None,
        }
    }
}

/// Why a history could not be read, written or paired.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading or writing the file failed.
    #[error("history i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not a valid event.
    #[error("history line {line}: {source}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        source: serde_json::Error,
    },
    /// An event could not be serialised.
    #[error("serialising event {index}: {source}")]
    Serialize {
        /// The event's index.
        index: u64,
        /// The serialiser's error.
        source: serde_json::Error,
    },
    /// Indices must strictly increase.
    #[error("event index {index} follows index {previous}; indices must strictly increase")]
    IndexNotIncreasing {
        /// The offending index.
        index: u64,
        /// The index before it.
        previous: u64,
    },
    /// Times must not decrease.
    #[error("event {index} has time {time} ns, before the previous event's {previous} ns")]
    TimeWentBackwards {
        /// The offending event.
        index: u64,
        /// Its time.
        time: u64,
        /// The previous event's time.
        previous: u64,
    },
    /// A completion for a process that has nothing outstanding.
    #[error("event {index}: process {process} completes an operation it never invoked")]
    CompletionWithoutInvoke {
        /// The completion event.
        index: u64,
        /// Its process.
        process: u64,
    },
    /// A process invoked while its previous operation was outstanding.
    #[error(
        "event {index}: process {process} invokes while its invocation at event {pending} is outstanding"
    )]
    ConcurrentInvoke {
        /// The second invocation.
        index: u64,
        /// The process.
        process: u64,
        /// The outstanding invocation.
        pending: u64,
    },
    /// A process was used again after an `info` completion.
    #[error(
        "event {index}: process {process} is reused after its info completion at event {info_index}; \
         the harness must use a fresh process id after an unknown outcome"
    )]
    ProcessReused {
        /// The offending event.
        index: u64,
        /// The process.
        process: u64,
        /// Its `info` completion.
        info_index: u64,
    },
    /// A completion that does not match its invocation.
    #[error("event {index}: process {process}'s completion does not match invocation {invoke_index}: {reason}")]
    MismatchedCompletion {
        /// The completion event.
        index: u64,
        /// The process.
        process: u64,
        /// The invocation event.
        invoke_index: u64,
        /// What differs.
        reason: String,
    },
}

/// A sequence of events, in index order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History {
    events: Vec<Event>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps events as they are; [`History::validate`] or
    /// [`History::operations`] check them.
    pub fn from_events(events: Vec<Event>) -> Self {
        Self { events }
    }

    /// The events.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Appends an event whose index is one past the last event's (0 for the
    /// first) and returns that index. Time and per-process order are the
    /// caller's responsibility; [`History::validate`] checks them.
    pub fn push(
        &mut self,
        time: u64,
        process: u64,
        kind: EventType,
        key: Option<&str>,
        op: Op,
    ) -> u64 {
        let index = self.events.last().map_or(0, |e| e.index.saturating_add(1));
        self.events.push(Event {
            index,
            time,
            process,
            kind,
            key: key.map(str::to_owned),
            op,
            error: None,
        });
        index
    }

    /// Reads JSON lines (blank lines are skipped).
    ///
    /// # Errors
    /// [`HistoryError::Io`] if reading fails, [`HistoryError::Parse`] with
    /// the line number if a line is not an event. The events are not
    /// validated.
    pub fn read_jsonl<R: BufRead>(reader: R) -> Result<Self, HistoryError> {
        let mut events = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
                line: i + 1,
                source,
            })?;
            events.push(event);
        }
        Ok(Self { events })
    }

    /// Writes one JSON object per line.
    ///
    /// # Errors
    /// [`HistoryError::Io`] if writing fails.
    pub fn write_jsonl<W: Write>(&self, mut writer: W) -> Result<(), HistoryError> {
        for event in &self.events {
            serde_json::to_writer(&mut writer, event).map_err(|source| {
                HistoryError::Serialize {
                    index: event.index,
                    source,
                }
            })?;
            writer.write_all(b"\n")?;
        }
        writer.flush()?;
        Ok(())
    }

    /// Reads a JSON-lines file.
    ///
    /// # Errors
    /// As [`History::read_jsonl`], plus failing to open the file.
    pub fn load(path: &Path) -> Result<Self, HistoryError> {
        Self::read_jsonl(BufReader::new(File::open(path)?))
    }

    /// Writes a JSON-lines file, replacing it.
    ///
    /// # Errors
    /// As [`History::write_jsonl`], plus failing to create the file.
    pub fn save(&self, path: &Path) -> Result<(), HistoryError> {
        self.write_jsonl(BufWriter::new(File::create(path)?))
    }

    /// Checks that the history is well formed: see [`History::operations`].
    ///
    /// # Errors
    /// The first problem found, as [`History::operations`].
    pub fn validate(&self) -> Result<(), HistoryError> {
        self.operations().map(|_| ())
    }

    /// Pairs every invocation with its completion, in invocation order.
    ///
    /// An invocation still outstanding at the end of the history becomes an
    /// [`Outcome::Info`] operation without completion.
    ///
    /// # Errors
    /// - [`HistoryError::IndexNotIncreasing`], [`HistoryError::TimeWentBackwards`]
    ///   for events out of order;
    /// - [`HistoryError::CompletionWithoutInvoke`], [`HistoryError::ConcurrentInvoke`]
    ///   for a process that is not sequential;
    /// - [`HistoryError::ProcessReused`] for a process used after `info`;
    /// - [`HistoryError::MismatchedCompletion`] for a completion with another
    ///   function, key or arguments than its invocation.
    pub fn operations(&self) -> Result<Vec<Operation>, HistoryError> {
        let mut ops: Vec<Operation> = Vec::new();
        // process -> position in `ops` of its outstanding invocation
        let mut pending: HashMap<u64, usize> = HashMap::new();
        // process -> index of its info completion
        let mut crashed: HashMap<u64, u64> = HashMap::new();
        let mut previous: Option<&Event> = None;
        for event in &self.events {
            if let Some(prev) = previous {
                if event.index <= prev.index {
                    return Err(HistoryError::IndexNotIncreasing {
                        index: event.index,
                        previous: prev.index,
                    });
                }
                if event.time < prev.time {
                    return Err(HistoryError::TimeWentBackwards {
                        index: event.index,
                        time: event.time,
                        previous: prev.time,
                    });
                }
            }
            previous = Some(event);
            if let Some(&info_index) = crashed.get(&event.process) {
                return Err(HistoryError::ProcessReused {
                    index: event.index,
                    process: event.process,
                    info_index,
                });
            }
            match event.kind {
                EventType::Invoke => {
                    if let Some(&at) = pending.get(&event.process) {
                        return Err(HistoryError::ConcurrentInvoke {
                            index: event.index,
                            process: event.process,
                            pending: ops[at].invoke_index,
                        });
                    }
                    pending.insert(event.process, ops.len());
                    ops.push(Operation {
                        process: event.process,
                        key: event.key.clone(),
                        outcome: Outcome::Info,
                        invoke: event.op.clone(),
                        completion: None,
                        invoke_time: event.time,
                        complete_time: None,
                        invoke_index: event.index,
                        complete_index: None,
                        error: None,
                    });
                }
                EventType::Ok | EventType::Fail | EventType::Info => {
                    let Some(at) = pending.remove(&event.process) else {
                        return Err(HistoryError::CompletionWithoutInvoke {
                            index: event.index,
                            process: event.process,
                        });
                    };
                    let op = &mut ops[at];
                    let mismatch = if op.key != event.key {
                        Some(format!(
                            "invoked on key {:?} but completed on key {:?}",
                            op.key, event.key
                        ))
                    } else {
                        op.invoke.completion_mismatch(&event.op)
                    };
                    if let Some(reason) = mismatch {
                        return Err(HistoryError::MismatchedCompletion {
                            index: event.index,
                            process: event.process,
                            invoke_index: op.invoke_index,
                            reason,
                        });
                    }
                    op.outcome = match event.kind {
                        EventType::Ok => Outcome::Ok,
                        EventType::Fail => Outcome::Fail,
                        _ => Outcome::Info,
                    };
                    op.completion = Some(event.op.clone());
                    op.complete_time = Some(event.time);
                    op.complete_index = Some(event.index);
                    op.error.clone_from(&event.error);
                    if event.kind == EventType::Info {
                        crashed.insert(event.process, event.index);
                    }
                }
            }
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut h = History::new();
        h.push(10, 1, EventType::Invoke, Some("r"), Op::Write(3));
        h.push(11, 2, EventType::Invoke, Some("r"), Op::Read(None));
        h.push(20, 1, EventType::Ok, Some("r"), Op::Write(3));
        h.push(25, 2, EventType::Info, Some("r"), Op::Read(None));
        h.push(
            30,
            1,
            EventType::Invoke,
            Some("r"),
            Op::Cas(Cas {
                expected: Some(3),
                new: 4,
            }),
        );
        h.push(31, 3, EventType::Invoke, Some("s"), Op::Add(7));
        h
    }

    #[test]
    fn jsonl_round_trip() {
        let h = sample();
        let mut buf = Vec::new();
        h.write_jsonl(&mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.lines().next().unwrap().contains(r#""type":"invoke""#));
        assert!(text.contains(r#""f":"cas","value":{"expected":3,"new":4}"#));
        let back = History::read_jsonl(&buf[..]).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn lease_ops_round_trip_and_old_lines_still_parse() {
        let mut h = History::new();
        let grant = Grant {
            ttl: 2,
            lease: None,
            granted_ttl: None,
        };
        let granted = Grant {
            lease: Some(77),
            granted_ttl: Some(3),
            ..grant
        };
        h.push(1, 0, EventType::Invoke, Some("w0-1"), Op::LeaseGrant(grant));
        h.push(2, 0, EventType::Ok, Some("w0-1"), Op::LeaseGrant(granted));
        h.push(3, 0, EventType::Invoke, Some("w0-1/k0"), Op::LeasePut(77));
        h.push(4, 0, EventType::Ok, Some("w0-1/k0"), Op::LeasePut(77));
        let ka = KeepAlive {
            lease: 77,
            ttl: None,
        };
        h.push(
            5,
            0,
            EventType::Invoke,
            Some("w0-1"),
            Op::LeaseKeepAlive(ka),
        );
        let acked = KeepAlive { ttl: Some(3), ..ka };
        h.push(6, 0, EventType::Ok, Some("w0-1"), Op::LeaseKeepAlive(acked));
        h.push(7, 0, EventType::Invoke, Some("w0-1/k0"), Op::Delete(77));
        h.push(8, 0, EventType::Ok, Some("w0-1/k0"), Op::Delete(77));
        h.push(9, 0, EventType::Invoke, Some("w0-1"), Op::LeaseRevoke(77));
        h.push(10, 0, EventType::Info, Some("w0-1"), Op::LeaseRevoke(77));
        let mut buf = Vec::new();
        h.write_jsonl(&mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(
            text.contains(r#""f":"lease-grant","value":{"ttl":2}"#),
            "{text}"
        );
        assert!(text.contains(r#""f":"lease-grant","value":{"ttl":2,"lease":77,"granted_ttl":3}"#));
        assert!(text.contains(r#""f":"lease-keep-alive","value":{"lease":77,"ttl":3}"#));
        assert!(text.contains(r#""f":"lease-revoke","value":77"#));
        let back = History::read_jsonl(&buf[..]).unwrap();
        assert_eq!(back, h);
        let ops = back.operations().unwrap();
        assert_eq!(ops.len(), 5);
        assert_eq!(ops[0].ok_result(), Some(&Op::LeaseGrant(granted)));
        assert_eq!(ops[4].outcome, Outcome::Info);
        // A completion for another lease does not match.
        let mut bad = History::new();
        bad.push(1, 0, EventType::Invoke, Some("l"), Op::LeaseKeepAlive(ka));
        let other = KeepAlive {
            lease: 78,
            ttl: Some(3),
        };
        bad.push(2, 0, EventType::Ok, Some("l"), Op::LeaseKeepAlive(other));
        assert!(matches!(
            bad.operations(),
            Err(HistoryError::MismatchedCompletion { .. })
        ));
    }

    #[test]
    fn parses_hand_written_lines() {
        let text = r#"
{"index":0,"time":1,"process":0,"type":"invoke","key":"x","f":"read","value":null}
{"index":1,"time":2,"process":0,"type":"ok","key":"x","f":"read","value":5}
{"index":2,"time":3,"process":0,"type":"invoke","f":"read-set"}
{"index":3,"time":4,"process":0,"type":"ok","f":"read-set","value":[1,2]}
{"index":4,"time":5,"process":0,"type":"invoke","key":"c","f":"increment","value":null}
{"index":5,"time":6,"process":0,"type":"fail","key":"c","f":"increment","value":null,"error":"conflict"}
"#;
        let h = History::read_jsonl(text.as_bytes()).unwrap();
        let ops = h.operations().unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].completion, Some(Op::Read(Some(5))));
        assert_eq!(ops[1].ok_result(), Some(&Op::ReadSet(Some(vec![1, 2]))));
        assert_eq!(ops[2].outcome, Outcome::Fail);
        assert_eq!(ops[2].error.as_deref(), Some("conflict"));
    }

    #[test]
    fn pairs_and_treats_unfinished_as_info() {
        let ops = sample().operations().unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[0].outcome, Outcome::Ok);
        assert_eq!(ops[0].complete_time, Some(20));
        assert_eq!(ops[1].outcome, Outcome::Info);
        assert_eq!(ops[1].complete_index, Some(3));
        assert_eq!(ops[2].outcome, Outcome::Info);
        assert_eq!(ops[2].complete_time, None);
        assert_eq!(ops[3].f(), "add");
    }

    #[test]
    fn bad_lines_report_line_numbers() {
        let text = "{\"index\":0,\"time\":1,\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"value\":null}\nnot json\n";
        match History::read_jsonl(text.as_bytes()) {
            Err(HistoryError::Parse { line: 2, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let unknown_f = r#"{"index":0,"time":1,"process":0,"type":"invoke","f":"frobnicate"}"#;
        assert!(matches!(
            History::read_jsonl(unknown_f.as_bytes()),
            Err(HistoryError::Parse { line: 1, .. })
        ));
        let bad_value =
            r#"{"index":0,"time":1,"process":0,"type":"invoke","f":"write","value":"x"}"#;
        assert!(History::read_jsonl(bad_value.as_bytes()).is_err());
    }

    #[test]
    fn malformed_histories_are_errors() {
        let mut h = History::new();
        h.push(1, 1, EventType::Ok, None, Op::Read(None));
        assert!(matches!(
            h.operations(),
            Err(HistoryError::CompletionWithoutInvoke { process: 1, .. })
        ));

        let mut h = History::new();
        h.push(1, 1, EventType::Invoke, None, Op::Read(None));
        h.push(2, 1, EventType::Invoke, None, Op::Read(None));
        assert!(matches!(
            h.operations(),
            Err(HistoryError::ConcurrentInvoke { .. })
        ));

        let mut h = History::new();
        h.push(1, 1, EventType::Invoke, None, Op::Write(1));
        h.push(2, 1, EventType::Info, None, Op::Write(1));
        h.push(3, 1, EventType::Invoke, None, Op::Write(2));
        let err = h.operations().unwrap_err();
        assert!(matches!(
            err,
            HistoryError::ProcessReused { info_index: 1, .. }
        ));
        assert!(err.to_string().contains("fresh process id"));

        let mut h = History::new();
        h.push(1, 1, EventType::Invoke, None, Op::Write(1));
        h.push(2, 1, EventType::Ok, None, Op::Write(2));
        assert!(matches!(
            h.operations(),
            Err(HistoryError::MismatchedCompletion { .. })
        ));

        let mut h = History::new();
        h.push(1, 1, EventType::Invoke, Some("a"), Op::Read(None));
        h.push(2, 1, EventType::Ok, Some("b"), Op::Read(None));
        assert!(matches!(
            h.operations(),
            Err(HistoryError::MismatchedCompletion { .. })
        ));

        let mut h = History::new();
        h.push(5, 1, EventType::Invoke, None, Op::Read(None));
        h.push(4, 2, EventType::Invoke, None, Op::Read(None));
        assert!(matches!(
            h.operations(),
            Err(HistoryError::TimeWentBackwards { .. })
        ));

        let mut events = sample().events().to_vec();
        events[1].index = 0;
        assert!(matches!(
            History::from_events(events).validate(),
            Err(HistoryError::IndexNotIncreasing { .. })
        ));
    }
}
