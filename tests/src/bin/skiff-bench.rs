//! `skiff-bench`: the store benchmark over the etcd v3 API. `run` measures one target
//! (running servers given by `--endpoints`, or a cluster it starts itself); `compare`
//! starts etcd and `skiff store` clusters through the harness, runs the same suite on
//! both and prints Skiff/etcd ratios. Flag parsing and orchestration only; the workloads
//! live in `skiff_tests::bench`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use skiff_tests::bench::report::{single_table, ComparedCase, RssPair};
use skiff_tests::bench::workload::{parse_suite, DEFAULT_SUITE};
use skiff_tests::bench::{load_keys, run_case, Case, CaseResult, Comparison, Params, Session};
use skiff_tests::{skiff_binary, Cluster, ClusterConfig, Target};

#[derive(Parser, Debug)]
#[command(
    name = "skiff-bench",
    about = "Benchmark a store over the etcd v3 API: Skiff against the real etcd."
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
    /// Requests per case (a case also stops at --max-seconds).
    #[arg(long, env = "SKIFF_BENCH_TOTAL", default_value_t = 10_000)]
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
    }
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
        let eps = cluster.endpoints();
        (Some(cluster), eps, args.members)
    } else {
        let n = endpoints.len();
        (None, endpoints, n)
    };
    let mut session = Session::new(endpoints, params);
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
            let mut session = Session::new(cluster.endpoints(), params.clone());
            sides.push(run_suite(&label, &mut session, &suite).await?);
            drop(cluster);
        }
        let candidate_results = sides.pop().unwrap_or_default();
        let baseline_results = sides.pop().unwrap_or_default();
        for (b, c) in baseline_results.into_iter().zip(candidate_results) {
            cmp.cases.push(ComparedCase {
                members,
                baseline: b,
                candidate: c,
            });
        }
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
        "`skiff-bench compare`: {}; both sides fsync (their defaults); client and servers \
         share this machine ({} CPUs).\n",
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
    fn missing_skiff_binary_is_an_error() {
        let missing = Some(PathBuf::from("/nonexistent/skiff"));
        assert!(target_of(Kind::Skiff, &missing).is_err());
        assert_eq!(target_of(Kind::Etcd, &missing).unwrap(), Target::Etcd);
    }
}
