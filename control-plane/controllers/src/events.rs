//! Events (`core/v1 Event`) for what the scheduler and controllers do, as `kubectl
//! describe` shows them.
//!
//! Publishing never blocks a controller: records go through a bounded queue to one writer
//! task, which drops records when the queue is full (counted in the log) rather than slow
//! the loop that produced them. Repeats of the same (object, reason, message) within ten
//! minutes bump `count` and `lastTimestamp` of the first Event instead of creating another,
//! as client-go's event correlator does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;

/// How many records may wait for the writer before new ones are dropped.
const QUEUE: usize = 4096;
/// Repeats within this window update the first Event instead of creating another.
const CORRELATION_WINDOW: Duration = Duration::from_secs(600);
/// Correlation entries kept; the map is cleared when it grows past this.
const MAX_CORRELATED: usize = 8192;

/// `Normal` or `Warning`, the two event types Kubernetes knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

struct Record {
    regarding: ObjectReference,
    kind: EventType,
    reason: String,
    message: String,
}

/// A handle for publishing Events; cheap to clone. Events are written with the client it
/// was made with, so a deposed leader's events are fenced like its other writes.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the writer task. `component` is the event's `source.component` and
    /// `reportingComponent` (e.g. `default-scheduler`, `deployment-controller`);
    /// `instance` names this process.
    pub fn new(client: Client, component: &str, instance: &str) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            client,
            component: component.to_string(),
            instance: instance.to_string(),
            seen: HashMap::new(),
        };
        tokio::spawn(writer.run(rx));
        Recorder {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A `Normal` event about `obj`.
    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: String) {
        self.publish(obj.object_ref(&()), EventType::Normal, reason, message);
    }

    /// A `Warning` event about `obj`.
    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: String) {
        self.publish(obj.object_ref(&()), EventType::Warning, reason, message);
    }

    /// An event about the object `regarding` names.
    pub fn publish(
        &self,
        regarding: ObjectReference,
        kind: EventType,
        reason: &str,
        message: String,
    ) {
        let rec = Record {
            regarding,
            kind,
            reason: reason.to_string(),
            message,
        };
        if self.tx.try_send(rec).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "event queue full; events dropped");
            }
        }
    }
}

struct Seen {
    namespace: String,
    name: String,
    count: i32,
    first: Instant,
}

struct Writer {
    client: Client,
    component: String,
    instance: String,
    seen: HashMap<(String, EventType, String, String), Seen>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Record>) {
        while let Some(rec) = rx.recv().await {
            if let Err(e) = self.write(rec).await {
                tracing::debug!(error = %e, "event not written");
            }
        }
    }

    async fn write(&mut self, rec: Record) -> kube::Result<()> {
        let uid = rec.regarding.uid.clone().unwrap_or_default();
        let key = (uid, rec.kind, rec.reason.clone(), rec.message.clone());
        let now = Timestamp::now();
        if let Some(seen) = self.seen.get_mut(&key) {
            if seen.first.elapsed() < CORRELATION_WINDOW {
                seen.count += 1;
                let api: Api<Event> = Api::namespaced(self.client.clone(), &seen.namespace);
                let patch = serde_json::json!({
                    "count": seen.count,
                    "lastTimestamp": Time(now),
                });
                let r = api
                    .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                if r.is_ok() {
                    return Ok(());
                }
                // Gone (TTL, namespace deleted): fall through and create a new one.
            }
            self.seen.remove(&key);
        }
        let namespace = rec
            .regarding
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let object_name = rec.regarding.name.clone().unwrap_or_default();
        // Kubernetes names events `<object>.<unix nanos in hex>`; the random tail keeps two
        // events of one object in the same nanosecond apart.
        let name = format!(
            "{object_name}.{:x}{:04x}",
            now.as_nanosecond(),
            rand::random::<u16>()
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: rec.regarding,
            reason: Some(rec.reason),
            message: Some(rec.message),
            type_: Some(rec.kind.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            // Legacy-style (client-go `record`): an eventTime would make `action` and the
            // events.k8s.io series rules required.
            event_time: None,
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            action: None,
            related: None,
            series: None,
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &ev).await?;
        if self.seen.len() >= MAX_CORRELATED {
            self.seen.clear();
        }
        self.seen.insert(
            key,
            Seen {
                namespace,
                name,
                count: 1,
                first: Instant::now(),
            },
        );
        Ok(())
    }
}
