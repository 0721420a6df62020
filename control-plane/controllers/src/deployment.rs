//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), rolled out by the RollingUpdate (maxSurge /
//! maxUnavailable) or Recreate strategy, with revisions, rollback adoption (what `kubectl
//! rollout undo` relies on), pause, history cleanup, and the status and conditions
//! `kubectl rollout status` reads.
//!
//! [`reconcile`] is the whole decision, a pure function of the Deployment and its
//! ReplicaSets; [`run`] feeds it from informer caches and applies its [`Actions`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::replicaset::controller_of;
use crate::Context;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const RESYNC: Duration = Duration::from_secs(2);

/// Kubernetes's alphabet for names derived from hashes (no vowels, no look-alikes).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash of `d`'s template with `collisions` (FNV-1a over the template's
/// canonical JSON, rendered with Kubernetes's safe alphabet): stable across processes.
pub fn template_hash(d: &Deployment, collisions: i32) -> String {
    let template = d.spec.as_ref().map(|s| &s.template);
    let bytes = serde_json::to_vec(&template).unwrap_or_default();
    let mut h: u32 = 0x811c9dc5;
    for b in bytes.iter().chain(collisions.to_le_bytes().iter()) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x01000193);
    }
    h.to_string()
        .bytes()
        .map(|c| SAFE[usize::from(c) % SAFE.len()] as char)
        .collect()
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn st(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// A template without the hash label, to compare a ReplicaSet's with the Deployment's.
fn template_without_hash(t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    v
}

/// Resolves maxSurge / maxUnavailable against `replicas` as Kubernetes does: surge rounds
/// up, unavailable down, and both zero becomes unavailable 1.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let ru = spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let resolve = |v: Option<&IntOrString>, default: &str, up: bool| -> i32 {
        let v = v.cloned().unwrap_or(IntOrString::String(default.into()));
        match v {
            IntOrString::Int(i) => i.max(0),
            IntOrString::String(s) => {
                let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(25.0);
                let x = pct * f64::from(replicas) / 100.0;
                (if up { x.ceil() } else { x.floor() }) as i32
            }
        }
    };
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), "25%", true);
    let mut unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), "25%", false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas.max(0)))
}

/// What one sync must write.
#[derive(Debug, Default)]
pub struct Actions {
    /// A new ReplicaSet to create.
    pub create: Option<ReplicaSet>,
    /// (ReplicaSet, new spec.replicas).
    pub scale: Vec<(String, i32)>,
    /// (ReplicaSet, new revision): an old template became current again (rollback).
    pub revise: Option<(String, i64, String)>,
    /// Old ReplicaSets beyond revisionHistoryLimit.
    pub delete: Vec<String>,
    /// The Deployment's status.
    pub status: Value,
    /// The revision annotation the Deployment should carry.
    pub revision: Option<String>,
}

/// The decision for `d` given the ReplicaSets it owns, at `now`.
pub fn reconcile(d: &Deployment, owned: &[ReplicaSet], now: Timestamp) -> Actions {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let paused = spec.paused.unwrap_or(false);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let collisions = d
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let hash = template_hash(d, collisions);
    let want_template = template_without_hash(Some(&spec.template));
    let new_name = format!("{}-{hash}", d.name_any());
    let new = owned
        .iter()
        .find(|rs| rs.name_any() == new_name)
        .or_else(|| {
            owned.iter().find(|rs| {
                template_without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref()))
                    == want_template
            })
        });
    let mut olds: Vec<&ReplicaSet> = owned
        .iter()
        .filter(|rs| Some(rs.name_any()) != new.map(|n| n.name_any()))
        .collect();
    olds.sort_by_key(|rs| (revision_of(rs), rs.creation_timestamp().map(|t| t.0)));
    let max_old_rev = olds.iter().map(|rs| revision_of(rs)).max().unwrap_or(0);
    let (surge, unavailable) = surge_and_unavailable(d);
    let mut a = Actions::default();
    // Planned spec.replicas per ReplicaSet, updated as decisions are made.
    let mut planned: BTreeMap<String, i32> = owned
        .iter()
        .map(|rs| (rs.name_any(), spec_replicas(rs)))
        .collect();
    let old_total =
        |p: &BTreeMap<String, i32>| -> i32 { olds.iter().map(|rs| p[&rs.name_any()]).sum() };
    let mut created_now = false;

    match new {
        None if !paused => {
            let active_olds = old_total(&planned);
            let initial = if recreate {
                if active_olds > 0 || olds.iter().any(|rs| st(rs).0 > 0) {
                    0
                } else {
                    replicas
                }
            } else {
                let max_total = replicas + surge;
                (max_total - active_olds).clamp(0, replicas)
            };
            a.create = Some(new_replica_set(d, &hash, initial, max_old_rev + 1, surge));
            planned.insert(new_name.clone(), initial);
            created_now = true;
        }
        Some(rs) if revision_of(rs) <= max_old_rev && !paused => {
            let mut history: Vec<String> = rs
                .annotations()
                .get(REVISION_HISTORY)
                .map(|h| h.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            if revision_of(rs) > 0 {
                history.push(revision_of(rs).to_string());
            }
            a.revise = Some((rs.name_any(), max_old_rev + 1, history.join(",")));
        }
        _ => {}
    }

    let new_key = if created_now {
        Some(new_name.clone())
    } else {
        new.map(|n| n.name_any())
    };
    if let Some(nk) = new_key.clone().filter(|_| !created_now) {
        let new_rs = new.expect("new exists when not just created");
        if paused {
            // Scaling only: the new ReplicaSet takes what the old ones do not run.
            let target = (replicas - old_total(&planned)).max(0);
            if planned[&nk] != target && !olds.is_empty() {
                planned.insert(nk.clone(), target);
            } else if olds.iter().all(|rs| spec_replicas(rs) == 0) {
                planned.insert(nk.clone(), replicas);
            }
        } else if recreate {
            for rs in &olds {
                planned.insert(rs.name_any(), 0);
            }
            let olds_running = olds.iter().any(|rs| st(rs).0 > 0);
            if !olds_running {
                planned.insert(nk.clone(), replicas);
            }
        } else {
            // Scale the new one up within maxSurge, or down to replicas.
            let cur = planned[&nk];
            if cur > replicas {
                planned.insert(nk.clone(), replicas);
            } else if cur < replicas {
                let total: i32 = planned.values().sum();
                let up = (replicas + surge - total).min(replicas - cur);
                if up > 0 {
                    planned.insert(nk.clone(), cur + up);
                }
            }
            // Scale old ones down within maxUnavailable: first their unhealthy pods,
            // then available ones, oldest first.
            let min_available = replicas - unavailable;
            let new_unavailable = (spec_replicas(new_rs) - st(new_rs).2).max(0);
            let all_spec: i32 = owned.iter().map(spec_replicas).sum();
            let mut max_down = all_spec - min_available - new_unavailable;
            for rs in &olds {
                if max_down <= 0 {
                    break;
                }
                let cur = planned[&rs.name_any()];
                let unhealthy = (cur - st(rs).2).max(0).min(cur).min(max_down);
                if unhealthy > 0 {
                    planned.insert(rs.name_any(), cur - unhealthy);
                    max_down -= unhealthy;
                }
            }
            let available: i32 = owned.iter().map(|rs| st(rs).2).sum();
            let mut down = available - min_available;
            for rs in &olds {
                if down <= 0 {
                    break;
                }
                let cur = planned[&rs.name_any()];
                let take = cur.min(down);
                if take > 0 {
                    planned.insert(rs.name_any(), cur - take);
                    down -= take;
                }
            }
        }
    }
    if paused && new_key.is_none() {
        // Paused mid-change, before the new template has a ReplicaSet: scaling goes to
        // the newest old one.
        if let Some(newest) = olds.last() {
            let others: i32 = olds
                .iter()
                .filter(|rs| rs.name_any() != newest.name_any())
                .map(|rs| planned[&rs.name_any()])
                .sum();
            planned.insert(newest.name_any(), (replicas - others).max(0));
        }
    }
    for rs in owned {
        let p = planned[&rs.name_any()];
        if p != spec_replicas(rs) {
            a.scale.push((rs.name_any(), p));
        }
    }

    // History: old ReplicaSets scaled to nothing, beyond revisionHistoryLimit.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let dead: Vec<&&ReplicaSet> = olds
        .iter()
        .filter(|rs| planned[&rs.name_any()] == 0 && st(rs).0 == 0)
        .collect();
    if dead.len() > limit {
        a.delete = dead[..dead.len() - limit]
            .iter()
            .map(|rs| rs.name_any())
            .collect();
    }

    // Status, from what the ReplicaSets report.
    let sum = |f: fn(&ReplicaSet) -> i32| -> i32 { owned.iter().map(f).sum() };
    let total = sum(|rs| st(rs).0);
    let ready = sum(|rs| st(rs).1);
    let available = sum(|rs| st(rs).2);
    let updated = if created_now {
        0
    } else {
        new.map_or(0, |rs| st(rs).0)
    };
    let new_display = new_key.clone().unwrap_or_default();
    let complete = !created_now
        && updated == replicas
        && total == replicas
        && available == replicas
        && new.is_some_and(|rs| spec_replicas(rs) == replicas);
    let prev = d.status.clone().unwrap_or_default();
    let prev_conds = prev.conditions.clone().unwrap_or_default();
    let prev_cond = |t: &str| prev_conds.iter().find(|c| c.type_ == t).cloned();
    let now_s = now.to_string();
    let cond = |t: &str, status: &str, reason: &str, message: String, update: bool| -> Value {
        let old = prev_cond(t);
        let same = old
            .as_ref()
            .is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason));
        let transition = match (&old, same) {
            (Some(c), true) => c
                .last_transition_time
                .as_ref()
                .map_or(now_s.clone(), |t| t.0.to_string()),
            _ => now_s.clone(),
        };
        let last_update = match (&old, same && !update) {
            (Some(c), true) => c
                .last_update_time
                .as_ref()
                .map_or(now_s.clone(), |t| t.0.to_string()),
            _ => now_s.clone(),
        };
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": transition, "lastUpdateTime": last_update})
    };
    let available_cond = if available >= replicas - unavailable {
        cond(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            false,
        )
    } else {
        cond(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            false,
        )
    };
    let progressed = prev.replicas.unwrap_or(0) != total
        || prev.updated_replicas.unwrap_or(0) != updated
        || prev.available_replicas.unwrap_or(0) != available
        || prev.ready_replicas.unwrap_or(0) != ready
        || !a.scale.is_empty();
    let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
    let progressing = if paused {
        cond(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            false,
        )
    } else if created_now {
        cond(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_display}\""),
            true,
        )
    } else if complete {
        cond(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_display}\" has successfully progressed."),
            false,
        )
    } else if progressed || a.revise.is_some() {
        cond(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_display}\" is progressing."),
            true,
        )
    } else {
        let stale = prev_cond("Progressing")
            .and_then(|c| c.last_update_time.map(|t| t.0))
            .is_some_and(|t| now.as_second() - t.as_second() > deadline);
        if stale {
            cond(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_display}\" has timed out progressing."),
                false,
            )
        } else {
            match prev_cond("Progressing") {
                Some(c) => serde_json::to_value(c).unwrap_or(Value::Null),
                None => cond(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{new_display}\" is progressing."),
                    true,
                ),
            }
        }
    };
    a.status = json!({
        "observedGeneration": d.metadata.generation.unwrap_or(0),
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (replicas - available).max(0),
        "collisionCount": d.status.as_ref().and_then(|s| s.collision_count),
        "conditions": [available_cond, progressing],
    });
    let revision = if let Some(rs) = &a.create {
        Some(revision_of(rs))
    } else if let Some((_, r, _)) = &a.revise {
        Some(*r)
    } else {
        new.map(revision_of)
    };
    if let Some(r) = revision.filter(|r| *r > 0) {
        if d.annotations().get(REVISION) != Some(&r.to_string()) {
            a.revision = Some(r.to_string());
        }
    }
    a
}

/// The ReplicaSet for `d`'s current template.
fn new_replica_set(
    d: &Deployment,
    hash: &str,
    replicas: i32,
    revision: i64,
    surge: i32,
) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    let want = spec.replicas.unwrap_or(1);
    let mut owner = d
        .controller_owner_ref(&())
        .expect("a stored Deployment has name and uid");
    owner.block_owner_deletion = Some(true);
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", d.name_any()),
            "namespace": d.namespace(),
            "labels": labels,
            "annotations": {REVISION: revision.to_string(), DESIRED: want.to_string(),
                            MAX_REPLICAS: (want + surge).to_string()},
            "ownerReferences": [owner],
        },
        "spec": {"replicas": replicas, "minReadySeconds": spec.min_ready_seconds,
                 "selector": selector, "template": template},
    }))
    .expect("a valid ReplicaSet")
}

/// Runs the Deployment controller until the task is aborted.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let (d_store, d_writer) = reflector::store();
    let (rs_store, rs_writer) = reflector::store();
    let d_events = reflector::reflector(
        d_writer,
        watcher(
            Api::<Deployment>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let rs_events = reflector::reflector(
        rs_writer,
        watcher(
            Api::<ReplicaSet>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let dirty = Arc::new(parking_lot::Mutex::new(HashSet::<(String, String)>::new()));
    let wake = Arc::new(Notify::new());
    {
        let (dirty, wake) = (dirty.clone(), wake.clone());
        tokio::spawn(async move {
            futures::pin_mut!(d_events);
            while let Some(ev) = d_events.next().await {
                if let Ok(d) = ev {
                    dirty
                        .lock()
                        .insert((d.namespace().unwrap_or_default(), d.name_any()));
                    wake.notify_one();
                }
            }
        });
    }
    {
        let (dirty, wake) = (dirty.clone(), wake.clone());
        tokio::spawn(async move {
            futures::pin_mut!(rs_events);
            while let Some(ev) = rs_events.next().await {
                let Ok(rs) = ev else { continue };
                if let Some(r) = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment") {
                    dirty
                        .lock()
                        .insert((rs.namespace().unwrap_or_default(), r.name.clone()));
                    wake.notify_one();
                }
            }
        });
    }
    d_store.wait_until_ready().await?;
    rs_store.wait_until_ready().await?;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = resync.tick() => {
                let mut dl = dirty.lock();
                for d in d_store.state() {
                    dl.insert((d.namespace().unwrap_or_default(), d.name_any()));
                }
            }
        }
        let keys: Vec<(String, String)> = dirty.lock().drain().collect();
        futures::stream::iter(keys)
            .for_each_concurrent(16, |(ns, name)| {
                let (ctx, d_store, rs_store) = (ctx.clone(), d_store.clone(), rs_store.clone());
                async move {
                    let Some(d) = d_store.get(&ObjectRef::new(&name).within(&ns)) else { return };
                    if let Err(e) = sync(&ctx, &d, &rs_store).await {
                        tracing::warn!(deployment = %format!("{ns}/{name}"), error = %e, "sync failed");
                    }
                }
            })
            .await;
    }
}

async fn sync(ctx: &Context, d: &Deployment, rs_store: &Store<ReplicaSet>) -> anyhow::Result<()> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let ns = d.namespace().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let owned: Vec<ReplicaSet> = rs_store
        .state()
        .into_iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(&ns))
        .filter(|rs| controller_of(&rs.metadata).is_some_and(|r| r.uid == uid))
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .map(|rs| (*rs).clone())
        .collect();
    let a = reconcile(d, &owned, Timestamp::now());
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut expect: Vec<(String, Option<String>)> = Vec::new();
    if let Some(rs) = &a.create {
        match rs_api.create(&PostParams::default(), rs).await {
            Ok(created) => {
                let n = spec_replicas(&created);
                ctx.events.normal(
                    d,
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {} from 0 to {n}", created.name_any()),
                );
                expect.push((created.name_any(), created.resource_version()));
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // A ReplicaSet of that name that is not ours (or not yet seen): a hash
                // collision bumps collisionCount, giving the next sync another name.
                let key = ObjectRef::new(&rs.name_any()).within(&ns);
                let ours = rs_store
                    .get(&key)
                    .is_some_and(|x| controller_of(&x.metadata).is_some_and(|r| r.uid == uid));
                if !ours {
                    let c = d
                        .status
                        .as_ref()
                        .and_then(|s| s.collision_count)
                        .unwrap_or(0)
                        + 1;
                    d_api
                        .patch_status(
                            &d.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"collisionCount": c}})),
                        )
                        .await?;
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some((name, rev, history)) = &a.revise {
        let mut ann = json!({REVISION: rev.to_string()});
        if !history.is_empty() {
            ann[REVISION_HISTORY] = json!(history);
        }
        let r = rs_api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": ann}})),
            )
            .await?;
        expect.push((name.clone(), r.resource_version()));
    }
    let (surge, _) = surge_and_unavailable(d);
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    for (name, n) in &a.scale {
        let Some(old) = owned.iter().find(|rs| &rs.name_any() == name) else {
            continue;
        };
        let patch = json!({
            "metadata": {"resourceVersion": old.resource_version(),
                         "annotations": {DESIRED: want.to_string(), MAX_REPLICAS: (want + surge).to_string()}},
            "spec": {"replicas": n},
        });
        match rs_api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(r) => {
                let from = spec_replicas(old);
                let verb = if *n > from { "up" } else { "down" };
                ctx.events.normal(
                    d,
                    "ScalingReplicaSet",
                    format!("Scaled {verb} replica set {name} from {from} to {n}"),
                );
                expect.push((name.clone(), r.resource_version()));
            }
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    for name in &a.delete {
        let _ = rs_api.delete(name, &DeleteParams::background()).await;
    }
    if let Some(rev) = &a.revision {
        d_api
            .patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {REVISION: rev}}})),
            )
            .await?;
    }
    let current = serde_json::to_value(d.status.clone().unwrap_or_default())?;
    if strip_times(&current) != strip_times(&a.status)
        || a.status["conditions"] != current["conditions"]
    {
        d_api
            .patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": a.status})),
            )
            .await?;
    }
    // Expectations: the next sync must see these writes.
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let seen = expect.iter().all(|(name, rv)| {
            rs_store
                .get(&ObjectRef::new(name).within(&ns))
                .is_some_and(|rs| rs.resource_version() >= *rv || rv.is_none())
        });
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn strip_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("conditions");
        o.retain(|_, x| !x.is_null());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, image: &str, strategy: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "d-uid", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": strategy,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}},
        }))
        .unwrap()
    }

    fn rolling(surge: Value, unavailable: Value) -> Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    /// A ReplicaSet as the cluster reports it: `running` pods, all available.
    fn with_status(mut rs: ReplicaSet, running: i32) -> ReplicaSet {
        rs.metadata.uid = Some(format!("uid-{}", rs.name_any()));
        rs.metadata.resource_version = Some("1".into());
        rs.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
            replicas: running,
            ready_replicas: Some(running),
            available_replicas: Some(running),
            ..Default::default()
        });
        rs
    }

    /// Applies actions as the cluster would, with every pod becoming available at once.
    fn step(d: &Deployment, rss: &mut Vec<ReplicaSet>) -> Actions {
        let a = reconcile(d, rss, Timestamp::now());
        if let Some(rs) = &a.create {
            rss.push(with_status(rs.clone(), 0));
        }
        for (name, n) in &a.scale {
            let rs = rss.iter_mut().find(|r| &r.name_any() == name).unwrap();
            rs.spec.as_mut().unwrap().replicas = Some(*n);
        }
        if let Some((name, rev, _)) = &a.revise {
            let rs = rss.iter_mut().find(|r| &r.name_any() == name).unwrap();
            rs.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(REVISION.into(), rev.to_string());
        }
        rss.retain(|r| !a.delete.contains(&r.name_any()));
        a
    }

    fn settle(rss: &mut [ReplicaSet]) {
        for rs in rss.iter_mut() {
            let n = spec_replicas(rs);
            *rs = with_status(rs.clone(), n);
        }
    }

    #[test]
    fn hash_is_stable_and_template_sensitive() {
        let a = deployment(3, "nginx:1", rolling(json!(1), json!(0)));
        assert_eq!(template_hash(&a, 0), template_hash(&a.clone(), 0));
        assert_ne!(template_hash(&a, 0), template_hash(&a, 1));
        assert_ne!(
            template_hash(&a, 0),
            template_hash(&deployment(3, "nginx:2", rolling(json!(1), json!(0))), 0)
        );
        assert!(template_hash(&a, 0).bytes().all(|c| SAFE.contains(&c)));
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        let d = deployment(10, "i", rolling(json!("25%"), json!("25%")));
        assert_eq!(surge_and_unavailable(&d), (3, 2));
        let d = deployment(3, "i", rolling(json!(0), json!(0)));
        assert_eq!(surge_and_unavailable(&d), (0, 1));
    }

    #[test]
    fn first_rollout_creates_the_whole_replica_set() {
        let d = deployment(10, "i", rolling(json!("25%"), json!("25%")));
        let mut rss = Vec::new();
        let a = step(&d, &mut rss);
        let rs = a.create.unwrap();
        assert_eq!(spec_replicas(&rs), 10);
        assert_eq!(rs.annotations()[REVISION], "1");
        assert!(rs.labels().contains_key(HASH_LABEL));
        assert_eq!(a.status["conditions"][1]["reason"], "NewReplicaSetCreated");
        settle(&mut rss);
        let a = step(&d, &mut rss);
        assert!(a.scale.is_empty() && a.create.is_none());
        assert_eq!(
            a.status["conditions"][1]["reason"],
            "NewReplicaSetAvailable"
        );
        assert_eq!(a.status["availableReplicas"], 10);
        assert_eq!(a.status["updatedReplicas"], 10);
    }

    #[test]
    fn rolling_update_keeps_within_surge_and_unavailability() {
        let v1 = deployment(10, "i:1", rolling(json!("25%"), json!("25%")));
        let mut rss = Vec::new();
        step(&v1, &mut rss);
        settle(&mut rss);
        let v2 = deployment(10, "i:2", rolling(json!("25%"), json!("25%")));
        for round in 0..30 {
            let a = step(&v2, &mut rss);
            let total: i32 = rss.iter().map(spec_replicas).sum();
            assert!(
                total <= 13,
                "round {round}: {total} pods > replicas + surge"
            );
            let available: i32 = rss.iter().map(|r| st(r).2.min(spec_replicas(r))).sum();
            assert!(
                available >= 8,
                "round {round}: {available} available < replicas - unavailable"
            );
            settle(&mut rss);
            if a.status["conditions"][1]["reason"] == "NewReplicaSetAvailable" {
                assert_eq!(
                    rss.iter()
                        .map(spec_replicas)
                        .collect::<Vec<_>>()
                        .iter()
                        .filter(|&&n| n > 0)
                        .count(),
                    1
                );
                assert_eq!(a.status["updatedReplicas"], 10);
                return;
            }
        }
        panic!(
            "rollout did not complete: {:?}",
            rss.iter()
                .map(|r| (r.name_any(), spec_replicas(r)))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn recreate_waits_for_old_pods_before_starting_new_ones() {
        let strat = json!({"type": "Recreate"});
        let mut rss = Vec::new();
        step(&deployment(3, "i:1", strat.clone()), &mut rss);
        settle(&mut rss);
        let v2 = deployment(3, "i:2", strat);
        let a = step(&v2, &mut rss);
        assert_eq!(
            spec_replicas(a.create.as_ref().unwrap()),
            0,
            "old pods still run"
        );
        let a = step(&v2, &mut rss);
        assert!(a
            .scale
            .iter()
            .any(|(n, r)| n != &rss[1].name_any() && *r == 0));
        settle(&mut rss);
        step(&v2, &mut rss);
        assert_eq!(spec_replicas(&rss[1]), 3);
        assert_eq!(spec_replicas(&rss[0]), 0);
    }

    #[test]
    fn undo_adopts_the_old_replica_set_with_the_next_revision() {
        let s = rolling(json!(1), json!(0));
        let v1 = deployment(2, "i:1", s.clone());
        let v2 = deployment(2, "i:2", s);
        let mut rss = Vec::new();
        for d in [&v1, &v2] {
            for _ in 0..10 {
                step(d, &mut rss);
                settle(&mut rss);
            }
        }
        assert_eq!(rss.len(), 2);
        let a = step(&v1, &mut rss);
        assert!(a.create.is_none(), "the revision-1 ReplicaSet is reused");
        let (name, rev, history) = a.revise.unwrap();
        assert_eq!(rev, 3);
        assert_eq!(history, "1");
        assert_eq!(
            rss.iter()
                .find(|r| r.name_any() == name)
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .template
                .as_ref()
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .image
                .as_deref(),
            Some("i:1")
        );
        assert_eq!(a.revision.as_deref(), Some("3"));
    }

    #[test]
    fn paused_deployments_scale_but_do_not_roll() {
        let mut rss = Vec::new();
        step(&deployment(2, "i:1", rolling(json!(1), json!(0))), &mut rss);
        settle(&mut rss);
        let mut v2 = deployment(4, "i:2", rolling(json!(1), json!(0)));
        v2.spec.as_mut().unwrap().paused = Some(true);
        let a = step(&v2, &mut rss);
        assert!(a.create.is_none());
        assert_eq!(spec_replicas(&rss[0]), 4, "scaled while paused");
        assert_eq!(a.status["conditions"][1]["reason"], "DeploymentPaused");
    }

    #[test]
    fn history_beyond_the_limit_is_deleted() {
        let mut rss = Vec::new();
        for i in 0..5 {
            let mut d = deployment(1, &format!("i:{i}"), rolling(json!(1), json!(0)));
            d.spec.as_mut().unwrap().revision_history_limit = Some(2);
            for _ in 0..6 {
                step(&d, &mut rss);
                settle(&mut rss);
            }
        }
        assert_eq!(rss.len(), 3, "the current one and two old ones");
    }

    #[test]
    fn progress_deadline_is_reported() {
        let mut d = deployment(1, "i", rolling(json!(1), json!(0)));
        let mut rss = Vec::new();
        step(&d, &mut rss);
        // Pods never become available.
        let a = reconcile(&d, &rss, Timestamp::now());
        d.status = Some(serde_json::from_value(a.status.clone()).unwrap());
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(5);
        let later = Timestamp::now() + std::time::Duration::from_secs(60);
        let a = reconcile(&d, &rss, later);
        assert_eq!(
            a.status["conditions"][1]["reason"],
            "ProgressDeadlineExceeded"
        );
        assert_eq!(a.status["conditions"][1]["status"], "False");
    }
}
