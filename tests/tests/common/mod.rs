//! Shared by the `store_*` end-to-end tests: the `skiff store` target with short raft
//! timeouts, a time bound for every test, and small helpers.
//!
//! Each test file uses a subset of these helpers; unused ones are allowed.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_tests::{skiff_binary, Cluster, ClusterConfig, Etcdctl, Target};

/// Raft timing for tests on loopback: heartbeat 50 ms, election 500 ms (etcd's defaults
/// are 100/1000; halving them keeps failover tests short without flapping on a busy
/// 2-core machine).
pub const FAST_RAFT: [&str; 2] = ["--heartbeat-interval=50", "--election-timeout=500"];

/// Environment variable that points the suite at another server: `etcd` runs the same
/// tests against the real etcd 3.4, to check that what they expect is etcd's behaviour.
pub const TARGET_ENV: &str = "SKIFF_TESTS_TARGET";

/// Whether the suite runs against the real etcd ([`TARGET_ENV`]` = etcd`).
pub fn against_etcd() -> bool {
    std::env::var(TARGET_ENV).is_ok_and(|v| v == "etcd")
}

/// A config for `size` members of `skiff store` (`SKIFF_BIN`, else the cargo target dir),
/// or of etcd when [`against_etcd`], with [`FAST_RAFT`] timing.
pub fn skiff(size: usize) -> Result<ClusterConfig> {
    let target = if against_etcd() {
        Target::Etcd
    } else {
        Target::Skiff {
            binary: skiff_binary()?,
        }
    };
    let mut config = ClusterConfig::new(target, size);
    config.extra_args = FAST_RAFT.iter().map(|s| s.to_string()).collect();
    Ok(config)
}

/// Starts `size` members of `skiff store` with [`FAST_RAFT`] timing.
pub async fn start(size: usize) -> Result<Cluster> {
    Cluster::start(skiff(size)?).await
}

/// Runs a test body under a time bound, so that a hung server fails the test instead of
/// the suite. The cluster inside is dropped (its members killed by pid) either way.
pub async fn bounded<F: Future<Output = Result<()>>>(limit: Duration, body: F) -> Result<()> {
    match tokio::time::timeout(limit, body).await {
        Ok(r) => r,
        Err(_) => bail!("test did not finish within {limit:?}"),
    }
}

/// `etcdctl` against every member of `cluster`.
pub fn etcdctl(cluster: &Cluster) -> Etcdctl {
    Etcdctl::new(cluster.endpoints())
}

/// `etcdctl` against the given client URLs written as `host:port`, without the `http://`
/// scheme — the other way people write etcdctl's endpoints.
pub fn etcdctl_hostport(endpoints: &[String]) -> Etcdctl {
    Etcdctl::new(
        endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://").to_string())
            .collect(),
    )
}

/// Polls `check` every 100 ms until it returns `Ok(Some(_))` or `timeout` passes; the
/// last error or "still None" is reported.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition still false".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?} ({last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Standard base64 (with padding), as etcdctl's `-w json` prints keys and values.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Parses etcdctl `-w json` output.
pub fn json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text.trim()).with_context(|| format!("not JSON: {text:?}"))
}

#[test]
fn base64_matches_rfc4648_vectors() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}
