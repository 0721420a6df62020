//! `skiff-bench pods`: how fast pods start on a real node, what the agent costs, and how
//! many simulated nodes and pods the control plane carries.
//!
//! *Startup*: a `skiff server` and a separate `skiff agent` (real runc pods, CNI);
//! `pods` busybox pods are created (`concurrency` requests in flight, at `rate` pods/s or
//! as fast as that allows) and each one's
//! latency runs from its create request being sent to the watch showing it Running with
//! every container running — the Kubernetes pod-startup SLI, minus image pulls (the image
//! is local). Then the agent's RSS and the sum of its shims' RSS with all pods running,
//! and the time until every pod is deleted and gone from the node.
//!
//! *Density*: a `skiff server` (scheduler, controllers) and one `skiff agent --simulate
//! nodes` process; one Deployment of nodes × pods_per_node replicas; timed until every
//! pod is Running; the simulating agent's and the server's RSS at the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::json;

use super::schedule::{list_revision, watch_pods_until};
use super::stats::Recorder;

fn running(p: &Pod) -> bool {
    let s = p.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Running")
        && s.and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                !cs.is_empty()
                    && cs
                        .iter()
                        .all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
            })
}

/// Pod startup figures.
#[derive(Debug, Clone)]
pub struct StartupReport {
    /// Pods started.
    pub pods: usize,
    /// Create → Running, per pod.
    pub latency: super::stats::Summary,
    /// First create → last Running.
    pub all_running_s: f64,
    /// The agent's RSS with every pod running, KiB.
    pub agent_rss_kib: u64,
    /// Its shims' proportional set size together, KiB.
    pub shims_pss_kib: u64,
    /// Shim processes counted.
    pub shims: usize,
    /// Delete all → all gone from the API.
    pub delete_s: f64,
}

impl StartupReport {
    /// A markdown table.
    pub fn table(&self) -> String {
        format!(
            "| pods | p50 | p90 | p99 | max | all Running | agent RSS | shims PSS (n) | delete all |\n|---|---|---|---|---|---|---|---|---|\n| {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} s | {:.1} MiB | {:.1} MiB ({}) | {:.1} s |\n",
            self.pods,
            self.latency.p50_ms,
            self.latency.p90_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.all_running_s,
            self.agent_rss_kib as f64 / 1024.0,
            self.shims_pss_kib as f64 / 1024.0,
            self.shims,
            self.delete_s,
        )
    }
}

/// Proportional set size of a process in KiB (`Pss` of `/proc/<pid>/smaps_rollup`):
/// shared pages (the binary's text) are divided among the processes sharing them, so a
/// sum over many processes is honest where one of RSS is not.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Pids of the shims whose runc root is `runc_root`.
pub fn shim_pids(runc_root: &std::path::Path) -> Vec<u32> {
    let needle = runc_root.display().to_string();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.get(1) == Some(&b"shim".as_slice()) && args.contains(&needle.as_bytes())
            })
        })
        .collect()
}

/// How to load the node in the startup phase.
#[derive(Clone, Debug)]
pub struct StartupParams {
    /// The image the pods run.
    pub image: String,
    /// Pods to start.
    pub pods: usize,
    /// Create requests in flight.
    pub concurrency: usize,
    /// Pods created per second (0: as fast as `concurrency` allows).
    pub rate: f64,
    /// Give up after this long.
    pub timeout: Duration,
}

/// Creates the pods and measures their startup on the node behind `client`.
///
/// # Errors
/// If the pods do not all run within the timeout.
pub async fn run_startup(
    client: &Client,
    params: &StartupParams,
    agent_pid: Option<u32>,
    runc_root: &std::path::Path,
) -> Result<StartupReport> {
    let StartupParams {
        image,
        pods: n,
        concurrency,
        rate,
        timeout,
    } = params.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rv = list_revision(&pods).await?;
    let start = Instant::now();
    let sent = std::sync::Arc::new(parking_lot::Mutex::new(HashMap::<String, Instant>::new()));
    let creator = {
        let pods = pods.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            stream::iter(0..n)
                .map(|i| {
                    let pods = pods.clone();
                    let sent = sent.clone();
                    let name = format!("startup-{i}");
                    let p: Pod = serde_json::from_value(json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "labels": {"bench": "startup"}},
                        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": image,
                            "command": ["sleep", "3600"],
                            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]},
                    }))
                    .expect("a pod");
                    async move {
                        // Paced: pod i goes out at i / rate seconds.
                        if rate > 0.0 {
                            tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
                        }
                        sent.lock().insert(name, Instant::now());
                        pods.create(&PostParams::default(), &p).await.map(|_| ())
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await
        })
    };
    let mut rec = Recorder::new();
    let mut done = std::collections::HashSet::new();
    let mut last = start;
    let done_ref = std::cell::RefCell::new(&mut done);
    let rec_ref = std::cell::RefCell::new(&mut rec);
    let last_ref = std::cell::RefCell::new(&mut last);
    watch_pods_until(
        &pods,
        rv,
        start + timeout,
        |p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            if running(&p) && !done_ref.borrow().contains(&name) {
                if let Some(t) = sent.lock().get(&name) {
                    rec_ref.borrow_mut().record(t.elapsed());
                    **last_ref.borrow_mut() = Instant::now();
                    done_ref.borrow_mut().insert(name);
                }
            }
            done_ref.borrow().len() >= n
        },
        || format!("{} of {n} pods Running", done_ref.borrow().len()),
    )
    .await?;
    for r in creator.await? {
        r.context("creating a pod")?;
    }
    let all_running_s = last.duration_since(start).as_secs_f64();
    let latency = rec.summary(start.elapsed());
    // Let the agent settle (probes, status writes) before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let agent_rss_kib = agent_pid.map_or(Ok(0), crate::cluster::rss_kib_of)?;
    let shims = shim_pids(runc_root);
    let shims_pss_kib = shims.iter().filter_map(|p| pss_kib(*p)).sum();
    let t = Instant::now();
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=startup"),
    )
    .await?;
    loop {
        let left = pods
            .list_metadata(&ListParams::default().labels("bench=startup"))
            .await?
            .items
            .len();
        if left == 0 {
            break;
        }
        if t.elapsed() > timeout {
            bail!("{left} pods left {timeout:?} after deleting them");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(StartupReport {
        pods: n,
        latency,
        all_running_s,
        agent_rss_kib,
        shims_pss_kib,
        shims: shims.len(),
        delete_s: t.elapsed().as_secs_f64(),
    })
}

/// Density figures.
#[derive(Debug, Clone)]
pub struct DensityReport {
    /// Simulated nodes.
    pub nodes: usize,
    /// Pods Running at the end.
    pub pods: usize,
    /// Nodes registered and Ready.
    pub nodes_ready_s: f64,
    /// Deployment created → all pods Running.
    pub running_s: f64,
    /// The simulating agent's RSS, KiB.
    pub agent_rss_kib: u64,
    /// The server's RSS, KiB.
    pub server_rss_kib: u64,
}

impl DensityReport {
    /// A markdown table.
    pub fn table(&self) -> String {
        format!(
            "| simulated nodes | pods Running | nodes Ready after | all pods Running after | agent RSS | server RSS |\n|---|---|---|---|---|---|\n| {} | {} | {:.1} s | {:.1} s | {:.0} MiB | {:.0} MiB |\n",
            self.nodes,
            self.pods,
            self.nodes_ready_s,
            self.running_s,
            self.agent_rss_kib as f64 / 1024.0,
            self.server_rss_kib as f64 / 1024.0,
        )
    }
}

/// Waits for `nodes` Ready nodes, then runs one Deployment of `nodes × per_node`
/// replicas to Running.
///
/// # Errors
/// On timeouts.
pub async fn run_density(
    client: &Client,
    nodes: usize,
    per_node: usize,
    timeout: Duration,
    started: Instant,
    pids: (u32, u32),
) -> Result<DensityReport> {
    let node_api: Api<Node> = Api::all(client.clone());
    loop {
        let ready = node_api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|n| {
                n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some()
                    && n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
            })
            .count();
        if ready >= nodes {
            break;
        }
        if started.elapsed() > timeout {
            bail!("{ready} of {nodes} simulated nodes Ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let nodes_ready_s = started.elapsed().as_secs_f64();
    let want = nodes * per_node;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rv = list_revision(&pods).await?;
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "density"},
        "spec": {"replicas": want, "selector": {"matchLabels": {"app": "density"}},
            "template": {"metadata": {"labels": {"app": "density"}},
                "spec": {"containers": [{"name": "main", "image": "skiff.local/busybox:1.35",
                    "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]}}}
    }))?;
    let t = Instant::now();
    deployments.create(&PostParams::default(), &d).await?;
    let mut up = std::collections::HashSet::new();
    let up_ref = std::cell::RefCell::new(&mut up);
    watch_pods_until(
        &pods,
        rv,
        t + timeout,
        |p| {
            if running(&p) {
                up_ref
                    .borrow_mut()
                    .insert(p.metadata.name.clone().unwrap_or_default());
            }
            up_ref.borrow().len() >= want
        },
        || format!("{} of {want} pods Running", up_ref.borrow().len()),
    )
    .await?;
    let running_s = t.elapsed().as_secs_f64();
    Ok(DensityReport {
        nodes,
        pods: up.len(),
        nodes_ready_s,
        running_s,
        agent_rss_kib: crate::cluster::rss_kib_of(pids.0).unwrap_or(0),
        server_rss_kib: crate::cluster::rss_kib_of(pids.1).unwrap_or(0),
    })
}
