//! The node agent with real pods: `skiff server` with its local agent running busybox
//! pods under runc, one network namespace per pod through the CNI bridge plugin —
//! driven with kubectl and kube-rs. Needs root, runc, the CNI plugins and
//! busybox-static; without them each test says why and passes without running.
//!
//! The tests share one node (starting one costs seconds) and run one after another.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use skiff_tests::node::{
    answers_from_pod, cannot_run, phase, ready, restarts, AgentServer, BUSYBOX,
};

macro_rules! require_node {
    () => {
        if let Some(why) = cannot_run() {
            eprintln!("SKIPPED: {why}; real pods need root, runc, CNI plugins and busybox-static");
            return Ok(());
        }
    };
}

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }))
    .expect("a pod")
}

async fn create(api: &Api<Pod>, p: &Pod) -> Result<()> {
    api.create(&PostParams::default(), p).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_pods_run_log_restart_probe_and_stop() -> Result<()> {
    require_node!();
    let dir = tempfile::tempdir()?;
    let node = AgentServer::start(dir.path(), 61).await?;
    let client = node.server.kube_client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let kubectl = node.server.kubectl();

    // 1. A pod runs, gets an address from the node's podCIDR, and its log shows.
    let t0 = Instant::now();
    create(
        &pods,
        &pod(
            "hello",
            json!({"containers": [{"name": "main", "image": BUSYBOX,
        "command": ["sh", "-c", "echo hello from $(hostname); sleep 3600"]}]}),
        ),
    )
    .await?;
    let p = node
        .wait_pod(
            "default",
            "hello",
            Duration::from_secs(30),
            "Running",
            |p| phase(p) == "Running" && ready(p),
        )
        .await?;
    println!("hello Running after {:?}", t0.elapsed());
    let ip = p
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    ensure!(
        ip.starts_with("10.61."),
        "the pod's IP {ip} is in the node's podCIDR"
    );
    let mut logs = String::new();
    for _ in 0..50 {
        logs = kubectl.ok(&["logs", "hello"]).await.unwrap_or_default();
        if logs.contains("hello from hello") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        logs.contains("hello from hello"),
        "kubectl logs shows the container's output: {logs:?}"
    );

    // 2. Two containers of one pod share its network: one serves on localhost, the
    //    other fetches from it.
    create(&pods, &pod("pair", json!({"containers": [
        {"name": "server", "image": BUSYBOX, "command": ["sh", "-c",
            "mkdir -p /www && echo shared-localhost > /www/index.html && exec httpd -f -p 8080 -h /www"]},
        {"name": "client", "image": BUSYBOX, "command": ["sh", "-c",
            "while true; do wget -q -O- http://127.0.0.1:8080/ && sleep 1 || sleep 0.2; done"]},
    ]}))).await?;
    node.wait_pod("default", "pair", Duration::from_secs(30), "Running", |p| {
        phase(p) == "Running"
    })
    .await?;
    let mut logs = String::new();
    for _ in 0..100 {
        logs = kubectl
            .ok(&["logs", "pair", "-c", "client"])
            .await
            .unwrap_or_default();
        if logs.contains("shared-localhost") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        logs.contains("shared-localhost"),
        "the client container reached the server over localhost: {logs:?}"
    );

    // 3. A crashing container restarts with back-off and says so.
    create(
        &pods,
        &pod(
            "crash",
            json!({"containers": [{"name": "main", "image": BUSYBOX,
        "command": ["sh", "-c", "echo crashing; exit 3"]}]}),
        ),
    )
    .await?;
    let p = node
        .wait_pod(
            "default",
            "crash",
            Duration::from_secs(60),
            "in CrashLoopBackOff after 2 restarts",
            |p| {
                let cs = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first().cloned());
                cs.is_some_and(|c| {
                    c.restart_count >= 2
                        && c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.reason.as_deref())
                            == Some("CrashLoopBackOff")
                })
            },
        )
        .await?;
    let cs = p.status.unwrap().container_statuses.unwrap().remove(0);
    let last = cs
        .last_state
        .and_then(|s| s.terminated)
        .expect("lastState.terminated");
    ensure!(last.exit_code == 3, "lastState shows exit code 3: {last:?}");
    ensure!(
        last.reason.as_deref() == Some("Error"),
        "reason Error: {last:?}"
    );
    let prev = kubectl
        .ok(&["logs", "crash", "--previous"])
        .await
        .unwrap_or_default();
    ensure!(
        prev.contains("crashing"),
        "--previous shows the last attempt's output: {prev:?}"
    );

    // 3b. A container over its memory limit is killed by the kernel, and its status
    //     says OOMKilled (exit code 137).
    create(
        &pods,
        &pod(
            "oom",
            json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": BUSYBOX,
                // dd's 64 MiB buffer, filled from /dev/zero, against a 16 MiB limit.
                "command": ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                "resources": {"limits": {"memory": "16Mi"}}}]}),
        ),
    )
    .await?;
    let p = node
        .wait_pod("default", "oom", Duration::from_secs(60), "Failed", |p| {
            phase(p) == "Failed"
        })
        .await?;
    let t = p
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|mut c| c.pop())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .expect("state.terminated");
    ensure!(
        t.reason.as_deref() == Some("OOMKilled") && t.exit_code == 137,
        "OOMKilled with exit code 137: {t:?}"
    );

    // 4. A failing liveness probe restarts the container.
    create(
        &pods,
        &pod(
            "liveness",
            json!({"containers": [{"name": "main", "image": BUSYBOX,
        "command": ["sh", "-c", "touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 3600"],
        "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
            "periodSeconds": 1, "failureThreshold": 2}}]}),
        ),
    )
    .await?;
    node.wait_pod(
        "default",
        "liveness",
        Duration::from_secs(40),
        "restarted by its liveness probe",
        |p| restarts(p, "main") >= 1,
    )
    .await?;
    let describe = kubectl.ok(&["describe", "pod", "liveness"]).await?;
    ensure!(
        describe.contains("Liveness probe failed"),
        "describe shows the Unhealthy event:\n{describe}"
    );

    // 5. Readiness gates the Service's endpoints.
    kubectl
        .run_stdin(
            &["apply", "-f", "-"],
            Some(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gated"},
                "spec": {"selector": {"app": "gated"}, "ports": [{"port": 80, "targetPort": 8080}]}}).to_string()),
        )
        .await?;
    create(&pods, &pod("gated", json!({"containers": [{"name": "main", "image": BUSYBOX,
        "command": ["sh", "-c", "mkdir -p /www; echo ok > /www/index.html; sleep 3; exec httpd -f -p 8080 -h /www"],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}))).await?;
    node.wait_running("default", "gated", Duration::from_secs(30))
        .await?;
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let ep = eps.get("gated").await.ok();
    let ready_addrs = |e: &Option<Endpoints>| {
        e.as_ref().and_then(|e| e.subsets.as_ref()).map_or(0, |s| {
            s.iter()
                .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
        })
    };
    ensure!(
        ready_addrs(&ep) == 0,
        "no ready endpoint before the probe passes: {ep:?}"
    );
    node.wait_pod("default", "gated", Duration::from_secs(30), "Ready", ready)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready_addrs(&eps.get("gated").await.ok()) == 0 {
        ensure!(
            Instant::now() < deadline,
            "the ready pod became an endpoint"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 6. Deletion: a container that ignores SIGTERM is killed at the end of its grace
    //    period, and the pod is gone from the API and the node soon after.
    create(
        &pods,
        &pod(
            "stubborn",
            json!({"terminationGracePeriodSeconds": 3, "containers": [{"name": "main",
        "image": BUSYBOX, "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]}]}),
        ),
    )
    .await?;
    node.wait_running("default", "stubborn", Duration::from_secs(30))
        .await?;
    let before = node.containers().len();
    let t = Instant::now();
    pods.delete("stubborn", &DeleteParams::default()).await?;
    loop {
        match pods.get_opt("stubborn").await? {
            None => break,
            Some(_) => {
                ensure!(
                    t.elapsed() < Duration::from_secs(15),
                    "the pod is gone within its grace period (+ slack)"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let took = t.elapsed();
    ensure!(
        took >= Duration::from_secs(2),
        "SIGTERM was ignored, so the grace period was waited out: {took:?}"
    );
    ensure!(
        node.containers().len() < before,
        "its container was removed from runc"
    );
    println!("stubborn deleted in {took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_its_pods_and_cleans_up_what_was_deleted_meanwhile() -> Result<()>
{
    require_node!();
    let dir = tempfile::tempdir()?;
    let mut node = AgentServer::start_split(dir.path(), 62).await?;
    let client = node.server.kube_client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names = ["keep", "graceful", "forced", "crasher"];
    for name in names {
        let command = if name == "crasher" {
            "sleep 2; exit 7"
        } else {
            "echo started; sleep 3600"
        };
        create(
            &pods,
            &pod(
                name,
                json!({"terminationGracePeriodSeconds": 2, "containers": [{"name": "main",
            "image": BUSYBOX, "command": ["sh", "-c", command]}]}),
            ),
        )
        .await?;
    }
    let mut ids = std::collections::HashMap::new();
    for name in names {
        let p = node
            .wait_pod("default", name, Duration::from_secs(30), "Running", |p| {
                phase(p) == "Running"
            })
            .await?;
        ids.insert(
            name,
            p.status.unwrap().container_statuses.unwrap()[0]
                .container_id
                .clone(),
        );
    }
    // The agent dies; its containers run on under their shims.
    node.kill_agent();
    ensure!(
        node.containers().len() == 4,
        "all containers outlive the agent: {:?}",
        node.containers()
    );
    // Meanwhile: one pod deleted gracefully (waits for the node), one force-deleted (gone
    // from the API at once), and one container exits on its own.
    pods.delete("graceful", &DeleteParams::default()).await?;
    pods.delete("forced", &DeleteParams::default().grace_period(0))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    node.start_agent()?;
    // The kept pod: the same container, adopted, not restarted, no duplicate.
    let p = node
        .wait_pod(
            "default",
            "crasher",
            Duration::from_secs(30),
            "showing the exit that happened while the agent was away",
            |p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| {
                        cs[0].restart_count >= 1
                            && cs[0]
                                .last_state
                                .as_ref()
                                .and_then(|l| l.terminated.as_ref())
                                .is_some_and(|t| t.exit_code == 7)
                    })
            },
        )
        .await?;
    ensure!(
        phase(&p) == "Running",
        "the crasher restarts (policy Always)"
    );
    let t = Instant::now();
    while pods.get_opt("graceful").await?.is_some() {
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the gracefully deleted pod is stopped and confirmed:\n{}",
            node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keep = pods.get("keep").await?;
    let cs = &keep
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    ensure!(
        cs.container_id == ids["keep"],
        "the same container, adopted: {:?} vs {:?}",
        cs.container_id,
        ids["keep"]
    );
    ensure!(
        cs.restart_count == 0 && phase(&keep) == "Running",
        "not restarted: {cs:?}"
    );
    let t = Instant::now();
    loop {
        let left = node.containers();
        let forced_gone = !left.iter().any(|c| {
            ids["forced"]
                .as_deref()
                .is_some_and(|id| id.ends_with(c.as_str()))
        });
        // keep (1) + crasher (the restarted attempt; the exited one may linger as previous).
        if forced_gone && left.len() <= 3 {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(20),
            "the force-deleted pod's container is cleaned up: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// One HTTP GET over a fresh connection from this (the node's) network namespace.
async fn http_get(addr: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await??;
    s.write_all(b"GET / HTTP/1.0\r\nHost: svc\r\n\r\n").await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out)).await??;
    Ok(out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_every_backend_from_the_node_and_from_a_pod_and_exec_works() -> Result<()> {
    require_node!();
    let dir = tempfile::tempdir()?;
    let node = AgentServer::start(dir.path(), 64).await?;
    let kubectl = node.server.kubectl();
    let manifest = json!([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
         "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "echo"}},
          "template": {"metadata": {"labels": {"app": "echo"}},
           "spec": {"containers": [{"name": "httpd", "image": BUSYBOX, "command": ["sh", "-c",
             "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
             "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
         "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
         "spec": {"containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}},
    ]);
    for doc in manifest.as_array().unwrap() {
        let r = kubectl
            .run_stdin(&["apply", "-f", "-"], Some(&doc.to_string()))
            .await?;
        ensure!(r.success(), "kubectl apply: {r:?}");
    }
    kubectl
        .ok(&["rollout", "status", "deployment/echo", "--timeout=60s"])
        .await?;
    node.wait_running("default", "client", Duration::from_secs(30))
        .await?;
    let ip = kubectl
        .ok(&["get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}"])
        .await?;
    let backends: std::collections::BTreeSet<String> = kubectl
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=echo",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await?
        .split_whitespace()
        .map(String::from)
        .collect();
    ensure!(backends.len() == 3, "three backends: {backends:?}");

    // From the node: every backend answers through the ClusterIP.
    let mut seen = std::collections::BTreeSet::new();
    let t = Instant::now();
    while seen != backends && t.elapsed() < Duration::from_secs(30) {
        match http_get(&format!("{ip}:80")).await {
            Ok(body) => {
                seen.insert(body);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    ensure!(
        seen == backends,
        "from the node, every backend answered: {seen:?} of {backends:?}"
    );

    // From a pod, through kubectl exec (which itself goes API server → agent → runc).
    let seen = answers_from_pod(&kubectl, "client", &format!("http://{ip}/"), &backends).await;
    ensure!(
        seen == backends,
        "from a pod, every backend answered: {seen:?} of {backends:?}"
    );

    // kubectl exec: output, and the command's exit code.
    let out = kubectl
        .ok(&["exec", "client", "--", "cat", "/etc/hostname"])
        .await?;
    ensure!(
        out.trim() == "client",
        "exec runs in the container: {out:?}"
    );
    let r = kubectl
        .run(&["exec", "client", "--", "sh", "-c", "exit 3"])
        .await?;
    ensure!(
        r.code == Some(3),
        "kubectl exec exits with the command's code: {r:?}"
    );
    Ok(())
}

/// Whether node `name` has condition `type_` with `status`, and whether it has the
/// NoSchedule taint `key`.
async fn condition_and_taint(
    nodes: &Api<Node>,
    name: &str,
    type_: &str,
    key: &str,
) -> Result<(String, bool)> {
    let n = nodes.get(name).await?;
    let status = n
        .status
        .and_then(|s| s.conditions)
        .and_then(|cs| cs.into_iter().find(|c| c.type_ == type_))
        .map(|c| c.status)
        .unwrap_or_default();
    let tainted = n
        .spec
        .and_then(|s| s.taints)
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == "NoSchedule"));
    Ok((status, tainted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_under_disk_pressure_gets_no_pods_until_it_recovers() -> Result<()> {
    require_node!();
    let dir = tempfile::tempdir()?;
    let mut node = AgentServer::start_split(dir.path(), 66).await?;
    let client = node.server.kube_client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    const TAINT: &str = "node.kubernetes.io/disk-pressure";

    // The agent again, now told that any disk less than 100% free is under pressure.
    node.kill_agent();
    node.agent_env = vec![(
        "SKIFF_AGENT_DISK_PRESSURE_BELOW_PERCENT".into(),
        "100".into(),
    )];
    node.start_agent()?;
    let t = Instant::now();
    loop {
        let (status, tainted) =
            condition_and_taint(&nodes, &node.node, "DiskPressure", TAINT).await?;
        if status == "True" && tainted {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "DiskPressure {status:?}, tainted {tainted} after 30 s\n{}",
            node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    create(
        &pods,
        &pod(
            "waits",
            json!({"containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}),
        ),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = pods.get("waits").await?;
    ensure!(
        phase(&p) == "Pending" && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none(),
        "a pod is not scheduled onto a node under disk pressure: {:?}",
        p.status
    );

    // Pressure gone: the condition clears, the taint goes, the pod runs.
    node.kill_agent();
    node.agent_env.clear();
    node.start_agent()?;
    node.wait_running("default", "waits", Duration::from_secs(60))
        .await?;
    let (status, tainted) = condition_and_taint(&nodes, &node.node, "DiskPressure", TAINT).await?;
    ensure!(
        status == "False" && !tainted,
        "DiskPressure {status:?}, tainted {tainted}"
    );
    Ok(())
}
