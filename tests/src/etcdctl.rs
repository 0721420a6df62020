//! Runs the real `etcdctl` (v3 API) against members and captures what it printed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use crate::binaries::etcdctl_binary;

/// What one `etcdctl` run printed, and how it exited.
#[derive(Debug, Clone)]
pub struct EtcdctlOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output, lossily UTF-8.
    pub stdout: String,
    /// Standard error, lossily UTF-8.
    pub stderr: String,
}

impl EtcdctlOutput {
    /// Whether `etcdctl` exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// `etcdctl` bound to a set of endpoints, run with `ETCDCTL_API=3`.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    binary: PathBuf,
    endpoints: Vec<String>,
    timeout: Duration,
}

impl Etcdctl {
    /// `etcdctl` (see [`etcdctl_binary`]) talking to `endpoints` (client URLs); each run
    /// is killed after 30 s.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            binary: etcdctl_binary(),
            endpoints,
            timeout: Duration::from_secs(30),
        }
    }

    /// Changes how long one run may take before it is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The full argument list of a run: `--endpoints=...` then `args`.
    pub fn command_args(&self, args: &[&str]) -> Vec<String> {
        std::iter::once(format!("--endpoints={}", self.endpoints.join(",")))
            .chain(args.iter().map(|a| a.to_string()))
            .collect()
    }

    /// Runs `etcdctl --endpoints=... <args>` with `stdin` as its input (e.g. for `txn -i`),
    /// and captures its output whatever the exit code.
    ///
    /// # Errors
    /// When it cannot be spawned or does not finish within the timeout (it is killed).
    pub async fn run_with_input(&self, args: &[&str], stdin: &[u8]) -> Result<EtcdctlOutput> {
        let mut child = Command::new(&self.binary)
            .args(self.command_args(args))
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        if let Some(mut input) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            input
                .write_all(stdin)
                .await
                .context("writing etcdctl stdin")?;
            // Dropping closes stdin, so `txn -i` sees the end of its input.
        }
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(out) => out.context("waiting for etcdctl")?,
            // The child was moved into the future that just got dropped: kill_on_drop
            // ends it.
            Err(_) => bail!("etcdctl {args:?} did not finish within {:?}", self.timeout),
        };
        Ok(EtcdctlOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// As [`Etcdctl::run_with_input`] with empty input.
    ///
    /// # Errors
    /// As [`Etcdctl::run_with_input`].
    pub async fn run(&self, args: &[&str]) -> Result<EtcdctlOutput> {
        self.run_with_input(args, b"").await
    }

    /// Starts a long-running `etcdctl --endpoints=... <args>` (e.g. `watch`) with stdout and
    /// stderr piped and stdin closed. The child is killed when dropped; kill it by its pid
    /// with [`tokio::process::Child::kill`] to end it earlier.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn spawn(&self, args: &[&str]) -> Result<tokio::process::Child> {
        Command::new(&self.binary)
            .args(self.command_args(args))
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))
    }

    /// Runs and insists on exit code 0; returns stdout.
    ///
    /// # Errors
    /// As [`Etcdctl::run`], or a non-zero exit (the error holds stderr).
    pub async fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args).await?;
        if !out.success() {
            bail!(
                "etcdctl {args:?} exited {:?}: {}",
                out.code,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_come_first() {
        let c = Etcdctl::new(vec![
            "http://127.0.0.1:1".into(),
            "http://127.0.0.1:2".into(),
        ]);
        assert_eq!(
            c.command_args(&["put", "k", "v"]),
            vec![
                "--endpoints=http://127.0.0.1:1,http://127.0.0.1:2",
                "put",
                "k",
                "v"
            ]
        );
    }

    #[tokio::test]
    async fn version_runs_without_a_server() {
        let c = Etcdctl::new(vec![]);
        let out = c.ok(&["version"]).await.unwrap();
        assert!(out.contains("API version: 3"), "{out}");
    }

    #[tokio::test]
    async fn failure_is_captured_not_raised() {
        let port = crate::ports::free_port().unwrap();
        let c = Etcdctl::new(vec![format!("http://127.0.0.1:{port}")]);
        let out = c
            .run(&[
                "--dial-timeout=300ms",
                "--command-timeout=500ms",
                "get",
                "k",
            ])
            .await
            .unwrap();
        assert!(!out.success());
        assert!(c.ok(&["--dial-timeout=300ms", "get", "k"]).await.is_err());
    }
}
