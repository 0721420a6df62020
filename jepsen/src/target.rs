//! Targets: which store the members run (Skiff's `skiff store` or real
//! etcd) and the command line that starts one member.
//!
//! Both take etcd's flags, so one command line serves both; only the binary
//! differs, plus Skiff's hidden unsafe flags, which exist to prove the
//! harness can fail (see `docs/jepsen.md`).

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The store under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// `$SKIFF_BIN store …`.
    Skiff,
    /// `/usr/bin/etcd …` (etcd 3.4).
    Etcd,
}

/// A deliberately unsafe mode of Skiff's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UnsafeMode {
    /// `--unsafe-local-reads`: linearizable reads served from local state
    /// without ReadIndex (a partitioned former leader serves stale reads).
    LocalReads,
    /// `--unsafe-no-fsync`: writes acknowledged before fsync.
    NoFsync,
}

/// The skiff binary: `$SKIFF_BIN`, else `<workspace>/target/debug/skiff`.
pub fn default_skiff_bin() -> PathBuf {
    std::env::var_os("SKIFF_BIN").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/debug/skiff"
            ))
        },
        PathBuf::from,
    )
}

/// Whether a member bootstraps a new cluster or joins an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// `--initial-cluster-state new`.
    New,
    /// `--initial-cluster-state existing` (added through MemberAdd first).
    Existing,
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        })
    }
}

/// Raft timing and snapshot flags given to every member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tuning {
    /// `--heartbeat-interval` (ms).
    pub heartbeat_ms: u64,
    /// `--election-timeout` (ms).
    pub election_ms: u64,
    /// `--snapshot-count`, if set.
    pub snapshot_count: Option<u64>,
}

impl Default for Tuning {
    /// etcd's defaults: 100 ms heartbeat, 1 s election timeout.
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_ms: 1000,
            snapshot_count: None,
        }
    }
}

/// How to start members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Which store.
    pub kind: TargetKind,
    /// The binary.
    pub binary: PathBuf,
    /// Skiff's unsafe mode, if any.
    pub unsafe_mode: Option<UnsafeMode>,
    /// Timing.
    pub tuning: Tuning,
}

/// What one member's command line needs to know.
#[derive(Clone, Debug)]
pub struct MemberArgs<'a> {
    /// `--name`.
    pub name: &'a str,
    /// `--data-dir`.
    pub data_dir: &'a str,
    /// `http://addr:2379`.
    pub client_url: &'a str,
    /// `http://addr:2380`.
    pub peer_url: &'a str,
    /// `name=peer-url,…`.
    pub initial_cluster: &'a str,
    /// New or existing.
    pub state: ClusterState,
    /// `--initial-cluster-token`.
    pub token: &'a str,
}

impl Target {
    /// A target, checking that the binary exists and the unsafe mode is
    /// supported.
    ///
    /// # Errors
    /// If the binary is missing, or an unsafe mode is asked of etcd.
    pub fn new(
        kind: TargetKind,
        binary: PathBuf,
        unsafe_mode: Option<UnsafeMode>,
        tuning: Tuning,
    ) -> Result<Self> {
        if !binary.is_file() {
            bail!("{kind:?} binary {} not found", binary.display());
        }
        if kind == TargetKind::Etcd && unsafe_mode.is_some() {
            bail!("unsafe modes are Skiff flags; etcd 3.4 has none");
        }
        Ok(Self {
            kind,
            binary,
            unsafe_mode,
            tuning,
        })
    }

    /// The arguments after the binary.
    pub fn args(&self, m: &MemberArgs<'_>) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        if self.kind == TargetKind::Skiff {
            args.push("store".into());
        }
        let mut flag = |name: &str, value: &str| {
            args.push(format!("--{name}"));
            args.push(value.to_owned());
        };
        flag("name", m.name);
        flag("data-dir", m.data_dir);
        flag("listen-client-urls", m.client_url);
        flag("advertise-client-urls", m.client_url);
        flag("listen-peer-urls", m.peer_url);
        flag("initial-advertise-peer-urls", m.peer_url);
        flag("initial-cluster", m.initial_cluster);
        flag("initial-cluster-state", &m.state.to_string());
        flag("initial-cluster-token", m.token);
        flag("heartbeat-interval", &self.tuning.heartbeat_ms.to_string());
        flag("election-timeout", &self.tuning.election_ms.to_string());
        if let Some(n) = self.tuning.snapshot_count {
            flag("snapshot-count", &n.to_string());
        }
        match self.unsafe_mode {
            Some(UnsafeMode::LocalReads) => args.push("--unsafe-local-reads".into()),
            Some(UnsafeMode::NoFsync) => args.push("--unsafe-no-fsync".into()),
            None => {}
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skiff_and_etcd_share_flags() {
        let m = MemberArgs {
            name: "n1",
            data_dir: "/d",
            client_url: "http://10.77.1.11:2379",
            peer_url: "http://10.77.1.11:2380",
            initial_cluster: "n1=http://10.77.1.11:2380",
            state: ClusterState::Existing,
            token: "t",
        };
        let mut t = Target {
            kind: TargetKind::Skiff,
            binary: "/bin/true".into(),
            unsafe_mode: Some(UnsafeMode::LocalReads),
            tuning: Tuning::default(),
        };
        let skiff = t.args(&m);
        assert_eq!(skiff[0], "store");
        assert!(skiff.contains(&"--unsafe-local-reads".to_owned()));
        t.kind = TargetKind::Etcd;
        t.unsafe_mode = None;
        let etcd = t.args(&m);
        assert_eq!(&skiff[1..skiff.len() - 1], &etcd[..]);
        assert!(etcd
            .windows(2)
            .any(|w| w == ["--initial-cluster-state", "existing"]));
    }
}
