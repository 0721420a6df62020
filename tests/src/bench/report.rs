//! Markdown tables of results: one target, or Skiff against etcd with ratios. Tables are
//! meant to be pasted into the README as they are.

use std::fmt::Write as _;

use super::stats::Summary;
use super::workload::Case;

/// The outcome of one case on one target.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// What ran.
    pub case: Case,
    /// Throughput and latencies.
    pub summary: Summary,
    /// Extra facts (txn compare failures, watch delivery counts).
    pub note: String,
    /// Whether a correctness check of the case failed (e.g. a watch event missing).
    pub failed: bool,
    /// CPU time per request, when the servers' processes were known.
    pub cpu: Option<CpuPerOp>,
}

/// CPU time spent per request of a case, µs: every server process together, and the
/// benchmark client. On a machine where client and servers share the CPUs, throughput
/// follows their sum, and it varies far less between runs than throughput does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuPerOp {
    /// All server processes (every member), user + system.
    pub server_us: f64,
    /// This benchmark process, user + system.
    pub client_us: f64,
}

impl CaseResult {
    /// A passing result.
    pub fn new(case: Case, summary: Summary, note: String) -> Self {
        Self {
            case,
            summary,
            note,
            failed: false,
            cpu: None,
        }
    }

    /// `server` µs CPU/op, or `-` when not measured.
    fn server_cpu(&self) -> String {
        self.cpu
            .map_or_else(|| "-".to_string(), |c| format!("{:.1}", c.server_us))
    }

    /// The note with errors prepended when there were any.
    fn remarks(&self) -> String {
        let mut parts = Vec::new();
        if self.failed {
            parts.push("**FAILED**".to_string());
        }
        if self.summary.errors > 0 {
            parts.push(format!("{} errors", self.summary.errors));
        }
        if !self.note.is_empty() {
            parts.push(self.note.clone());
        }
        parts.join("; ")
    }
}

/// One target's results as a markdown table.
pub fn single_table(target: &str, members: usize, results: &[CaseResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| target | members | case | ops | ops/s | p50 ms | p90 ms | p99 ms | max ms \
         | server CPU µs/op | client CPU µs/op | notes |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in results {
        let s = &r.summary;
        let client = r
            .cpu
            .map_or_else(|| "-".to_string(), |c| format!("{:.1}", c.client_us));
        let _ = writeln!(
            out,
            "| {target} | {members} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            r.case,
            s.ops,
            s.ops_per_sec,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.max_ms,
            r.server_cpu(),
            client,
            r.remarks()
        );
    }
    out
}

/// One case measured on both targets with the same cluster size.
#[derive(Debug, Clone)]
pub struct ComparedCase {
    /// Members per cluster.
    pub members: usize,
    /// The reference (etcd).
    pub baseline: CaseResult,
    /// The one measured against it (Skiff).
    pub candidate: CaseResult,
}

/// Resident memory of one server after the same load.
#[derive(Debug, Clone, Copy)]
pub struct RssPair {
    /// Keys loaded before measuring.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Baseline RSS, KiB.
    pub baseline_kib: u64,
    /// Candidate RSS, KiB.
    pub candidate_kib: u64,
}

/// A whole comparison run: labels, cases and memory.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// Name of the baseline column (`etcd`).
    pub baseline: String,
    /// Name of the candidate column (`skiff`).
    pub candidate: String,
    /// Every case measured on both.
    pub cases: Vec<ComparedCase>,
    /// Memory after loading, when measured.
    pub rss: Option<RssPair>,
}

/// `candidate / baseline` as `1.23×`, or `n/a` when the baseline is zero.
pub fn ratio(candidate: f64, baseline: f64) -> String {
    if baseline > 0.0 && candidate.is_finite() {
        format!("{:.2}×", candidate / baseline)
    } else {
        "n/a".to_string()
    }
}

impl Comparison {
    /// The comparison as markdown: one table of cases (throughput ratio: higher is better
    /// for the candidate; latency ratios: lower is better) and one of memory.
    pub fn to_markdown(&self) -> String {
        let (b, c) = (&self.baseline, &self.candidate);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| case | members | {b} ops/s | {c} ops/s | {c}/{b} ops/s | {b} p50 ms | {c} p50 ms \
             | {c}/{b} p50 | {b} p99 ms | {c} p99 ms | {c}/{b} p99 \
             | {b} server CPU µs/op | {c} server CPU µs/op | notes |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for row in &self.cases {
            let (x, y) = (&row.baseline.summary, &row.candidate.summary);
            let mut notes = Vec::new();
            for (label, r) in [(b, &row.baseline), (c, &row.candidate)] {
                let remarks = r.remarks();
                if !remarks.is_empty() {
                    notes.push(format!("{label}: {remarks}"));
                }
            }
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {} | {} | {} | {} |",
                row.baseline.case,
                row.members,
                x.ops_per_sec,
                y.ops_per_sec,
                ratio(y.ops_per_sec, x.ops_per_sec),
                x.p50_ms,
                y.p50_ms,
                ratio(y.p50_ms, x.p50_ms),
                x.p99_ms,
                y.p99_ms,
                ratio(y.p99_ms, x.p99_ms),
                row.baseline.server_cpu(),
                row.candidate.server_cpu(),
                notes.join("<br>"),
            );
        }
        if let Some(rss) = &self.rss {
            let mib = |k: u64| k as f64 / 1024.0;
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "| memory (1 member) | {b} RSS MiB | {c} RSS MiB | {c}/{b} |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|");
            let _ = writeln!(
                out,
                "| after {} keys × {} B | {:.1} | {:.1} | {} |",
                rss.keys,
                rss.value_size,
                mib(rss.baseline_kib),
                mib(rss.candidate_kib),
                ratio(rss.candidate_kib as f64, rss.baseline_kib as f64),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::workload::Workload;

    fn result(ops_per_sec: f64, p50: f64, p99: f64) -> CaseResult {
        CaseResult::new(
            Case {
                workload: Workload::Put,
                clients: 64,
            },
            Summary {
                ops: 100,
                errors: 0,
                elapsed: Duration::from_secs(1),
                ops_per_sec,
                p50_ms: p50,
                p90_ms: p50,
                p99_ms: p99,
                max_ms: p99,
            },
            String::new(),
        )
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(3.0, 2.0), "1.50×");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(ratio(f64::NAN, 1.0), "n/a");
    }

    #[test]
    fn comparison_table_has_ratios_and_memory() {
        let mut failed = result(1500.0, 1.0, 4.0);
        failed.failed = true;
        failed.summary.errors = 2;
        let cmp = Comparison {
            baseline: "etcd".into(),
            candidate: "skiff".into(),
            cases: vec![ComparedCase {
                members: 3,
                baseline: CaseResult {
                    cpu: Some(CpuPerOp {
                        server_us: 70.04,
                        client_us: 30.0,
                    }),
                    ..result(1000.0, 2.0, 8.0)
                },
                candidate: failed,
            }],
            rss: Some(RssPair {
                keys: 100_000,
                value_size: 256,
                baseline_kib: 2048,
                candidate_kib: 1024,
            }),
        };
        let md = cmp.to_markdown();
        assert!(
            md.contains("| put:64 | 3 | 1000 | 1500 | 1.50× | 2.00 | 1.00 | 0.50× |"),
            "{md}"
        );
        assert!(
            md.contains("| 8.00 | 4.00 | 0.50× | 70.0 | - | skiff:"),
            "server CPU per op, `-` where not measured: {md}"
        );
        assert!(md.contains("skiff: **FAILED**; 2 errors"), "{md}");
        assert!(
            md.contains("| after 100000 keys × 256 B | 2.0 | 1.0 | 0.50× |"),
            "{md}"
        );
    }

    #[test]
    fn single_table_rows() {
        let mut r = result(10.0, 1.0, 2.0);
        r.cpu = Some(CpuPerOp {
            server_us: 41.26,
            client_us: 33.0,
        });
        let md = single_table("etcd", 1, &[r]);
        assert_eq!(md.lines().count(), 3);
        assert!(md.contains("| etcd | 1 | put:64 | 100 | 10 |"), "{md}");
        assert!(md.contains("| 41.3 | 33.0 |"), "{md}");
    }
}
