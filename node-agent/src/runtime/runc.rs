//! `runc` as a subprocess: state, list, kill, delete and exec of containers under the
//! agent's own runc root (so its containers are apart from anyone else's). Starting a
//! container is the shim's job ([`crate::shim`]): it must own the container's stdio.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// A container as `runc state`/`runc list` describe it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RuncState {
    /// Container id.
    pub id: String,
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// Init process pid (0 when stopped).
    #[serde(default)]
    pub pid: i32,
    /// Bundle path.
    #[serde(default)]
    pub bundle: PathBuf,
}

/// How to call runc.
#[derive(Clone, Debug)]
pub struct Runc {
    /// The runc binary.
    pub binary: PathBuf,
    /// Its `--root` (state directory).
    pub root: PathBuf,
}

/// What an exec in a container returned.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// Exit code (`None` when it timed out and was killed).
    pub code: Option<i32>,
    /// stdout then stderr, at most 10 KiB.
    pub output: String,
}

impl Runc {
    /// runc with state under `root`.
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Runc {
        Runc {
            binary: binary.into(),
            root: root.into(),
        }
    }

    /// A command `runc --root <root> <args…>`.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c.kill_on_drop(true);
        c
    }

    /// The same as a std command (for the shim, which is not async).
    pub fn std_command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c
    }

    async fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", self.binary.display()))?;
        if !out.status.success() {
            bail!(
                "runc {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// The state of container `id`, `None` if runc does not know it.
    ///
    /// # Errors
    /// If runc fails for another reason.
    pub async fn state(&self, id: &str) -> Result<Option<RuncState>> {
        match self.run(&["state", id]).await {
            Ok(out) => Ok(Some(
                serde_json::from_slice(&out).context("runc state output")?,
            )),
            Err(e) if e.to_string().contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container under this root.
    ///
    /// # Errors
    /// If runc fails.
    pub async fn list(&self) -> Result<Vec<RuncState>> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let out = self.run(&["list", "--format", "json"]).await?;
        if out.trim_ascii().is_empty() || out.trim_ascii() == b"null" {
            return Ok(Vec::new());
        }
        serde_json::from_slice(&out).context("runc list output")
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to the container's init process, or to every
    /// process in it with `all`. A container that already stopped is not an error.
    ///
    /// # Errors
    /// If runc fails for another reason.
    pub async fn kill(&self, id: &str, signal: &str, all: bool) -> Result<()> {
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, signal]);
        match self.run(&args).await {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the container (forcing: kills it first if it still runs). Unknown ids are
    /// not an error.
    ///
    /// # Errors
    /// If runc fails for another reason.
    pub async fn delete(&self, id: &str) -> Result<()> {
        match self.run(&["delete", "--force", id]).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A command running `cmd` inside container `id` (its stdio is the caller's to wire).
    pub fn exec_command(&self, id: &str, cmd: &[String], tty: bool) -> Command {
        let mut c = self.command();
        c.arg("exec");
        if tty {
            c.arg("--tty");
        }
        c.arg(id).args(cmd);
        c
    }

    /// Runs `cmd` in container `id` with a timeout (exec probes): exit code and output.
    ///
    /// # Errors
    /// If runc cannot be started.
    pub async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecOutput> {
        let mut child = self
            .exec_command(id, cmd, false)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.binary.display()))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let read = async {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (mut out, mut err) = ((&mut stdout).take(10 << 10), (&mut stderr).take(10 << 10));
            let _ = tokio::join!(out.read_to_end(&mut a), err.read_to_end(&mut b));
            a.extend(b);
            a
        };
        match tokio::time::timeout(timeout, async {
            let out = read.await;
            (child.wait().await, out)
        })
        .await
        {
            Ok((status, out)) => Ok(ExecOutput {
                code: status?.code(),
                output: String::from_utf8_lossy(&out).into_owned(),
            }),
            Err(_) => {
                let _ = child.kill().await;
                Ok(ExecOutput {
                    code: None,
                    output: format!("command timed out after {timeout:?}"),
                })
            }
        }
    }
}

fn is_gone(e: &anyhow::Error) -> bool {
    let s = e.to_string();
    s.contains("does not exist")
        || s.contains("not running")
        || s.contains("process already finished")
        || s.contains("container not running")
}

/// The runc binary: `$PATH`'s, else Debian's `/usr/sbin/runc`.
pub fn default_runc() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("runc");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("/usr/sbin/runc")
}
