//! The run's clock and its two logs: the history of client operations
//! (`history.jsonl`) and the nemesis log (`nemesis.jsonl`).
//!
//! Both use one monotonic clock (nanoseconds since the run started), so the
//! report can shade nemesis windows behind operations. Events are appended
//! to their files as they happen (a run killed half-way still leaves its
//! record) and kept in memory for the checkers.
//!
//! The recorder also hands out process ids (a client takes a fresh one after
//! every `info` completion) and enforces the run's bounds: an invocation is
//! refused once the op-count cap or the time limit is reached, or after
//! [`Recorder::stop`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::history::{Event, EventType, History, Op};

/// One line of `nemesis.jsonl`: a fault starting or healed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisRecord {
    /// Nanoseconds since the run started (the history's clock).
    pub time: u64,
    /// `start` or `stop`.
    pub phase: NemesisPhase,
    /// The fault's kind: `partition`, `kill`, `pause`, `membership`,
    /// `compaction`.
    pub fault: String,
    /// What exactly, in words (which nodes, which halves).
    pub description: String,
    /// The members affected.
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// Whether a fault starts or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NemesisPhase {
    /// The fault begins.
    Start,
    /// The fault is healed.
    Stop,
}

struct Logs {
    events: Vec<Event>,
    history_file: BufWriter<File>,
    nemesis: Vec<NemesisRecord>,
    nemesis_file: BufWriter<File>,
}

/// Records one run. Shared by every client task (`Arc<Recorder>`).
pub struct Recorder {
    start: Instant,
    deadline: Instant,
    op_cap: u64,
    invoked: AtomicU64,
    next_process: AtomicU64,
    stopped: AtomicBool,
    /// Lock order: only this lock; never held across an await.
    logs: Mutex<Logs>,
}

impl Recorder {
    /// A recorder writing `history.jsonl` and `nemesis.jsonl` into `dir`,
    /// refusing invocations after `time_limit` or `op_cap` invocations.
    ///
    /// # Errors
    /// If the files cannot be created.
    pub fn new(dir: &Path, time_limit: Duration, op_cap: u64) -> Result<Self> {
        let open = |name: &str| -> Result<BufWriter<File>> {
            let path = dir.join(name);
            Ok(BufWriter::new(
                File::create(&path).with_context(|| format!("creating {}", path.display()))?,
            ))
        };
        let start = Instant::now();
        Ok(Self {
            start,
            deadline: start + time_limit,
            op_cap,
            invoked: AtomicU64::new(0),
            next_process: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            logs: Mutex::new(Logs {
                events: Vec::new(),
                history_file: open("history.jsonl")?,
                nemesis: Vec::new(),
                nemesis_file: open("nemesis.jsonl")?,
            }),
        })
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the generation phase ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A fresh process id.
    pub fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    /// Ends the generation phase early (clients stop invoking).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Whether clients should stop invoking: stopped, past the time limit,
    /// or at the op-count cap.
    pub fn done(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
            || Instant::now() >= self.deadline
            || self.invoked.load(Ordering::Relaxed) >= self.op_cap
    }

    /// Records an invocation, unless the run is [`Recorder::done`] (then
    /// returns `false` and records nothing).
    pub fn invoke(&self, process: u64, key: &str, op: Op) -> bool {
        if self.done() {
            return false;
        }
        self.invoked.fetch_add(1, Ordering::Relaxed);
        self.append(process, EventType::Invoke, key, op, None);
        true
    }

    /// Records an invocation whatever the bounds (final reads after the
    /// generation phase).
    pub fn invoke_final(&self, process: u64, key: &str, op: Op) {
        self.append(process, EventType::Invoke, key, op, None);
    }

    /// Records a completion.
    pub fn complete(
        &self,
        process: u64,
        kind: EventType,
        key: &str,
        op: Op,
        error: Option<String>,
    ) {
        self.append(process, kind, key, op, error);
    }

    fn append(&self, process: u64, kind: EventType, key: &str, op: Op, error: Option<String>) {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        // The time is taken under the lock so times never decrease along
        // the history.
        let event = Event {
            index: logs.events.len() as u64,
            time: self.now(),
            process,
            kind,
            key: Some(key.to_owned()),
            op,
            error,
        };
        if serde_json::to_writer(&mut logs.history_file, &event).is_ok() {
            let _ = logs.history_file.write_all(b"\n");
        }
        logs.events.push(event);
    }

    /// Records a nemesis event.
    pub fn nemesis(&self, phase: NemesisPhase, fault: &str, description: &str, nodes: &[String]) {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let record = NemesisRecord {
            time: self.now(),
            phase,
            fault: fault.to_owned(),
            description: description.to_owned(),
            nodes: nodes.to_vec(),
        };
        if serde_json::to_writer(&mut logs.nemesis_file, &record).is_ok() {
            let _ = logs.nemesis_file.write_all(b"\n");
        }
        let _ = logs.nemesis_file.flush();
        logs.nemesis.push(record);
    }

    /// Flushes the files and returns the history and nemesis log so far.
    pub fn snapshot(&self) -> (History, Vec<NemesisRecord>) {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let _ = logs.history_file.flush();
        let _ = logs.nemesis_file.flush();
        (
            History::from_events(logs.events.clone()),
            logs.nemesis.clone(),
        )
    }
}

/// Reads a `nemesis.jsonl` file.
///
/// # Errors
/// If it cannot be read or a line is not a record.
pub fn load_nemesis_log(path: &Path) -> Result<Vec<NemesisRecord>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("nemesis.jsonl line"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_a_valid_history_and_respects_the_cap() {
        let dir = std::env::temp_dir().join(format!("sjp-recorder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = Recorder::new(&dir, Duration::from_secs(60), 2).unwrap();
        let p = r.new_process();
        assert!(r.invoke(p, "k", Op::Write(1)));
        r.complete(
            p,
            EventType::Info,
            "k",
            Op::Write(1),
            Some("timeout".into()),
        );
        let q = r.new_process();
        assert_ne!(p, q);
        assert!(r.invoke(q, "k", Op::Read(None)));
        assert!(!r.invoke(q, "k", Op::Read(None)), "cap of 2 reached");
        r.complete(q, EventType::Ok, "k", Op::Read(Some(1)), None);
        r.nemesis(NemesisPhase::Start, "kill", "kill n1", &["n1".into()]);
        let (h, n) = r.snapshot();
        assert_eq!(h.operations().unwrap().len(), 2);
        let back = History::load(&dir.join("history.jsonl")).unwrap();
        assert_eq!(back, h);
        assert_eq!(load_nemesis_log(&dir.join("nemesis.jsonl")).unwrap(), n);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
