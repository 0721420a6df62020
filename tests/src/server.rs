//! `skiff server` processes (store member + API server) and the real `kubectl` against
//! them.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use skiff_tests::server::Server;
//! let dir = tempfile::tempdir()?;
//! let server = Server::start(dir.path(), &[]).await?;
//! let out = server.kubectl().run(&["get", "ns"]).await?;
//! assert!(out.success(), "{}", out.stderr);
//! # Ok(()) }          // drop kills the server by pid
//! ```

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;

use crate::binaries::skiff_binary;
use crate::health::http_get;
use crate::ports::free_ports;

/// One `skiff server` process on loopback ports, with its data dir.
pub struct Server {
    /// `127.0.0.1:<port>` of the Kubernetes API.
    pub api_addr: String,
    /// The embedded store member's client URL (when it has one).
    pub client_url: String,
    /// The embedded store member's peer URL.
    pub peer_url: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Its store member's name.
    name: String,
    /// The network namespace it runs in (`nsenter --net`), if not the test's own.
    netns: Option<String>,
    child: Option<Child>,
}

/// Pass among a server's extra flags to keep its local node agent (the tests' servers
/// run without one otherwise).
pub const WITH_AGENT: &str = "--with-agent";

impl Server {
    /// Starts `skiff server` with its data dir in `dir/<random>` on free ports, plus
    /// `extra` flags, and waits until `/readyz` answers ok.
    pub async fn start(dir: &Path, extra: &[String]) -> Result<Server> {
        let mut s = Server::prepare(dir, "default", extra)?;
        s.spawn()?;
        s.wait_ready(Duration::from_secs(60)).await?;
        Ok(s)
    }

    /// A server's addresses and flags, not started: `name` is its store member's name.
    pub fn prepare(dir: &Path, name: &str, extra: &[String]) -> Result<Server> {
        let ports = free_ports(3)?;
        let data_dir = dir.join(format!("server-{name}-{}", ports[0]));
        Server::prepare_at(
            data_dir,
            "127.0.0.1",
            [ports[0], ports[1], ports[2]],
            name,
            extra,
        )
    }

    /// A server in network namespace `netns` whose only address is `ip`, on the usual
    /// ports (6443 API, 2379 client, 2380 peer), not started.
    pub fn prepare_in_netns(
        dir: &Path,
        netns: &str,
        ip: &str,
        name: &str,
        extra: &[String],
    ) -> Result<Server> {
        let mut s = Server::prepare_at(
            dir.join(format!("server-{name}")),
            ip,
            [6443, 2379, 2380],
            name,
            extra,
        )?;
        s.netns = Some(netns.to_owned());
        Ok(s)
    }

    fn prepare_at(
        data_dir: PathBuf,
        ip: &str,
        [api, client, peer]: [u16; 3],
        name: &str,
        extra: &[String],
    ) -> Result<Server> {
        std::fs::create_dir_all(&data_dir)?;
        let api_addr = format!("{ip}:{api}");
        let client_url = format!("http://{ip}:{client}");
        let peer_url = format!("http://{ip}:{peer}");
        let mut args = vec![
            "server".to_string(),
            format!("--name={name}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-api={api_addr}"),
            format!("--listen-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
        ];
        // Tests run control planes without the all-in-one's node agent unless they ask
        // for one: an agent is root-only, makes a bridge and registers this machine.
        if !extra.iter().any(|a| a == WITH_AGENT) {
            args.push("--disable-agent".into());
        }
        args.extend(extra.iter().filter(|a| *a != WITH_AGENT).cloned());
        Ok(Server {
            api_addr,
            client_url,
            peer_url,
            log_path: data_dir.join("server.log"),
            data_dir,
            args,
            envs: Vec::new(),
            name: name.to_owned(),
            netns: None,
            child: None,
        })
    }

    /// Adds flags before the next start.
    pub fn add_args(&mut self, extra: &[String]) {
        self.args.extend(extra.iter().cloned());
    }

    /// Sets an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.envs.push((key.to_owned(), value.to_owned()));
    }

    /// Starts the process (not waiting).
    pub fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("server already runs");
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let err = log.try_clone()?;
        let bin = skiff_binary()?;
        let mut cmd = match &self.netns {
            // nsenter execs the command: the child's pid is the server's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawning {} {}", bin.display(), self.args.join(" ")))?;
        self.child = Some(child);
        Ok(())
    }

    /// A kube-rs client of this server (from its kubeconfig), with 15 s timeouts.
    pub async fn kube_client(&self) -> Result<kube::Client> {
        Ok(kube::Client::try_from(self.kube_config().await?)?)
    }

    /// The kube-rs configuration of this server (from its kubeconfig), with 15 s timeouts.
    pub async fn kube_config(&self) -> Result<kube::Config> {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig())?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        config.read_timeout = Some(Duration::from_secs(15));
        config.write_timeout = Some(Duration::from_secs(15));
        Ok(config)
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// `<data-dir>/kubeconfig`, written by the server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `kubectl` pointed at this server.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig(), &self.data_dir.join("kubectl-cache"))
    }

    /// The pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    self.child = None;
                    bail!("skiff server exited with {status}:\n{}", self.log_tail(30));
                }
            }
            let ready =
                tokio::time::timeout(Duration::from_secs(5), http_get(&self.api_addr, "/readyz"))
                    .await;
            if let Ok(Ok((200, _))) = ready {
                if self.kubeconfig().exists() {
                    return Ok(());
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "skiff server not ready after {timeout:?}:\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Starts `n` `skiff server`s forming one cluster (their store members bootstrap
/// together), each with `extra` flags, and waits until all are ready.
pub async fn start_cluster(dir: &Path, n: usize, extra: &[String]) -> Result<Vec<Server>> {
    let servers: Vec<Server> = (0..n)
        .map(|i| Server::prepare(dir, &format!("s{i}"), extra))
        .collect::<Result<_>>()?;
    form_cluster(servers).await
}

/// Starts prepared servers as one cluster (their store members bootstrap together) and
/// waits until all are ready.
pub async fn form_cluster(mut servers: Vec<Server>) -> Result<Vec<Server>> {
    let initial: Vec<String> = servers
        .iter()
        .map(|s| format!("{}={}", s.name, s.peer_url))
        .collect();
    for s in &mut servers {
        s.add_args(&[
            format!("--initial-cluster={}", initial.join(",")),
            "--initial-cluster-token=skiff-test".into(),
        ]);
        s.spawn()?;
    }
    for s in &mut servers {
        s.wait_ready(Duration::from_secs(90)).await?;
    }
    Ok(servers)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// What one kubectl run printed.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The real `kubectl` with a kubeconfig and its own discovery cache dir.
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Kubectl {
    /// kubectl with `kubeconfig`, caching discovery in `cache_dir`.
    pub fn new(kubeconfig: &Path, cache_dir: &Path) -> Kubectl {
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
            env: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    /// Adds an environment variable to every run.
    pub fn with_env(mut self, k: &str, v: &str) -> Kubectl {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Runs `kubectl args…`.
    pub async fn run(&self, args: &[&str]) -> Result<KubectlOutput> {
        self.run_stdin(args, None).await
    }

    /// Runs `kubectl args…` with `stdin` fed to it.
    pub async fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<KubectlOutput> {
        let mut cmd = tokio::process::Command::new("kubectl");
        // Before the arguments: after a `--` it would go to the command (kubectl exec).
        cmd.arg(format!("--cache-dir={}", self.cache_dir.display()))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("running kubectl (is it installed?)")?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().context("kubectl stdin")?;
            pipe.write_all(input.as_bytes()).await?;
            drop(pipe);
        }
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .with_context(|| format!("kubectl {} timed out", args.join(" ")))??;
        Ok(KubectlOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs kubectl and fails with its output unless it exits 0; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args).await?;
        if !out.success() {
            bail!(
                "kubectl {} failed ({:?}):\n{}\n{}",
                args.join(" "),
                out.code,
                out.stdout,
                out.stderr
            );
        }
        Ok(out.stdout)
    }

    /// Spawns a long-running kubectl (e.g. `get -w`) whose stdout the caller reads.
    pub fn spawn(&self, args: &[&str]) -> Result<tokio::process::Child> {
        tokio::process::Command::new("kubectl")
            .arg(format!("--cache-dir={}", self.cache_dir.display()))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("running kubectl")
    }
}
