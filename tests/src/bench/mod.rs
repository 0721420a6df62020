//! The benchmark behind `skiff-bench`: closed-loop workloads over the etcd v3 API only, so
//! one run measures Skiff and the real etcd with the same client; and, in [`api`], the
//! Kubernetes API server of `skiff server` over its REST API.
//!
//! A *case* is a workload with a number of clients (`put:64`). Clients share `connections`
//! HTTP/2 connections spread over the endpoints; each client issues one request at a time
//! and records its latency. A case ends at `total` requests or `max_duration`, whichever
//! comes first.
//!
//! # Layout
//! - [`workload`]: [`Workload`], [`Case`] and [`Params`], parsed from the command line.
//! - [`keys`]: fixed-size keys and values, the key space and prefixes.
//! - [`stats`]: latency histograms (hdrhistogram) and their [`Summary`].
//! - [`conn`]: the HTTP/2 connections the gRPC clients use.
//! - [`runner`]: connections, and the put / range / txn / lease keep-alive loops.
//! - [`watch`]: the watch fan-out case with its exactly-once delivery check.
//! - [`cpu`]: CPU time per request of the servers and of the client.
//! - [`report`]: markdown tables, single-target and Skiff/etcd comparison.
//! - [`schedule`]: `skiff-bench schedule`: scheduling throughput on simulated nodes and
//!   the time to create and bind a large Deployment.
//! - [`api`]: `skiff-bench api`: open-loop REST load, watch fan-out and memory of the API
//!   server, with its own report.

pub mod api;
pub mod conn;
pub mod cpu;
pub mod keys;
pub mod pods;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod stats;
pub mod watch;
pub mod workload;

pub use report::{CaseResult, Comparison};
pub use runner::{load_keys, run_case, Session};
pub use stats::Summary;
pub use workload::{Case, Params, Workload};
