//! What to run: the workloads, a case (`workload:clients`), a suite of cases, and the
//! parameters shared by every case.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// One kind of load, all over the etcd v3 API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// `Put` of a random key of the key space.
    Put,
    /// `Range` of one random key, linearizable (the default read).
    RangeLinearizable,
    /// `Range` of one random key with `serializable = true` (member-local).
    RangeSerializable,
    /// `Txn`: if `mod_revision(key) == last seen` then `Put` else `Range` (compare-and-put;
    /// each client owns a slice of the key space, so compares normally succeed).
    TxnPut,
    /// Watch fan-out: `clients` watchers on one prefix, one writer; every event must reach
    /// every watcher exactly once. Latency is from the writer's send to the delivery.
    Watch,
    /// `LeaseKeepAlive` round trips, one lease and one stream per client.
    LeaseKeepAlive,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 6] = [
        Workload::Put,
        Workload::RangeLinearizable,
        Workload::RangeSerializable,
        Workload::TxnPut,
        Workload::Watch,
        Workload::LeaseKeepAlive,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::RangeLinearizable => "range-lin",
            Workload::RangeSerializable => "range-ser",
            Workload::TxnPut => "txn-put",
            Workload::Watch => "watch",
            Workload::LeaseKeepAlive => "lease-keepalive",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                anyhow!("unknown workload {s:?}; one of {}", names.join(", "))
            })
    }
}

/// A workload with a number of concurrent clients (watchers, for [`Workload::Watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Case {
    /// What each client does.
    pub workload: Workload,
    /// How many clients do it at once (at least 1).
    pub clients: usize,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.workload, self.clients)
    }
}

impl FromStr for Case {
    type Err = anyhow::Error;

    /// `workload:clients`, e.g. `put:64`; `workload` alone means one client.
    fn from_str(s: &str) -> Result<Self> {
        let (w, c) = s.trim().split_once(':').unwrap_or((s.trim(), "1"));
        let workload = w.parse()?;
        let clients: usize = c
            .parse()
            .with_context(|| format!("bad client count {c:?} in case {s:?}"))?;
        if clients == 0 {
            bail!("case {s:?} needs at least one client");
        }
        Ok(Case { workload, clients })
    }
}

/// Parses a comma-separated suite of cases: `put:1,put:64,range-lin:64,watch:1000`.
///
/// # Errors
/// When a case is malformed or the suite is empty.
pub fn parse_suite(s: &str) -> Result<Vec<Case>> {
    let cases = s
        .split(',')
        .filter(|c| !c.trim().is_empty())
        .map(str::parse)
        .collect::<Result<Vec<Case>>>()?;
    if cases.is_empty() {
        bail!("empty suite");
    }
    Ok(cases)
}

/// The suite matching the store's performance targets (issue 2, "Performance").
pub const DEFAULT_SUITE: &str =
    "put:1,put:64,put:256,range-lin:64,range-ser:64,txn-put:64,watch:1000,lease-keepalive:64";

/// Parameters shared by every case of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// HTTP/2 connections shared by a case's clients (capped at the client count).
    pub connections: usize,
    /// Requests per case (events written, for watch). The case stops at this count…
    pub total: u64,
    /// …or after this long, whichever comes first.
    pub max_duration: Duration,
    /// Bytes per key.
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Distinct keys written and read.
    pub key_space: u64,
    /// Events the watch case writes (its own count: each reaches every watcher).
    pub watch_events: u64,
    /// How long one request may take before it counts as an error.
    pub op_timeout: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            connections: 8,
            total: 100_000,
            max_duration: Duration::from_secs(30),
            key_size: 32,
            value_size: 256,
            key_space: 10_000,
            watch_events: 200,
            op_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_parse() {
        assert_eq!(
            "put:64".parse::<Case>().unwrap(),
            Case {
                workload: Workload::Put,
                clients: 64
            }
        );
        assert_eq!("range-ser".parse::<Case>().unwrap().clients, 1);
        assert!("put:0".parse::<Case>().is_err());
        assert!("put:x".parse::<Case>().is_err());
        assert!("nope:3".parse::<Case>().is_err());
    }

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>().unwrap(), w);
        }
    }

    #[test]
    fn default_suite_parses() {
        let suite = parse_suite(DEFAULT_SUITE).unwrap();
        assert_eq!(suite.len(), 8);
        assert_eq!(suite[6].to_string(), "watch:1000");
        assert!(parse_suite(" , ").is_err());
        assert!(parse_suite("put:1,,range-lin:2").is_ok());
    }
}
