//! CRI-format container logs (placeholder until the real module lands).
#![allow(missing_docs, dead_code)]
use std::path::{Path, PathBuf};
pub enum Stream {
    Stdout,
    Stderr,
}
pub struct CriLogWriter(std::fs::File);
impl CriLogWriter {
    pub fn open(path: &Path, _max_bytes: u64, _max_files: usize) -> std::io::Result<Self> {
        Ok(Self(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ))
    }
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let s = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        for line in String::from_utf8_lossy(data).lines() {
            writeln!(self.0, "{} {s} F {line}", jiff::Timestamp::now())?;
        }
        Ok(())
    }
    pub fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
pub fn container_log_dir(log_root: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    log_root.join(format!("{namespace}_{pod}_{uid}"))
}
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
