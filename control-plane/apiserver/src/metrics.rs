//! Prometheus metrics of the API server, served on `/metrics`. Names follow
//! kube-apiserver's (`apiserver_request_total`, `apiserver_request_duration_seconds`,
//! `apiserver_longrunning_requests`, `etcd_request_duration_seconds`,
//! `apiserver_watch_cache_*`), so existing dashboards find them.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: String,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of the API server.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<VerbLabels, Histogram, fn() -> Histogram>,
    watches: Family<ResourceLabels, Gauge>,
    store_calls: Family<OpLabels, Histogram, fn() -> Histogram>,
    cached_objects: Family<ResourceLabels, Gauge>,
    cache_revision: Family<ResourceLabels, Gauge>,
    watchers_cut: Family<ResourceLabels, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            durations: Family::new_with_constructor(latency),
            watches: Family::default(),
            store_calls: Family::new_with_constructor(latency),
            cached_objects: Family::default(),
            cache_revision: Family::default(),
            watchers_cut: Family::default(),
        };
        m.registry.register(
            "apiserver_request",
            "Requests by verb, resource and HTTP code",
            m.requests.clone(),
        );
        m.registry.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb and resource (watches: until the stream is set up)",
            m.durations.clone(),
        );
        m.registry.register(
            "apiserver_longrunning_requests",
            "Open watch streams by resource",
            m.watches.clone(),
        );
        m.registry.register(
            "etcd_request_duration_seconds",
            "Latency of store calls by operation",
            m.store_calls.clone(),
        );
        m.registry.register(
            "apiserver_watch_cache_objects",
            "Objects in the watch cache by resource",
            m.cached_objects.clone(),
        );
        m.registry.register(
            "apiserver_watch_cache_resource_version",
            "Revision the watch cache is at, by resource",
            m.cache_revision.clone(),
        );
        m.registry.register(
            "apiserver_terminated_watchers",
            "Watchers cut off for falling behind, by resource",
            m.watchers_cut.clone(),
        );
        m
    }

    /// Records one request.
    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.into(),
                resource: resource.into(),
                code: code.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&VerbLabels {
                verb: verb.into(),
                resource: resource.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// A watch stream opened.
    pub fn watch_started(&self, resource: &str) {
        self.watches
            .get_or_create(&ResourceLabels {
                resource: resource.into(),
            })
            .inc();
    }

    fn watch_ended(&self, resource: &str) {
        self.watches
            .get_or_create(&ResourceLabels {
                resource: resource.into(),
            })
            .dec();
    }

    /// Records one store call.
    pub fn observe_store(&self, operation: &str, took: Duration) {
        self.store_calls
            .get_or_create(&OpLabels {
                operation: operation.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Sets the watch cache figures of one resource (at scrape time).
    pub fn set_cache(&self, resource: &str, objects: usize, revision: i64, cut: u64) {
        let l = ResourceLabels {
            resource: resource.into(),
        };
        self.cached_objects.get_or_create(&l).set(objects as i64);
        self.cache_revision.get_or_create(&l).set(revision);
        self.watchers_cut.get_or_create(&l).set(cut as i64);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The process's metrics.
pub fn global() -> &'static Arc<Metrics> {
    static M: OnceLock<Arc<Metrics>> = OnceLock::new();
    M.get_or_init(|| Arc::new(Metrics::new()))
}

/// Counts a watch stream as open until dropped.
pub struct WatchGuard {
    metrics: Arc<Metrics>,
    resource: &'static str,
}

impl WatchGuard {
    /// Takes over the count that [`Metrics::watch_started`] began.
    pub fn new(metrics: Arc<Metrics>, resource: &'static str) -> WatchGuard {
        WatchGuard { metrics, resource }
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.metrics.watch_ended(self.resource);
    }
}
