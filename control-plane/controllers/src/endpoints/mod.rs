//! The endpoints controller: `core/v1 Endpoints` and `discovery.k8s.io/v1 EndpointSlices`
//! for every Service with a selector, from the pods it selects (Kubernetes's endpoints and
//! endpointslice controllers in one loop, sharing one set of caches).
//!
//! ```text
//!  watch Services ─┐                         ┌─► Endpoints <svc>      (create / update / delete)
//!  watch Pods ─────┼─► caches ─► queue of ───┤
//!  watch Endpoints ┤   (grouped)  Service     └─► EndpointSlices <svc>-xxxxx (plan: slices.rs)
//!  watch Slices ───┘              keys ─► workers: sync(service) = desired (desired.rs)
//!                                                   vs cached; write only differences
//! ```
//!
//! - A Service event queues its key at once; pod events queue the Services selecting the
//!   pod's old or new labels after [`POD_BATCH`], so a burst (a rollout, a node going
//!   down) becomes one sync per Service.
//! - Our own writes are recorded ([`written`]); a sync whose cache has not caught up with
//!   them is retried shortly rather than acting on a stale view (which would duplicate
//!   slices), and their watch echoes cause no sync.
//! - A Service that is deleted loses its Endpoints and slices. One that loses its selector
//!   (or becomes ExternalName) loses the Endpoints this controller wrote — recognised by
//!   the [`ANNOTATION_TRIGGER_TIME`] annotation, which hand-made Endpoints of a
//!   selector-less Service do not carry — and its managed slices.
//!
//! # Layout
//! - [`desired`]: per-pod endpoint view, Endpoints subsets (canonical packing), slice
//!   endpoints.
//! - [`slices`]: the plan distributing endpoints over slices.
//! - [`cache`], [`queue`], [`written`]: informer cache, work queue, own-write tracker.

pub mod cache;
pub mod desired;
pub mod queue;
pub mod slices;
pub mod written;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;

use crate::Context;
use cache::{Cache, Change};
use queue::WorkQueue;
use written::{rv, Expect, Written};

/// Annotation with the time of the change that led to the current Endpoints.
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Endpoints used as leader-election records carry this; they are never cleaned up.
const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";
/// Pod events for a Service within this period are handled by one sync.
pub const POD_BATCH: Duration = Duration::from_millis(100);
/// Services synced concurrently (one Service is never synced twice at once).
const WORKERS: usize = 4;

/// A Service by namespace and name; also names its Endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

/// (namespace, Service, slice name): one slice in the own-write tracker.
type SliceKey = (String, String, String);

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("cache has not caught up with our last write")]
    Stale,
    #[error(transparent)]
    Api(#[from] kube::Error),
}

struct Shared {
    ctx: Context,
    services: Cache<Service>,
    pods: Cache<Pod>,
    endpoints: Cache<Endpoints>,
    slices: Cache<EndpointSlice>,
    queue: WorkQueue<ServiceKey>,
    // The three mutexes below are each taken alone, never nested.
    written_endpoints: Mutex<Written<ServiceKey>>,
    written_slices: Mutex<Written<SliceKey>>,
    /// When the first not-yet-synced change of each queued Service was seen.
    triggers: Mutex<HashMap<ServiceKey, Timestamp>>,
}

/// Runs the controller until the task is aborted. API errors are logged and retried with
/// per-Service backoff; watches restart with backoff.
///
/// # Errors
/// Only if one of its internal tasks panics.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let sh = Arc::new(Shared {
        ctx,
        services: Cache::new(|_| String::new()),
        pods: Cache::new(|_| String::new()),
        endpoints: Cache::new(|_| String::new()),
        slices: Cache::new(|s: &EndpointSlice| {
            s.labels()
                .get(slices::LABEL_SERVICE_NAME)
                .cloned()
                .unwrap_or_default()
        }),
        queue: WorkQueue::new(),
        written_endpoints: Mutex::new(Written::default()),
        written_slices: Mutex::new(Written::default()),
        triggers: Mutex::new(HashMap::new()),
    });
    let mut tasks = JoinSet::new();
    let managed = format!("{}={}", slices::LABEL_MANAGED_BY, slices::MANAGED_BY);
    tasks.spawn(feed(
        sh.clone(),
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        |s| &s.services,
        on_service,
    ));
    tasks.spawn(feed(
        sh.clone(),
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        |s| &s.pods,
        on_pod,
    ));
    tasks.spawn(feed(
        sh.clone(),
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        |s| &s.endpoints,
        on_endpoints,
    ));
    tasks.spawn(feed(
        sh.clone(),
        Api::<EndpointSlice>::all(client),
        watcher::Config::default().labels(&managed),
        |s| &s.slices,
        on_slice,
    ));
    // Act only on complete caches: before the first lists, every Service looks podless.
    while !(sh.services.synced() && sh.pods.synced() && sh.endpoints.synced() && sh.slices.synced())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!("endpoints controller caches synced");
    for _ in 0..WORKERS {
        tasks.spawn(worker(sh.clone()));
    }
    match tasks.join_next().await {
        Some(Err(e)) => Err(anyhow::anyhow!("endpoints controller task failed: {e}")),
        _ => Err(anyhow::anyhow!("endpoints controller task ended")),
    }
}

/// Feeds one resource's watch into its cache and reacts to each change.
async fn feed<K>(
    sh: Arc<Shared>,
    api: Api<K>,
    config: watcher::Config,
    cache: fn(&Shared) -> &Cache<K>,
    react: fn(&Shared, Change<K>),
) where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                // Nobody here reads managedFields; do not keep them.
                let event = event.modify(|o| o.meta_mut().managed_fields = None);
                let change = cache(&sh).apply(event);
                react(&sh, change);
            }
            Err(e) => tracing::warn!(error = %e, "endpoints controller watch failed; retrying"),
        }
    }
}

impl Shared {
    fn enqueue(&self, key: ServiceKey, delay: Duration) {
        self.triggers
            .lock()
            .entry(key.clone())
            .or_insert_with(Timestamp::now);
        self.queue.add_after(key, delay);
    }

    fn enqueue_all(&self) {
        for s in self.services.all() {
            self.enqueue(key_of(s.as_ref()), Duration::ZERO);
        }
        // Endpoints and slices whose Service is gone (deleted while no one watched).
        for e in self.endpoints.all() {
            self.enqueue(key_of(e.as_ref()), Duration::ZERO);
        }
        for s in self.slices.all() {
            if let Some(k) = slice_service(s.as_ref()) {
                self.enqueue(k, Duration::ZERO);
            }
        }
    }

    /// Services in `pod`'s namespace that select it.
    fn services_selecting(&self, pod: &Pod) -> Vec<ServiceKey> {
        let ns = pod.namespace().unwrap_or_default();
        self.services
            .group(&ns, "")
            .iter()
            .filter(|s| desired::service_selects(s, pod))
            .map(|s| key_of(s.as_ref()))
            .collect()
    }
}

fn key_of<K: kube::Resource>(o: &K) -> ServiceKey {
    ServiceKey {
        namespace: o.namespace().unwrap_or_default(),
        name: o.name_any(),
    }
}

fn slice_service(s: &EndpointSlice) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: s.namespace().unwrap_or_default(),
        name: s.labels().get(slices::LABEL_SERVICE_NAME)?.clone(),
    })
}

fn on_service(sh: &Shared, change: Change<Service>) {
    match change {
        Change::Applied { new, .. } => sh.enqueue(key_of(new.as_ref()), Duration::ZERO),
        Change::Deleted(old) => sh.enqueue(key_of(old.as_ref()), Duration::ZERO),
        Change::Relisted => sh.enqueue_all(),
        Change::Nothing => {}
    }
}

/// What of a pod matters to its endpoints; updates that leave it equal cause no sync.
fn pod_fingerprint(p: &Pod) -> impl PartialEq + '_ {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    (
        p.metadata.labels.as_ref(),
        p.metadata.deletion_timestamp.is_some(),
        status.map(|s| (&s.phase, &s.pod_ip, &s.pod_ips)),
        desired::pod_ready(p),
        spec.map(|s| (&s.node_name, &s.hostname, &s.subdomain)),
        spec.map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .map(|c| (&c.ports, &c.restart_policy))
                .collect::<Vec<_>>()
        }),
    )
}

fn on_pod(sh: &Shared, change: Change<Pod>) {
    let mut keys = Vec::new();
    match change {
        Change::Applied { old, new } => {
            if let Some(old) = &old {
                if pod_fingerprint(old) == pod_fingerprint(&new) {
                    return;
                }
                keys.extend(sh.services_selecting(old));
            }
            keys.extend(sh.services_selecting(&new));
        }
        Change::Deleted(old) => keys.extend(sh.services_selecting(&old)),
        Change::Relisted => return sh.enqueue_all(),
        Change::Nothing => {}
    }
    keys.sort();
    keys.dedup();
    for k in keys {
        sh.enqueue(k, POD_BATCH);
    }
}

fn on_endpoints(sh: &Shared, change: Change<Endpoints>) {
    let (key, seen) = match change {
        Change::Applied { new, .. } => (
            key_of(new.as_ref()),
            Some(rv(new.resource_version().as_deref())),
        ),
        Change::Deleted(old) => (key_of(old.as_ref()), None),
        Change::Relisted => return sh.enqueue_all(),
        Change::Nothing => return,
    };
    if !sh.written_endpoints.lock().observed(&key, seen) {
        sh.enqueue(key, Duration::ZERO);
    }
}

fn on_slice(sh: &Shared, change: Change<EndpointSlice>) {
    let (slice, old, seen) = match change {
        Change::Applied { new, old } => {
            let seen = Some(rv(new.resource_version().as_deref()));
            (new, old, seen)
        }
        Change::Deleted(old) => (old, None, None),
        Change::Relisted => return sh.enqueue_all(),
        Change::Nothing => return,
    };
    // A slice relabelled to another Service concerns both.
    if let Some(k) = old.as_deref().and_then(slice_service) {
        if Some(&k) != slice_service(&slice).as_ref() {
            sh.enqueue(k, Duration::ZERO);
        }
    }
    let Some(svc) = slice_service(&slice) else {
        return;
    };
    let key = (svc.namespace.clone(), svc.name.clone(), slice.name_any());
    if !sh.written_slices.lock().observed(&key, seen) {
        sh.enqueue(svc, Duration::ZERO);
    }
}

async fn worker(sh: Arc<Shared>) {
    loop {
        let key = sh.queue.next().await;
        let trigger = sh.triggers.lock().remove(&key);
        let result = sync(&sh, &key, trigger.unwrap_or_else(Timestamp::now)).await;
        sh.queue.done(&key);
        match result {
            Ok(()) => sh.queue.forget(&key),
            Err(e) => {
                match &e {
                    SyncError::Stale => tracing::debug!(service = ?key, "waiting for the caches"),
                    SyncError::Api(e) => {
                        tracing::warn!(service = ?key, error = %e, "endpoints sync failed; retrying")
                    }
                }
                if let Some(t) = trigger {
                    sh.triggers.lock().entry(key.clone()).or_insert(t);
                }
                sh.queue.retry(key);
            }
        }
    }
}

/// Brings the Endpoints and EndpointSlices of one Service in line with the caches.
async fn sync(sh: &Shared, key: &ServiceKey, trigger: Timestamp) -> Result<(), SyncError> {
    let svc = sh.services.get(&key.namespace, &key.name);
    let active = svc.as_deref().filter(|s| desired::selects_pods(s));
    let pods: Vec<Arc<Pod>> = match active {
        Some(s) => sh
            .pods
            .group(&key.namespace, "")
            .into_iter()
            .filter(|p| desired::service_selects(s, p))
            .collect(),
        None => Vec::new(),
    };
    let pods: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
    let endpoints = sync_endpoints(sh, key, svc.as_deref(), active, &pods, trigger).await;
    let slices = sync_slices(sh, key, active, &pods).await;
    endpoints.and(slices)
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

async fn sync_endpoints(
    sh: &Shared,
    key: &ServiceKey,
    svc: Option<&Service>,
    active: Option<&Service>,
    pods: &[&Pod],
    trigger: Timestamp,
) -> Result<(), SyncError> {
    let cached = sh.endpoints.get(&key.namespace, &key.name);
    let cached_rv = cached.as_ref().map(|e| rv(e.resource_version().as_deref()));
    if !sh.written_endpoints.lock().fresh(key, cached_rv) {
        return Err(SyncError::Stale);
    }
    let api: Api<Endpoints> = Api::namespaced(sh.ctx.client.clone(), &key.namespace);
    let Some(svc_active) = active else {
        let Some(ep) = cached else {
            return Ok(());
        };
        let annotations = ep.annotations();
        let remove = match svc {
            None => !annotations.contains_key(ANNOTATION_LEADER),
            Some(_) => annotations.contains_key(ANNOTATION_TRIGGER_TIME),
        };
        if !remove {
            return Ok(());
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: ep.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let at = match api.delete(&key.name, &dp).await {
            Ok(either) => either
                .left()
                .map_or(0, |o| rv(o.resource_version().as_deref())),
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => 0,
            Err(e) => return Err(e.into()),
        };
        tracing::debug!(service = ?key, "deleted endpoints");
        sh.written_endpoints
            .lock()
            .wrote(key.clone(), Expect::Gone(at));
        return Ok(());
    };

    let mut subsets = desired::endpoints_subsets(svc_active, pods);
    let truncated = desired::truncate(&mut subsets);
    let labels = desired::service_labels(svc_active);
    if let Some(ep) = &cached {
        let stored = desired::repack(ep.subsets.as_deref().unwrap_or_default());
        if stored == subsets
            && ep.metadata.labels.clone().unwrap_or_default() == labels
            && ep
                .annotations()
                .contains_key(desired::ANNOTATION_OVER_CAPACITY)
                == truncated
        {
            return Ok(());
        }
    }
    let mut meta = match &cached {
        Some(ep) => ep.metadata.clone(),
        None => ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            ..Default::default()
        },
    };
    meta.labels = Some(labels);
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(ANNOTATION_TRIGGER_TIME.into(), trigger.to_string());
    if truncated {
        annotations.insert(desired::ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(desired::ANNOTATION_OVER_CAPACITY);
    }
    let obj = Endpoints {
        metadata: meta,
        subsets: Some(subsets),
    };
    let result = match &cached {
        None => api.create(&PostParams::default(), &obj).await,
        Some(_) => api.replace(&key.name, &PostParams::default(), &obj).await,
    };
    match result {
        Ok(written) => {
            let at = rv(written.resource_version().as_deref());
            sh.written_endpoints
                .lock()
                .wrote(key.clone(), Expect::AtLeast(at));
            Ok(())
        }
        // Namespace terminating: creates are refused for good; nothing to retry.
        Err(e) if cached.is_none() && api_code(&e) == Some(403) => {
            tracing::debug!(service = ?key, error = %e, "endpoints not created");
            Ok(())
        }
        Err(e) => {
            if !matches!(api_code(&e), Some(409)) {
                let reason = if cached.is_none() {
                    "FailedToCreateEndpoint"
                } else {
                    "FailedToUpdateEndpoint"
                };
                sh.ctx.events.warning(
                    svc_active,
                    reason,
                    format!(
                        "Failed to write endpoints {}/{}: {e}",
                        key.namespace, key.name
                    ),
                );
            }
            Err(e.into())
        }
    }
}

async fn sync_slices(
    sh: &Shared,
    key: &ServiceKey,
    active: Option<&Service>,
    pods: &[&Pod],
) -> Result<(), SyncError> {
    let cached = sh.slices.group(&key.namespace, &key.name);
    {
        let w = sh.written_slices.lock();
        let by_name: HashMap<String, u64> = cached
            .iter()
            .map(|s| (s.name_any(), rv(s.resource_version().as_deref())))
            .collect();
        let mine = |k: &SliceKey| k.0 == key.namespace && k.1 == key.name;
        if !w.all_fresh(mine, |k| by_name.get(&k.2).copied()) {
            return Err(SyncError::Stale);
        }
    }
    let api: Api<EndpointSlice> = Api::namespaced(sh.ctx.client.clone(), &key.namespace);
    let actions = match active {
        Some(svc) => {
            let desired = desired::slice_endpoints(svc, pods);
            let existing: Vec<&EndpointSlice> = cached.iter().map(Arc::as_ref).collect();
            slices::plan(svc, &desired, &existing)
        }
        None => cached
            .iter()
            .map(|s| slices::SliceAction::Delete { name: s.name_any() })
            .collect(),
    };
    let slice_key = |name: String| (key.namespace.clone(), key.name.clone(), name);
    for action in actions {
        match action {
            slices::SliceAction::Create(s) => {
                let created = match api.create(&PostParams::default(), &s).await {
                    Ok(c) => c,
                    Err(e) if api_code(&e) == Some(403) => {
                        tracing::debug!(service = ?key, error = %e, "endpoint slice not created");
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                };
                let at = rv(created.resource_version().as_deref());
                sh.written_slices
                    .lock()
                    .wrote(slice_key(created.name_any()), Expect::AtLeast(at));
            }
            slices::SliceAction::Update(s) => {
                let name = s.name_any();
                let updated = api.replace(&name, &PostParams::default(), &s).await?;
                let at = rv(updated.resource_version().as_deref());
                sh.written_slices
                    .lock()
                    .wrote(slice_key(name), Expect::AtLeast(at));
            }
            slices::SliceAction::Delete { name } => {
                let at = match api.delete(&name, &DeleteParams::default()).await {
                    Ok(either) => either
                        .left()
                        .map_or(0, |o| rv(o.resource_version().as_deref())),
                    Err(e) if api_code(&e) == Some(404) => 0,
                    Err(e) => return Err(e.into()),
                };
                sh.written_slices
                    .lock()
                    .wrote(slice_key(name), Expect::Gone(at));
            }
        }
    }
    Ok(())
}
