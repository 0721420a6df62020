//! The node lifecycle controller: notices nodes whose agent went silent, marks them
//! Unknown, taints them, marks their pods not Ready, and evicts pods from nodes with
//! NoExecute taints once their tolerations run out (Kubernetes's node lifecycle controller
//! and taint eviction controller, v1.32).
//!
//! # Layout
//! - [`health`]: heartbeats as observed (our clock, not the agent's) and the Unknown
//!   conditions of a silent node.
//! - [`taints`]: the NoSchedule / NoExecute taints conditions call for.
//! - [`disruption`]: per-zone rate limits for NoExecute taints and the cluster-wide pause.
//! - [`eviction`]: toleration matching, eviction deadlines and the timer queue.
//! - [`mirror`]: the watch-fed caches, reporting old and new values.
//!
//! # How it runs
//! One task owns all state and `select!`s over: the Node, Lease (`kube-node-lease`) and
//! Pod watches; a tick every `node_monitor_period` (health, conditions, taints, pod
//! readiness — writes made concurrently, at most [`WRITE_CONCURRENCY`] at a time); the
//! earliest eviction deadline; and the results of eviction tasks. Evictions run as
//! spawned tasks so a slow API does not hold up watching.

pub mod disruption;
pub mod eviction;
pub mod health;
pub mod mirror;
pub mod taints;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::events::EventType;
use crate::Context;
use disruption::{zone_of, Disruption, Transition};
use eviction::{instant_of, verdict, Timers, Verdict};
use health::{grace_period, silent_conditions, Heartbeat, NodeHealth, Readiness};
use mirror::{Change, Mirror};

/// Namespace of the node agents' heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// API writes in flight at once, for the tick's writes and for evictions each.
const WRITE_CONCURRENCY: usize = 16;
/// Wait before trying a failed eviction again.
const EVICTION_RETRY: Duration = Duration::from_secs(5);

/// Runs the controller until the task is aborted. API errors are logged and retried (the
/// watches back off; failed writes are redone on a later tick or retry).
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let mut node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut lease_events = watcher(
        Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    let mut pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();

    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut c = Controller::new(ctx, done_tx);
    let mut tick = tokio::time::interval(c.ctx.settings.node_monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_timer = c.timers.next();
        tokio::select! {
            Some(ev) = node_events.next() => match ev {
                Ok(ev) => c.on_node_event(ev),
                Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
            },
            Some(ev) = lease_events.next() => match ev {
                Ok(ev) => c.on_lease_event(ev),
                Err(e) => tracing::warn!(error = %e, "node lease watch failed; retrying"),
            },
            Some(ev) = pod_events.next() => match ev {
                Ok(ev) => c.on_pod_event(ev),
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            },
            _ = tick.tick() => {
                if c.nodes.synced() && c.leases.synced() && c.pods.synced() {
                    c.monitor().await;
                }
            }
            _ = tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                c.on_timers();
            }
            Some((key, ok)) = done_rx.recv() => c.on_eviction_done(key, ok),
        }
    }
}

/// What eviction needs of a pod.
#[derive(Clone, Debug, PartialEq)]
struct PodInfo {
    namespace: String,
    name: String,
    uid: String,
    resource_version: String,
    node: String,
    tolerations: Vec<Toleration>,
    terminating: bool,
    /// Its Ready condition is True.
    ready: bool,
}

fn pod_key(p: &Pod) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

fn project_pod(p: &Pod) -> Option<(String, PodInfo)> {
    let spec = p.spec.as_ref()?;
    let node = spec.node_name.clone().filter(|n| !n.is_empty())?;
    let ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some((
        pod_key(p),
        PodInfo {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            resource_version: p.resource_version().unwrap_or_default(),
            node,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            terminating: p.metadata.deletion_timestamp.is_some(),
            ready,
        },
    ))
}

fn pod_ref(p: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Pod".to_string()),
        namespace: Some(p.namespace.clone()),
        name: Some(p.name.clone()),
        uid: Some(p.uid.clone()).filter(|u| !u.is_empty()),
        ..Default::default()
    }
}

/// A node's NoExecute taints and when this controller first saw that set (standing in for
/// a missing `timeAdded`).
struct NoExecute {
    taints: Vec<Taint>,
    observed: Timestamp,
}

fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter(|t| t.effect == taints::NO_EXECUTE)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

struct Controller {
    ctx: Context,
    nodes: Mirror<Node>,
    /// Lease renewTime by node name.
    leases: Mirror<Option<Timestamp>>,
    pods: Mirror<PodInfo>,
    pods_by_node: HashMap<String, HashSet<String>>,
    health: HashMap<String, NodeHealth>,
    disruption: Disruption,
    no_execute: HashMap<String, NoExecute>,
    /// Eviction deadlines (and retries) by pod key.
    timers: Timers<String>,
    /// Pods whose eviction task is running.
    evicting: HashSet<String>,
    eviction_slots: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<(String, bool)>,
}

impl Controller {
    fn new(ctx: Context, done_tx: mpsc::UnboundedSender<(String, bool)>) -> Controller {
        let s = &ctx.settings;
        let disruption = Disruption::new(s.node_eviction_rate, s.secondary_node_eviction_rate);
        Controller {
            ctx,
            nodes: Mirror::new(),
            leases: Mirror::new(),
            pods: Mirror::new(),
            pods_by_node: HashMap::new(),
            health: HashMap::new(),
            disruption,
            no_execute: HashMap::new(),
            timers: Timers::new(),
            evicting: HashSet::new(),
            eviction_slots: Arc::new(Semaphore::new(WRITE_CONCURRENCY)),
            done_tx,
        }
    }

    fn on_node_event(&mut self, ev: watcher::Event<Node>) {
        let changes = self.nodes.apply(
            ev,
            |n: &Node| Some((n.name_any(), n.clone())),
            |n: &Node| n.name_any(),
        );
        for Change { key, old, new } in changes {
            let old_taints = old.as_ref().map(no_execute_taints).unwrap_or_default();
            let new_taints = new.as_ref().map(no_execute_taints).unwrap_or_default();
            if new.is_none() {
                self.health.remove(&key);
            }
            if old_taints == new_taints && new.is_some() {
                continue;
            }
            if new_taints.is_empty() {
                self.no_execute.remove(&key);
            } else {
                self.no_execute.insert(
                    key.clone(),
                    NoExecute {
                        taints: new_taints,
                        observed: Timestamp::now(),
                    },
                );
            }
            let pods: Vec<String> = self
                .pods_by_node
                .get(&key)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            for pod in pods {
                self.evaluate(&pod);
            }
        }
    }

    fn on_lease_event(&mut self, ev: watcher::Event<Lease>) {
        self.leases.apply(
            ev,
            |l: &Lease| {
                let renew = l
                    .spec
                    .as_ref()
                    .and_then(|s| s.renew_time.as_ref())
                    .map(|t| t.0);
                Some((l.name_any(), renew))
            },
            |l: &Lease| l.name_any(),
        );
    }

    fn on_pod_event(&mut self, ev: watcher::Event<Pod>) {
        let changes = self.pods.apply(ev, project_pod, pod_key);
        for Change { key, old, new } in changes {
            let old_node = old.as_ref().map(|p| p.node.as_str());
            let new_node = new.as_ref().map(|p| p.node.as_str());
            if old_node != new_node {
                if let Some(n) = old_node {
                    if let Some(set) = self.pods_by_node.get_mut(n) {
                        set.remove(&key);
                        if set.is_empty() {
                            self.pods_by_node.remove(n);
                        }
                    }
                }
                if let Some(n) = new_node {
                    self.pods_by_node
                        .entry(n.to_string())
                        .or_default()
                        .insert(key.clone());
                }
            }
            let relevant = match (&old, &new) {
                (Some(o), Some(n)) => {
                    o.node != n.node
                        || o.tolerations != n.tolerations
                        || o.terminating != n.terminating
                        || o.uid != n.uid
                }
                _ => true,
            };
            if relevant {
                self.evaluate(&key);
            }
        }
    }

    /// Decides (again) what to do with one pod: nothing, evict now, or evict at a deadline.
    fn evaluate(&mut self, key: &String) {
        let Some(pod) = self.pods.get(key) else {
            self.timers.cancel(key);
            return;
        };
        if pod.terminating {
            self.timers.cancel(key);
            return;
        }
        let now = Timestamp::now();
        let v = match self.no_execute.get(&pod.node) {
            None => Verdict::Keep,
            Some(ne) => verdict(&ne.taints, &pod.tolerations, ne.observed, now),
        };
        match v {
            Verdict::Keep => {
                if self.timers.cancel(key) && !self.evicting.contains(key) {
                    self.ctx.events.publish(
                        pod_ref(pod),
                        EventType::Normal,
                        "TaintManagerEviction",
                        format!("Cancelling deletion of Pod {key}"),
                    );
                }
            }
            Verdict::EvictNow => self.evict(key),
            Verdict::EvictAt(at) => {
                if !self.evicting.contains(key) {
                    self.timers
                        .schedule(key.clone(), instant_of(at, now, Instant::now()));
                }
            }
        }
    }

    fn on_timers(&mut self) {
        for key in self.timers.pop_due(Instant::now()) {
            self.evaluate(&key);
        }
    }

    fn on_eviction_done(&mut self, key: String, ok: bool) {
        self.evicting.remove(&key);
        if !ok {
            // Look again later: the pod may be gone or tolerated by then.
            self.timers.schedule(key, Instant::now() + EVICTION_RETRY);
        }
    }

    /// Starts deleting a pod (once: a running eviction is not started again).
    fn evict(&mut self, key: &String) {
        self.timers.cancel(key);
        let Some(pod) = self.pods.get(key).cloned() else {
            return;
        };
        if !self.evicting.insert(key.clone()) {
            return;
        }
        let ctx = self.ctx.clone();
        let slots = self.eviction_slots.clone();
        let done = self.done_tx.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let ok = match slots.acquire_owned().await {
                Ok(_permit) => delete_pod(&ctx, &pod, &key).await,
                Err(_) => false,
            };
            // The receiver is gone only when the controller is; nothing to do then.
            let _ = done.send((key, ok));
        });
    }

    /// One health pass over all nodes (kube's `monitorNodeHealth`).
    async fn monitor(&mut self) {
        let now = Instant::now();
        let wall = Timestamp::now();
        let s = self.ctx.settings.clone();

        // Heartbeats.
        let names: HashSet<&String> = self.nodes.iter().map(|(k, _)| k).collect();
        self.health.retain(|k, _| names.contains(k));
        for (name, node) in self.nodes.iter() {
            let renew = self.leases.get(name).copied().flatten();
            let hb = Heartbeat::of(node, renew);
            match self.health.get_mut(name) {
                Some(h) => {
                    h.observe(hb, now);
                }
                None => {
                    self.health
                        .insert(name.clone(), NodeHealth::first_seen(hb, now));
                }
            }
        }

        // Silent nodes: conditions to Unknown.
        // None: never posted Ready and still within its startup grace period — no opinion.
        let mut readiness: BTreeMap<String, Option<Readiness>> = BTreeMap::new();
        let mut status_writes = Vec::new();
        for (name, node) in self.nodes.iter() {
            let before = Readiness::of(node);
            let grace = grace_period(
                node,
                s.node_monitor_grace_period,
                s.node_startup_grace_period,
            );
            let silent = self
                .health
                .get(name)
                .is_some_and(|h| h.is_silent(now, grace));
            let mut r = health::condition(node, "Ready").map(|_| before);
            if silent {
                r = Some(Readiness::Unknown);
                let conds = silent_conditions(node, wall);
                if !conds.is_empty() {
                    status_writes.push((node.clone(), conds, before));
                }
            }
            readiness.insert(name.clone(), r);
        }
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let results: Vec<(String, Result<Node, kube::Error>, Readiness, Node)> =
            stream::iter(status_writes)
                .map(|(node, conds, before)| {
                    let api = api.clone();
                    async move {
                        let name = node.name_any();
                        let patch = json!({
                            "metadata": {"resourceVersion": node.resource_version()},
                            "status": {"conditions": conds},
                        });
                        let r = api
                            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                            .await;
                        (name, r, before, node)
                    }
                })
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect()
                .await;
        // Nodes as written this tick, so the taint patch's resourceVersion is current.
        let mut fresh: HashMap<String, Node> = HashMap::new();
        for (name, r, before, node) in results {
            match r {
                Ok(updated) => {
                    tracing::info!(node = %name, "node stopped posting status; marked Unknown");
                    if before == Readiness::True {
                        self.ctx.events.normal(
                            &node,
                            "NodeNotReady",
                            format!("Node {name} status is now: NodeNotReady"),
                        );
                    }
                    fresh.insert(name, updated);
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "marking node Unknown failed; next tick retries");
                    // Its taints wait for the status to be written.
                    readiness.remove(&name);
                }
            }
        }

        // Zones and the eviction rate limits.
        let mut zones: HashMap<String, (usize, usize)> = HashMap::new();
        for (name, node) in self.nodes.iter() {
            // As kube, nodes without a Ready condition do not count towards zone states.
            match readiness.get(name) {
                Some(Some(Readiness::True)) => zones.entry(zone_of(node)).or_default().0 += 1,
                Some(Some(_)) => zones.entry(zone_of(node)).or_default().1 += 1,
                _ => {}
            }
        }
        match self.disruption.update(&zones, now) {
            Transition::Paused => tracing::warn!(
                "no node in any zone is Ready: assuming a control-plane network problem; \
                 NoExecute taints paused and removed"
            ),
            Transition::Resumed => {
                tracing::info!(
                    "nodes are Ready again: evictions resume after a fresh grace period"
                );
                for h in self.health.values_mut() {
                    h.reset(now);
                }
            }
            Transition::None => {}
        }

        // Taints.
        let paused = self.disruption.paused();
        let mut taint_writes = Vec::new();
        for (name, r) in &readiness {
            let Some(node) = fresh.get(name).or_else(|| self.nodes.get(name)) else {
                continue;
            };
            let may_add = taints::needs_no_execute_added(node, *r, paused)
                && self.disruption.try_take(&zone_of(node), now);
            if let Some(new) = taints::plan(node, *r, may_add, paused, wall) {
                taint_writes.push((name.clone(), node.resource_version(), new));
            }
        }
        let results: Vec<(String, kube::Result<Node>)> = stream::iter(taint_writes)
            .map(|(name, rv, new)| {
                let api = api.clone();
                async move {
                    let patch = json!({
                        "metadata": {"resourceVersion": rv},
                        "spec": {"taints": new},
                    });
                    let r = api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                    (name, r)
                }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for (name, r) in results {
            if let Err(e) = r {
                tracing::warn!(node = %name, error = %e, "updating node taints failed; next tick retries");
            }
        }

        // Pods on nodes that are not Ready are not Ready either (kube's MarkPodsNotReady).
        let mut pod_writes = Vec::new();
        for (name, r) in &readiness {
            if !matches!(r, Some(Readiness::False | Readiness::Unknown)) {
                continue;
            }
            for key in self.pods_by_node.get(name).into_iter().flatten() {
                if let Some(p) = self.pods.get(key) {
                    if p.ready && !p.terminating {
                        pod_writes.push(p.clone());
                    }
                }
            }
        }
        let ctx = self.ctx.clone();
        stream::iter(pod_writes)
            .for_each_concurrent(WRITE_CONCURRENCY, |p| {
                let ctx = ctx.clone();
                async move { mark_pod_not_ready(&ctx, &p, wall).await }
            })
            .await;
    }
}

/// Sets the pod's Ready condition to False (reason and message kept, as kube does), only
/// if the pod is still the version read.
async fn mark_pod_not_ready(ctx: &Context, p: &PodInfo, now: Timestamp) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.namespace);
    let patch = json!({
        "metadata": {"resourceVersion": p.resource_version},
        "status": {"conditions": [{
            "type": "Ready",
            "status": "False",
            "lastTransitionTime": Time(now),
        }]},
    });
    match api
        .patch_status(&p.name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => ctx.events.publish(
            pod_ref(p),
            EventType::Warning,
            "NodeNotReady",
            "Node is not ready".to_string(),
        ),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
            // Gone, or changed since read: the next tick sees the new version.
        }
        Err(e) => {
            tracing::warn!(pod = %format!("{}/{}", p.namespace, p.name), error = %e, "marking pod not ready failed")
        }
    }
}

/// Evicts one pod: a `DisruptionTarget` condition saying why, then a graceful DELETE
/// guarded by the pod's uid (a pod recreated under the same name is left alone). Returns
/// whether the pod is gone or going.
async fn delete_pod(ctx: &Context, p: &PodInfo, key: &str) -> bool {
    ctx.events.publish(
        pod_ref(p),
        EventType::Normal,
        "TaintManagerEviction",
        format!("Marking for deletion Pod {key}"),
    );
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.namespace);
    let condition = json!({
        "status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": Time(Timestamp::now()),
        }]},
    });
    if let Err(e) = api
        .patch_status(
            &p.name,
            &PatchParams::default(),
            &Patch::Strategic(&condition),
        )
        .await
    {
        // The condition is informational; the eviction goes ahead without it.
        tracing::debug!(pod = %key, error = %e, "DisruptionTarget condition not written");
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(p.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&p.name, &dp).await {
        Ok(_) => {
            tracing::info!(pod = %key, node = %p.node, "evicted pod from tainted node");
            true
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
        Err(e) => {
            tracing::warn!(pod = %key, error = %e, "evicting pod failed; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(node: Option<&str>, ready: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn only_bound_pods_are_projected() {
        assert!(project_pod(&pod(None, "True")).is_none());
        assert!(project_pod(&pod(Some(""), "True")).is_none());
        let (key, info) = project_pod(&pod(Some("n1"), "True")).unwrap();
        assert_eq!(key, "ns/p");
        assert_eq!(info.node, "n1");
        assert!(info.ready);
        assert!(!project_pod(&pod(Some("n1"), "False")).unwrap().1.ready);
    }
}
