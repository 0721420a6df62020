//! The raft log's own files: entries appended to preallocated segment files and made
//! durable with `fdatasync`, outside RocksDB.
//!
//! Why (`docs/store-raft-log-segments.md`): a log append is on every write's critical
//! path, on the leader and on a follower. RocksDB's WAL grows its file on each append, so
//! every sync also commits the file's new size to the ext4 journal (measured here: ~115 µs
//! p50 for append + fdatasync, ~200 µs average through RocksDB) where an overwrite of a
//! preallocated file syncs only the data (~76 µs). etcd's WAL preallocates for the same
//! reason. Entries also no longer pass through RocksDB's memtable and compactions.
//!
//! # Layout
//! `<dir>/<first index, 20 digits>.wal`, each preallocated to [`SEGMENT_BYTES`] (or more,
//! for one larger entry). A segment holds records back to back from offset 0:
//!
//! ```text
//! len: u32 LE | crc: u32 LE | index: u64 LE | payload: len bytes
//! ```
//!
//! `crc` is a CRC-32 of index ‖ payload continued from the previous record's `crc` in the
//! segment (0 for the first), so a record is valid only right after the one it was
//! written after: the intact tail of an older, longer write can never pass for the
//! successor of a newer record written over its start.
//! The payload is the bincode entry. The preallocated tail reads as zeros, so a record
//! with `len == 0` ends the segment. Within a segment indexes are consecutive; the next
//! segment may start higher only across purged entries (a snapshot installed past the
//! log's end).
//!
//! # Crash safety
//! On open every segment is scanned; the first record that is torn (short, bad checksum,
//! wrong index) ends the log, and everything after it in that segment is zeroed and later
//! segments deleted, so bytes of an unsynced older write can never be read back as
//! entries after a newer one. `truncate` zeroes what it removes and syncs before it
//! returns. Nothing is reported durable before the segment's data is synced.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Size of a new segment.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// How far ahead of the last record a segment's blocks are written with zeros.
///
/// `fallocate` gives a segment its blocks, but ext4 (like xfs) marks them *unwritten*: the
/// first write into such a block converts its extent, a metadata change that every
/// `fdatasync` then has to commit to the journal (measured here: 170 µs and ~65 µs of CPU
/// per append + fdatasync, against 100 µs and ~45 µs when the blocks were written before).
/// Writing zeros a chunk ahead pays that conversion once per chunk instead of once per
/// sync. Not the whole segment at once: a new segment must not stall the append that
/// opens it, and short-lived data dirs (tests) should not write 64 MiB each.
const ZERO_AHEAD: u64 = 1 << 20;
/// Bytes of a record's header.
const HEADER: usize = 16;

/// I/O failure of the log, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("raft log {what}: {source}")]
pub struct WalError {
    what: String,
    #[source]
    source: std::io::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WalError {
    let what = what.into();
    move |source| WalError { what, source }
}

/// One segment file.
struct Segment {
    path: PathBuf,
    file: Arc<File>,
    /// Allocated size.
    size: u64,
    /// End of the last record.
    written: u64,
    /// Blocks before this offset have been written (zeros or records): overwriting them
    /// changes no metadata. Never below `written`.
    zeroed: u64,
    /// Index the next record must have (None: no record yet).
    next: Option<u64>,
    /// `crc` of the last record (0: none).
    last_crc: u32,
}

/// Where one entry's payload is.
#[derive(Clone, Copy)]
struct Loc {
    /// Sequence of the segment (position in `segments` + `first_seq`).
    seq: u64,
    offset: u64,
    len: u32,
    /// `crc` of the record before it in its segment.
    prev_crc: u32,
}

/// The log: segments in index order, the location of every entry not purged.
pub struct Wal {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// Sequence number of `segments[0]`.
    first_seq: u64,
    /// Locations of entries `first..first + locs.len()`.
    locs: VecDeque<Loc>,
    /// Index of `locs[0]` (when `locs` is empty: the index the next entry would have,
    /// if known).
    first: u64,
}

fn record_crc(prev: u32, index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(prev);
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.wal"))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(format!("sync directory {}", dir.display())))
}

/// Allocates `size` bytes of real blocks (not a sparse hole): writes into them then
/// change no file size. Returns how much of the file has been written with zeros (all of
/// it on a file system without `fallocate`, none otherwise; see [`ZERO_AHEAD`]).
fn preallocate(file: &File, size: u64) -> std::io::Result<u64> {
    let len =
        i64::try_from(size).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let e = match nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, len) {
        Ok(()) => return Ok(0),
        Err(e) => e,
    };
    if e == nix::errno::Errno::EOPNOTSUPP {
        // A file system without fallocate: write the zeros.
        zero_range(file, 0, size)?;
        return Ok(size);
    }
    Err(std::io::Error::from(e))
}

/// Zeroes `[from, to)` of `file`.
fn zero_range(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut off = from;
    while off < to {
        let n = zeros.len().min((to - off) as usize);
        file.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

/// One record read back from a segment.
enum Scan {
    Record { index: u64, len: u32, crc: u32 },
    End,
    Torn,
}

fn scan_record(file: &File, size: u64, offset: u64, prev_crc: u32) -> std::io::Result<Scan> {
    if offset + HEADER as u64 > size {
        return Ok(Scan::End);
    }
    let mut h = [0u8; HEADER];
    file.read_exact_at(&mut h, offset)?;
    let len = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default());
    if len == 0 {
        return Ok(if h.iter().all(|b| *b == 0) {
            Scan::End
        } else {
            Scan::Torn
        });
    }
    if offset + (HEADER as u64) + u64::from(len) > size {
        return Ok(Scan::Torn);
    }
    let crc = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
    let index = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + HEADER as u64)?;
    if record_crc(prev_crc, index, &payload) != crc {
        return Ok(Scan::Torn);
    }
    Ok(Scan::Record { index, len, crc })
}

impl Wal {
    /// Opens (creating) the log in `dir`, recovering it as the module docs say. Entries
    /// at or below `purged` are not served.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(dir: &Path, purged: Option<u64>) -> Result<Self, WalError> {
        std::fs::create_dir_all(dir).map_err(err(format!("create {}", dir.display())))?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(err(format!("list {}", dir.display())))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                let stem = p.file_stem()?.to_str()?.to_string();
                (p.extension()? == "wal")
                    .then(|| stem.parse::<u64>().ok().map(|i| (i, p)))
                    .flatten()
            })
            .collect();
        names.sort();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segments: VecDeque::new(),
            first_seq: 0,
            locs: VecDeque::new(),
            first: purged.map_or(0, |p| p + 1),
        };
        let mut torn = false;
        for (_, path) in names {
            if torn {
                // After a torn record nothing later is trusted.
                std::fs::remove_file(&path).map_err(err(format!("remove {}", path.display())))?;
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(err(format!("open {}", path.display())))?;
            let size = file
                .metadata()
                .map_err(err(format!("stat {}", path.display())))?
                .len();
            let seq = wal.first_seq + wal.segments.len() as u64;
            let mut seg = Segment {
                path: path.clone(),
                file: Arc::new(file),
                size,
                written: 0,
                zeroed: 0,
                next: None,
                last_crc: 0,
            };
            loop {
                match scan_record(&seg.file, size, seg.written, seg.last_crc)
                    .map_err(err(format!("read {}", path.display())))?
                {
                    Scan::End => break,
                    Scan::Torn => {
                        torn = true;
                        break;
                    }
                    Scan::Record { index, len, crc } => {
                        if seg.next.is_some_and(|n| n != index) {
                            torn = true;
                            break;
                        }
                        // Across segments the log may only jump over purged entries,
                        // which are not in `locs`.
                        if seg.next.is_none()
                            && index >= wal.first
                            && wal.last_index().is_some_and(|last| index != last + 1)
                        {
                            torn = true;
                            break;
                        }
                        wal.push_loc(index, seq, seg.written, len, seg.last_crc);
                        seg.next = Some(index + 1);
                        seg.last_crc = crc;
                        seg.written += HEADER as u64 + u64::from(len);
                    }
                }
            }
            if torn {
                zero_range(&seg.file, seg.written, seg.size)
                    .and_then(|_| seg.file.sync_data())
                    .map_err(err(format!("zero the torn tail of {}", path.display())))?;
                seg.zeroed = seg.size;
            } else {
                // What lies past the last record is not known to be written blocks.
                seg.zeroed = seg.written;
            }
            wal.segments.push_back(seg);
        }
        if wal.segments.is_empty() {
            let first = wal.first;
            wal.new_segment(first, SEGMENT_BYTES)?;
        }
        Ok(wal)
    }

    /// Records where entry `index` is, dropping it if purged and restarting the index
    /// when the log jumped over purged entries.
    fn push_loc(&mut self, index: u64, seq: u64, offset: u64, len: u32, prev_crc: u32) {
        if index < self.first {
            return;
        }
        if self.locs.is_empty() {
            self.first = index;
        }
        self.locs.push_back(Loc {
            seq,
            offset,
            len,
            prev_crc,
        });
    }

    /// The last entry's index, if any entry is kept.
    pub fn last_index(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first + self.locs.len() as u64 - 1)
    }

    fn active(&mut self) -> &mut Segment {
        self.segments
            .back_mut()
            .expect("the log always has an active segment")
    }

    fn new_segment(&mut self, first_index: u64, size: u64) -> Result<(), WalError> {
        let path = segment_path(&self.dir, first_index);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(err(format!("create {}", path.display())))?;
        let zeroed = preallocate(&file, size)
            .and_then(|zeroed| file.sync_all().map(|_| zeroed))
            .map_err(err(format!("preallocate {}", path.display())))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment {
            path,
            file: Arc::new(file),
            size,
            written: 0,
            zeroed,
            next: None,
            last_crc: 0,
        });
        Ok(())
    }

    /// Writes entries (index, payload), consecutive and following the log (or, on an
    /// empty log, starting anywhere past the purged ones). Returns the files to sync
    /// before they are durable.
    ///
    /// # Errors
    /// I/O errors; an entry that does not follow the last one.
    pub fn append(&mut self, entries: &[(u64, Vec<u8>)]) -> Result<Vec<Arc<File>>, WalError> {
        let mut touched: Vec<Arc<File>> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_start = self.active().written;
        for (index, payload) in entries {
            if let Some(last) = self.last_index() {
                if *index != last + 1 {
                    return Err(WalError {
                        what: format!("append entry {index} after {last}"),
                        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                    });
                }
            }
            if payload.is_empty() {
                // A zero length marks the end of a segment.
                return Err(WalError {
                    what: format!("append entry {index}: empty payload"),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                });
            }
            let rec_len = (HEADER + payload.len()) as u64;
            let seg = self.active();
            let continues = seg.next.is_none_or(|n| n == *index);
            if !continues || seg.written + rec_len > seg.size {
                // Write what this segment got, then move to a new one.
                self.write_pending(&mut buf, buf_start, &mut touched)?;
                self.new_segment(*index, SEGMENT_BYTES.max(rec_len))?;
                buf_start = 0;
            }
            let seq = self.first_seq + self.segments.len() as u64 - 1;
            let seg = self.active();
            let offset = seg.written;
            let len = payload.len() as u32;
            let prev_crc = seg.last_crc;
            let crc = record_crc(prev_crc, *index, payload);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc.to_le_bytes());
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(payload);
            seg.written += rec_len;
            seg.next = Some(index + 1);
            seg.last_crc = crc;
            self.push_loc(*index, seq, offset, len, prev_crc);
        }
        self.write_pending(&mut buf, buf_start, &mut touched)?;
        Ok(touched)
    }

    /// Writes the records in `buf` at `at` of the active segment, noting it in `touched`.
    /// A failure leaves the in-memory log ahead of the file; openraft stops on any log
    /// storage error, and the next open recovers from what the file holds.
    fn write_pending(
        &mut self,
        buf: &mut Vec<u8>,
        at: u64,
        touched: &mut Vec<Arc<File>>,
    ) -> Result<(), WalError> {
        if buf.is_empty() {
            return Ok(());
        }
        let seg = self.active();
        let end = at + buf.len() as u64;
        if end > seg.zeroed {
            // Write the blocks ahead with zeros now, in the same sync as these records
            // (see ZERO_AHEAD); the records themselves cover `at..end`.
            let ahead = (end + ZERO_AHEAD).min(seg.size);
            zero_range(&seg.file, end, ahead)
                .map_err(err(format!("write zeros ahead in {}", seg.path.display())))?;
            seg.zeroed = ahead.max(end);
        }
        seg.file
            .write_all_at(buf, at)
            .map_err(err(format!("write {}", seg.path.display())))?;
        touched.push(seg.file.clone());
        buf.clear();
        Ok(())
    }

    /// Payloads of the kept entries in `[start, end)`.
    ///
    /// # Errors
    /// I/O errors, or a record that no longer checks out (corruption).
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, WalError> {
        let from = start.max(self.first);
        let to = end.min(self.first + self.locs.len() as u64);
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        for index in from..to {
            let loc = self.locs[(index - self.first) as usize];
            let seg = &self.segments[(loc.seq - self.first_seq) as usize];
            let mut rec = vec![0u8; HEADER + loc.len as usize];
            seg.file
                .read_exact_at(&mut rec, loc.offset)
                .map_err(err(format!("read {}", seg.path.display())))?;
            let crc = u32::from_le_bytes(rec[4..8].try_into().unwrap_or_default());
            let payload = rec.split_off(HEADER);
            if record_crc(loc.prev_crc, index, &payload) != crc {
                return Err(WalError {
                    what: format!("entry {index} in {}", seg.path.display()),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "checksum mismatch",
                    ),
                });
            }
            out.push(payload);
        }
        Ok(out)
    }

    /// Removes entries at `index` and after, durably (zeroed and synced).
    ///
    /// # Errors
    /// I/O errors.
    pub fn truncate(&mut self, index: u64) -> Result<(), WalError> {
        let Some(last) = self.last_index() else {
            return Ok(());
        };
        if index > last {
            return Ok(());
        }
        let index = index.max(self.first);
        let loc = self.locs[(index - self.first) as usize];
        let keep = (loc.seq - self.first_seq) as usize;
        while self.segments.len() > keep + 1 {
            let seg = self.segments.pop_back().expect("more than keep + 1");
            std::fs::remove_file(&seg.path)
                .map_err(err(format!("remove {}", seg.path.display())))?;
        }
        sync_dir(&self.dir)?;
        let seg = self.active();
        zero_range(&seg.file, loc.offset, seg.written)
            .and_then(|_| seg.file.sync_data())
            .map_err(err(format!("truncate {}", seg.path.display())))?;
        seg.written = loc.offset;
        seg.next = (loc.offset > 0).then_some(index);
        seg.last_crc = loc.prev_crc;
        self.locs.truncate((index - self.first) as usize);
        Ok(())
    }

    /// Forgets entries up to and including `index`, deleting segments that hold nothing
    /// newer. The caller has made the purge point durable first.
    ///
    /// # Errors
    /// I/O errors.
    pub fn purge(&mut self, index: u64) -> Result<(), WalError> {
        if index + 1 > self.first {
            let drop = ((index + 1 - self.first) as usize).min(self.locs.len());
            self.locs.drain(..drop);
            self.first = index + 1;
        }
        let keep_from = match self.locs.front() {
            // Segments before the first kept entry's hold only purged entries.
            Some(l) => l.seq,
            None => {
                // Nothing kept: the next entry may come after a gap (a snapshot's end),
                // so it starts a segment of its own (unless the active one is empty).
                if self.active().written > 0 {
                    self.new_segment(index + 1, SEGMENT_BYTES)?;
                }
                self.first_seq + self.segments.len() as u64 - 1
            }
        };
        let mut removed = false;
        while self.first_seq < keep_from {
            let seg = self
                .segments
                .pop_front()
                .expect("the kept segment is later");
            self.first_seq += 1;
            std::fs::remove_file(&seg.path)
                .map_err(err(format!("remove {}", seg.path.display())))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(r: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
        r.map(|i| {
            (
                i,
                format!("entry-{i}")
                    .repeat((i % 7 + 1) as usize)
                    .into_bytes(),
            )
        })
        .collect()
    }

    fn payloads(w: &Wal, r: std::ops::Range<u64>) -> Vec<Vec<u8>> {
        w.read(r.start, r.end).unwrap()
    }

    #[test]
    fn appended_entries_read_back_and_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Wal::open(d.path(), None).unwrap();
        assert_eq!(w.last_index(), None);
        w.append(&entries(0..50)).unwrap();
        w.append(&entries(50..60)).unwrap();
        assert_eq!(w.last_index(), Some(59));
        let want: Vec<Vec<u8>> = entries(10..20).into_iter().map(|e| e.1).collect();
        assert_eq!(payloads(&w, 10..20), want);
        drop(w);
        let w = Wal::open(d.path(), None).unwrap();
        assert_eq!(w.last_index(), Some(59));
        assert_eq!(payloads(&w, 10..20), want);
        // A gap in what is appended is refused.
        let mut w = w;
        assert!(w.append(&entries(61..62)).is_err());
    }

    #[test]
    fn a_torn_tail_ends_the_log_and_is_zeroed() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Wal::open(d.path(), None).unwrap();
        w.append(&entries(1..11)).unwrap();
        let seg = w.segments.back().unwrap();
        let (path, written) = (seg.path.clone(), seg.written);
        let loc9 = w.locs[(9 - w.first) as usize];
        drop(w);
        // Damage entry 9's payload: 9 and 10 are gone, 1..=8 stay.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"XX", loc9.offset + HEADER as u64 + 1)
            .unwrap();
        let mut w = Wal::open(d.path(), None).unwrap();
        assert_eq!(w.last_index(), Some(8));
        let mut rest = vec![0u8; (written - loc9.offset) as usize];
        let f = File::open(&path).unwrap();
        f.read_exact_at(&mut rest, loc9.offset).unwrap();
        assert!(rest.iter().all(|b| *b == 0), "the torn tail is zeroed");
        w.append(&entries(9..12)).unwrap();
        assert_eq!(Wal::open(d.path(), None).unwrap().last_index(), Some(11));
    }

    #[test]
    fn an_older_longer_write_is_not_read_after_a_newer_record() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Wal::open(d.path(), None).unwrap();
        w.append(&[(1, b"a".to_vec()), (2, vec![7u8; 40]), (3, b"c".to_vec())])
            .unwrap();
        let loc2 = w.locs[1];
        let path = w.segments.back().unwrap().path.clone();
        drop(w);
        // As if a crash had lost record 2's header only, and a new record 2 of the same
        // length had then been written: record 3 after it is intact but belongs to the
        // old chain.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0u8; HEADER], loc2.offset).unwrap();
        let mut w = Wal::open(d.path(), None).unwrap();
        assert_eq!(w.last_index(), Some(1));
        let seg = w.segments.back().unwrap();
        // Put old record 3 back where the zeroing removed it.
        let old3 = {
            let mut b = Vec::new();
            let prev = record_crc(record_crc(0, 1, b"a"), 2, &[7u8; 40]);
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&record_crc(prev, 3, b"c").to_le_bytes());
            b.extend_from_slice(&3u64.to_le_bytes());
            b.extend_from_slice(b"c");
            b
        };
        seg.file
            .write_all_at(&old3, loc2.offset + HEADER as u64 + 40)
            .unwrap();
        w.append(&[(2, vec![9u8; 40])]).unwrap();
        drop(w);
        let w = Wal::open(d.path(), None).unwrap();
        assert_eq!(w.last_index(), Some(2), "old record 3 must not come back");
    }

    #[test]
    fn truncate_removes_entries_durably_across_segments() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Wal::open(d.path(), None).unwrap();
        w.append(&entries(1..20)).unwrap();
        // A record larger than a segment gets one of its own, full; the next go to a
        // third.
        let big = vec![1u8; SEGMENT_BYTES as usize];
        w.append(&[(20, big)]).unwrap();
        w.append(&entries(21..25)).unwrap();
        assert_eq!(w.segments.len(), 3);
        w.truncate(10).unwrap();
        assert_eq!(w.last_index(), Some(9));
        assert_eq!(w.segments.len(), 1);
        w.append(&[(10, b"new ten".to_vec())]).unwrap();
        drop(w);
        let w = Wal::open(d.path(), None).unwrap();
        assert_eq!(w.last_index(), Some(10));
        assert_eq!(payloads(&w, 10..11), vec![b"new ten".to_vec()]);
    }

    #[test]
    fn purge_drops_segments_and_a_purge_past_the_end_allows_a_gap() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Wal::open(d.path(), None).unwrap();
        w.append(&entries(1..10)).unwrap();
        w.purge(4).unwrap();
        assert_eq!(payloads(&w, 0..6).len(), 1, "only entry 5 of 0..6 is kept");
        // A snapshot installed past the end: the log continues after a gap.
        w.purge(100).unwrap();
        assert_eq!(w.last_index(), None);
        w.append(&entries(101..105)).unwrap();
        assert_eq!(w.segments.len(), 1, "the old segment is gone");
        drop(w);
        let w = Wal::open(d.path(), Some(100)).unwrap();
        assert_eq!(w.last_index(), Some(104));
        assert_eq!(payloads(&w, 0..200).len(), 4);
    }
}
