//! Command-line flags of the `skiff` binary. Every flag has a default and an
//! environment variable; the store's flags use etcd's names and `ETCD_*` variables, so
//! tools and manifests written for etcd launch `skiff store` unchanged.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use skiff_store::{ClusterState, StoreConfig};

/// Skiff: a Kubernetes-style orchestrator with its own etcd-compatible store.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "SKIFF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Role to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The roles of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a standalone store member (the etcd role), serving the etcd v3 API.
    Store(StoreCmd),
    /// Run a control-plane node: a store member and the Kubernetes API server on it
    /// (or on an external store with --store-endpoints). Writes <data-dir>/kubeconfig.
    Server(ServerCmd),
    /// Show objects (through the skiff.v1 gRPC API).
    Get(crate::client::GetCmd),
    /// Stream changes to objects (through the skiff.v1 gRPC API).
    Watch(crate::client::WatchCmd),
    /// Create or replace the objects of a JSON/YAML file (through the skiff.v1 gRPC API).
    Apply(crate::client::ApplyCmd),
    /// Delete an object (through the skiff.v1 gRPC API).
    Delete(crate::client::DeleteCmd),
    /// Run a worker node: the node agent (pods with runc, CNI, images, probes, logs).
    Agent(skiff_node_agent::agent::AgentArgs),
    /// Manage the node's local image store (import, pull, list, rm, build-busybox).
    Image(ImageCmd),
    /// The per-container supervisor the agent starts (not for people).
    #[command(hide = true)]
    Shim(skiff_node_agent::shim::ShimArgs),
}

/// `skiff image`.
#[derive(Debug, Args)]
pub struct ImageCmd {
    /// The agent's state directory (the store is its `images/`).
    #[arg(
        long,
        env = "SKIFF_AGENT_ROOT_DIR",
        default_value = "/var/lib/skiff/agent"
    )]
    pub root_dir: PathBuf,
    #[command(subcommand)]
    pub action: skiff_node_agent::image::ImageCmd,
}

/// `skiff server`.
#[derive(Debug, Args)]
pub struct ServerCmd {
    /// Address the Kubernetes API listens on (plain HTTP; keep it on loopback or a
    /// trusted network: there is no authentication yet).
    #[arg(long, env = "SKIFF_LISTEN_API", default_value = "127.0.0.1:6443")]
    pub listen_api: std::net::SocketAddr,
    /// Use these store endpoints (Skiff store or etcd client URLs, comma-separated)
    /// instead of running an embedded store member.
    #[arg(long, env = "SKIFF_STORE_ENDPOINTS", value_delimiter = ',')]
    pub store_endpoints: Vec<String>,
    /// The range Services' ClusterIPs come from.
    #[arg(
        long,
        env = "SKIFF_SERVICE_CLUSTER_IP_RANGE",
        default_value = "10.96.0.0/12"
    )]
    pub service_cluster_ip_range: String,
    /// Seconds between compactions of the store's history (0: never).
    #[arg(long, env = "SKIFF_COMPACTION_INTERVAL", default_value_t = 300)]
    pub compaction_interval: u64,
    /// Do not run the scheduler on this server (another server's, or none, schedules).
    #[arg(long, env = "SKIFF_DISABLE_SCHEDULER")]
    pub disable_scheduler: bool,
    /// Do not run the controller manager on this server.
    #[arg(long, env = "SKIFF_DISABLE_CONTROLLER_MANAGER")]
    pub disable_controller_manager: bool,
    /// The pod network; each node gets a podCIDR from it ("" turns node IPAM off).
    #[arg(long, env = "SKIFF_CLUSTER_CIDR", default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// Prefix length of each node's podCIDR.
    #[arg(long, env = "SKIFF_NODE_CIDR_MASK_SIZE", default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// How long a node may go without a heartbeat before it is marked Ready=Unknown and
    /// tainted unreachable (e.g. 50s, 1m).
    #[arg(long, env = "SKIFF_NODE_MONITOR_GRACE_PERIOD", default_value = "50s", value_parser = parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// Leader election: how long a Lease lasts unrenewed before another server's
    /// scheduler or controller manager may take over.
    #[arg(long, env = "SKIFF_LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: std::time::Duration,
    /// Leader election: a leader that could not renew for this long stops acting.
    #[arg(long, env = "SKIFF_LEADER_ELECT_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: std::time::Duration,
    /// Leader election: how often a leader renews and a candidate retries.
    #[arg(long, env = "SKIFF_LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: std::time::Duration,
    /// Do not run a node agent on this server (the all-in-one default runs one, so the
    /// server's machine is also a node).
    #[arg(long, env = "SKIFF_DISABLE_AGENT")]
    pub disable_agent: bool,
    /// The local agent's node name [default: the host name].
    #[arg(long, env = "SKIFF_NODE_NAME")]
    pub node_name: Option<String>,
    /// The local agent's node address [default: the default route's interface address].
    #[arg(long, env = "SKIFF_NODE_IP")]
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// The local agent's HTTP port (logs, exec).
    #[arg(long, env = "SKIFF_AGENT_PORT", default_value_t = 10250)]
    pub agent_port: u16,
    /// The local agent's state directory [default: <data-dir>/agent].
    #[arg(long, env = "SKIFF_AGENT_ROOT_DIR")]
    pub agent_root_dir: Option<PathBuf>,
    /// The embedded store member: etcd's flags. Its data lives in <data-dir>/store, and
    /// --data-dir defaults to `skiff.data`.
    #[command(flatten)]
    pub store: StoreFlags,
}

/// A duration as Kubernetes flags write them: `500ms`, `15s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 15s, 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {unit:?} (ms, s, m, h)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

impl ServerCmd {
    /// The leader election of component `lease` with this server's timings.
    pub fn election(&self, lease: &str, identity: &str) -> skiff_controllers::leader::Election {
        let mut e = skiff_controllers::leader::Election::new(lease, identity);
        e.lease_duration = self.leader_elect_lease_duration;
        e.renew_deadline = self.leader_elect_renew_deadline;
        e.retry_period = self.leader_elect_retry_period;
        e
    }

    /// The scheduler's and controllers' settings.
    pub fn controller_settings(&self, identity: &str) -> skiff_controllers::Settings {
        skiff_controllers::Settings {
            identity: identity.to_string(),
            cluster_cidr: (!self.cluster_cidr.is_empty()).then(|| self.cluster_cidr.clone()),
            node_cidr_mask_size: self.node_cidr_mask_size,
            node_monitor_grace_period: self.node_monitor_grace_period,
            ..Default::default()
        }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.store
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("skiff.data"))
    }

    /// The embedded store member's configuration.
    pub fn store_config(&self) -> anyhow::Result<StoreConfig> {
        let mut c = self.store.to_config()?;
        c.data_dir = self.data_dir().join("store");
        Ok(c)
    }

    /// The API server's configuration, given the store endpoints to use.
    pub fn api_config(&self, store_endpoints: Vec<String>) -> skiff_apiserver::server::Config {
        skiff_apiserver::server::Config {
            listen: self.listen_api,
            store_endpoints,
            service_cidr: self.service_cluster_ip_range.clone(),
            compaction_interval: Duration::from_secs(self.compaction_interval),
        }
    }
}

/// `skiff store`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct StoreCmd {
    /// Store maintenance commands.
    #[command(subcommand)]
    pub action: Option<StoreAction>,
    /// Member flags.
    #[command(flatten)]
    pub flags: StoreFlags,
    /// Threads running the member's async tasks [default: half the CPUs, at least 1].
    /// The member's other work runs on threads of its own (log fsync, RocksDB flushes and
    /// compactions, range reads over many keys, watch catch-up), and on a small machine
    /// fewer async workers mean fewer cross-thread wake-ups per request
    /// (docs/store-worker-threads.md).
    #[arg(long, env = "SKIFF_STORE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

impl StoreCmd {
    /// The async worker threads to run with: the flag, or half the CPUs (at least 1).
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                (cpus / 2).max(1)
            },
            usize::from,
        )
    }
}

/// `skiff store <action>`.
#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Restore a snapshot file (from `etcdctl snapshot save`) into the data dir of a member
    /// of a new cluster. Run it for every member with the same file, then start each
    /// member with `--initial-cluster-state new`.
    Restore(RestoreArgs),
}

/// `skiff store restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// Data dir to create (must not hold a member yet).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// Flags of a store member, named as etcd names them.
#[derive(Debug, Args)]
pub struct StoreFlags {
    /// Human-readable name of this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory [default: <name>.etcd].
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (gRPC and HTTP), comma-separated.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub listen_client_urls: Vec<String>,
    /// Client URLs to advertise to the rest of the cluster [default: the listen client URLs].
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,
    /// URLs to listen on for peer (member-to-member) traffic, comma-separated.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380",
        value_delimiter = ','
    )]
    pub listen_peer_urls: Vec<String>,
    /// This member's peer URLs to advertise to the cluster [default: the listen peer URLs].
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS", value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping: name=peer-url,… [default: <name>=<advertise peer URL>].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// "new" to bootstrap a cluster, "existing" to join one this member was added to.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", value_enum, default_value_t = InitialState::New)]
    pub initial_cluster_state: InitialState,
    /// Cluster token: distinguishes clusters bootstrapped from the same configuration.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// Applied log entries between raft snapshots (and log purges).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Database size (bytes) that raises the NOSPACE alarm: then only reads and deletes pass.
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 2 << 30)]
    pub quota_backend_bytes: u64,
    /// Raft heartbeat interval, in milliseconds.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Raft election timeout, in milliseconds.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Largest client request, in bytes.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
    /// Most operations in one transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// UNSAFE, for testing the jepsen checkers only: acknowledge writes before fsync.
    #[arg(long, env = "SKIFF_UNSAFE_NO_FSYNC", hide = true)]
    pub unsafe_no_fsync: bool,
    /// UNSAFE, for testing the jepsen checkers only: serve linearizable reads locally.
    #[arg(long, env = "SKIFF_UNSAFE_LOCAL_READS", hide = true)]
    pub unsafe_local_reads: bool,
}

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum InitialState {
    /// Bootstrap a new cluster.
    New,
    /// Join an existing cluster.
    Existing,
}

impl StoreFlags {
    /// The member configuration these flags describe.
    ///
    /// # Errors
    /// A malformed `--initial-cluster`.
    pub fn to_config(&self) -> anyhow::Result<StoreConfig> {
        let advertise_client_urls = if self.advertise_client_urls.is_empty() {
            self.listen_client_urls.clone()
        } else {
            self.advertise_client_urls.clone()
        };
        let initial_advertise_peer_urls = if self.initial_advertise_peer_urls.is_empty() {
            self.listen_peer_urls.clone()
        } else {
            self.initial_advertise_peer_urls.clone()
        };
        let initial_cluster = match &self.initial_cluster {
            Some(s) => skiff_store::config::parse_initial_cluster(s)?,
            None => initial_advertise_peer_urls
                .iter()
                .map(|u| (self.name.clone(), u.clone()))
                .collect(),
        };
        Ok(StoreConfig {
            name: self.name.clone(),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name))),
            listen_client_urls: self.listen_client_urls.clone(),
            advertise_client_urls,
            listen_peer_urls: self.listen_peer_urls.clone(),
            initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_state: match self.initial_cluster_state {
                InitialState::New => ClusterState::New,
                InitialState::Existing => ClusterState::Existing,
            },
            initial_cluster_token: self.initial_cluster_token.clone(),
            snapshot_count: self.snapshot_count,
            quota_backend_bytes: self.quota_backend_bytes,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            unsafe_no_fsync: self.unsafe_no_fsync,
            unsafe_local_reads: self.unsafe_local_reads,
            ..StoreConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_default_like_etcd() {
        let cli = Cli::try_parse_from(["skiff", "store", "--data-dir", "d"]).unwrap();
        let Command::Store(s) = cli.command else {
            panic!("store")
        };
        let c = s.flags.to_config().unwrap();
        assert_eq!(c.listen_client_urls, vec!["http://127.0.0.1:2379"]);
        assert_eq!(
            c.initial_cluster,
            vec![("default".to_string(), "http://127.0.0.1:2380".to_string())]
        );
        assert!(c.validate().is_ok());
        let cli = Cli::try_parse_from(["skiff", "store", "restore", "snap.db", "--data-dir", "x"])
            .unwrap();
        let Command::Store(s) = cli.command else {
            panic!("store")
        };
        assert!(matches!(s.action, Some(StoreAction::Restore(_))));
        assert!(s.worker_threads() >= 1);
        let cli = Cli::try_parse_from(["skiff", "store", "--worker-threads", "3"]).unwrap();
        let Command::Store(s) = cli.command else {
            panic!("store")
        };
        assert_eq!(s.worker_threads(), 3);
        assert!(Cli::try_parse_from(["skiff", "store", "--worker-threads", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["skiff", "store", "--initial-cluster-state", "bogus"]).is_err()
        );
    }

    #[test]
    fn server_flags_put_the_store_under_the_data_dir() {
        let cli = Cli::try_parse_from(["skiff", "server", "--data-dir", "/tmp/x"]).unwrap();
        let Command::Server(s) = cli.command else {
            panic!("server")
        };
        assert_eq!(
            s.store_config().unwrap().data_dir,
            PathBuf::from("/tmp/x/store")
        );
        assert_eq!(s.listen_api.to_string(), "127.0.0.1:6443");
        let cli = Cli::try_parse_from(["skiff", "server"]).unwrap();
        let Command::Server(s) = cli.command else {
            panic!("server")
        };
        assert_eq!(s.data_dir(), PathBuf::from("skiff.data"));
        assert!(s.store_endpoints.is_empty());
    }
}
