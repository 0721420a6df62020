//! Prometheus metrics of a store member, served on `/metrics` of the client port.
//!
//! Names follow etcd's where a dashboard would look for them (`etcd_server_*`,
//! `etcd_disk_*`, `etcd_mvcc_*`, `process_resident_memory_bytes`), so existing alerts
//! and tools keep working.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Every metric of a member.
pub struct Metrics {
    registry: Registry,
    /// Whether a leader is known (1) or not (0).
    pub has_leader: Gauge,
    /// Whether this member is the leader.
    pub is_leader: Gauge,
    /// Leader changes seen.
    pub leader_changes: Counter,
    /// Current raft term.
    pub term: Gauge,
    /// Raft commit index.
    pub commit_index: Gauge,
    /// Raft applied index.
    pub applied_index: Gauge,
    /// Proposals committed and applied.
    pub proposals_applied: Counter,
    /// Proposals that failed.
    pub proposals_failed: Counter,
    /// Proposals in flight.
    pub proposals_pending: Gauge,
    /// WAL fsync latency (seconds).
    pub fsync: Histogram,
    /// Log appends covered per fsync (group commit factor).
    pub fsync_batch: Histogram,
    /// Time to apply one entry (seconds).
    pub apply: Histogram,
    /// AppendEntries round trip to a peer, as the sender sees it (seconds).
    pub peer_round_trip: Histogram,
    /// Time this member took to handle an AppendEntries from the leader (seconds).
    pub peer_append_handle: Histogram,
    /// Size of the database (bytes).
    pub db_size: Gauge,
    /// Current MVCC revision.
    pub revision: Gauge,
    /// Compacted revision.
    pub compact_revision: Gauge,
    /// Watchers.
    pub watchers: Gauge,
    /// Watchers catching up.
    pub slow_watchers: Gauge,
    /// Leases.
    pub leases: Gauge,
    /// Linearizable read rounds (ReadIndex), each serving one or more reads.
    pub read_index_rounds: Counter,
    /// Reads served by those rounds.
    pub read_index_reads: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let lat = || Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let mut m = Self {
            registry: Registry::default(),
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            leader_changes: Counter::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            proposals_applied: Counter::default(),
            proposals_failed: Counter::default(),
            proposals_pending: Gauge::default(),
            fsync: lat(),
            fsync_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            apply: lat(),
            peer_round_trip: Histogram::new(exponential_buckets(0.00005, 2.0, 18)),
            peer_append_handle: Histogram::new(exponential_buckets(0.00005, 2.0, 18)),
            db_size: Gauge::default(),
            revision: Gauge::default(),
            compact_revision: Gauge::default(),
            watchers: Gauge::default(),
            slow_watchers: Gauge::default(),
            leases: Gauge::default(),
            read_index_rounds: Counter::default(),
            read_index_reads: Counter::default(),
        };
        m.registry.register(
            "etcd_server_has_leader",
            "Whether a leader exists (1) or not (0)",
            m.has_leader.clone(),
        );
        m.registry.register(
            "etcd_server_is_leader",
            "Whether this member is the leader",
            m.is_leader.clone(),
        );
        m.registry.register(
            "etcd_server_leader_changes_seen",
            "Leader changes seen",
            m.leader_changes.clone(),
        );
        m.registry.register(
            "etcd_network_peer_round_trip_time_seconds",
            "AppendEntries round trip to a peer (request sent to response decoded)",
            m.peer_round_trip.clone(),
        );
        m.registry.register(
            "skiff_peer_append_entries_handle_seconds",
            "Time to handle an AppendEntries from the leader (decode, append, fsync, reply)",
            m.peer_append_handle.clone(),
        );
        m.registry
            .register("skiff_raft_term", "Current raft term", m.term.clone());
        m.registry.register(
            "skiff_raft_commit_index",
            "Index of the newest raft log entry (openraft reports no commit index; this leads it by the entries in flight)",
            m.commit_index.clone(),
        );
        m.registry.register(
            "skiff_raft_applied_index",
            "Raft applied index",
            m.applied_index.clone(),
        );
        m.registry.register(
            "etcd_server_proposals_applied",
            "Proposals applied",
            m.proposals_applied.clone(),
        );
        m.registry.register(
            "etcd_server_proposals_failed",
            "Proposals failed",
            m.proposals_failed.clone(),
        );
        m.registry.register(
            "etcd_server_proposals_pending",
            "Proposals in flight",
            m.proposals_pending.clone(),
        );
        m.registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "WAL fsync latency",
            m.fsync.clone(),
        );
        m.registry.register(
            "skiff_disk_wal_fsync_batch",
            "Log appends made durable per fsync",
            m.fsync_batch.clone(),
        );
        m.registry.register(
            "skiff_apply_duration_seconds",
            "Time to apply one entry",
            m.apply.clone(),
        );
        m.registry.register(
            "etcd_mvcc_db_total_size_in_bytes",
            "Database size",
            m.db_size.clone(),
        );
        m.registry.register(
            "skiff_mvcc_revision",
            "Current revision",
            m.revision.clone(),
        );
        m.registry.register(
            "skiff_mvcc_compact_revision",
            "Compacted revision",
            m.compact_revision.clone(),
        );
        m.registry.register(
            "etcd_debugging_mvcc_watcher_total",
            "Watchers",
            m.watchers.clone(),
        );
        m.registry.register(
            "etcd_debugging_mvcc_slow_watcher_total",
            "Watchers catching up",
            m.slow_watchers.clone(),
        );
        m.registry
            .register("etcd_debugging_lease_total", "Leases", m.leases.clone());
        m.registry.register(
            "skiff_read_index_rounds",
            "ReadIndex rounds",
            m.read_index_rounds.clone(),
        );
        m.registry.register(
            "skiff_read_index_reads",
            "Reads served by ReadIndex rounds",
            m.read_index_reads.clone(),
        );
        m
    }

    /// Records one WAL sync covering `appends` log appends.
    pub fn observe_fsync(&self, took: Duration, appends: usize) {
        self.fsync.observe(took.as_secs_f64());
        self.fsync_batch.observe(appends as f64);
    }

    /// The Prometheus text exposition of every metric, plus process metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // The registry ends with "# EOF"; process metrics go before it.
        if let Some(stripped) = out.strip_suffix("# EOF\n") {
            out = stripped.to_string();
        }
        out.push_str(&process_metrics());
        out.push_str("# EOF\n");
        out
    }
}

/// `process_resident_memory_bytes` and friends from /proc (Linux).
fn process_metrics() -> String {
    let mut out = String::new();
    let page = 4096u64;
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let f: Vec<u64> = statm
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 2 {
            out.push_str("# HELP process_resident_memory_bytes Resident memory size in bytes.\n");
            out.push_str("# TYPE process_resident_memory_bytes gauge\n");
            out.push_str(&format!("process_resident_memory_bytes {}\n", f[1] * page));
            out.push_str("# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n");
            out.push_str("# TYPE process_virtual_memory_bytes gauge\n");
            out.push_str(&format!("process_virtual_memory_bytes {}\n", f[0] * page));
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push_str(
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\n",
        );
        out.push_str(&format!("process_open_fds {}\n", fds.count()));
    }
    out
}
