//! One pod's worker: drives the pod to its spec (sandbox, init containers in order, then
//! the containers, restarts with back-off, probes), reports status, and on deletion
//! stops everything within the grace period, tears the sandbox down and confirms.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, HostIP, Pod, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::probe::Probes;
use super::status::{self, Attempt, ContainerView};
use super::volumes;
use crate::runtime::{PodRef, Record, Runtime, Security, StartRequest, State};

/// What every worker of an agent shares.
pub struct Shared<R> {
    /// The runtime.
    pub rt: Arc<R>,
    /// API client.
    pub client: Client,
    /// This node.
    pub node_name: String,
    /// This node's address (status.hostIP).
    pub node_ip: Ipv4Addr,
    /// `<log_root>/<ns>_<pod>_<uid>/<container>/<n>.log`.
    pub log_root: PathBuf,
    /// Events (Pulled, Started, Killing, BackOff, Unhealthy, Failed).
    pub events: skiff_controllers::events::Recorder,
    /// Where the agent's HTTP endpoint finds containers.
    pub directory: Arc<super::directory::Directory>,
}

/// Kubernetes's container restart back-off: 10 s doubling to 5 min.
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

struct Slot {
    spec: Container,
    init: bool,
    view: ContainerView,
    /// Next back-off delay and when the current one ends.
    backoff: Option<(Duration, Instant)>,
}

/// A pod worker's state.
pub struct Worker<R: Runtime> {
    sh: Arc<Shared<R>>,
    pod: Arc<Pod>,
    pref: PodRef,
    ip: Option<Ipv4Addr>,
    slots: Vec<Slot>,
    probes: Probes,
    /// Adopted attempts to remove at the first sync.
    stale: Vec<String>,
    /// The pod ended for good (API phase Succeeded/Failed) and its sandbox is gone.
    finished: bool,
    start_time: Option<Time>,
    last_written: Option<serde_json::Value>,
    sandbox_error: Option<String>,
    volumes_ready: Option<std::collections::BTreeMap<String, (PathBuf, bool)>>,
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

fn security(pod: &Pod, c: &Container) -> Security {
    let ps = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let cs = c.security_context.as_ref();
    let to_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    let mut groups: Vec<u32> = ps
        .and_then(|p| p.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|g| u32::try_from(g).ok())
        .collect();
    if let Some(fs) = to_u32(ps.and_then(|p| p.fs_group)) {
        groups.push(fs);
    }
    let caps = cs.and_then(|c| c.capabilities.as_ref());
    Security {
        run_as_user: to_u32(
            cs.and_then(|c| c.run_as_user)
                .or(ps.and_then(|p| p.run_as_user)),
        ),
        run_as_group: to_u32(
            cs.and_then(|c| c.run_as_group)
                .or(ps.and_then(|p| p.run_as_group)),
        ),
        supplemental_groups: groups,
        read_only_root: cs.and_then(|c| c.read_only_root_filesystem) == Some(true),
        allow_privilege_escalation: cs.and_then(|c| c.allow_privilege_escalation) != Some(false),
        privileged: cs.and_then(|c| c.privileged) == Some(true),
        capabilities_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        capabilities_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
    }
}

impl<R: Runtime> Worker<R> {
    /// A worker for `pod`, adopting the containers in `records` (from the runtime's
    /// records after an agent restart).
    pub fn new(
        sh: Arc<Shared<R>>,
        pod: Arc<Pod>,
        records: Vec<Record>,
        wake: mpsc::UnboundedSender<()>,
    ) -> Self {
        let pref = pod_ref(&pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let mut stale: Vec<String> = Vec::new();
        let mut slots: Vec<Slot> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c, true))
            .chain(spec.containers.iter().map(|c| (c, false)))
            .map(|(c, init)| Slot {
                spec: c.clone(),
                init,
                view: ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    ..Default::default()
                },
                backoff: None,
            })
            .collect();
        // Adopt: the latest attempt of each container is current, the one before it
        // previous. Exit state is read from the runtime on the first sync.
        for slot in &mut slots {
            let mut mine: Vec<&Record> = records
                .iter()
                .filter(|r| r.container == slot.spec.name && r.init == slot.init)
                .collect();
            mine.sort_by_key(|r| r.attempt);
            let to_attempt = |r: &Record| Attempt {
                id: r.id.clone(),
                attempt: r.attempt,
                image: r.image.clone(),
                image_id: r.image_id.clone(),
                started_at: r.started_at.clone(),
                exited: None,
            };
            slot.view.current = mine.last().map(|r| to_attempt(r));
            if mine.len() > 1 {
                slot.view.previous = mine.get(mine.len() - 2).map(|r| to_attempt(r));
            }
            // Attempts before those two (an agent killed between a restart and the
            // removal of the oldest) leave at the first sync.
            stale.extend(mine.iter().rev().skip(2).map(|r| r.id.clone()));
        }
        // Records of containers the spec no longer has (cannot happen for a pod, whose
        // containers are immutable, but a record is only a file) go too.
        stale.extend(
            records
                .iter()
                .filter(|r| {
                    !slots
                        .iter()
                        .any(|s| s.spec.name == r.container && s.init == r.init)
                })
                .map(|r| r.id.clone()),
        );
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.clone());
        Worker {
            sh,
            pod,
            pref,
            ip: None,
            slots,
            probes: Probes::new(wake),
            stale,
            finished: false,
            start_time,
            last_written: None,
            sandbox_error: None,
            volumes_ready: None,
        }
    }

    /// Runs until the pod is gone and cleaned up.
    pub async fn run(
        mut self,
        mut pods: watch::Receiver<Option<Arc<Pod>>>,
        mut wake: mpsc::UnboundedReceiver<()>,
    ) {
        for id in std::mem::take(&mut self.stale) {
            self.sh
                .rt
                .stop(&self.pref, &id, Duration::from_secs(2))
                .await;
            if let Err(e) = self.sh.rt.remove(&self.pref, &id).await {
                tracing::warn!(container = %id, error = %format!("{e:#}"), "removing an old attempt");
            }
        }
        loop {
            let latest = pods.borrow_and_update().clone();
            match latest {
                None => {
                    // Deleted from the API (or never there after a restart): clean up.
                    self.terminate(Duration::from_secs(2)).await;
                    self.teardown().await;
                    return;
                }
                Some(p) => self.pod = p,
            }
            if self.pod.metadata.deletion_timestamp.is_some() {
                let grace = self
                    .pod
                    .metadata
                    .deletion_grace_period_seconds
                    .or(self
                        .pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds))
                    .unwrap_or(30)
                    .max(0) as u64;
                self.terminate(Duration::from_secs(grace)).await;
                self.teardown().await;
                self.confirm_deletion().await;
                return;
            }
            self.sync().await;
            tokio::select! {
                r = pods.changed() => if r.is_err() { return },
                _ = wake.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            // Coalesce a burst of wake-ups.
            while wake.try_recv().is_ok() {}
        }
    }

    fn terminal_in_api(&self) -> bool {
        matches!(
            self.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    /// One pass toward the desired state, then a status update if anything changed.
    async fn sync(&mut self) {
        if self.terminal_in_api() {
            // Final: nothing restarts; release the network and runtime state once
            // (not a scan of the node's records on every tick).
            if !self.finished {
                self.terminate(Duration::from_secs(2)).await;
                if let Err(e) = self.sh.rt.teardown_sandbox(&self.pref).await {
                    tracing::warn!(pod = %self.pref.name, error = %e, "tearing down a finished pod");
                }
                self.ip = None;
                self.finished = true;
            }
            return;
        }
        self.refresh().await;
        if self.ip.is_none() {
            match self.sh.rt.setup_sandbox(&self.pref).await {
                Ok(ip) => {
                    self.ip = Some(ip);
                    self.sandbox_error = None;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if self.sandbox_error.as_deref() != Some(msg.as_str()) {
                        self.sh.events.warning(
                            &*self.pod,
                            "FailedCreatePodSandBox",
                            format!("Failed to create pod sandbox: {msg}"),
                        );
                    }
                    self.sandbox_error = Some(msg);
                    self.write_status().await;
                    return;
                }
            }
        }
        let policy = self.restart_policy();
        // Init containers, one at a time, each to a successful exit.
        let mut initialized = true;
        let mut init_failed = false;
        for i in 0..self.slots.len() {
            if !self.slots[i].init {
                continue;
            }
            let done = self.slots[i]
                .view
                .current
                .as_ref()
                .and_then(|a| a.exited.as_ref())
                .map(|e| e.exit_code == 0);
            match done {
                Some(true) => continue,
                Some(false) if policy == "Never" => {
                    init_failed = true;
                    initialized = false;
                    break;
                }
                _ => {
                    initialized = false;
                    self.drive(i, "OnFailure").await;
                    break;
                }
            }
        }
        if initialized {
            for i in 0..self.slots.len() {
                if !self.slots[i].init {
                    self.drive(i, &policy).await;
                }
            }
        } else {
            for s in self.slots.iter_mut().filter(|s| !s.init) {
                if s.view.current.is_none() {
                    s.view.waiting = Some(("PodInitializing".into(), String::new()));
                }
            }
        }
        self.write_status_with(initialized, init_failed).await;
        self.publish();
    }

    /// Tells the directory (logs, exec) about the containers' attempts.
    fn publish(&self) {
        let published = self
            .slots
            .iter()
            .map(|s| super::directory::Published {
                name: s.spec.name.clone(),
                current: s
                    .view
                    .current
                    .as_ref()
                    .map(|a| (a.id.clone(), a.attempt, a.exited.is_none())),
                previous: s.view.previous.as_ref().map(|a| a.attempt),
            })
            .collect();
        self.sh.directory.publish(&self.pref, published);
    }

    /// Reads the runtime's state of every current attempt.
    async fn refresh(&mut self) {
        for i in 0..self.slots.len() {
            let Some(cur) = self.slots[i].view.current.clone() else {
                continue;
            };
            if cur.exited.is_some() {
                continue;
            }
            match self.sh.rt.state(&self.pref, &cur.id).await {
                State::Running => {}
                State::Exited(e) => {
                    let slot = &mut self.slots[i];
                    if let Some(c) = slot.view.current.as_mut() {
                        if c.started_at.as_deref().unwrap_or("").is_empty()
                            && !e.started_at.is_empty()
                        {
                            c.started_at = Some(e.started_at.clone());
                        }
                        c.exited = Some(e);
                    }
                    self.probes.stop(&slot.spec.name);
                }
                State::Unknown => {
                    // Never started (the agent died mid-start) or removed: treat as
                    // an attempt that must be made again.
                    let slot = &mut self.slots[i];
                    slot.view.current = slot.view.previous.take();
                    self.probes.stop(&slot.spec.name);
                }
            }
        }
    }

    /// Moves container `i` one step: start, restart after back-off, act on probes.
    async fn drive(&mut self, i: usize, policy: &str) {
        let now = Instant::now();
        let name = self.slots[i].spec.name.clone();
        let cur = self.slots[i].view.current.clone();
        match cur {
            Some(a) if a.exited.is_none() => {
                if let Some(ip) = self.ip {
                    let spec = self.slots[i].spec.clone();
                    self.probes.ensure(&self.sh.rt, &spec, &a.id, ip);
                }
                let v = self.probes.verdict(&name);
                let slot = &mut self.slots[i];
                slot.view.ready = v.ready;
                slot.view.started = v.started;
                slot.view.waiting = None;
                if let Some(msg) = v.failed {
                    self.sh.events.warning(&*self.pod, "Unhealthy", msg.clone());
                    self.sh.events.normal(
                        &*self.pod,
                        "Killing",
                        format!("Container {name} failed liveness probe, will be restarted"),
                    );
                    self.probes.stop(&name);
                    let grace = self.grace();
                    self.sh.rt.stop(&self.pref, &a.id, grace).await;
                    self.refresh().await;
                }
            }
            Some(a) => {
                let e = a.exited.clone().expect("exited");
                let slot = &mut self.slots[i];
                slot.view.ready = false;
                slot.view.started = false;
                let restart = match policy {
                    "Always" => true,
                    "OnFailure" => e.exit_code != 0,
                    _ => false,
                };
                if !restart {
                    slot.view.waiting = None;
                    return;
                }
                // First restart at once, then 10 s, 20 s, … 300 s; a container that
                // ran 10 minutes resets its back-off.
                let ran_long = a
                    .started_at
                    .as_deref()
                    .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    .zip(e.finished_at.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|(s, f)| f.duration_since(s).as_secs() >= 600);
                if ran_long {
                    slot.backoff = None;
                }
                match slot.backoff {
                    Some((delay, until)) if now < until => {
                        let msg = format!(
                            "back-off {}s restarting failed container={} pod={}_{}({})",
                            delay.as_secs(),
                            name,
                            self.pref.name,
                            self.pref.namespace,
                            self.pref.uid
                        );
                        if slot.view.waiting.as_ref().map(|w| w.0.as_str())
                            != Some("CrashLoopBackOff")
                        {
                            self.sh.events.warning(
                                &*self.pod,
                                "BackOff",
                                "Back-off restarting failed container".to_string()
                                    + &format!(
                                        " {name} in pod {}_{}({})",
                                        self.pref.name, self.pref.namespace, self.pref.uid
                                    ),
                            );
                        }
                        slot.view.waiting = Some(("CrashLoopBackOff".into(), msg));
                    }
                    _ => {
                        let next = match slot.backoff {
                            None => BACKOFF_INITIAL,
                            Some((d, _)) => (d * 2).min(BACKOFF_MAX),
                        };
                        slot.backoff = Some((next, now + next));
                        self.start(i, a.attempt + 1).await;
                    }
                }
            }
            None => {
                if let Some((_, until)) = self.slots[i].backoff {
                    if now < until {
                        // Image pull or config errors back off too.
                        let slot = &mut self.slots[i];
                        if let Some(w) = slot.view.waiting.as_mut() {
                            if w.0 == "ErrImagePull" {
                                w.0 = "ImagePullBackOff".into();
                                w.1 = format!(
                                    "Back-off pulling image {:?}: {}",
                                    slot.view.image, w.1
                                );
                            }
                        }
                        return;
                    }
                }
                let attempt = self.slots[i]
                    .view
                    .previous
                    .as_ref()
                    .map_or(0, |p| p.attempt + 1);
                self.start(i, attempt).await;
            }
        }
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(
            self.pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        )
    }

    /// Starts attempt `attempt` of container `i`.
    async fn start(&mut self, i: usize, attempt: u32) {
        let Some(ip) = self.ip else { return };
        let spec = self.slots[i].spec.clone();
        let host_ip = self.sh.node_ip.to_string();
        let pod_dir = self.sh.rt.pod_dir(&self.pref);
        let prepared = async {
            let mut mounts = Vec::new();
            if let Some(dir) = &pod_dir {
                if self.volumes_ready.is_none() {
                    let hostname = self.hostname();
                    volumes::write_etc(dir, &hostname, ip).map_err(|e| {
                        crate::runtime::StartError::new("CreateContainerConfigError", e)
                    })?;
                    self.volumes_ready = Some(
                        volumes::prepare_volumes(
                            &self.sh.client,
                            &self.pod,
                            dir,
                            Some(ip),
                            &host_ip,
                        )
                        .await?,
                    );
                }
                mounts =
                    volumes::mounts(&spec, self.volumes_ready.as_ref().expect("prepared"), dir)?;
            }
            let env =
                volumes::resolve_env(&self.sh.client, &self.pod, &spec, Some(ip), &host_ip).await?;
            Ok::<_, crate::runtime::StartError>((mounts, env))
        };
        let (mounts, env) = match prepared.await {
            Ok(x) => x,
            Err(e) => return self.start_failed(i, e),
        };
        let req = StartRequest {
            pod: self.pref.clone(),
            container: spec.clone(),
            attempt,
            env,
            mounts,
            security: security(&self.pod, &spec),
            hostname: self.hostname(),
            log_path: crate::logs::container_log_path(
                &self.sh.log_root,
                &self.pref.namespace,
                &self.pref.name,
                &self.pref.uid,
                &spec.name,
                attempt,
            ),
        };
        let init = self.slots[i].init;
        match self.sh.rt.start(&req, init).await {
            Ok(r) => {
                let slot = &mut self.slots[i];
                if slot
                    .view
                    .current
                    .as_ref()
                    .is_some_and(|c| c.exited.is_some())
                {
                    // Keep one ended attempt (lastState, `logs --previous`); older
                    // ones leave the node.
                    if let Some(old) = slot.view.previous.take() {
                        if let Err(e) = self.sh.rt.remove(&self.pref, &old.id).await {
                            tracing::warn!(container = %old.id, error = %format!("{e:#}"), "removing an old attempt");
                        }
                    }
                    let slot = &mut self.slots[i];
                    slot.view.previous = slot.view.current.take();
                }
                let slot = &mut self.slots[i];
                slot.view.current = Some(Attempt {
                    id: r.id.clone(),
                    attempt,
                    image: slot.view.image.clone(),
                    image_id: r.image_id,
                    started_at: Some(r.started_at).filter(|s| !s.is_empty()),
                    exited: None,
                });
                slot.view.waiting = None;
                // A start that failed inside runc shows up as an exit at once: then
                // the event says why instead of "Started".
                self.refresh().await;
                let start_error = self.slots[i].view.current.as_ref().and_then(|c| {
                    let e = c.exited.as_ref()?;
                    let t = super::status::terminated(c, e);
                    (t.reason.as_deref() == Some("StartError"))
                        .then(|| t.message.unwrap_or_default())
                });
                match start_error {
                    Some(message) => {
                        self.sh
                            .events
                            .warning(&*self.pod, "Failed", format!("Error: {message}"))
                    }
                    None => self.sh.events.normal(
                        &*self.pod,
                        "Started",
                        format!("Started container {}", spec.name),
                    ),
                }
            }
            Err(e) => self.start_failed(i, e),
        }
    }

    fn start_failed(&mut self, i: usize, e: crate::runtime::StartError) {
        let now = Instant::now();
        let slot = &mut self.slots[i];
        let next = match slot.backoff {
            None => BACKOFF_INITIAL,
            Some((d, _)) => (d * 2).min(BACKOFF_MAX),
        };
        slot.backoff = Some((next, now + next));
        if slot.view.waiting.as_ref().map(|w| &w.1) != Some(&e.message) {
            self.sh
                .events
                .warning(&*self.pod, "Failed", format!("Error: {}", e.message));
        }
        slot.view.waiting = Some((e.reason, e.message));
    }

    fn hostname(&self) -> String {
        let spec = self.pod.spec.as_ref();
        spec.and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| self.pref.name.clone())
    }

    /// Stops every running container (SIGTERM, grace, SIGKILL), in parallel.
    async fn terminate(&mut self, grace: Duration) {
        let running: Vec<(String, String)> = self
            .slots
            .iter()
            .filter_map(|s| {
                let c = s.view.current.as_ref()?;
                c.exited
                    .is_none()
                    .then(|| (s.spec.name.clone(), c.id.clone()))
            })
            .collect();
        for (name, _) in &running {
            self.probes.stop(name);
            self.sh
                .events
                .normal(&*self.pod, "Killing", format!("Stopping container {name}"));
        }
        let rt = self.sh.rt.clone();
        let pref = self.pref.clone();
        futures::future::join_all(running.iter().map(|(_, id)| rt.stop(&pref, id, grace))).await;
        // Adopted containers this worker never tracked (e.g. after a restart with a
        // changed spec) go too.
        for r in self
            .sh
            .rt
            .records()
            .into_iter()
            .filter(|r| r.pod.uid == self.pref.uid)
        {
            if matches!(self.sh.rt.state(&self.pref, &r.id).await, State::Running) {
                self.sh.rt.stop(&self.pref, &r.id, grace).await;
            }
        }
        self.refresh().await;
    }

    /// Removes the sandbox, containers and logs.
    async fn teardown(&mut self) {
        self.sh.directory.remove(&self.pref);
        if let Err(e) = self.sh.rt.teardown_sandbox(&self.pref).await {
            tracing::warn!(pod = %self.pref.name, error = %format!("{e:#}"), "tearing down the pod sandbox");
        }
        let logs = crate::logs::container_log_dir(
            &self.sh.log_root,
            &self.pref.namespace,
            &self.pref.name,
            &self.pref.uid,
        );
        let _ = tokio::fs::remove_dir_all(logs).await;
    }

    /// Tells the API server the pod is gone from the node: delete with grace 0 and the
    /// uid as precondition (a new pod of the same name is not touched).
    async fn confirm_deletion(&self) {
        let api: Api<Pod> = Api::namespaced(self.sh.client.clone(), &self.pref.namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.pref.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        for _ in 0..5 {
            match api.delete(&self.pref.name, &dp).await {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) => {
                    tracing::warn!(pod = %self.pref.name, error = %e, "confirming the deletion");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn write_status(&mut self) {
        self.write_status_with(false, false).await;
    }

    async fn write_status_with(&mut self, initialized: bool, init_failed: bool) {
        let policy = self.restart_policy();
        let mains: Vec<ContainerView> = self
            .slots
            .iter()
            .filter(|s| !s.init)
            .map(|s| s.view.clone())
            .collect();
        let inits: Vec<ContainerView> = self
            .slots
            .iter()
            .filter(|s| s.init)
            .map(|s| s.view.clone())
            .collect();
        let phase = status::phase(&policy, init_failed, initialized, &mains);
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let unready: Vec<&str> = mains
            .iter()
            .filter(|c| {
                terminal || !c.ready || c.current.as_ref().is_none_or(|a| a.exited.is_some())
            })
            .map(|c| c.name.as_str())
            .collect();
        let uninit: Vec<&str> = inits
            .iter()
            .filter(|c| {
                c.current
                    .as_ref()
                    .and_then(|a| a.exited.as_ref())
                    .is_none_or(|e| e.exit_code != 0)
            })
            .map(|c| c.name.as_str())
            .collect();
        let old = Some(&*self.pod);
        let ready_msg = format!("containers with unready status: [{}]", unready.join(" "));
        let mut conditions = vec![
            status::condition(
                old,
                "PodReadyToStartContainers",
                self.ip.is_some(),
                None,
                None,
            ),
            status::condition(
                old,
                "Initialized",
                initialized || uninit.is_empty(),
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    uninit.join(" ")
                )),
            ),
            status::condition(
                old,
                "Ready",
                unready.is_empty(),
                Some("ContainersNotReady"),
                Some(ready_msg.clone()),
            ),
            status::condition(
                old,
                "ContainersReady",
                unready.is_empty(),
                Some("ContainersNotReady"),
                Some(ready_msg),
            ),
        ];
        if let Some(sched) = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        {
            conditions.push(sched.clone());
        }
        if self.start_time.is_none() {
            self.start_time = Some(Time(jiff::Timestamp::now()));
        }
        let host_ip = self.sh.node_ip.to_string();
        let status = PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ip: self.ip.map(|i| i.to_string()),
            pod_ips: self.ip.map(|i| vec![PodIP { ip: i.to_string() }]),
            start_time: self.start_time.clone(),
            container_statuses: Some(mains.iter().map(status::container_status).collect()),
            init_container_statuses: (!inits.is_empty())
                .then(|| inits.iter().map(status::container_status).collect()),
            qos_class: self.pod.status.as_ref().and_then(|s| s.qos_class.clone()),
            message: self.sandbox_error.clone(),
            ..Default::default()
        };
        let value = json!({ "status": status });
        // lastTransitionTime moves only on a change, so equal values mean no news.
        if self.last_written.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.sh.client.clone(), &self.pref.namespace);
        match api
            .patch_status(
                &self.pref.name,
                &PatchParams::default(),
                &Patch::Merge(&value),
            )
            .await
        {
            Ok(p) => {
                self.last_written = Some(value);
                self.pod = Arc::new(p);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(pod = %self.pref.name, error = %e, "writing pod status"),
        }
    }
}
