//! Verdicts: the serialisable result every checker produces, and the
//! combined verdict of a test run.
//!
//! Each checker has its own typed report (with every detail) and converts it
//! into a [`CheckResult`]: a uniform shape with a [`Verdict`], named counts,
//! a bounded list of [`Anomaly`]s for people, and the typed report as JSON in
//! `details`. A run's [`Summary`] combines the results; it is what the harness
//! writes to `results.json` and what the HTML report reads.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// At most this many anomalies are listed in a [`CheckResult`]; the rest are
/// counted in [`CheckResult::anomalies_omitted`] (the typed report in
/// `details` still has them all).
pub const MAX_LISTED_ANOMALIES: usize = 100;

/// Whether a history satisfied a property.
///
/// Ordered by severity: `Valid < Unknown < Invalid`, so the verdict of
/// several checks is the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The property holds.
    Valid,
    /// The checker could not decide (budget exhausted, or not enough data).
    Unknown,
    /// The property is violated; the anomalies say how.
    Invalid,
}

impl Verdict {
    /// The verdict of two checks together: invalid if either is, else unknown
    /// if either is, else valid.
    pub fn and(self, other: Verdict) -> Verdict {
        self.max(other)
    }

    /// Whether this is [`Verdict::Valid`].
    pub fn is_valid(self) -> bool {
        self == Verdict::Valid
    }
}

/// One violation (or suspicious finding) in words, with its kind and key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Short machine-friendly kind, e.g. `lost`, `stale-fence`, `gap`.
    pub kind: String,
    /// The key (register, set, counter, lock, watch client) concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What happened, with the specifics (values, indices, times).
    pub message: String,
}

impl Anomaly {
    /// An anomaly of `kind` on `key`.
    pub fn new(kind: &str, key: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// The uniform result of one checker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Which checker produced it (`linearizable`, `set`, `watch`, ...).
    pub checker: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Named counts (operations checked, anomalies by kind, ...).
    pub counts: BTreeMap<String, u64>,
    /// Up to [`MAX_LISTED_ANOMALIES`] anomalies.
    pub anomalies: Vec<Anomaly>,
    /// How many anomalies were left out of `anomalies`.
    #[serde(default)]
    pub anomalies_omitted: u64,
    /// Remarks that do not change the verdict (a check skipped for lack of
    /// data, why the verdict is unknown, ...).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The checker's full typed report.
    #[serde(default)]
    pub details: serde_json::Value,
}

impl CheckResult {
    /// An empty result of `checker` with `verdict`.
    pub fn new(checker: &str, verdict: Verdict) -> Self {
        Self {
            checker: checker.to_owned(),
            verdict,
            counts: BTreeMap::new(),
            anomalies: Vec::new(),
            anomalies_omitted: 0,
            notes: Vec::new(),
            details: serde_json::Value::Null,
        }
    }

    /// Sets a count.
    pub fn count(&mut self, name: &str, value: u64) -> &mut Self {
        self.counts.insert(name.to_owned(), value);
        self
    }

    /// Lists an anomaly, or counts it as omitted past the limit.
    pub fn anomaly(&mut self, anomaly: Anomaly) -> &mut Self {
        if self.anomalies.len() < MAX_LISTED_ANOMALIES {
            self.anomalies.push(anomaly);
        } else {
            self.anomalies_omitted += 1;
        }
        self
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.notes.push(note.into());
        self
    }

    /// Stores a typed report as `details`. A report that cannot be
    /// serialised leaves `details` null and adds a note instead.
    pub fn details<T: Serialize>(&mut self, report: &T) -> &mut Self {
        match serde_json::to_value(report) {
            Ok(value) => self.details = value,
            Err(e) => self.notes.push(format!("details not serialisable: {e}")),
        }
        self
    }
}

/// The combined verdict of a run: every checker's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Invalid if any result is, else unknown if any is, else valid. An
    /// empty summary is unknown: nothing was checked.
    pub verdict: Verdict,
    /// The results, in the order given.
    pub results: Vec<CheckResult>,
}

impl Summary {
    /// Combines results.
    pub fn new(results: Vec<CheckResult>) -> Self {
        let verdict = results
            .iter()
            .map(|r| r.verdict)
            .reduce(Verdict::and)
            .unwrap_or(Verdict::Unknown);
        Self { verdict, results }
    }

    /// Writes the summary as pretty JSON.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_combine_by_severity() {
        use Verdict::*;
        assert_eq!(Valid.and(Valid), Valid);
        assert_eq!(Valid.and(Unknown), Unknown);
        assert_eq!(Unknown.and(Invalid), Invalid);
        assert_eq!(Invalid.and(Valid), Invalid);
        assert_eq!(Summary::new(vec![]).verdict, Unknown);
        let s = Summary::new(vec![
            CheckResult::new("a", Valid),
            CheckResult::new("b", Invalid),
            CheckResult::new("c", Unknown),
        ]);
        assert_eq!(s.verdict, Invalid);
    }

    #[test]
    fn results_serialise_and_cap_anomalies() {
        let mut r = CheckResult::new("set", Verdict::Invalid);
        r.count("lost", 150);
        for i in 0..150 {
            r.anomaly(Anomaly::new("lost", Some("s"), format!("element {i}")));
        }
        r.details(&vec![1, 2, 3]);
        assert_eq!(r.anomalies.len(), MAX_LISTED_ANOMALIES);
        assert_eq!(r.anomalies_omitted, 50);
        let json = serde_json::to_string(&Summary::new(vec![r.clone()])).unwrap();
        assert!(json.contains(r#""verdict":"invalid""#));
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back.results[0], r);
    }
}
