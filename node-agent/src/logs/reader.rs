//! Reading CRI log files the way `kubectl logs` asks: the rotated predecessors oldest
//! first, then the current file; `P` parts joined into lines; `tailLines`, `sinceTime`,
//! `limitBytes`, `timestamps`; and following the file as it grows and rotates until the
//! container has exited and everything is read.
//!
//! Following polls (every [`POLL`]) rather than using inotify: it survives a rotation
//! with the same code that notices growth. Rotation is noticed when the path names a
//! different inode than the file held open; the held file is then drained (the writer
//! wrote its last line before renaming it) and the new one opened.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream as FuturesStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{rotated_files, Stream};

/// How often a followed log is checked for new lines.
pub const POLL: Duration = Duration::from_millis(100);

/// A joined line longer than this is cut (each piece becomes a line of its own), so a
/// container printing without newlines cannot make a reader hold unbounded memory.
pub const MAX_JOINED: usize = 1024 * 1024;

/// Entries read before they are handed on (rendered and sent).
const BATCH: usize = 4096;

/// One part of a line, as a log file holds it.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub time: jiff::Timestamp,
    pub stream: Stream,
    /// `F`: the line ends here. `P`: it goes on in the next part of the same stream.
    pub full: bool,
    pub content: &'a [u8],
}

/// Parses one line of a CRI log file (without its newline). `None` if it is not one.
pub fn parse_line(line: &[u8]) -> Option<Part<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let stream = Stream::parse(fields.next()?)?;
    // The tag field may carry more tags after ':'; the first says full or partial.
    let tag = fields.next()?;
    let full = match tag.split(|b| *b == b':').next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let content = fields.next().unwrap_or(b"");
    Some(Part {
        time,
        stream,
        full,
        content,
    })
}

/// One line the container printed, its parts joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// When its first part was written.
    pub time: jiff::Timestamp,
    pub stream: Stream,
    /// Without the newline.
    pub content: Vec<u8>,
}

impl LogEntry {
    /// The entry as `kubectl logs` prints it: the content and a newline, after the
    /// RFC 3339 timestamp and a space with `timestamps`.
    pub fn render(&self, timestamps: bool, out: &mut Vec<u8>) {
        if timestamps {
            out.extend_from_slice(self.time.to_string().as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.content);
        out.push(b'\n');
    }
}

/// Turns a file's bytes into entries: splits lines (keeping an unfinished one for the
/// next read) and joins parts per stream (across files too: a rotation may fall between
/// the parts of a line).
#[derive(Default)]
struct Parser {
    /// Bytes of the current file after its last newline.
    carry: Vec<u8>,
    /// Per stream: the line whose `P` parts were seen but not yet its `F`.
    partial: [Option<LogEntry>; 2],
}

impl Parser {
    fn feed(&mut self, mut data: &[u8], out: &mut Vec<LogEntry>) {
        while let Some(i) = data.iter().position(|b| *b == b'\n') {
            if self.carry.is_empty() {
                self.line(&data[..i], out);
            } else {
                let mut line = std::mem::take(&mut self.carry);
                line.extend_from_slice(&data[..i]);
                self.line(&line, out);
            }
            data = &data[i + 1..];
        }
        self.carry.extend_from_slice(data);
        if self.carry.len() > MAX_JOINED {
            // Not a log line: nothing this large is written without a newline.
            self.carry.clear();
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<LogEntry>) {
        let Some(part) = parse_line(line) else {
            return;
        };
        let slot = &mut self.partial[part.stream.index()];
        let mut entry = slot.take().unwrap_or_else(|| LogEntry {
            time: part.time,
            stream: part.stream,
            content: Vec::new(),
        });
        entry.content.extend_from_slice(part.content);
        if part.full || entry.content.len() >= MAX_JOINED {
            out.push(entry);
        } else {
            *slot = Some(entry);
        }
    }

    /// A new file starts: bytes left of the old one were not a line.
    fn next_file(&mut self) {
        self.carry.clear();
    }

    /// The log is over: lines whose `F` never came are complete as they are.
    fn finish(&mut self, out: &mut Vec<LogEntry>) {
        self.carry.clear();
        let mut rest: Vec<LogEntry> = self.partial.iter_mut().filter_map(Option::take).collect();
        rest.sort_by_key(|e| e.time);
        out.extend(rest);
    }
}

/// What `kubectl logs` asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines (of those since `since`) of what is there now.
    pub tail_lines: Option<u64>,
    /// Only lines written at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Stop after this many bytes of output (the last line cut).
    pub limit_bytes: Option<u64>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Keep reading as the container writes, until it has exited.
    pub follow: bool,
}

/// Applies `since`, `limitBytes` and the rendering to entries; `tailLines` is applied by
/// the caller on the first batch.
struct Sink {
    since: Option<jiff::Timestamp>,
    remaining: Option<u64>,
    timestamps: bool,
}

impl Sink {
    fn new(opts: &LogOptions) -> Sink {
        Sink {
            since: opts.since,
            remaining: opts.limit_bytes,
            timestamps: opts.timestamps,
        }
    }

    fn keep(&self, e: &LogEntry) -> bool {
        self.since.is_none_or(|s| e.time >= s)
    }

    fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Renders entries, cut at the byte limit.
    fn render<'a>(&mut self, entries: impl IntoIterator<Item = &'a LogEntry>) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            if self.done() {
                break;
            }
            let start = out.len();
            e.render(self.timestamps, &mut out);
            if let Some(r) = &mut self.remaining {
                let len = (out.len() - start) as u64;
                if len >= *r {
                    out.truncate(start + *r as usize);
                    *r = 0;
                } else {
                    *r -= len;
                }
            }
        }
        out
    }
}

/// A log file held open and read as it grows, across rotations.
struct Follower {
    path: PathBuf,
    /// The file being read and its inode; `None` until the path exists.
    file: Option<(File, u64, u64)>,
    parser: Parser,
}

impl Follower {
    fn new(path: PathBuf) -> Follower {
        Follower {
            path,
            file: None,
            parser: Parser::default(),
        }
    }

    fn open(&mut self) -> io::Result<bool> {
        match File::open(&self.path) {
            Ok(f) => {
                let m = f.metadata()?;
                self.file = Some((f, m.dev(), m.ino()));
                self.parser.next_file();
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Opens the file written after the held one: the next rotated file if the writer
    /// rotated more than once since the last look, else the current one. The held file
    /// is found among the rotated ones by its inode; if it is not there it was deleted
    /// as the oldest, so every rotated file is newer.
    fn open_next(&mut self) -> io::Result<bool> {
        let held = self.inode();
        let mut rotated = Vec::new();
        for p in rotated_files(&self.path)? {
            match std::fs::metadata(&p) {
                Ok(m) => rotated.push((p, (m.dev(), m.ino()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        let newer = match rotated.iter().position(|(_, ino)| Some(*ino) == held) {
            Some(i) => rotated.split_off(i + 1),
            None => rotated,
        };
        for (p, _) in newer {
            match File::open(&p) {
                Ok(f) => {
                    let m = f.metadata()?;
                    self.file = Some((f, m.dev(), m.ino()));
                    self.parser.next_file();
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        self.open()
    }

    fn inode(&self) -> Option<(u64, u64)> {
        self.file.as_ref().map(|(_, d, i)| (*d, *i))
    }

    /// Reads the held file to its end. Returns true if it stopped early, with enough
    /// entries for one batch and more to read.
    fn drain(&mut self, out: &mut Vec<LogEntry>) -> io::Result<bool> {
        let Some((f, _, _)) = &mut self.file else {
            return Ok(false);
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(false);
            }
            self.parser.feed(&buf[..n], out);
            if out.len() >= BATCH {
                return Ok(true);
            }
        }
    }

    /// Reads what was written since the last call, following a rotation. Returns true
    /// if it stopped early with more to read.
    fn read_available(&mut self, out: &mut Vec<LogEntry>) -> io::Result<bool> {
        if self.file.is_none() && !self.open()? {
            return Ok(false);
        }
        loop {
            if self.drain(out)? {
                return Ok(true);
            }
            let now = match std::fs::metadata(&self.path) {
                Ok(m) => Some((m.dev(), m.ino())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            match now {
                // Rotated, and the new file exists. The writer may have added lines to
                // the held file between the drain above and its rename; once renamed it
                // gets no more, so drain it again, then go on with the next file.
                Some(ino) if Some(ino) != self.inode() => {
                    if self.drain(out)? {
                        return Ok(true);
                    }
                    if !self.open_next()? {
                        return Ok(false);
                    }
                }
                _ => return Ok(false),
            }
        }
    }
}

/// Reads the whole log at `path` (its rotated predecessors, then it) as entries;
/// unfinished lines at the end count as lines. A missing file is an empty log.
///
/// # Errors
/// Reading a file failed.
pub fn read_all(path: &Path) -> io::Result<Vec<LogEntry>> {
    let mut f = Follower::new(path.to_path_buf());
    let mut out = Vec::new();
    let mut all = Vec::new();
    read_history(&mut f, &mut out, |batch| {
        all.append(batch);
        true
    })?;
    f.parser.finish(&mut all);
    Ok(all)
}

/// Opens the current file, reads the rotated files older than it, then the current one
/// to its end, calling `batch` with entries as they accumulate. `batch` returns false to
/// stop reading, and then so does this.
fn read_history(
    f: &mut Follower,
    out: &mut Vec<LogEntry>,
    mut batch: impl FnMut(&mut Vec<LogEntry>) -> bool,
) -> io::Result<bool> {
    // The current file first: a rotation right after this only adds its name to the
    // rotated list, where its inode is recognised and skipped.
    f.open()?;
    let current = f.inode();
    for old in rotated_files(&f.path)? {
        let file = match File::open(&old) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let m = file.metadata()?;
        if Some((m.dev(), m.ino())) == current {
            break;
        }
        let mut file = file;
        f.parser.next_file();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            f.parser.feed(&buf[..n], out);
            if !batch(out) {
                return Ok(false);
            }
        }
    }
    f.parser.next_file();
    while f.read_available(out)? {
        if !batch(out) {
            return Ok(false);
        }
    }
    Ok(batch(out))
}

/// Sends a chunk to the consumer unless it has gone or the agent stops; false then.
async fn send(
    tx: &mpsc::Sender<io::Result<Bytes>>,
    bytes: Vec<u8>,
    shutdown: &CancellationToken,
) -> bool {
    if bytes.is_empty() {
        return true;
    }
    tokio::select! {
        r = tx.send(Ok(Bytes::from(bytes))) => r.is_ok(),
        () = shutdown.cancelled() => false,
    }
}

/// How a followed log learns that its container has exited.
pub type Exited = watch::Receiver<bool>;

/// Streams the log at `path` as `kubectl logs` output.
///
/// Without `follow`, or when `exited` already says so, it ends after what is there now.
/// With `follow`, it then polls for new lines until `exited` turns true (or its sender
/// is dropped) and the file is drained; `None` means until the reader goes away. It
/// always ends when `shutdown` is cancelled, when `limit_bytes` is reached, or when the
/// consumer drops the stream.
pub fn log_stream(
    path: PathBuf,
    opts: LogOptions,
    exited: Option<Exited>,
    shutdown: CancellationToken,
) -> impl FuturesStream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    tokio::spawn(async move {
        if let Err(e) = run(path, opts, exited, shutdown, tx.clone()).await {
            // Ends the body with an error (unless the consumer is stuck or gone).
            let _ = tx.try_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

fn exited_now(exited: &Option<Exited>) -> bool {
    match exited {
        None => false,
        Some(rx) => *rx.borrow() || rx.has_changed().is_err(),
    }
}

async fn run(
    path: PathBuf,
    opts: LogOptions,
    mut exited: Option<Exited>,
    shutdown: CancellationToken,
    tx: mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let follow = opts.follow && !exited_now(&exited);
    let mut sink = Sink::new(&opts);
    let tail = opts.tail_lines;
    // The history, in a blocking thread: with a tail only the last lines are kept,
    // otherwise batches go out as they are read.
    let history = {
        let tx = tx.clone();
        let stop = shutdown.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || -> io::Result<_> {
            let mut f = Follower::new(path);
            let mut out = Vec::new();
            let mut tailed: VecDeque<LogEntry> = VecDeque::new();
            let complete = read_history(&mut f, &mut out, |out| {
                let kept = out.drain(..).filter(|e| sink.keep(e));
                match tail {
                    Some(n) => {
                        for e in kept {
                            if n == 0 {
                                break;
                            }
                            if tailed.len() as u64 == n {
                                tailed.pop_front();
                            }
                            tailed.push_back(e);
                        }
                        true
                    }
                    None => {
                        let kept: Vec<LogEntry> = kept.collect();
                        let bytes = sink.render(&kept);
                        runtime.block_on(send(&tx, bytes, &stop)) && !sink.done()
                    }
                }
            })?;
            if !complete {
                return Ok(None);
            }
            if !follow {
                f.parser.finish(&mut out);
                if let Some(n) = tail {
                    for e in out.drain(..).filter(|e| sink.keep(e)) {
                        if tailed.len() as u64 == n {
                            tailed.pop_front();
                        }
                        if n > 0 {
                            tailed.push_back(e);
                        }
                    }
                }
            }
            let mut bytes = sink.render(&tailed);
            if tail.is_none() {
                let rest: Vec<LogEntry> = out.drain(..).filter(|e| sink.keep(e)).collect();
                bytes.extend(sink.render(&rest));
            }
            Ok(Some((f, bytes, sink)))
        })
        .await
        .map_err(io::Error::other)??
    };
    let Some((f, rest, mut sink)) = history else {
        return Ok(());
    };
    if !send(&tx, rest, &shutdown).await {
        return Ok(());
    }
    if !follow || sink.done() {
        return Ok(());
    }
    let mut f = f;
    loop {
        // Whether the container had exited *before* this read: then the read sees
        // everything it wrote, and the log is over.
        let last = exited_now(&exited);
        let (back, read) = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let r = loop {
                match f.read_available(&mut out) {
                    Ok(true) if !last => break Ok(true),
                    Ok(true) => continue,
                    Ok(false) => break Ok(false),
                    Err(e) => break Err(e),
                }
            };
            if last {
                f.parser.finish(&mut out);
            }
            (f, r.map(|more| (more, out)))
        })
        .await
        .map_err(io::Error::other)?;
        f = back;
        let (more, entries) = read?;
        let entries: Vec<LogEntry> = entries.into_iter().filter(|e| sink.keep(e)).collect();
        let bytes = sink.render(&entries);
        if !send(&tx, bytes, &shutdown).await {
            return Ok(());
        }
        if last || sink.done() {
            return Ok(());
        }
        if more {
            continue;
        }
        let changed = async {
            match &mut exited {
                Some(rx) => {
                    let _ = rx.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = changed => {}
            _ = tx.closed() => return Ok(()),
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::CriLogWriter;
    use futures::StreamExt;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_lines() {
        let p = parse_line(b"2024-05-01T10:00:00.5Z stderr P  two spaces").unwrap();
        assert_eq!(p.time, ts("2024-05-01T10:00:00.5Z"));
        assert_eq!(p.stream, Stream::Stderr);
        assert!(!p.full);
        assert_eq!(p.content, b" two spaces");
        let p = parse_line(b"2024-05-01T12:00:00+02:00 stdout F").unwrap();
        assert_eq!(p.time, ts("2024-05-01T10:00:00Z"));
        assert_eq!(p.content, b"");
        assert!(
            parse_line(b"2024-05-01T10:00:00Z stdout F:x y")
                .unwrap()
                .full
        );
        for bad in [
            &b""[..],
            b"garbage",
            b"2024-05-01T10:00:00Z stdin F x",
            b"2024-05-01T10:00:00Z stdout X x",
            b"yesterday stdout F x",
        ] {
            assert_eq!(parse_line(bad), None);
        }
    }

    const LOG: &str = "\
2024-05-01T10:00:01Z stdout F one
2024-05-01T10:00:02Z stderr P tw
not a log line
2024-05-01T10:00:03Z stdout F three
2024-05-01T10:00:04Z stderr F o
2024-05-01T10:00:05Z stdout P unfini";

    #[test]
    fn joins_partial_lines_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let got: Vec<(String, Stream, String)> = read_all(&path)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.time.to_string(),
                    e.stream,
                    String::from_utf8(e.content).unwrap(),
                )
            })
            .collect();
        let want = [
            ("2024-05-01T10:00:01Z", Stream::Stdout, "one"),
            ("2024-05-01T10:00:03Z", Stream::Stdout, "three"),
            ("2024-05-01T10:00:02Z", Stream::Stderr, "two"),
        ];
        assert_eq!(got.len(), 3, "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1, g.2.as_str()), w);
        }
        assert!(read_all(&dir.path().join("none.log")).unwrap().is_empty());
    }

    async fn collect(path: &Path, opts: LogOptions, exited: Option<Exited>) -> String {
        let s = log_stream(path.to_path_buf(), opts, exited, CancellationToken::new());
        let chunks: Vec<Bytes> = s.map(|c| c.unwrap()).collect().await;
        String::from_utf8(chunks.concat()).unwrap()
    }

    fn lines_file(dir: &Path, n: usize) -> PathBuf {
        let path = dir.join("0.log");
        let body: String = (1..=n)
            .map(|i| format!("2024-05-01T10:00:{i:02}Z stdout F line {i}\n"))
            .collect();
        std::fs::write(&path, body).unwrap();
        path
    }

    #[tokio::test]
    async fn tail_since_limit_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = lines_file(dir.path(), 10);
        let all = collect(&path, LogOptions::default(), None).await;
        assert_eq!(all.lines().count(), 10);
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(collect(&path, tail, None).await, "line 9\nline 10\n");
        let none = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert_eq!(collect(&path, none, None).await, "");
        let since = LogOptions {
            since: Some(ts("2024-05-01T10:00:08Z")),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            collect(&path, since, None).await,
            "2024-05-01T10:00:08Z line 8\n2024-05-01T10:00:09Z line 9\n2024-05-01T10:00:10Z line 10\n"
        );
        let limit = LogOptions {
            limit_bytes: Some(10),
            ..Default::default()
        };
        assert_eq!(collect(&path, limit, None).await, "line 1\nlin");
        let both = LogOptions {
            tail_lines: Some(3),
            since: Some(ts("2024-05-01T10:00:09Z")),
            ..Default::default()
        };
        assert_eq!(collect(&path, both, None).await, "line 9\nline 10\n");
    }

    #[tokio::test]
    async fn reads_rotated_files_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = CriLogWriter::open(&path, 300, 10).unwrap();
        for i in 0..30 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        w.close().unwrap();
        assert!(rotated_files(&path).unwrap().len() >= 3);
        let want: String = (0..30).map(|i| format!("line {i}\n")).collect();
        assert_eq!(collect(&path, LogOptions::default(), None).await, want);
        let tail = LogOptions {
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(collect(&path, tail, None).await, "line 29\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follow_survives_rotation_and_ends_when_the_container_exits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = CriLogWriter::open(&path, 250, 4).unwrap();
        w.write(Stream::Stdout, b"before\n").unwrap();
        let (tx, rx) = watch::channel(false);
        let opts = LogOptions {
            follow: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        let mut s = Box::pin(log_stream(
            path.clone(),
            opts,
            Some(rx),
            CancellationToken::new(),
        ));
        let first = s.next().await.unwrap().unwrap();
        assert_eq!(&first[..], b"before\n");
        let collector = tokio::spawn(async move {
            let mut got = String::new();
            while let Some(c) = s.next().await {
                got.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
            }
            got
        });
        // A rotation every ~40 ms, several between two polls of the reader: it finds the
        // files it missed among the rotated ones. (A reader slower than `max_files`
        // rotations loses the deleted ones, as with the kubelet.)
        let w = tokio::task::spawn_blocking(move || {
            for i in 0..40 {
                w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                    .unwrap();
                if i % 4 == 0 {
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
            w.write(Stream::Stderr, b"no newline").unwrap();
            w.flush().unwrap();
            w
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(w); // closes the open stderr line
        tx.send(true).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), collector)
            .await
            .expect("the stream ends once the container exited")
            .unwrap();
        let want: String = (0..40)
            .map(|i| format!("line {i}\n"))
            .chain(["no newline\n".to_string()])
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn follow_without_exit_ends_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = lines_file(dir.path(), 1);
        let stop = CancellationToken::new();
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let mut s = Box::pin(log_stream(path, opts, None, stop.clone()));
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"line 1\n");
        stop.cancel();
        let end = tokio::time::timeout(Duration::from_secs(2), s.next()).await;
        assert!(matches!(end, Ok(None)));
    }

    #[tokio::test]
    async fn follow_with_limit_bytes_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = CriLogWriter::open(&path, 0, 0).unwrap();
        let opts = LogOptions {
            follow: true,
            limit_bytes: Some(8),
            ..Default::default()
        };
        let s = log_stream(path, opts, None, CancellationToken::new());
        w.write(Stream::Stdout, b"abc\ndefgh\nij\n").unwrap();
        let got: Vec<Bytes> = tokio::time::timeout(
            Duration::from_secs(2),
            s.map(|c| c.unwrap()).collect::<Vec<_>>(),
        )
        .await
        .unwrap();
        assert_eq!(got.concat(), b"abc\ndefg");
    }
}
