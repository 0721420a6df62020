//! Nemeses: the faults injected while the clients run, on a schedule.
//!
//! The schedule alternates a quiet period and a fault window, each lasting
//! between half and all of the configured interval (random), until the
//! generation phase ends. Every fault is healed before the next starts, and
//! [`heal_all`] restores the whole cluster (rules removed, processes
//! resumed and restarted, removed members added back) before the final
//! reads. Start and stop of every fault go to `nemesis.jsonl`.
//!
//! | nemesis      | start                                              | stop                         |
//! |--------------|----------------------------------------------------|------------------------------|
//! | `partition`  | nftables drops per [`partition::Grudge`]           | tables deleted               |
//! | `kill`       | SIGKILL one node, the leader, a minority or all    | restart on the same data dir |
//! | `pause`      | SIGSTOP one node, the leader or a minority         | SIGCONT                      |
//! | `membership` | MemberRemove a node, kill it, wipe its data dir    | MemberAdd, start `existing`  |
//! | `compaction` | Compact (physical) near the head, Defragment all   | (instant)                    |
//! | `combined`   | one of the above, at random, each window           |                              |

pub mod partition;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::firewall;
use crate::recorder::{NemesisPhase, Recorder};
use partition::PartitionMode;

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NemesisKind {
    /// No faults.
    None,
    /// Network partitions.
    Partition,
    /// kill -9 and restart.
    Kill,
    /// SIGSTOP / SIGCONT.
    Pause,
    /// Remove a member, wipe it, add it back.
    Membership,
    /// Compaction and defragmentation under load.
    Compaction,
    /// All of the above, one at a time.
    Combined,
}

/// How the nemesis behaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisOptions {
    /// Which faults.
    pub kind: NemesisKind,
    /// Quiet periods and fault windows last between half this and this.
    pub interval: Duration,
    /// Partition shapes.
    pub partition_mode: PartitionMode,
}

/// A fault in progress.
#[derive(Debug)]
enum Active {
    Partition(Vec<usize>),
    Kill(Vec<usize>),
    Pause(Vec<usize>),
    Membership(usize),
    /// Over already (compaction), or failed to start: the fault's name.
    Done(&'static str),
}

/// Sleeps for `d`, or until the generation phase ends.
async fn sleep_unless_done(recorder: &Recorder, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !recorder.done() {
        let left = until.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
}

fn window(rng: &mut StdRng, interval: Duration) -> Duration {
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(2);
    Duration::from_millis(rng.random_range(ms / 2..=ms))
}

/// Runs the schedule until the recorder is done. Errors of single faults
/// are recorded and returned as text; they do not stop the run.
pub async fn run(
    cluster: &mut Cluster,
    opts: &NemesisOptions,
    recorder: &Recorder,
    rng: &mut StdRng,
) -> Vec<String> {
    let mut errors = Vec::new();
    if opts.kind == NemesisKind::None {
        return errors;
    }
    // Bounded: every iteration sleeps at least `interval / 2`.
    while !recorder.done() {
        sleep_unless_done(recorder, window(rng, opts.interval)).await;
        if recorder.done() {
            break;
        }
        let kind = match opts.kind {
            NemesisKind::Combined => *[
                NemesisKind::Partition,
                NemesisKind::Kill,
                NemesisKind::Pause,
                NemesisKind::Membership,
                NemesisKind::Compaction,
            ]
            .choose(rng)
            .unwrap_or(&NemesisKind::Partition),
            k => k,
        };
        let active = match start(cluster, kind, opts, recorder, rng).await {
            Ok(active) => active,
            Err(e) => {
                let msg = format!("{kind:?} start: {e:#}");
                eprintln!("skiff-jepsen: nemesis {msg}");
                errors.push(msg);
                // Whatever half-happened is undone by the heal below.
                Active::Done(fault_name(kind))
            }
        };
        if !matches!(active, Active::Done(_)) {
            sleep_unless_done(recorder, window(rng, opts.interval)).await;
        }
        if let Err(e) = stop(cluster, active, recorder).await {
            let msg = format!("{kind:?} stop: {e:#}");
            eprintln!("skiff-jepsen: nemesis {msg}");
            errors.push(msg);
        }
    }
    errors
}

fn names_of(cluster: &Cluster, nodes: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .map(|&i| cluster.members[i].name().to_owned())
        .collect()
}

/// Some nodes: one at random, the leader, a minority, or (if `all`) all.
async fn pick_nodes(cluster: &mut Cluster, rng: &mut StdRng, all: bool) -> (Vec<usize>, String) {
    let n = cluster.members.len();
    let choice = rng.random_range(0..if all { 4 } else { 3 });
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    match choice {
        0 => (vec![order[0]], "one node".into()),
        1 => match cluster.leader().await {
            Some(l) => (vec![l], "the leader".into()),
            None => (vec![order[0]], "one node (no leader known)".into()),
        },
        2 => {
            let mut v = order[..(n / 2).max(1)].to_vec();
            v.sort_unstable();
            (v, "a minority".into())
        }
        _ => ((0..n).collect(), "all nodes".into()),
    }
}

async fn start(
    cluster: &mut Cluster,
    kind: NemesisKind,
    opts: &NemesisOptions,
    recorder: &Recorder,
    rng: &mut StdRng,
) -> Result<Active> {
    match kind {
        NemesisKind::None | NemesisKind::Combined => Ok(Active::Done("none")),
        NemesisKind::Partition => {
            let leader = cluster.leader().await;
            let p = partition::draw(opts.partition_mode, leader, &cluster.names(), rng);
            let affected: Vec<usize> = (0..p.grudge.len())
                .filter(|&i| !p.grudge[i].is_empty())
                .collect();
            recorder.nemesis(
                NemesisPhase::Start,
                "partition",
                &p.description,
                &names_of(cluster, &affected),
            );
            for (i, drops) in p.grudge.iter().enumerate() {
                let peers: Vec<_> = drops
                    .iter()
                    .map(|&j| cluster.members[j].host.addr)
                    .collect();
                firewall::isolate(&cluster.members[i].host, &peers)?;
            }
            Ok(Active::Partition(affected))
        }
        NemesisKind::Kill => {
            let (nodes, how) = pick_nodes(cluster, rng, true).await;
            let names = names_of(cluster, &nodes);
            recorder.nemesis(
                NemesisPhase::Start,
                "kill",
                &format!("kill -9 {how}: {}", names.join(",")),
                &names,
            );
            for &i in &nodes {
                cluster.members[i].kill().await?;
            }
            Ok(Active::Kill(nodes))
        }
        NemesisKind::Pause => {
            let (nodes, how) = pick_nodes(cluster, rng, false).await;
            let names = names_of(cluster, &nodes);
            recorder.nemesis(
                NemesisPhase::Start,
                "pause",
                &format!("SIGSTOP {how}: {}", names.join(",")),
                &names,
            );
            for &i in &nodes {
                cluster.members[i].pause()?;
            }
            Ok(Active::Pause(nodes))
        }
        NemesisKind::Membership => {
            let i = rng.random_range(0..cluster.members.len());
            let name = cluster.members[i].name().to_owned();
            recorder.nemesis(
                NemesisPhase::Start,
                "membership",
                &format!("remove {name}, wipe its data dir"),
                std::slice::from_ref(&name),
            );
            // etcd refuses to remove a member until the rest has been
            // connected for 5 s ("unhealthy cluster"): retry, bounded.
            let mut removed = cluster.remove_member(i).await;
            for _ in 0..20 {
                if removed.is_ok() || recorder.done() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                removed = cluster.remove_member(i).await;
            }
            removed.with_context(|| format!("removing {name}"))?;
            Ok(Active::Membership(i))
        }
        NemesisKind::Compaction => {
            let n = cluster.members.len();
            let via = rng.random_range(0..n);
            let admin = cluster.admin(via).clone();
            let (_, head) = admin.get("/sjp/compaction-probe").await?;
            // Keep a little history so watchers just behind can resume.
            let revision = (head - 50).max(1);
            recorder.nemesis(
                NemesisPhase::Start,
                "compaction",
                &format!(
                    "compact at {revision} (head {head}) via {}, defragment all",
                    cluster.members[via].name()
                ),
                &cluster.names(),
            );
            let compacted = admin.compact(revision).await;
            let mut errors = Vec::new();
            if let Err(e) = compacted {
                errors.push(format!("compact: {e}"));
            }
            for j in 0..n {
                if let Err(e) = cluster
                    .admin(j)
                    .with_timeout(Duration::from_secs(10))
                    .defragment()
                    .await
                {
                    errors.push(format!("defragment {}: {e}", cluster.members[j].name()));
                }
            }
            if !errors.is_empty() {
                anyhow::bail!("{}", errors.join("; "));
            }
            Ok(Active::Done("compaction"))
        }
    }
}

fn fault_name(kind: NemesisKind) -> &'static str {
    match kind {
        NemesisKind::None => "none",
        NemesisKind::Partition => "partition",
        NemesisKind::Kill => "kill",
        NemesisKind::Pause => "pause",
        NemesisKind::Membership => "membership",
        NemesisKind::Compaction => "compaction",
        NemesisKind::Combined => "combined",
    }
}

async fn stop(cluster: &mut Cluster, active: Active, recorder: &Recorder) -> Result<()> {
    match active {
        Active::Done(fault) => {
            // A fault that ended on its own (compaction) or failed to start:
            // make sure nothing is left half-done.
            let healed = heal_all(cluster, Duration::from_secs(0)).await;
            recorder.nemesis(NemesisPhase::Stop, fault, "over", &[]);
            healed
        }
        Active::Partition(nodes) => {
            for m in &cluster.members {
                firewall::heal(&m.host)?;
            }
            let names = names_of(cluster, &nodes);
            recorder.nemesis(NemesisPhase::Stop, "partition", "heal network", &names);
            Ok(())
        }
        Active::Kill(nodes) => {
            let names = names_of(cluster, &nodes);
            let target = cluster.target.clone();
            let mut errors = Vec::new();
            for &i in &nodes {
                if let Err(e) = cluster.members[i].restart(&target) {
                    errors.push(format!("{e:#}"));
                }
            }
            recorder.nemesis(NemesisPhase::Stop, "kill", "restart", &names);
            if errors.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{}", errors.join("; "))
            }
        }
        Active::Pause(nodes) => {
            let names = names_of(cluster, &nodes);
            for &i in &nodes {
                let _ = cluster.members[i].resume();
            }
            recorder.nemesis(NemesisPhase::Stop, "pause", "SIGCONT", &names);
            Ok(())
        }
        Active::Membership(i) => {
            let name = cluster.members[i].name().to_owned();
            let mut result = Err(anyhow::anyhow!("not tried"));
            // Bounded retries: a leader election may be in progress.
            for _ in 0..10 {
                result = cluster.add_member(i).await;
                if result.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            recorder.nemesis(
                NemesisPhase::Stop,
                "membership",
                &format!("add {name} back as a fresh member"),
                std::slice::from_ref(&name),
            );
            result
        }
    }
}

/// Undoes every fault: removes partitions, resumes paused members,
/// restarts killed ones, adds removed ones back; then waits (at most
/// `healthy_within`, if non-zero) for the cluster to be healthy.
///
/// # Errors
/// If a step fails or the cluster is not healthy in time.
pub async fn heal_all(cluster: &mut Cluster, healthy_within: Duration) -> Result<()> {
    let mut errors = Vec::new();
    for m in &cluster.members {
        if let Err(e) = firewall::heal(&m.host) {
            errors.push(format!("{e:#}"));
        }
    }
    for m in &mut cluster.members {
        if m.is_paused() {
            let _ = m.resume();
        }
    }
    let listed = cluster.listed_members().await;
    let target = cluster.target.clone();
    for i in 0..cluster.members.len() {
        if cluster.members[i].is_running() {
            continue;
        }
        let is_member = listed.as_ref().is_none_or(|l| l.contains(&i));
        let result = if is_member {
            cluster.members[i].restart(&target)
        } else {
            cluster.add_member(i).await
        };
        if let Err(e) = result {
            errors.push(format!(
                "bringing back {}: {e:#}",
                cluster.members[i].name()
            ));
        }
    }
    if !healthy_within.is_zero() {
        if let Err(e) = cluster.wait_healthy(healthy_within).await {
            errors.push(format!("{e:#}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}
