//! The pod garbage collector (Kubernetes's podgc, v1.32): force-deletes pods nothing else
//! will ever finish deleting. Every 20 s it removes
//! - **orphans**: pods bound to a node that no longer exists. A node missing from the cache
//!   is quarantined for 40 s (it may just not have arrived yet) and then looked up with a
//!   live GET; only a 404 condemns its pods;
//! - **terminating pods on out-of-service nodes**: pods with a deletionTimestamp on a node
//!   that is not Ready and carries the `node.kubernetes.io/out-of-service` taint (an
//!   operator's statement that the node is down for good and its pods may be forgotten);
//! - **unscheduled terminating pods**: a deletionTimestamp and no node, so no agent will
//!   confirm the deletion;
//! - **terminated pods beyond `terminated_pod_gc_threshold`**: phase Succeeded/Failed,
//!   evicted ones first, then oldest first.
//!
//! Before deleting, a pod not yet Succeeded/Failed is set to Failed (orphans also get a
//! `DisruptionTarget` condition, reason `DeletionByPodGC`), so controllers watching it see
//! it fail rather than vanish while Running. Deletion is forced (`gracePeriodSeconds=0`)
//! and guarded by the pod's uid.
//!
//! Like kube 1.32, pods stuck terminating on a node that is merely unreachable are *not*
//! force-deleted: the agent may still be running them, and forgetting them could let a
//! replacement with the same identity run twice. They go when the node returns, when the
//! node object is deleted (then they are orphans), or when the node is tainted
//! out-of-service. ReplicaSets do not wait for them (terminating pods do not count as
//! replicas), so replacements are not blocked.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::node_lifecycle::mirror::Mirror;
use crate::Context;

/// How often the collector runs.
const GC_PERIOD: Duration = Duration::from_secs(20);
/// How long a node missing from the cache waits before the live check.
pub const QUARANTINE: Duration = Duration::from_secs(40);
/// The taint that declares a node out of service.
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// Deletions in flight at once.
const CONCURRENCY: usize = 16;

/// What the collector needs of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub phase: String,
    pub terminating: bool,
    pub created: Option<Timestamp>,
    /// `status.reason == "Evicted"` (the agent evicted it).
    pub evicted: bool,
}

impl PodInfo {
    pub fn of(p: &Pod) -> PodInfo {
        let status = p.status.as_ref();
        PodInfo {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
            terminating: p.metadata.deletion_timestamp.is_some(),
            created: p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            evicted: status.and_then(|s| s.reason.as_deref()) == Some("Evicted"),
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the collector needs of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub ready: bool,
    pub out_of_service: bool,
}

impl NodeInfo {
    pub fn of(n: &Node) -> NodeInfo {
        NodeInfo {
            ready: n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            out_of_service: n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE)),
        }
    }
}

/// Succeeded or Failed (anything but Pending, Running, Unknown — as kube counts it).
pub fn is_terminated(p: &PodInfo) -> bool {
    !matches!(p.phase.as_str(), "Pending" | "Running" | "Unknown")
}

/// Terminating on a node that is not Ready and tainted out-of-service.
pub fn is_terminating_out_of_service(p: &PodInfo, node: Option<&NodeInfo>) -> bool {
    p.terminating && node.is_some_and(|n| !n.ready && n.out_of_service)
}

/// Terminating without ever having been bound.
pub fn is_unscheduled_terminating(p: &PodInfo) -> bool {
    p.terminating && p.node.is_empty()
}

/// The terminated pods to delete so that at most `threshold` remain: evicted first, then
/// oldest, then by name. `threshold` 0 keeps all.
pub fn terminated_over_threshold<'a>(pods: &[&'a PodInfo], threshold: usize) -> Vec<&'a PodInfo> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<&PodInfo> = pods.iter().copied().filter(|p| is_terminated(p)).collect();
    let excess = terminated.len().saturating_sub(threshold);
    if excess == 0 {
        return Vec::new();
    }
    terminated.sort_by(|a, b| {
        b.evicted
            .cmp(&a.evicted)
            .then(a.created.cmp(&b.created))
            .then(a.name.cmp(&b.name))
    });
    terminated.truncate(excess);
    terminated
}

/// Nodes pods are bound to that the cache does not have, with when each was first missed.
#[derive(Default)]
pub struct Quarantine {
    since: HashMap<String, Instant>,
}

impl Quarantine {
    /// Takes in the node names pods are bound to but the cache lacks, now. Returns those
    /// missing for at least [`QUARANTINE`], due for a live check; names no longer missing
    /// are forgotten.
    pub fn due(&mut self, missing: &HashSet<String>, now: Instant) -> Vec<String> {
        self.since.retain(|n, _| missing.contains(n));
        let mut due = Vec::new();
        for name in missing {
            let since = *self.since.entry(name.clone()).or_insert(now);
            if now.saturating_duration_since(since) >= QUARANTINE {
                due.push(name.clone());
            }
        }
        due.sort();
        due
    }

    /// The live check found the node: start over if it goes missing again.
    pub fn clear(&mut self, name: &str) {
        self.since.remove(name);
    }
}

/// Why a pod is collected; decides the status written before deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Orphaned,
    Other,
}

/// Runs the collector until the task is aborted.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let nodes_api: Api<Node> = Api::all(client.clone());
    let mut node_events = watcher(nodes_api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes: Mirror<NodeInfo> = Mirror::new();
    let mut pods: Mirror<PodInfo> = Mirror::new();
    let mut quarantine = Quarantine::default();
    let mut tick = tokio::time::interval(GC_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(ev) = node_events.next() => match ev {
                Ok(ev) => { nodes.apply(ev, |n: &Node| Some((n.name_any(), NodeInfo::of(n))), |n: &Node| n.name_any()); }
                Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
            },
            Some(ev) = pod_events.next() => match ev {
                Ok(ev) => { pods.apply(ev, |p: &Pod| { let i = PodInfo::of(p); Some((i.key(), i)) }, |p: &Pod| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())); }
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            },
            _ = tick.tick() => {
                if nodes.synced() && pods.synced() {
                    gc(&ctx, &nodes_api, &nodes, &pods, &mut quarantine).await;
                }
            }
        }
    }
}

async fn gc(
    ctx: &Context,
    nodes_api: &Api<Node>,
    nodes: &Mirror<NodeInfo>,
    pods: &Mirror<PodInfo>,
    quarantine: &mut Quarantine,
) {
    let all: Vec<&PodInfo> = pods.iter().map(|(_, p)| p).collect();
    let mut doomed: Vec<(PodInfo, Reason)> = Vec::new();
    let mut chosen: HashSet<String> = HashSet::new();
    let mut choose = |p: &PodInfo, r: Reason, doomed: &mut Vec<(PodInfo, Reason)>| {
        if chosen.insert(p.key()) {
            doomed.push((p.clone(), r));
        }
    };

    for p in terminated_over_threshold(&all, ctx.settings.terminated_pod_gc_threshold) {
        choose(p, Reason::Other, &mut doomed);
    }
    for p in &all {
        if is_terminating_out_of_service(p, nodes.get(&p.node)) {
            choose(p, Reason::Other, &mut doomed);
        }
    }

    let missing: HashSet<String> = all
        .iter()
        .filter(|p| !p.node.is_empty() && nodes.get(&p.node).is_none())
        .map(|p| p.node.clone())
        .collect();
    let mut gone: HashSet<String> = HashSet::new();
    for name in quarantine.due(&missing, Instant::now()) {
        match nodes_api.get_opt(&name).await {
            Ok(None) => {
                gone.insert(name);
            }
            Ok(Some(_)) => quarantine.clear(&name),
            Err(e) => tracing::warn!(node = %name, error = %e, "checking a missing node failed"),
        }
    }
    for p in &all {
        if gone.contains(&p.node) {
            choose(p, Reason::Orphaned, &mut doomed);
        }
    }
    for p in &all {
        if is_unscheduled_terminating(p) {
            choose(p, Reason::Other, &mut doomed);
        }
    }

    if doomed.is_empty() {
        return;
    }
    tracing::info!(pods = doomed.len(), "pod GC force-deleting pods");
    futures::stream::iter(doomed)
        .for_each_concurrent(CONCURRENCY, |(p, r)| async move {
            force_delete(ctx, &p, r).await;
        })
        .await;
}

/// Marks the pod Failed (unless it already ended) and deletes it with grace period 0.
async fn force_delete(ctx: &Context, p: &PodInfo, reason: Reason) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.namespace);
    let key = p.key();
    if p.phase != "Succeeded" && p.phase != "Failed" {
        let mut status = json!({"phase": "Failed"});
        if reason == Reason::Orphaned {
            status["conditions"] = json!([{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists",
                "lastTransitionTime": Time(Timestamp::now()),
            }]);
        }
        let patch = json!({"metadata": {"uid": p.uid}, "status": status});
        match api
            .patch_status(&p.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                // As kube: no deletion without the Failed phase; the next pass retries.
                tracing::warn!(pod = %key, error = %e, "marking pod Failed before GC failed");
                return;
            }
        }
    }
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(p.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&p.name, &dp).await {
        Ok(_) => tracing::info!(pod = %key, node = %p.node, "pod GC force-deleted pod"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => {
            tracing::warn!(pod = %key, error = %e, "pod GC deletion failed; next pass retries")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, terminating: bool) -> PodInfo {
        PodInfo {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            node: node.into(),
            phase: phase.into(),
            terminating,
            created: None,
            evicted: false,
        }
    }

    #[test]
    fn terminated_means_not_pending_running_or_unknown() {
        assert!(is_terminated(&pod("a", "n", "Succeeded", false)));
        assert!(is_terminated(&pod("a", "n", "Failed", false)));
        assert!(!is_terminated(&pod("a", "n", "Running", false)));
        assert!(!is_terminated(&pod("a", "n", "Pending", false)));
        assert!(!is_terminated(&pod("a", "n", "Unknown", false)));
    }

    #[test]
    fn out_of_service_needs_terminating_not_ready_and_the_taint() {
        let oos = NodeInfo {
            ready: false,
            out_of_service: true,
        };
        let t = pod("a", "n", "Running", true);
        assert!(is_terminating_out_of_service(&t, Some(&oos)));
        assert!(!is_terminating_out_of_service(
            &pod("a", "n", "Running", false),
            Some(&oos)
        ));
        assert!(!is_terminating_out_of_service(&t, None));
        assert!(!is_terminating_out_of_service(
            &t,
            Some(&NodeInfo {
                ready: true,
                out_of_service: true
            })
        ));
        // Merely unreachable: left alone, as in kube.
        assert!(!is_terminating_out_of_service(
            &t,
            Some(&NodeInfo {
                ready: false,
                out_of_service: false
            })
        ));
    }

    #[test]
    fn unscheduled_terminating() {
        assert!(is_unscheduled_terminating(&pod("a", "", "Pending", true)));
        assert!(!is_unscheduled_terminating(&pod("a", "", "Pending", false)));
        assert!(!is_unscheduled_terminating(&pod("a", "n", "Running", true)));
    }

    #[test]
    fn threshold_deletes_evicted_then_oldest() {
        let ts = |s| Some(Timestamp::from_second(s).unwrap());
        let mut a = pod("a", "n", "Succeeded", false);
        a.created = ts(10);
        let mut b = pod("b", "n", "Failed", false);
        b.created = ts(30);
        b.evicted = true;
        let mut c = pod("c", "n", "Failed", false);
        c.created = ts(20);
        let running = pod("r", "n", "Running", false);
        let all = [&a, &b, &c, &running];
        let names = |v: Vec<&PodInfo>| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(terminated_over_threshold(&all, 1)), ["b", "a"]);
        assert_eq!(names(terminated_over_threshold(&all, 2)), ["b"]);
        assert!(terminated_over_threshold(&all, 3).is_empty());
        assert!(terminated_over_threshold(&all, 0).is_empty());
    }

    #[test]
    fn quarantine_waits_40s_and_forgets_nodes_that_reappear() {
        let t0 = Instant::now();
        let mut q = Quarantine::default();
        let missing: HashSet<String> = ["n1".to_string()].into();
        assert!(q.due(&missing, t0).is_empty());
        assert!(q.due(&missing, t0 + Duration::from_secs(39)).is_empty());
        assert_eq!(q.due(&missing, t0 + QUARANTINE), ["n1"]);
        // n1 shows up in the cache: forgotten; missing again later starts a new quarantine.
        assert!(q
            .due(&HashSet::new(), t0 + Duration::from_secs(41))
            .is_empty());
        assert!(q.due(&missing, t0 + Duration::from_secs(50)).is_empty());
        assert!(q.due(&missing, t0 + Duration::from_secs(89)).is_empty());
        assert_eq!(q.due(&missing, t0 + Duration::from_secs(90)), ["n1"]);
        q.clear("n1");
        assert!(q.due(&missing, t0 + Duration::from_secs(91)).is_empty());
    }
}
