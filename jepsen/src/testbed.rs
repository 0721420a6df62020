//! Test hosts: one network namespace per cluster member, joined by a bridge
//! in the root namespace, created for a run and always removed after it.
//!
//! ```text
//!   root namespace (clients, the harness)
//!   ┌──────────────────────────────────────────────────────────┐
//!   │  sjp<slot>br  10.77.<slot>.1/24   (bridge)               │
//!   │     │                │                 │                 │
//!   │  sjp<slot>v1      sjp<slot>v2       sjp<slot>v3   (veth) │
//!   └─────┼────────────────┼─────────────────┼─────────────────┘
//!   netns sjp<slot>n1   sjp<slot>n2       sjp<slot>n3
//!      eth0 .11            eth0 .12          eth0 .13
//! ```
//!
//! Every name starts with [`PREFIX`] so [`cleanup_leftovers`] can find what a
//! killed harness left behind. A run takes a free *slot* (1..=250) by
//! creating its bridge, which fails if the name exists, so runs side by side
//! never share names or addresses (and consecutive runs start their search
//! at different slots, so they do not reuse each other's names either): slot `s` owns `10.77.s.0/24` (member `i`
//! is `10.77.s.(10+i)`).
//!
//! [`Testbed`] is the guard: dropping it (also while unwinding from a panic,
//! or when the run future is dropped on Ctrl-C) kills every process left in
//! its namespaces by pid and deletes the namespaces (and with them their
//! nftables tables and veth ends), the bridge, and the slot's guard table in
//! the root namespace (see [`crate::firewall`]).

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The first characters of every namespace and link the harness creates.
pub const PREFIX: &str = "sjp";

/// The /16 every slot's /24 is taken from; clients may only target addresses
/// in it (or loopback).
pub const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 0, 0), 16);

/// Offsets the slot search of each testbed this process creates.
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One test host: a network namespace with one address on the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// 1-based position in the testbed.
    pub index: usize,
    /// Member name, `n<index>`.
    pub name: String,
    /// The network namespace.
    pub netns: String,
    /// The root-namespace end of its veth pair (enslaved to the bridge).
    pub veth: String,
    /// Its address (on `eth0` inside the namespace).
    pub addr: Ipv4Addr,
}

/// The hosts of one run and their bridge; removed on drop.
#[derive(Debug)]
pub struct Testbed {
    slot: u8,
    bridge: String,
    /// The bridge's address in the root namespace (the clients' source).
    pub gateway: Ipv4Addr,
    /// The hosts, in index order.
    pub hosts: Vec<Host>,
    torn_down: bool,
}

/// Whether `addr` is one the harness may send traffic to: loopback, or the
/// namespace subnet.
pub fn is_allowed_target(addr: Ipv4Addr) -> bool {
    let (net, bits) = SUBNET;
    let mask = u32::MAX << (32 - u32::from(bits));
    addr.is_loopback() || (u32::from(addr) & mask) == (u32::from(net) & mask)
}

/// The bridge address of the slot `addr` belongs to (`10.77.s.1`), for
/// addresses in the namespace subnet. Clients bind to it: if the bridge is
/// gone, their connections fail instead of leaving through the default
/// route.
pub fn gateway_of(addr: Ipv4Addr) -> Option<Ipv4Addr> {
    let [a, b, s, _] = addr.octets();
    (is_allowed_target(addr) && !addr.is_loopback()).then_some(Ipv4Addr::new(a, b, s, 1))
}

/// Runs a command to completion; its stdout on success.
///
/// # Errors
/// If it cannot be started or exits unsuccessfully (with its stderr).
pub fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Testbed {
    /// Creates `n` hosts (1..=200) in a free slot.
    ///
    /// # Errors
    /// If no slot is free or a step of the setup fails; whatever was
    /// created by then is removed before returning.
    pub fn create(n: usize) -> Result<Testbed> {
        if n == 0 || n > 200 {
            bail!("a testbed has 1 to 200 hosts, not {n}");
        }
        // Start the search at a different slot for every testbed of this
        // process (and of processes side by side), so a testbed never reuses
        // the names and addresses of the one just torn down: the kernel
        // destroys a deleted namespace and its veth ends asynchronously, and a
        // process stuck in the kernel outlives its SIGKILL for a while.
        let start = (std::process::id() as usize)
            .wrapping_add(NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut slot = None;
        for s in (0..250).map(|k| ((start + k) % 250 + 1) as u8) {
            let bridge = format!("{PREFIX}{s}br");
            match run_cmd("ip", &["link", "add", &bridge, "type", "bridge"]) {
                Ok(_) => {
                    slot = Some(s);
                    break;
                }
                // Taken by another run: try the next slot.
                Err(e) if e.to_string().contains("exists") => continue,
                Err(e) => return Err(e.context("creating the testbed bridge (root needed)")),
            }
        }
        let Some(slot) = slot else {
            bail!("no free testbed slot (250 bridges named {PREFIX}*br exist?); try `skiff-jepsen cleanup`");
        };
        let mut bed = Testbed {
            slot,
            bridge: format!("{PREFIX}{slot}br"),
            gateway: Ipv4Addr::new(10, 77, slot, 1),
            hosts: Vec::new(),
            torn_down: false,
        };
        bed.setup(n)?; // on error, `bed` drops and tears down
        Ok(bed)
    }

    fn setup(&mut self, n: usize) -> Result<()> {
        crate::firewall::install_guard(self.slot, &self.bridge)?;
        let gw = format!("{}/24", self.gateway);
        run_cmd("ip", &["addr", "add", &gw, "dev", &self.bridge])?;
        run_cmd("ip", &["link", "set", &self.bridge, "up"])?;
        for index in 1..=n {
            let slot = self.slot;
            let host = Host {
                index,
                name: format!("n{index}"),
                netns: format!("{PREFIX}{slot}n{index}"),
                veth: format!("{PREFIX}{slot}v{index}"),
                addr: Ipv4Addr::new(10, 77, slot, (10 + index) as u8),
            };
            let peer = format!("{PREFIX}{slot}p{index}");
            run_cmd("ip", &["netns", "add", &host.netns])?;
            self.hosts.push(host.clone());
            run_cmd(
                "ip",
                &[
                    "link", "add", &host.veth, "type", "veth", "peer", "name", &peer,
                ],
            )?;
            run_cmd("ip", &["link", "set", &peer, "netns", &host.netns])?;
            run_cmd(
                "ip",
                &["link", "set", &host.veth, "master", &self.bridge, "up"],
            )?;
            let ns = host.netns.as_str();
            run_cmd("ip", &["-n", ns, "link", "set", &peer, "name", "eth0"])?;
            let addr = format!("{}/24", host.addr);
            run_cmd("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            run_cmd("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            run_cmd("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The slot (third octet of the subnet).
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// Kills every process in the namespaces and removes namespaces, veths
    /// and bridge. Idempotent; problems are printed, not returned, because
    /// this runs from `Drop`.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for host in &self.hosts {
            kill_netns_processes(&host.netns);
        }
        for host in &self.hosts {
            if let Err(e) = run_cmd("ip", &["netns", "del", &host.netns]) {
                eprintln!("skiff-jepsen: removing {}: {e:#}", host.netns);
            }
            // Deleting the namespace destroys the pair asynchronously; make sure.
            let _ = run_cmd("ip", &["link", "del", &host.veth]);
        }
        if let Err(e) = run_cmd("ip", &["link", "del", &self.bridge]) {
            eprintln!("skiff-jepsen: removing {}: {e:#}", self.bridge);
        }
        // Last: it guarded the subnet while anything could still send to it.
        if let Err(e) = crate::firewall::remove_guard(self.slot) {
            eprintln!("skiff-jepsen: removing the guard table: {e:#}");
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// SIGKILLs every process in a namespace (by pid, from `ip netns pids`) and
/// waits up to a second for them to go.
fn kill_netns_processes(netns: &str) {
    for _ in 0..20 {
        let pids: Vec<i32> = run_cmd("ip", &["netns", "pids", netns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What [`cleanup_leftovers`] removed.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Links (bridges, veths) deleted.
    pub links: Vec<String>,
    /// Root-namespace nftables tables (guards) deleted.
    pub tables: Vec<String>,
}

/// Removes every namespace, link and root-namespace nftables table whose
/// name starts with [`PREFIX`] (killing the processes inside the namespaces
/// first): what a harness killed with SIGKILL left behind.
///
/// # Errors
/// If the namespaces or links cannot be listed.
pub fn cleanup_leftovers() -> Result<Cleaned> {
    let mut cleaned = Cleaned::default();
    let namespaces = run_cmd("ip", &["netns", "list"])?;
    for line in namespaces.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name.starts_with(PREFIX) {
            kill_netns_processes(name);
            match run_cmd("ip", &["netns", "del", name]) {
                Ok(_) => cleaned.namespaces.push(name.to_owned()),
                Err(e) => eprintln!("skiff-jepsen: {e:#}"),
            }
        }
    }
    let links = run_cmd("ip", &["-o", "link", "show"])?;
    for line in links.lines() {
        // "12: sjp3v1@if11: <BROADCAST,..."
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if name.starts_with(PREFIX) {
            match run_cmd("ip", &["link", "del", name]) {
                Ok(_) => cleaned.links.push(name.to_owned()),
                // A veth vanishes with its namespace's peer; not an error.
                Err(_) if !link_exists(name) => {}
                Err(e) => eprintln!("skiff-jepsen: {e:#}"),
            }
        }
    }
    for (family, name) in crate::firewall::leftover_tables()? {
        match run_cmd("nft", &["delete", "table", &family, &name]) {
            Ok(_) => cleaned.tables.push(name),
            Err(e) => eprintln!("skiff-jepsen: {e:#}"),
        }
    }
    Ok(cleaned)
}

fn link_exists(name: &str) -> bool {
    run_cmd("ip", &["link", "show", name]).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_the_namespace_subnet_are_targets() {
        assert!(is_allowed_target(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(is_allowed_target(Ipv4Addr::new(10, 77, 3, 11)));
        assert!(!is_allowed_target(Ipv4Addr::new(10, 78, 3, 11)));
        assert!(!is_allowed_target(Ipv4Addr::new(192, 168, 1, 1)));
        assert!(!is_allowed_target(Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(
            gateway_of(Ipv4Addr::new(10, 77, 3, 11)),
            Some(Ipv4Addr::new(10, 77, 3, 1))
        );
        assert_eq!(gateway_of(Ipv4Addr::LOCALHOST), None);
    }
}
