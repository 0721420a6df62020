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
//!
//! One more table lives in the root namespace per testbed, the *guard*
//! `ip sjp<slot>_guard`: it drops any packet to the slot's subnet that would
//! leave through anything but the slot's bridge, so if the bridge vanished
//! mid-run the clients' traffic cannot be routed off the machine.

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

/// The guard table's name for a slot.
pub fn guard_table(slot: u8) -> String {
    format!("{}{slot}_guard", crate::testbed::PREFIX)
}

/// The guard ruleset for a slot.
pub fn guard_ruleset(slot: u8, bridge: &str) -> String {
    format!(
        "table ip {} {{\n\
         \x20 chain output {{ type filter hook output priority 0; policy accept; ip daddr 10.77.{slot}.0/24 oifname != \"{bridge}\" drop; }}\n\
         }}\n",
        guard_table(slot)
    )
}

fn nft_script(netns: Option<&str>, script: &str) -> Result<()> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft", "-f", "-"]);
            c
        }
        None => {
            let mut c = Command::new("nft");
            c.args(["-f", "-"]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft{}: {}",
            netns.map(|n| format!(" in {n}")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Installs the root-namespace guard of a slot.
///
/// # Errors
/// If `nft` fails.
pub fn install_guard(slot: u8, bridge: &str) -> Result<()> {
    nft_script(None, &guard_ruleset(slot, bridge))
}

/// Removes the root-namespace guard of a slot (absent is fine).
///
/// # Errors
/// If `nft` fails to delete an existing table.
pub fn remove_guard(slot: u8) -> Result<()> {
    let table = guard_table(slot);
    let tables = run_cmd("nft", &["list", "tables"])?;
    if tables
        .lines()
        .any(|l| l.trim() == format!("table ip {table}"))
    {
        run_cmd("nft", &["delete", "table", "ip", &table])?;
    }
    Ok(())
}

/// Root-namespace tables whose name starts with the prefix, as
/// `(family, name)`.
///
/// # Errors
/// If `nft` cannot list the tables.
pub fn leftover_tables() -> Result<Vec<(String, String)>> {
    let tables = run_cmd("nft", &["list", "tables"])?;
    Ok(tables
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("table"), Some(family), Some(name))
                    if name.starts_with(crate::testbed::PREFIX) =>
                {
                    Some((family.to_owned(), name.to_owned()))
                }
                _ => None,
            }
        })
        .collect())
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
    nft_script(Some(&host.netns), &ruleset(peers))
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

    #[test]
    fn guard_keeps_the_subnet_on_the_bridge() {
        let g = guard_ruleset(7, "sjp7br");
        assert!(g.starts_with("table ip sjp7_guard"));
        assert!(g.contains(r#"ip daddr 10.77.7.0/24 oifname != "sjp7br" drop"#));
    }
}
