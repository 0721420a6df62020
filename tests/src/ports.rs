//! Free TCP ports on the loopback interface, for members to listen on.
//!
//! A port is found by binding `127.0.0.1:0` and reading back what the kernel chose. The
//! listener is closed before the member binds the port itself, so another process could
//! take it in between; [`crate::cluster::Cluster::start`] retries a start that failed with
//! "address already in use". Within this process no port is handed out twice.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};

/// Ports already handed out by this process; never handed out again.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Returns `n` distinct free ports on 127.0.0.1.
///
/// All `n` listeners are held until every port is chosen, so the ports are distinct, and
/// none of them was returned earlier by this process.
///
/// # Errors
/// When the kernel refuses a bind on the loopback interface.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    // A poisoned lock only means another thread panicked while inserting; the set is
    // still a valid set of ports.
    let mut seen = handed_out().lock().unwrap_or_else(|e| e.into_inner());
    let mut attempts = 0usize;
    while ports.len() < n {
        attempts += 1;
        anyhow::ensure!(
            attempts <= n * 100 + 100,
            "no free loopback port after {attempts} binds"
        );
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .context("binding 127.0.0.1:0")?;
        let port = listener.local_addr().context("local_addr")?.port();
        if seen.insert(port) {
            ports.push(port);
        }
        held.push(listener);
    }
    Ok(ports)
}

/// Returns one free port on 127.0.0.1 (see [`free_ports`]).
///
/// # Errors
/// As [`free_ports`].
pub fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports = free_ports(16).unwrap();
        let unique: HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), 16);
        for p in &ports {
            TcpListener::bind(("127.0.0.1", *p)).unwrap();
        }
    }

    #[test]
    fn ports_are_never_handed_out_twice() {
        let a = free_ports(8).unwrap();
        let b = free_ports(8).unwrap();
        assert!(a.iter().all(|p| !b.contains(p)));
    }

    #[test]
    fn zero_ports_is_empty() {
        assert!(free_ports(0).unwrap().is_empty());
    }
}
