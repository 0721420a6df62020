//! Skiff's Jepsen-style harness: run a store cluster in network namespaces,
//! drive clients against it while a nemesis injects faults, record what the
//! clients saw, and check the record.
//!
//! The same harness runs Skiff's `skiff store` and real etcd (both speak the
//! etcd v3 API and take etcd's flags); a run is one command,
//! `skiff-jepsen test --workload register --nemesis partition --target skiff`
//! (see `docs/jepsen.md`), and leaves a folder with the history, the
//! verdicts and an HTML report. The checkers need no running store and are
//! proven by self-tests on hand-made histories and on histories generated
//! by simulated correct systems with injected faults.
//!
//! # Layout
//!
//! Recording and checking (no I/O besides files):
//!
//! - [`history`]: events (`invoke` / `ok` / `fail` / `info`), their JSON-lines
//!   form, and their pairing into operations with validation.
//! - [`model`]: the [`model::Model`] trait (sequential specifications, with
//!   per-key partitioning) and the [`model::Register`] model.
//! - [`checker::linearizable`]: the linearizability checker (Wing–Gong–Lowe
//!   search with Porcupine/Knossos refinements, bounded in time and memory).
//! - [`checker::set`]: lost / unexpected / stale / recovered set elements.
//! - [`checker::counter`]: counters updated by optimistic read-modify-write.
//! - [`checker::watch`]: watch streams: order, gaps, duplicates, agreement
//!   between clients, and replay against the final read.
//! - [`checker::lock`]: lease locks with fencing: duplicate, non-monotonic
//!   and stale fences.
//! - [`checker::lease`]: keys attached to leases: never absent before the
//!   lease could end, never present after it must have ended.
//! - [`verdict`]: [`verdict::Verdict`], [`verdict::CheckResult`] and the
//!   combined [`verdict::Summary`] written to a run's folder.
//! - [`report`]: the HTML report with SVG timeline, latency and throughput.
//! - `simulation` (tests only): a simulated register service that generates
//!   linearizable histories, with injectable faults.
//!
//! Running (root, `ip`, `nft`):
//!
//! - [`testbed`]: test hosts — network namespaces on a bridge, a guard that
//!   always removes them, and `cleanup` of leftovers by name prefix.
//! - [`firewall`]: nftables drop rules inside the namespaces (partitions).
//! - [`target`]: Skiff or etcd, and the command line of one member.
//! - [`member`]: one member process (start, kill -9, SIGSTOP/SIGCONT, wipe).
//! - [`cluster`]: the members together: health, leader, membership changes.
//! - [`client`]: the etcd v3 gRPC client with timeouts and errors classified
//!   by what they say about the outcome.
//! - [`recorder`]: the run's clock, the history and nemesis logs, process
//!   ids and the run's bounds.
//! - [`nemesis`]: the fault schedule; [`nemesis::partition`] the shapes.
//! - [`workload`]: register, set, counter, watch, lock and lease clients.
//! - [`run`]: one test end to end, and the run folder.
//!
//! # Example
//!
//! ```
//! use skiff_jepsen::checker::linearizable::{check_history, Budget};
//! use skiff_jepsen::history::{EventType, History, Op};
//! use skiff_jepsen::model::Register;
//! use skiff_jepsen::verdict::{Summary, Verdict};
//!
//! let mut h = History::new();
//! h.push(0, 1, EventType::Invoke, Some("k"), Op::Write(1));
//! h.push(5, 1, EventType::Ok, Some("k"), Op::Write(1));
//! h.push(6, 2, EventType::Invoke, Some("k"), Op::Read(None));
//! h.push(9, 2, EventType::Ok, Some("k"), Op::Read(Some(2)));
//! let report = check_history(&Register, &h, &Budget::default())?;
//! assert_eq!(report.verdict, Verdict::Invalid);
//! let summary = Summary::new(vec![report.to_check_result()]);
//! assert_eq!(summary.verdict, Verdict::Invalid);
//! # Ok::<(), skiff_jepsen::history::HistoryError>(())
//! ```

#![warn(missing_docs)]

pub mod checker;
pub mod client;
pub mod cluster;
pub mod firewall;
pub mod history;
pub mod member;
pub mod model;
pub mod nemesis;
pub mod recorder;
pub mod report;
pub mod run;
#[cfg(test)]
mod simulation;
pub mod target;
pub mod testbed;
pub mod verdict;
pub mod workload;
