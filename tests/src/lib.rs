//! End-to-end harness of Skiff: starts real store members — Skiff's `skiff store` or the
//! real etcd, chosen by [`Target`] — as processes on loopback ports, with the same
//! etcd-style flags, and talks to them with real clients (the `skiff-proto` gRPC stubs and
//! `etcdctl`). The `skiff-bench` binary builds on it to compare Skiff with etcd.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use skiff_tests::{Cluster, ClusterConfig, Target};
//! let mut cluster = Cluster::start(ClusterConfig::new(Target::Etcd, 3)).await?;
//! let leader = cluster.leader().await?;
//! cluster.kill(leader)?;          // kill -9; its data dir stays
//! cluster.restart(leader).await?; // same data dir, waits until healthy
//! # Ok(()) }                      // drop kills every member by pid
//! ```
//!
//! # Layout
//! - [`ports`]: free loopback ports, never handed out twice by one process.
//! - [`binaries`]: where `skiff` (built by cargo; `SKIFF_BIN`), `etcd` and `etcdctl` are.
//! - [`cluster`]: [`Target`], [`ClusterConfig`], [`Cluster`] and [`Member`]: start N
//!   members each with its own data dir in a temp dir, wait until healthy, kill -9,
//!   SIGSTOP/SIGCONT, restart on the same data dir, RSS; kill everything on drop.
//! - [`health`]: `GET /health` on a client URL, or a Range that succeeds.
//! - [`client`]: tonic channels and the etcd v3 KV/Watch/Lease/Maintenance clients.
//! - [`etcdctl`]: runs the real `etcdctl` (ETCDCTL_API=3) and captures its output.
//! - [`server`]: `skiff server` processes, kubectl and kube-rs clients of them.
//! - [`node`]: a real node (server + agent with runc pods) for one-machine tests.
//! - [`multinode`]: servers and worker agents each in a network namespace of its own.
//! - [`simnode`]: simulated nodes (registration, heartbeats, a stand-in kubelet) for
//!   scheduler and controller tests.
//! - [`bench`]: the workloads, statistics and reports of the `skiff-bench` binary.
//!
//! Everything binds to 127.0.0.1, or to addresses inside network namespaces the tests
//! create themselves ([`multinode`]).

pub mod bench;
pub mod binaries;
pub mod client;
pub mod cluster;
pub mod etcdctl;
pub mod health;
pub mod multinode;
pub mod node;
pub mod ports;
pub mod server;
pub mod simnode;

pub use binaries::{etcd_binary, etcdctl_binary, skiff_binary};
pub use cluster::{Cluster, ClusterConfig, Member, Target};
pub use etcdctl::{Etcdctl, EtcdctlOutput};
pub use ports::{free_port, free_ports};
