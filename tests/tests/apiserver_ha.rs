//! Three `skiff server`s (each an API server on its own store member) serve one cluster:
//! any of them takes any request and sees what the others wrote; killing one (its API
//! server and its store member) mid-run loses no acknowledged write.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use parking_lot::Mutex;
use skiff_tests::server::Server;

async fn client(s: &Server) -> Result<Client> {
    s.kube_client().await
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"ha": "yes"}}, "data": {"k": "v"},
    }))
    .expect("valid ConfigMap")
}

async fn start_cluster(dir: &std::path::Path) -> Result<Vec<Server>> {
    skiff_tests::server::start_cluster(dir, 3, &[]).await
}

/// Creates configmaps through the servers in `through` round-robin until `stop`; records
/// the names the API acknowledged.
fn writer(
    clients: Vec<Client>,
    prefix: &'static str,
    acked: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let name = format!("{prefix}-{i}");
            let api: Api<ConfigMap> =
                Api::namespaced(clients[i % clients.len()].clone(), "default");
            match api.create(&PostParams::default(), &cm(&name)).await {
                Ok(_) => {
                    acked.lock().insert(name);
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            i += 1;
        }
    })
}

async fn names_via(s: &Server) -> Result<BTreeSet<String>> {
    let api: Api<ConfigMap> = Api::namespaced(client(s).await?, "default");
    let list = api.list(&ListParams::default().labels("ha=yes")).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_serve_one_cluster_and_survive_a_kill() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut servers = start_cluster(dir.path()).await?;

    // Written through one server, read through another, immediately.
    let a: Api<ConfigMap> = Api::namespaced(client(&servers[0]).await?, "default");
    let b: Api<ConfigMap> = Api::namespaced(client(&servers[1]).await?, "default");
    a.create(&PostParams::default(), &cm("first")).await?;
    let got = b.get("first").await?;
    ensure!(got.metadata.name.as_deref() == Some("first"));
    let dup = b.create(&PostParams::default(), &cm("first")).await;
    ensure!(
        matches!(dup, Err(kube::Error::Api(ref e)) if e.code == 409),
        "{dup:?}"
    );

    // Load through servers 0 and 1; kill -9 server 2 mid-run, bring it back; then kill
    // server 1 and keep writing through 0 and 2.
    let acked = Arc::new(Mutex::new(BTreeSet::from(["first".to_string()])));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let w = writer(
        vec![client(&servers[0]).await?, client(&servers[1]).await?],
        "p1",
        acked.clone(),
        stop.clone(),
        errors.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    servers[2].kill()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    servers[2].spawn()?;
    servers[2].wait_ready(Duration::from_secs(90)).await?;
    stop.store(true, Ordering::Relaxed);
    w.await?;
    let after_first = acked.lock().len();
    ensure!(
        after_first > 20,
        "only {after_first} writes acknowledged in phase 1"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(
        vec![client(&servers[0]).await?, client(&servers[2]).await?],
        "p2",
        acked.clone(),
        stop.clone(),
        errors.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    servers[1].kill()?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    w.await?;
    ensure!(
        acked.lock().len() > after_first + 10,
        "writes stalled after server 1 died"
    );

    // Every acknowledged write is there, seen through both live servers.
    let want = acked.lock().clone();
    for i in [0, 2] {
        let have = names_via(&servers[i])
            .await
            .with_context(|| format!("listing via server {i}"))?;
        let lost: Vec<&String> = want.difference(&have).collect();
        if !lost.is_empty() {
            // Tell a stale list (watch cache) from a lost write (store).
            let api: Api<ConfigMap> = Api::namespaced(client(&servers[i]).await?, "default");
            let mut found = Vec::new();
            for name in &lost {
                let got = api.get_opt(name).await?;
                found.push((
                    name.to_string(),
                    got.and_then(|c| c.metadata.resource_version),
                ));
            }
            anyhow::bail!(
                "server {i}'s list lacks acknowledged writes (name, resourceVersion by GET): {found:?}\n{}",
                servers[i].log_tail(60)
            );
        }
    }
    servers[1].spawn()?;
    servers[1].wait_ready(Duration::from_secs(90)).await?;
    let have = names_via(&servers[1]).await?;
    ensure!(want.is_subset(&have), "restarted server 1 lacks writes");
    eprintln!(
        "acknowledged {} writes, {} failed attempts during kills",
        want.len(),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}
