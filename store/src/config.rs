//! Configuration of a store member, with etcd's flag names and defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, StoreError};

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a cluster that already has this member (added through MemberAdd).
    Existing,
}

/// Everything a member needs to start. Field docs give etcd's flag and default.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `--name` (default "default").
    pub name: String,
    /// `--data-dir` (default "<name>.etcd").
    pub data_dir: PathBuf,
    /// `--listen-client-urls` (default http://127.0.0.1:2379).
    pub listen_client_urls: Vec<String>,
    /// `--advertise-client-urls` (default = listen client URLs).
    pub advertise_client_urls: Vec<String>,
    /// `--listen-peer-urls` (default http://127.0.0.1:2380).
    pub listen_peer_urls: Vec<String>,
    /// `--initial-advertise-peer-urls` (default = listen peer URLs).
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--initial-cluster` as (name, peer URL) pairs (default "<name>=<advertise peer URL>").
    pub initial_cluster: Vec<(String, String)>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--snapshot-count`: applied entries between raft snapshots (and log purges).
    pub snapshot_count: u64,
    /// `--quota-backend-bytes`: database size that raises the NOSPACE alarm.
    pub quota_backend_bytes: u64,
    /// `--heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// How long a client request may wait for raft before "request timed out".
    pub request_timeout: Duration,
    /// UNSAFE, for proving the jepsen checkers: report log entries durable without fsync.
    pub unsafe_no_fsync: bool,
    /// UNSAFE, for proving the jepsen checkers: serve linearizable reads locally without
    /// ReadIndex (stale reads on a deposed or partitioned leader, and on followers).
    pub unsafe_local_reads: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            data_dir: PathBuf::from("default.etcd"),
            listen_client_urls: vec!["http://127.0.0.1:2379".into()],
            advertise_client_urls: vec!["http://127.0.0.1:2379".into()],
            listen_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_advertise_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_cluster: vec![("default".into(), "http://127.0.0.1:2380".into())],
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            snapshot_count: 10_000,
            quota_backend_bytes: 2 << 30,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            request_timeout: Duration::from_secs(7),
            unsafe_no_fsync: false,
            unsafe_local_reads: false,
        }
    }
}

/// Parses `name=url,name=url` (a name may appear several times, once per peer URL).
///
/// # Errors
/// `InvalidArgument` naming the malformed item.
pub fn parse_initial_cluster(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|item| {
            let (n, u) = item.split_once('=').ok_or_else(|| {
                StoreError::InvalidArgument(format!("--initial-cluster: {item:?} is not name=url"))
            })?;
            validate_url(u)?;
            Ok((n.trim().to_string(), u.trim().to_string()))
        })
        .collect()
}

/// Checks that a URL is `http://host:port`.
///
/// # Errors
/// `InvalidArgument` explaining what is wrong.
pub fn validate_url(u: &str) -> Result<()> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| StoreError::InvalidArgument(format!("URL {u:?} must start with http://")))?;
    let hostport = rest.trim_end_matches('/');
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| StoreError::InvalidArgument(format!("URL {u:?} has no port")))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(StoreError::InvalidArgument(format!(
            "URL {u:?} is not http://host:port"
        )));
    }
    Ok(())
}

/// The `host:port` part of a URL.
pub fn url_host_port(u: &str) -> &str {
    u.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
}

impl StoreConfig {
    /// Checks the configuration for contradictions.
    ///
    /// # Errors
    /// `InvalidArgument` with a message naming the flag.
    pub fn validate(&self) -> Result<()> {
        for u in self
            .listen_client_urls
            .iter()
            .chain(&self.advertise_client_urls)
            .chain(&self.listen_peer_urls)
            .chain(&self.initial_advertise_peer_urls)
        {
            validate_url(u)?;
        }
        if self.listen_client_urls.is_empty() || self.listen_peer_urls.is_empty() {
            return Err(StoreError::InvalidArgument(
                "at least one client and one peer URL are needed".into(),
            ));
        }
        let mine: Vec<&String> = self
            .initial_cluster
            .iter()
            .filter(|(n, _)| n == &self.name)
            .map(|(_, u)| u)
            .collect();
        if mine.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "--initial-cluster has no entry for this member's --name {:?}",
                self.name
            )));
        }
        for u in &self.initial_advertise_peer_urls {
            if !mine.contains(&u) {
                return Err(StoreError::InvalidArgument(format!(
                    "--initial-advertise-peer-urls {u} is not listed for {:?} in --initial-cluster",
                    self.name
                )));
            }
        }
        if self.election_timeout < self.heartbeat_interval * 5 {
            return Err(StoreError::InvalidArgument(
                "--election-timeout should be at least 5 times --heartbeat-interval".into(),
            ));
        }
        Ok(())
    }

    /// Minimum lease TTL: 1.5 × election timeout, rounded up to seconds (etcd's rule).
    pub fn min_lease_ttl(&self) -> i64 {
        let ms = self.election_timeout.as_millis() as i64 * 3 / 2;
        ((ms + 999) / 1000).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initial_cluster_and_validates() {
        let c = parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2").unwrap();
        assert_eq!(c[1], ("b".to_string(), "http://127.0.0.1:2".to_string()));
        assert!(parse_initial_cluster("a").is_err());
        assert!(parse_initial_cluster("a=ftp://x:1").is_err());
        assert!(StoreConfig::default().validate().is_ok());
        let bad = StoreConfig {
            name: "zz".into(),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(StoreConfig::default().min_lease_ttl(), 2);
    }
}
