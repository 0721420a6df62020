//! The scheduler: places pending pods on nodes.
//!
//! Pods without `spec.nodeName` whose `schedulerName` is ours (empty means
//! `default-scheduler`) go through the filters and scores of [`placement`]; the winner is
//! assumed in the [`cache`] at once and the binding (`pods/binding`, refused with 409 if
//! the pod is already bound) is written asynchronously with bounded concurrency, so
//! decisions never wait for the API server. A pod that fits nowhere gets
//! `PodScheduled=False` (reason `Unschedulable`, kube-scheduler's message) and a
//! `FailedScheduling` event, and waits in the [`queue`] until a node or pod event could
//! help, or a minute has passed.
//!
//! ```text
//!  node informer ─┐                       ┌──────────── lock ────────────┐
//!                 ├─► events ─► State { cache, queue, placer } ◄── decision loop
//!  pod informer  ─┘                       └──────────────────────────────┘   │ assume
//!                                  ▲ done / forget + requeue                  ▼
//!                                  └──────────────────────── bind tasks (≤ N in flight)
//! ```
//!
//! # Layout
//! - [`quantity`]: Kubernetes resource quantities, parsed exactly.
//! - [`selector`], [`taint`]: label / node selectors, taints and tolerations.
//! - [`pod`], [`node`]: the compact views of pods and nodes the decisions read.
//! - [`cache`]: nodes with their placed (assumed or bound) pods, updated incrementally.
//! - [`filter`], [`score`]: the filters and scores; [`placement`]: one decision.
//! - [`queue`]: active / backoff / unschedulable pods.
//! - this file: informers, the decision loop, binding, status and events (the I/O).
//!
//! # Not supported
//! Preemption; pod topology spread constraints; preferred pod (anti-)affinity;
//! `namespaceSelector`s with requirements in pod affinity terms (an empty one selects
//! every namespace; a non-empty one adds no namespaces, since the scheduler does not watch
//! namespace labels); volumes and host ports.

pub mod cache;
pub mod filter;
pub mod node;
pub mod placement;
pub mod pod;
pub mod quantity;
pub mod queue;
pub mod score;
pub mod selector;
pub mod taint;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::EventType;
use crate::Context;
use cache::Cache;
use node::NodeData;
use placement::{FitError, Placer};
use pod::{classify, PodInfo, PodView, ScheduledCondition};
use queue::{Popped, QueueConfig, SchedulingQueue};

/// The scheduler's name in `spec.schedulerName` and in events.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Status writes (`PodScheduled=False`) in flight at most; further ones are skipped and
/// retried at the pod's next attempt (the condition is still stale then).
const STATUS_WRITES: usize = 16;
/// Decisions between voluntary yields of the decision loop, so informer tasks on the
/// same worker keep up.
const DECISIONS_PER_YIELD: u32 = 32;
/// Longest idle sleep when nothing is due; bounds the effect of a missed wake-up.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Tuning of the scheduler.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bindings in flight at most; the decision loop waits for a slot.
    pub bind_concurrency: usize,
    /// Percentage of nodes evaluated per decision (100: all; 0: kube's adaptive value).
    /// Clusters under 100 nodes are always evaluated in full.
    pub percentage_of_nodes_to_score: u32,
    /// Pods naming this scheduler (or none) are scheduled.
    pub scheduler_name: String,
    pub queue: QueueConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bind_concurrency: 64,
            percentage_of_nodes_to_score: 100,
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            queue: QueueConfig::default(),
        }
    }
}

/// Runs the scheduler with default [`Options`] until the task is aborted.
///
/// # Errors
/// Only if a background task fails unexpectedly; API errors are logged and retried.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    run_with(ctx, Options::default()).await
}

/// Runs the scheduler with `opts` until the task is aborted (dropping the future stops
/// the informers and in-flight bindings too).
///
/// # Errors
/// Only if a background task fails unexpectedly; API errors are logged and retried.
pub async fn run_with(ctx: Context, opts: Options) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            cache: Cache::new(),
            queue: SchedulingQueue::new(opts.queue),
            placer: Placer::new(opts.percentage_of_nodes_to_score, None),
            nodes_seen: None,
            pods_seen: None,
            nodes_synced: false,
            pods_synced: false,
        }),
        wake: Notify::new(),
        synced: Notify::new(),
        scheduler_name: opts.scheduler_name.clone(),
    });
    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    spawn_until(&stop, watch_nodes(ctx.client.clone(), shared.clone()));
    spawn_until(&stop, watch_pods(ctx.client.clone(), shared.clone()));

    // Decide only on a full picture: a pod placed before all nodes and bound pods are
    // known could overcommit a node.
    loop {
        let synced = shared.synced.notified();
        if shared.is_synced() {
            break;
        }
        synced.await;
    }
    // One lock, read into locals: two `lock()` temporaries in one statement would both
    // live to its end and deadlock on the second.
    let (nodes, pending) = {
        let st = shared.state.lock();
        (st.cache.node_count(), st.queue.len())
    };
    tracing::info!(nodes, pending, "scheduler caches synced");
    decision_loop(ctx, shared, opts, stop).await
}

/// Everything behind the lock. Decisions and event handling are short and never await
/// while holding it.
struct State {
    cache: Cache,
    queue: SchedulingQueue,
    placer: Placer,
    /// During a relist: the names / UIDs listed so far (anything else is gone).
    nodes_seen: Option<HashSet<String>>,
    pods_seen: Option<HashSet<Arc<str>>>,
    nodes_synced: bool,
    pods_synced: bool,
}

struct Shared {
    state: Mutex<State>,
    /// A pod became active.
    wake: Notify,
    /// An informer finished its first list.
    synced: Notify,
    scheduler_name: String,
}

impl Shared {
    fn is_synced(&self) -> bool {
        let st = self.state.lock();
        st.nodes_synced && st.pods_synced
    }
}

fn spawn_until<F>(stop: &CancellationToken, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = fut => {}
        }
    });
}

async fn watch_nodes(client: kube::Client, shared: Arc<Shared>) {
    let api: Api<Node> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed; retrying");
                continue;
            }
        };
        let now = Instant::now();
        let mut st = shared.state.lock();
        let st = &mut *st;
        let mut changed = false;
        match ev {
            watcher::Event::Init => st.nodes_seen = Some(HashSet::new()),
            watcher::Event::InitApply(n) | watcher::Event::Apply(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                if let Some(seen) = &mut st.nodes_seen {
                    seen.insert(name.clone());
                }
                changed = st.cache.set_node(&name, NodeData::from_node(&n));
            }
            watcher::Event::Delete(n) => {
                st.cache
                    .remove_node(n.metadata.name.as_deref().unwrap_or_default());
            }
            watcher::Event::InitDone => {
                if let Some(seen) = st.nodes_seen.take() {
                    for name in st.cache.node_names() {
                        if !seen.contains(&*name) {
                            st.cache.remove_node(&name);
                        }
                    }
                }
                if !st.nodes_synced {
                    st.nodes_synced = true;
                    shared.synced.notify_waiters();
                }
                // Anything may have changed while the watch was down.
                changed = true;
            }
        }
        // A node that appeared or changed (labels, taints, allocatable, readiness) may
        // take pods that fit nowhere before.
        if changed && st.queue.move_unschedulable(now, |_| true) {
            shared.wake.notify_one();
        }
    }
}

async fn watch_pods(client: kube::Client, shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        let now = Instant::now();
        let mut st = shared.state.lock();
        let st = &mut *st;
        let wake = match ev {
            watcher::Event::Init => {
                st.pods_seen = Some(HashSet::new());
                false
            }
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                let view = classify(&p, &shared.scheduler_name);
                let uid: Arc<str> = Arc::from(p.metadata.uid.as_deref().unwrap_or_default());
                if let Some(seen) = &mut st.pods_seen {
                    seen.insert(uid.clone());
                }
                apply_pod(st, uid, view, now)
            }
            watcher::Event::Delete(p) => {
                let uid: Arc<str> = Arc::from(p.metadata.uid.as_deref().unwrap_or_default());
                apply_pod(st, uid, PodView::Inactive, now)
            }
            watcher::Event::InitDone => {
                let mut wake = false;
                if let Some(seen) = st.pods_seen.take() {
                    let known = st.cache.pod_uids().into_iter().chain(st.queue.uids());
                    let gone: Vec<Arc<str>> = known.filter(|u| !seen.contains(u)).collect();
                    for uid in gone {
                        wake |= apply_pod(st, uid, PodView::Inactive, now);
                    }
                }
                if !st.pods_synced {
                    st.pods_synced = true;
                    shared.synced.notify_waiters();
                }
                wake
            }
        };
        if wake {
            shared.wake.notify_one();
        }
    }
}

/// Applies what the informer reports about one pod. Returns whether a pod became active.
fn apply_pod(st: &mut State, uid: Arc<str>, view: PodView, now: Instant) -> bool {
    match view {
        PodView::Assigned(info, node) => {
            st.queue.remove(&uid);
            let new = !st.cache.contains_pod(&uid) || st.cache.is_assumed(&uid);
            st.cache.add_bound(Arc::new(info), &node);
            // A newly placed pod can satisfy another pod's required pod affinity.
            new && st
                .queue
                .move_unschedulable(now, |p| !p.required_pod_affinity.is_empty())
        }
        PodView::Unassigned(info, condition) => {
            // Placed by us and not in the queue: the binding went through and the
            // informer has not caught up yet. Nothing to do.
            if st.cache.contains_pod(&uid) && !st.queue.contains(&uid) {
                return false;
            }
            st.queue.add(Arc::new(info), condition, now)
        }
        PodView::Inactive => {
            st.queue.remove(&uid);
            // Resources were freed (and anti-affinity may be lifted): retry.
            st.cache.remove_pod(&uid) && st.queue.move_unschedulable(now, |_| true)
        }
    }
}

enum Outcome {
    Idle(Option<Instant>),
    Bind(Popped, Arc<str>),
    Unschedulable(Popped, FitError),
    Skip,
}

async fn decision_loop(
    ctx: Context,
    shared: Arc<Shared>,
    opts: Options,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let binds = Arc::new(Semaphore::new(opts.bind_concurrency.max(1)));
    let writes = Arc::new(Semaphore::new(STATUS_WRITES));
    let mut since_yield = 0u32;
    loop {
        let permit = binds.clone().acquire_owned().await?;
        let now = Instant::now();
        let outcome = {
            let mut st = shared.state.lock();
            let st = &mut *st;
            match st.queue.pop(now) {
                None => Outcome::Idle(st.queue.next_wakeup()),
                // Already placed (cannot normally happen: placed pods leave the queue).
                Some(p) if st.cache.contains_pod(&p.pod.uid) => {
                    st.queue.done(&p.pod.uid);
                    Outcome::Skip
                }
                Some(p) => match st.placer.place(&p.pod, &st.cache) {
                    Ok(i) => {
                        let node = st.cache.nodes()[i].name.clone();
                        st.cache.assume(p.pod.clone(), &node);
                        Outcome::Bind(p, node)
                    }
                    Err(fit) => {
                        st.queue.unschedulable(&p.pod.uid, now);
                        Outcome::Unschedulable(p, fit)
                    }
                },
            }
        };
        match outcome {
            Outcome::Idle(next) => {
                drop(permit);
                let until = next.unwrap_or(now + IDLE_TICK).min(now + IDLE_TICK);
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
                continue;
            }
            Outcome::Skip => {}
            Outcome::Bind(p, node) => {
                let fut = bind(ctx.clone(), shared.clone(), p, node, permit);
                spawn_until(&stop, fut);
            }
            Outcome::Unschedulable(p, fit) => {
                drop(permit);
                report_unschedulable(&ctx, &p, &fit, &writes, &stop);
            }
        }
        since_yield += 1;
        if since_yield >= DECISIONS_PER_YIELD {
            since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
}

fn pod_ref(pod: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Pod".to_string()),
        namespace: Some(pod.namespace.to_string()),
        name: Some(pod.name.to_string()),
        uid: Some(pod.uid.to_string()),
        ..ObjectReference::default()
    }
}

/// The `pods/binding` body: the pod's UID makes the server refuse it if the pod was
/// replaced by another of the same name.
fn binding(pod: &PodInfo, node: &str) -> Binding {
    Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.to_string()),
            namespace: Some(pod.namespace.to_string()),
            uid: Some(pod.uid.to_string()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(node.to_string()),
            ..ObjectReference::default()
        },
    }
}

async fn bind(
    ctx: Context,
    shared: Arc<Shared>,
    p: Popped,
    node: Arc<str>,
    permit: OwnedSemaphorePermit,
) {
    let pod = &p.pod;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace);
    let res = api
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            &pod.name,
            &PostParams::default(),
            &binding(pod, &node),
        )
        .await;
    drop(permit);
    let now = Instant::now();
    match res {
        Ok(_) => {
            shared.state.lock().queue.done(&pod.uid);
            ctx.events.publish(
                pod_ref(pod),
                EventType::Normal,
                "Scheduled",
                format!(
                    "Successfully assigned {}/{} to {node}",
                    pod.namespace, pod.name
                ),
            );
        }
        Err(e) => {
            let status = match &e {
                kube::Error::Api(s) => Some(s.code),
                _ => None,
            };
            let retry = {
                let mut st = shared.state.lock();
                let st = &mut *st;
                let freed = st.cache.forget(&pod.uid);
                if status == Some(404) {
                    // Deleted: nothing left to place.
                    st.queue.remove(&pod.uid);
                } else {
                    // Retried after backoff unless the informer reports it bound or
                    // deleted first (a 409 "already assigned" resolves that way).
                    st.queue.error(&pod.uid, now);
                }
                // The assumption held resources other pods may have been refused for.
                if freed && st.queue.move_unschedulable(now, |_| true) {
                    shared.wake.notify_one();
                }
                st.queue.contains(&pod.uid)
            };
            if status == Some(409) || status == Some(404) {
                tracing::debug!(pod = %pod.name, namespace = %pod.namespace, %node, error = %e, "binding refused");
            } else {
                tracing::warn!(pod = %pod.name, namespace = %pod.namespace, %node, error = %e, "binding failed");
            }
            if retry && status != Some(409) {
                ctx.events.publish(
                    pod_ref(pod),
                    EventType::Warning,
                    "FailedScheduling",
                    format!("Binding rejected: {e}"),
                );
            }
        }
    }
}

/// The condition an unschedulable pod should carry.
fn unschedulable_condition(fit: &FitError) -> ScheduledCondition {
    ScheduledCondition {
        status: "False".to_string(),
        reason: "Unschedulable".to_string(),
        message: fit.to_string(),
    }
}

/// The strategic-merge patch of `pods/status` that sets `wanted` (conditions merge by
/// `type`). `lastTransitionTime` only moves when the status changes.
fn condition_patch(
    wanted: &ScheduledCondition,
    current: Option<&ScheduledCondition>,
    now: Timestamp,
) -> serde_json::Value {
    let mut cond = serde_json::json!({
        "type": "PodScheduled",
        "status": wanted.status,
        "reason": wanted.reason,
        "message": wanted.message,
        "lastProbeTime": null,
    });
    if current.is_none_or(|c| c.status != wanted.status) {
        cond["lastTransitionTime"] = serde_json::json!(Time(now));
    }
    serde_json::json!({"status": {"conditions": [cond]}})
}

fn report_unschedulable(
    ctx: &Context,
    p: &Popped,
    fit: &FitError,
    writes: &Arc<Semaphore>,
    stop: &CancellationToken,
) {
    let wanted = unschedulable_condition(fit);
    tracing::debug!(pod = %p.pod.name, namespace = %p.pod.namespace, attempts = p.attempts, reason = %wanted.message, "unschedulable");
    ctx.events.publish(
        pod_ref(&p.pod),
        EventType::Warning,
        "FailedScheduling",
        wanted.message.clone(),
    );
    if p.condition.as_ref() == Some(&wanted) {
        return;
    }
    let Ok(permit) = writes.clone().try_acquire_owned() else {
        return;
    };
    let patch = condition_patch(&wanted, p.condition.as_ref(), Timestamp::now());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.pod.namespace);
    let name = p.pod.name.to_string();
    spawn_until(stop, async move {
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::debug!(pod = %name, error = %e, "PodScheduled condition not written");
        }
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scheduler::cache::tests::{node_data, pod};

    fn state() -> State {
        State {
            cache: Cache::new(),
            queue: SchedulingQueue::new(QueueConfig::default()),
            placer: Placer::new(100, Some(1)),
            nodes_seen: None,
            pods_seen: None,
            nodes_synced: true,
            pods_synced: true,
        }
    }

    fn unassigned(p: &Arc<PodInfo>) -> PodView {
        PodView::Unassigned((**p).clone(), None)
    }

    #[test]
    fn stale_pending_event_after_a_binding_does_not_requeue() {
        let now = Instant::now();
        let mut st = state();
        st.cache.set_node("n1", node_data(1000, 1000, 10));
        let p = pod("p", 100, 100, None);
        assert!(apply_pod(&mut st, p.uid.clone(), unassigned(&p), now));
        let popped = st.queue.pop(now).unwrap();
        st.cache.assume(popped.pod.clone(), "n1");
        st.queue.done(&p.uid); // binding succeeded
        assert!(!apply_pod(&mut st, p.uid.clone(), unassigned(&p), now));
        assert!(!st.queue.contains(&p.uid));
        // The informer confirms: counted once.
        apply_pod(
            &mut st,
            p.uid.clone(),
            PodView::Assigned((*p).clone(), "n1".into()),
            now,
        );
        assert_eq!(st.cache.node("n1").unwrap().requested.cpu, 100);
        assert!(!st.cache.is_assumed(&p.uid));
    }

    #[test]
    fn deleting_a_bound_pod_retries_unschedulable_pods() {
        let now = Instant::now();
        let mut st = state();
        st.cache.set_node("n1", node_data(1000, 1000, 10));
        let big = pod("big", 900, 0, None);
        apply_pod(
            &mut st,
            big.uid.clone(),
            PodView::Assigned((*big).clone(), "n1".into()),
            now,
        );
        let p = pod("p", 500, 0, None);
        apply_pod(&mut st, p.uid.clone(), unassigned(&p), now);
        let popped = st.queue.pop(now).unwrap();
        let err = st.placer.place(&popped.pod, &st.cache).unwrap_err();
        assert_eq!(
            err.reasons,
            BTreeMap::from([("Insufficient cpu".to_string(), 1)])
        );
        st.queue.unschedulable(&p.uid, now);
        let later = now + Duration::from_secs(5);
        assert!(st.queue.pop(later).is_none());
        assert!(apply_pod(
            &mut st,
            big.uid.clone(),
            PodView::Inactive,
            later
        ));
        let again = st.queue.pop(later).unwrap();
        assert!(st.placer.place(&again.pod, &st.cache).is_ok());
    }

    #[test]
    fn condition_patch_moves_transition_time_only_on_status_change() {
        let fit = FitError {
            nodes: 1,
            reasons: BTreeMap::from([("Insufficient cpu".to_string(), 1)]),
        };
        let wanted = unschedulable_condition(&fit);
        assert_eq!(
            wanted.message,
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
        let now = Timestamp::UNIX_EPOCH;
        let fresh = condition_patch(&wanted, None, now);
        let c = &fresh["status"]["conditions"][0];
        assert_eq!(c["type"], "PodScheduled");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "Unschedulable");
        assert_eq!(c["lastTransitionTime"], "1970-01-01T00:00:00Z");
        let older = ScheduledCondition {
            message: "other".into(),
            ..wanted.clone()
        };
        let again = condition_patch(&wanted, Some(&older), now);
        assert!(again["status"]["conditions"][0]
            .get("lastTransitionTime")
            .is_none());
    }

    #[test]
    fn binding_body_names_pod_uid_and_node() {
        let b = serde_json::to_value(binding(&pod("u1", 0, 0, None), "n7")).unwrap();
        assert_eq!(b["kind"], "Binding");
        assert_eq!(b["apiVersion"], "v1");
        assert_eq!(b["metadata"]["name"], "u1");
        assert_eq!(b["metadata"]["uid"], "u1");
        assert_eq!(b["target"]["kind"], "Node");
        assert_eq!(b["target"]["name"], "n7");
    }

    /// Live trial against a running `skiff server`: `SKIFF_TRIAL_KUBECONFIG=<path> cargo
    /// test -p skiff-controllers live_trial -- --ignored --nocapture`. Registers
    /// `SKIFF_TRIAL_NODES` simulated nodes, creates `SKIFF_TRIAL_PODS` pods, and reports
    /// how fast they were bound and that no node is overcommitted; then keeps scheduling
    /// for `SKIFF_TRIAL_HOLD_SECS`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a running skiff server"]
    async fn live_trial() {
        use futures::stream::{self, StreamExt};
        use kube::api::ListParams;
        use kube::config::{KubeConfigOptions, Kubeconfig};
        use serde_json::json;

        let Ok(path) = std::env::var("SKIFF_TRIAL_KUBECONFIG") else {
            return;
        };
        let env = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let (nodes, pods) = (env("SKIFF_TRIAL_NODES", 100), env("SKIFF_TRIAL_PODS", 3000));
        let kc = Kubeconfig::read_from(path).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let node_api: Api<Node> = Api::all(client.clone());
        stream::iter(0..nodes)
            .for_each_concurrent(32, |i| {
                let api = node_api.clone();
                async move {
                    let name = format!("trial-{i:04}");
                    let n: Node = serde_json::from_value(json!({"metadata": {"name": name,
                        "labels": {"kubernetes.io/hostname": name}}}))
                    .unwrap();
                    let _ = api.create(&PostParams::default(), &n).await;
                    let status = json!({"status": {
                        "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                        "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                        "conditions": [{"type": "Ready", "status": "True"}]}});
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .unwrap();
                }
            })
            .await;
        let ctx = Context {
            client: client.clone(),
            events: crate::events::Recorder::new(client.clone(), DEFAULT_SCHEDULER_NAME, "trial"),
            settings: Arc::new(crate::Settings::default()),
        };
        let sched = tokio::spawn(run(ctx));
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let start = std::time::Instant::now();
        stream::iter(0..pods)
            .for_each_concurrent(64, |i| {
                let api = pod_api.clone();
                async move {
                    let cpu = ["100m", "50m", "0.1"][i % 3];
                    let p: Pod = serde_json::from_value(json!({
                        "metadata": {"name": format!("trial-{i}"), "ownerReferences": [{
                            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                            "uid": format!("owner-{}", i % 5), "controller": true}]},
                        "spec": {"containers": [{"name": "c", "image": "pause",
                            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}
                    }))
                    .unwrap();
                    api.create(&PostParams::default(), &p).await.unwrap();
                }
            })
            .await;
        let created = start.elapsed();
        loop {
            let pending = pod_api
                .list(&ListParams::default().fields("spec.nodeName="))
                .await
                .unwrap()
                .items
                .len();
            if pending == 0 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "{pending} pods still pending"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let all = start.elapsed();
        println!(
            "{pods} pods on {nodes} nodes: created in {created:?}, all bound after {all:?} ({:.0} pods/s)",
            pods as f64 / all.as_secs_f64()
        );
        let mut per_node: std::collections::HashMap<String, (i64, usize)> = Default::default();
        for p in pod_api.list(&ListParams::default()).await.unwrap().items {
            let info = PodInfo::from_pod(&p);
            let e = per_node
                .entry(p.spec.unwrap().node_name.unwrap())
                .or_default();
            e.0 += info.request.cpu;
            e.1 += 1;
        }
        let counts: Vec<usize> = per_node.values().map(|e| e.1).collect();
        println!(
            "pods per node: min {:?} max {:?}",
            counts.iter().min(),
            counts.iter().max()
        );
        assert!(per_node.values().all(|(cpu, n)| *cpu <= 4000 && *n <= 110));
        // Keeps scheduling for a while, to try more pods by hand (kubectl).
        tokio::time::sleep(Duration::from_secs(env("SKIFF_TRIAL_HOLD_SECS", 0) as u64)).await;
        sched.abort();
    }
}
