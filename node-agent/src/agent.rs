//! `skiff agent`: the node agent's flags and its top level — preflight checks, node
//! registration, the podCIDR, the runtime, the pod workers, the heartbeat; and
//! `--simulate N` hollow nodes sharing one process.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::image::ImageStore;
use crate::node::{self, NodeConfig};
use crate::pods::{self, Shared};
use crate::runtime::cni::{self, Cni};
use crate::runtime::real::RealRuntime;
use crate::runtime::runc::{self, Runc};
use crate::runtime::sim::SimRuntime;

/// The agent's flags (each with an environment variable).
#[derive(clap::Args, Clone, Debug)]
pub struct AgentArgs {
    /// The API server's URL; several, comma-separated, for an HA control plane: the
    /// agent talks to one and moves to the next when it cannot be reached.
    #[arg(
        long,
        env = "SKIFF_AGENT_SERVER",
        default_value = "http://127.0.0.1:6443"
    )]
    pub server: String,
    /// A kubeconfig to reach the API server with (instead of --server).
    #[arg(long, env = "SKIFF_AGENT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// A bearer token for the API server.
    #[arg(long, env = "SKIFF_AGENT_TOKEN")]
    pub token: Option<String>,
    /// This node's name [default: the host name].
    #[arg(long, env = "SKIFF_AGENT_NODE_NAME")]
    pub node_name: Option<String>,
    /// This node's address (InternalIP) [default: the address of the default route's
    /// interface, else 127.0.0.1].
    #[arg(long, env = "SKIFF_AGENT_NODE_IP")]
    pub node_ip: Option<Ipv4Addr>,
    /// Labels for the Node, `k=v,k2=v2`.
    #[arg(long, env = "SKIFF_AGENT_NODE_LABELS", value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// State directory: images, pod records, runc state, CNI allocations.
    #[arg(
        long,
        env = "SKIFF_AGENT_ROOT_DIR",
        default_value = "/var/lib/skiff/agent"
    )]
    pub root_dir: PathBuf,
    /// Container logs [default: <root-dir>/logs].
    #[arg(long, env = "SKIFF_AGENT_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Port of the agent's HTTP endpoint (logs, exec) on the node address.
    #[arg(long, env = "SKIFF_AGENT_PORT", default_value_t = 10250)]
    pub port: u16,
    /// Pods this node accepts.
    #[arg(long, env = "SKIFF_AGENT_MAX_PODS", default_value_t = 110)]
    pub max_pods: u32,
    /// The node Lease's duration in seconds; the agent renews it every quarter of that
    /// (as the kubelet), so keep the controllers' --node-monitor-grace-period above
    /// a renewal or two.
    #[arg(long, env = "SKIFF_AGENT_NODE_LEASE_DURATION_SECONDS", default_value_t = 40, value_parser = clap::value_parser!(u64).range(4..))]
    pub node_lease_duration_seconds: u64,
    /// MemoryPressure below this much available memory, in MiB (the kubelet's
    /// memory.available<100Mi).
    #[arg(
        long,
        env = "SKIFF_AGENT_MEMORY_PRESSURE_BELOW_MIB",
        default_value_t = 100
    )]
    pub memory_pressure_below_mib: u64,
    /// DiskPressure below this share (percent) of the root dir's filesystem available
    /// (the kubelet's nodefs.available<10%); 0 turns it off.
    #[arg(
        long,
        env = "SKIFF_AGENT_DISK_PRESSURE_BELOW_PERCENT",
        default_value_t = 10.0
    )]
    pub disk_pressure_below_percent: f64,
    /// CPU capacity to report [default: the machine's].
    #[arg(long, env = "SKIFF_AGENT_CPU")]
    pub cpu: Option<String>,
    /// Memory capacity to report [default: the machine's].
    #[arg(long, env = "SKIFF_AGENT_MEMORY")]
    pub memory: Option<String>,
    /// The pod CIDR to use when the control plane assigns none (no --cluster-cidr).
    #[arg(long, env = "SKIFF_AGENT_POD_CIDR")]
    pub pod_cidr: Option<String>,
    /// The pods' bridge.
    #[arg(long, env = "SKIFF_AGENT_BRIDGE", default_value = "skiff0")]
    pub bridge: String,
    /// runc [default: from $PATH].
    #[arg(long, env = "SKIFF_AGENT_RUNC")]
    pub runc: Option<PathBuf>,
    /// Where the CNI plugins are, comma-separated.
    #[arg(
        long,
        env = "SKIFF_AGENT_CNI_BIN_DIR",
        value_delimiter = ',',
        default_value = "/usr/lib/cni,/opt/cni/bin"
    )]
    pub cni_bin_dir: Vec<PathBuf>,
    /// Rotate a container's log beyond this many bytes.
    #[arg(long, env = "SKIFF_AGENT_CONTAINER_LOG_MAX_SIZE", default_value_t = 10 << 20)]
    pub container_log_max_size: u64,
    /// Rotated log files kept per container.
    #[arg(long, env = "SKIFF_AGENT_CONTAINER_LOG_MAX_FILES", default_value_t = 5)]
    pub container_log_max_files: usize,
    /// Do not run the service proxy (Services as nftables rules) on this node.
    #[arg(long, env = "SKIFF_AGENT_DISABLE_PROXY")]
    pub disable_proxy: bool,
    /// Remove everything this agent made on the machine — containers (and their
    /// shims), pod network namespaces, rootfs mounts, the bridge, its nftables tables —
    /// then exit. Images stay.
    #[arg(long)]
    pub reset: bool,
    /// Run N simulated nodes (`<node-name>-0` …) with a fake runtime instead of one
    /// real node: for scale tests of the control plane.
    #[arg(long, env = "SKIFF_AGENT_SIMULATE")]
    pub simulate: Option<u32>,
}

#[derive(clap::Parser)]
struct AgentCli {
    #[command(flatten)]
    args: AgentArgs,
}

impl AgentArgs {
    /// Flags from an argv (`["agent", "--server", …]`), with the defaults and
    /// environment variables of `skiff agent`: how `skiff server` configures its local
    /// agent.
    ///
    /// # Errors
    /// If a flag is invalid.
    pub fn parse_args(argv: &[String]) -> Result<AgentArgs> {
        use clap::Parser;
        Ok(AgentCli::try_parse_from(argv)?.args)
    }

    /// An API client per the flags.
    ///
    /// # Errors
    /// If the kubeconfig cannot be read or the URL does not parse.
    pub async fn client(&self) -> Result<kube::Client> {
        let with_token = |mut config: kube::Config| {
            if let Some(t) = &self.token {
                config.auth_info.token = Some(t.clone().into());
            }
            config
        };
        if let Some(path) = &self.kubeconfig {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            return Ok(kube::Client::try_from(with_token(config))?);
        }
        let urls: Vec<&str> = self
            .server
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let mut clients = Vec::new();
        for url in &urls {
            let mut config = with_token(kube::Config::new(
                url.parse()
                    .with_context(|| format!("--server: {url:?} is not a URL"))?,
            ));
            if urls.len() > 1 {
                // A server that is off the network should not hold the node up for
                // kube's default 30 s before the next one is tried.
                config.connect_timeout = Some(Duration::from_secs(5));
            }
            clients.push((url.to_string(), kube::Client::try_from(config)?));
        }
        match clients.len() {
            0 => bail!("--server: no API server URL given"),
            1 => Ok(clients.remove(0).1),
            _ => Ok(crate::failover::Failover::client(clients, "default")),
        }
    }

    /// The registration and heartbeat settings of node `name`, real or simulated (no
    /// state dir: no pressure readings).
    fn node_config(
        &self,
        name: String,
        ip: Ipv4Addr,
        runtime_version: String,
        state_dir: Option<PathBuf>,
    ) -> Result<NodeConfig> {
        let lease = Duration::from_secs(self.node_lease_duration_seconds);
        Ok(NodeConfig {
            name,
            ip,
            port: self.port,
            capacity: self.capacity(),
            labels: self.labels()?,
            runtime_version,
            lease_duration: lease,
            renew_interval: lease / 4,
            state_dir,
            thresholds: crate::pressure::Thresholds {
                memory_available_min: self.memory_pressure_below_mib << 20,
                disk_available_min: self.disk_pressure_below_percent / 100.0,
                ..Default::default()
            },
        })
    }

    fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_lowercase())
                .unwrap_or_else(|_| "skiff-node".into())
        })
    }

    fn capacity(&self) -> BTreeMap<String, String> {
        let mut cap = node::machine_capacity(self.max_pods);
        if let Some(c) = &self.cpu {
            cap.insert("cpu".into(), c.clone());
        }
        if let Some(m) = &self.memory {
            cap.insert("memory".into(), m.clone());
        }
        cap
    }

    fn labels(&self) -> Result<BTreeMap<String, String>> {
        self.node_labels
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .with_context(|| format!("--node-labels: {l:?} is not key=value"))
            })
            .collect()
    }
}

/// Raises the soft open-files limit to the hard one: every watch, pod sandbox and exec
/// session holds descriptors, and `--simulate` runs a watch per node.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "raising the open-files limit");
            }
        }
    }
}

/// What is missing for real pods on this machine, in words a person can act on.
pub fn preflight(args: &AgentArgs) -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing
            .push("the agent must run as root (it creates namespaces, mounts and cgroups)".into());
    }
    let runc = args.runc.clone().unwrap_or_else(runc::default_runc);
    if !runc.is_file() {
        missing.push(format!(
            "runc not found at {} (apt-get install runc)",
            runc.display()
        ));
    }
    let absent = cni::missing_plugins(&args.cni_bin_dir);
    if !absent.is_empty() {
        missing.push(format!(
            "CNI plugins {absent:?} not found in {:?} (apt-get install containernetworking-plugins)",
            args.cni_bin_dir
        ));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !has_cgroup_mount(&mountinfo) {
        missing.push(
            "no cgroup filesystem is mounted (runc needs one at /sys/fs/cgroup); in a network \
             namespace, start the agent with `nsenter --net=/run/netns/<name>`, not \
             `ip netns exec`, which remounts /sys without it"
                .into(),
        );
    }
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("nft not found (apt-get install nftables)".into());
    }
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        missing.push("ip not found (apt-get install iproute2)".into());
    }
    missing
}

/// Whether `/proc/self/mountinfo` text lists a cgroup (v1 or v2) filesystem: what runc
/// looks for before it creates a container.
fn has_cgroup_mount(mountinfo: &str) -> bool {
    mountinfo.lines().any(|line| {
        // "<id> <parent> <dev> <root> <mount point> <opts> [optional…] - <fstype> <source> <opts>"
        line.split_once(" - ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|fstype| fstype == "cgroup2" || fstype == "cgroup")
    })
}

/// Runs the agent (or `--simulate N` agents) until `shutdown`.
///
/// # Errors
/// If preflight fails, or registration does.
pub async fn run(mut args: AgentArgs, shutdown: CancellationToken) -> Result<()> {
    // Absolute from here on: the paths end up in OCI bundles (mount sources, log files),
    // which runc would read relative to each bundle, not to where the agent started.
    args.root_dir = std::path::absolute(&args.root_dir)
        .with_context(|| format!("--root-dir {}", args.root_dir.display()))?;
    if let Some(d) = &args.log_dir {
        args.log_dir =
            Some(std::path::absolute(d).with_context(|| format!("--log-dir {}", d.display()))?);
    }
    if args.reset {
        return reset(&args).await;
    }
    raise_open_files();
    let client = args.client().await?;
    if let Some(n) = args.simulate {
        return run_simulated(args, client, n, shutdown).await;
    }
    let missing = preflight(&args);
    if !missing.is_empty() {
        bail!(
            "this machine cannot run pods yet:\n  - {}",
            missing.join("\n  - ")
        );
    }
    let name = args.node_name();
    let ip = args.node_ip.unwrap_or_else(node::default_ip);
    let runc = Runc::new(
        args.runc.clone().unwrap_or_else(runc::default_runc),
        args.root_dir.join("runc"),
    );
    let version = std::process::Command::new(&runc.binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.replace("runc version ", ""))
        })
        .unwrap_or_default();
    let cfg = args.node_config(
        name.clone(),
        ip,
        format!("runc://{version}"),
        Some(args.root_dir.clone()),
    )?;
    node::register_until_done(&client, &cfg, &shutdown).await?;
    let pod_cidr = match &args.pod_cidr {
        Some(c) => c.clone(),
        None => node::wait_pod_cidr(&client, &name, Duration::from_secs(60)).await?,
    };
    tracing::info!(node = %name, %ip, %pod_cidr, "registered");
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating {}", args.root_dir.display()))?;
    let images = ImageStore::open(&crate::image::store_dir(&args.root_dir))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (exits_tx, exits_rx) = mpsc::unbounded_channel();
    let rt = Arc::new(RealRuntime {
        runc,
        cni: Cni {
            plugin_dirs: args.cni_bin_dir.clone(),
            bridge: args.bridge.clone(),
            subnet: pod_cidr,
            ipam_dir: args.root_dir.join("cni"),
            mtu: 1500,
        },
        images,
        pods_dir: args.root_dir.join("pods"),
        shim_binary: std::env::current_exe()
            .context("finding the agent's own binary (the shim)")?,
        max_log_bytes: args.container_log_max_size,
        max_log_files: args.container_log_max_files,
        exits: exits_tx,
    });
    let log_root = args
        .log_dir
        .clone()
        .unwrap_or_else(|| args.root_dir.join("logs"));
    let directory = Arc::new(crate::pods::directory::Directory::new(
        log_root.clone(),
        Some(rt.runc.clone()),
    ));
    let shared = Arc::new(Shared {
        rt,
        client: client.clone(),
        node_name: name.clone(),
        node_ip: ip,
        log_root,
        events: skiff_controllers::events::Recorder::new(client.clone(), "kubelet", &name),
        directory: directory.clone(),
    });
    let listen = std::net::SocketAddr::from((ip, args.port));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} (--port) for logs and exec"))?;
    let server = tokio::spawn(crate::server::serve(listener, directory, shutdown.clone()));
    let proxy = (!args.disable_proxy).then(|| {
        tokio::spawn(crate::proxy::run(
            client.clone(),
            crate::proxy::ProxyConfig {
                node_name: name.clone(),
                node_ips: vec![ip],
                table: crate::net::table_name("skiff_proxy", &args.bridge),
                ..Default::default()
            },
            shutdown.clone(),
        ))
    });
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), cfg, shutdown.clone()));
    let network = tokio::spawn({
        let run = crate::net::run(
            client.clone(),
            name.clone(),
            shared.rt.cni.subnet.clone(),
            args.bridge.clone(),
            shutdown.clone(),
        );
        async move {
            if let Err(e) = run.await {
                tracing::error!(error = %format!("{e:#}"), "the pod network (routes to other nodes, masquerading) stopped");
            }
        }
    });
    let result = pods::run(shared, exits_rx, shutdown.clone()).await;
    heartbeat.abort();
    // The network task and the proxy remove their tables on shutdown; give them the
    // moment they need.
    let _ = tokio::time::timeout(Duration::from_secs(5), network).await;
    if let Some(p) = proxy {
        let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(6), server).await;
    result
}

async fn run_simulated(
    args: AgentArgs,
    client: kube::Client,
    n: u32,
    shutdown: CancellationToken,
) -> Result<()> {
    let prefix = args.node_name.clone().unwrap_or_else(|| "sim".into());
    let mut tasks = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let cfg = args.node_config(
            name.clone(),
            args.node_ip.unwrap_or(Ipv4Addr::LOCALHOST),
            "sim://0".into(),
            None,
        )?;
        let client = client.clone();
        let shutdown = shutdown.clone();
        let pod_cidr = args.pod_cidr.clone();
        tasks.push(tokio::spawn(async move {
            let run = async {
                node::register_until_done(&client, &cfg, &shutdown).await?;
                let cidr = match pod_cidr {
                    Some(c) => c,
                    None => {
                        node::wait_pod_cidr(&client, &cfg.name, Duration::from_secs(120)).await?
                    }
                };
                let (_exits_tx, exits_rx) = mpsc::unbounded_channel();
                let shared = Arc::new(Shared {
                    rt: Arc::new(SimRuntime::new(&cidr)?),
                    client: client.clone(),
                    node_name: cfg.name.clone(),
                    node_ip: cfg.ip,
                    log_root: PathBuf::from("/nonexistent"),
                    directory: Arc::new(crate::pods::directory::Directory::new(
                        PathBuf::from("/nonexistent"),
                        None,
                    )),
                    events: skiff_controllers::events::Recorder::new(
                        client.clone(),
                        "kubelet",
                        &cfg.name,
                    ),
                });
                let hb = tokio::spawn(node::heartbeat(
                    client.clone(),
                    cfg.clone(),
                    shutdown.clone(),
                ));
                let r = pods::run(shared, exits_rx, shutdown).await;
                hb.abort();
                r
            };
            if let Err(e) = run.await {
                tracing::error!(node = %name, error = %format!("{e:#}"), "simulated node stopped");
            }
        }));
    }
    tracing::info!(nodes = n, "simulated nodes running");
    futures::future::join_all(tasks).await;
    Ok(())
}

/// `skiff agent --reset`: what [`AgentArgs::reset`] says.
///
/// # Errors
/// If something cannot be removed (the rest is still attempted; the first error wins).
pub async fn reset(args: &AgentArgs) -> Result<()> {
    let runc = Runc::new(
        args.runc.clone().unwrap_or_else(runc::default_runc),
        args.root_dir.join("runc"),
    );
    let mut first_error: Option<anyhow::Error> = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            tracing::warn!(error = %format!("{e:#}"), "reset");
            first_error.get_or_insert(e);
        }
    };
    for c in runc.list().await.unwrap_or_default() {
        note(runc.kill(&c.id, "KILL", true).await);
        note(runc.delete(&c.id).await);
    }
    let pods_dir = args.root_dir.join("pods");
    if let Ok(pods) = std::fs::read_dir(&pods_dir) {
        for pod in pods.flatten() {
            // Shims of containers that never reached runc's list, by their pid files.
            if let Ok(cs) = std::fs::read_dir(pod.path().join("containers")) {
                for c in cs.flatten() {
                    if let Some(pid) = std::fs::read_to_string(c.path().join("shim.pid"))
                        .ok()
                        .and_then(|p| p.trim().parse::<i32>().ok())
                    {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    note(ImageStore::unmount_rootfs(&c.path()).map_err(|e| anyhow::anyhow!("{e}")));
                }
            }
            let uid = pod.file_name().to_string_lossy().into_owned();
            let ns = crate::runtime::real::netns_name(&uid);
            if std::path::Path::new("/run/netns").join(&ns).exists() {
                let out = tokio::process::Command::new("ip")
                    .args(["netns", "del", &ns])
                    .output()
                    .await;
                note(out.map(|_| ()).map_err(Into::into));
            }
        }
        note(std::fs::remove_dir_all(&pods_dir).map_err(Into::into));
    }
    let _ = std::fs::remove_dir_all(args.root_dir.join("cni"));
    let _ = tokio::process::Command::new("ip")
        .args(["link", "del", &args.bridge])
        .output()
        .await;
    for base in [crate::net::TABLE, "skiff_proxy"] {
        let table = crate::net::table_name(base, &args.bridge);
        let _ = tokio::process::Command::new("nft")
            .args(["delete", "table", "ip", &table])
            .output()
            .await;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::has_cgroup_mount;

    #[test]
    fn a_cgroup_mount_is_found_by_its_filesystem_type() {
        let host = "25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw\n\
                    26 25 0:23 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert!(has_cgroup_mount(host));
        let v1 = "40 26 0:35 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert!(has_cgroup_mount(v1));
        // What `ip netns exec` leaves: a fresh sysfs and nothing under it.
        let netns_exec = "25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw\n\
                          99 25 0:80 / /sys rw - sysfs netns-sys rw\n";
        assert!(!has_cgroup_mount(netns_exec));
        assert!(!has_cgroup_mount(""));
    }
}
