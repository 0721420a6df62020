//! Skiff's node agent (the kubelet role) and service proxy (the kube-proxy role).
//!
//! An agent registers its Node, renews its Lease in `kube-node-lease`, watches the pods
//! bound to it and drives each to its desired state: a network namespace per pod set up
//! by the real CNI plugins, each container an OCI bundle run by `runc` under a small
//! per-container supervisor (the shim) that outlives agent restarts, images from a
//! content-addressed local store, probes, CRI-format logs served to `kubectl logs`. The
//! proxy programs Services as nftables rules.
//!
//! # Layout
//! - [`image`]: the local image store: import, pull, layers, overlay rootfs.
//! - [`logs`]: CRI-format container log files (write, rotate, read).
//! - [`proxy`]: Services → nftables.
//! - [`server`]: the agent's HTTP endpoint (`containerLogs`, `exec`).

pub mod agent;
pub mod failover;
pub mod image;
pub mod logs;
pub mod net;
pub mod node;
pub mod pods;
pub mod pressure;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod shim;

/// The current time as RFC 3339 (what status fields, records and CRI logs carry).
pub(crate) fn now() -> String {
    jiff::Timestamp::now().to_string()
}
