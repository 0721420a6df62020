//! `skiff-bench`: the store benchmark over the etcd v3 API. `run` measures one target
//! (running servers given by `--endpoints`, or a cluster it starts itself); `compare`
//! starts etcd and `skiff store` clusters through the harness, runs the same suite on
//! both and prints Skiff/etcd ratios. `api` measures the Kubernetes API server of one
//! `skiff server`. Flag parsing and orchestration only; the workloads live in
//! `skiff_tests::bench`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use skiff_tests::bench::api::{
    raise_nofile, run_api, server_log_table, split_log, ApiClient, ApiParams, Phases,
};
use skiff_tests::bench::report::{single_table, ComparedCase, CpuPerOp, RssPair};
use skiff_tests::bench::workload::{parse_suite, DEFAULT_SUITE};
use skiff_tests::bench::{load_keys, run_case, Case, CaseResult, Comparison, Params, Session};
use skiff_tests::binaries::SKIFF_BIN_ENV;
use skiff_tests::server::Server;
use skiff_tests::{skiff_binary, Cluster, ClusterConfig, Target};

/// The same allocator as the `skiff` binary: the client shares the machine's CPUs with
/// the servers it measures, so its own CPU per request (glibc's malloc was a quarter of
/// it) caps every server's throughput alike; see `docs/benchmarks.md`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "skiff-bench",
    about = "Benchmark a store over the etcd v3 API: Skiff against the real etcd; or \
             Skiff's Kubernetes API server (`api`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure one target: the servers at --endpoints, or a cluster started here.
    Run(RunArgs),
    /// Start etcd and skiff clusters (1 and 3 members), run the same suite on each and
    /// print one table with skiff/etcd ratios and the RSS of each after a load.
    Compare(CompareArgs),
    /// Measure the Kubernetes API server of one `skiff server` over its REST API
    ///
    /// Starts `skiff server` (or uses --server) and prints three markdown tables, each
    /// phase in a fresh namespace:
    ///
    /// 1. Latency at a fixed rate: an open-loop load of --rate mutating requests/s on Pods
    ///    (creates, updates = GET + PUT with a changed label, deletes: 50/30/20) and, at
    ///    the same time, --rate single-Pod GETs/s, for --duration seconds. Requests go out
    ///    at their scheduled time whatever earlier ones do, and latency runs from that
    ///    time (no coordinated omission). Printed: p50/p90/p99/max for mutating requests
    ///    (and per verb) and for reads, achieved rates, errors; 409 conflicts (an update
    ///    retries once with a fresh GET) and 404s are counted apart, not as errors. The
    ///    p99 is judged against the Kubernetes SLO (≤ 1 s) and Skiff's aim (≤ 50 ms).
    /// 2. Watch fan-out: --watchers watch streams (one HTTP/1.1 connection each) from one
    ///    resourceVersion; one writer creates --watch-events Pods one at a time. Every
    ///    watcher must get every acknowledged create exactly once, in resourceVersion
    ///    order (delivered/expected); latency from each create's send to its receipt at
    ///    each watcher (p50/p90/p99/max).
    /// 3. Memory: --pods Pods created (--load-concurrency in flight); once a
    ///    resourceVersion=0 list returns them all, the server's RSS (VmRSS: API server
    ///    plus its embedded store member; also at start and before the load, so the delta
    ///    shows), then full lists timed --list-repeats times: resourceVersion=0 (watch
    ///    cache) and consistent (no resourceVersion).
    ///
    /// When it started the server itself, it also prints the server's own handling time
    /// per phase and request (from its request log) and the log's warnings and errors.
    /// Exits non-zero when a phase could not run or the watch was not exactly once.
    #[command(verbatim_doc_comment)]
    Api(ApiArgs),
    /// Measure the scheduler and the controllers on simulated nodes
    ///
    /// 1. throughput: starts `skiff server` without scheduler and controllers, registers
    ///    --nodes simulated Nodes, creates --pods pending Pods with mixed requests, then
    ///    runs Skiff's scheduler in this process and times the bindings (first → last:
    ///    the rate; goal ≥ 1000 pods/s); checks no node is overcommitted.
    /// 2. deployment: starts a fresh `skiff server` (scheduler and controller manager
    ///    on), registers --deploy-nodes Nodes, creates one Deployment of --replicas and
    ///    times until every pod exists and every pod is bound (goal < 10 s).
    #[command(verbatim_doc_comment)]
    Schedule(ScheduleArgs),
    /// Measure the node agent (needs root, runc, the CNI plugins, busybox-static)
    ///
    /// 1. startup: `skiff server` and a separate `skiff agent` with real runc pods;
    ///    --pods busybox pods created (--concurrency in flight), each timed from its
    ///    create request to the watch showing it Running (p50/p90/p99/max; goal p99 < 1 s,
    ///    the Kubernetes SLO is 5 s); the agent's and its shims' RSS with all running;
    ///    the time to delete them all.
    /// 2. density: `skiff server` and `skiff agent --simulate --nodes`; one Deployment of
    ///    nodes × --pods-per-node replicas, timed until every pod is Running; the
    ///    simulating agent's and the server's RSS.
    #[command(verbatim_doc_comment)]
    Pods(PodsArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PodsPhase {
    Startup,
    Density,
}

#[derive(Args, Debug)]
struct PodsArgs {
    /// The skiff binary.
    #[arg(long, env = "SKIFF_BIN")]
    skiff_bin: Option<PathBuf>,
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "startup,density"
    )]
    phases: Vec<PodsPhase>,
    /// Startup: pods on the one real node.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Startup: create requests in flight.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Startup: pods created per second, comma-separated for several runs (0: as fast
    /// as --concurrency allows, a burst).
    #[arg(long, value_delimiter = ',', default_value = "5,0")]
    rate: Vec<f64>,
    /// Density: simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Density: pods per simulated node.
    #[arg(long, default_value_t = 30)]
    pods_per_node: usize,
    /// Seconds before a phase gives up.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SchedulePhase {
    Throughput,
    Deployment,
}

#[derive(Args, Debug)]
struct ScheduleArgs {
    /// The skiff binary started as `skiff server`.
    #[arg(long, env = "SKIFF_BIN")]
    skiff_bin: Option<PathBuf>,
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "throughput,deployment"
    )]
    phases: Vec<SchedulePhase>,
    /// Throughput: simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Throughput: pods to bind.
    #[arg(long, default_value_t = 30_000)]
    pods: usize,
    /// Requests in flight while registering nodes and creating pods.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The scheduler's bindings in flight.
    #[arg(long, default_value_t = 64)]
    bind_concurrency: usize,
    /// Deployment: simulated nodes.
    #[arg(long, default_value_t = 100)]
    deploy_nodes: usize,
    /// Deployment: replicas.
    #[arg(long, default_value_t = 1000)]
    replicas: usize,
    /// Seconds before a phase gives up.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Etcd,
    Skiff,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// What the servers are (a label for running servers; what to start otherwise).
    #[arg(long, value_enum, env = "SKIFF_BENCH_TARGET", default_value = "etcd")]
    target: Kind,
    /// Client URLs of running servers, comma-separated. Empty: start a cluster.
    #[arg(
        long,
        env = "SKIFF_BENCH_ENDPOINTS",
        value_delimiter = ',',
        default_value = ""
    )]
    endpoints: Vec<String>,
    /// Members of the cluster to start when no --endpoints are given.
    #[arg(long, env = "SKIFF_BENCH_MEMBERS", default_value_t = 1)]
    members: usize,
    /// The skiff binary (default: target/{release,debug}/skiff of the workspace).
    #[arg(long, env = "SKIFF_BIN")]
    skiff_bin: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// The skiff binary (default: target/{release,debug}/skiff of the workspace).
    #[arg(long, env = "SKIFF_BIN")]
    skiff_bin: Option<PathBuf>,
    /// What runs in the candidate column: skiff, or etcd again (an A/A run that shows
    /// the noise of this machine and validates the tool before skiff exists).
    #[arg(
        long,
        value_enum,
        env = "SKIFF_BENCH_CANDIDATE",
        default_value = "skiff"
    )]
    candidate: Kind,
    /// Cluster sizes to compare, comma-separated.
    #[arg(
        long,
        env = "SKIFF_BENCH_MEMBERS",
        value_delimiter = ',',
        default_value = "1,3"
    )]
    members: Vec<usize>,
    /// Keys loaded into a fresh single member before reading its RSS (0: skip).
    #[arg(long, env = "SKIFF_BENCH_RSS_KEYS", default_value_t = 100_000)]
    rss_keys: u64,
    /// Times each case runs on each side, the sides taking turns (both clusters stay up);
    /// the table shows each figure's median over the rounds. This machine's speed drifts
    /// by tens of percent within minutes, and one round measured the two sides minutes
    /// apart (`docs/benchmarks.md`).
    #[arg(long, env = "SKIFF_BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Cases, comma-separated `workload:clients`; workloads: put, range-lin, range-ser,
    /// txn-put, watch (clients = watchers), lease-keepalive.
    #[arg(long, env = "SKIFF_BENCH_SUITE", default_value = DEFAULT_SUITE)]
    suite: String,
    /// HTTP/2 connections per case (capped at its client count).
    #[arg(long, env = "SKIFF_BENCH_CONNECTIONS", default_value_t = 8)]
    connections: usize,
    /// Requests per case (a case also stops at --max-seconds). Enough for a few seconds
    /// of the busier cases: at tens of thousands of requests per second, 10000 lasted
    /// under half a second and a single memtable flush swung the figures.
    #[arg(long, env = "SKIFF_BENCH_TOTAL", default_value_t = 100_000)]
    total: u64,
    /// Longest a case may run, seconds.
    #[arg(long, env = "SKIFF_BENCH_MAX_SECONDS", default_value_t = 30)]
    max_seconds: u64,
    /// Bytes per key.
    #[arg(long, env = "SKIFF_BENCH_KEY_SIZE", default_value_t = 32)]
    key_size: usize,
    /// Bytes per value.
    #[arg(long, env = "SKIFF_BENCH_VALUE_SIZE", default_value_t = 256)]
    value_size: usize,
    /// Distinct keys written and read.
    #[arg(long, env = "SKIFF_BENCH_KEY_SPACE", default_value_t = 10_000)]
    key_space: u64,
    /// Events written in the watch case (each goes to every watcher).
    #[arg(long, env = "SKIFF_BENCH_WATCH_EVENTS", default_value_t = 200)]
    watch_events: u64,
    /// Per-request timeout, ms; a request past it counts as an error.
    #[arg(long, env = "SKIFF_BENCH_OP_TIMEOUT_MS", default_value_t = 10_000)]
    op_timeout_ms: u64,
}

/// A phase of `skiff-bench api`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Open-loop mutating and read latency at --rate.
    Load,
    /// Watch fan-out to --watchers streams.
    Watch,
    /// RSS with --pods Pods cached, and full lists.
    Memory,
}

#[derive(Args, Debug)]
struct ApiArgs {
    /// The skiff binary started as `skiff server` (default: target/{release,debug}/skiff
    /// of the workspace).
    #[arg(long, env = "SKIFF_BIN")]
    skiff_bin: Option<PathBuf>,
    /// A running API server to measure instead (`http://host:port`); nothing is started.
    #[arg(long, env = "SKIFF_BENCH_SERVER")]
    server: Option<String>,
    /// The pid of the --server process, to read its RSS (n/a without it).
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_enum,
        env = "SKIFF_BENCH_PHASES",
        value_delimiter = ',',
        default_value = "load,watch,memory"
    )]
    phases: Vec<Phase>,
    /// Load: mutating requests per second (and as many reads per second), open loop.
    #[arg(long, env = "SKIFF_BENCH_RATE", default_value_t = 200.0)]
    rate: f64,
    /// Load: seconds of load.
    #[arg(long, env = "SKIFF_BENCH_DURATION", default_value_t = 30)]
    duration: u64,
    /// Load: requests in flight per kind (mutating, read) past which a scheduled request
    /// is not sent (counted as "not sent").
    #[arg(long, env = "SKIFF_BENCH_MAX_IN_FLIGHT", default_value_t = 512)]
    max_in_flight: usize,
    /// Watch: concurrent watch streams, one connection each.
    #[arg(long, env = "SKIFF_BENCH_WATCHERS", default_value_t = 1000)]
    watchers: usize,
    /// Watch: Pods created while they watch (each is an event for every watcher).
    #[arg(long, env = "SKIFF_BENCH_WATCH_EVENTS", default_value_t = 200)]
    watch_events: u64,
    /// Memory: Pods loaded before reading the RSS and timing full lists.
    #[arg(long, env = "SKIFF_BENCH_PODS", default_value_t = 10_000)]
    pods: u64,
    /// Creates in flight while loading Pods (memory phase, and the load phase's seed).
    #[arg(long, env = "SKIFF_BENCH_LOAD_CONCURRENCY", default_value_t = 64)]
    load_concurrency: usize,
    /// Memory: how many times each full list is timed.
    #[arg(long, env = "SKIFF_BENCH_LIST_REPEATS", default_value_t = 5)]
    list_repeats: usize,
    /// Per-request timeout, ms; a request past it counts as an error.
    #[arg(long, env = "SKIFF_BENCH_OP_TIMEOUT_MS", default_value_t = 10_000)]
    op_timeout_ms: u64,
}

impl ApiArgs {
    fn params(&self) -> ApiParams {
        ApiParams {
            rate: self.rate,
            duration: Duration::from_secs(self.duration),
            max_in_flight: self.max_in_flight.max(1),
            watchers: self.watchers,
            watch_events: self.watch_events,
            pods: self.pods,
            load_concurrency: self.load_concurrency.max(1),
            op_timeout: Duration::from_millis(self.op_timeout_ms),
            list_repeats: self.list_repeats.max(1),
        }
    }

    fn phases(&self) -> Phases {
        Phases {
            load: self.phases.contains(&Phase::Load),
            watch: self.phases.contains(&Phase::Watch),
            memory: self.phases.contains(&Phase::Memory),
        }
    }

    fn describe(&self) -> String {
        format!(
            "rate {} /s for {} s, {} watchers × {} events, {} pods ({} in flight), \
             op timeout {} ms",
            self.rate,
            self.duration,
            self.watchers,
            self.watch_events,
            self.pods,
            self.load_concurrency,
            self.op_timeout_ms
        )
    }
}

impl LoadArgs {
    fn params(&self) -> Params {
        Params {
            connections: self.connections.max(1),
            total: self.total,
            max_duration: Duration::from_secs(self.max_seconds),
            key_size: self.key_size,
            value_size: self.value_size,
            key_space: self.key_space,
            watch_events: self.watch_events,
            op_timeout: Duration::from_millis(self.op_timeout_ms),
        }
    }

    fn describe(&self) -> String {
        format!(
            "connections {}, total {} per case (max {} s), key {} B, value {} B, \
             key space {}, watch events {}",
            self.connections,
            self.total,
            self.max_seconds,
            self.key_size,
            self.value_size,
            self.key_space,
            self.watch_events
        )
    }
}

/// The target of `kind`; for skiff, `--skiff-bin` or the cargo-built binary, which must
/// exist (checked here, before any cluster starts).
fn target_of(kind: Kind, skiff_bin: &Option<PathBuf>) -> Result<Target> {
    Ok(match kind {
        Kind::Etcd => Target::Etcd,
        Kind::Skiff => {
            let binary = match skiff_bin {
                Some(p) => p.clone(),
                None => skiff_binary()?,
            };
            if !binary.is_file() {
                bail!("skiff binary {} does not exist", binary.display());
            }
            Target::Skiff { binary }
        }
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let bin = match &cli.command {
        Command::Api(ApiArgs { skiff_bin, .. }) => skiff_bin.as_ref(),
        Command::Schedule(ScheduleArgs { skiff_bin, .. }) => skiff_bin.as_ref(),
        Command::Pods(PodsArgs { skiff_bin, .. }) => skiff_bin.as_ref(),
        _ => None,
    };
    if let Some(bin) = bin {
        // The harness finds the binary through SKIFF_BIN; set before any thread exists.
        std::env::set_var(SKIFF_BIN_ENV, bin);
    }
    if matches!(cli.command, Command::Api(_)) && std::env::var_os("RUST_LOG").is_none() {
        // The server's own per-request log lines (debug level) feed the handling-time
        // table; set before any thread exists, inherited by the server started.
        std::env::set_var(
            "RUST_LOG",
            "info,openraft=warn,h2=warn,tower=warn,hyper=warn,skiff::request=debug",
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    runtime.block_on(async {
        // On Ctrl-C the work future is dropped, and with it every cluster it started:
        // their members are killed by pid.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = run(cli) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run_one(args).await,
        Command::Compare(args) => compare(args).await,
        Command::Api(args) => api(args).await,
        Command::Schedule(args) => schedule(args).await,
        Command::Pods(args) => pods(args).await,
    }
}

/// A `skiff server` without scheduler and controller manager, in `dir`.
async fn api_server_alone(dir: &std::path::Path) -> Result<Server> {
    Server::start(
        dir,
        &[
            "--disable-scheduler".to_string(),
            "--disable-controller-manager".to_string(),
        ],
    )
    .await
    .context("starting skiff server")
}

/// `skiff-bench pods`: each phase on a fresh server.
async fn pods(args: PodsArgs) -> Result<()> {
    use skiff_tests::bench::pods::{run_density, run_startup};
    let _ = raise_nofile(65536);
    let timeout = Duration::from_secs(args.timeout);
    let mut failed = false;
    if args.phases.contains(&PodsPhase::Startup) {
        if let Some(why) = skiff_tests::node::cannot_run() {
            bail!("startup needs a real node: {why}");
        }
        let dir = tempfile::tempdir()?;
        let node = skiff_tests::node::AgentServer::start_split(dir.path(), 63).await?;
        let client = node.server.kube_client().await?;
        for &rate in &args.rate {
            let params = skiff_tests::bench::pods::StartupParams {
                image: skiff_tests::node::BUSYBOX.to_owned(),
                pods: args.pods,
                concurrency: args.concurrency,
                rate,
                timeout,
            };
            match run_startup(&client, &params, node.agent_pid(), &node.root.join("runc")).await {
                Ok(r) => {
                    let how = if rate > 0.0 {
                        format!("created at {rate} pods/s")
                    } else {
                        format!("created at once, {} in flight", args.concurrency)
                    };
                    println!(
                        "### Pod startup on one node ({} pods {how})\n\n{}",
                        r.pods,
                        r.table()
                    );
                    let verdict = if r.latency.p99_ms < 1000.0 {
                        "meets"
                    } else {
                        "misses"
                    };
                    println!(
                        "p99 {:.0} ms {verdict} the goal of < 1 s (SLO 5 s).\n",
                        r.latency.p99_ms
                    );
                }
                Err(e) => {
                    eprintln!(
                        "[pods] startup: {e:#}\n{}",
                        node.agent_log()
                            .lines()
                            .rev()
                            .take(20)
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                    failed = true;
                }
            }
        }
    }
    if args.phases.contains(&PodsPhase::Density) {
        let dir = tempfile::tempdir()?;
        // A /8 so that every simulated node gets a /24.
        let server = Server::start(dir.path(), &["--cluster-cidr=10.0.0.0/8".to_string()])
            .await
            .context("starting skiff server")?;
        let started = Instant::now();
        let log = std::fs::File::create(dir.path().join("sim-agent.log"))?;
        let mut agent = std::process::Command::new(skiff_binary()?)
            .args([
                "agent",
                "--server",
                &server.url(),
                "--node-name",
                "sim",
                "--simulate",
                &args.nodes.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let client = server.kube_client().await?;
        let r = run_density(
            &client,
            args.nodes,
            args.pods_per_node,
            timeout,
            started,
            (agent.id(), server.pid().unwrap_or(0)),
        )
        .await;
        let _ = agent.kill();
        let _ = agent.wait();
        match r {
            Ok(r) => println!(
                "### Density: {} simulated nodes × {} pods\n\n{}",
                r.nodes,
                args.pods_per_node,
                r.table()
            ),
            Err(e) => {
                eprintln!("[pods] density: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("a phase failed");
    }
    Ok(())
}

/// `skiff-bench schedule`: each phase on a fresh `skiff server`.
async fn schedule(args: ScheduleArgs) -> Result<()> {
    use skiff_tests::bench::schedule::{run_deployment, run_throughput, ScheduleParams};
    let _ = raise_nofile(4096);
    let timeout = Duration::from_secs(args.timeout);
    let mut failed = false;
    if args.phases.contains(&SchedulePhase::Throughput) {
        let dir = tempfile::tempdir()?;
        let server = api_server_alone(dir.path()).await?;
        eprintln!(
            "[schedule] skiff server at {}, pid {:?}",
            server.url(),
            server.pid()
        );
        let client = server.kube_client().await?;
        let params = ScheduleParams {
            nodes: args.nodes,
            pods: args.pods,
            concurrency: args.concurrency,
            bind_concurrency: args.bind_concurrency,
            timeout,
        };
        match run_throughput(&client, &params).await {
            Ok(r) => {
                println!("### Scheduling throughput\n\n{}", r.table());
                let verdict = if r.rate() >= 1000.0 {
                    "meets"
                } else {
                    "misses"
                };
                println!(
                    "{:.0} pods/s {verdict} the goal of 1000 pods/s.\n",
                    r.rate()
                );
            }
            Err(e) => {
                eprintln!("[schedule] throughput: {e:#}");
                failed = true;
            }
        }
        drop(server);
    }
    if args.phases.contains(&SchedulePhase::Deployment) {
        let dir = tempfile::tempdir()?;
        let server = Server::start(dir.path(), &[])
            .await
            .context("starting skiff server")?;
        eprintln!(
            "[schedule] skiff server at {}, pid {:?}",
            server.url(),
            server.pid()
        );
        let client = server.kube_client().await?;
        match run_deployment(
            &client,
            args.deploy_nodes,
            args.replicas,
            args.concurrency,
            timeout,
        )
        .await
        {
            Ok(r) => {
                println!("### Deployment of {} replicas\n\n{}", r.replicas, r.table());
                let verdict = if r.bound_s < 10.0 { "meets" } else { "misses" };
                println!("{:.1} s {verdict} the goal of < 10 s.\n", r.bound_s);
            }
            Err(e) => {
                eprintln!("[schedule] deployment: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("a phase failed");
    }
    Ok(())
}

/// `skiff-bench api`: starts `skiff server` unless --server is given, runs the phases and
/// prints the report; then the server log's warnings and errors (when started here).
async fn api(args: ApiArgs) -> Result<()> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    let params = args.params();
    // One socket per watcher here and in the server, plus the load's connections.
    let want = args.watchers as u64 * 2 + 1024;
    match raise_nofile(want) {
        Ok(n) if n < args.watchers as u64 + 256 => {
            eprintln!("[api] warning: only {n} open files allowed; watchers may fail")
        }
        Ok(_) => {}
        Err(e) => eprintln!("[api] warning: could not raise the open-files limit: {e:#}"),
    }
    // The server is declared before its temp dir so it is killed before the dir goes.
    let started: Option<(Server, tempfile::TempDir)>;
    let (url, pid, label) = match &args.server {
        Some(url) => {
            started = None;
            (url.clone(), args.server_pid, url.clone())
        }
        None => {
            let bin = skiff_binary()?;
            if !bin.is_file() {
                bail!("skiff binary {} does not exist", bin.display());
            }
            let dir = tempfile::tempdir().context("creating a temp dir")?;
            eprintln!("[api] starting skiff server ({})", bin.display());
            // The API server alone: no scheduler or controllers acting on the load's pods.
            let server = api_server_alone(dir.path()).await?;
            let url = server.url();
            let pid = server.pid();
            eprintln!("[api] skiff server at {url}, pid {pid:?}");
            started = Some((server, dir));
            (url, pid, format!("`skiff server` ({})", bin.display()))
        }
    };
    let client = ApiClient::new(&url, params.op_timeout)?;
    let prefix = format!("bench-{:05x}", rand::random::<u32>() & 0xf_ffff);
    // Where the server log stood when each phase began, to split its request lines.
    let log_path = started
        .as_ref()
        .map(|(s, _)| s.data_dir().join("server.log"));
    let mut marks: Vec<(String, usize)> = Vec::new();
    let mark = |phase: &str| {
        if let Some(p) = &log_path {
            let len = std::fs::metadata(p).map_or(0, |m| m.len() as usize);
            marks.push((phase.to_string(), len));
        }
    };
    let mut report = run_api(&client, &prefix, &params, args.phases(), pid, mark).await;
    report.server = label.clone();
    if started.is_none() {
        for suffix in ["load", "watch", "mem"] {
            if let Err(e) = client.delete_namespace(&format!("{prefix}-{suffix}")).await {
                eprintln!("[api] cleanup: {e:#}");
            }
        }
    }
    println!(
        "`skiff-bench api` against {label}: {}; client and server share this machine ({} CPUs).\n",
        args.describe(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print!("{}", report.to_markdown());
    if let Some(p) = &log_path {
        let log = String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        let mut segments = split_log(&log, &marks);
        // The last mark ("end") only closes the last phase.
        segments.retain(|(phase, _)| phase != "end");
        print!("{}", server_log_table(&segments));
        println!();
        let odd: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        println!(
            "Server log: {} lines, {} warnings or errors{}",
            log.lines().count(),
            odd.len(),
            if odd.is_empty() { "." } else { "; the first:" }
        );
        for l in odd.iter().take(5) {
            println!("    {l}");
        }
    }
    drop(started);
    if report.failed() {
        bail!("a phase failed or the watch was not exactly once (see the report)");
    }
    Ok(())
}

/// Runs every case of `suite` in order on one session, reporting progress on stderr.
async fn run_suite(label: &str, session: &mut Session, suite: &[Case]) -> Result<Vec<CaseResult>> {
    let mut results = Vec::with_capacity(suite.len());
    for case in suite {
        eprintln!("[{label}] {case} ...");
        let r = run_case(session, *case)
            .await
            .with_context(|| format!("{label}: case {case}"))?;
        eprintln!(
            "[{label}] {case}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms{}",
            r.summary.ops_per_sec,
            r.summary.p50_ms,
            r.summary.p99_ms,
            if r.failed { " FAILED" } else { "" }
        );
        results.push(r);
    }
    Ok(results)
}

async fn run_one(args: RunArgs) -> Result<()> {
    let suite = parse_suite(&args.load.suite)?;
    let params = args.load.params();
    let endpoints: Vec<String> = args
        .endpoints
        .iter()
        .filter(|e| !e.is_empty())
        .cloned()
        .collect();
    let target = target_of(args.target, &args.skiff_bin)?;
    let label = target.name();
    // Keep the cluster (if any) alive until the suite is done.
    let (_cluster, endpoints, members) = if endpoints.is_empty() {
        eprintln!("starting {} member(s) of {label}", args.members);
        let cluster = Cluster::start(ClusterConfig::new(target.clone(), args.members)).await?;
        let eps = leader_first(&cluster).await?;
        (Some(cluster), eps, args.members)
    } else {
        let n = endpoints.len();
        (None, endpoints, n)
    };
    let mut session = Session::new(endpoints, params);
    if let Some(c) = &_cluster {
        session.server_pids = c.members().iter().filter_map(|m| m.pid()).collect();
    }
    let results = run_suite(label, &mut session, &suite).await?;
    println!("`skiff-bench run`: {}\n", args.load.describe());
    print!("{}", single_table(label, members, &results));
    if results.iter().any(|r| r.failed) {
        bail!("a correctness check failed (see notes)");
    }
    Ok(())
}

async fn compare(args: CompareArgs) -> Result<()> {
    let suite = parse_suite(&args.load.suite)?;
    let params = args.load.params();
    let baseline = Target::Etcd;
    let candidate = target_of(args.candidate, &args.skiff_bin)?;
    let candidate_label = if candidate == baseline {
        "etcd-b".to_string()
    } else {
        candidate.name().to_string()
    };
    let mut cmp = Comparison {
        baseline: baseline.name().to_string(),
        candidate: candidate_label.clone(),
        ..Default::default()
    };
    let rounds = args.rounds.max(1);
    for &members in &args.members {
        let mut sides = Vec::new();
        for (label, target) in [
            (baseline.name().to_string(), &baseline),
            (candidate_label.clone(), &candidate),
        ] {
            let label = format!("{label} ×{members}");
            eprintln!("[{label}] starting");
            let cluster = Cluster::start(ClusterConfig::new(target.clone(), members))
                .await
                .with_context(|| format!("starting {label}"))?;
            let mut session = Session::new(leader_first(&cluster).await?, params.clone());
            session.server_pids = cluster.members().iter().filter_map(|m| m.pid()).collect();
            sides.push((label, cluster, session));
        }
        for case in &suite {
            let mut runs: [Vec<CaseResult>; 2] = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                // Alternate who goes first, so a drift within a round favours neither.
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for side in order {
                    let (label, _, session) = &mut sides[side];
                    let label = format!("{label} round {}/{rounds}", round + 1);
                    let mut r = run_suite(&label, session, std::slice::from_ref(case)).await?;
                    runs[side].extend(r.pop());
                }
            }
            let [b, c] = runs;
            cmp.cases.push(ComparedCase {
                members,
                baseline: median_of(b),
                candidate: median_of(c),
            });
        }
        drop(sides);
    }
    if args.rss_keys > 0 {
        let b = rss_after_load(&baseline, &params, args.rss_keys).await?;
        let c = rss_after_load(&candidate, &params, args.rss_keys).await?;
        cmp.rss = Some(RssPair {
            keys: args.rss_keys,
            value_size: params.value_size,
            baseline_kib: b,
            candidate_kib: c,
        });
    }
    println!(
        "`skiff-bench compare`: {}; both sides fsync (their defaults); connections go to the \
         members round-robin from the leader (put:1 writes to the leader); each figure is the \
         median of {rounds} rounds, the sides taking turns; client and servers share this \
         machine ({} CPUs).\n",
        args.load.describe(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print!("{}", cmp.to_markdown());
    if cmp
        .cases
        .iter()
        .any(|c| c.baseline.failed || c.candidate.failed)
    {
        bail!("a correctness check failed (see notes)");
    }
    Ok(())
}

/// One result standing for several runs of a case: each figure is its median over the
/// runs (so a row may mix rounds), and a failed run fails it (its note is kept).
fn median_of(mut runs: Vec<CaseResult>) -> CaseResult {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
    }
    let figure =
        |f: fn(&CaseResult) -> f64, runs: &[CaseResult]| median(runs.iter().map(f).collect());
    let ops_per_sec = figure(|r| r.summary.ops_per_sec, &runs);
    let p50_ms = figure(|r| r.summary.p50_ms, &runs);
    let p90_ms = figure(|r| r.summary.p90_ms, &runs);
    let p99_ms = figure(|r| r.summary.p99_ms, &runs);
    let max_ms = figure(|r| r.summary.max_ms, &runs);
    let cpu = (!runs.is_empty() && runs.iter().all(|r| r.cpu.is_some())).then(|| CpuPerOp {
        server_us: figure(|r| r.cpu.map_or(0.0, |c| c.server_us), &runs),
        client_us: figure(|r| r.cpu.map_or(0.0, |c| c.client_us), &runs),
    });
    let errors: u64 = runs.iter().map(|r| r.summary.errors).sum();
    let failed = runs.iter().any(|r| r.failed);
    // The run whose note stands for all: a failed one if any, else the median throughput.
    runs.sort_by(|a, b| a.summary.ops_per_sec.total_cmp(&b.summary.ops_per_sec));
    let pick = runs
        .iter()
        .position(|r| r.failed)
        .unwrap_or(runs.len().saturating_sub(1) / 2);
    let n = runs.len();
    let mut out = runs.swap_remove(pick);
    out.summary.ops_per_sec = ops_per_sec;
    out.summary.p50_ms = p50_ms;
    out.summary.p90_ms = p90_ms;
    out.summary.p99_ms = p99_ms;
    out.summary.max_ms = max_ms;
    out.summary.errors = errors;
    out.failed = failed;
    out.cpu = cpu;
    if n > 1 && errors > 0 {
        out.note = format!("{} (errors summed over {n} rounds)", out.note);
    }
    out
}

/// The endpoints of a cluster the harness started, rotated so that the leader's comes
/// first. Connections are spread over the endpoints round-robin from the first, so a case
/// with one client writes to the leader on every target — as etcd's own benchmarks report
/// "write to leader" — instead of to whichever member the election happened to leave
/// first: at a follower a write is forwarded, a loopback round trip more (~0.05–0.1 ms
/// here, on Skiff and etcd alike), and a random placement decided the three-member put:1
/// comparison more than either server did (`docs/benchmarks.md`).
async fn leader_first(cluster: &Cluster) -> Result<Vec<String>> {
    let mut eps = cluster.endpoints();
    let leader = cluster.wait_leader(Duration::from_secs(15)).await?;
    eps.rotate_left(leader);
    Ok(eps)
}

/// Starts one member of `target`, writes `keys` keys once each, and reads its VmRSS.
async fn rss_after_load(target: &Target, params: &Params, keys: u64) -> Result<u64> {
    eprintln!("[{target} rss] loading {keys} keys");
    let cluster = Cluster::start(ClusterConfig::new(target.clone(), 1)).await?;
    load_keys(&cluster.endpoints(), params, keys).await?;
    // Let background work after the load (e.g. flushes) settle before reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = cluster.member(0)?.rss_kib()?;
    eprintln!("[{target} rss] {:.1} MiB", rss as f64 / 1024.0);
    Ok(rss)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Each figure is its own median over the rounds; a failed round fails the case and
    /// its note is the one shown.
    #[test]
    fn rounds_are_summarised_figure_by_figure() {
        let case = parse_suite("put:1").unwrap()[0];
        let run = |ops: f64, p99: f64, server_us: f64, note: &str| {
            let mut r = CaseResult::new(
                case,
                skiff_tests::bench::Summary {
                    ops: 100,
                    errors: 1,
                    elapsed: Duration::from_secs(1),
                    ops_per_sec: ops,
                    p50_ms: ops / 10.0,
                    p90_ms: 1.0,
                    p99_ms: p99,
                    max_ms: 9.0,
                },
                note.to_string(),
            );
            r.cpu = Some(CpuPerOp {
                server_us,
                client_us: 1.0,
            });
            r
        };
        let m = median_of(vec![
            run(10.0, 5.0, 7.0, "a"),
            run(30.0, 1.0, 8.0, "b"),
            run(20.0, 3.0, 9.0, "c"),
        ]);
        assert_eq!(m.summary.ops_per_sec, 20.0);
        assert_eq!(m.summary.p50_ms, 2.0);
        assert_eq!(m.summary.p99_ms, 3.0);
        assert_eq!(m.cpu.unwrap().server_us, 8.0);
        assert_eq!(m.summary.errors, 3, "errors add up");
        assert!(
            m.note.starts_with('c'),
            "the median-throughput round's note"
        );
        assert!(!m.failed);

        let mut bad = run(25.0, 2.0, 8.0, "missing 3 events");
        bad.failed = true;
        let m = median_of(vec![
            run(10.0, 5.0, 7.0, "a"),
            bad,
            run(20.0, 3.0, 9.0, "c"),
        ]);
        assert!(m.failed);
        assert!(m.note.starts_with("missing 3 events"));
        assert_eq!(m.summary.ops_per_sec, 20.0);
    }

    #[test]
    fn defaults_parse() {
        let cli = Cli::try_parse_from(["skiff-bench", "compare", "--candidate", "etcd"]).unwrap();
        let Command::Compare(args) = cli.command else {
            panic!("not compare");
        };
        assert_eq!(args.members, vec![1, 3]);
        assert_eq!(args.rss_keys, 100_000);
        assert_eq!(parse_suite(&args.load.suite).unwrap().len(), 8);
        let cli = Cli::try_parse_from([
            "skiff-bench",
            "run",
            "--endpoints",
            "http://127.0.0.1:1,http://127.0.0.1:2",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.endpoints.len(), 2);
    }

    #[test]
    fn api_defaults_parse() {
        let cli = Cli::try_parse_from(["skiff-bench", "api"]).unwrap();
        let Command::Api(args) = cli.command else {
            panic!("not api");
        };
        let p = args.params();
        assert_eq!(p.rate, 200.0);
        assert_eq!(p.duration, Duration::from_secs(30));
        assert_eq!((p.watchers, p.watch_events, p.pods), (1000, 200, 10_000));
        assert_eq!(
            args.phases(),
            Phases {
                load: true,
                watch: true,
                memory: true
            }
        );
        let cli = Cli::try_parse_from(["skiff-bench", "api", "--phases", "watch"]).unwrap();
        let Command::Api(args) = cli.command else {
            panic!("not api");
        };
        assert!(!args.phases().load && args.phases().watch && !args.phases().memory);
        assert!(Cli::try_parse_from(["skiff-bench", "api", "--server-pid", "1"]).is_err());
    }

    #[test]
    fn missing_skiff_binary_is_an_error() {
        let missing = Some(PathBuf::from("/nonexistent/skiff"));
        assert!(target_of(Kind::Skiff, &missing).is_err());
        assert_eq!(target_of(Kind::Etcd, &missing).unwrap(), Target::Etcd);
    }
}
