//! Skiff's scheduler and controller manager.
//!
//! Both are ordinary API clients (kube-rs) that run inside every `skiff server`; one of
//! each is active, elected through a `coordination.k8s.io/v1` Lease ([`leader`]). Every
//! write the active one makes carries a fencing token that the API server checks inside
//! the store transaction of the write, so a leader that was paused past its lease and
//! resumes cannot act (docs/leader-fencing.md).
//!
//! # Map
//! - [`leader`]: the elector and the fenced client of each term.
//! - [`events`]: `core/v1` Events for what the components do.
//! - [`scheduler`]: filters, scores and binds pending pods.
//! - the controllers: [`replicaset`], [`deployment`], [`node_lifecycle`], [`ipam`],
//!   [`endpoints`], [`gc`], [`namespace`]; [`manager`] runs them.

use std::sync::Arc;
use std::time::Duration;

pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod ipam;
pub mod leader;
pub mod manager;
pub mod namespace;
pub mod node_lifecycle;
pub mod podgc;
pub mod replicaset;
pub mod scheduler;

/// Settings of the controller manager and scheduler (flags of `skiff server`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// This process's identity in leader elections and events.
    pub identity: String,
    /// Pod network of the cluster; each node gets a `podCIDR` from it. `None`: no node IPAM.
    pub cluster_cidr: Option<String>,
    /// Prefix length of each node's podCIDR.
    pub node_cidr_mask_size: u8,
    /// A node whose Lease was not renewed for this long is marked Ready=Unknown.
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked.
    pub node_monitor_period: Duration,
    /// Grace period for a node that never posted a Ready condition (kube's
    /// `--node-startup-grace-period`, 60 s).
    pub node_startup_grace_period: Duration,
    /// Nodes per second per zone that may get a NoExecute taint (which evicts their pods)
    /// while the zone is healthy (kube's `--node-eviction-rate`, 0.1).
    pub node_eviction_rate: f64,
    /// The same rate for a partially disrupted zone of a large cluster (kube's
    /// `--secondary-node-eviction-rate`, 0.01); small clusters stop tainting instead.
    pub secondary_node_eviction_rate: f64,
    /// Terminated pods kept before the oldest are deleted (kube's
    /// `--terminated-pod-gc-threshold`, 12500); 0 keeps them all.
    pub terminated_pod_gc_threshold: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            identity: "skiff".to_string(),
            cluster_cidr: Some("10.244.0.0/16".to_string()),
            node_cidr_mask_size: 24,
            node_monitor_grace_period: Duration::from_secs(50),
            node_monitor_period: Duration::from_secs(5),
            node_startup_grace_period: Duration::from_secs(60),
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            terminated_pod_gc_threshold: 12500,
        }
    }
}

/// What each controller (and the scheduler) runs with during one leadership term.
#[derive(Clone)]
pub struct Context {
    /// The term's client: every request carries the term's fencing token, so once another
    /// process has taken over, writes through it are refused by the API server.
    pub client: kube::Client,
    /// Events, written through the same fenced client.
    pub events: events::Recorder,
    pub settings: Arc<Settings>,
}
