//! A cluster of several machines on one: three `skiff server`s (one replicated store,
//! API servers, leader-elected scheduler and controllers) and two `skiff agent` workers,
//! each in a network namespace of its own with its own address. Pods on different
//! workers reach each other over the routes the agents set up between their podCIDRs,
//! a Service spreads over both workers; when the control-plane server the workers were
//! talking to dies they carry on with the others, and when a worker dies its
//! Deployment's pods are recreated on the other. Needs root, runc, the CNI plugins and
//! busybox-static.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;
use skiff_tests::multinode::{tail, MultiNode};
use skiff_tests::node::{
    answers_from_pod, cannot_run, node_ready, phase, ready, wait_running, BUSYBOX,
};

/// Name → (node, pod IP) of the live (not terminating), Running and Ready pods of `app`.
async fn live_pods(pods: &Api<Pod>, app: &str) -> Result<BTreeMap<String, (String, String)>> {
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && phase(p) == "Running" && ready(p))
        .filter_map(|p| {
            let node = p.spec.as_ref()?.node_name.clone()?;
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some((p.metadata.name.clone()?, (node, ip)))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_talk_across_nodes_and_a_dead_nodes_pods_are_recreated_elsewhere() -> Result<()> {
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED: {why}; real pods need root, runc, CNI plugins and busybox-static");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    // A dead node is noticed after 6 s without heartbeats (instead of 50 s); agents
    // renew their Leases every 2 s (a quarter of 8 s) to stay well within that.
    let mut mn = MultiNode::start(
        dir.path(),
        3,
        2,
        &["--node-monitor-grace-period=6s".into()],
        &["--node-lease-duration-seconds=8".into()],
    )
    .await?;
    let client = mn.client(0).await?;
    let kubectl = mn.servers[0].kubectl();

    // Each worker has a podCIDR of its own.
    let nodes: Api<Node> = Api::all(client.clone());
    let mut cidrs = BTreeSet::new();
    for w in &mn.workers {
        let n = nodes.get(&w.node).await?;
        cidrs.insert(n.spec.and_then(|s| s.pod_cidr).unwrap_or_default());
    }
    ensure!(cidrs.len() == 2, "distinct podCIDRs: {cidrs:?}");

    // Four web replicas that tolerate an unreachable node for only 2 s, their Service,
    // and a client pod on w2.
    let toleration = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2});
    let manifest = json!([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
          "template": {"metadata": {"labels": {"app": "web"}},
           "spec": {
             "tolerations": [toleration("node.kubernetes.io/unreachable"),
                             toleration("node.kubernetes.io/not-ready")],
             "containers": [{"name": "httpd", "image": BUSYBOX, "command": ["sh", "-c",
               "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
               "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
         "spec": {"nodeSelector": {"kubernetes.io/hostname": "w2"},
                  "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}},
    ]);
    for doc in manifest.as_array().expect("a list") {
        let r = kubectl
            .run_stdin(&["apply", "-f", "-"], Some(&doc.to_string()))
            .await?;
        ensure!(r.success(), "kubectl apply: {r:?}");
    }
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let t = Instant::now();
    while live_pods(&pods, "web").await.map_or(true, |w| w.len() < 4) {
        if t.elapsed() > Duration::from_secs(90) {
            bail!(
                "web's 4 replicas not Ready in 90 s:\n{}\n{}\nw1 log:\n{}\nw2 log:\n{}",
                kubectl
                    .ok(&["get", "pods", "-o", "wide"])
                    .await
                    .unwrap_or_default(),
                kubectl
                    .ok(&["describe", "pods", "-l", "app=web"])
                    .await
                    .unwrap_or_default(),
                tail(&mn.workers[0].log(), 30),
                tail(&mn.workers[1].log(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_running(&client, "default", "client", Duration::from_secs(60)).await?;
    let web = live_pods(&pods, "web").await?;
    let on = |node: &str| web.values().filter(|(n, _)| n == node).count();
    ensure!(
        web.len() == 4 && on("w1") > 0 && on("w2") > 0,
        "the replicas spread over both workers: {web:?}"
    );

    // Pod to pod, from w2 to every replica, the ones on w1 across the node boundary.
    for (name, (node, ip)) in &web {
        let out = kubectl
            .ok(&[
                "exec",
                "client",
                "--",
                "timeout",
                "3",
                "wget",
                "-q",
                "-O-",
                &format!("http://{ip}:8080/"),
            ])
            .await?;
        ensure!(
            out.trim() == name,
            "{name} on {node} at {ip} answered the client on w2: {out:?}"
        );
    }

    // Through the Service's ClusterIP: every replica, on both workers, answers.
    let cluster_ip = kubectl
        .ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .await?;
    let backends: BTreeSet<String> = web.keys().cloned().collect();
    let seen = answers_from_pod(
        &kubectl,
        "client",
        &format!("http://{cluster_ip}/"),
        &backends,
    )
    .await;
    ensure!(
        seen == backends,
        "through the Service: {seen:?} of {backends:?}"
    );

    // The first server — the one every agent talks to first — dies. The agents move on
    // to the next: both nodes stay Ready through three grace periods, and a new pod is
    // scheduled (by whichever server leads now) and started.
    mn.servers[0].kill()?;
    let client = mn.client(1).await?;
    let kubectl = mn.servers[1].kubectl();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(18) {
        for w in &mn.workers {
            if let Ok(n) = nodes.get(&w.node).await {
                ensure!(
                    node_ready(&n),
                    "{} stays Ready after server 1 died ({:.1} s): {:?}\nagent log:\n{}",
                    w.node,
                    t.elapsed().as_secs_f64(),
                    n.status.and_then(|s| s.conditions),
                    tail(&w.log(), 20)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = kubectl
        .run_stdin(
            &["apply", "-f", "-"],
            Some(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after"},
                "spec": {"containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}})
                .to_string()),
        )
        .await?;
    ensure!(r.success(), "kubectl apply: {r:?}");
    wait_running(&client, "default", "after", Duration::from_secs(60)).await?;

    // w1 dies: its node goes NotReady, its pods are evicted and recreated on w2.
    let dead: BTreeSet<String> = web
        .iter()
        .filter(|(_, (n, _))| n == "w1")
        .map(|(name, _)| name.clone())
        .collect();
    mn.workers[0].power_off()?;
    let t = Instant::now();
    let mut last = BTreeMap::new();
    loop {
        if let Ok(now) = live_pods(&pods, "web").await {
            if now.len() == 4 && now.values().all(|(n, _)| n == "w2") {
                ensure!(
                    now.keys().all(|name| !dead.contains(name)),
                    "the replicas on w1 were replaced: {now:?}"
                );
                break;
            }
            last = now;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!(
                "w1's replicas not recreated on w2 in 120 s: {last:?}\n{}",
                kubectl
                    .ok(&["get", "pods", "-o", "wide"])
                    .await
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let w1 = nodes.get("w1").await?;
    ensure!(!node_ready(&w1), "w1 is not Ready: {:?}", w1.status);
    eprintln!(
        "w1's pods running on w2 {:.1} s after it died",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
