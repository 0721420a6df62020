//! CRI-format container logs: the files a container's supervisor writes and
//! `kubectl logs` reads through the agent's HTTP endpoint.
//!
//! The layout is the kubelet's, so tools that know it find their way:
//!
//! ```text
//! <log_root>/<namespace>_<pod>_<uid>/<container>/<restart_count>.log          ← being written
//! <log_root>/<namespace>_<pod>_<uid>/<container>/<restart_count>.log.<stamp>  ← rotated, oldest
//!                                                                              first by name
//! ```
//!
//! Each line of a file is one *part* of a line the container printed:
//!
//! ```text
//! 2024-05-01T10:00:00.123456789Z stdout F hello world
//! 2024-05-01T10:00:00.200000000Z stderr P first 16 KiB of a very long line…
//! 2024-05-01T10:00:00.200000100Z stderr F …and the rest of it
//! ```
//!
//! `F` ends a line, `P` says the line goes on in the next part of the same stream. A line
//! longer than [`MAX_PART`] bytes, or one still unfinished when the writer is flushed, is
//! written as `P` parts closed by an `F` part; readers join them.
//!
//! # Layout
//! - [`writer`]: [`CriLogWriter`], the synchronous writer with rotation.
//! - [`reader`]: parsing, the `kubectl logs` options (tail, since, limitBytes, timestamps)
//!   and following a file across rotations.

pub mod reader;
pub mod writer;

use std::fmt;
use std::path::{Path, PathBuf};

pub use reader::{log_stream, parse_line, read_all, LogEntry, LogOptions, Part};
pub use writer::CriLogWriter;

/// The longest part of a line written to a log file, as containerd writes them.
pub const MAX_PART: usize = 16 * 1024;

/// Which of the container's output streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The word used in a CRI log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    fn parse(s: &[u8]) -> Option<Stream> {
        match s {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The directory of one pod's logs: `<log_root>/<namespace>_<pod>_<uid>`.
pub fn container_log_dir(log_root: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    log_root.join(format!("{namespace}_{pod}_{uid}"))
}

/// The log file of one attempt of a container:
/// `<log_root>/<namespace>_<pod>_<uid>/<container>/<restart_count>.log`.
pub fn container_log_path(
    log_root: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    restart_count: u32,
) -> PathBuf {
    container_log_dir(log_root, namespace, pod, uid)
        .join(container)
        .join(format!("{restart_count}.log"))
}

/// The rotated predecessors of the log file at `path`, oldest first (their names end in
/// a timestamp that sorts chronologically; compressed ones are skipped).
pub fn rotated_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let rotated = n.starts_with(&prefix) && !n.ends_with(".gz") && !n.ends_with(".tmp");
            rotated.then(|| e.path())
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_kubelet_layout() {
        let p = container_log_path(Path::new("/var/log/pods"), "ns", "web", "u-1", "nginx", 2);
        assert_eq!(p, Path::new("/var/log/pods/ns_web_u-1/nginx/2.log"));
        assert_eq!(
            container_log_dir(Path::new("/l"), "a", "b", "c"),
            Path::new("/l/a_b_c")
        );
    }

    #[test]
    fn rotated_files_are_oldest_first_and_skip_others() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        for n in [
            "0.log.20240102-000000.000000000",
            "0.log.20240101-000000.000000000",
            "0.log.20240101-000000.000000000.gz",
            "1.log.20240101-000000.000000000",
            "0.log",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let names: Vec<String> = rotated_files(&log)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "0.log.20240101-000000.000000000",
                "0.log.20240102-000000.000000000"
            ]
        );
        assert!(rotated_files(&dir.path().join("missing/0.log"))
            .unwrap()
            .is_empty());
    }
}
