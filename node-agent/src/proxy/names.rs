//! Names of the per-service and per-endpoint nftables chains.
//!
//! A name must be a valid nft identifier, at most [`MAX_CHAIN_NAME`] bytes, and stable: the
//! same service port (or endpoint of it) gets the same name in every sync, so an
//! incremental update touches only what changed. Each name is a prefix, a short hash of
//! the full identity (which keeps truncated names unique), then a readable tail:
//!
//! ```text
//! svc-1f3a9c0e-default/web/tcp/http
//! ep-7b21d4aa-default/web/tcp/http/10.244.0.2/8080
//! ```

use sha2::{Digest, Sha256};

use super::state::{Endpoint, ServicePortName};

/// The longest chain name this proxy generates, in bytes.
pub const MAX_CHAIN_NAME: usize = 64;

/// The chain that picks an endpoint for `port`.
pub fn service_chain(port: &ServicePortName) -> String {
    let id = identity(port);
    chain_name("svc", &id)
}

/// The chain that DNATs connections of `port` to `endpoint`.
pub fn endpoint_chain(port: &ServicePortName, endpoint: &Endpoint) -> String {
    let id = format!("{}/{}/{}", identity(port), endpoint.ip, endpoint.port);
    chain_name("ep", &id)
}

fn identity(port: &ServicePortName) -> String {
    format!(
        "{}/{}/{}/{}",
        port.namespace,
        port.name,
        port.protocol.nft_name(),
        port.port
    )
}

/// `<prefix>-<8 hex digits of sha256(id)>-<id, odd characters replaced>`, truncated.
fn chain_name(prefix: &str, id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let mut name = format!("{prefix}-{}-", hex::encode(&digest[..4]));
    name.extend(id.chars().map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') {
            c
        } else {
            '_'
        }
    }));
    // Every character is ASCII, so any byte index is a char boundary.
    name.truncate(MAX_CHAIN_NAME);
    name
}

/// Whether `name` is usable as an nft table name: an identifier of letters, digits and
/// `_`, starting with a letter, at most [`MAX_CHAIN_NAME`] bytes.
pub fn is_valid_table_name(name: &str) -> bool {
    name.len() <= MAX_CHAIN_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::state::Protocol;
    use std::net::Ipv4Addr;

    fn port(ns: &str, name: &str, port: &str) -> ServicePortName {
        ServicePortName {
            namespace: ns.into(),
            name: name.into(),
            port: port.into(),
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn names_are_stable_readable_and_distinct() {
        let a = service_chain(&port("default", "web", "http"));
        assert_eq!(a, service_chain(&port("default", "web", "http")));
        assert!(
            a.starts_with("svc-") && a.ends_with("-default/web/tcp/http"),
            "{a}"
        );
        assert_ne!(a, service_chain(&port("default", "web", "https")));
        let udp = ServicePortName {
            protocol: Protocol::Udp,
            ..port("default", "web", "http")
        };
        assert_ne!(a, service_chain(&udp));

        let ep = Endpoint {
            ip: Ipv4Addr::new(10, 244, 0, 2),
            port: 8080,
        };
        let e = endpoint_chain(&port("default", "web", "http"), &ep);
        assert!(
            e.starts_with("ep-") && e.ends_with("/http/10.244.0.2/8080"),
            "{e}"
        );
    }

    #[test]
    fn long_names_are_truncated_but_stay_unique() {
        let long = "x".repeat(63);
        let a = port(&long, &long, "http");
        let b = port(&long, &long, "https");
        let (na, nb) = (service_chain(&a), service_chain(&b));
        assert_eq!(na.len(), MAX_CHAIN_NAME);
        assert_ne!(na, nb);
        let ep = Endpoint {
            ip: Ipv4Addr::new(10, 244, 0, 2),
            port: 8080,
        };
        let ep2 = Endpoint {
            ip: Ipv4Addr::new(10, 244, 0, 3),
            port: 8080,
        };
        assert_ne!(endpoint_chain(&a, &ep), endpoint_chain(&a, &ep2));
        assert!(endpoint_chain(&a, &ep).len() <= MAX_CHAIN_NAME);
    }

    #[test]
    fn odd_characters_are_replaced() {
        let n = service_chain(&port("default", "we b\"", "p;rm"));
        assert!(
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)),
            "{n}"
        );
    }

    #[test]
    fn table_names() {
        assert!(is_valid_table_name("skiff_proxy"));
        assert!(!is_valid_table_name("1abc"));
        assert!(!is_valid_table_name("a b"));
        assert!(!is_valid_table_name(""));
    }
}
