//! The API server benchmark behind `skiff-bench api`: Kubernetes REST requests (JSON over
//! plain HTTP/1.1) to one `skiff server`, in three phases, each in a fresh namespace.
//!
//! 1. **load** ([`run_load`]): an open-loop load of `rate` mutating requests per second
//!    (Pod creates, updates and deletes, 50/30/20) and, at the same time, `rate`
//!    single-Pod GETs per second, for `duration`. Requests are sent at their scheduled
//!    time whether or not earlier ones have answered, and each latency runs from the
//!    scheduled send time, so a stalled server shows up in the latencies instead of
//!    silently lowering the offered rate (no coordinated omission).
//! 2. **watch** ([`run_watch_fanout`]): `watchers` watch streams from one resourceVersion,
//!    each on its own HTTP/1.1 connection; one writer creates `watch_events` Pods one at a
//!    time. Every watcher must receive every acknowledged create exactly once, in
//!    resourceVersion order; latency runs from the create's send time (carried in an
//!    annotation of the Pod) to the receipt of its line at each watcher.
//! 3. **memory** ([`run_memory`]): `pods` Pods created (`load_concurrency` in flight), then
//!    the server's RSS once a `resourceVersion=0` list returns them all, and the time of
//!    full lists from the watch cache (`resourceVersion=0`) and consistent ones (none).
//!
//! ```text
//!  ticker ─ every 1/rate s ─▶ spawn(create | update | delete) ─┐   latency =
//!  ticker ─ every 1/rate s ─▶ spawn(get) ──────────────────────┼─▶ answer time -
//!                                      pooled HTTP/1.1 client ─┘   scheduled time
//! ```
//!
//! Every request has a timeout and the in-flight requests of each ticker are capped, so a
//! phase is bounded in time and sockets whatever the server does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::{stream, StreamExt};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::stats::{Recorder, Summary};
use crate::cluster::rss_kib_of;

/// The annotation carrying a Pod's create send time, µs of [`now_us`].
pub const SENT_ANNOTATION: &str = "skiff-bench/sent-us";
/// The Kubernetes SLO on mutating and single-object read latency: p99 ≤ 1 s.
pub const SLO_P99_MS: f64 = 1000.0;
/// What Skiff aims at: p99 ≤ 50 ms.
pub const AIM_P99_MS: f64 = 50.0;
/// How long watchers keep listening for missing events after the writer is done.
const GRACE: Duration = Duration::from_secs(5);
/// Longest the watch writer may run.
const WRITER_MAX: Duration = Duration::from_secs(90);
/// Watch streams opened at once while setting up.
const OPEN_CONCURRENCY: usize = 32;
/// Longest wait for the watch cache to hold every loaded Pod.
const CACHE_WAIT: Duration = Duration::from_secs(60);
/// Error messages kept per phase for the report.
const ERROR_SAMPLES: usize = 5;
/// The mutating mix of the load phase, repeated: 5 creates, 3 updates, 2 deletes.
const MIX: [Op; 10] = [
    Op::Create,
    Op::Update,
    Op::Create,
    Op::Delete,
    Op::Create,
    Op::Update,
    Op::Create,
    Op::Delete,
    Op::Create,
    Op::Update,
];

/// Microseconds since the first call in this process: the clock of send and receive times.
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Sizes and durations of `skiff-bench api`.
#[derive(Debug, Clone)]
pub struct ApiParams {
    /// Mutating requests per second in the load phase; reads run at the same rate.
    pub rate: f64,
    /// Length of the load phase.
    pub duration: Duration,
    /// Cap on the requests in flight of each load ticker; past it a request is not sent
    /// and counts as `not sent`.
    pub max_in_flight: usize,
    /// Watch streams of the watch phase.
    pub watchers: usize,
    /// Pods created while the watchers listen.
    pub watch_events: u64,
    /// Pods loaded in the memory phase.
    pub pods: u64,
    /// Creates in flight while loading Pods (seeding and memory phase).
    pub load_concurrency: usize,
    /// Timeout of each request; past it the request counts as an error.
    pub op_timeout: Duration,
    /// How many times each full list is timed.
    pub list_repeats: usize,
}

/// Which phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    /// Open-loop mutating and read load.
    pub load: bool,
    /// Watch fan-out.
    pub watch: bool,
    /// Memory with many Pods cached, and full lists.
    pub memory: bool,
}

// -----------------------------------------------------------------------------------------
// HTTP
// -----------------------------------------------------------------------------------------

/// A REST client of one API server: pooled HTTP/1.1 connections, JSON bodies, and a
/// timeout on every request (headers and whole body).
#[derive(Clone, Debug)]
pub struct ApiClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    authority: String,
    timeout: Duration,
}

/// One answer: status code and the whole body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body, read to its end.
    pub body: Bytes,
}

impl Reply {
    /// The body parsed as JSON.
    ///
    /// # Errors
    /// When it is not JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).context("answer is not JSON")
    }

    /// `status: message` (the `message` of a Kubernetes `Status`, else the body's start).
    pub fn describe(&self) -> String {
        let message = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned()
            });
        format!("{} {}", self.status, message)
    }
}

impl ApiClient {
    /// A client of the API server at `url` (`http://host:port`).
    ///
    /// # Errors
    /// When `url` is not an `http://` URL with a host.
    pub fn new(url: &str, timeout: Duration) -> Result<ApiClient> {
        let uri: Uri = url
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("bad server URL {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("server URL {url:?}: only plain http:// is supported");
        }
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow!("server URL {url:?} has no host"))?
            .to_string();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(ApiClient {
            client,
            base: format!("http://{authority}"),
            authority,
            timeout,
        })
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends `method path` with an optional JSON body and reads the whole answer.
    ///
    /// # Errors
    /// On connection errors and when the answer takes longer than the timeout. Any status
    /// code is an answer, not an error.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(ACCEPT, "application/json");
        let bytes = match body {
            Some(v) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v)?)
            }
            None => Bytes::new(),
        };
        let request = builder.body(Full::new(bytes))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Reply { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {:?}", self.timeout))?
    }

    /// `GET path`.
    ///
    /// # Errors
    /// See [`ApiClient::send`].
    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(Method::GET, path, None).await
    }

    /// Creates namespace `name` (already existing is fine).
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let r = self
            .send(Method::POST, "/api/v1/namespaces", Some(&ns))
            .await?;
        match r.status {
            201 | 409 => Ok(()),
            _ => bail!("creating namespace {name}: {}", r.describe()),
        }
    }

    /// Deletes namespace `name` (best effort: its contents go in the background).
    ///
    /// # Errors
    /// When the request fails.
    pub async fn delete_namespace(&self, name: &str) -> Result<()> {
        let r = self
            .send(Method::DELETE, &format!("/api/v1/namespaces/{name}"), None)
            .await?;
        match r.status {
            200 | 202 | 404 => Ok(()),
            _ => bail!("deleting namespace {name}: {}", r.describe()),
        }
    }
}

/// `/api/v1/namespaces/<ns>/pods`.
fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

/// `/api/v1/namespaces/<ns>/pods/<name>`.
fn pod_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods/{name}")
}

/// A realistic Pod (≈ 1.6 KB of JSON as sent): recommended labels, one container with
/// ports, env, resources, probes and a volume mount; `sent_us` goes in
/// [`SENT_ANNOTATION`].
pub fn pod_body(name: &str, sent_us: u64) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/name": "bench-web",
                "app.kubernetes.io/instance": "bench-web-7f9c",
                "app.kubernetes.io/component": "frontend",
                "app.kubernetes.io/part-of": "skiff-bench",
                "pod-template-hash": "7f9c6b5d48",
                "gen": "0"
            },
            "annotations": {
                SENT_ANNOTATION: sent_us.to_string(),
                "skiff.dev/description": "a web server Pod of skiff-bench api, shaped like a Deployment replica"
            }
        },
        "spec": {
            "containers": [{
                "name": "web",
                "image": "registry.example.com/bench/web:1.27.3",
                "imagePullPolicy": "IfNotPresent",
                "args": ["--listen=:8080", "--log-level=info", "--cache-dir=/var/cache/web"],
                "ports": [
                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
                ],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "GOMAXPROCS", "value": "2"},
                    {"name": "MODE", "value": "production"}
                ],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"}
                },
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http"},
                    "initialDelaySeconds": 10,
                    "periodSeconds": 10
                },
                "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/web"}]
            }],
            "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "bench", "operator": "Exists", "effect": "NoSchedule"}]
        }
    })
}

/// Keeps the first [`ERROR_SAMPLES`] distinct messages.
fn sample(samples: &mut Vec<String>, message: String) {
    if samples.len() < ERROR_SAMPLES && !samples.contains(&message) {
        samples.push(message);
    }
}

/// Locks `m`, ignoring poisoning (a panicking holder leaves a usable list of names).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates Pods `<prefix>-<i>` for `i` in `range`, `concurrency` at a time; returns the
/// names created, the create latencies (errors counted in them) and error samples.
async fn create_pods(
    api: &ApiClient,
    ns: &str,
    prefix: &str,
    range: std::ops::Range<u64>,
    concurrency: usize,
) -> (Vec<String>, Recorder, Vec<String>) {
    let path = pods_path(ns);
    let results: Vec<(String, Result<Duration>)> = stream::iter(range)
        .map(|i| {
            let name = format!("{prefix}-{i:06}");
            let path = path.clone();
            async move {
                let start = Instant::now();
                let body = pod_body(&name, now_us());
                let out = match api.send(Method::POST, &path, Some(&body)).await {
                    Ok(r) if r.status == 201 => Ok(start.elapsed()),
                    Ok(r) => Err(anyhow!("create: {}", r.describe())),
                    Err(e) => Err(anyhow!("create: {e:#}")),
                };
                (name, out)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut names = Vec::with_capacity(results.len());
    let mut rec = Recorder::new();
    let mut samples = Vec::new();
    for (name, r) in results {
        match r {
            Ok(latency) => {
                rec.record(latency);
                names.push(name);
            }
            Err(e) => {
                rec.error();
                sample(&mut samples, format!("{e:#}"));
            }
        }
    }
    (names, rec, samples)
}

// -----------------------------------------------------------------------------------------
// Phase 1: open-loop load
// -----------------------------------------------------------------------------------------

/// A request kind of the load phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `POST` a new Pod.
    Create,
    /// `GET` an existing Pod, change its `gen` label, `PUT` it back.
    Update,
    /// `DELETE` an existing Pod.
    Delete,
    /// `GET` an existing Pod (consistent read: no resourceVersion).
    Read,
}

/// How one load request ended.
#[derive(Debug, Clone)]
enum Outcome {
    /// Answered as expected, `latency` after its scheduled time, after `conflicts` 409s.
    Done { latency: Duration, conflicts: u64 },
    /// An update that still conflicted after its retry.
    Conflict { conflicts: u64 },
    /// 404: the Pod went away meanwhile.
    NotFound,
    /// No Pod to act on.
    NoPod,
    /// Too many requests in flight: not sent.
    NotSent,
    /// Any other answer, a connection error or a timeout.
    Failed(String),
}

/// Counts and latencies of one request kind of the load phase.
#[derive(Debug, Clone, Default)]
pub struct OpStats {
    /// Latencies from scheduled send time of the requests answered as expected; failed
    /// requests (other status codes, connection errors, timeouts) are its errors.
    pub latencies: Recorder,
    /// Requests scheduled.
    pub scheduled: u64,
    /// 409 Conflict answers (an update retries once with a fresh GET); not errors.
    pub conflicts: u64,
    /// Updates still in conflict after the retry; not errors.
    pub gave_up: u64,
    /// 404 answers (a read racing a delete); not errors.
    pub not_found: u64,
    /// Not sent because `max_in_flight` requests were pending.
    pub not_sent: u64,
    /// Not sent because no Pod was available to act on.
    pub skipped: u64,
}

impl OpStats {
    fn add(&mut self, outcome: &Outcome) {
        self.scheduled += 1;
        match outcome {
            Outcome::Done { latency, conflicts } => {
                self.latencies.record(*latency);
                self.conflicts += conflicts;
            }
            Outcome::Conflict { conflicts } => {
                self.conflicts += conflicts;
                self.gave_up += 1;
            }
            Outcome::NotFound => self.not_found += 1,
            Outcome::NoPod => self.skipped += 1,
            Outcome::NotSent => self.not_sent += 1,
            Outcome::Failed(_) => self.latencies.error(),
        }
    }

    /// Adds `other`'s counts and latencies.
    pub fn merge(&mut self, other: &OpStats) {
        self.latencies.merge(&other.latencies);
        self.scheduled += other.scheduled;
        self.conflicts += other.conflicts;
        self.gave_up += other.gave_up;
        self.not_found += other.not_found;
        self.not_sent += other.not_sent;
        self.skipped += other.skipped;
    }

    /// Latency quantiles and the rate of expected answers over `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        self.latencies.summary(elapsed)
    }
}

/// What the load phase measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Offered mutating (and read) requests per second.
    pub rate: f64,
    /// Scheduled length of the load.
    pub duration: Duration,
    /// Pods created before the load so updates, deletes and reads have targets.
    pub seeded: u64,
    /// Bytes of a Pod as the server returns it (after defaults).
    pub pod_bytes: usize,
    /// Creates.
    pub create: OpStats,
    /// Updates (GET + PUT, both inside the latency).
    pub update: OpStats,
    /// Deletes.
    pub delete: OpStats,
    /// Single-Pod reads.
    pub read: OpStats,
    /// The first distinct error messages.
    pub errors: Vec<String>,
}

impl LoadReport {
    /// Creates, updates and deletes together.
    pub fn mutating(&self) -> OpStats {
        let mut all = self.create.clone();
        all.merge(&self.update);
        all.merge(&self.delete);
        all
    }
}

/// Pods of the load phase and the counters shared by its requests.
struct LoadState {
    api: ApiClient,
    ns: String,
    /// Pods no update or delete is working on.
    idle: Mutex<Vec<String>>,
    next_pod: AtomicU64,
    next_gen: AtomicU64,
}

impl LoadState {
    /// Takes a random idle Pod out of the pool.
    fn take(&self) -> Option<String> {
        let mut idle = lock(&self.idle);
        if idle.is_empty() {
            return None;
        }
        let i = rand::rng().random_range(0..idle.len());
        Some(idle.swap_remove(i))
    }

    /// A random idle Pod, left in the pool.
    fn peek(&self) -> Option<String> {
        let idle = lock(&self.idle);
        if idle.is_empty() {
            return None;
        }
        let i = rand::rng().random_range(0..idle.len());
        Some(idle[i].clone())
    }

    fn put_back(&self, name: String) {
        lock(&self.idle).push(name);
    }

    async fn run(&self, op: Op, scheduled: Instant) -> Outcome {
        match op {
            Op::Create => self.create(scheduled).await,
            Op::Update => {
                let Some(name) = self.take() else {
                    return Outcome::NoPod;
                };
                let out = self.update(&name, scheduled).await;
                if !matches!(out, Outcome::NotFound) {
                    self.put_back(name);
                }
                out
            }
            Op::Delete => {
                let Some(name) = self.take() else {
                    return Outcome::NoPod;
                };
                let path = pod_path(&self.ns, &name);
                match self.api.send(Method::DELETE, &path, None).await {
                    Ok(r) if r.status == 200 || r.status == 202 => done(scheduled, 0),
                    Ok(r) if r.status == 404 => Outcome::NotFound,
                    Ok(r) => Outcome::Failed(format!("delete: {}", r.describe())),
                    Err(e) => Outcome::Failed(format!("delete: {e:#}")),
                }
            }
            Op::Read => {
                let Some(name) = self.peek() else {
                    return Outcome::NoPod;
                };
                match self.api.get(&pod_path(&self.ns, &name)).await {
                    Ok(r) if r.status == 200 => done(scheduled, 0),
                    Ok(r) if r.status == 404 => Outcome::NotFound,
                    Ok(r) => Outcome::Failed(format!("get: {}", r.describe())),
                    Err(e) => Outcome::Failed(format!("get: {e:#}")),
                }
            }
        }
    }

    async fn create(&self, scheduled: Instant) -> Outcome {
        let n = self.next_pod.fetch_add(1, Ordering::Relaxed);
        let name = format!("load-{n:06}");
        let body = pod_body(&name, now_us());
        match self
            .api
            .send(Method::POST, &pods_path(&self.ns), Some(&body))
            .await
        {
            Ok(r) if r.status == 201 => {
                let out = done(scheduled, 0);
                self.put_back(name);
                out
            }
            Ok(r) => Outcome::Failed(format!("create: {}", r.describe())),
            Err(e) => Outcome::Failed(format!("create: {e:#}")),
        }
    }

    /// GET, change the `gen` label, PUT; on 409 once more with a fresh GET.
    async fn update(&self, name: &str, scheduled: Instant) -> Outcome {
        let path = pod_path(&self.ns, name);
        let mut conflicts = 0;
        for _ in 0..2 {
            let mut pod = match self.api.get(&path).await {
                Ok(r) if r.status == 200 => match r.json() {
                    Ok(v) => v,
                    Err(e) => return Outcome::Failed(format!("update: GET: {e:#}")),
                },
                Ok(r) if r.status == 404 => return Outcome::NotFound,
                Ok(r) => return Outcome::Failed(format!("update: GET: {}", r.describe())),
                Err(e) => return Outcome::Failed(format!("update: GET: {e:#}")),
            };
            let generation = self.next_gen.fetch_add(1, Ordering::Relaxed) + 1;
            match pod.pointer_mut("/metadata/labels") {
                Some(Value::Object(labels)) => {
                    labels.insert("gen".into(), json!(generation.to_string()));
                }
                _ => return Outcome::Failed("update: the Pod has no labels".into()),
            }
            match self.api.send(Method::PUT, &path, Some(&pod)).await {
                Ok(r) if r.status == 200 => return done(scheduled, conflicts),
                Ok(r) if r.status == 409 => conflicts += 1,
                Ok(r) if r.status == 404 => return Outcome::NotFound,
                Ok(r) => return Outcome::Failed(format!("update: PUT: {}", r.describe())),
                Err(e) => return Outcome::Failed(format!("update: PUT: {e:#}")),
            }
        }
        Outcome::Conflict { conflicts }
    }
}

fn done(scheduled: Instant, conflicts: u64) -> Outcome {
    Outcome::Done {
        latency: scheduled.elapsed(),
        conflicts,
    }
}

/// Sends `count` requests, request `i` at `start + i / rate` (whatever earlier ones do),
/// at most `max_in_flight` pending; every outcome goes to `out`.
async fn ticker(
    state: Arc<LoadState>,
    rate: f64,
    count: u64,
    max_in_flight: usize,
    kind: impl Fn(u64) -> Op,
    out: mpsc::UnboundedSender<(Op, Outcome)>,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let start = Instant::now();
    for i in 0..count {
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let op = kind(i);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let _ = out.send((op, Outcome::NotSent));
            continue;
        };
        let state = state.clone();
        let out = out.clone();
        tokio::spawn(async move {
            let outcome = state.run(op, scheduled).await;
            drop(permit);
            let _ = out.send((op, outcome));
        });
    }
}

/// Runs the load phase in namespace `ns` (created here).
///
/// # Errors
/// When the namespace cannot be created or seeding creates no Pod at all. Failed
/// requests during the load are counted, not returned.
pub async fn run_load(api: &ApiClient, ns: &str, params: &ApiParams) -> Result<LoadReport> {
    if !(params.rate > 0.0 && params.rate.is_finite()) {
        bail!("--rate must be positive");
    }
    api.create_namespace(ns).await?;
    // Updates, deletes and reads need Pods from the first tick: one second's worth.
    let seed = (params.rate.ceil() as u64).max(50);
    eprintln!("[api load] seeding {seed} pods in {ns}");
    let (names, _, seed_errors) =
        create_pods(api, ns, "seed", 0..seed, params.load_concurrency).await;
    if names.is_empty() {
        bail!(
            "seeding created no pod: {}",
            seed_errors.first().map_or("", String::as_str)
        );
    }
    let pod_bytes = match api.get(&pod_path(ns, &names[0])).await {
        Ok(r) if r.status == 200 => r.body.len(),
        _ => 0,
    };
    let seeded = names.len() as u64;
    let state = Arc::new(LoadState {
        api: api.clone(),
        ns: ns.to_string(),
        idle: Mutex::new(names),
        next_pod: AtomicU64::new(0),
        next_gen: AtomicU64::new(0),
    });
    let count = (params.rate * params.duration.as_secs_f64()).round() as u64;
    eprintln!(
        "[api load] {count} writes + {count} reads at {} /s each for {:?}",
        params.rate, params.duration
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let writes = ticker(
        state.clone(),
        params.rate,
        count,
        params.max_in_flight,
        |i| MIX[(i % MIX.len() as u64) as usize],
        tx.clone(),
    );
    let reads = ticker(
        state,
        params.rate,
        count,
        params.max_in_flight,
        |_| Op::Read,
        tx,
    );
    tokio::join!(writes, reads);
    eprintln!("[api load] schedule done; waiting for the last answers");
    let mut report = LoadReport {
        rate: params.rate,
        duration: params.duration,
        seeded,
        pod_bytes,
        create: OpStats::default(),
        update: OpStats::default(),
        delete: OpStats::default(),
        read: OpStats::default(),
        errors: Vec::new(),
    };
    // Every sender is dropped once the last spawned request ends (each has timeouts).
    while let Some((op, outcome)) = rx.recv().await {
        if let Outcome::Failed(message) = &outcome {
            sample(&mut report.errors, message.clone());
        }
        match op {
            Op::Create => report.create.add(&outcome),
            Op::Update => report.update.add(&outcome),
            Op::Delete => report.delete.add(&outcome),
            Op::Read => report.read.add(&outcome),
        }
    }
    Ok(report)
}

// -----------------------------------------------------------------------------------------
// Phase 2: watch fan-out
// -----------------------------------------------------------------------------------------

/// What the watch phase measured.
#[derive(Debug, Clone)]
pub struct WatchReport {
    /// Watch streams asked for.
    pub watchers: usize,
    /// Watch streams that opened.
    pub opened: usize,
    /// Time to open them all.
    pub open_time: Duration,
    /// Pods the writer tried to create.
    pub events_sent: u64,
    /// Creates answered 201.
    pub events_acked: u64,
    /// Time the writer took.
    pub writer_time: Duration,
    /// Events received by watchers (each one counted once per watcher).
    pub delivered: u64,
    /// `events_acked × opened`.
    pub expected: u64,
    /// Acknowledged events a watcher never received.
    pub missing: u64,
    /// Events a watcher received more than once.
    pub duplicates: u64,
    /// Events whose resourceVersion was not above the previous one of that watcher.
    pub out_of_order: u64,
    /// Lines that were not an ADDED of the writer's Pods (ERROR, unknown objects).
    pub foreign: u64,
    /// Streams that ended or failed before the end.
    pub stream_errors: u64,
    /// Latency from each create's send time to each receipt.
    pub latencies: Recorder,
    /// The first distinct error messages.
    pub errors: Vec<String>,
}

impl WatchReport {
    /// Every acknowledged event reached every watcher once, in order, with no failure.
    pub fn exactly_once(&self) -> bool {
        self.missing == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.foreign == 0
            && self.stream_errors == 0
            && self.opened == self.watchers
            && self.events_acked > 0
    }
}

/// One line of a watch stream, as far as the benchmark reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchLine {
    #[serde(rename = "type")]
    kind: String,
    object: WatchObject,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchObject {
    metadata: WatchMeta,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchMeta {
    name: String,
    #[serde(rename = "resourceVersion")]
    resource_version: String,
    annotations: SentAnnotation,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SentAnnotation {
    #[serde(rename = "skiff-bench/sent-us")]
    sent_us: String,
}

/// A watch line that is an ADDED of writer Pod `w-<seq>`: (seq, resourceVersion, sent µs).
fn parse_watch_line(line: &[u8]) -> Option<(u64, i64, u64)> {
    let l: WatchLine = serde_json::from_slice(line).ok()?;
    if l.kind != "ADDED" {
        return None;
    }
    let m = l.object.metadata;
    let seq = m.name.strip_prefix("w-")?.parse().ok()?;
    let rv = m.resource_version.parse().ok()?;
    let sent = m.annotations.sent_us.parse().ok()?;
    Some((seq, rv, sent))
}

/// What one watcher saw.
#[derive(Debug)]
struct Seen {
    counts: Vec<u32>,
    latencies_us: Vec<u64>,
    out_of_order: u64,
    foreign: u64,
    stream_error: Option<String>,
}

/// Opens a watch on its own HTTP/1.1 connection; returns the body once the headers came
/// (the server has subscribed by then) and the connection's task.
async fn open_watch(authority: &str, path: &str) -> Result<(Incoming, JoinHandle<()>)> {
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(path)
        .header(HOST, authority)
        .header(ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())?;
    let response = match sender.send_request(request).await {
        Ok(r) => r,
        Err(e) => {
            task.abort();
            return Err(e.into());
        }
    };
    if response.status() != 200 {
        task.abort();
        bail!("watch answered {}", response.status());
    }
    Ok((response.into_body(), task))
}

/// Reads watch lines until all `events` were seen, or the writer is done and [`GRACE`]
/// passed, or `hard_stop`.
async fn watch_loop(
    mut body: Incoming,
    conn: JoinHandle<()>,
    events: u64,
    writer_done: Arc<AtomicBool>,
    hard_stop: Instant,
) -> Seen {
    let mut seen = Seen {
        counts: vec![0; events as usize],
        latencies_us: Vec::with_capacity(events as usize),
        out_of_order: 0,
        foreign: 0,
        stream_error: None,
    };
    let mut distinct = 0u64;
    let mut last_rv = 0i64;
    let mut grace_end: Option<Instant> = None;
    let mut buf: Vec<u8> = Vec::new();
    while distinct < events {
        let now = Instant::now();
        if now >= hard_stop || grace_end.is_some_and(|g| now >= g) {
            break;
        }
        if grace_end.is_none() && writer_done.load(Ordering::Acquire) {
            grace_end = Some(now + GRACE);
        }
        let frame = match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
            Err(_) => continue,
            Ok(None) => {
                seen.stream_error = Some("watch stream ended".into());
                break;
            }
            Ok(Some(Err(e))) => {
                seen.stream_error = Some(format!("watch stream failed: {e}"));
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let received = now_us();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        let mut consumed = 0;
        while let Some(pos) = buf[consumed..].iter().position(|&b| b == b'\n') {
            let line = &buf[consumed..consumed + pos];
            consumed += pos + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Some((seq, rv, sent)) = parse_watch_line(line).filter(|(s, _, _)| *s < events)
            else {
                seen.foreign += 1;
                continue;
            };
            let count = &mut seen.counts[seq as usize];
            if *count == 0 {
                distinct += 1;
            }
            *count += 1;
            if rv <= last_rv {
                seen.out_of_order += 1;
            }
            last_rv = rv;
            seen.latencies_us.push(received.saturating_sub(sent));
        }
        buf.drain(..consumed);
    }
    conn.abort();
    seen
}

/// Runs the watch phase in namespace `ns` (created here).
///
/// # Errors
/// When the namespace cannot be created, the start resourceVersion cannot be read, or no
/// watch opens. Missing, duplicate or reordered deliveries are not errors: see
/// [`WatchReport::exactly_once`].
pub async fn run_watch_fanout(
    api: &ApiClient,
    ns: &str,
    params: &ApiParams,
) -> Result<WatchReport> {
    let events = params.watch_events.max(1);
    api.create_namespace(ns).await?;
    let list = api.get(&pods_path(ns)).await?;
    if list.status != 200 {
        bail!("listing pods of {ns}: {}", list.describe());
    }
    let rv = list
        .json()?
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| anyhow!("the pod list of {ns} has no resourceVersion"))?;
    let path = format!(
        "{}?watch=true&resourceVersion={rv}&timeoutSeconds=600",
        pods_path(ns)
    );
    eprintln!(
        "[api watch] opening {} watches from resourceVersion {rv}",
        params.watchers
    );
    let open_start = Instant::now();
    let authority = api.authority().to_string();
    let opened: Vec<Result<(Incoming, JoinHandle<()>)>> = stream::iter(0..params.watchers)
        .map(|_| {
            let (authority, path) = (authority.clone(), path.clone());
            async move {
                tokio::time::timeout(params.op_timeout, open_watch(&authority, &path))
                    .await
                    .map_err(|_| anyhow!("opening a watch timed out"))?
            }
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let open_time = open_start.elapsed();
    let mut errors = Vec::new();
    let writer_done = Arc::new(AtomicBool::new(false));
    let hard_stop = Instant::now() + WRITER_MAX + GRACE;
    let mut tasks = Vec::with_capacity(opened.len());
    for o in opened {
        match o {
            Ok((body, conn)) => tasks.push(tokio::spawn(watch_loop(
                body,
                conn,
                events,
                writer_done.clone(),
                hard_stop,
            ))),
            Err(e) => sample(&mut errors, format!("{e:#}")),
        }
    }
    if tasks.is_empty() {
        bail!(
            "no watch opened: {}",
            errors.first().map_or("", String::as_str)
        );
    }
    eprintln!(
        "[api watch] {} watches open in {:.2} s; creating {events} pods one at a time",
        tasks.len(),
        open_time.as_secs_f64()
    );

    let writer_start = Instant::now();
    let mut acked = vec![false; events as usize];
    let mut sent = 0u64;
    for seq in 0..events {
        if writer_start.elapsed() >= WRITER_MAX {
            sample(&mut errors, format!("writer stopped after {WRITER_MAX:?}"));
            break;
        }
        sent += 1;
        let body = pod_body(&format!("w-{seq:05}"), now_us());
        match api.send(Method::POST, &pods_path(ns), Some(&body)).await {
            Ok(r) if r.status == 201 => acked[seq as usize] = true,
            Ok(r) => sample(&mut errors, format!("create: {}", r.describe())),
            Err(e) => sample(&mut errors, format!("create: {e:#}")),
        }
    }
    let writer_time = writer_start.elapsed();
    writer_done.store(true, Ordering::Release);

    let opened = tasks.len();
    let acked_count = acked.iter().filter(|a| **a).count() as u64;
    let mut report = WatchReport {
        watchers: params.watchers,
        opened,
        open_time,
        events_sent: sent,
        events_acked: acked_count,
        writer_time,
        delivered: 0,
        expected: acked_count * opened as u64,
        missing: 0,
        duplicates: 0,
        out_of_order: 0,
        foreign: 0,
        stream_errors: 0,
        latencies: Recorder::new(),
        errors,
    };
    for task in tasks {
        let seen = match task.await {
            Ok(s) => s,
            Err(e) => {
                report.stream_errors += 1;
                sample(&mut report.errors, format!("watcher task: {e}"));
                continue;
            }
        };
        for &us in &seen.latencies_us {
            report.latencies.record(Duration::from_micros(us));
        }
        report.out_of_order += seen.out_of_order;
        report.foreign += seen.foreign;
        if let Some(e) = seen.stream_error {
            report.stream_errors += 1;
            sample(&mut report.errors, e);
        }
        for (seq, &n) in seen.counts.iter().enumerate() {
            // A create that failed has an unknown outcome: its event may come or not.
            if acked[seq] && n == 0 {
                report.missing += 1;
            }
            report.delivered += u64::from(n.min(1));
            report.duplicates += u64::from(n.saturating_sub(1));
        }
    }
    Ok(report)
}

// -----------------------------------------------------------------------------------------
// Phase 3: memory and full lists
// -----------------------------------------------------------------------------------------

/// Latencies and size of one kind of full list.
#[derive(Debug, Clone, Default)]
pub struct ListStats {
    /// Time to the last byte of each list.
    pub latencies: Recorder,
    /// Bytes of the last list.
    pub bytes: usize,
    /// Items in the last list.
    pub items: u64,
}

/// What the memory phase measured.
#[derive(Debug, Clone)]
pub struct MemoryReport {
    /// Pods asked for.
    pub pods: u64,
    /// Pods created.
    pub created: u64,
    /// Creates in flight.
    pub concurrency: usize,
    /// Time to create them.
    pub load_time: Duration,
    /// Create latencies (closed loop, `concurrency` in flight); failures are its errors.
    pub create_latency: Recorder,
    /// Items of the last `resourceVersion=0` list while waiting for the cache.
    pub cached: u64,
    /// Time from the last create to a `resourceVersion=0` list with every Pod.
    pub cache_wait: Duration,
    /// Server RSS (KiB) right after it became ready; `None` when not known.
    pub rss_start_kib: Option<u64>,
    /// Server RSS (KiB) before the load (after the other phases).
    pub rss_before_kib: Option<u64>,
    /// Server RSS (KiB) with every Pod cached.
    pub rss_after_kib: Option<u64>,
    /// Server RSS (KiB) after the timed lists.
    pub rss_after_lists_kib: Option<u64>,
    /// `GET …/pods?resourceVersion=0`, served from the watch cache.
    pub list_cached: ListStats,
    /// `GET …/pods`, consistent with the store.
    pub list_consistent: ListStats,
    /// The first distinct error messages.
    pub errors: Vec<String>,
}

#[derive(Deserialize)]
struct ListItems {
    #[serde(default)]
    items: Vec<serde::de::IgnoredAny>,
}

/// Items of a list answer.
fn count_items(body: &[u8]) -> Result<u64> {
    let l: ListItems = serde_json::from_slice(body).context("list answer is not a list")?;
    Ok(l.items.len() as u64)
}

/// Times one full list of `path` into `stats`.
async fn time_list(api: &ApiClient, path: &str, stats: &mut ListStats, errors: &mut Vec<String>) {
    let start = Instant::now();
    match api.get(path).await {
        Ok(r) if r.status == 200 => {
            stats.latencies.record(start.elapsed());
            stats.bytes = r.body.len();
            match count_items(&r.body) {
                Ok(n) => stats.items = n,
                Err(e) => sample(errors, format!("list: {e:#}")),
            }
        }
        Ok(r) => {
            stats.latencies.error();
            sample(errors, format!("list: {}", r.describe()));
        }
        Err(e) => {
            stats.latencies.error();
            sample(errors, format!("list: {e:#}"));
        }
    }
}

/// Runs the memory phase in namespace `ns` (created here); `pid` is the server's process
/// (RSS is not read without it) and `rss_start_kib` its RSS right after start.
///
/// # Errors
/// When the namespace cannot be created. Failed creates and lists are counted.
pub async fn run_memory(
    api: &ApiClient,
    ns: &str,
    params: &ApiParams,
    pid: Option<u32>,
    rss_start_kib: Option<u64>,
) -> Result<MemoryReport> {
    let rss = || pid.and_then(|p| rss_kib_of(p).ok());
    api.create_namespace(ns).await?;
    let rss_before_kib = rss();
    eprintln!(
        "[api memory] creating {} pods, {} in flight",
        params.pods, params.load_concurrency
    );
    let start = Instant::now();
    let (names, create_latency, mut errors) =
        create_pods(api, ns, "mem", 0..params.pods, params.load_concurrency).await;
    let load_time = start.elapsed();
    let created = names.len() as u64;
    drop(names);
    eprintln!(
        "[api memory] {created} pods in {:.1} s; waiting for the watch cache",
        load_time.as_secs_f64()
    );
    let cached_path = format!("{}?resourceVersion=0", pods_path(ns));
    let wait_start = Instant::now();
    let mut cached = 0;
    while wait_start.elapsed() < CACHE_WAIT {
        match api.get(&cached_path).await {
            Ok(r) if r.status == 200 => match count_items(&r.body) {
                Ok(n) => cached = n,
                Err(e) => sample(&mut errors, format!("list: {e:#}")),
            },
            Ok(r) => sample(&mut errors, format!("list: {}", r.describe())),
            Err(e) => sample(&mut errors, format!("list: {e:#}")),
        }
        if cached >= created {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cache_wait = wait_start.elapsed();
    if cached < created {
        sample(
            &mut errors,
            format!("the watch cache held {cached} of {created} pods after {CACHE_WAIT:?}"),
        );
    }
    // Let work after the load (compaction, flushes, allocator) settle before reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_kib = rss();
    eprintln!("[api memory] timing full lists");
    let mut list_cached = ListStats::default();
    let mut list_consistent = ListStats::default();
    for _ in 0..params.list_repeats.max(1) {
        time_list(api, &cached_path, &mut list_cached, &mut errors).await;
        time_list(api, &pods_path(ns), &mut list_consistent, &mut errors).await;
    }
    let rss_after_lists_kib = rss();
    Ok(MemoryReport {
        pods: params.pods,
        created,
        concurrency: params.load_concurrency,
        load_time,
        create_latency,
        cached,
        cache_wait,
        rss_start_kib,
        rss_before_kib,
        rss_after_kib,
        rss_after_lists_kib,
        list_cached,
        list_consistent,
        errors,
    })
}

// -----------------------------------------------------------------------------------------
// The whole run and its report
// -----------------------------------------------------------------------------------------

/// Everything `skiff-bench api` measured.
#[derive(Debug, Clone, Default)]
pub struct ApiReport {
    /// What was measured (`skiff server <binary>` or the URL).
    pub server: String,
    /// Phase 1, when run.
    pub load: Option<LoadReport>,
    /// Phase 2, when run.
    pub watch: Option<WatchReport>,
    /// Phase 3, when run.
    pub memory: Option<MemoryReport>,
    /// Phases that failed to run, with why.
    pub failures: Vec<String>,
}

/// Runs the chosen phases against `api`, in namespaces `<prefix>-load`, `-watch`, `-mem`.
/// A phase that fails to run is recorded in [`ApiReport::failures`] and the next one runs.
/// `on_phase` is called with `load`, `watch` or `memory` before each phase runs, and with
/// `end` after the last.
pub async fn run_api(
    api: &ApiClient,
    prefix: &str,
    params: &ApiParams,
    phases: Phases,
    pid: Option<u32>,
    mut on_phase: impl FnMut(&str),
) -> ApiReport {
    let rss_start_kib = pid.and_then(|p| rss_kib_of(p).ok());
    let mut report = ApiReport::default();
    if phases.load {
        on_phase("load");
        match run_load(api, &format!("{prefix}-load"), params).await {
            Ok(r) => report.load = Some(r),
            Err(e) => report.failures.push(format!("load: {e:#}")),
        }
    }
    if phases.watch {
        on_phase("watch");
        match run_watch_fanout(api, &format!("{prefix}-watch"), params).await {
            Ok(r) => report.watch = Some(r),
            Err(e) => report.failures.push(format!("watch: {e:#}")),
        }
    }
    if phases.memory {
        on_phase("memory");
        match run_memory(api, &format!("{prefix}-mem"), params, pid, rss_start_kib).await {
            Ok(r) => report.memory = Some(r),
            Err(e) => report.failures.push(format!("memory: {e:#}")),
        }
    }
    on_phase("end");
    report
}

/// How a p99 compares with the SLO (≤ 1 s) and the aim (≤ 50 ms).
pub fn verdict(p99_ms: f64, ok: u64) -> &'static str {
    if ok == 0 {
        "no data"
    } else if p99_ms <= AIM_P99_MS {
        "meets SLO and aim"
    } else if p99_ms <= SLO_P99_MS {
        "meets SLO, misses aim"
    } else {
        "**misses SLO**"
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn load_row(out: &mut String, label: &str, s: &OpStats, elapsed: Duration) {
    use std::fmt::Write as _;
    let sum = s.summary(elapsed);
    let mut notes = Vec::new();
    for (n, what) in [
        (s.conflicts, "409 conflicts"),
        (s.gave_up, "updates still in conflict after the retry"),
        (s.not_found, "404s"),
        (s.not_sent, "not sent (too many in flight)"),
        (s.skipped, "skipped (no pod)"),
    ] {
        if n > 0 {
            notes.push(format!("{n} {what}"));
        }
    }
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
        s.scheduled,
        sum.ops,
        sum.ops_per_sec,
        sum.errors,
        sum.p50_ms,
        sum.p90_ms,
        sum.p99_ms,
        sum.max_ms,
        verdict(sum.p99_ms, sum.ops),
        notes.join(", ")
    );
}

impl ApiReport {
    /// Whether a correctness check failed: a phase did not run, or the watch phase was
    /// not exactly once.
    pub fn failed(&self) -> bool {
        !self.failures.is_empty() || self.watch.as_ref().is_some_and(|w| !w.exactly_once())
    }

    /// The report as markdown: one table per phase.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if let Some(l) = &self.load {
            let _ = writeln!(
                out,
                "**Latency at a fixed rate** (open loop: {:.0} mutating + {:.0} read requests/s \
                 for {} s, latency from each request's scheduled send time; Pod {} B as \
                 stored; {} Pods seeded). Target: p99 ≤ {SLO_P99_MS:.0} ms (Kubernetes SLO), \
                 aim ≤ {AIM_P99_MS:.0} ms.\n",
                l.rate,
                l.rate,
                l.duration.as_secs_f64(),
                l.pod_bytes,
                l.seeded
            );
            let _ = writeln!(
                out,
                "| requests | scheduled | ok | ok/s | errors | p50 ms | p90 ms | p99 ms | max ms \
                 | p99 vs target | notes |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
            load_row(&mut out, "**mutating (all)**", &l.mutating(), l.duration);
            load_row(&mut out, "· create (POST)", &l.create, l.duration);
            load_row(&mut out, "· update (GET + PUT)", &l.update, l.duration);
            load_row(&mut out, "· delete", &l.delete, l.duration);
            load_row(&mut out, "**read (GET one Pod)**", &l.read, l.duration);
            if !l.errors.is_empty() {
                let _ = writeln!(out, "\nLoad errors (first kinds): {}", l.errors.join("; "));
            }
            let _ = writeln!(out);
        }
        if let Some(w) = &self.watch {
            let s = w.latencies.summary(w.writer_time);
            let _ = writeln!(
                out,
                "**Watch fan-out** ({} watch streams, one HTTP/1.1 connection each, from one \
                 resourceVersion; one writer creates {} Pods one at a time; latency from each \
                 create's send to its receipt at each watcher).\n",
                w.watchers, w.events_sent
            );
            let _ = writeln!(
                out,
                "| watchers open | events acked | delivered / expected | exactly once, in order \
                 | p50 ms | p90 ms | p99 ms | max ms | notes |"
            );
            let _ = writeln!(out, "|---:|---:|---:|---|---:|---:|---:|---:|---|");
            let mut notes = vec![
                format!("opened in {:.2} s", w.open_time.as_secs_f64()),
                format!(
                    "writer {:.0} creates/s",
                    w.events_acked as f64 / w.writer_time.as_secs_f64().max(1e-9)
                ),
            ];
            if !w.exactly_once() {
                notes.push(format!(
                    "missing {}, duplicates {}, out of order {}, foreign lines {}, stream errors {}",
                    w.missing, w.duplicates, w.out_of_order, w.foreign, w.stream_errors
                ));
            }
            if !w.errors.is_empty() {
                notes.push(format!("errors: {}", w.errors.join("; ")));
            }
            let _ = writeln!(
                out,
                "| {}/{} | {}/{} | {}/{} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                w.opened,
                w.watchers,
                w.events_acked,
                w.events_sent,
                w.delivered,
                w.expected,
                if w.exactly_once() { "yes" } else { "**NO**" },
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.max_ms,
                notes.join("; ")
            );
            let _ = writeln!(out);
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                out,
                "**Memory with {} Pods cached** (RSS of the `skiff server` process: API server \
                 and its embedded store member together) **and full lists** (each timed {} \
                 times, to the last byte).\n",
                m.pods,
                m.list_cached.latencies.ops() + m.list_cached.latencies.errors()
            );
            let _ = writeln!(out, "| figure | value | notes |");
            let _ = writeln!(out, "|---|---:|---|");
            let c = m.create_latency.summary(m.load_time);
            let _ = writeln!(
                out,
                "| Pods created | {} | in {:.1} s ({:.0}/s, {} in flight; create p50 {:.2} ms, \
                 p99 {:.2} ms){} |",
                m.created,
                m.load_time.as_secs_f64(),
                c.ops_per_sec,
                m.concurrency,
                c.p50_ms,
                c.p99_ms,
                if c.errors > 0 {
                    format!(", {} errors", c.errors)
                } else {
                    String::new()
                }
            );
            let _ = writeln!(
                out,
                "| in a `resourceVersion=0` list | {} | {:.2} s after the last create |",
                m.cached,
                m.cache_wait.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "| RSS at start, MiB | {} | right after /readyz |",
                mib(m.rss_start_kib)
            );
            let _ = writeln!(
                out,
                "| RSS before the load, MiB | {} | after the other phases |",
                mib(m.rss_before_kib)
            );
            let delta = match (m.rss_before_kib, m.rss_after_kib) {
                (Some(b), Some(a)) if m.created > 0 => format!(
                    "+{:.1} MiB over before, {:.1} KiB per Pod",
                    (a as f64 - b as f64) / 1024.0,
                    (a as f64 - b as f64) / m.created as f64
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| RSS with the Pods cached, MiB | {} | {delta} |",
                mib(m.rss_after_kib)
            );
            let _ = writeln!(
                out,
                "| RSS after the lists, MiB | {} | |",
                mib(m.rss_after_lists_kib)
            );
            for (label, l) in [
                ("list `resourceVersion=0` (watch cache)", &m.list_cached),
                ("list consistent (no resourceVersion)", &m.list_consistent),
            ] {
                let s = l.latencies.summary(Duration::from_secs(1));
                let _ = writeln!(
                    out,
                    "| {label}, ms | {:.1} | p50; max {:.1} ms; {} items, {:.1} MiB{} |",
                    s.p50_ms,
                    s.max_ms,
                    l.items,
                    l.bytes as f64 / (1024.0 * 1024.0),
                    if s.errors > 0 {
                        format!("; {} errors", s.errors)
                    } else {
                        String::new()
                    }
                );
            }
            if !m.errors.is_empty() {
                let _ = writeln!(out, "\nMemory-phase errors: {}", m.errors.join("; "));
            }
            let _ = writeln!(out);
        }
        for f in &self.failures {
            let _ = writeln!(out, "**Phase failed**: {f}\n");
        }
        out
    }
}

/// `line` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `(verb and resource, code, latency)` of one `skiff::request` line of the server's text
/// log.
fn parse_request_line(line: &str) -> Option<(String, u16, Duration)> {
    if !line.contains("skiff::request") {
        return None;
    }
    let clean = strip_ansi(line);
    let field = |k: &str| {
        clean
            .split_whitespace()
            .find_map(|t| t.strip_prefix(k))
            .map(|v| v.trim_matches('"').to_string())
    };
    let verb = field("verb=")?;
    let resource = field("resource=").unwrap_or_default();
    let code = field("code=")?.parse().ok()?;
    let ms: f64 = field("latency_ms=")?.parse().ok()?;
    Some((
        format!("{verb} {resource}").trim().to_string(),
        code,
        Duration::from_secs_f64(ms.max(0.0) / 1000.0),
    ))
}

/// Splits `log` at byte offsets `marks` (`(phase, offset where it starts)`, in order),
/// each cut moved forward to a line start; the last phase runs to the end.
pub fn split_log<'a>(log: &'a str, marks: &[(String, usize)]) -> Vec<(String, &'a str)> {
    let cut = |at: usize| {
        if at == 0 || at >= log.len() {
            return at.min(log.len());
        }
        // A cut right after a newline (or at either end) is always a char boundary.
        log.as_bytes()[at - 1..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(log.len(), |i| at + i)
    };
    let mut out = Vec::new();
    for (i, (phase, start)) in marks.iter().enumerate() {
        let end = marks.get(i + 1).map_or(log.len(), |(_, e)| *e);
        let (a, b) = (cut(*start), cut(end));
        if a < b {
            out.push((phase.clone(), &log[a..b]));
        }
    }
    out
}

/// The handling times the server logged itself (its `skiff::request` lines: from a
/// request's arrival to its answer being ready), per phase and verb, as a markdown table;
/// empty when the log has none. Next to the client's figures, it separates time spent in
/// the handlers from time spent queueing, in the network stack and in the client.
pub fn server_log_table(segments: &[(String, &str)]) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    let mut rows = String::new();
    for (phase, text) in segments {
        let mut verbs: BTreeMap<String, (Recorder, BTreeMap<u16, u64>)> = BTreeMap::new();
        for (verb, code, latency) in text.lines().filter_map(parse_request_line) {
            let entry = verbs.entry(verb).or_default();
            entry.0.record(latency);
            if !(200..300).contains(&code) {
                *entry.1.entry(code).or_default() += 1;
            }
        }
        for (verb, (rec, codes)) in &verbs {
            let s = rec.summary(Duration::from_secs(1));
            let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
            let _ = writeln!(
                rows,
                "| {phase} | {verb} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                s.ops,
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.max_ms,
                codes.join(", ")
            );
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "**Server-side handling time** (from the server's own request log; watches are not \
         logged).\n"
    );
    let _ = writeln!(
        out,
        "| phase | request | count | p50 ms | p90 ms | p99 ms | max ms | other than 2xx |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|");
    out.push_str(&rows);
    out
}

/// Raises the soft limit on open files to at least `want` (up to the hard limit), so
/// the watchers' sockets fit, here and in servers started afterwards; returns the limit.
///
/// # Errors
/// When the limits cannot be read or set.
pub fn raise_nofile(want: u64) -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(NOFILE)")?;
    if soft >= want {
        return Ok(soft);
    }
    let new = want.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard).context("setrlimit(NOFILE)")?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_is_realistic_in_size() {
        let v = pod_body("load-000001", 123);
        let n = serde_json::to_vec(&v).unwrap().len();
        assert!((1000..=2000).contains(&n), "{n} bytes");
        assert_eq!(v["metadata"]["annotations"][SENT_ANNOTATION], "123");
    }

    #[test]
    fn mix_is_50_30_20() {
        let count = |op| MIX.iter().filter(|o| **o == op).count();
        assert_eq!(
            (count(Op::Create), count(Op::Update), count(Op::Delete)),
            (5, 3, 2)
        );
    }

    #[test]
    fn watch_lines() {
        let pod = pod_body("w-00007", 42);
        let mut obj = pod.clone();
        obj["metadata"]["resourceVersion"] = json!("1234");
        let line = serde_json::to_vec(&json!({"type": "ADDED", "object": obj})).unwrap();
        assert_eq!(parse_watch_line(&line), Some((7, 1234, 42)));
        let modified = serde_json::to_vec(&json!({"type": "MODIFIED", "object": obj})).unwrap();
        assert_eq!(parse_watch_line(&modified), None);
        let status = br#"{"type":"ERROR","object":{"kind":"Status","code":410}}"#;
        assert_eq!(parse_watch_line(status), None);
        assert_eq!(parse_watch_line(b"not json"), None);
        let mut other = obj;
        other["metadata"]["name"] = json!("load-000001");
        let line = serde_json::to_vec(&json!({"type": "ADDED", "object": other})).unwrap();
        assert_eq!(parse_watch_line(&line), None);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(10.0, 1), "meets SLO and aim");
        assert_eq!(verdict(200.0, 1), "meets SLO, misses aim");
        assert_eq!(verdict(1500.0, 1), "**misses SLO**");
        assert_eq!(verdict(0.0, 0), "no data");
    }

    #[test]
    fn outcomes_are_counted_apart() {
        let mut s = OpStats::default();
        s.add(&Outcome::Done {
            latency: Duration::from_millis(2),
            conflicts: 1,
        });
        s.add(&Outcome::Conflict { conflicts: 2 });
        s.add(&Outcome::NotFound);
        s.add(&Outcome::NotSent);
        s.add(&Outcome::NoPod);
        s.add(&Outcome::Failed("x".into()));
        assert_eq!(s.scheduled, 6);
        assert_eq!(s.latencies.ops(), 1);
        assert_eq!(s.latencies.errors(), 1);
        assert_eq!((s.conflicts, s.gave_up), (3, 1));
        assert_eq!((s.not_found, s.not_sent, s.skipped), (1, 1, 1));
    }

    #[test]
    fn status_messages() {
        let r = Reply {
            status: 409,
            body: Bytes::from_static(br#"{"kind":"Status","message":"conflict here"}"#),
        };
        assert_eq!(r.describe(), "409 conflict here");
        let r = Reply {
            status: 500,
            body: Bytes::from_static(b"plain"),
        };
        assert_eq!(r.describe(), "500 plain");
    }

    #[test]
    fn server_log_lines() {
        let line = "\u{1b}[2m2026-11-28T04:10:54.124108Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
                    \u{1b}[2mskiff::request\u{1b}[0m\u{1b}[2m:\u{1b}[0m request \
                    \u{1b}[3mverb\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"get\" \
                    \u{1b}[3mresource\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"pods\" \
                    \u{1b}[3mcode\u{1b}[0m\u{1b}[2m=\u{1b}[0m404 \
                    \u{1b}[3mlatency_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m0.5";
        assert_eq!(
            parse_request_line(line),
            Some(("get pods".into(), 404, Duration::from_micros(500)))
        );
        assert_eq!(parse_request_line("INFO skiff_store: became leader"), None);
        let log = format!("{line}\nnoise\n{line}\n");
        let table = server_log_table(&[("load".to_string(), log.as_str())]);
        assert!(table.contains("| load | get pods | 2 |"), "{table}");
        assert!(table.contains("| 404×2 |"), "{table}");
        assert_eq!(server_log_table(&[("x".to_string(), "nothing")]), "");
    }

    #[test]
    fn log_split_at_line_starts() {
        let log = "a1\na2\nb1\nb2\n";
        // Marks in the middle of a line move to the next line start.
        let parts = split_log(log, &[("a".into(), 0), ("b".into(), 7), ("end".into(), 12)]);
        assert_eq!(
            parts,
            vec![("a".to_string(), "a1\na2\nb1\n"), ("b".to_string(), "b2\n")]
        );
        let parts = split_log(log, &[("a".into(), 0), ("b".into(), 6)]);
        assert_eq!(parts[1], ("b".to_string(), "b1\nb2\n"));
    }

    #[test]
    fn client_urls() {
        assert!(ApiClient::new("http://127.0.0.1:6443", Duration::from_secs(1)).is_ok());
        assert!(ApiClient::new("https://127.0.0.1:6443", Duration::from_secs(1)).is_err());
        assert!(ApiClient::new("not a url", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn report_renders_every_phase() {
        let mut read = OpStats::default();
        read.add(&Outcome::Done {
            latency: Duration::from_millis(3),
            conflicts: 0,
        });
        let report = ApiReport {
            server: "test".into(),
            load: Some(LoadReport {
                rate: 200.0,
                duration: Duration::from_secs(1),
                seeded: 200,
                pod_bytes: 2000,
                create: OpStats::default(),
                update: OpStats::default(),
                delete: OpStats::default(),
                read,
                errors: vec![],
            }),
            watch: Some(WatchReport {
                watchers: 2,
                opened: 2,
                open_time: Duration::from_millis(5),
                events_sent: 1,
                events_acked: 1,
                writer_time: Duration::from_millis(5),
                delivered: 2,
                expected: 2,
                missing: 0,
                duplicates: 0,
                out_of_order: 0,
                foreign: 0,
                stream_errors: 0,
                latencies: Recorder::new(),
                errors: vec![],
            }),
            memory: None,
            failures: vec!["memory: boom".into()],
        };
        let md = report.to_markdown();
        assert!(
            md.contains("| **read (GET one Pod)** | 1 | 1 | 1.0 | 0 | 3.00 |"),
            "{md}"
        );
        assert!(md.contains("| 2/2 | 1/1 | 2/2 | yes |"), "{md}");
        assert!(md.contains("memory: boom"), "{md}");
        assert!(report.failed());
    }
}
