//! The ReplicaSet controller: keeps `spec.replicas` pods matching each ReplicaSet's
//! selector, adopting matching orphans and releasing owned pods that stopped matching,
//! and reports status (replicas, fullyLabeled, ready, available, observedGeneration).
//!
//! Level-triggered: any change to a ReplicaSet or to a pod marks the ReplicaSets it
//! concerns dirty; a periodic pass re-checks all of them (availability after
//! `minReadySeconds` is a matter of time, not of events). A sync's writes are followed by
//! a wait until the informer cache shows them, which plays the role of Kubernetes's
//! "expectations": a later sync never counts from a cache that misses its own creates or
//! deletes, so informer lag cannot cause double creates.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::scheduler::selector::LabelSelector;
use crate::Context;

/// Pods created or deleted per sync at most (Kubernetes's burstReplicas).
const BURST: usize = 500;
/// Requests in flight within one slow-start batch.
const IN_FLIGHT: usize = 100;
/// Every ReplicaSet is looked at again this often.
const RESYNC: Duration = Duration::from_secs(2);
/// How long a sync waits for the cache to show its own writes.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `pod` counts toward its ReplicaSet: not being deleted, not finished.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When `pod` became Ready, if it is.
fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        c.last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
    )
}

/// Ready for at least `min_ready` seconds at `now`.
pub fn is_available(pod: &Pod, min_ready: i64, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready <= 0 => true,
        Some(t) => t.as_second() + min_ready <= now.as_second(),
    }
}

/// The controller ownerReference of `meta`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Deletion preference, lowest first (as Kubernetes ranks): unassigned before assigned,
/// Pending before Unknown before Running, not ready before ready, ready more recently
/// before longer, more restarts before fewer, newer before older.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, i64, i64, i64) {
    let assigned = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready = ready_since(p);
    let restarts: i64 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| i64::from(c.restart_count)).sum());
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    (
        u8::from(assigned),
        phase,
        u8::from(ready.is_some()),
        -ready.map_or(0, |t| t.as_second()),
        -restarts,
        -created,
    )
}

/// What one sync of a ReplicaSet must do.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Orphans matching the selector, to adopt.
    pub adopt: Vec<String>,
    /// Owned pods no longer matching, to release.
    pub release: Vec<String>,
    /// Pods to create.
    pub create: usize,
    /// Pods to delete, best candidates first.
    pub delete: Vec<String>,
}

/// The plan for `rs` given every pod of its namespace.
pub fn plan(rs: &ReplicaSet, pods: &[Arc<Pod>]) -> Plan {
    let uid = rs.metadata.uid.as_deref().unwrap_or("");
    let selector = LabelSelector::compile(rs.spec.as_ref().map(|s| &s.selector));
    let want = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    let mut out = Plan::default();
    let mut active: Vec<&Pod> = Vec::new();
    for p in pods {
        let matches = selector.matches(&p.labels().clone());
        match controller_of(&p.metadata) {
            Some(r) if r.uid == uid => {
                if !matches {
                    out.release.push(p.name_any());
                } else if is_active(p) {
                    active.push(p);
                }
            }
            Some(_) => {}
            None => {
                if matches && is_active(p) && rs.metadata.deletion_timestamp.is_none() {
                    out.adopt.push(p.name_any());
                    active.push(p);
                }
            }
        }
    }
    if active.len() < want {
        out.create = (want - active.len()).min(BURST);
    } else if active.len() > want {
        active.sort_by_key(|p| deletion_rank(p));
        out.delete = active
            .iter()
            .take((active.len() - want).min(BURST))
            .map(|p| p.name_any())
            .collect();
    }
    out
}

/// The status `rs` should report given its owned, matching, active pods.
pub fn status_of(rs: &ReplicaSet, owned: &[&Pod], now: Timestamp) -> serde_json::Value {
    let min_ready = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0) as i64;
    let template_labels: BTreeMap<String, String> = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully = owned
        .iter()
        .filter(|p| {
            let l = p.labels();
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| ready_since(p).is_some()).count();
    let available = owned
        .iter()
        .filter(|p| is_available(p, min_ready, now))
        .count();
    json!({
        "replicas": owned.len(),
        "fullyLabeledReplicas": fully,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation.unwrap_or(0),
    })
}

/// The pod `rs` creates: its template, `generateName: <rs>-`, owned by `rs`.
pub fn pod_for(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = None;
    meta.generate_name = Some(format!("{}-", rs.name_any()));
    meta.namespace = rs.metadata.namespace.clone();
    let mut owner = rs
        .controller_owner_ref(&())
        .expect("a stored ReplicaSet has name and uid");
    owner.block_owner_deletion = Some(true);
    meta.owner_references = Some(vec![owner]);
    Pod {
        metadata: meta,
        spec: template.spec,
        status: None,
    }
}

/// Runs the ReplicaSet controller until the task is aborted.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let rs_api: Api<ReplicaSet> = Api::all(ctx.client.clone());
    let pod_api: Api<Pod> = Api::all(ctx.client.clone());
    let (rs_store, rs_writer) = reflector::store();
    let (pod_store, pod_writer) = reflector::store();
    let dirty = Arc::new(parking_lot::Mutex::new(HashSet::<(String, String)>::new()));
    let wake = Arc::new(Notify::new());
    let rs_events = reflector::reflector(rs_writer, watcher(rs_api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let pod_events = reflector::reflector(pod_writer, watcher(pod_api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    {
        let (dirty, wake) = (dirty.clone(), wake.clone());
        tokio::spawn(async move {
            futures::pin_mut!(rs_events);
            while let Some(ev) = rs_events.next().await {
                if let Ok(rs) = ev {
                    dirty
                        .lock()
                        .insert((rs.namespace().unwrap_or_default(), rs.name_any()));
                    wake.notify_one();
                }
            }
        });
    }
    {
        let (dirty, wake, rs_store) = (dirty.clone(), wake.clone(), rs_store.clone());
        tokio::spawn(async move {
            futures::pin_mut!(pod_events);
            while let Some(ev) = pod_events.next().await {
                let Ok(pod) = ev else { continue };
                let ns = pod.namespace().unwrap_or_default();
                let mut d = dirty.lock();
                match controller_of(&pod.metadata) {
                    Some(r) if r.kind == "ReplicaSet" => {
                        d.insert((ns, r.name.clone()));
                    }
                    Some(_) => continue,
                    // An orphan may be adopted by any ReplicaSet of its namespace.
                    None => {
                        for rs in rs_store.state() {
                            if rs.namespace().as_deref() == Some(&ns) {
                                d.insert((ns.clone(), rs.name_any()));
                            }
                        }
                    }
                }
                drop(d);
                wake.notify_one();
            }
        });
    }
    rs_store.wait_until_ready().await?;
    pod_store.wait_until_ready().await?;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = resync.tick() => {
                let mut d = dirty.lock();
                for rs in rs_store.state() {
                    d.insert((rs.namespace().unwrap_or_default(), rs.name_any()));
                }
            }
        }
        let keys: Vec<(String, String)> = dirty.lock().drain().collect();
        // ReplicaSets sync concurrently; each one's writes are awaited within its sync.
        stream::iter(keys)
            .for_each_concurrent(16, |(ns, name)| {
                let ctx = ctx.clone();
                let (rs_store, pod_store) = (rs_store.clone(), pod_store.clone());
                async move {
                    let key = reflector::ObjectRef::<ReplicaSet>::new(&name).within(&ns);
                    let Some(rs) = rs_store.get(&key) else { return };
                    if let Err(e) = sync(&ctx, &rs, &pod_store).await {
                        tracing::warn!(replicaset = %format!("{ns}/{name}"), error = %e, "sync failed");
                    }
                }
            })
            .await;
    }
}

async fn sync(ctx: &Context, rs: &ReplicaSet, pod_store: &Store<Pod>) -> anyhow::Result<()> {
    let ns = rs.namespace().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = pod_store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(&ns))
        .collect();
    let plan = plan(rs, &pods);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let mut expect_present: Vec<String> = Vec::new();
    let mut expect_gone: Vec<String> = Vec::new();

    for name in &plan.adopt {
        let mut owner = rs.controller_owner_ref(&()).expect("stored");
        owner.block_owner_deletion = Some(true);
        let Some(pod) = pods.iter().find(|p| &p.name_any() == name) else {
            continue;
        };
        let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
        refs.push(owner);
        let patch = json!({"metadata": {"ownerReferences": refs,
            "resourceVersion": pod.metadata.resource_version}});
        if api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .is_ok()
        {
            expect_present.push(name.clone());
        }
    }
    for name in &plan.release {
        let Some(pod) = pods.iter().find(|p| &p.name_any() == name) else {
            continue;
        };
        let refs: Vec<OwnerReference> = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.uid != uid)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { json!(refs) },
            "resourceVersion": pod.metadata.resource_version}});
        let _ = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }

    // Slow start: 1, 2, 4, … creations, stopping at the first batch with a failure (a
    // quota or validation error would fail them all).
    let mut remaining = plan.create;
    let mut batch = 1usize;
    let mut failure: Option<String> = None;
    while remaining > 0 && failure.is_none() {
        let n = batch.min(remaining);
        let template = pod_for(rs);
        let results: Vec<kube::Result<Pod>> = stream::iter(0..n)
            .map(|_| {
                let api = api.clone();
                let pod = template.clone();
                async move { api.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(p) => {
                    ctx.events.normal(
                        rs,
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.name_any()),
                    );
                    expect_present.push(p.name_any());
                }
                Err(e) => {
                    let msg = e.to_string();
                    ctx.events
                        .warning(rs, "FailedCreate", format!("Error creating: {msg}"));
                    failure = Some(msg);
                }
            }
        }
        remaining -= n;
        batch *= 2;
    }

    let deleted: Vec<(String, kube::Result<()>)> = stream::iter(plan.delete.clone())
        .map(|name| {
            let api = api.clone();
            let pod_uid = pods
                .iter()
                .find(|p| p.name_any() == name)
                .and_then(|p| p.metadata.uid.clone());
            async move {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: pod_uid,
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                let r = api.delete(&name, &dp).await.map(|_| ());
                (name, r)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    for (name, r) in deleted {
        match r {
            Ok(()) => {
                ctx.events
                    .normal(rs, "SuccessfulDelete", format!("Deleted pod: {name}"));
                expect_gone.push(name);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => ctx
                .events
                .warning(rs, "FailedDelete", format!("Error deleting: {e}")),
        }
    }

    // Expectations: wait until the cache shows what was just written.
    if !expect_present.is_empty() || !expect_gone.is_empty() {
        let start = tokio::time::Instant::now();
        loop {
            let seen =
                |name: &str| pod_store.get(&reflector::ObjectRef::<Pod>::new(name).within(&ns));
            let present_ok = expect_present.iter().all(|n| {
                seen(n).is_some_and(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
            });
            let gone_ok = expect_gone
                .iter()
                .all(|n| seen(n).is_none_or(|p| !is_active(&p)));
            if (present_ok && gone_ok) || start.elapsed() > OBSERVE_TIMEOUT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Status from the (now current) cache.
    let fresh: Vec<Arc<Pod>> = pod_store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(&ns))
        .collect();
    let selector = LabelSelector::compile(rs.spec.as_ref().map(|s| &s.selector));
    let owned: Vec<&Pod> = fresh
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            controller_of(&p.metadata).is_some_and(|r| r.uid == uid)
                && selector.matches(&p.labels().clone())
                && is_active(p)
        })
        .collect();
    let mut status = status_of(rs, &owned, Timestamp::now());
    let mut conditions = Vec::new();
    if let Some(msg) = &failure {
        conditions.push(
            json!({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": msg, "lastTransitionTime": Timestamp::now().to_string()}),
        );
    }
    status["conditions"] = json!(conditions);
    let current = serde_json::to_value(rs.status.clone().unwrap_or_default())?;
    let same = [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .iter()
    .all(|k| {
        current.get(*k).and_then(|v| v.as_i64()).unwrap_or(0) == status[*k].as_i64().unwrap_or(0)
    }) && current
        .get("conditions")
        .and_then(|c| c.as_array())
        .map_or(0, |c| c.len())
        == conditions.len();
    if !same {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        rs_api
            .patch_status(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "d", "uid": "rs-uid", "generation": 3},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap()
    }

    fn pod(name: &str, labels: serde_json::Value, owner: Option<&str>) -> Pod {
        let refs = owner.map(|u| {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": u, "controller": true}])
        });
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "labels": labels, "ownerReferences": refs,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }))
        .unwrap()
    }

    fn ready(mut p: Pod, node: &str, since: &str) -> Pod {
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(since.parse().unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn arcs(pods: Vec<Pod>) -> Vec<Arc<Pod>> {
        pods.into_iter().map(Arc::new).collect()
    }

    #[test]
    fn creates_the_missing_and_adopts_matching_orphans() {
        let pods = arcs(vec![
            pod("a", json!({"app": "web"}), Some("rs-uid")),
            pod("orphan", json!({"app": "web"}), None),
            pod("other", json!({"app": "web"}), Some("someone-else")),
            pod("stray", json!({"app": "db"}), None),
        ]);
        let p = plan(&rs(5), &pods);
        assert_eq!(p.adopt, vec!["orphan"]);
        assert_eq!(
            p.create, 3,
            "a and the adopted orphan count; 'other' is not ours"
        );
        assert!(p.delete.is_empty() && p.release.is_empty());
    }

    #[test]
    fn releases_owned_pods_that_stopped_matching_and_ignores_dying_ones() {
        let mut dying = pod("dying", json!({"app": "web"}), Some("rs-uid"));
        dying.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let mut done = pod("done", json!({"app": "web"}), Some("rs-uid"));
        done.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let pods = arcs(vec![
            pod("relabelled", json!({"app": "other"}), Some("rs-uid")),
            dying,
            done,
        ]);
        let p = plan(&rs(2), &pods);
        assert_eq!(p.release, vec!["relabelled"]);
        assert_eq!(p.create, 2, "terminating and finished pods do not count");
    }

    #[test]
    fn deletes_the_least_valuable_pods_first() {
        let pods = arcs(vec![
            ready(
                pod("old-ready", json!({"app": "web"}), Some("rs-uid")),
                "n1",
                "2026-01-01T00:00:00Z",
            ),
            ready(
                pod("new-ready", json!({"app": "web"}), Some("rs-uid")),
                "n1",
                "2026-01-02T00:00:00Z",
            ),
            pod("unscheduled", json!({"app": "web"}), Some("rs-uid")),
        ]);
        let p = plan(&rs(1), &pods);
        assert_eq!(p.delete, vec!["unscheduled", "new-ready"]);
        assert_eq!(p.create, 0);
    }

    #[test]
    fn burst_caps_one_sync() {
        let p = plan(&rs(2000), &[]);
        assert_eq!(p.create, BURST);
    }

    #[test]
    fn status_counts_ready_available_and_fully_labelled() {
        let mut r = rs(3);
        r.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        let now: Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        let a = ready(
            pod("a", json!({"app": "web", "tier": "fe"}), Some("rs-uid")),
            "n",
            "2026-01-01T00:00:00Z",
        );
        let b = ready(
            pod("b", json!({"app": "web"}), Some("rs-uid")),
            "n",
            "2026-01-01T00:00:25Z",
        );
        let c = pod("c", json!({"app": "web", "tier": "fe"}), Some("rs-uid"));
        let s = status_of(&r, &[&a, &b, &c], now);
        assert_eq!(s["replicas"], 3);
        assert_eq!(s["fullyLabeledReplicas"], 2);
        assert_eq!(s["readyReplicas"], 2);
        assert_eq!(
            s["availableReplicas"], 1,
            "b is ready for 5 s of the 10 required"
        );
        assert_eq!(s["observedGeneration"], 3);
    }

    #[test]
    fn created_pods_follow_the_template_and_are_owned() {
        let p = pod_for(&rs(1));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-1-"));
        assert_eq!(p.labels().get("tier").map(String::as_str), Some("fe"));
        let owner = controller_of(&p.metadata).unwrap();
        assert_eq!(owner.uid, "rs-uid");
        assert_eq!(owner.block_owner_deletion, Some(true));
    }
}
