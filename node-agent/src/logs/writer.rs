//! [`CriLogWriter`]: turns a container's stdout/stderr bytes into CRI log lines, rotating
//! the file when it grows past its limit.
//!
//! Bytes arrive in arbitrary chunks. Each stream keeps its unfinished line (at most
//! [`MAX_PART`] bytes) until the newline arrives:
//!
//! ```text
//! write(stdout, "hel")          → (kept)
//! write(stdout, "lo\nwor")      → "<ts> stdout F hello"           "wor" kept
//! flush()                       → "<ts> stdout P wor"             the line is now open
//! write(stdout, "ld\n")         → "<ts> stdout F ld"              readers join: "world"
//! close()                       → an open line gets an empty F part, kept bytes an F part
//! ```
//!
//! Every `write` ends in at most one `write(2)` per rotation, of whole lines only, so a
//! reader never sees half a part unless the disk is full.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{rotated_files, Stream, MAX_PART};

/// One stream's unfinished line.
#[derive(Default)]
struct Pending {
    /// Bytes after the last newline not yet written (< [`MAX_PART`]).
    buf: Vec<u8>,
    /// A `P` part of the current line is already in the file, so the line must be
    /// closed by an `F` part even if no more bytes come.
    open: bool,
}

/// Writes CRI-format log lines to a file, rotating it at `max_bytes`.
///
/// Synchronous and `Send`; the supervisor's two copy threads share it behind a mutex.
/// Dropping it closes it like [`CriLogWriter::close`], ignoring errors.
pub struct CriLogWriter {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    /// Rotate before a line would take the file past this (0: never rotate).
    max_bytes: u64,
    /// Rotated files kept.
    max_files: usize,
    pending: [Pending; 2],
    /// Formatted lines not yet written.
    out: Vec<u8>,
    closed: bool,
}

impl CriLogWriter {
    /// Opens (creating it and its directory if needed, appending otherwise) the log at
    /// `path`.
    ///
    /// # Errors
    /// The directory or file cannot be created or opened.
    pub fn open(path: &Path, max_bytes: u64, max_files: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(CriLogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            max_files,
            pending: Default::default(),
            out: Vec::new(),
            closed: false,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs bytes the container wrote to `stream`. Complete lines are written now, the
    /// unfinished rest is kept (a `P` part is written whenever it reaches [`MAX_PART`]).
    ///
    /// # Errors
    /// Writing or rotating the file failed; the bytes of the failed write are lost.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let now = jiff::Timestamp::now();
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.pending[stream.index()].buf);
                    line.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    let mut chunks = line.chunks(MAX_PART).peekable();
                    if chunks.peek().is_none() {
                        self.emit(now, stream, true, b"")?;
                    }
                    while let Some(c) = chunks.next() {
                        self.emit(now, stream, chunks.peek().is_none(), c)?;
                    }
                }
                None => {
                    let room = MAX_PART - self.pending[stream.index()].buf.len();
                    let take = room.min(rest.len());
                    self.pending[stream.index()]
                        .buf
                        .extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if self.pending[stream.index()].buf.len() == MAX_PART {
                        let part = std::mem::take(&mut self.pending[stream.index()].buf);
                        self.emit(now, stream, false, &part)?;
                    }
                }
            }
        }
        self.write_out()
    }

    /// Writes each stream's unfinished line as a `P` part, so readers see it now.
    ///
    /// # Errors
    /// Writing the file failed.
    pub fn flush(&mut self) -> io::Result<()> {
        let now = jiff::Timestamp::now();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let part = std::mem::take(&mut self.pending[stream.index()].buf);
            if !part.is_empty() {
                self.emit(now, stream, false, &part)?;
            }
        }
        self.write_out()?;
        self.file.flush()
    }

    /// Ends each stream's unfinished line with an `F` part and syncs the file: the
    /// container's output is over.
    ///
    /// # Errors
    /// Writing or syncing the file failed.
    pub fn close(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let now = jiff::Timestamp::now();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let p = &mut self.pending[stream.index()];
            if !p.buf.is_empty() || p.open {
                let part = std::mem::take(&mut p.buf);
                self.emit(now, stream, true, &part)?;
            }
        }
        self.write_out()?;
        self.file.sync_data()
    }

    /// Formats one part into `out`, rotating first if it would overflow the file.
    fn emit(
        &mut self,
        now: jiff::Timestamp,
        stream: Stream,
        full: bool,
        content: &[u8],
    ) -> io::Result<()> {
        let line = format!("{now:.9} {stream} {} ", if full { 'F' } else { 'P' });
        let len = (line.len() + content.len() + 1) as u64;
        let used = self.size + self.out.len() as u64;
        if self.max_bytes > 0 && used > 0 && used + len > self.max_bytes {
            self.write_out()?;
            self.rotate()?;
        }
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(content);
        self.out.push(b'\n');
        self.pending[stream.index()].open = !full;
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        Ok(())
    }

    /// Renames the file to `<name>.<UTC timestamp>`, starts a new one, and deletes the
    /// oldest rotated files beyond `max_files`.
    fn rotate(&mut self) -> io::Result<()> {
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%d-%H%M%S.%9f")
            .to_string();
        let mut target = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!("{}.{stamp}-{n}", self.path.display()));
            n += 1;
        }
        std::fs::rename(&self.path, &target)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        let rotated = rotated_files(&self.path)?;
        let excess = rotated.len().saturating_sub(self.max_files);
        for old in &rotated[..excess] {
            match std::fs::remove_file(old) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for CriLogWriter {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!(path = %self.path.display(), error = %e, "closing a container log");
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let ts = it.next().unwrap();
                assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
                let s = it.next().unwrap().to_string();
                let t = it.next().unwrap().to_string();
                (s, t, it.next().unwrap().to_string())
            })
            .collect()
    }

    fn p(s: &str, t: &str, c: &str) -> (String, String, String) {
        (s.into(), t.into(), c.into())
    }

    #[test]
    fn lines_split_across_writes_are_kept_until_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut w = CriLogWriter::open(&path, 0, 0).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"lo\n\nwor").unwrap();
        w.flush().unwrap();
        w.write(Stream::Stdout, b"ld\n").unwrap();
        w.write(Stream::Stdout, b"tail").unwrap();
        w.close().unwrap();
        assert_eq!(
            parts(&path),
            [
                p("stderr", "F", "oops"),
                p("stdout", "F", "hello"),
                p("stdout", "F", ""),
                p("stdout", "P", "wor"),
                p("stdout", "F", "ld"),
                p("stdout", "F", "tail"),
            ]
        );
    }

    #[test]
    fn an_open_line_is_closed_by_an_empty_full_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        {
            let mut w = CriLogWriter::open(&path, 0, 0).unwrap();
            w.write(Stream::Stdout, b"prompt> ").unwrap();
            w.flush().unwrap();
        } // dropped: closed
        assert_eq!(
            parts(&path),
            [p("stdout", "P", "prompt> "), p("stdout", "F", "")]
        );
    }

    #[test]
    fn long_lines_are_split_into_parts_of_16_kib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = CriLogWriter::open(&path, 0, 0).unwrap();
        let long = vec![b'x'; 2 * MAX_PART + 5];
        // In small chunks: the kept bytes never exceed a part.
        for c in long.chunks(1000) {
            w.write(Stream::Stdout, c).unwrap();
        }
        w.write(Stream::Stdout, b"\n").unwrap();
        let exact = vec![b'y'; MAX_PART];
        let mut line = exact.clone();
        line.push(b'\n');
        w.write(Stream::Stderr, &line).unwrap();
        w.close().unwrap();
        let got = parts(&path);
        let tags: Vec<(&str, &str, usize)> = got
            .iter()
            .map(|(s, t, c)| (s.as_str(), t.as_str(), c.len()))
            .collect();
        assert_eq!(
            tags,
            [
                ("stdout", "P", MAX_PART),
                ("stdout", "P", MAX_PART),
                ("stdout", "F", 5),
                ("stderr", "F", MAX_PART)
            ]
        );
    }

    #[test]
    fn rotation_keeps_at_most_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = CriLogWriter::open(&path, 200, 2).unwrap();
        for i in 0..40 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        w.close().unwrap();
        let rotated = rotated_files(&path).unwrap();
        assert_eq!(rotated.len(), 2);
        for f in rotated.iter().chain([&path]) {
            assert!(std::fs::metadata(f).unwrap().len() <= 200);
        }
        let last = parts(&path);
        assert_eq!(last.last().unwrap().2, "line 39");
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        CriLogWriter::open(&path, 0, 0)
            .unwrap()
            .write(Stream::Stdout, b"a\n")
            .unwrap();
        CriLogWriter::open(&path, 0, 0)
            .unwrap()
            .write(Stream::Stdout, b"b\n")
            .unwrap();
        assert_eq!(parts(&path).len(), 2);
    }
}
