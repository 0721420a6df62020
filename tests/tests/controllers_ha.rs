//! Three `skiff server`s: one scheduler and one controller manager act at a time; killing
//! (kill -9) the server that runs the active one hands the role to another within about
//! a lease duration (15 s), while writes go on, and the cluster keeps reconciling.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use skiff_tests::server::{start_cluster, Server};
use skiff_tests::simnode::{SimNode, SimNodes};

const LEASES: [&str; 2] = ["skiff-controller-manager", "skiff-scheduler"];

async fn holder(client: &Client, lease: &str) -> Result<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    Ok(leases
        .get(lease)
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default())
}

/// Which server's process holds `identity` (it logs it when it becomes leader).
fn server_of(servers: &[Server], identity: &str) -> Result<usize> {
    servers
        .iter()
        .position(|s| s.log().contains(identity))
        .with_context(|| format!("no server logged identity {identity}"))
}

/// Waits until both leases are held; returns their holders.
async fn leaders(client: &Client) -> Result<[String; 2]> {
    let start = Instant::now();
    loop {
        let cm = holder(client, LEASES[0]).await.unwrap_or_default();
        let sched = holder(client, LEASES[1]).await.unwrap_or_default();
        if !cm.is_empty() && !sched.is_empty() {
            return Ok([cm, sched]);
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("leases not held after 60 s: {cm:?} {sched:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: c, image: busybox}}]\n"
    )
}

async fn wait_running(client: &Client, app: &str, n: usize, timeout: Duration) -> Result<()> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let start = Instant::now();
    loop {
        let list = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await;
        if let Ok(list) = list {
            let running = list
                .items
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .count();
            if running == n && list.items.len() == n {
                return Ok(());
            }
        }
        if start.elapsed() > timeout {
            bail!("{app}: {n} pods not running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kills the server running the active `role` (index into LEASES) and checks another
/// takes over and acts: a new Deployment's pods are created, bound and running.
async fn fail_over(
    servers: &mut [Server],
    role: usize,
    round: usize,
    nodes: &mut Option<SimNodes>,
) -> Result<Duration> {
    let probe = servers
        .iter()
        .position(|s| s.pid().is_some())
        .context("a live server")?;
    let client = servers[probe].kube_client().await?;
    let before = leaders(&client).await?;
    let victim = server_of(servers, &before[role])?;
    // Load through the other servers while the leader's server dies.
    let others: Vec<usize> = (0..servers.len())
        .filter(|&i| i != victim && servers[i].pid().is_some())
        .collect();
    // The simulated nodes talk through a server that survives.
    drop(nodes.take());
    *nodes = Some(sim_nodes(servers[others[0]].kube_client().await?).await?);
    let mut clients = Vec::new();
    for &i in &others {
        clients.push(servers[i].kube_client().await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, acked, clients) = (stop.clone(), acked.clone(), clients.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let api: Api<ConfigMap> =
                    Api::default_namespaced(clients[i % clients.len()].clone());
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("load-{round}-{i}")}}))
                .expect("valid ConfigMap");
                if api.create(&PostParams::default(), &cm).await.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    servers[victim].kill()?;
    let killed = Instant::now();
    let survivor = clients[0].clone();
    let took_over = loop {
        if let Ok(h) = holder(&survivor, LEASES[role]).await {
            if h != before[role] && !h.is_empty() {
                break killed.elapsed();
            }
        }
        ensure!(
            killed.elapsed() < Duration::from_secs(40),
            "{} not taken over 40 s after its server was killed",
            LEASES[role]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The new leaders act: a fresh Deployment becomes running pods.
    let name = format!("after-{round}");
    servers[others[0]]
        .kubectl()
        .run_stdin(&["apply", "-f", "-"], Some(&deployment(&name, 4)))
        .await?;
    wait_running(&survivor, &name, 4, Duration::from_secs(60)).await?;
    stop.store(true, Ordering::Relaxed);
    load.await?;
    ensure!(
        acked.load(Ordering::Relaxed) > 50,
        "the load made no progress"
    );
    Ok(took_over)
}

async fn sim_nodes(client: Client) -> Result<SimNodes> {
    SimNodes::start(client, vec![SimNode::new("node-a"), SimNode::new("node-b")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_and_controller_manager_fail_over_under_load() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut servers = start_cluster(dir.path(), 3, &[]).await?;
    let client = servers[0].kube_client().await?;
    leaders(&client).await?;
    let mut nodes = Some(sim_nodes(client.clone()).await?);
    servers[0]
        .kubectl()
        .run_stdin(&["apply", "-f", "-"], Some(&deployment("before", 3)))
        .await?;
    wait_running(&client, "before", 3, Duration::from_secs(60)).await?;

    // The controller manager's server dies first (and with it the scheduler, if it ran
    // there); then, after that server is back, the scheduler's.
    let cm_takeover = fail_over(&mut servers, 0, 1, &mut nodes).await?;
    for s in servers.iter_mut().filter(|s| s.pid().is_none()) {
        s.spawn()?;
        s.wait_ready(Duration::from_secs(90)).await?;
    }
    let sched_takeover = fail_over(&mut servers, 1, 2, &mut nodes).await?;
    for t in [cm_takeover, sched_takeover] {
        // A lease of 15 s, observed from the last renewal (every 2 s), plus a retry.
        ensure!(t <= Duration::from_secs(25), "takeover took {t:?}");
    }
    eprintln!("takeover: controller manager {cm_takeover:?}, scheduler {sched_takeover:?}");
    Ok(())
}
