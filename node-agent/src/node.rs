//! This node in the API: registration (capacity, allocatable, addresses, daemon
//! endpoint, node info, conditions), the podCIDR the control plane assigns, the Lease in
//! `kube-node-lease` renewed every 10 s, and status reports (every minute, and at once
//! when something changes).

use crate::pressure::Pressure;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// What the node says about itself.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Node name.
    pub name: String,
    /// InternalIP.
    pub ip: Ipv4Addr,
    /// The agent's HTTP port (logs, exec), as `daemonEndpoints.kubeletEndpoint.Port`.
    pub port: u16,
    /// Capacity (and allocatable): cpu, memory, pods, as quantities.
    pub capacity: BTreeMap<String, String>,
    /// Labels to set at registration (the kubernetes.io/* ones are added).
    pub labels: BTreeMap<String, String>,
    /// `runc://<version>` or `sim://…`.
    pub runtime_version: String,
    /// How long the Lease is valid (40 s, the kubelet's).
    pub lease_duration: Duration,
    /// Lease renewal period (10 s).
    pub renew_interval: Duration,
    /// The agent's state directory, whose filesystem is watched for disk pressure;
    /// None (simulated nodes): no pressure readings at all.
    pub state_dir: Option<std::path::PathBuf>,
    /// Where the pressure conditions start.
    pub thresholds: crate::pressure::Thresholds,
}

impl NodeConfig {
    /// The pressure conditions now (none for a simulated node).
    fn pressure(&self) -> Pressure {
        self.state_dir
            .as_deref()
            .map(|d| crate::pressure::observe(d, &self.thresholds))
            .unwrap_or_default()
    }
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The machine's capacity: cpus, memory (from /proc/meminfo), and `max_pods`.
pub fn machine_capacity(max_pods: u32) -> BTreeMap<String, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .unwrap_or(0);
    [
        ("cpu".to_string(), cpus.to_string()),
        ("memory".to_string(), format!("{mem_kib}Ki")),
        ("pods".to_string(), max_pods.to_string()),
    ]
    .into()
}

/// The address of the interface holding the default route, else 127.0.0.1.
pub fn default_ip() -> Ipv4Addr {
    let out = std::process::Command::new("ip")
        .args(["-4", "-j", "route", "get", "1.1.1.1"])
        .output()
        .ok();
    out.and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| v[0]["prefsrc"].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

fn status(cfg: &NodeConfig, old: Option<&Node>, pressure: Pressure) -> Value {
    let t = crate::now();
    let transition = |type_: &str, status: &str| -> String {
        old.and_then(|n| n.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| t.clone())
    };
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": t, "lastTransitionTime": transition(type_, status)})
    };
    // A pressure condition: True with the first (reason, message), else False with the
    // second.
    let pressure_cond = |type_: &str, on: bool, yes: (&str, &str), no: (&str, &str)| {
        let (status, (reason, message)) = if on { ("True", yes) } else { ("False", no) };
        cond(type_, status, reason, message)
    };
    json!({"status": {
        "capacity": cfg.capacity,
        "allocatable": cfg.capacity,
        "addresses": [{"type": "InternalIP", "address": cfg.ip.to_string()},
                      {"type": "Hostname", "address": cfg.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.port}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": kernel(), "osImage": os_image(),
            "containerRuntimeVersion": cfg.runtime_version,
            "kubeletVersion": concat!("v1.32.0-skiff-", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        },
        "conditions": [
            pressure_cond("MemoryPressure", pressure.memory, ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"), ("KubeletHasSufficientMemory", "kubelet has sufficient memory available")),
            pressure_cond("DiskPressure", pressure.disk, ("KubeletHasDiskPressure", "kubelet has disk pressure"), ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")),
            pressure_cond("PIDPressure", pressure.pid, ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"), ("KubeletHasSufficientPID", "kubelet has sufficient PID available")),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
    }})
}

/// Registers the node (creating it, or taking over an existing one of the same name)
/// and posts its status. Returns the Node as stored.
///
/// # Errors
/// If the API server refuses.
pub async fn register(client: &Client, cfg: &NodeConfig) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = cfg.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), cfg.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert(
        "kubernetes.io/arch".into(),
        std::env::consts::ARCH.replace("x86_64", "amd64"),
    );
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.name, "labels": labels},
    }))?;
    let old = match api.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        Err(kube::Error::Api(s)) if s.code == 409 => api
            .patch(
                &cfg.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
            .await
            .with_context(|| format!("updating node {}", cfg.name))?,
        Err(e) => return Err(e).with_context(|| format!("registering node {}", cfg.name)),
    };
    api.patch_status(
        &cfg.name,
        &PatchParams::default(),
        &Patch::Merge(status(cfg, Some(&old), cfg.pressure())),
    )
    .await
    .with_context(|| format!("posting the status of node {}", cfg.name))
}

/// [`register`], retried every second (the API server may not be up yet, or a write may
/// race the control plane's) until it succeeds or `shutdown`.
///
/// # Errors
/// Only when shut down first.
pub async fn register_until_done(
    client: &Client,
    cfg: &NodeConfig,
    shutdown: &CancellationToken,
) -> Result<Node> {
    let mut logged = false;
    loop {
        match register(client, cfg).await {
            Ok(n) => return Ok(n),
            Err(e) => {
                if !logged {
                    tracing::warn!(node = %cfg.name, error = %format!("{e:#}"), "registering the node; retrying");
                    logged = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("shut down before the node {} was registered", cfg.name),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Waits for the control plane to give the node a podCIDR (node IPAM).
///
/// # Errors
/// If none arrives within `timeout`.
pub async fn wait_pod_cidr(client: &Client, name: &str, timeout: Duration) -> Result<String> {
    let api: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(200);
    loop {
        if let Ok(n) = api.get(name).await {
            if let Some(cidr) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                return Ok(cidr);
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "node {name} has no spec.podCIDR after {timeout:?}: is the controller manager running with --cluster-cidr? (or pass --pod-cidr)"
            );
        }
        // 200 ms at first, backing off to 2 s: a thousand simulated nodes polling
        // fast would crowd out the controller that assigns the CIDRs.
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn renew_lease(
    leases: &Api<Lease>,
    cfg: &NodeConfig,
    owner: &Option<OwnerReference>,
) -> Result<()> {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            namespace: Some("kube-node-lease".into()),
            owner_references: owner.clone().map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(cfg.name.clone()),
            lease_duration_seconds: Some(cfg.lease_duration.as_secs() as i32),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    match leases
        .patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&lease))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            leases.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Renews the Lease every `renew_interval`, and reposts status every minute, when a
/// pressure condition changes, and right after an outage (which clears the node
/// controller's not-ready taints), until `shutdown`.
pub async fn heartbeat(client: Client, cfg: NodeConfig, shutdown: CancellationToken) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let owner = nodes.get(&cfg.name).await.ok().map(|n| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: cfg.name.clone(),
        uid: n.metadata.uid.unwrap_or_default(),
        ..Default::default()
    });
    let mut last_status = tokio::time::Instant::now();
    let mut posted_pressure = cfg.pressure();
    let mut failing = false;
    loop {
        match renew_lease(&leases, &cfg, &owner).await {
            Ok(()) => {
                if failing {
                    tracing::info!(node = %cfg.name, "lease renewals succeed again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(node = %cfg.name, error = %e, "renewing the node lease");
                }
                failing = true;
            }
        }
        // Status: every minute, when pressure changes, or right after a failure
        // streak ends (the node controller may have marked the node Unknown meanwhile).
        let pressure = cfg.pressure();
        if pressure != posted_pressure {
            tracing::warn!(node = %cfg.name, ?pressure, "node pressure changed");
        }
        // Due regardless of what the API shows; otherwise only if the node is shown
        // not Ready (which needs a read to find out).
        let due = last_status.elapsed() >= Duration::from_secs(60) || pressure != posted_pressure;
        if due || !failing && last_status.elapsed() >= cfg.renew_interval * 3 {
            let old = nodes.get(&cfg.name).await.ok();
            let unknown = old
                .as_ref()
                .and_then(|n| n.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status != "True");
            if due || unknown {
                if let Err(e) = nodes
                    .patch_status(
                        &cfg.name,
                        &PatchParams::default(),
                        &Patch::Merge(status(&cfg, old.as_ref(), pressure)),
                    )
                    .await
                {
                    tracing::warn!(node = %cfg.name, error = %e, "posting node status");
                } else {
                    last_status = tokio::time::Instant::now();
                    posted_pressure = pressure;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(cfg.renew_interval) => {}
        }
    }
}
