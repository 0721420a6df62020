//! Workloads: what the clients do during a run, and which checker judges it.
//!
//! Every workload has two phases. In the *generation* phase its clients (one
//! task each, bound to one member, round-robin) invoke operations back to
//! back until the [`Recorder`] is done (time limit, op-count cap). Then the
//! harness heals the cluster and signals [`Ctx::healed`]; the workload does
//! its *final reads* (through any member that answers) and returns.
//!
//! Each client is a sequential process in the history: `invoke`, then one
//! of `ok` / `fail` / `info`. A write whose outcome is unknown (timeout,
//! error after sending) is `info` and the client continues under a fresh
//! process id. A failed read is `fail`: reads have no effect.
//!
//! | workload   | keys                     | operations                          | checker          |
//! |------------|--------------------------|-------------------------------------|------------------|
//! | `register` | `/sjp/register/r<i>`     | read, write, cas (Txn on value)     | linearizable     |
//! | `set`      | `/sjp/set/e<element>`    | add (put), read-set (prefix range)  | set              |
//! | `counter`  | `/sjp/counter/c<i>`      | increment (Txn on mod_revision)     | counter          |
//! | `watch`    | `/sjp/watch/k<i>`        | put/delete; watchers with resume    | watch            |
//! | `lock`     | `/sjp/lock/l<i>`         | acquire (lease), act, release       | lock             |
//! | `lease`    | `/sjp/lease/w<w>-<n>/k<j>` | grant, put with lease, keep-alive, revoke, delete; reads | lease |

pub mod counter;
pub mod lease;
pub mod lock;
pub mod register;
pub mod set;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::checker::linearizable::Budget;
use crate::checker::watch::WatchLog;
use crate::client::{Client, ClientError};
use crate::history::{EventType, History, Op};
use crate::recorder::Recorder;
use crate::verdict::{CheckResult, Verdict};

/// Which workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Linearizable registers.
    Register,
    /// A set of unique elements.
    Set,
    /// Watch streams.
    Watch,
    /// Optimistic counters.
    Counter,
    /// Lease locks with fencing.
    Lock,
    /// Keys attached to leases: vanish only after expiry or revoke.
    Lease,
}

/// What the workloads share.
pub struct Ctx {
    /// The run's recorder.
    pub recorder: Arc<Recorder>,
    /// One client per member (with the per-operation timeout).
    pub clients: Vec<Client>,
    /// Number of client tasks.
    pub concurrency: usize,
    /// Keys per workload (registers, counters, locks).
    pub keys: usize,
    /// Seed for the clients' random choices.
    pub seed: u64,
    /// Becomes `true` when the cluster is healed for the final reads.
    pub healed: tokio::sync::watch::Receiver<bool>,
}

impl Ctx {
    /// The client that worker `w` talks to.
    pub fn client_for(&self, w: usize) -> &Client {
        &self.clients[w % self.clients.len()]
    }

    /// A random source for worker `w`.
    pub fn rng(&self, w: usize) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// Waits for the heal signal (at most 5 minutes).
    pub async fn wait_healed(&self) {
        let mut rx = self.healed.clone();
        let _ = tokio::time::timeout(Duration::from_secs(300), rx.wait_for(|h| *h)).await;
    }
}

/// What a workload leaves besides the history.
#[derive(Debug, Default)]
pub struct Output {
    /// The watch workload's record.
    pub watch_log: Option<WatchLog>,
    /// A final read found no member to answer: the last read of the run
    /// stands in for it, so "lost" (and "doubled") are not meaningful.
    pub final_read_failed: bool,
    /// The lease workload: fault windows `(start, end)` in ns (the nemesis
    /// log and the final heal), in which leaders may change.
    pub fault_windows: Vec<(u64, u64)>,
}

/// Runs a workload through both phases.
///
/// # Errors
/// If a client task panicked, or the workload could not set up.
pub async fn run(kind: WorkloadKind, ctx: Arc<Ctx>) -> anyhow::Result<Output> {
    match kind {
        WorkloadKind::Register => register::run(ctx).await,
        WorkloadKind::Set => set::run(ctx).await,
        WorkloadKind::Watch => watch::run(ctx).await,
        WorkloadKind::Counter => counter::run(ctx).await,
        WorkloadKind::Lock => lock::run(ctx).await,
        WorkloadKind::Lease => lease::run(ctx).await,
    }
}

/// Judges a run.
pub fn check(
    kind: WorkloadKind,
    history: &History,
    output: &Output,
    budget: &Budget,
) -> Vec<CheckResult> {
    use crate::checker;
    let malformed = |e: &dyn std::fmt::Display| {
        let mut r = CheckResult::new("history", Verdict::Unknown);
        r.note(format!("malformed history: {e}"));
        vec![r]
    };
    match kind {
        WorkloadKind::Register => {
            match checker::linearizable::check_history(&crate::model::Register, history, budget) {
                Ok(report) => vec![report.to_check_result()],
                Err(e) => malformed(&e),
            }
        }
        WorkloadKind::Set => {
            let opts = checker::set::SetOptions {
                stale_is_invalid: true,
            };
            match checker::set::check_history(history, opts) {
                Ok(report) => vec![without_final_read(report.to_check_result(), output)],
                Err(e) => malformed(&e),
            }
        }
        WorkloadKind::Counter => match checker::counter::check_history(history) {
            Ok(report) => vec![without_final_read(report.to_check_result(), output)],
            Err(e) => malformed(&e),
        },
        WorkloadKind::Lock => match checker::lock::check_history(history) {
            Ok(report) => vec![report.to_check_result()],
            Err(e) => malformed(&e),
        },
        WorkloadKind::Lease => {
            let opts = checker::lease::LeaseOptions {
                fault_windows: output.fault_windows.clone(),
                ..Default::default()
            };
            match checker::lease::check_history(history, &opts) {
                Ok(report) => vec![report.to_check_result()],
                Err(e) => malformed(&e),
            }
        }
        WorkloadKind::Watch => {
            let mut results = Vec::new();
            if let Err(e) = history.validate() {
                results.extend(malformed(&e));
            }
            match &output.watch_log {
                Some(log) => results.push(checker::watch::check(log).to_check_result()),
                None => {
                    let mut r = CheckResult::new("watch", Verdict::Unknown);
                    r.note("no watch log recorded");
                    results.push(r);
                }
            }
            results
        }
    }
}

/// Without a final read, anomalies that compare against the final value
/// ("lost", "doubled") only say the last read came early: such a verdict
/// is unknown, not invalid. Other anomalies stand.
fn without_final_read(mut result: CheckResult, output: &Output) -> CheckResult {
    if !output.final_read_failed {
        return result;
    }
    result.note("the final read failed on every member; the last read of the run stood in for it");
    let only_final = result
        .anomalies
        .iter()
        .all(|a| a.kind == "lost" || a.kind == "doubled");
    if result.verdict == Verdict::Invalid && only_final && result.anomalies_omitted == 0 {
        result.verdict = Verdict::Unknown;
    }
    result
}

/// Completes a write-like operation after an error: `fail` if it certainly
/// did not happen, else `info`. Returns the process to use next (fresh
/// after `info`).
pub fn complete_error(rec: &Recorder, process: u64, key: &str, op: Op, err: &ClientError) -> u64 {
    if err.is_definite() {
        rec.complete(process, EventType::Fail, key, op, Some(err.to_string()));
        process
    } else {
        rec.complete(process, EventType::Info, key, op, Some(err.to_string()));
        rec.new_process()
    }
}

/// A short random pause between operations (0–`max_ms` ms).
pub async fn pace(rng: &mut StdRng, max_ms: u64) {
    let ms = rng.random_range(0..=max_ms);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Parses a stored integer value.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Runs `read` against each member in turn until one answers (at most
/// `rounds` passes over the members, 500 ms apart), recording every attempt
/// as an operation of a fresh process: `fail` for errors, `ok` with the
/// result for the answer. Returns the result.
pub async fn final_read<T, F, Fut>(
    ctx: &Ctx,
    key: &str,
    rounds: usize,
    invoke: Op,
    mut read: F,
) -> Option<T>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<(T, Op), ClientError>>,
{
    let rec = &ctx.recorder;
    for _ in 0..rounds {
        for client in &ctx.clients {
            let p = rec.new_process();
            rec.invoke_final(p, key, invoke.clone());
            match read(client.clone()).await {
                Ok((value, op)) => {
                    rec.complete(p, EventType::Ok, key, op, None);
                    return Some(value);
                }
                Err(e) => {
                    rec.complete(p, EventType::Fail, key, invoke.clone(), Some(e.to_string()))
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Spawns `n` workers and waits for all of them.
///
/// # Errors
/// If a worker panicked.
pub async fn spawn_workers<F, Fut>(ctx: &Arc<Ctx>, n: usize, worker: F) -> anyhow::Result<()>
where
    F: Fn(Arc<Ctx>, usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let handles: Vec<_> = (0..n)
        .map(|w| tokio::spawn(worker(ctx.clone(), w)))
        .collect();
    for h in handles {
        h.await
            .map_err(|e| anyhow::anyhow!("client task failed: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Anomaly;

    #[test]
    fn a_missing_final_read_makes_lost_unknown_but_keeps_other_anomalies() {
        let failed = Output {
            final_read_failed: true,
            ..Output::default()
        };
        let mut lost = CheckResult::new("set", Verdict::Invalid);
        lost.anomaly(Anomaly::new("lost", Some("set"), "element 3"));
        assert_eq!(
            without_final_read(lost.clone(), &failed).verdict,
            Verdict::Unknown
        );
        assert_eq!(
            without_final_read(lost.clone(), &Output::default()).verdict,
            Verdict::Invalid
        );
        let mut stale = lost;
        stale.anomaly(Anomaly::new("stale", Some("set"), "element 4"));
        assert_eq!(without_final_read(stale, &failed).verdict, Verdict::Invalid);
    }

    #[test]
    fn unknown_outcomes_get_a_fresh_process() {
        let dir = std::env::temp_dir().join(format!("sjp-wl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rec = Recorder::new(&dir, Duration::from_secs(60), 100).unwrap();
        let p = rec.new_process();
        assert!(rec.invoke(p, "k", Op::Write(1)));
        let refused = ClientError::NotSent("connection refused".into());
        assert_eq!(complete_error(&rec, p, "k", Op::Write(1), &refused), p);
        assert!(rec.invoke(p, "k", Op::Write(2)));
        let q = complete_error(
            &rec,
            p,
            "k",
            Op::Write(2),
            &ClientError::Timeout(Duration::from_secs(1)),
        );
        assert_ne!(q, p);
        let (h, _) = rec.snapshot();
        let ops = h.operations().unwrap();
        assert_eq!(ops[0].outcome, crate::history::Outcome::Fail);
        assert_eq!(ops[1].outcome, crate::history::Outcome::Info);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
