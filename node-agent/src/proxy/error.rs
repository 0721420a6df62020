//! The proxy's errors.

use std::time::Duration;

/// What can go wrong programming nftables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `nft` (or `ip netns exec`) could not be started or talked to.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `nft` ran and rejected the script; nothing of it was applied (one transaction).
    #[error("nft failed ({status}): {stderr}")]
    Nft {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (it names the offending line).
        stderr: String,
    },
    /// `nft` did not finish in time and was killed.
    #[error("nft did not finish within {0:?}")]
    Timeout(Duration),
    /// The configured table name is not a valid nft identifier.
    #[error("invalid nft table name {0:?}")]
    InvalidTable(String),
}
