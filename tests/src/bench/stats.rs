//! Latency recording: one hdrhistogram per client (microseconds, 3 significant digits),
//! merged into a [`Summary`] per case.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency recorded exactly: 2 minutes in µs (longer ones saturate).
const MAX_MICROS: u64 = 120_000_000;

/// The latencies and error count of one client (or, merged, of a case).
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    errors: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        // Bounds 1..=MAX_MICROS with 3 digits are valid constants: this cannot fail.
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .expect("constant histogram bounds are valid");
        Self { hist, errors: 0 }
    }

    /// Records one successful operation that took `latency`.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, MAX_MICROS));
    }

    /// Counts one failed operation.
    pub fn error(&mut self) {
        self.errors += 1;
    }

    /// Adds `other`'s latencies and errors to this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail; saturate regardless.
        for v in other.hist.iter_recorded() {
            self.hist
                .saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
        self.errors += other.errors;
    }

    /// Successful operations recorded.
    pub fn ops(&self) -> u64 {
        self.hist.len()
    }

    /// Failed operations counted.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The summary of these latencies over `elapsed` wall time.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let ms = |q: f64| {
            if self.hist.is_empty() {
                0.0
            } else {
                self.hist.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let secs = elapsed.as_secs_f64();
        Summary {
            ops: self.ops(),
            errors: self.errors,
            elapsed,
            ops_per_sec: if secs > 0.0 {
                self.ops() as f64 / secs
            } else {
                0.0
            },
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: if self.hist.is_empty() {
                0.0
            } else {
                self.hist.max() as f64 / 1000.0
            },
        }
    }
}

/// Throughput and latency quantiles of one case.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Successful operations.
    pub ops: u64,
    /// Failed operations (errors and timeouts).
    pub errors: u64,
    /// Wall time of the case.
    pub elapsed: Duration,
    /// Successful operations per second of wall time.
    pub ops_per_sec: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_throughput() {
        let mut r = Recorder::new();
        for ms in 1..=100u64 {
            r.record(Duration::from_millis(ms));
        }
        r.error();
        let s = r.summary(Duration::from_secs(2));
        assert_eq!(s.ops, 100);
        assert_eq!(s.errors, 1);
        assert_eq!(s.ops_per_sec, 50.0);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p90_ms - 90.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn merge_adds_counts_and_errors() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        b.record(Duration::from_millis(3));
        b.error();
        a.merge(&b);
        assert_eq!(a.ops(), 3);
        assert_eq!(a.errors(), 1);
        assert!((a.summary(Duration::from_secs(1)).p90_ms - 3.0).abs() < 0.01);
    }

    #[test]
    fn extremes_do_not_panic() {
        let mut r = Recorder::new();
        r.record(Duration::ZERO);
        r.record(Duration::from_secs(100_000));
        let s = r.summary(Duration::ZERO);
        assert_eq!(s.ops, 2);
        assert_eq!(s.ops_per_sec, 0.0);
        assert_eq!(Recorder::new().summary(Duration::from_secs(1)).p99_ms, 0.0);
    }
}
