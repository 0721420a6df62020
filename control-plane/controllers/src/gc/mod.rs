//! The garbage collector: deletes objects whose owners are gone and carries out
//! foreground and orphaning deletions (Kubernetes's garbagecollector controller).
//!
//! ```text
//!  watch every kind in resources::KINDS (dynamic API) ──► Graph (owner uid → dependents)
//!                                                              │ Work (by uid)
//!                                          workers ◄── queue ◄─┘
//!                                            │ decide::process: live GETs, pure decision,
//!                                            ▼ conditional writes
//!      DELETE (uid precondition, Background/Foreground/Orphan), merge patches of
//!      ownerReferences / finalizers with a resourceVersion precondition
//! ```
//!
//! The API server does the first half of a deletion: DELETE with `propagationPolicy:
//! Foreground` or `Orphan` adds the `foregroundDeletion` / `orphan` finalizer and sets
//! deletionTimestamp. The collector does the rest: deletes or orphans the dependents, then
//! removes the finalizer, and the server removes the object with its last finalizer.
//!
//! Nothing is acted on before every kind has been listed once: until then a missing owner
//! may just not be listed yet. Every deletion is decided on live reads (an owner's
//! absence, and the dependent itself), never on the cache alone.
//!
//! # Layout
//! - [`resources`]: the watched kinds.
//! - [`graph`]: the ownership graph and the work its changes call for.
//! - [`decide`]: the decisions and the procedure applying them.

pub mod decide;
pub mod graph;
pub mod resources;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::endpoints::queue::WorkQueue;
use crate::Context;
use decide::{Absent, Cluster, Policy};
use graph::{Graph, Identity, Node, Uid, Work};
use resources::{Kind, KINDS};

/// Work items processed concurrently.
const WORKERS: usize = 4;
/// Conflicting read-modify-write rounds before an error (the work is then retried later).
const WRITE_ROUNDS: usize = 5;

struct Shared {
    live: Live,
    graph: Mutex<Graph>,
    absent: Absent,
    queue: WorkQueue<Work>,
    /// Kinds whose first list has completed.
    listed: AtomicUsize,
    /// Set once every kind is listed; before that, graph changes queue no work.
    ready: AtomicBool,
}

impl Shared {
    fn push(&self, work: Vec<Work>) {
        if self.ready.load(Ordering::Acquire) {
            for w in work {
                self.queue.add(w);
            }
        }
    }
}

/// Runs the collector until the task is aborted. API errors are logged and the work
/// retried with backoff; watches restart with backoff.
///
/// # Errors
/// Only if one of its internal tasks panics.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let sh = Arc::new(Shared {
        live: Live {
            client: ctx.client.clone(),
        },
        graph: Mutex::new(Graph::default()),
        absent: Absent::default(),
        queue: WorkQueue::new(),
        listed: AtomicUsize::new(0),
        ready: AtomicBool::new(false),
    });
    let mut tasks = JoinSet::new();
    for kind in KINDS {
        tasks.spawn(watch_kind(sh.clone(), ctx.client.clone(), kind));
    }
    while sh.listed.load(Ordering::Acquire) < KINDS.len() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sh.ready.store(true, Ordering::Release);
    let seed = sh.graph.lock().pending_work();
    tracing::info!(
        objects = sh.graph.lock().len(),
        work = seed.len(),
        "garbage collector graph synced"
    );
    for w in seed {
        sh.queue.add(w);
    }
    for _ in 0..WORKERS {
        tasks.spawn(worker(sh.clone()));
    }
    match tasks.join_next().await {
        Some(Err(e)) => Err(anyhow::anyhow!("garbage collector task failed: {e}")),
        _ => Err(anyhow::anyhow!("garbage collector task ended")),
    }
}

/// Feeds one kind's watch into the graph.
async fn watch_kind(sh: Arc<Shared>, client: kube::Client, kind: &'static Kind) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.api_resource());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut relisted: HashSet<Uid> = HashSet::new();
    let mut first_list = true;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => relisted.clear(),
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(n) = Node::from_meta(kind, &o.metadata) {
                    relisted.insert(n.id.uid.clone());
                    let w = sh.graph.lock().upsert(n);
                    sh.push(w);
                }
            }
            Ok(watcher::Event::InitDone) => {
                // Objects deleted while the watch was down are absent from the new list.
                let work = {
                    let mut g = sh.graph.lock();
                    let gone: Vec<Uid> = g
                        .uids_of(kind)
                        .into_iter()
                        .filter(|u| !relisted.contains(u))
                        .collect();
                    gone.iter().flat_map(|u| g.remove(u)).collect()
                };
                sh.push(work);
                relisted.clear();
                if std::mem::take(&mut first_list) {
                    sh.listed.fetch_add(1, Ordering::AcqRel);
                }
            }
            Ok(watcher::Event::Apply(o)) => {
                if let Some(n) = Node::from_meta(kind, &o.metadata) {
                    let w = sh.graph.lock().upsert(n);
                    sh.push(w);
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                if let Some(uid) = &o.metadata.uid {
                    let w = sh.graph.lock().remove(uid);
                    sh.push(w);
                }
            }
            Err(e) => {
                tracing::warn!(kind = kind.kind, error = %e, "garbage collector watch failed; retrying")
            }
        }
    }
}

async fn worker(sh: Arc<Shared>) {
    loop {
        let work = sh.queue.next().await;
        let result = decide::process(&sh.live, &sh.graph, &sh.absent, &work).await;
        sh.queue.done(&work);
        match result {
            Ok(follow) => {
                sh.queue.forget(&work);
                for w in follow {
                    sh.queue.add(w);
                }
            }
            Err(e) => {
                tracing::warn!(?work, error = %e, "garbage collection failed; retrying");
                sh.queue.retry(work);
            }
        }
    }
}

/// The API server, through kube's dynamic API.
struct Live {
    client: kube::Client,
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl Live {
    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar: ApiResource = kind.api_resource();
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Read-modify-write of `id`'s metadata: `change` returns the metadata fields to merge
    /// (or `None`: nothing to do). The patch carries the resourceVersion read, so a
    /// concurrent change (another finalizer, another reference) is never overwritten: a
    /// conflict rereads and tries again.
    async fn rewrite(
        &self,
        id: &Identity,
        change: impl Fn(&ObjectMeta) -> Option<serde_json::Map<String, Value>>,
    ) -> Result<(), kube::Error> {
        let api = self.api(id.kind, id.namespace.as_deref());
        let mut round = 0;
        loop {
            round += 1;
            let Some(obj) = api.get_opt(&id.name).await? else {
                return Ok(());
            };
            if obj.metadata.uid.as_deref() != Some(id.uid.as_str()) {
                return Ok(());
            }
            let Some(mut fields) = change(&obj.metadata) else {
                return Ok(());
            };
            fields.insert(
                "resourceVersion".into(),
                json!(obj.metadata.resource_version),
            );
            let patch = json!({ "metadata": fields });
            match api
                .patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if api_code(&e) == Some(404) => return Ok(()),
                Err(e) if api_code(&e) == Some(409) && round < WRITE_ROUNDS => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Cluster for Live {
    type Error = kube::Error;

    async fn get(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Node>, kube::Error> {
        let obj = self.api(kind, namespace).get_opt(name).await?;
        Ok(obj.and_then(|o| Node::from_meta(kind, &o.metadata)))
    }

    async fn delete(&self, id: &Identity, policy: Policy) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            propagation_policy: Some(match policy {
                Policy::Background => PropagationPolicy::Background,
                Policy::Foreground => PropagationPolicy::Foreground,
                Policy::Orphan => PropagationPolicy::Orphan,
            }),
            preconditions: Some(Preconditions {
                uid: Some(id.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self
            .api(id.kind, id.namespace.as_deref())
            .delete(&id.name, &dp)
            .await
        {
            Ok(_) => {
                tracing::info!(kind = id.kind.kind, namespace = ?id.namespace, name = %id.name, ?policy, "garbage collected");
                Ok(())
            }
            // Gone, or replaced by another object of that name (uid precondition).
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove_owners(&self, id: &Identity, owners: &[Uid]) -> Result<(), kube::Error> {
        self.rewrite(id, |meta| {
            let refs = meta.owner_references.clone().unwrap_or_default();
            let kept: Vec<_> = refs
                .iter()
                .filter(|r| !owners.contains(&r.uid))
                .cloned()
                .collect();
            (kept.len() != refs.len()).then(|| {
                let mut m = serde_json::Map::new();
                // null (not []) drops the field, as an object that never had owners.
                let value = if kept.is_empty() {
                    Value::Null
                } else {
                    json!(kept)
                };
                m.insert("ownerReferences".into(), value);
                m
            })
        })
        .await
    }

    async fn unblock_owners(&self, id: &Identity) -> Result<(), kube::Error> {
        self.rewrite(id, |meta| {
            let mut refs = meta.owner_references.clone().unwrap_or_default();
            if refs.iter().all(|r| r.block_owner_deletion != Some(true)) {
                return None;
            }
            for r in &mut refs {
                r.block_owner_deletion = Some(false);
            }
            let mut m = serde_json::Map::new();
            m.insert("ownerReferences".into(), json!(refs));
            Some(m)
        })
        .await
    }

    async fn remove_finalizer(&self, id: &Identity, finalizer: &str) -> Result<(), kube::Error> {
        self.rewrite(id, |meta| {
            let fins = meta.finalizers.clone().unwrap_or_default();
            let kept: Vec<&String> = fins.iter().filter(|f| *f != finalizer).collect();
            (kept.len() != fins.len()).then(|| {
                let mut m = serde_json::Map::new();
                m.insert("finalizers".into(), json!(kept));
                m
            })
        })
        .await
    }
}
