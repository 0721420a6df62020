//! One cluster member: a store process running inside its host's network
//! namespace, with its own data dir and log file.
//!
//! The process is started as `ip netns exec <netns> <binary> <args>`; `ip`
//! execs the binary, so the child's pid *is* the member's pid, and signals
//! (SIGKILL, SIGSTOP, SIGCONT) go straight to it. The data dir survives
//! [`Member::kill`]; only [`Member::wipe`] removes it.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::target::{ClusterState, MemberArgs, Target};
use crate::testbed::Host;

/// The client port inside every namespace.
pub const CLIENT_PORT: u16 = 2379;
/// The peer port inside every namespace.
pub const PEER_PORT: u16 = 2380;

/// A member and its process, if running.
#[derive(Debug)]
pub struct Member {
    /// Its host.
    pub host: Host,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its log (stdout and stderr of every incarnation, appended).
    pub log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// The arguments of the last start, reused by [`Member::restart`].
    last_args: Vec<String>,
}

impl Member {
    /// A member on `host`, not started.
    pub fn new(host: Host, data_dir: PathBuf, log_path: PathBuf) -> Self {
        Self {
            host,
            data_dir,
            log_path,
            child: None,
            paused: false,
            last_args: Vec::new(),
        }
    }

    /// Its name (`n1`, …).
    pub fn name(&self) -> &str {
        &self.host.name
    }

    /// `http://addr:2379`.
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.host.addr)
    }

    /// `http://addr:2380`.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{PEER_PORT}", self.host.addr)
    }

    /// Starts the process.
    ///
    /// # Errors
    /// If it is already running or cannot be spawned.
    pub fn start(
        &mut self,
        target: &Target,
        initial_cluster: &str,
        state: ClusterState,
        token: &str,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        let (client_url, peer_url) = (self.client_url(), self.peer_url());
        let args = target.args(&MemberArgs {
            name: &self.host.name,
            data_dir: &data_dir,
            client_url: &client_url,
            peer_url: &peer_url,
            initial_cluster,
            state,
            token,
        });
        self.spawn(target, args)
    }

    /// Starts the process again with the arguments of its last start (the
    /// data dir decides what it resumes from).
    ///
    /// # Errors
    /// As [`Member::start`].
    pub fn restart(&mut self, target: &Target) -> Result<()> {
        let args = self.last_args.clone();
        self.spawn(target, args)
    }

    fn spawn(&mut self, target: &Target, args: Vec<String>) -> Result<()> {
        if self.is_running() {
            anyhow::bail!("{} is already running", self.name());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host.netns])
            .arg(&target.binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // Flags only: no inherited ETCD_* / SKIFF_* settings.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("ETCD_") || k.starts_with("SKIFF_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("SJP_MEMBER_LOG").unwrap_or("info".into()),
        );
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} in {}", self.name(), self.host.netns))?;
        self.child = Some(child);
        self.paused = false;
        self.last_args = args;
        Ok(())
    }

    /// The process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process is running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                Ok(Some(_)) | Err(_) => {
                    self.child = None;
                    false
                }
            },
        }
    }

    /// Whether it is stopped by SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self.pid().context("not running")?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        kill(Pid::from_raw(pid), sig).with_context(|| format!("{sig} to {}", self.name()))
    }

    /// SIGKILL and reap (at most 5 s). Not running: nothing to do.
    ///
    /// # Errors
    /// If the signal cannot be sent.
    pub async fn kill(&mut self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        self.signal(Signal::SIGKILL)?;
        if let Some(mut child) = self.child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        self.paused = false;
        Ok(())
    }

    /// SIGSTOP.
    ///
    /// # Errors
    /// If it is not running or the signal cannot be sent.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT (also when not known to be paused: harmless).
    ///
    /// # Errors
    /// If it is not running or the signal cannot be sent.
    pub fn resume(&mut self) -> Result<()> {
        self.signal(Signal::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// Removes the data dir (the member must not be running).
    ///
    /// # Errors
    /// If it is running or the directory cannot be removed.
    pub fn wipe(&mut self) -> Result<()> {
        if self.is_running() {
            anyhow::bail!("wiping {} while it runs", self.name());
        }
        if self.data_dir.exists() {
            std::fs::remove_dir_all(&self.data_dir)?;
        }
        Ok(())
    }
}
