//! A real node for end-to-end tests: `skiff server` with its local agent (runc pods, CNI
//! on a bridge of the test's own, a pod network of its own), the demo busybox image
//! built into the agent's image store, and everything removed afterwards — the server
//! by pid, then `skiff agent --reset` for containers, shims, namespaces, mounts, bridge
//! and nftables tables.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client};

use crate::binaries::skiff_binary;
use crate::server::{Kubectl, Server, WITH_AGENT};

/// The image every agent test runs (built offline from Debian's busybox-static).
pub const BUSYBOX: &str = "skiff.local/busybox:1.35";

/// Why real pods cannot run here, if they cannot (the tests then skip, saying so).
pub fn cannot_run() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root".into());
    }
    for (tool, hint) in [
        ("/usr/sbin/runc", "runc"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/bin/busybox", "busybox-static"),
        ("/usr/sbin/nft", "nftables"),
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} missing (apt-get install {hint})"));
        }
    }
    None
}

/// A `skiff server` with a real local agent.
pub struct AgentServer {
    /// The server (control plane + agent).
    pub server: Server,
    /// The agent's state directory.
    pub root: PathBuf,
    /// The pods' bridge (unique per test).
    pub bridge: String,
    /// The node's name.
    pub node: String,
    /// The agent's HTTP port.
    pub agent_port: u16,
    /// A separate `skiff agent` process (when the server runs without its own).
    agent: Option<std::process::Child>,
    /// Extra environment of the separate agent process, for its next start.
    pub agent_env: Vec<(String, String)>,
}

/// Test agents report no disk pressure: how full the test machine's disk is is not
/// the tests' business, and a DiskPressure taint would leave their pods Pending.
pub const NO_DISK_PRESSURE: (&str, &str) = ("SKIFF_AGENT_DISK_PRESSURE_BELOW_PERCENT", "0");

/// Runs `skiff <args>` to completion (inside network namespace `netns`, if given); its
/// stdout.
pub(crate) fn run_skiff_in(netns: Option<&str>, args: &[&str]) -> Result<String> {
    let bin = skiff_binary()?;
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let out = cmd
        .args(args)
        .output()
        .with_context(|| format!("skiff {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "skiff {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `skiff agent --reset` of the agent with state in `root` and pods on `bridge`, run in
/// `netns` (where its bridge and nftables tables are): kills its containers and shims,
/// unmounts, removes pod namespaces, bridge and tables.
pub(crate) fn reset_agent(netns: Option<&str>, root: &Path, bridge: &str) -> Result<()> {
    run_skiff_in(
        netns,
        &[
            "agent",
            "--reset",
            "--root-dir",
            &root.display().to_string(),
            "--bridge",
            bridge,
        ],
    )
    .map(drop)
}

/// Builds [`BUSYBOX`] into the image store of the agent with state in `root`.
pub(crate) fn build_busybox(root: &Path) -> Result<()> {
    run_skiff_in(
        None,
        &[
            "image",
            "--root-dir",
            &root.display().to_string(),
            "build-busybox",
            BUSYBOX,
        ],
    )
    .map(drop)
}

/// The agent's root dir, bridge and node name for test network `net`, with leftovers of
/// an earlier killed run removed and the busybox image built.
fn prepare(dir: &Path, net: u8) -> Result<(PathBuf, String, String)> {
    let root = dir.join("agent");
    let bridge = format!("sk{net}");
    let node = format!("e2e-{net}");
    let _ = reset_agent(None, &root, &bridge);
    build_busybox(&root)?;
    Ok((root, bridge, node))
}

impl AgentServer {
    /// Starts a server whose agent uses bridge `sk<net>` and pod network
    /// `10.<net>.0.0/16` (tests side by side pick different `net`s), and waits until
    /// its node is Ready.
    pub async fn start(dir: &Path, net: u8) -> Result<AgentServer> {
        let (root, bridge, node) = prepare(dir, net)?;
        let agent_port = crate::ports::free_ports(1)?[0];
        let extra: Vec<String> = vec![
            WITH_AGENT.into(),
            format!("--agent-root-dir={}", root.display()),
            format!("--node-name={node}"),
            "--node-ip=127.0.0.1".into(),
            format!("--cluster-cidr=10.{net}.0.0/16"),
            format!("--agent-port={agent_port}"),
        ];
        let mut server = Server::prepare(dir, "default", &extra)?;
        server.set_env("SKIFF_AGENT_BRIDGE", &bridge);
        server.set_env(NO_DISK_PRESSURE.0, NO_DISK_PRESSURE.1);
        server.spawn()?;
        server.wait_ready(Duration::from_secs(60)).await?;
        let me = AgentServer {
            server,
            root,
            bridge,
            node,
            agent_port,
            agent: None,
            agent_env: Vec::new(),
        };
        me.wait_node_ready(Duration::from_secs(60)).await?;
        Ok(me)
    }

    /// Like [`AgentServer::start`], but the agent is a `skiff agent` process of its own
    /// beside a server without one, so the test can kill and restart just the agent.
    pub async fn start_split(dir: &Path, net: u8) -> Result<AgentServer> {
        let (root, bridge, node) = prepare(dir, net)?;
        let agent_port = crate::ports::free_ports(1)?[0];
        let server = Server::start(dir, &[format!("--cluster-cidr=10.{net}.0.0/16")]).await?;
        let mut me = AgentServer {
            server,
            root,
            bridge,
            node,
            agent_port,
            agent: None,
            agent_env: Vec::new(),
        };
        me.start_agent()?;
        me.wait_node_ready(Duration::from_secs(60)).await?;
        Ok(me)
    }

    /// Starts the separate agent process (again).
    pub fn start_agent(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.with_extension("log"))?;
        let child = Command::new(skiff_binary()?)
            .args([
                "agent",
                "--server",
                &self.server.url(),
                "--root-dir",
                &self.root.display().to_string(),
                "--node-name",
                &self.node,
                "--node-ip",
                "127.0.0.1",
                "--port",
                &self.agent_port.to_string(),
                "--bridge",
                &self.bridge,
            ])
            .env(NO_DISK_PRESSURE.0, NO_DISK_PRESSURE.1)
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.agent = Some(child);
        Ok(())
    }

    /// `kill -9` of the separate agent process; its containers run on.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The separate agent's pid while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(std::process::Child::id)
    }

    /// The separate agent's log.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.root.with_extension("log")).unwrap_or_default()
    }

    async fn wait_node_ready(&self, timeout: Duration) -> Result<()> {
        let client = self.server.kube_client().await?;
        wait_node_ready(&client, &self.node, timeout)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}\nserver log:\n{}", self.server.log_tail(40)))
    }

    /// Waits until `check(pod)` holds for pod `ns/name`; the pod then.
    /// [`wait_running`] with the server's log on failure.
    pub async fn wait_running(&self, ns: &str, name: &str, timeout: Duration) -> Result<Pod> {
        self.wait_pod(ns, name, timeout, "Running", |p| phase(p) == "Running")
            .await
    }

    pub async fn wait_pod(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Pod) -> bool,
    ) -> Result<Pod> {
        let client = self.server.kube_client().await?;
        wait_pod(&client, ns, name, timeout, what, check)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}\nserver log:\n{}", self.server.log_tail(30)))
    }

    /// Runc containers of this agent that exist now.
    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("runc")
            .args([
                "--root",
                &self.root.join("runc").display().to_string(),
                "list",
                "-q",
            ])
            .output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        self.kill_agent();
        let _ = self.server.kill();
        if let Err(e) = reset_agent(None, &self.root, &self.bridge) {
            eprintln!("cleaning up the test node: {e:#}");
        }
    }
}

/// Waits until node `node` is Ready and has a podCIDR.
pub async fn wait_node_ready(client: &Client, node: &str, timeout: Duration) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(n) = nodes.get(node).await {
            let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some();
            if node_ready(&n) && cidr {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("node {node} not Ready (with a podCIDR) after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a node's Ready condition is True.
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the pod's phase is Running.
pub async fn wait_running(client: &Client, ns: &str, name: &str, timeout: Duration) -> Result<Pod> {
    wait_pod(client, ns, name, timeout, "Running", |p| {
        phase(p) == "Running"
    })
    .await
}

/// Waits until `check(pod)` holds for pod `ns/name`; the pod then. The error shows the
/// pod's last status.
pub async fn wait_pod(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Pod) -> bool,
) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(p) = pods.get(name).await {
            if check(&p) {
                return Ok(p);
            }
            last = Some(p);
        }
        if Instant::now() > deadline {
            bail!(
                "pod {ns}/{name}: not {what} after {timeout:?}; status: {}",
                last.and_then(|p| p.status)
                    .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default())
                    .unwrap_or_default(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which backends answer `url` from inside pod `pod` (each answers with its own name):
/// up to 3 × 40 requests through `kubectl exec … wget`, stopping once all of `want`
/// have answered.
pub async fn answers_from_pod(
    kubectl: &Kubectl,
    pod: &str,
    url: &str,
    want: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let script = format!("for i in $(seq 1 40); do timeout 2 wget -q -O- {url}; done");
    for _ in 0..3 {
        let out = kubectl
            .ok(&["exec", pod, "--", "sh", "-c", &script])
            .await
            .unwrap_or_default();
        seen.extend(
            out.lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty()),
        );
        if &seen == want {
            break;
        }
    }
    seen
}

/// A pod's phase.
pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether the pod is Ready.
pub fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The restart count of container `name`.
pub fn restarts(p: &Pod, name: &str) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .map_or(0, |c| c.restart_count)
}
