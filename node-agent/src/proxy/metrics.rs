//! Counters the proxy keeps about its syncs, for the agent to export.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live counters, updated by the sync loop; share it with an `Arc` and read
/// [`ProxyMetrics::snapshot`] from anywhere.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    syncs: AtomicU64,
    full_syncs: AtomicU64,
    sync_errors: AtomicU64,
    last_sync_micros: AtomicU64,
    rules: AtomicU64,
    service_ports: AtomicU64,
    endpoints: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Syncs that applied a script (full or incremental), ever.
    pub syncs: u64,
    /// Of those, full rebuilds of the table.
    pub full_syncs: u64,
    /// Syncs that failed (`nft` rejected the script or could not run).
    pub sync_errors: u64,
    /// How long the last successful sync took, rendering and `nft` included.
    pub last_sync_duration: Duration,
    /// Rules in the table after the last successful sync.
    pub rules: u64,
    /// Service ports programmed by the last successful sync.
    pub service_ports: u64,
    /// Endpoints programmed by the last successful sync.
    pub endpoints: u64,
}

impl ProxyMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            syncs: self.syncs.load(Ordering::Relaxed),
            full_syncs: self.full_syncs.load(Ordering::Relaxed),
            sync_errors: self.sync_errors.load(Ordering::Relaxed),
            last_sync_duration: Duration::from_micros(
                self.last_sync_micros.load(Ordering::Relaxed),
            ),
            rules: self.rules.load(Ordering::Relaxed),
            service_ports: self.service_ports.load(Ordering::Relaxed),
            endpoints: self.endpoints.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn record_success(
        &self,
        full: bool,
        took: Duration,
        rules: usize,
        service_ports: usize,
        endpoints: usize,
    ) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if full {
            self.full_syncs.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_sync_micros.store(micros, Ordering::Relaxed);
        self.rules.store(rules as u64, Ordering::Relaxed);
        self.service_ports
            .store(service_ports as u64, Ordering::Relaxed);
        self.endpoints.store(endpoints as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_error(&self) {
        self.sync_errors.fetch_add(1, Ordering::Relaxed);
    }
}
