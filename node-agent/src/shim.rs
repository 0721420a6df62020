//! The per-container supervisor (`skiff shim`, the role containerd-shim and conmon play).
//!
//! The agent starts one shim per container, in its own process group, and it outlives
//! agent restarts: it is the container's parent (a child subreaper), owns its stdout and
//! stderr pipes and writes them to the CRI log, and when the container exits it records
//! the exit status in `exit.json` — so an agent that was down while a container exited
//! still learns its exit code, and logs are never lost with the agent.
//!
//! Protocol with the agent: the shim prints exactly one JSON line on its stdout —
//! `{"pid": N}` once runc started the container, or `{"error": "…"}` — and writes
//! `started.json` / `exit.json` (atomically, temp + rename) in its state directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::logs::{CriLogWriter, Stream};

/// The shim's command line (`skiff shim …`), also how the agent builds it.
#[derive(clap::Args, Clone, Debug)]
pub struct ShimArgs {
    /// The runc binary.
    #[arg(long)]
    pub runc: PathBuf,
    /// runc's state root.
    #[arg(long)]
    pub runc_root: PathBuf,
    /// Container id.
    #[arg(long)]
    pub id: String,
    /// OCI bundle directory (config.json).
    #[arg(long)]
    pub bundle: PathBuf,
    /// Where started.json / exit.json go.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The CRI log file.
    #[arg(long)]
    pub log_path: PathBuf,
    /// Rotate the log beyond this size.
    #[arg(long, default_value_t = 10 << 20)]
    pub max_log_bytes: u64,
    /// Rotated log files kept.
    #[arg(long, default_value_t = 5)]
    pub max_log_files: usize,
    /// The container's cgroup path (for the OOM-kill counter).
    #[arg(long, default_value = "")]
    pub cgroup: String,
}

impl ShimArgs {
    /// The argv after the binary: `shim --runc … …`.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["shim".to_string()];
        let mut kv = |k: &str, val: String| {
            v.push(format!("--{k}"));
            v.push(val);
        };
        kv("runc", self.runc.display().to_string());
        kv("runc-root", self.runc_root.display().to_string());
        kv("id", self.id.clone());
        kv("bundle", self.bundle.display().to_string());
        kv("state-dir", self.state_dir.display().to_string());
        kv("log-path", self.log_path.display().to_string());
        kv("max-log-bytes", self.max_log_bytes.to_string());
        kv("max-log-files", self.max_log_files.to_string());
        kv("cgroup", self.cgroup.clone());
        v
    }
}

/// `started.json`: the container's init process and when it started.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Started {
    /// Host pid of the container's init.
    pub pid: i32,
    /// RFC 3339.
    pub started_at: String,
}

/// `exit.json`: how the container ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exited {
    /// Exit code (128 + signal when killed by one, like a shell reports).
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// RFC 3339 start (empty if it never started).
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// Why it could not start (runc's words), if it did not.
    pub message: Option<String>,
}

/// `started.json` in `state_dir`, if the container started.
pub fn read_started(state_dir: &Path) -> Option<Started> {
    serde_json::from_slice(&std::fs::read(state_dir.join("started.json")).ok()?).ok()
}

/// `exit.json` in `state_dir`, if the container ended.
pub fn read_exited(state_dir: &Path) -> Option<Exited> {
    serde_json::from_slice(&std::fs::read(state_dir.join("exit.json")).ok()?).ok()
}

fn write_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn announce(line: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the shim to the container's end. Returns once `exit.json` is written.
///
/// # Errors
/// Only for failures before the agent was told anything; later ones go to exit.json.
pub fn run(args: ShimArgs) -> Result<()> {
    // The agent starts the shim in its own process group, so a terminal's signals to
    // the agent's group do not reach it; Rust ignores SIGPIPE already.
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    std::fs::create_dir_all(&args.state_dir)?;
    if let Some(dir) = args.log_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = Arc::new(Mutex::new(
        CriLogWriter::open(&args.log_path, args.max_log_bytes, args.max_log_files)
            .with_context(|| format!("opening {}", args.log_path.display()))?,
    ));
    let (out_r, out_w) = std::io::pipe()?;
    let (err_r, err_w) = std::io::pipe()?;
    let pid_file = args.state_dir.join("pid");
    let runc_log = args.state_dir.join("runc.log");
    let _ = std::fs::remove_file(&runc_log);
    let status = std::process::Command::new(&args.runc)
        .arg("--root")
        .arg(&args.runc_root)
        .arg("--log")
        .arg(&runc_log)
        .arg("--log-format")
        .arg("json")
        .args(["run", "--detach", "--bundle"])
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(out_w)
        .stderr(err_w)
        .status();
    // Our copies of the write ends went to runc and closed with the Command; the
    // container holds the only ones left, so the readers see EOF when it ends.
    let copiers = [(out_r, true), (err_r, false)].map(|(mut r, is_stdout)| {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Ok(mut w) = log.lock() {
                            let stream = if is_stdout {
                                Stream::Stdout
                            } else {
                                Stream::Stderr
                            };
                            let _ = w.write(stream, &buf[..n]);
                        }
                    }
                }
            }
        })
    });
    let started_ok = matches!(&status, Ok(s) if s.success());
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let (pid, started_at) = match (started_ok, pid) {
        (true, Some(pid)) => {
            let started = Started {
                pid,
                started_at: crate::now(),
            };
            write_atomic(&args.state_dir.join("started.json"), &started)?;
            announce(&serde_json::json!({"pid": pid}));
            (pid, started.started_at)
        }
        _ => {
            let message = runc_error(&runc_log).unwrap_or_else(|| match &status {
                Ok(s) => format!("runc run exited with {s}"),
                Err(e) => format!("starting runc: {e}"),
            });
            let exited = Exited {
                exit_code: 128,
                signal: None,
                started_at: String::new(),
                finished_at: crate::now(),
                oom_killed: false,
                message: Some(message.clone()),
            };
            write_atomic(&args.state_dir.join("exit.json"), &exited)?;
            announce(&serde_json::json!({"error": message}));
            return Ok(());
        }
    };
    let (exit_code, signal) = wait_for(pid);
    // Give the log copiers a moment to drain what the container wrote last; a daemon it
    // left behind holding the pipe must not keep the exit unrecorded.
    let deadline = Instant::now() + Duration::from_secs(2);
    for c in copiers {
        while !c.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if let Ok(mut w) = log.lock() {
        let _ = w.flush();
    }
    let oom_killed = signal == Some(Signal::SIGKILL as i32) && oom_kills(&args.cgroup) > 0;
    write_atomic(
        &args.state_dir.join("exit.json"),
        &Exited {
            exit_code,
            signal,
            started_at,
            finished_at: crate::now(),
            oom_killed,
            message: None,
        },
    )?;
    Ok(())
}

/// Reaps children (we are a subreaper: the container's init becomes ours when runc
/// exits) until `pid` ends; its exit code and killing signal.
fn wait_for(pid: i32) -> (i32, Option<i32>) {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return (code, None),
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                return (128 + sig as i32, Some(sig as i32))
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                // No children left: the init was reaped by someone else (it should not
                // be); report an unknown exit rather than hang.
                return (255, None);
            }
        }
    }
}

/// The cgroup's OOM-kill counter (cgroup v1 memory.oom_control or v2 memory.events).
fn oom_kills(cgroup: &str) -> u64 {
    if cgroup.is_empty() {
        return 0;
    }
    let rel = cgroup.trim_start_matches('/');
    for (file, key) in [
        (
            format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
            "oom_kill",
        ),
        (format!("/sys/fs/cgroup/{rel}/memory.events"), "oom_kill"),
        (
            format!("/sys/fs/cgroup/unified/{rel}/memory.events"),
            "oom_kill",
        ),
    ] {
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                let mut w = line.split_whitespace();
                if w.next() == Some(key) {
                    if let Some(n) = w.next().and_then(|n| n.parse().ok()) {
                        return n;
                    }
                }
            }
        }
    }
    0
}

/// The last error runc logged (its JSON log lines: {"level":"error","msg":…}).
fn runc_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error").then(|| v["msg"].as_str().unwrap_or_default().to_owned())
    })
}

/// Waits (bounded) for the shim's announcement line; the started pid, or why not.
///
/// # Errors
/// If the shim said it failed, died without a word, or took longer than `timeout`.
pub async fn await_start(stdout: tokio::process::ChildStdout, timeout: Duration) -> Result<i32> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(timeout, lines.next_line())
        .await
        .context("the shim did not report within its start timeout")??;
    let Some(line) = line else {
        bail!("the shim exited without reporting (see its shim.log)");
    };
    let v: serde_json::Value = serde_json::from_str(&line).context("the shim's report")?;
    if let Some(pid) = v["pid"].as_i64() {
        return Ok(pid as i32);
    }
    bail!("{}", v["error"].as_str().unwrap_or("the shim failed"))
}
