//! The scheduler and the controller manager of a real `skiff server`, driven with kubectl
//! and kube-rs, on simulated nodes (tests/src/simnode.rs: registered Nodes with
//! heartbeats and a stand-in kubelet that reports bound pods Running and Ready).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::json;
use skiff_tests::server::Server;
use skiff_tests::simnode::{SimNode, SimNodes};

/// Polls `f` every 200 ms until it returns `Ok(Some(v))`; fails after `timeout` with the
/// last thing it said.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what} {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pods of `ns` matching `selector` that are not being deleted, by node.
async fn live_pods(client: &Client, ns: &str, selector: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Waits until exactly `n` live pods match, all bound and Running; returns them.
async fn wait_running(client: &Client, ns: &str, selector: &str, n: usize) -> Result<Vec<Pod>> {
    eventually(
        &format!("{n} running pods {selector}"),
        Duration::from_secs(60),
        || async {
            let pods = live_pods(client, ns, selector).await?;
            let ok = pods.len() == n && pods.iter().all(|p| node_of(p).is_some() && running(p));
            if !ok {
                bail!(
                    "({} live, {} running)",
                    pods.len(),
                    pods.iter().filter(|p| running(p)).count()
                );
            }
            Ok(Some(pods))
        },
    )
    .await
}

fn per_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods {
        *m.entry(node_of(p).unwrap_or_default()).or_default() += 1;
    }
    m
}

async fn three_nodes(client: &Client, first: SimNode) -> Result<SimNodes> {
    SimNodes::start(
        client.clone(),
        vec![first, SimNode::new("node-b"), SimNode::new("node-c")],
    )
    .await
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 10
  selector:
    matchLabels: {app: web}
  strategy:
    rollingUpdate: {maxSurge: 3, maxUnavailable: 2}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: busybox:1
        resources:
          requests: {cpu: 100m, memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080, protocol: TCP}
"#;

#[tokio::test]
async fn scheduler_respects_taints_and_selectors_and_says_why_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let client = server.kube_client().await?;
    let kubectl = server.kubectl();
    let mut tainted = SimNode::new("node-a");
    tainted.taints = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    let _nodes = SimNodes::start(
        client.clone(),
        vec![
            tainted,
            {
                let mut b = SimNode::new("node-b");
                b.labels.insert("disk".into(), "ssd".into());
                b
            },
            SimNode::new("node-c"),
        ],
    )
    .await?;

    // Every node gets its own podCIDR from the cluster CIDR.
    let cidrs = eventually(
        "podCIDRs on every node",
        Duration::from_secs(30),
        || async {
            let nodes: Api<Node> = Api::all(client.clone());
            let cidrs: Vec<String> = nodes
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter_map(|n| n.spec.and_then(|s| s.pod_cidr))
                .collect();
            Ok((cidrs.len() == 3).then_some(cidrs))
        },
    )
    .await?;
    let mut unique = cidrs.clone();
    unique.sort();
    unique.dedup();
    ensure!(unique.len() == 3, "podCIDRs not distinct: {cidrs:?}");
    ensure!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.244.") && c.ends_with("/24")),
        "{cidrs:?}"
    );

    let pod = |name: &str, extra: serde_json::Value| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"t": "sched"}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "100m"}}}]}});
        if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        p.to_string()
    };
    let mut manifests = vec![
        pod("ssd", json!({"nodeSelector": {"disk": "ssd"}})),
        pod(
            "gpu",
            json!({"nodeSelector": {"kubernetes.io/hostname": "node-a"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
        ),
        pod(
            "huge",
            json!({"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "64"}}}]}),
        ),
    ];
    for i in 0..6 {
        manifests.push(pod(&format!("plain-{i}"), json!({})));
    }
    for m in &manifests {
        kubectl.run_stdin(&["apply", "-f", "-"], Some(m)).await?;
    }
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let bound = eventually("8 pods bound", Duration::from_secs(30), || async {
        let all = live_pods(&client, "default", "t=sched").await?;
        let bound: HashMap<String, String> = all
            .iter()
            .filter_map(|p| Some((p.metadata.name.clone()?, node_of(p)?)))
            .collect();
        Ok((bound.len() == 8).then_some(bound))
    })
    .await?;
    ensure!(bound["ssd"] == "node-b", "{bound:?}");
    ensure!(bound["gpu"] == "node-a", "{bound:?}");
    for i in 0..6 {
        ensure!(
            bound[&format!("plain-{i}")] != "node-a",
            "untolerated taint ignored: {bound:?}"
        );
    }

    // The pod that fits nowhere stays Pending and says why, as kube-scheduler words it.
    let why = eventually(
        "PodScheduled=False on huge",
        Duration::from_secs(30),
        || async {
            let p = pods.get("huge").await?;
            let cond = p
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            Ok(cond.map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default())))
        },
    )
    .await?;
    ensure!(why.0 == "Unschedulable", "{why:?}");
    ensure!(
        why.1.starts_with("0/3 nodes are available:")
            && why.1.contains("2 Insufficient cpu")
            && why.1.contains("1 node(s) had untolerated taint"),
        "{}",
        why.1
    );
    ensure!(node_of(&pods.get("huge").await?).is_none());
    let described = eventually(
        "FailedScheduling in describe",
        Duration::from_secs(30),
        || async {
            let out = kubectl.ok(&["describe", "pod", "huge"]).await?;
            Ok(out.contains("FailedScheduling").then_some(out))
        },
    )
    .await?;
    ensure!(described.contains("Insufficient cpu"), "{described}");
    let scheduled = kubectl.ok(&["describe", "pod", "ssd"]).await?;
    ensure!(
        scheduled.contains("Successfully assigned default/ssd to node-b"),
        "{scheduled}"
    );
    Ok(())
}

#[tokio::test]
async fn deployment_spreads_scales_rolls_out_undoes_and_is_collected() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let client = server.kube_client().await?;
    let kubectl = server.kubectl();
    let _nodes = three_nodes(&client, SimNode::new("node-a")).await?;
    kubectl.run_stdin(&["apply", "-f", "-"], Some(WEB)).await?;

    let pods = wait_running(&client, "default", "app=web", 10).await?;
    let spread = per_node(&pods);
    ensure!(
        spread.len() == 3 && spread.values().all(|&n| (3..=4).contains(&n)),
        "10 replicas over 3 nodes: {spread:?}"
    );
    kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await?;

    // The Service's endpoints follow the ready pods.
    let ips = eventually("10 endpoints", Duration::from_secs(30), || async {
        let eps: Api<Endpoints> = Api::default_namespaced(client.clone());
        let ep = eps.get_opt("web").await?;
        let addrs: Vec<String> = ep
            .and_then(|e| e.subsets)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|s| s.addresses.unwrap_or_default())
            .map(|a| a.ip)
            .collect();
        Ok((addrs.len() == 10).then_some(addrs))
    })
    .await?;
    let pod_ips: Vec<String> = live_pods(&client, "default", "app=web")
        .await?
        .into_iter()
        .filter_map(|p| p.status.and_then(|s| s.pod_ip))
        .collect();
    for ip in &ips {
        ensure!(pod_ips.contains(ip), "endpoint {ip} is no pod's IP");
    }
    let slices: Api<EndpointSlice> = Api::default_namespaced(client.clone());
    eventually(
        "an EndpointSlice with 10 ready endpoints",
        Duration::from_secs(30),
        || async {
            let ready: usize = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                .await?
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count();
            Ok((ready == 10).then_some(()))
        },
    )
    .await?;

    kubectl
        .ok(&["scale", "deployment/web", "--replicas=15"])
        .await?;
    wait_running(&client, "default", "app=web", 15).await?;
    kubectl
        .ok(&["scale", "deployment/web", "--replicas=5"])
        .await?;
    wait_running(&client, "default", "app=web", 5).await?;

    kubectl
        .ok(&["set", "image", "deployment/web", "c=busybox:2"])
        .await?;
    kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await?;
    let pods = wait_running(&client, "default", "app=web", 5).await?;
    for p in &pods {
        let image = p.spec.as_ref().map(|s| s.containers[0].image.clone());
        ensure!(image == Some(Some("busybox:2".into())), "{image:?}");
    }
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    ensure!(rss.list(&ListParams::default()).await?.items.len() == 2);
    let history = kubectl
        .ok(&["rollout", "history", "deployment/web"])
        .await?;
    ensure!(history.contains('1') && history.contains('2'), "{history}");

    kubectl.ok(&["rollout", "undo", "deployment/web"]).await?;
    kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await?;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let d = deployments.get("web").await?;
    let image = d
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].image.clone());
    ensure!(
        image == Some(Some("busybox:1".into())),
        "undo restored {image:?}"
    );
    eventually(
        "pods back on busybox:1",
        Duration::from_secs(60),
        || async {
            let pods = live_pods(&client, "default", "app=web").await?;
            Ok((pods.len() == 5
                && pods.iter().all(|p| {
                    running(p)
                        && p.spec
                            .as_ref()
                            .and_then(|s| s.containers[0].image.as_deref())
                            == Some("busybox:1")
                }))
            .then_some(()))
        },
    )
    .await?;
    let described = kubectl.ok(&["describe", "deployment", "web"]).await?;
    ensure!(described.contains("ScalingReplicaSet"), "{described}");

    // Deleting the Deployment removes its ReplicaSets and their pods.
    kubectl.ok(&["delete", "deployment", "web"]).await?;
    eventually(
        "ReplicaSets and pods gone",
        Duration::from_secs(60),
        || async {
            let left_rs = rss.list(&ListParams::default()).await?.items.len();
            let pods: Api<Pod> = Api::default_namespaced(client.clone());
            let left_pods = pods
                .list(&ListParams::default().labels("app=web"))
                .await?
                .items
                .len();
            Ok((left_rs == 0 && left_pods == 0).then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn pods_of_a_silent_node_are_replaced_elsewhere() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &["--node-monitor-grace-period=4s".to_string()]).await?;
    let client = server.kube_client().await?;
    let kubectl = server.kubectl();
    let nodes = three_nodes(&client, SimNode::new("node-a")).await?;
    // Tolerate unreachable for 2 s instead of the default 300 s, to keep the test short.
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: hb}
spec:
  replicas: 6
  selector: {matchLabels: {app: hb}}
  template:
    metadata: {labels: {app: hb}}
    spec:
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - {name: c, image: busybox}
"#;
    kubectl
        .run_stdin(&["apply", "-f", "-"], Some(manifest))
        .await?;
    let before = wait_running(&client, "default", "app=hb", 6).await?;
    ensure!(
        per_node(&before).contains_key("node-a"),
        "{:?}",
        per_node(&before)
    );

    nodes.silence("node-a");
    let nodes_api: Api<Node> = Api::all(client.clone());
    eventually(
        "node-a Ready=Unknown and tainted",
        Duration::from_secs(30),
        || async {
            let n = nodes_api.get("node-a").await?;
            let unknown = n
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "Unknown");
            let tainted = n
                .spec
                .and_then(|s| s.taints)
                .unwrap_or_default()
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute");
            Ok((unknown && tainted).then_some(()))
        },
    )
    .await?;
    let after = eventually(
        "6 running pods off node-a",
        Duration::from_secs(60),
        || async {
            let pods = live_pods(&client, "default", "app=hb").await?;
            let ok = pods.len() == 6
                && pods
                    .iter()
                    .all(|p| running(p) && node_of(p).is_some_and(|n| n != "node-a"));
            Ok(ok.then_some(pods))
        },
    )
    .await?;
    ensure!(!per_node(&after).contains_key("node-a"));
    Ok(())
}
