//! A store cluster of real processes on loopback: N members of `etcd` or `skiff store`,
//! started with the same etcd-style flags, each with its own data dir in one temp dir.
//!
//! ```text
//!  Cluster ── TempDir/                       Member i (a child process)
//!             ├── m0/        data dir        --name mi --data-dir <dir>/mi
//!             ├── m0.log     stdout+stderr   --listen-client-urls http://127.0.0.1:<c_i>
//!             ├── m1/ …                      --listen-peer-urls   http://127.0.0.1:<p_i>
//!                                            --initial-cluster m0=…,m1=…,m2=…
//! ```
//!
//! Every process is started by this module and ended by it: [`Member`] sends SIGKILL to its
//! own pid and reaps it on [`Member::kill`] and on drop. Only a SIGKILL of the test process
//! itself could leave members behind (nothing runs after it).

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skiff_proto::etcdserverpb::StatusRequest;
use tempfile::TempDir;

use crate::binaries::etcd_binary;
use crate::client::{connect, maintenance};
use crate::health::{probe, Health};
use crate::ports::free_ports;

/// How often a member waiting to become healthy is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How many times a start that lost a port race is retried with fresh ports.
const START_ATTEMPTS: usize = 3;

/// Which server the members run. Both take the same etcd-style flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The real etcd: [`etcd_binary`] (`ETCD_BIN`, else `etcd` on `PATH`).
    Etcd,
    /// Skiff's store: `<binary> store <flags>`.
    Skiff {
        /// The `skiff` binary, e.g. from [`crate::binaries::skiff_binary`].
        binary: PathBuf,
    },
}

impl Target {
    /// A short name for reports: `etcd` or `skiff`.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Etcd => "etcd",
            Target::Skiff { .. } => "skiff",
        }
    }

    /// The program and the leading arguments that precede the member flags.
    fn command(&self) -> (PathBuf, Vec<String>) {
        match self {
            Target::Etcd => (etcd_binary(), Vec::new()),
            Target::Skiff { binary } => (binary.clone(), vec!["store".to_string()]),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to start: which server, how many members, and how long to wait for them.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The server binary and its invocation.
    pub target: Target,
    /// Number of members (1, 3, 5, …). Zero is rejected by [`Cluster::start`].
    pub size: usize,
    /// How long [`Cluster::start`] and [`Cluster::restart`] wait for a member to be healthy.
    pub startup_timeout: Duration,
    /// Flags appended to every member's command line (e.g. `--snapshot-count=1000`).
    pub extra_args: Vec<String>,
}

impl ClusterConfig {
    /// A config for `size` members of `target`, 30 s startup timeout, no extra flags.
    pub fn new(target: Target, size: usize) -> Self {
        Self {
            target,
            size,
            startup_timeout: Duration::from_secs(30),
            extra_args: Vec::new(),
        }
    }
}

/// The URLs and names of one member, fixed for the cluster's lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MemberAddr {
    name: String,
    client_url: String,
    peer_url: String,
}

/// `--initial-cluster` value naming `members`: `name=peer-url,…`.
fn initial_cluster_of<'a>(members: impl IntoIterator<Item = &'a MemberAddr>) -> String {
    members
        .into_iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a member bootstraps a new cluster or joins a running one
/// (`--initial-cluster-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterState {
    New,
    Existing,
}

impl ClusterState {
    fn flag(self) -> &'static str {
        match self {
            ClusterState::New => "--initial-cluster-state=new",
            ClusterState::Existing => "--initial-cluster-state=existing",
        }
    }
}

/// The etcd-style flags of one member. Pure, so it is tested without a server.
fn member_flags(
    me: &MemberAddr,
    initial_cluster: &str,
    state: ClusterState,
    data_dir: &Path,
    token: &str,
    extra: &[String],
) -> Vec<String> {
    let mut flags = vec![
        format!("--name={}", me.name),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={}", me.client_url),
        format!("--advertise-client-urls={}", me.client_url),
        format!("--listen-peer-urls={}", me.peer_url),
        format!("--initial-advertise-peer-urls={}", me.peer_url),
        format!("--initial-cluster={initial_cluster}"),
        state.flag().to_string(),
        format!("--initial-cluster-token={token}"),
    ];
    flags.extend(extra.iter().cloned());
    flags
}

/// One member: its fixed addresses and data dir, and its process while it runs.
///
/// A restarted member keeps its name, URLs and data dir; only the pid changes.
pub struct Member {
    addr: MemberAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.addr.name)
            .field("client_url", &self.addr.client_url)
            .field("pid", &self.pid())
            .field("paused", &self.paused)
            .finish()
    }
}

impl Member {
    /// The member's `--name` (`m0`, `m1`, …).
    pub fn name(&self) -> &str {
        &self.addr.name
    }

    /// Client URL, `http://127.0.0.1:<port>`: gRPC and `/health`.
    pub fn client_url(&self) -> &str {
        &self.addr.client_url
    }

    /// Peer URL, `http://127.0.0.1:<port>`.
    pub fn peer_url(&self) -> &str {
        &self.addr.peer_url
    }

    /// The member's data dir; kept across [`Member::kill`] and [`Member::start`].
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// File receiving the member's stdout and stderr (appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The full command line, for messages.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Deletes the member's data dir, so that its next start is that of a new member (which
    /// must then join through membership change, see [`Member::join_existing`]).
    ///
    /// # Errors
    /// When the member runs, or the directory cannot be removed.
    pub fn wipe_data_dir(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!(
                "member {} runs: kill it before wiping its data dir",
                self.addr.name
            );
        }
        match std::fs::remove_dir_all(&self.data_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.data_dir.display())),
        }
    }

    /// From the next start on, the member joins a running cluster: `--initial-cluster-state
    /// existing` and `--initial-cluster` set to `initial_cluster` (`name=peer-url,…`, as
    /// `etcdctl member add` prints it). The member must have been added with MemberAdd.
    pub fn join_existing(&mut self, initial_cluster: &str) {
        for arg in &mut self.args {
            if arg.starts_with("--initial-cluster=") {
                *arg = format!("--initial-cluster={initial_cluster}");
            } else if arg.starts_with("--initial-cluster-state=") {
                *arg = ClusterState::Existing.flag().to_string();
            }
        }
    }

    /// The pid of the running process, if it runs (paused counts as running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the member's process was started and has not been killed (it may have
    /// exited on its own; [`Member::wait_healthy`] notices that).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the member was stopped with [`Member::pause`] and not resumed.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Starts the member's process with its data dir as it is.
    ///
    /// # Errors
    /// When it already runs, or the process cannot be spawned.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("member {} is already running", self.addr.name);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let log_err = log.try_clone()?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .with_context(|| format!("spawning {}", self.command_line()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// `kill -9` the process and reap it. A no-op when it does not run.
    ///
    /// # Errors
    /// When the signal cannot be sent (other than "already exited").
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            self.paused = false;
            // Child::kill sends SIGKILL to this child's pid (also when it is stopped).
            match child.kill() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {} // already exited
                Err(e) => return Err(e).context("SIGKILL"),
            }
            child.wait().context("reaping the killed member")?;
        }
        Ok(())
    }

    /// SIGSTOP the process: it keeps its sockets but answers nothing.
    ///
    /// # Errors
    /// When it does not run or the signal fails.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT a paused process.
    ///
    /// # Errors
    /// When it does not run or the signal fails.
    pub fn resume(&mut self) -> Result<()> {
        self.signal(Signal::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("member {} is not running", self.addr.name))?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal).with_context(|| format!("{signal} to pid {pid}"))
    }

    /// Resident set size of the running process in KiB (`VmRSS` of `/proc/<pid>/status`).
    ///
    /// # Errors
    /// When it does not run or `/proc` cannot be read.
    pub fn rss_kib(&self) -> Result<u64> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("member {} is not running", self.addr.name))?;
        rss_kib_of(pid)
    }

    /// The last `lines` lines of the member's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until the member is healthy (see [`crate::health::probe`]).
    ///
    /// # Errors
    /// When the process exits (the error holds the log tail), or `timeout` passes.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self
                .child
                .as_mut()
                .ok_or_else(|| anyhow!("member {} is not running", self.addr.name))?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "member {} exited with {status} while starting; last log lines:\n{}",
                    self.addr.name,
                    self.log_tail(20)
                );
            }
            let last = probe(&self.addr.client_url, PROBE_TIMEOUT).await;
            if last == Health::Healthy {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "member {} not healthy after {timeout:?} ({last:?}); last log lines:\n{}",
                    self.addr.name,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- {} ({}) last log lines:\n{}",
                self.addr.name,
                self.log_path.display(),
                self.log_tail(20)
            );
        }
        // Errors cannot be reported from drop; kill() only fails if the pid is not ours.
        let _ = self.kill();
    }
}

/// `VmRSS` of `/proc/<pid>/status` in KiB.
///
/// # Errors
/// When the file cannot be read or has no `VmRSS` line.
pub fn rss_kib_of(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// N members started together; kills them all on drop, then removes their temp dir.
pub struct Cluster {
    // Declared before `dir`: fields drop in order, so the processes die before their
    // data dirs are removed.
    members: Vec<Member>,
    config: ClusterConfig,
    dir: TempDir,
    /// `--initial-cluster-token` of every member, also of those added later.
    token: String,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("target", &self.config.target)
            .field("dir", &self.dir.path())
            .field("members", &self.members)
            .finish()
    }
}

impl Cluster {
    /// Starts `config.size` members on fresh loopback ports and waits until each is
    /// healthy. A start that lost a port race ("address already in use") is retried with
    /// new ports.
    ///
    /// # Errors
    /// When `size` is 0, a binary cannot be spawned, or a member is not healthy within
    /// `startup_timeout` (the error holds its log tail). Started processes are killed.
    pub async fn start(config: ClusterConfig) -> Result<Cluster> {
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(config.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) if format!("{e:#}").contains("address already in use") => {
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("cluster did not start")))
    }

    async fn start_once(config: ClusterConfig) -> Result<Cluster> {
        let mut cluster = Self::prepare(config)?;
        cluster.start_members().await?;
        Ok(cluster)
    }

    /// Sets up `config.size` members on fresh loopback ports — temp dir, flags, empty data
    /// dirs — without starting any, so a test can fill the data dirs first (e.g. `skiff
    /// store restore`). Start them with [`Cluster::start_members`]; a lost port race is not
    /// retried here.
    ///
    /// # Errors
    /// When `size` is 0, or the temp dir or ports cannot be had.
    pub fn prepare(config: ClusterConfig) -> Result<Cluster> {
        if config.size == 0 {
            bail!("a cluster needs at least one member");
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("skiff-{}-", config.target.name()))
            .tempdir()
            .context("creating the cluster temp dir")?;
        let ports = free_ports(config.size * 2)?;
        let addrs: Vec<MemberAddr> = (0..config.size)
            .map(|i| MemberAddr {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
            })
            .collect();
        let token = format!("skiff-tests-{}-{}", std::process::id(), ports[0]);
        let initial_cluster = initial_cluster_of(&addrs);
        let mut cluster = Cluster {
            members: Vec::with_capacity(config.size),
            config,
            dir,
            token,
        };
        for addr in addrs {
            let m = cluster.new_member(addr, &initial_cluster, ClusterState::New);
            cluster.members.push(m);
        }
        Ok(cluster)
    }

    fn new_member(&self, addr: MemberAddr, initial_cluster: &str, state: ClusterState) -> Member {
        let (program, mut args) = self.config.target.command();
        let data_dir = self.dir.path().join(&addr.name);
        args.extend(member_flags(
            &addr,
            initial_cluster,
            state,
            &data_dir,
            &self.token,
            &self.config.extra_args,
        ));
        Member {
            log_path: self.dir.path().join(format!("{}.log", addr.name)),
            addr,
            data_dir,
            program,
            args,
            child: None,
            paused: false,
        }
    }

    /// Starts every member that does not run yet, then waits until each is healthy.
    ///
    /// # Errors
    /// As [`Member::start`] and [`Member::wait_healthy`].
    pub async fn start_members(&mut self) -> Result<()> {
        // All members must run before any can elect a leader and report healthy.
        for m in &mut self.members {
            if !m.is_running() {
                m.start()?;
            }
        }
        let timeout = self.config.startup_timeout;
        for m in &mut self.members {
            m.wait_healthy(timeout).await?;
        }
        Ok(())
    }

    /// Appends a member `m<len>` on fresh ports that will join the running cluster
    /// (`--initial-cluster-state existing`; `--initial-cluster` names the members that run
    /// now and the new one). It is not started: add it first with MemberAdd (its
    /// [`Member::peer_url`]), then [`Member::start`] it. Returns its index.
    ///
    /// # Errors
    /// When no ports can be had.
    pub fn add_member(&mut self) -> Result<usize> {
        let ports = free_ports(2)?;
        let i = self.members.len();
        let addr = MemberAddr {
            name: format!("m{i}"),
            client_url: format!("http://127.0.0.1:{}", ports[0]),
            peer_url: format!("http://127.0.0.1:{}", ports[1]),
        };
        let initial_cluster = initial_cluster_of(
            self.members
                .iter()
                .filter(|m| m.is_running())
                .map(|m| &m.addr)
                .chain(std::iter::once(&addr)),
        );
        let m = self.new_member(addr, &initial_cluster, ClusterState::Existing);
        self.members.push(m);
        Ok(i)
    }

    /// `--initial-cluster` value naming the given members (`name=peer-url,…`).
    ///
    /// # Errors
    /// When an index is out of range.
    pub fn initial_cluster(&self, members: &[usize]) -> Result<String> {
        let addrs = members
            .iter()
            .map(|&i| self.member(i).map(|m| &m.addr))
            .collect::<Result<Vec<_>>>()?;
        Ok(initial_cluster_of(addrs))
    }

    /// The config the cluster was started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The temp dir holding every member's data dir and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never true for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// All members, in start order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Member `i`.
    ///
    /// # Errors
    /// When `i` is out of range.
    pub fn member(&self, i: usize) -> Result<&Member> {
        let n = self.members.len();
        self.members
            .get(i)
            .ok_or_else(|| anyhow!("no member {i} in a cluster of {n}"))
    }

    /// Member `i`, mutably.
    ///
    /// # Errors
    /// When `i` is out of range.
    pub fn member_mut(&mut self, i: usize) -> Result<&mut Member> {
        let n = self.members.len();
        self.members
            .get_mut(i)
            .ok_or_else(|| anyhow!("no member {i} in a cluster of {n}"))
    }

    /// Client URLs of all members, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.client_url().to_string())
            .collect()
    }

    /// Client URLs of the members that run and are not paused.
    pub fn live_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running() && !m.is_paused())
            .map(|m| m.client_url().to_string())
            .collect()
    }

    /// `kill -9` member `i` (its data dir stays).
    ///
    /// # Errors
    /// As [`Member::kill`], or a bad index.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.member_mut(i)?.kill()
    }

    /// SIGSTOP member `i`.
    ///
    /// # Errors
    /// As [`Member::pause`], or a bad index.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.member_mut(i)?.pause()
    }

    /// SIGCONT member `i`.
    ///
    /// # Errors
    /// As [`Member::resume`], or a bad index.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.member_mut(i)?.resume()
    }

    /// Restarts member `i` on its data dir (killing it first if it runs) and waits until it
    /// is healthy.
    ///
    /// # Errors
    /// As [`Member::start`] and [`Member::wait_healthy`], or a bad index.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        let timeout = self.config.startup_timeout;
        let m = self.member_mut(i)?;
        m.kill()?;
        m.start()?;
        m.wait_healthy(timeout).await
    }

    /// The index of the current leader: the live member whose Maintenance Status says it
    /// is the leader (with the highest raft term, should two say so).
    ///
    /// # Errors
    /// When no live member claims leadership.
    pub async fn leader(&self) -> Result<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() || m.is_paused() {
                continue;
            }
            let Ok(Ok(status)) = tokio::time::timeout(PROBE_TIMEOUT, async {
                let channel = connect(m.client_url()).await?;
                let resp = maintenance(channel).status(StatusRequest {}).await?;
                anyhow::Ok(resp.into_inner())
            })
            .await
            else {
                continue;
            };
            let me = status.header.as_ref().map(|h| h.member_id);
            if status.leader != 0 && me == Some(status.leader) {
                let term = status.raft_term;
                if best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, i));
                }
            }
        }
        best.map(|(_, i)| i)
            .ok_or_else(|| anyhow!("no live member claims to be leader"))
    }

    /// Polls [`Cluster::leader`] until a leader is found or `timeout` passes.
    ///
    /// # Errors
    /// When no leader emerges within `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.leader().await {
                Ok(i) => return Ok(i),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("no leader within {timeout:?}")))
                }
                Err(_) => tokio::time::sleep(PROBE_INTERVAL).await,
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<MemberAddr> {
        (0..n)
            .map(|i| MemberAddr {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", 2379 + 10 * i),
                peer_url: format!("http://127.0.0.1:{}", 2380 + 10 * i),
            })
            .collect()
    }

    #[test]
    fn flags_are_etcds() {
        let all = addrs(3);
        let flags = member_flags(
            &all[1],
            &initial_cluster_of(&all),
            ClusterState::New,
            Path::new("/d/m1"),
            "tok",
            &["--snapshot-count=5".to_string()],
        );
        assert_eq!(
            flags,
            vec![
                "--name=m1",
                "--data-dir=/d/m1",
                "--listen-client-urls=http://127.0.0.1:2389",
                "--advertise-client-urls=http://127.0.0.1:2389",
                "--listen-peer-urls=http://127.0.0.1:2390",
                "--initial-advertise-peer-urls=http://127.0.0.1:2390",
                "--initial-cluster=m0=http://127.0.0.1:2380,m1=http://127.0.0.1:2390,\
                 m2=http://127.0.0.1:2400",
                "--initial-cluster-state=new",
                "--initial-cluster-token=tok",
                "--snapshot-count=5",
            ]
        );
    }

    #[test]
    fn join_existing_rewrites_only_the_cluster_flags() {
        let dir = tempfile::tempdir().unwrap();
        let all = addrs(2);
        let mut m = fake_member(dir.path(), "true", &[]);
        m.args = member_flags(
            &all[0],
            &initial_cluster_of(&all),
            ClusterState::New,
            Path::new("/d/m0"),
            "tok",
            &[],
        );
        m.join_existing("m0=http://127.0.0.1:2380,m9=http://x:1");
        assert!(m
            .args
            .contains(&"--initial-cluster=m0=http://127.0.0.1:2380,m9=http://x:1".to_string()));
        assert!(m
            .args
            .contains(&"--initial-cluster-state=existing".to_string()));
        assert!(m.args.contains(&"--initial-cluster-token=tok".to_string()));
        assert_eq!(m.args.len(), 9);
    }

    #[test]
    fn wipe_refuses_a_running_member() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = fake_member(dir.path(), "sleep", &["30"]);
        std::fs::create_dir_all(m.data_dir().join("member")).unwrap();
        m.start().unwrap();
        assert!(m.wipe_data_dir().is_err());
        m.kill().unwrap();
        m.wipe_data_dir().unwrap();
        assert!(!m.data_dir().exists());
        m.wipe_data_dir().unwrap(); // idempotent
    }

    #[test]
    fn skiff_runs_the_store_subcommand() {
        let (program, leading) = Target::Skiff {
            binary: PathBuf::from("/x/skiff"),
        }
        .command();
        assert_eq!(program, PathBuf::from("/x/skiff"));
        assert_eq!(leading, vec!["store"]);
        assert!(Target::Etcd.command().1.is_empty());
        assert_eq!(Target::Etcd.to_string(), "etcd");
    }

    #[test]
    fn vm_rss_parsing() {
        let status = "Name:\tetcd\nVmPeak:\t  100 kB\nVmRSS:\t   23456 kB\nThreads: 9\n";
        assert_eq!(parse_vm_rss(status), Some(23456));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_vm_rss("VmRSS: lots\n"), None);
        assert_eq!(parse_vm_rss("VmRSS: 5 MB\n"), None);
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_kib_of(std::process::id()).unwrap() > 0);
    }

    #[tokio::test]
    async fn zero_members_is_an_error() {
        let err = Cluster::start(ClusterConfig::new(Target::Etcd, 0))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("at least one"));
    }

    fn fake_member(dir: &Path, program: &str, args: &[&str]) -> Member {
        let log_path = dir.join("m0.log");
        std::fs::File::create(&log_path).unwrap();
        Member {
            addr: addrs(1).remove(0),
            data_dir: dir.join("m0"),
            log_path,
            program: PathBuf::from(program),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            paused: false,
        }
    }

    #[test]
    fn member_process_lifecycle_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = fake_member(dir.path(), "sleep", &["30"]);
        m.start().unwrap();
        assert!(m.start().is_err(), "double start is refused");
        let pid = m.pid().unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        m.pause().unwrap();
        // SIGSTOP is delivered asynchronously: poll the state for a while.
        let stopped = (0..100).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            std::thread::sleep(Duration::from_millis(10));
            state.contains(") T ")
        });
        assert!(stopped, "pid {pid} never showed state T");
        m.resume().unwrap();
        m.kill().unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "reaped");
        assert!(m.pause().is_err(), "no signal to a dead member");
        m.kill().unwrap();
        m.start().unwrap();
        let pid = m.pid().unwrap();
        drop(m);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "drop kills");
    }

    #[tokio::test]
    async fn member_that_exits_reports_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = fake_member(dir.path(), "sh", &["-c", "echo boom-from-member; exit 3"]);
        m.start().unwrap();
        let err = m.wait_healthy(Duration::from_secs(10)).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("boom-from-member"), "{msg}");
        assert!(!m.is_running());
    }

    #[test]
    fn spawn_failure_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = fake_member(dir.path(), "/nonexistent/skiff", &[]);
        assert!(m.start().is_err());
    }
}
