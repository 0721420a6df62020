//! Several machines on one: control-plane `skiff server`s and `skiff agent` workers, each
//! in a network namespace of its own (the test hosts of skiff-jepsen's testbed, on one
//! bridge), so pods on different workers talk over real routes between real addresses.
//!
//! The hosts share the machine's filesystem, so every worker keeps its state (runc root,
//! image store, pod records, CNI IPAM) in a directory of its own; its bridge, routes and
//! nftables tables live in its namespace. Everything is removed on drop: workers killed
//! by pid and reset (containers, shims, mounts, pod namespaces), servers killed, then the
//! hosts' namespaces and bridge.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use skiff_tests::multinode::MultiNode;
//! let dir = tempfile::tempdir()?;
//! let mn = MultiNode::start(dir.path(), 3, 2, &[], &[]).await?;
//! let out = mn.servers[0].kubectl().ok(&["get", "nodes", "-o", "wide"]).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use skiff_jepsen::testbed::{Host, Testbed};

use crate::binaries::skiff_binary;
use crate::node::{build_busybox, reset_agent, wait_node_ready, NO_DISK_PRESSURE};
use crate::server::{form_cluster, Server};

/// The pods' bridge inside every worker's namespace (the agent's default).
const BRIDGE: &str = "skiff0";

/// A `skiff agent` on a test host of its own.
pub struct Worker {
    /// Its test host (namespace and address).
    pub host: Host,
    /// Its node name, `w<k>`.
    pub node: String,
    /// Its state directory.
    pub root: PathBuf,
    /// Every server's URL, comma-separated (the agent fails over among them).
    servers: String,
    flags: Vec<String>,
    child: Option<Child>,
}

impl Worker {
    /// Starts the agent (again), in the host's namespace.
    pub fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        // nsenter, not `ip netns exec`: that one remounts /sys for the namespace, which
        // hides the cgroup filesystem runc needs.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host.netns))
            .arg(skiff_binary()?)
            .args([
                "agent",
                "--server",
                &self.servers,
                "--root-dir",
                &self.root.display().to_string(),
                "--node-name",
                &self.node,
                "--node-ip",
                &self.host.addr.to_string(),
            ])
            .args(&self.flags)
            .env(NO_DISK_PRESSURE.0, NO_DISK_PRESSURE.1)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting skiff agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9` of the agent; its containers run on.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What a machine's death does to its pods: the agent is killed, its containers
    /// with it, and the host drops off the network.
    pub fn power_off(&mut self) -> Result<()> {
        self.kill();
        reset_agent(Some(&self.host.netns), &self.root, BRIDGE)?;
        skiff_jepsen::testbed::run_cmd(
            "ip",
            &["-n", &self.host.netns, "link", "set", "eth0", "down"],
        )?;
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.root.with_extension("log")
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// `servers` control-plane servers and `workers` worker agents, one per test host.
pub struct MultiNode {
    /// The control plane, hosts `n1..`; workers are given all of them, in order.
    pub servers: Vec<Server>,
    /// The workers, on the hosts after the servers'.
    pub workers: Vec<Worker>,
    bed: Testbed,
}

impl MultiNode {
    /// Creates the hosts, starts the servers as one cluster (pod network
    /// `10.<100 + slot % 100>.0.0/16`, plus `server_flags`), then the workers (plus
    /// `agent_flags`), and waits until every worker's node is Ready with a podCIDR.
    pub async fn start(
        dir: &Path,
        servers: usize,
        workers: usize,
        server_flags: &[String],
        agent_flags: &[String],
    ) -> Result<MultiNode> {
        let bed = Testbed::create(servers + workers)?;
        let mut flags = vec![format!(
            "--cluster-cidr=10.{}.0.0/16",
            100 + bed.slot() % 100
        )];
        flags.extend(server_flags.iter().cloned());
        let mut mn = MultiNode {
            servers: Vec::new(),
            workers: Vec::new(),
            bed,
        };
        let prepared = mn.bed.hosts[..servers]
            .iter()
            .map(|h| Server::prepare_in_netns(dir, &h.netns, &h.addr.to_string(), &h.name, &flags))
            .collect::<Result<Vec<_>>>()?;
        mn.servers = form_cluster(prepared).await?;
        let urls: Vec<String> = mn.servers.iter().map(Server::url).collect();
        for (k, host) in mn.bed.hosts[servers..].iter().enumerate() {
            let root = dir.join(format!("worker-{}", k + 1));
            build_busybox(&root)?;
            mn.workers.push(Worker {
                host: host.clone(),
                node: format!("w{}", k + 1),
                root,
                servers: urls.join(","),
                flags: agent_flags.to_vec(),
                child: None,
            });
        }
        for w in &mut mn.workers {
            w.start()?;
        }
        let client = mn.servers[0].kube_client().await?;
        for w in &mn.workers {
            wait_node_ready(&client, &w.node, Duration::from_secs(60))
                .await
                .map_err(|e| anyhow::anyhow!("{e:#}\nagent log:\n{}", tail(&w.log(), 30)))?;
        }
        Ok(mn)
    }

    /// A kube-rs client of server `i`.
    pub async fn client(&self, i: usize) -> Result<kube::Client> {
        self.servers[i].kube_client().await
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for MultiNode {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.kill();
            if let Err(e) = reset_agent(Some(&w.host.netns), &w.root, BRIDGE) {
                eprintln!("cleaning up worker {}: {e:#}", w.node);
            }
        }
        for s in &mut self.servers {
            let _ = s.kill();
        }
        self.bed.teardown();
    }
}
