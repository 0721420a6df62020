//! One test run, end to end: testbed, cluster, workload and nemesis side by
//! side, heal, final reads, checks, and the run folder.
//!
//! ```text
//! <out>/
//!   run.json        options, seed, counts, nemesis errors, verdict
//!   history.jsonl   every client event (see `history`)
//!   nemesis.jsonl   fault windows (see `recorder`)
//!   watch.json      the watch workload's record (watch runs only)
//!   results.json    the checkers' verdicts (`verdict::Summary`)
//!   report.html     timeline, latency and throughput plots
//!   members/n<i>.log  each member's output
//! ```
//!
//! Data dirs live under `<out>/data/` during the run and are removed at the
//! end unless kept. The testbed and the member processes are removed on
//! every exit path: returning, erroring, panicking, or this future being
//! dropped (Ctrl-C in the binary): [`crate::testbed::Testbed`] is a guard,
//! and member processes are killed on drop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::checker::linearizable::Budget;
use crate::client::Client;
use crate::cluster::Cluster;
use crate::member::CLIENT_PORT;
use crate::nemesis::{self, NemesisOptions};
use crate::recorder::Recorder;
use crate::report;
use crate::target::Target;
use crate::testbed::Testbed;
use crate::verdict::{Summary, Verdict};
use crate::workload::{self, Ctx, WorkloadKind};

/// Everything a run needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestOptions {
    /// The workload.
    pub workload: WorkloadKind,
    /// The faults.
    pub nemesis: NemesisOptions,
    /// The store.
    pub target: Target,
    /// Cluster size.
    pub nodes: usize,
    /// Length of the generation phase.
    pub time_limit: Duration,
    /// Most invocations in the generation phase.
    pub op_limit: u64,
    /// Client tasks.
    pub concurrency: usize,
    /// Keys (registers, counters, locks).
    pub keys: usize,
    /// Per-operation client timeout.
    pub op_timeout: Duration,
    /// Random seed (nemesis and clients).
    pub seed: u64,
    /// The run folder.
    pub out: PathBuf,
    /// Keep the members' data dirs after the run.
    pub keep_data: bool,
    /// Time budget of the linearizability checker.
    pub check_time_limit: Duration,
}

/// What a run produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    /// The run folder.
    pub out: PathBuf,
    /// The testbed slot the run used (its namespaces were `sjp<slot>n<i>`).
    pub slot: u8,
    /// The combined verdict.
    pub verdict: Verdict,
    /// Operations in the history.
    pub ops: usize,
    /// Operations by outcome: ok, fail, info.
    pub outcomes: (usize, usize, usize),
    /// Nemesis windows.
    pub faults: usize,
    /// Anomaly kinds and counts, over every checker.
    pub anomalies: Vec<(String, u64)>,
    /// Errors of the nemesis and of healing (do not change the verdict).
    pub errors: Vec<String>,
    /// The options.
    pub options: TestOptions,
}

/// Runs a test.
///
/// # Errors
/// If the testbed or cluster cannot be set up or the folder written. A
/// store that misbehaves is not an error: it is an invalid verdict.
pub async fn run_test(opts: TestOptions) -> Result<RunResult> {
    std::fs::create_dir_all(opts.out.join("members"))
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let data_root = opts.out.join("data");
    let bed = Testbed::create(opts.nodes)?;
    eprintln!(
        "skiff-jepsen: testbed slot {} ({} hosts, 10.77.{}.0/24), run folder {}",
        bed.slot(),
        bed.hosts.len(),
        bed.slot(),
        opts.out.display()
    );
    let slot = bed.slot();
    let mut cluster = Cluster::start(
        &bed,
        opts.target.clone(),
        &data_root,
        &opts.out.join("members"),
        Duration::from_secs(60),
    )
    .await?;

    let recorder = Arc::new(Recorder::new(&opts.out, opts.time_limit, opts.op_limit)?);
    let (healed_tx, healed_rx) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(Ctx {
        recorder: recorder.clone(),
        clients: bed
            .hosts
            .iter()
            .map(|h| Client::new(h.addr, CLIENT_PORT, opts.op_timeout))
            .collect(),
        concurrency: opts.concurrency,
        keys: opts.keys,
        seed: opts.seed,
        healed: healed_rx,
    });
    let workload = tokio::spawn(workload::run(opts.workload, ctx.clone()));
    // The workload task must not outlive this future (Ctrl-C drops it).
    let mut workload = AbortOnDrop(Some(workload));

    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut errors = nemesis::run(&mut cluster, &opts.nemesis, &recorder, &mut rng).await;
    // Bounded: the recorder refuses invocations past the deadline.
    while !recorder.done() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Err(e) = nemesis::heal_all(&mut cluster, Duration::from_secs(60)).await {
        errors.push(format!("final heal: {e:#}"));
        eprintln!("skiff-jepsen: final heal: {e:#}");
    }
    let _ = healed_tx.send(true);
    let output = match tokio::time::timeout(Duration::from_secs(180), workload.join()).await {
        Ok(Some(Ok(Ok(output)))) => output,
        Ok(Some(Ok(Err(e)))) => {
            errors.push(format!("workload: {e:#}"));
            workload::Output::default()
        }
        Ok(None) => workload::Output::default(),
        Ok(Some(Err(e))) => {
            errors.push(format!("workload task: {e}"));
            workload::Output::default()
        }
        Err(_) => {
            errors.push("workload did not finish its final phase within 180 s".into());
            workload::Output::default()
        }
    };
    cluster.stop_all().await;
    drop(cluster);
    drop(bed);
    if !opts.keep_data {
        let _ = std::fs::remove_dir_all(&data_root);
    }

    let (history, nemesis_log) = recorder.snapshot();
    if let Some(log) = &output.watch_log {
        std::fs::write(opts.out.join("watch.json"), serde_json::to_string(log)?)?;
    }
    let budget = Budget {
        time_limit: opts.check_time_limit,
        ..Budget::default()
    };
    let summary = Summary::new(workload::check(opts.workload, &history, &output, &budget));
    summary.save(&opts.out.join("results.json"))?;
    let title = format!(
        "{:?} × {:?} × {:?}{}",
        opts.workload,
        opts.nemesis.kind,
        opts.target.kind,
        opts.target
            .unsafe_mode
            .map(|m| format!(" (unsafe {m:?})"))
            .unwrap_or_default()
    )
    .to_lowercase();
    std::fs::write(
        opts.out.join("report.html"),
        report::render(&title, &history, &nemesis_log, &summary),
    )?;

    let ops = history.operations().unwrap_or_default();
    let outcomes = ops
        .iter()
        .fold((0, 0, 0), |(o, f, i), op| match op.outcome {
            crate::history::Outcome::Ok => (o + 1, f, i),
            crate::history::Outcome::Fail => (o, f + 1, i),
            crate::history::Outcome::Info => (o, f, i + 1),
        });
    let mut anomalies: std::collections::BTreeMap<String, u64> = Default::default();
    for r in &summary.results {
        for a in &r.anomalies {
            *anomalies.entry(a.kind.clone()).or_default() += 1;
        }
    }
    let result = RunResult {
        out: opts.out.clone(),
        slot,
        verdict: summary.verdict,
        ops: ops.len(),
        outcomes,
        faults: report::windows(&nemesis_log, 0).len(),
        anomalies: anomalies.into_iter().collect(),
        errors,
        options: opts,
    };
    std::fs::write(
        result.out.join("run.json"),
        serde_json::to_string_pretty(&result)? + "\n",
    )?;
    Ok(result)
}

/// A task handle that aborts the task when dropped.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> AbortOnDrop<T> {
    async fn join(&mut self) -> Option<Result<T, tokio::task::JoinError>> {
        match self.0.as_mut() {
            Some(h) => Some(h.await),
            None => None,
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}
