//! Simulated nodes for end-to-end tests of the scheduler and controllers, until the node
//! agent's own `--simulate` mode exists: Nodes registered through the API with capacity
//! and a Ready condition, Leases in `kube-node-lease` renewed every second, and a stand-in
//! kubelet that reports every pod bound to them Running and Ready (with an IP from the
//! node's podCIDR) and confirms graceful deletions. A node can be silenced: it stops
//! renewing and stops touching its pods, as a crashed node would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use parking_lot::Mutex;
use serde_json::json;

/// One simulated node's shape.
#[derive(Clone, Debug)]
pub struct SimNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.taints` as JSON (e.g. `[{"key": "k", "value": "v", "effect": "NoSchedule"}]`).
    pub taints: serde_json::Value,
    /// Allocatable cpu (e.g. "4"), memory (e.g. "8Gi"), pods (e.g. "110").
    pub cpu: String,
    pub memory: String,
    pub pods: String,
}

impl SimNode {
    /// A 4-cpu, 8 GiB, 110-pod node named `name`, labelled with its hostname.
    pub fn new(name: &str) -> SimNode {
        SimNode {
            name: name.to_string(),
            labels: [("kubernetes.io/hostname".to_string(), name.to_string())].into(),
            taints: json!([]),
            cpu: "4".into(),
            memory: "8Gi".into(),
            pods: "110".into(),
        }
    }
}

/// Running simulated nodes; dropping it stops them all (they go silent).
pub struct SimNodes {
    silent: Arc<Mutex<HashSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl SimNodes {
    /// Registers `nodes` (or takes over ones registered before) and starts their
    /// heartbeats and the stand-in kubelet.
    pub async fn start(client: Client, nodes: Vec<SimNode>) -> Result<SimNodes> {
        let api: Api<Node> = Api::all(client.clone());
        for n in &nodes {
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n.name, "labels": n.labels},
                "spec": {"taints": n.taints},
            }))?;
            match api.create(&PostParams::default(), &node).await {
                // Registered before (a restarted simulation): take it over.
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e).with_context(|| format!("registering node {}", n.name)),
            }
            let res = json!({"cpu": n.cpu, "memory": n.memory, "pods": n.pods});
            api.patch_status(
                &n.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "capacity": res, "allocatable": res,
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                  {"type": "Hostname", "address": n.name}],
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "simulated kubelet is posting ready status",
                        "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
                }})),
            )
            .await?;
        }
        let silent = Arc::new(Mutex::new(HashSet::new()));
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let tasks = vec![
            tokio::spawn(heartbeats(client.clone(), names.clone(), silent.clone())),
            tokio::spawn(kubelet(client, names, silent.clone())),
        ];
        Ok(SimNodes { silent, tasks })
    }

    /// Node `name` stops renewing its Lease and stops reporting on its pods.
    pub fn silence(&self, name: &str) {
        self.silent.lock().insert(name.to_string());
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Renews each live node's Lease every second (creating it first).
async fn heartbeats(client: Client, names: Vec<String>, silent: Arc<Mutex<HashSet<String>>>) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        for name in &names {
            if silent.lock().contains(name) {
                continue;
            }
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some("kube-node-lease".into()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some(name.clone()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                        k8s_openapi::jiff::Timestamp::now(),
                    )),
                    ..Default::default()
                }),
            };
            // Create once, then merge-patch the renewal.
            let r = leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&lease))
                .await;
            if let Err(kube::Error::Api(s)) = &r {
                if s.code == 404 {
                    let _ = leases.create(&PostParams::default(), &lease).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The stand-in kubelet: bound pods of live nodes become Running and Ready; pods being
/// deleted are confirmed gone.
async fn kubelet(client: Client, names: Vec<String>, silent: Arc<Mutex<HashSet<String>>>) {
    let mine: HashSet<String> = names.into_iter().collect();
    let pods: Api<Pod> = Api::all(client.clone());
    let mut ips: HashMap<String, u32> = HashMap::new();
    let mut stream = Box::pin(
        watcher(pods.clone(), watcher::Config::default())
            .default_backoff()
            .touched_objects(),
    );
    while let Some(ev) = stream.next().await {
        let Ok(pod) = ev else { continue };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if !mine.contains(&node) || silent.lock().contains(&node) {
            continue;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let running = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Running");
        if running {
            continue;
        }
        let n = ips.entry(node.clone()).or_insert(1);
        *n += 1;
        let ip = format!(
            "10.{}.{}.{}",
            200 + (*n >> 16) % 50,
            (*n >> 8) & 255,
            *n & 255
        );
        let containers: Vec<serde_json::Value> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                json!({"name": c.name, "image": c.image, "imageID": "", "ready": true,
                       "started": true, "restartCount": 0,
                       "containerID": format!("sim://{ns}/{name}/{}", c.name),
                       "state": {"running": {"startedAt": now()}}})
            })
            .collect();
        let t = now();
        let status = json!({"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
            "startTime": t,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
                {"type": "Ready", "status": "True", "lastTransitionTime": t}],
            "containerStatuses": containers,
        }});
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(status))
            .await;
    }
}
