//! `skiff-jepsen`: runs one fault-injection test (`test`) or removes what a
//! killed run left behind (`cleanup`). Thin glue over the library; see
//! `docs/jepsen.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use skiff_jepsen::nemesis::partition::PartitionMode;
use skiff_jepsen::nemesis::{NemesisKind, NemesisOptions};
use skiff_jepsen::run::{run_test, TestOptions};
use skiff_jepsen::target::{default_skiff_bin, Target, TargetKind, Tuning, UnsafeMode};
use skiff_jepsen::testbed::cleanup_leftovers;
use skiff_jepsen::verdict::Verdict;
use skiff_jepsen::workload::WorkloadKind;

#[derive(Parser)]
#[command(
    name = "skiff-jepsen",
    about = "Fault-injection tests of Skiff's store and etcd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one test; exit 0 only if every checker says valid.
    Test(TestArgs),
    /// Remove namespaces, links and processes left by killed runs.
    Cleanup,
    /// Render report.html again from a run folder's files.
    Report {
        /// The run folder.
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct TestArgs {
    /// What the clients do.
    #[arg(long, value_enum, default_value = "register")]
    workload: WorkloadKind,
    /// Which faults to inject.
    #[arg(long, value_enum, default_value = "none")]
    nemesis: NemesisKind,
    /// Seconds of operations (then heal, final reads, checks).
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Which store.
    #[arg(long, value_enum, default_value = "skiff")]
    target: TargetKind,
    /// Cluster members.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The run folder [default: jepsen-runs/<workload>-<nemesis>-<target>-<time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Random seed [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Client tasks [default: 2 per node].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Keys (registers, counters, locks).
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Most operations invoked.
    #[arg(long, default_value_t = 20_000)]
    op_limit: u64,
    /// Nemesis interval in seconds: quiet periods and fault windows last
    /// between half this and this.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Partition shapes.
    #[arg(long, value_enum, default_value = "random")]
    partition_mode: PartitionMode,
    /// Per-operation client timeout in milliseconds.
    #[arg(long, default_value_t = 2000)]
    op_timeout_ms: u64,
    /// A deliberately unsafe Skiff mode, to prove the harness catches it.
    #[arg(long = "unsafe", value_enum)]
    unsafe_mode: Option<UnsafeMode>,
    /// The skiff binary [default: $SKIFF_BIN, else <workspace>/target/debug/skiff].
    #[arg(long)]
    skiff_bin: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// --snapshot-count given to members.
    #[arg(long)]
    snapshot_count: Option<u64>,
    /// Time budget of the linearizability checker, in seconds.
    #[arg(long, default_value_t = 120)]
    check_time_limit: u64,
    /// Keep the members' data dirs in the run folder.
    #[arg(long)]
    keep_data: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cleanup => match cleanup_leftovers() {
            Ok(c) => {
                println!(
                    "removed {} namespaces {:?}, {} links {:?}, {} nftables tables {:?}",
                    c.namespaces.len(),
                    c.namespaces,
                    c.links.len(),
                    c.links,
                    c.tables.len(),
                    c.tables
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("skiff-jepsen cleanup: {e:#}");
                ExitCode::from(3)
            }
        },
        Command::Test(args) => test(args),
        Command::Report { dir } => match rerender(&dir) {
            Ok(()) => {
                println!("{}", dir.join("report.html").display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("skiff-jepsen report: {e:#}");
                ExitCode::from(3)
            }
        },
    }
}

fn rerender(dir: &std::path::Path) -> anyhow::Result<()> {
    let history = skiff_jepsen::history::History::load(&dir.join("history.jsonl"))?;
    let nemesis = skiff_jepsen::recorder::load_nemesis_log(&dir.join("nemesis.jsonl"))?;
    let summary: skiff_jepsen::verdict::Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json"))?)?;
    let title = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(
        dir.join("report.html"),
        skiff_jepsen::report::render(&title, &history, &nemesis, &summary),
    )?;
    Ok(())
}

fn test(a: TestArgs) -> ExitCode {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let binary = match a.target {
        TargetKind::Skiff => a.skiff_bin.unwrap_or_else(default_skiff_bin),
        TargetKind::Etcd => a.etcd_bin,
    };
    let tuning = Tuning {
        snapshot_count: a.snapshot_count,
        ..Tuning::default()
    };
    let target = match Target::new(a.target, binary, a.unsafe_mode, tuning) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skiff-jepsen: {e:#}");
            return ExitCode::from(3);
        }
    };
    let name = format!("{:?}-{:?}-{:?}", a.workload, a.nemesis, a.target).to_lowercase();
    let opts = TestOptions {
        workload: a.workload,
        nemesis: NemesisOptions {
            kind: a.nemesis,
            interval: Duration::from_secs(a.interval.max(1)),
            partition_mode: a.partition_mode,
        },
        target,
        nodes: a.nodes,
        time_limit: Duration::from_secs(a.time_limit),
        op_limit: a.op_limit,
        concurrency: a.concurrency.unwrap_or(2 * a.nodes).max(1),
        keys: a.keys.max(1),
        op_timeout: Duration::from_millis(a.op_timeout_ms.max(100)),
        seed: a.seed.unwrap_or(now.as_secs()),
        out: a
            .out
            .unwrap_or_else(|| PathBuf::from(format!("jepsen-runs/{name}-{}", now.as_secs()))),
        keep_data: a.keep_data,
        check_time_limit: Duration::from_secs(a.check_time_limit),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("skiff-jepsen: {e}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("skiff-jepsen: {e}");
                    return ExitCode::from(3);
                }
            };
        // Dropping the run future on a signal removes the testbed and kills
        // the members (guards), before the process exits.
        tokio::select! {
            result = run_test(opts) => match result {
                Ok(r) => {
                    println!(
                        "{}: {:?} — {} ops ({} ok, {} fail, {} info), {} faults, anomalies {:?}",
                        r.out.display(),
                        r.verdict,
                        r.ops,
                        r.outcomes.0,
                        r.outcomes.1,
                        r.outcomes.2,
                        r.faults,
                        r.anomalies
                    );
                    for e in &r.errors {
                        println!("  note: {e}");
                    }
                    match r.verdict {
                        Verdict::Valid => ExitCode::SUCCESS,
                        Verdict::Invalid => ExitCode::from(1),
                        Verdict::Unknown => ExitCode::from(2),
                    }
                }
                Err(e) => {
                    eprintln!("skiff-jepsen: {e:#}");
                    ExitCode::from(3)
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("skiff-jepsen: interrupted; testbed removed");
                ExitCode::from(130)
            }
            _ = term.recv() => {
                eprintln!("skiff-jepsen: terminated; testbed removed");
                ExitCode::from(143)
            }
        }
    })
}
