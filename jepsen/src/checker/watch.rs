//! The watch checker: several clients watch the same key prefix from some
//! revision on, reconnecting and resuming after faults; did every one of them
//! see the same, complete, ordered history of changes, and does that history
//! lead to the final state?
//!
//! The input is a [`WatchLog`] the harness records (serialisable, so it can
//! be stored next to the history): per client the events it received, in
//! order, across all its reconnections; optionally the state before the
//! first watched revision, the acknowledged writes with their revisions, and
//! a final read of the prefix with its revision.
//!
//! A client's *window* is the range of revisions it claims to have seen
//! completely: from its `start_revision` to its `progress_revision` (or its
//! last event's revision). A client that cannot resume where it left off
//! (for example after compaction) must be recorded as a new client with its
//! own start revision.
//!
//! Checks, each reported as a [`WatchAnomaly`] with specifics:
//!
//! - **order**: each client's revisions never decrease (so the events of one
//!   revision — one transaction — are contiguous);
//! - **duplicates**: no client receives the same (revision, key) twice;
//! - **outside-prefix** events, and **inconsistent** events (a put whose
//!   `mod_revision` is not its revision, a put without value);
//! - **gaps**: every event that any client (or the writer, for acknowledged
//!   writes) saw with a revision inside a client's window must have been
//!   received by that client; a client that received only part of a
//!   revision's events has a **torn revision**;
//! - **disagreement**: clients (and the writer) report the same event for the
//!   same (revision, key);
//! - **final state**: replaying the union of events from the initial state
//!   yields the final read, key by key (with consistent `version` and
//!   `create_revision` along the way). This needs the clients' windows to
//!   cover every revision from the initial state to the final read; if they
//!   do not, the comparison is skipped with a note.
//!
//! A change that *no* client saw and that the writer did not report cannot
//! be seen as a gap (revisions are global, so numbering gaps are normal); the
//! final-state comparison and the `writes` list are what catch it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::verdict::{Anomaly, CheckResult, Verdict};

/// The kind of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One received watch event (or one acknowledged write).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The revision of the change.
    pub revision: i64,
    /// The key changed.
    pub key: String,
    /// Put or delete.
    #[serde(rename = "type")]
    pub kind: ChangeKind,
    /// The new value of a put.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The key's creation revision after a put (0: not recorded).
    #[serde(default)]
    pub create_revision: i64,
    /// The key's modification revision (0: not recorded).
    #[serde(default)]
    pub mod_revision: i64,
    /// The key's version after a put (0: not recorded).
    #[serde(default)]
    pub version: i64,
}

impl WatchEvent {
    /// A PUT of `value` to `key` at `revision`, with the metadata the checkers do not
    /// compare left at zero (what workloads record for their own writes).
    pub fn put(revision: i64, key: &str, value: &str) -> Self {
        WatchEvent {
            revision,
            key: key.to_owned(),
            kind: ChangeKind::Put,
            value: Some(value.to_owned()),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
        }
    }
}

impl WatchEvent {
    /// Whether two reports of the same (revision, key) describe the same
    /// change; metadata only counts where both recorded it.
    fn agrees_with(&self, other: &WatchEvent) -> bool {
        let meta = |a: i64, b: i64| a == 0 || b == 0 || a == b;
        self.kind == other.kind
            && (self.kind == ChangeKind::Delete || self.value == other.value)
            && meta(self.create_revision, other.create_revision)
            && meta(self.mod_revision, other.mod_revision)
            && meta(self.version, other.version)
    }

    fn describe(&self) -> String {
        match self.kind {
            ChangeKind::Put => format!(
                "put {}={:?} (create {}, mod {}, version {})",
                self.key,
                self.value.as_deref().unwrap_or(""),
                self.create_revision,
                self.mod_revision,
                self.version
            ),
            ChangeKind::Delete => format!("delete {}", self.key),
        }
    }
}

/// What one watching client received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchClient {
    /// Its name.
    pub id: String,
    /// The first revision it watched (inclusive).
    pub start_revision: i64,
    /// The revision up to which it is known to have received everything
    /// (e.g. a progress notification or the last response's header
    /// revision); defaults to its last event's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_revision: Option<i64>,
    /// The events, in the order received.
    pub events: Vec<WatchEvent>,
}

impl WatchClient {
    /// The last revision of its window (`start_revision - 1` if empty).
    pub fn end_revision(&self) -> i64 {
        let last = self.events.iter().map(|e| e.revision).max();
        last.into_iter()
            .chain(self.progress_revision)
            .max()
            .unwrap_or(self.start_revision.saturating_sub(1))
    }
}

/// A key and its value with metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Creation revision (0: not recorded).
    #[serde(default)]
    pub create_revision: i64,
    /// Last modification revision (0: not recorded).
    #[serde(default)]
    pub mod_revision: i64,
    /// Version (0: not recorded).
    #[serde(default)]
    pub version: i64,
}

/// The keys under the prefix at a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The revision read at.
    pub revision: i64,
    /// The keys (those outside the prefix are ignored).
    pub kvs: Vec<Kv>,
}

/// Everything the watch workload recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchLog {
    /// The watched prefix.
    pub prefix: String,
    /// The state just before the watched revisions (default: empty at
    /// revision 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Snapshot>,
    /// The watching clients.
    pub clients: Vec<WatchClient>,
    /// Acknowledged writes under the prefix with their revisions, if the
    /// writer recorded them.
    #[serde(default)]
    pub writes: Vec<WatchEvent>,
    /// A final read of the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_state: Option<Snapshot>,
}

/// Something wrong in a watch log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WatchAnomaly {
    /// A client's revision went backwards.
    OutOfOrder {
        /// The client.
        client: String,
        /// Position of the event in its list.
        position: usize,
        /// The event's revision.
        revision: i64,
        /// The revision before it.
        previous: i64,
    },
    /// A client received the same (revision, key) more than once.
    Duplicate {
        /// The client.
        client: String,
        /// The revision.
        revision: i64,
        /// The key.
        key: String,
        /// Positions in its list.
        positions: Vec<usize>,
    },
    /// An event for a key outside the watched prefix.
    OutsidePrefix {
        /// The client.
        client: String,
        /// The revision.
        revision: i64,
        /// The key.
        key: String,
    },
    /// An event that contradicts itself.
    Inconsistent {
        /// The client (or `writer`).
        client: String,
        /// The revision.
        revision: i64,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A client missed a whole revision others saw inside its window.
    Gap {
        /// The client.
        client: String,
        /// The revision missed.
        revision: i64,
        /// Its keys.
        keys: Vec<String>,
        /// Who saw it.
        seen_by: String,
    },
    /// A client received only part of a revision's events.
    TornRevision {
        /// The client.
        client: String,
        /// The revision.
        revision: i64,
        /// The keys it missed.
        missing: Vec<String>,
        /// Who saw them.
        seen_by: String,
    },
    /// Two reports of the same (revision, key) differ.
    Disagreement {
        /// The revision.
        revision: i64,
        /// The key.
        key: String,
        /// One reporter and what it saw.
        first: (String, String),
        /// Another reporter and what it saw.
        second: (String, String),
    },
    /// Replaying the events contradicts a key's metadata.
    BadMetadata {
        /// The revision.
        revision: i64,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Replaying the events does not give the final read.
    FinalMismatch {
        /// The key.
        key: String,
        /// The value after replay (`None`: absent).
        replayed: Option<String>,
        /// The value read (`None`: absent).
        read: Option<String>,
    },
}

impl WatchAnomaly {
    /// A short kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            WatchAnomaly::OutOfOrder { .. } => "out-of-order",
            WatchAnomaly::Duplicate { .. } => "duplicate",
            WatchAnomaly::OutsidePrefix { .. } => "outside-prefix",
            WatchAnomaly::Inconsistent { .. } => "inconsistent",
            WatchAnomaly::Gap { .. } => "gap",
            WatchAnomaly::TornRevision { .. } => "torn-revision",
            WatchAnomaly::Disagreement { .. } => "disagreement",
            WatchAnomaly::BadMetadata { .. } => "bad-metadata",
            WatchAnomaly::FinalMismatch { .. } => "final-mismatch",
        }
    }

    /// The key (client or key) the anomaly is about.
    fn subject(&self) -> &str {
        match self {
            WatchAnomaly::OutOfOrder { client, .. }
            | WatchAnomaly::Duplicate { client, .. }
            | WatchAnomaly::OutsidePrefix { client, .. }
            | WatchAnomaly::Inconsistent { client, .. }
            | WatchAnomaly::Gap { client, .. }
            | WatchAnomaly::TornRevision { client, .. } => client,
            WatchAnomaly::Disagreement { key, .. }
            | WatchAnomaly::BadMetadata { key, .. }
            | WatchAnomaly::FinalMismatch { key, .. } => key,
        }
    }

    /// The anomaly in words.
    pub fn describe(&self) -> String {
        match self {
            WatchAnomaly::OutOfOrder { client, position, revision, previous } => format!(
                "client {client}: event #{position} has revision {revision} after revision {previous}"
            ),
            WatchAnomaly::Duplicate { client, revision, key, positions } => format!(
                "client {client}: revision {revision} key {key} received {} times (events {positions:?})",
                positions.len()
            ),
            WatchAnomaly::OutsidePrefix { client, revision, key } => {
                format!("client {client}: revision {revision} key {key} is outside the watched prefix")
            }
            WatchAnomaly::Inconsistent { client, revision, key, reason } => {
                format!("{client}: revision {revision} key {key}: {reason}")
            }
            WatchAnomaly::Gap { client, revision, keys, seen_by } => format!(
                "client {client}: missed revision {revision} ({}) inside its window; seen by {seen_by}",
                keys.join(", ")
            ),
            WatchAnomaly::TornRevision { client, revision, missing, seen_by } => format!(
                "client {client}: received only part of revision {revision}, missing {} (seen by {seen_by})",
                missing.join(", ")
            ),
            WatchAnomaly::Disagreement { revision, key, first, second } => format!(
                "revision {revision} key {key}: {} saw {}, {} saw {}",
                first.0, first.1, second.0, second.1
            ),
            WatchAnomaly::BadMetadata { revision, key, reason } => {
                format!("revision {revision} key {key}: {reason}")
            }
            WatchAnomaly::FinalMismatch { key, replayed, read } => format!(
                "key {key}: replaying the events gives {replayed:?}, the final read gave {read:?}"
            ),
        }
    }
}

/// One client in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSummary {
    /// The client.
    pub id: String,
    /// First revision of its window.
    pub start_revision: i64,
    /// Last revision of its window.
    pub end_revision: i64,
    /// Events received.
    pub events: usize,
    /// Events it missed inside its window.
    pub missed: usize,
}

/// The result of the watch checker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatchReport {
    /// Invalid if there is any anomaly; unknown if there were no clients.
    pub verdict: Verdict,
    /// Per client.
    pub clients: Vec<ClientSummary>,
    /// Distinct revisions seen by anyone.
    pub revisions: usize,
    /// Distinct events seen by anyone.
    pub events: usize,
    /// Whether the replay was compared to the final read.
    pub final_state_checked: bool,
    /// Everything wrong.
    pub anomalies: Vec<WatchAnomaly>,
    /// Remarks (checks skipped and why).
    pub notes: Vec<String>,
}

impl WatchReport {
    /// The uniform result (checker `watch`).
    pub fn to_check_result(&self) -> CheckResult {
        let mut r = CheckResult::new("watch", self.verdict);
        r.count("clients", self.clients.len() as u64)
            .count("revisions", self.revisions as u64)
            .count("events", self.events as u64)
            .count("anomalies", self.anomalies.len() as u64);
        let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
        for a in &self.anomalies {
            *by_kind.entry(a.kind()).or_default() += 1;
            r.anomaly(Anomaly::new(a.kind(), Some(a.subject()), a.describe()));
        }
        for (kind, n) in by_kind {
            r.count(kind, n);
        }
        for n in &self.notes {
            r.note(n.clone());
        }
        r.details(self);
        r
    }
}

/// Who first reported each (revision, key), and what.
type Union<'a> = BTreeMap<i64, BTreeMap<&'a str, (&'a WatchEvent, &'a str)>>;

/// Checks a watch log.
pub fn check(log: &WatchLog) -> WatchReport {
    let mut anomalies = Vec::new();
    let mut notes = Vec::new();
    let in_prefix = |key: &str| key.starts_with(&log.prefix);

    // Per client: order, duplicates, prefix, consistency.
    for c in &log.clients {
        let mut positions: HashMap<(i64, &str), Vec<usize>> = HashMap::new();
        let mut previous: Option<i64> = None;
        for (i, e) in c.events.iter().enumerate() {
            if let Some(p) = previous.filter(|&p| e.revision < p) {
                anomalies.push(WatchAnomaly::OutOfOrder {
                    client: c.id.clone(),
                    position: i,
                    revision: e.revision,
                    previous: p,
                });
            }
            previous = Some(previous.map_or(e.revision, |p| p.max(e.revision)));
            positions.entry((e.revision, &e.key)).or_default().push(i);
            if !in_prefix(&e.key) {
                anomalies.push(WatchAnomaly::OutsidePrefix {
                    client: c.id.clone(),
                    revision: e.revision,
                    key: e.key.clone(),
                });
            }
            if let Some(reason) = inconsistency(e) {
                anomalies.push(WatchAnomaly::Inconsistent {
                    client: c.id.clone(),
                    revision: e.revision,
                    key: e.key.clone(),
                    reason,
                });
            }
        }
        let mut dups: Vec<_> = positions.into_iter().filter(|(_, p)| p.len() > 1).collect();
        dups.sort();
        for ((revision, key), positions) in dups {
            anomalies.push(WatchAnomaly::Duplicate {
                client: c.id.clone(),
                revision,
                key: key.to_owned(),
                positions,
            });
        }
    }
    for w in &log.writes {
        if let Some(reason) = inconsistency(w) {
            anomalies.push(WatchAnomaly::Inconsistent {
                client: "writer".to_owned(),
                revision: w.revision,
                key: w.key.clone(),
                reason,
            });
        }
    }

    // The union of everything seen, and disagreements.
    let mut union: Union = BTreeMap::new();
    let reports = log
        .writes
        .iter()
        .filter(|w| in_prefix(&w.key))
        .map(|w| ("writer", w))
        .chain(
            log.clients
                .iter()
                .flat_map(|c| c.events.iter().map(move |e| (c.id.as_str(), e))),
        );
    let mut disagreeing: BTreeSet<(i64, &str, &str)> = BTreeSet::new();
    for (who, e) in reports {
        let slot = union.entry(e.revision).or_default();
        match slot.get(e.key.as_str()) {
            None => {
                slot.insert(&e.key, (e, who));
            }
            Some((first, first_who)) => {
                if !first.agrees_with(e) && disagreeing.insert((e.revision, &e.key, who)) {
                    anomalies.push(WatchAnomaly::Disagreement {
                        revision: e.revision,
                        key: e.key.clone(),
                        first: (first_who.to_string(), first.describe()),
                        second: (who.to_owned(), e.describe()),
                    });
                }
            }
        }
    }

    // Gaps: everything seen inside a client's window.
    let mut clients = Vec::new();
    for c in &log.clients {
        let end = c.end_revision();
        let mut got: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
        for e in &c.events {
            got.entry(e.revision).or_default().insert(&e.key);
        }
        let mut missed = 0;
        let window = if end >= c.start_revision {
            union.range(c.start_revision..=end)
        } else {
            union.range(0..0)
        };
        for (&revision, events) in window {
            let have = got.get(&revision);
            let missing: Vec<(&str, &str)> = events
                .iter()
                .filter(|(key, _)| have.is_none_or(|h| !h.contains(*key)))
                .map(|(key, (_, who))| (*key, *who))
                .collect();
            if missing.is_empty() {
                continue;
            }
            missed += missing.len();
            let seen_by = missing[0].1.to_owned();
            let keys: Vec<String> = missing.iter().map(|(k, _)| (*k).to_owned()).collect();
            anomalies.push(if have.is_some() {
                WatchAnomaly::TornRevision {
                    client: c.id.clone(),
                    revision,
                    missing: keys,
                    seen_by,
                }
            } else {
                WatchAnomaly::Gap {
                    client: c.id.clone(),
                    revision,
                    keys,
                    seen_by,
                }
            });
        }
        clients.push(ClientSummary {
            id: c.id.clone(),
            start_revision: c.start_revision,
            end_revision: end,
            events: c.events.len(),
            missed,
        });
    }

    // Replay and compare with the final read.
    let initial = log.initial.clone().unwrap_or_default();
    let mut final_state_checked = false;
    match &log.final_state {
        None => notes.push("no final read: the final state was not compared".to_owned()),
        Some(fin) => {
            let mut windows: Vec<(i64, i64)> = log
                .clients
                .iter()
                .map(|c| (c.start_revision, c.end_revision()))
                .collect();
            windows.sort_unstable();
            let mut covered = initial.revision;
            for (start, end) in windows {
                if start <= covered.saturating_add(1) {
                    covered = covered.max(end);
                }
            }
            if covered < fin.revision {
                notes.push(format!(
                    "the watchers covered revisions {}..={covered} only, not up to the final read at \
                     revision {}: the final state was not compared",
                    initial.revision.saturating_add(1),
                    fin.revision
                ));
            } else {
                final_state_checked = true;
                replay(log, &initial, fin, &union, &mut anomalies);
            }
        }
    }

    let verdict = if !anomalies.is_empty() {
        Verdict::Invalid
    } else if log.clients.is_empty() {
        notes.push("no watch clients".to_owned());
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    WatchReport {
        verdict,
        clients,
        revisions: union.len(),
        events: union.values().map(BTreeMap::len).sum(),
        final_state_checked,
        anomalies,
        notes,
    }
}

fn inconsistency(e: &WatchEvent) -> Option<String> {
    match e.kind {
        ChangeKind::Put if e.value.is_none() => Some("a put without value".to_owned()),
        ChangeKind::Put if e.mod_revision != 0 && e.mod_revision != e.revision => Some(format!(
            "a put at revision {} with mod_revision {}",
            e.revision, e.mod_revision
        )),
        ChangeKind::Put if e.create_revision > e.revision => Some(format!(
            "a put at revision {} with create_revision {}",
            e.revision, e.create_revision
        )),
        _ => None,
    }
}

fn replay(
    log: &WatchLog,
    initial: &Snapshot,
    fin: &Snapshot,
    union: &Union,
    anomalies: &mut Vec<WatchAnomaly>,
) {
    let in_prefix = |key: &str| key.starts_with(&log.prefix);
    let mut state: BTreeMap<&str, Kv> = initial
        .kvs
        .iter()
        .filter(|kv| in_prefix(&kv.key))
        .map(|kv| (kv.key.as_str(), kv.clone()))
        .collect();
    let first = initial.revision.saturating_add(1);
    let replayed = if fin.revision >= first {
        union.range(first..=fin.revision)
    } else {
        union.range(0..0)
    };
    for (&revision, events) in replayed {
        for (&key, (e, _)) in events {
            match e.kind {
                ChangeKind::Put => {
                    let (version, create) = match state.get(key) {
                        Some(prev) => (
                            (prev.version != 0).then_some(prev.version + 1),
                            (prev.create_revision != 0).then_some(prev.create_revision),
                        ),
                        None => (Some(1), Some(revision)),
                    };
                    let mut problems = Vec::new();
                    if let Some(v) = version.filter(|&v| e.version != 0 && e.version != v) {
                        problems.push(format!("version {} where {v} was due", e.version));
                    }
                    if let Some(c) =
                        create.filter(|&c| e.create_revision != 0 && e.create_revision != c)
                    {
                        problems.push(format!(
                            "create_revision {} where {c} was due",
                            e.create_revision
                        ));
                    }
                    if !problems.is_empty() {
                        anomalies.push(WatchAnomaly::BadMetadata {
                            revision,
                            key: key.to_owned(),
                            reason: problems.join(", "),
                        });
                    }
                    state.insert(
                        key,
                        Kv {
                            key: key.to_owned(),
                            value: e.value.clone().unwrap_or_default(),
                            create_revision: if e.create_revision != 0 {
                                e.create_revision
                            } else {
                                create.unwrap_or(0)
                            },
                            mod_revision: revision,
                            version: if e.version != 0 {
                                e.version
                            } else {
                                version.unwrap_or(0)
                            },
                        },
                    );
                }
                ChangeKind::Delete => {
                    if state.remove(key).is_none() {
                        anomalies.push(WatchAnomaly::BadMetadata {
                            revision,
                            key: key.to_owned(),
                            reason: "deleted while it did not exist".to_owned(),
                        });
                    }
                }
            }
        }
    }
    let read: BTreeMap<&str, &Kv> = fin
        .kvs
        .iter()
        .filter(|kv| in_prefix(&kv.key))
        .map(|kv| (kv.key.as_str(), kv))
        .collect();
    let keys: BTreeSet<&str> = state.keys().chain(read.keys()).copied().collect();
    for key in keys {
        let replayed = state.get(key);
        let got = read.get(key);
        let same = match (replayed, got) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let meta = |x: i64, y: i64| x == 0 || y == 0 || x == y;
                a.value == b.value
                    && meta(a.mod_revision, b.mod_revision)
                    && meta(a.version, b.version)
                    && meta(a.create_revision, b.create_revision)
            }
            _ => false,
        };
        if !same {
            anomalies.push(WatchAnomaly::FinalMismatch {
                key: key.to_owned(),
                replayed: replayed.map(|kv| kv.value.clone()),
                read: got.map(|kv| kv.value.clone()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn put(revision: i64, key: &str, value: &str) -> WatchEvent {
        WatchEvent::put(revision, key, value)
    }

    fn del(revision: i64, key: &str) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.to_owned(),
            kind: ChangeKind::Delete,
            value: None,
            create_revision: 0,
            mod_revision: revision,
            version: 0,
        }
    }

    fn client(id: &str, start: i64, events: Vec<WatchEvent>) -> WatchClient {
        WatchClient {
            id: id.to_owned(),
            start_revision: start,
            progress_revision: None,
            events,
        }
    }

    fn kv(key: &str, value: &str) -> Kv {
        Kv {
            key: key.to_owned(),
            value: value.to_owned(),
            create_revision: 0,
            mod_revision: 0,
            version: 0,
        }
    }

    fn small_log() -> WatchLog {
        let events = vec![
            put(2, "p/a", "1"),
            put(3, "p/a", "2"),
            put(3, "p/b", "1"),
            del(5, "p/a"),
        ];
        WatchLog {
            prefix: "p/".to_owned(),
            initial: None,
            clients: vec![
                client("c1", 1, events.clone()),
                client("c2", 3, events[1..].to_vec()),
            ],
            writes: vec![],
            final_state: Some(Snapshot {
                revision: 6,
                kvs: vec![kv("p/b", "1"), kv("other", "x")],
            }),
        }
    }

    fn kinds(report: &WatchReport) -> Vec<&'static str> {
        report.anomalies.iter().map(WatchAnomaly::kind).collect()
    }

    #[test]
    fn agreeing_complete_watchers_are_valid() {
        let mut log = small_log();
        log.clients[0].progress_revision = Some(6);
        let report = check(&log);
        assert_eq!(report.verdict, Verdict::Valid, "{:#?}", report.anomalies);
        assert!(report.final_state_checked);
        assert_eq!((report.revisions, report.events), (3, 4));
        let json = serde_json::to_string(&log).unwrap();
        assert_eq!(serde_json::from_str::<WatchLog>(&json).unwrap(), log);
    }

    #[test]
    fn uncovered_final_state_is_noted_not_compared() {
        let report = check(&small_log());
        assert_eq!(report.verdict, Verdict::Valid);
        assert!(!report.final_state_checked);
        assert!(
            report.notes[0].contains("not compared"),
            "{:?}",
            report.notes
        );
        assert_eq!(check(&WatchLog::default()).verdict, Verdict::Unknown);
    }

    #[test]
    fn hand_made_anomalies() {
        let mutate = |f: &dyn Fn(&mut WatchLog)| {
            let mut log = small_log();
            for c in &mut log.clients {
                c.progress_revision = Some(6);
            }
            f(&mut log);
            check(&log)
        };
        let r = mutate(&|l| l.clients[1].events.swap(0, 2));
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(kinds(&r).contains(&"out-of-order"), "{:?}", kinds(&r));

        let r = mutate(&|l| l.clients[1].events.insert(1, put(3, "p/a", "2")));
        assert_eq!(kinds(&r), ["duplicate"]);

        let r = mutate(&|l| {
            l.clients[1].events.remove(2);
        });
        assert_eq!(kinds(&r), ["gap"]);
        assert!(
            r.anomalies[0].describe().contains("missed revision 5"),
            "{}",
            r.anomalies[0].describe()
        );

        let r = mutate(&|l| {
            l.clients[1].events.remove(1);
        });
        assert_eq!(kinds(&r), ["torn-revision"]);

        let r = mutate(&|l| l.clients[1].events[0].value = Some("9".to_owned()));
        assert_eq!(kinds(&r), ["disagreement"]);

        let r = mutate(&|l| l.clients[1].events.push(put(5, "q/x", "1")));
        assert!(kinds(&r).contains(&"outside-prefix"));

        let r = mutate(&|l| l.clients[0].events[0].mod_revision = 7);
        assert!(kinds(&r).contains(&"inconsistent"));

        let r = mutate(&|l| {
            if let Some(f) = l.final_state.as_mut() {
                f.kvs[0].value = "7".to_owned();
            }
        });
        assert_eq!(kinds(&r), ["final-mismatch"]);

        // A revision nobody received is caught by the final state.
        let r = mutate(&|l| {
            for c in &mut l.clients {
                c.events.retain(|e| e.revision != 5);
            }
        });
        assert_eq!(kinds(&r), ["final-mismatch"]);

        // ... or by the writer's acknowledged writes.
        let r = mutate(&|l| {
            l.writes = vec![put(4, "p/c", "1"), del(4, "p/c")];
            l.writes.truncate(1);
        });
        assert!(kinds(&r).contains(&"gap"), "{:?}", kinds(&r));

        let r = mutate(&|l| l.clients[0].events.insert(0, del(1, "p/zz")));
        assert!(kinds(&r).contains(&"bad-metadata"));

        let result = r.to_check_result();
        assert_eq!(result.verdict, Verdict::Invalid);
        assert!(result.counts["bad-metadata"] >= 1);
    }

    #[test]
    fn odd_logs_do_not_panic() {
        let mut log = small_log();
        log.clients[0].start_revision = i64::MIN;
        log.clients[1].start_revision = i64::MAX;
        log.clients.push(client("empty", 10, vec![]));
        log.initial = Some(Snapshot {
            revision: i64::MAX,
            kvs: vec![],
        });
        let _ = check(&log).to_check_result();
        log.initial = Some(Snapshot {
            revision: 100,
            kvs: vec![kv("p/a", "x")],
        });
        log.clients[0].progress_revision = Some(i64::MAX);
        let _ = check(&log).to_check_result();
    }

    /// A store applying random transactions; returns the log of several
    /// watchers with reconnects, the acknowledged writes and the final read.
    fn simulate(seed: u64, revisions: i64, clients: usize) -> WatchLog {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut state: BTreeMap<String, Kv> = BTreeMap::new();
        let mut changes: Vec<WatchEvent> = Vec::new();
        for revision in 1..=revisions {
            if rng.random_bool(0.2) {
                continue; // a change outside the prefix
            }
            let mut keys: Vec<String> = (0..rng.random_range(1..=3))
                .map(|_| format!("p/k{}", rng.random_range(0..8)))
                .collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                if state.contains_key(&key) && rng.random_bool(0.25) {
                    state.remove(&key);
                    changes.push(WatchEvent {
                        revision,
                        key,
                        kind: ChangeKind::Delete,
                        value: None,
                        create_revision: 0,
                        mod_revision: revision,
                        version: 0,
                    });
                    continue;
                }
                let (create, version) = state
                    .get(&key)
                    .map_or((revision, 1), |kv| (kv.create_revision, kv.version + 1));
                let value = format!("v{revision}");
                state.insert(
                    key.clone(),
                    Kv {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: create,
                        mod_revision: revision,
                        version,
                    },
                );
                changes.push(WatchEvent {
                    revision,
                    key,
                    kind: ChangeKind::Put,
                    value: Some(value),
                    create_revision: create,
                    mod_revision: revision,
                    version,
                });
            }
        }
        let clients = (0..clients)
            .map(|c| {
                let start = if c == 0 {
                    1
                } else {
                    rng.random_range(1..revisions / 2)
                };
                // Reconnects resume from the last revision + 1, which is
                // invisible in the events: they are just all there.
                let events = changes
                    .iter()
                    .filter(|e| e.revision >= start)
                    .cloned()
                    .collect();
                WatchClient {
                    id: format!("w{c}"),
                    start_revision: start,
                    progress_revision: Some(revisions),
                    events,
                }
            })
            .collect();
        WatchLog {
            prefix: "p/".to_owned(),
            initial: None,
            clients,
            writes: changes,
            final_state: Some(Snapshot {
                revision: revisions,
                kvs: state.into_values().collect(),
            }),
        }
    }

    #[test]
    fn generated_logs_and_mutations() {
        let good = simulate(1, 2000, 5);
        let report = check(&good);
        assert_eq!(
            report.verdict,
            Verdict::Valid,
            "{:#?}",
            &report.anomalies[..report.anomalies.len().min(5)]
        );
        assert!(report.final_state_checked);

        let mut rng = StdRng::seed_from_u64(2);
        let pick = |rng: &mut StdRng, log: &WatchLog| {
            let c = rng.random_range(1..log.clients.len());
            let i = rng.random_range(0..log.clients[c].events.len());
            (c, i)
        };
        for _ in 0..10 {
            // Duplicate a watch event.
            let mut log = good.clone();
            let (c, i) = pick(&mut rng, &log);
            let e = log.clients[c].events[i].clone();
            log.clients[c].events.insert(i + 1, e);
            assert!(kinds(&check(&log)).contains(&"duplicate"));

            // Skip a revision in one client.
            let mut log = good.clone();
            let (c, i) = pick(&mut rng, &log);
            let revision = log.clients[c].events[i].revision;
            log.clients[c].events.retain(|e| e.revision != revision);
            assert_eq!(kinds(&check(&log)), ["gap"]);

            // Drop an event from every watcher; the writer still has it.
            let mut log = good.clone();
            let (c, i) = pick(&mut rng, &log);
            let victim = log.clients[c].events[i].clone();
            for c in &mut log.clients {
                c.events.retain(|e| *e != victim);
            }
            let found = kinds(&check(&log));
            assert!(
                found.contains(&"gap") || found.contains(&"torn-revision"),
                "{found:?}"
            );

            // Drop, everywhere, the last change of a key in the final state.
            let mut log = good.clone();
            let fin = log.final_state.clone().unwrap_or_default();
            let kv = &fin.kvs[rng.random_range(0..fin.kvs.len())];
            let lost = |e: &WatchEvent| e.key == kv.key && e.revision == kv.mod_revision;
            for c in &mut log.clients {
                c.events.retain(|e| !lost(e));
            }
            log.writes.retain(|e| !lost(e));
            let found = kinds(&check(&log));
            assert!(found.contains(&"final-mismatch"), "{found:?}");

            // Swap two events of different revisions in one client.
            let mut log = good.clone();
            let (c, i) = pick(&mut rng, &log);
            let events = &mut log.clients[c].events;
            if let Some(j) =
                (i + 1..events.len()).find(|&j| events[j].revision != events[i].revision)
            {
                events.swap(i, j);
                assert!(kinds(&check(&log)).contains(&"out-of-order"));
            }

            // Change a value in one client.
            let mut log = good.clone();
            let (c, i) = pick(&mut rng, &log);
            let e = &mut log.clients[c].events[i];
            e.kind = ChangeKind::Put;
            e.value = Some("tampered".to_owned());
            assert!(kinds(&check(&log)).contains(&"disagreement"));
        }
    }
}
