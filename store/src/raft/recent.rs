//! The newest raft log entries, kept decoded in memory.
//!
//! openraft reads every entry back from the log store after appending it: once to apply
//! it and, on a leader, once per follower to replicate it. Each read was a `pread` of the
//! segment and a bincode and protobuf decode of the whole entry (a batch of up to 512
//! requests). The log store keeps the entries it appended last (a suffix of the log, up to
//! [`MAX_ENTRIES`] entries and [`MAX_BYTES`] of encoded size) and serves such reads with
//! a clone. The segments stay the only durable copy; this is a cache of their tail.
//! Reads right after an append are what it is for (a lagging follower's catch-up reads
//! the segments), so it stays small: at 256 clients an entry is ~20 KiB, and 4 MiB holds
//! ~200 of them.

use std::collections::VecDeque;

use crate::raft::types::Entry;

/// Most entries kept.
pub const MAX_ENTRIES: usize = 1024;
/// Most encoded bytes kept.
pub const MAX_BYTES: usize = 4 << 20;

/// A contiguous run of the log's newest entries, with their encoded sizes.
#[derive(Default)]
pub struct Recent {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    /// Records an entry just appended to the log (`size`: its encoded length). An entry
    /// that does not follow the last one kept starts the run afresh, so the run always
    /// ends at the log's last entry.
    pub fn push(&mut self, entry: Entry, size: usize) {
        if self.last().is_some_and(|l| l + 1 != entry.log_id.index) {
            self.clear();
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            match self.entries.pop_front() {
                Some((_, s)) => self.bytes -= s,
                None => break,
            }
        }
    }

    /// Forgets entries at and after `index` (the log was truncated there).
    pub fn truncate(&mut self, index: u64) {
        while self.last().is_some_and(|l| l >= index) {
            if let Some((_, s)) = self.entries.pop_back() {
                self.bytes -= s;
            }
        }
    }

    /// Forgets entries at and before `index` (the log was purged up to it).
    pub fn purge(&mut self, index: u64) {
        while self.first().is_some_and(|f| f <= index) {
            if let Some((_, s)) = self.entries.pop_front() {
                self.bytes -= s;
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Copies of the entries with indexes in `[start, end)` if every entry of the log in
    /// that range is kept here (`end` past the last entry means "to the end of the log");
    /// `None` sends the caller to the segments.
    pub fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let (first, last) = (self.first()?, self.last()?);
        if start < first || start > last.saturating_add(1) {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end.min(last + 1).max(start) - first) as usize;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn e(i: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Blank,
        }
    }

    fn idx(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_and_follows_truncate_and_purge() {
        let mut r = Recent::default();
        assert_eq!(idx(r.get(1, 5)), None);
        for i in 3..=7 {
            r.push(e(i), 10);
        }
        assert_eq!(idx(r.get(3, 6)), Some(vec![3, 4, 5]));
        assert_eq!(idx(r.get(5, u64::MAX)), Some(vec![5, 6, 7]));
        assert_eq!(
            idx(r.get(8, u64::MAX)),
            Some(vec![]),
            "nothing after the end"
        );
        assert_eq!(idx(r.get(2, 5)), None, "2 is not kept");
        r.truncate(6);
        assert_eq!(idx(r.get(3, u64::MAX)), Some(vec![3, 4, 5]));
        r.purge(3);
        assert_eq!(idx(r.get(3, 5)), None);
        assert_eq!(idx(r.get(4, 6)), Some(vec![4, 5]));
        // A gap (e.g. after a snapshot install) restarts the run.
        r.push(e(9), 10);
        assert_eq!(idx(r.get(4, 6)), None);
        assert_eq!(idx(r.get(9, 10)), Some(vec![9]));
        // Bounded in bytes.
        r.push(e(10), MAX_BYTES);
        assert_eq!(idx(r.get(9, 11)), None);
        assert_eq!(idx(r.get(10, 11)), Some(vec![10]));
    }
}
