//! `skiff-bench schedule`: scheduling throughput of Skiff's scheduler through a real API
//! server, and (with the controller manager) how fast a large Deployment is created and
//! bound.
//!
//! *Throughput*: against a `skiff server` running neither scheduler nor controllers,
//! `nodes` simulated Nodes are registered (Ready, with allocatable cpu / memory / pods)
//! and `pods` pending Pods created with mixed requests; then Skiff's scheduler starts in
//! this process (the same code `skiff server` runs) and binds them through `pods/binding`.
//! Measured: from its start to the first binding (informer sync), from the first to the
//! last binding (the rate), and the total; then every node's bound pods are checked
//! against its allocatable (no overcommit) and the spread is printed.
//!
//! *Deployment*: against a `skiff server` running scheduler and controller manager, with
//! `deploy_nodes` simulated Nodes, one Deployment of `replicas` replicas is created and
//! timed until all its pods exist and until all are bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::Client;
use serde_json::json;

/// What to measure.
#[derive(Clone, Debug)]
pub struct ScheduleParams {
    pub nodes: usize,
    pub pods: usize,
    /// Requests in flight while registering nodes and creating pods.
    pub concurrency: usize,
    /// The scheduler's bindings in flight.
    pub bind_concurrency: usize,
    /// Give up after this long per phase.
    pub timeout: Duration,
}

/// Scheduling throughput figures.
#[derive(Clone, Debug, Default)]
pub struct ScheduleReport {
    pub nodes: usize,
    pub pods: usize,
    pub register_s: f64,
    pub create_s: f64,
    /// Scheduler start → first binding seen (its caches filling).
    pub sync_s: f64,
    /// First → last binding seen.
    pub bind_s: f64,
    /// Scheduler start → every pod bound.
    pub total_s: f64,
    /// Pods per node after the run: min and max.
    pub spread: (usize, usize),
}

impl ScheduleReport {
    /// Pods bound per second between the first and the last binding.
    pub fn rate(&self) -> f64 {
        self.pods as f64 / self.bind_s.max(1e-9)
    }

    /// A markdown table.
    pub fn table(&self) -> String {
        format!(
            "| nodes | pods | register nodes | create pods | scheduler sync | binding | total | pods/s (first→last bind) | pods/s (total) | pods per node |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n\
             | {} | {} | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:.1} s | **{:.0}** | {:.0} | {}–{} |\n",
            self.nodes,
            self.pods,
            self.register_s,
            self.create_s,
            self.sync_s,
            self.bind_s,
            self.total_s,
            self.rate(),
            self.pods as f64 / self.total_s.max(1e-9),
            self.spread.0,
            self.spread.1,
        )
    }
}

/// Node `i` of the simulation: 16 cpu, 64 GiB, 110 pods, Ready.
fn node(i: usize) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": format!("sim-{i:05}"), "labels": {
            "kubernetes.io/hostname": format!("sim-{i:05}"), "skiff.dev/simulated": "true"}},
    }))
    .expect("valid Node")
}

fn node_status() -> serde_json::Value {
    let res = json!({"cpu": "16", "memory": "64Gi", "pods": "110"});
    json!({"status": {
        "capacity": res, "allocatable": res,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "simulated node", "lastHeartbeatTime": now(),
                        "lastTransitionTime": now()}],
    }})
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Registers `n` simulated nodes (create, then status).
pub async fn register_nodes(client: &Client, n: usize, concurrency: usize) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    stream::iter(0..n)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = format!("sim-{i:05}");
                match nodes.create(&PostParams::default(), &node(i)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e).context(format!("creating node {name}")),
                }
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(node_status()))
                    .await
                    .with_context(|| format!("node {name} status"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Pending pod `i`: requests vary (100m/250m/500m cpu, 64–512 MiB) so fit matters.
fn pod(i: usize) -> Pod {
    let cpu = ["100m", "250m", "500m"][i % 3];
    let mem = ["64Mi", "128Mi", "256Mi", "512Mi"][i % 4];
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p-{i:06}"), "labels": {"app": "sched-bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": mem}}}]},
    }))
    .expect("valid Pod")
}

async fn create_namespace(client: &Client, ns: &str) -> Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    nss.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating namespace {ns}"))?;
    Ok(())
}

/// Feeds every pod ADDED or MODIFIED in `pods` from `rv` on to `on_pod` until it returns
/// true (done), re-opening the watch when the server ends it; fails at `deadline` with
/// `what_left()` saying how far it got.
pub async fn watch_pods_until(
    pods: &Api<Pod>,
    mut rv: String,
    deadline: Instant,
    mut on_pod: impl FnMut(Pod) -> bool,
    what_left: impl Fn() -> String,
) -> Result<()> {
    loop {
        if Instant::now() > deadline {
            bail!("{}", what_left());
        }
        let wp = WatchParams::default().timeout(60);
        let mut events = pods.watch(&wp, &rv).await?.boxed();
        while let Some(ev) = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .ok()
            .flatten()
        {
            let p = match ev? {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
                WatchEvent::Bookmark(b) => {
                    rv = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Deleted(_) => continue,
                WatchEvent::Error(e) => bail!("watch error: {e:?}"),
            };
            if let Some(v) = p.metadata.resource_version.clone() {
                rv = v;
            }
            if on_pod(p) {
                return Ok(());
            }
        }
    }
}

/// The revision a watch of `pods` starts after: that of a one-item list.
pub async fn list_revision(pods: &Api<Pod>) -> Result<String> {
    Ok(pods
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default())
}

fn is_bound(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
}

/// Watches pods from `rv` until `want` of them are bound; returns when each binding was
/// seen, as offsets from `since`.
async fn watch_bindings(
    pods: &Api<Pod>,
    rv: String,
    want: usize,
    since: Instant,
    timeout: Duration,
) -> Result<Vec<Duration>> {
    let seen = std::cell::RefCell::new(HashMap::<String, Duration>::new());
    watch_pods_until(
        pods,
        rv,
        since + timeout,
        |p| {
            let mut seen = seen.borrow_mut();
            if is_bound(&p) {
                let name = p.metadata.name.unwrap_or_default();
                seen.entry(name).or_insert_with(|| since.elapsed());
            }
            seen.len() >= want
        },
        || {
            format!(
                "only {} of {want} pods bound after {timeout:?}",
                seen.borrow().len()
            )
        },
    )
    .await?;
    let mut at: Vec<Duration> = seen.into_inner().into_values().collect();
    at.sort();
    Ok(at)
}

/// Sums bound pods' requests per node and checks none exceeds its allocatable.
async fn check_fit(client: &Client, ns: &str) -> Result<(usize, usize)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let nodes: Api<Node> = Api::all(client.clone());
    let mut per_node: HashMap<String, (usize, u64, u64)> = HashMap::new();
    for p in pods.list(&ListParams::default()).await?.items {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let req = p.spec.as_ref().and_then(|s| {
            s.containers[0]
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone())
        });
        let req = req.unwrap_or_default();
        let cpu = req.get("cpu").map_or(0, |q| parse_milli(&q.0));
        let mem = req.get("memory").map_or(0, |q| parse_mib(&q.0));
        let e = per_node.entry(node).or_default();
        e.0 += 1;
        e.1 += cpu;
        e.2 += mem;
    }
    let sim = nodes
        .list(&ListParams::default().labels("skiff.dev/simulated=true"))
        .await?
        .items
        .len();
    for (node, (n, cpu, mem)) in &per_node {
        ensure!(
            *n <= 110 && *cpu <= 16_000 && *mem <= 64 * 1024,
            "node {node} overcommitted: {n} pods, {cpu}m cpu, {mem} MiB"
        );
    }
    let counts: Vec<usize> = per_node.values().map(|v| v.0).collect();
    let min = if per_node.len() < sim {
        0
    } else {
        counts.iter().copied().min().unwrap_or(0)
    };
    Ok((min, counts.iter().copied().max().unwrap_or(0)))
}

fn parse_milli(q: &str) -> u64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(u64::MAX),
        None => q.parse::<u64>().map_or(u64::MAX, |c| c * 1000),
    }
}

fn parse_mib(q: &str) -> u64 {
    match q.strip_suffix("Mi") {
        Some(m) => m.parse().unwrap_or(u64::MAX),
        None => q
            .strip_suffix("Gi")
            .and_then(|g| g.parse::<u64>().ok())
            .map_or(u64::MAX, |g| g * 1024),
    }
}

/// The throughput phase against a server without scheduler or controllers.
pub async fn run_throughput(client: &Client, p: &ScheduleParams) -> Result<ScheduleReport> {
    let ns = format!("sched-{:05x}", rand::random::<u32>() & 0xf_ffff);
    let start = Instant::now();
    register_nodes(client, p.nodes, p.concurrency).await?;
    let register_s = start.elapsed().as_secs_f64();
    eprintln!(
        "[schedule] {} nodes registered in {register_s:.1} s",
        p.nodes
    );
    create_namespace(client, &ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    stream::iter(0..p.pods)
        .map(|i| {
            let pods = pods.clone();
            async move {
                pods.create(&PostParams::default(), &pod(i))
                    .await
                    .with_context(|| format!("creating pod {i}"))
            }
        })
        .buffer_unordered(p.concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let create_s = start.elapsed().as_secs_f64();
    eprintln!("[schedule] {} pods created in {create_s:.1} s", p.pods);
    let rv = list_revision(&pods).await?;

    let sched_client = client.clone();
    let opts = skiff_controllers::scheduler::Options {
        bind_concurrency: p.bind_concurrency,
        ..Default::default()
    };
    let ctx = skiff_controllers::Context {
        events: skiff_controllers::events::Recorder::new(
            sched_client.clone(),
            "default-scheduler",
            "skiff-bench",
        ),
        client: sched_client,
        settings: Arc::new(skiff_controllers::Settings::default()),
    };
    let started = Instant::now();
    let scheduler = tokio::spawn(skiff_controllers::scheduler::run_with(ctx, opts));
    let bound = watch_bindings(&pods, rv, p.pods, started, p.timeout).await;
    scheduler.abort();
    let bound = bound?;
    let first = bound.first().copied().unwrap_or_default();
    let last = bound.last().copied().unwrap_or_default();
    let spread = check_fit(client, &ns).await?;
    Ok(ScheduleReport {
        nodes: p.nodes,
        pods: p.pods,
        register_s,
        create_s,
        sync_s: first.as_secs_f64(),
        bind_s: (last - first).as_secs_f64(),
        total_s: last.as_secs_f64(),
        spread,
    })
}

/// Deployment reaction figures.
#[derive(Clone, Debug, Default)]
pub struct DeploymentReport {
    pub nodes: usize,
    pub replicas: usize,
    /// Create → every pod exists.
    pub created_s: f64,
    /// Create → every pod bound.
    pub bound_s: f64,
}

impl DeploymentReport {
    /// A markdown table.
    pub fn table(&self) -> String {
        format!(
            "| nodes | replicas | all pods created | all pods bound |\n|---:|---:|---:|---:|\n| {} | {} | {:.1} s | **{:.1} s** |\n",
            self.nodes, self.replicas, self.created_s, self.bound_s
        )
    }
}

/// The Deployment phase against a server running scheduler and controller manager.
pub async fn run_deployment(
    client: &Client,
    nodes: usize,
    replicas: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<DeploymentReport> {
    register_nodes(client, nodes, concurrency).await?;
    let ns = format!("deploy-{:05x}", rand::random::<u32>() & 0xf_ffff);
    create_namespace(client, &ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let rv = list_revision(&pods).await?;
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "big"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "big"}},
                 "template": {"metadata": {"labels": {"app": "big"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox",
                                  "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}},
    }))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    deployments.create(&PostParams::default(), &deploy).await?;
    // Creations and bindings both show on the pod watch: a pod is "created" on its ADDED
    // event and "bound" once it carries a nodeName.
    let progress = std::cell::RefCell::new((
        HashMap::<String, Duration>::new(),
        HashMap::<String, Duration>::new(),
    ));
    watch_pods_until(
        &pods,
        rv,
        start + timeout,
        |p| {
            let (created, bound) = &mut *progress.borrow_mut();
            let name = p.metadata.name.clone().unwrap_or_default();
            created
                .entry(name.clone())
                .or_insert_with(|| start.elapsed());
            if is_bound(&p) {
                bound.entry(name).or_insert_with(|| start.elapsed());
            }
            bound.len() >= replicas
        },
        || {
            let (created, bound) = &*progress.borrow();
            format!(
                "after {timeout:?}: {} of {replicas} pods created, {} bound",
                created.len(),
                bound.len()
            )
        },
    )
    .await?;
    let (created, bound) = progress.into_inner();
    let max =
        |m: &HashMap<String, Duration>| m.values().max().copied().unwrap_or_default().as_secs_f64();
    let report = DeploymentReport {
        nodes,
        replicas,
        created_s: max(&created),
        bound_s: max(&bound),
    };
    ensure!(
        created.len() == replicas,
        "{} pods exist for {replicas} replicas",
        created.len()
    );
    Ok(report)
}
