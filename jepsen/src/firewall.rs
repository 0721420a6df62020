//! Network faults with nftables: drop rules inside a host's namespace.
//!
//! A partition is applied per host as one table, [`TABLE`], in that host's
//! namespace, dropping packets from and to the peers it must not reach
//! (both directions, so it holds even if only one side is healed first):
//!
//! ```text
//! table inet skiff_jepsen {
//!   chain input  { type filter hook input  priority -10; policy accept; ip saddr { 10.77.3.12 } drop; }
//!   chain output { type filter hook output priority -10; policy accept; ip daddr { 10.77.3.12 } drop; }
//! }
//! ```
//!
//! Only member-to-member traffic is dropped: the clients, in the root
//! namespace behind the bridge address, still reach every member, which is
//! how a partitioned former leader gets caught serving stale reads. Dropped
//! packets (not rejected) make TCP hang as on a real network split. The table
//! lives in the namespace, so deleting the namespace also removes it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::testbed::{run_cmd, Host};

/// The nftables table the harness owns in each namespace.
pub const TABLE: &str = "skiff_jepsen";

/// The ruleset that cuts `host` off from `peers`.
pub fn ruleset(peers: &[Ipv4Addr]) -> String {
    let set = peers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "table inet {TABLE} {{\n\
         \x20 chain input {{ type filter hook input priority -10; policy accept; ip saddr {{ {set} }} drop; }}\n\
         \x20 chain output {{ type filter hook output priority -10; policy accept; ip daddr {{ {set} }} drop; }}\n\
         }}\n"
    )
}

/// Drops all traffic between `host` and `peers` (replacing any earlier
/// rules of the harness on `host`). No peers: heals `host`.
///
/// # Errors
/// If `nft` fails.
pub fn isolate(host: &Host, peers: &[Ipv4Addr]) -> Result<()> {
    heal(host)?;
    if peers.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", &host.netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset(peers).as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {}: {}",
            host.netns,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes the harness's rules from `host` (nothing to remove is fine).
///
/// # Errors
/// If `nft` cannot list the tables.
pub fn heal(host: &Host) -> Result<()> {
    let tables = run_cmd(
        "ip",
        &["netns", "exec", &host.netns, "nft", "list", "tables"],
    )?;
    if tables
        .lines()
        .any(|l| l.trim() == format!("table inet {TABLE}"))
    {
        run_cmd(
            "ip",
            &[
                "netns",
                "exec",
                &host.netns,
                "nft",
                "delete",
                "table",
                "inet",
                TABLE,
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_drops_both_directions() {
        let r = ruleset(&[Ipv4Addr::new(10, 77, 1, 12), Ipv4Addr::new(10, 77, 1, 13)]);
        assert!(r.contains("ip saddr { 10.77.1.12, 10.77.1.13 } drop"));
        assert!(r.contains("ip daddr { 10.77.1.12, 10.77.1.13 } drop"));
        assert!(r.starts_with("table inet skiff_jepsen"));
    }
}
